import Foundation
import TealWire

// MARK: - Outputs

/// A change in how this node sees another member.
public enum MembershipEvent: Sendable, Hashable, CustomStringConvertible {
  /// First heard of the member (through a join, gossip or a push-pull).
  case joined(Member)
  /// The member's status changed; `member` holds the new record.
  case statusChanged(Member, previous: MemberStatus)
  /// The member announced new metadata (addresses, version, Raft role).
  case metadataChanged(Member)
  /// A dead member's tombstone expired and the member was forgotten.
  case removed(Member)

  public var member: Member {
    switch self {
    case .joined(let member), .statusChanged(let member, _), .metadataChanged(let member), .removed(let member):
      member
    }
  }

  public var description: String {
    switch self {
    case .joined(let member): "joined \(member)"
    case .statusChanged(let member, let previous): "\(member.id) \(previous) -> \(member.status)#\(member.incarnation)"
    case .metadataChanged(let member): "metadata of \(member)"
    case .removed(let member): "removed \(member)"
    }
  }
}

/// What the shell must do after an input.
public enum SWIMDirective: Sendable, Hashable {
  /// Encode the message and send it on `PeerChannel.gossip`. Delivery may fail silently.
  case send(SWIMMessage, to: NodeID)
  /// Publish a membership event.
  case event(MembershipEvent)
}

/// Counters for tests and benchmarks.
public struct SWIMStatistics: Sendable, Hashable {
  public var probesStarted = 0
  public var probesFailed = 0
  public var indirectProbesRequested = 0
  public var suspicionsRaised = 0
  public var refutations = 0
  public var messagesSent = 0
  public var updatesPiggybacked = 0
  /// Messages dropped whole: from a sender outside the authorised set, or over its rate.
  public var messagesRejected = 0
  /// Updates dropped: a bad signature, an unauthorised or unknown id, an impossible incarnation,
  /// or a full member table.
  public var updatesRejected = 0
}

// MARK: - Core

/// SWIM failure detection and membership dissemination with the Lifeguard extensions, as a pure
/// state machine (the shape of apple/swift-cluster-membership's `SWIM.Instance`).
///
/// Every input is a `mutating func` that takes the current monotonic time `now` (any fixed origin)
/// and returns the directives the shell must carry out. The core never reads a clock, does no I/O
/// and draws randomness only from the generator given to `init`. The shell must call
/// `tick(now:)` no later than `nextWakeup`; calling it early or more often is harmless.
///
/// Invariants:
/// - A member's `(status, incarnation)` only moves forward: a record replaces another only if its
///   incarnation is higher, or equal with a status of higher precedence (alive < suspect <
///   unreachable < dead). Only the member itself raises its incarnation.
/// - This node never holds itself as anything but alive until it leaves; any claim otherwise at
///   its current incarnation or above is refuted with a higher incarnation.
/// - Gossip never changes the Raft configuration: `dead` is a report for the leader to act on.
public struct SWIMCore: Sendable {
  public let settings: SWIMSettings
  /// This node's own record.
  public private(set) var myself: Member
  /// Lifeguard's local health multiplier, in `0...settings.maxLocalHealth`. Probe interval and
  /// timeouts are multiplied by `1 + localHealth`.
  public private(set) var localHealth = 0
  /// True once `leave(now:)` ran: the node no longer probes or answers.
  public private(set) var hasLeft = false
  public private(set) var statistics = SWIMStatistics()

  private var table: [NodeID: MemberState] = [:]
  private var probeOrder: [NodeID] = []
  private var probeCursor = 0
  private var probe: Probe?
  private var relays: [UInt64: Relay] = [:]
  private var broadcasts: [NodeID: Broadcast] = [:]
  private var broadcastCounter: UInt64 = 0
  private var nextProbeAt: Duration
  private var nextPushPullAt: Duration
  private var nextReconnectAt: Duration
  private var joinState: JoinState?
  /// Peers this node must never forget (its seeds and the Raft members): while one of them is
  /// not held alive, it is offered push-pulls like a failed member, even after it left or its
  /// tombstone expired.
  public private(set) var configuredPeers: Set<NodeID> = []
  /// Farewells sent by `leave` and not yet acknowledged, by sequence number.
  private var farewells: [UInt64: NodeID] = [:]
  /// When this node last offered a push-pull to a sender it had no record of.
  private var unknownSenderSyncedAt: [NodeID: Duration] = [:]
  private var random: any RandomNumberGenerator & Sendable
  private let authenticator: (any SWIMRecordAuthenticator)?
  /// This node's signed record, for the (status, incarnation, metadata) it was made for.
  private var signedSelf: MemberUpdate?
  /// Credentials (certificates) of members, as accepted by the authenticator, for push-pulls.
  private var credentials: [NodeID: [UInt8]] = [:]
  /// The members allowed in the table and as senders (nil: anyone the transport lets through).
  public private(set) var authorizedMembers: Set<NodeID>?
  /// Messages per sender in the current one-second window (see `maxMessagesPerSenderPerSecond`).
  private var rateWindowStart: Duration = .zero
  private var rateCounts: [NodeID: Int] = [:]

  /// - Parameters:
  ///   - incarnation: start above any incarnation this node used before a restart if it is known
  ///     (for example a persisted counter); otherwise the node refutes its old record when it
  ///     learns of it.
  ///   - random: the only source of randomness (probe order, helpers, jitter, sequence numbers).
  ///   - authenticator: signs this node's records and verifies others'; with one, records that
  ///     a member makes about itself (alive, leave, metadata) are believed only with a valid
  ///     signature, and accusations only about known members at incarnations they issued.
  public init(
    id: NodeID, metadata: MemberMetadata, settings: SWIMSettings = SWIMSettings(), incarnation: UInt64 = 0,
    random: some RandomNumberGenerator & Sendable, now: Duration,
    authenticator: (any SWIMRecordAuthenticator)? = nil
  ) throws(SWIMSettingsError) {
    try settings.validate()
    self.settings = settings
    self.myself = Member(id: id, status: .alive, incarnation: incarnation, metadata: metadata)
    self.random = random
    self.authenticator = authenticator
    self.nextProbeAt = now
    self.nextPushPullAt = now
    self.nextReconnectAt = now + settings.reconnectInterval
    // Spread the first probe and push-pull over a period so that nodes started together do not
    // probe in lockstep.
    nextProbeAt = now + fraction(of: settings.probeInterval, randomUpTo: 1)
    nextPushPullAt = now + settings.pushPullInterval + fraction(of: settings.pushPullInterval, randomUpTo: 1)
  }

  // MARK: Queries

  /// Every other member this node knows of (dead ones until their tombstone expires), by id.
  public var members: [Member] { table.keys.sorted().compactMap { table[$0]?.member } }

  /// Every other member known, in no particular order (cheaper than `members`).
  public var unorderedMembers: some Collection<Member> { table.values.lazy.map(\.member) }

  /// The record of `id`, this node included.
  public func member(_ id: NodeID) -> Member? { id == myself.id ? myself : table[id]?.member }

  /// True while a join through seeds has not yet been answered.
  public var isJoining: Bool { joinState != nil }

  /// The seeds a join in progress is waiting for (empty when not joining).
  public var joinSeeds: [NodeID] { joinState?.seeds ?? [] }

  /// The members that have not yet acknowledged this node's farewell (see `leave`).
  public var unconfirmedFarewells: [NodeID] { farewells.values.sorted() }

  /// How many members are not dead, this node included (n in the formulas).
  public var clusterSize: Int { 1 + table.values.count(where: { $0.member.status != .dead }) }

  /// Updates waiting to be piggybacked, with how often each was sent (for tests).
  public var pendingBroadcasts: [(update: MemberUpdate, transmissions: Int)] {
    broadcasts.keys.sorted().compactMap { id in broadcasts[id].map { ($0.update, $0.transmissions) } }
  }

  /// How many times each update is piggybacked: `λ · ceil(log10(n + 1))`.
  public var retransmitLimit: Int {
    settings.retransmitMultiplier * max(1, Int(log10(Double(clusterSize + 1)).rounded(.up)))
  }

  /// The shortest suspicion timeout for the current cluster size: `α · max(1, log10 n) · interval`.
  /// It is never shorter than `settings.minimumSuspicionTimeout`.
  public var minSuspicionTimeout: Duration { max(settings.minimumSuspicionTimeout, lifeguardMinimum) }

  /// The longest suspicion timeout (no independent confirmation): β times Lifeguard's shortest,
  /// and never below `minSuspicionTimeout`.
  public var maxSuspicionTimeout: Duration {
    max(minSuspicionTimeout, Self.multiply(lifeguardMinimum, by: settings.suspicionMaxMultiplier))
  }

  private var lifeguardMinimum: Duration {
    let scale = settings.suspicionMultiplier * max(1, log10(Double(clusterSize)))
    return Self.multiply(settings.probeInterval, by: scale)
  }

  /// When a suspicion of `id` expires, if it is suspected.
  public func suspicionDeadline(of id: NodeID) -> Duration? { table[id]?.suspicion?.deadline }

  /// The latest time at which the shell must call `tick(now:)`; nil once the node has left.
  public var nextWakeup: Duration? {
    if hasLeft { return nil }
    var wakeup = min(nextPushPullAt, nextReconnectAt)
    // While a probe runs, its period end (possibly extended by a late tick) decides when the
    // next one starts.
    if probe == nil { wakeup = min(wakeup, nextProbeAt) }
    if let probe {
      if !probe.acked && !probe.indirectSent { wakeup = min(wakeup, probe.directDeadline) }
      wakeup = min(wakeup, probe.periodEnd)
    }
    for relay in relays.values { wakeup = min(wakeup, relay.deadline) }
    for state in table.values {
      if let suspicion = state.suspicion {
        wakeup = min(wakeup, suspicion.deadline)
        if let remindAt = suspicion.remindAt { wakeup = min(wakeup, remindAt) }
      }
      if state.member.status == .dead { wakeup = min(wakeup, state.statusSince + settings.deadMemberRetention) }
    }
    if let joinState { wakeup = min(wakeup, joinState.nextAttemptAt) }
    return wakeup
  }

  // MARK: Inputs

  /// Starts joining through `seeds` (node ids whose addresses the transport knows): a push-pull
  /// join request to each seed now and every `joinRetryInterval` until one answers.
  public mutating func join(seeds: [NodeID], now: Duration) -> [SWIMDirective] {
    var unique: [NodeID] = []
    for seed in seeds where seed != myself.id && !unique.contains(seed) { unique.append(seed) }
    guard !hasLeft, !unique.isEmpty else { return [] }
    configuredPeers.formUnion(unique)
    joinState = JoinState(seeds: unique, nextAttemptAt: now)
    return tick(now: now)
  }

  /// Adds peers never to forget (for example the Raft configuration's members), besides the
  /// seeds given to `join`. This node's own id is ignored.
  public mutating func setConfiguredPeers(_ peers: some Sequence<NodeID>) {
    let me = myself.id
    configuredPeers.formUnion(peers.filter { $0 != me })
  }

  /// Restricts the member table and the accepted senders to `members` (for example the Raft
  /// configuration, or the transport's peers); nil lifts the restriction. Members outside the
  /// set are dropped from the table at once, without events (they were never authorised).
  public mutating func setAuthorizedMembers(_ members: Set<NodeID>?) {
    authorizedMembers = members
    guard let members else { return }
    for id in table.keys where !members.contains(id) {
      table[id] = nil
      broadcasts[id] = nil
      credentials[id] = nil
    }
  }

  /// Runs every timer that is due at `now`: probe timeouts, indirect probes, the next probe,
  /// suspicion timeouts, push-pull, join retries and tombstone expiry.
  public mutating func tick(now: Duration) -> [SWIMDirective] {
    var out: [SWIMDirective] = []
    guard !hasLeft else { return out }
    expireRelays(now: now, &out)
    if var current = probe {
      if !current.acked && !current.indirectSent && current.directDeadline <= now {
        current.indirectSent = true
        let helpers = randomMembers(count: settings.indirectProbeCount, excluding: [current.target])
        current.expectedNacks = helpers.count
        current.helpers = Set(helpers)
        // A late tick must not ask for indirect probes and judge them in the same call: the
        // helpers get their full window from now.
        current.periodEnd = max(current.periodEnd, now + scaled(settings.probeInterval - settings.probeTimeout))
        probe = current
        statistics.indirectProbesRequested += helpers.count
        for helper in helpers {
          send(.pingRequest(sequence: current.sequence, target: current.target, updates: []), to: helper, &out)
        }
      }
      if current.periodEnd <= now { finishProbe(now: now, &out) }
    }
    if probe == nil && nextProbeAt <= now { startProbe(now: now, &out) }
    expireSuspicions(now: now, &out)
    if nextPushPullAt <= now {
      nextPushPullAt = now + settings.pushPullInterval
      if let partner = randomMembers(count: 1, excluding: []).first {
        send(.pushPull(isResponse: false, isJoin: false, members: fullState()), to: partner, &out)
      }
    }
    if nextReconnectAt <= now {
      // A member declared failed may be alive behind a healed partition: offer it our state. If
      // it is alive it refutes, and both sides merge. Configured peers are never given up: not
      // when they left (they may have restarted without seeds), nor once forgotten.
      nextReconnectAt = now + settings.reconnectInterval
      var failed = table.keys.sorted().filter { id in
        guard let member = table[id]?.member else { return false }
        if configuredPeers.contains(id) { return member.status != .alive && member.status != .suspect }
        return (member.status == .dead && !member.leftGracefully) || member.status == .unreachable
      }
      failed += configuredPeers.sorted().filter { table[$0] == nil }
      if !failed.isEmpty {
        let partner = failed[randomIndex(below: failed.count)]
        send(.pushPull(isResponse: false, isJoin: false, members: fullState()), to: partner, &out)
      }
    }
    if var joining = joinState, joining.nextAttemptAt <= now {
      joining.nextAttemptAt = now + settings.joinRetryInterval
      joinState = joining
      for seed in joining.seeds {
        send(.pushPull(isResponse: false, isJoin: true, members: fullState()), to: seed, &out)
      }
    }
    forgetExpiredTombstones(now: now, &out)
    return out
  }

  /// Handles one message from `sender` (as proven by the transport).
  public mutating func receive(_ message: SWIMMessage, from sender: NodeID, now: Duration) -> [SWIMDirective] {
    var out: [SWIMDirective] = []
    guard sender != myself.id else { return out }
    if hasLeft {
      // Only acknowledgements of the farewell still matter.
      if case .ack(let sequence, let target, _) = message, target == sender, farewells[sequence] == sender {
        farewells[sequence] = nil
      }
      return out
    }
    guard isAuthorized(sender), admitMessage(from: sender, now: now) else {
      statistics.messagesRejected += 1
      return out
    }
    var corrections: [MemberUpdate] = []
    for update in message.updates { apply(update, from: sender, now: now, corrections: &corrections, &out) }
    let lastSync = unknownSenderSyncedAt[sender]
    if table[sender] == nil, !message.isPushPull, lastSync.map({ $0 + settings.probeInterval <= now }) ?? true {
      // Someone knows this node but this node missed the gossip about it: sync with it now
      // rather than at the next push-pull.
      unknownSenderSyncedAt[sender] = now
      send(.pushPull(isResponse: false, isJoin: false, members: fullState()), to: sender, &out)
    }
    if !corrections.isEmpty {
      // The sender spreads accusations that newer records already refuted: correct it at once,
      // so that a stale rumour dies where it is repeated instead of outliving its refutation.
      statistics.messagesSent += 1
      out.append(.send(.gossip(updates: corrections), to: sender))
    }
    switch message {
    case .ping(let sequence, _):
      send(.ack(sequence: sequence, target: myself.id, updates: []), to: sender, &out)
    case .pingRequest(let sequence, let target, _):
      if target == myself.id {
        send(.ack(sequence: sequence, target: myself.id, updates: []), to: sender, &out)
      } else {
        let relaySequence = takeSequence()
        relays[relaySequence] = Relay(
          origin: sender, originSequence: sequence, target: target,
          deadline: now + scaled(settings.probeTimeout))
        send(.ping(sequence: relaySequence, updates: []), to: target, buddy: target, &out)
      }
    case .ack(let sequence, let target, _):
      // Only the probed member, or a helper this node asked, may answer a probe.
      if var current = probe, current.sequence == sequence, current.target == target,
        sender == target || current.helpers.contains(sender)
      {
        current.acked = true
        probe = current
      } else if let relay = relays[sequence], relay.target == target, sender == target {
        relays[sequence] = nil
        send(.ack(sequence: relay.originSequence, target: target, updates: []), to: relay.origin, &out)
      }
    case .nack(let sequence, let target, _):
      if var current = probe, current.sequence == sequence, current.target == target, current.helpers.contains(sender) {
        current.nacks += 1
        probe = current
      }
    case .gossip:
      break
    case .pushPull(let isResponse, let isJoin, _):
      if isResponse {
        joinState = nil
      } else {
        send(.pushPull(isResponse: true, isJoin: isJoin, members: fullState()), to: sender, &out)
      }
    }
    return out
  }

  /// Announces new metadata (addresses, version, Raft role): raises the incarnation so that the
  /// new record wins everywhere, and pushes it at once to a few members.
  public mutating func updateMetadata(_ metadata: MemberMetadata, now: Duration) -> [SWIMDirective] {
    var out: [SWIMDirective] = []
    guard !hasLeft, metadata != myself.metadata else { return out }
    myself.metadata = metadata
    raiseIncarnation(above: myself.incarnation)
    announceMyself(urgentlyTo: [], &out)
    return out
  }

  /// Leaves gracefully: tells every member that is not dead, at once, that this node is dead
  /// because it left, then stops. Members learn it without waiting for a suspicion timeout. The
  /// farewell rides a ping, so each member's ack confirms it: `unconfirmedFarewells` lists those
  /// still to answer, for a shell that waits (bounded) before it shuts its transport down.
  public mutating func leave(now: Duration) -> [SWIMDirective] {
    var out: [SWIMDirective] = []
    guard !hasLeft else { return out }
    myself.status = .dead
    myself.leftGracefully = true
    let farewell = myRecord()
    let recipients = table.keys.sorted().filter { table[$0]?.member.status != .dead }
    probe = nil
    relays = [:]
    joinState = nil
    broadcasts = [:]
    for recipient in recipients {
      let sequence = takeSequence()
      farewells[sequence] = recipient
      statistics.messagesSent += 1
      out.append(.send(.ping(sequence: sequence, updates: [farewell]), to: recipient))
    }
    hasLeft = true
    return out
  }

  /// Marks an unreachable (or any not yet dead) member dead, for example once the Raft
  /// configuration has removed it by a replicated decision. Spreads the news like any other.
  public mutating func confirmDead(_ id: NodeID, now: Duration) -> [SWIMDirective] {
    var out: [SWIMDirective] = []
    guard !hasLeft, let state = table[id], state.member.status != .dead else { return out }
    var record = state.member
    record.status = .dead
    transition(to: MemberUpdate(member: record), now: now, &out)
    return out
  }

  // MARK: Probing

  private mutating func startProbe(now: Duration, _ out: inout [SWIMDirective]) {
    let period = scaled(settings.probeInterval)
    nextProbeAt = now + period
    guard let target = nextProbeTarget() else { return }
    let sequence = takeSequence()
    probe = Probe(
      target: target, sequence: sequence, directDeadline: now + scaled(settings.probeTimeout),
      periodEnd: now + period)
    statistics.probesStarted += 1
    send(.ping(sequence: sequence, updates: []), to: target, buddy: target, &out)
  }

  private mutating func nextProbeTarget() -> NodeID? {
    for _ in 0...(probeOrder.count + 1) {
      if probeCursor >= probeOrder.count {
        var order = table.keys.sorted().filter { table[$0]?.member.status != .dead }
        shuffle(&order)
        probeOrder = order
        probeCursor = 0
        if probeOrder.isEmpty { return nil }
      }
      let candidate = probeOrder[probeCursor]
      probeCursor += 1
      if let state = table[candidate], state.member.status != .dead { return candidate }
    }
    return nil
  }

  /// Judges the probe at the end of its period: an ack (direct or relayed) heals local health;
  /// no ack raises it (by the missing nacks, Lifeguard) and makes the target suspect.
  private mutating func finishProbe(now: Duration, _ out: inout [SWIMDirective]) {
    guard let finished = probe else { return }
    probe = nil
    if finished.acked {
      adjustLocalHealth(by: -1)
      return
    }
    statistics.probesFailed += 1
    adjustLocalHealth(by: finished.expectedNacks > 0 ? max(0, finished.expectedNacks - finished.nacks) : 1)
    guard let state = table[finished.target] else { return }
    switch state.member.status {
    case .alive:
      var record = state.member
      record.status = .suspect
      let accusation = MemberUpdate(member: record, suspectedBy: myself.id)
      statistics.suspicionsRaised += 1
      transition(to: accusation, now: now, &out)
      // Buddy system: the suspect hears of it at once, and can refute before the timeout.
      var recipients = [finished.target]
      recipients += randomMembers(count: settings.urgentFanout, excluding: [finished.target])
      for recipient in recipients { send(.gossip(updates: [accusation]), to: recipient, &out) }
    case .suspect:
      confirmSuspicion(of: finished.target, by: myself.id, now: now, &out)
    case .unreachable, .dead:
      break
    }
  }

  private mutating func expireRelays(now: Duration, _ out: inout [SWIMDirective]) {
    let expired = relays.keys.sorted().filter { (relays[$0]?.deadline ?? now) <= now }
    for sequence in expired {
      guard let relay = relays.removeValue(forKey: sequence) else { continue }
      send(.nack(sequence: relay.originSequence, target: relay.target, updates: []), to: relay.origin, &out)
    }
  }

  private mutating func adjustLocalHealth(by delta: Int) {
    localHealth = min(settings.maxLocalHealth, max(0, localHealth + delta))
  }

  // MARK: Suspicion

  private mutating func expireSuspicions(now: Duration, _ out: inout [SWIMDirective]) {
    // Buddy system, continued: while this node suspects a member, it tells the member directly
    // every probe interval, so that one lost message cannot cost a refutation.
    let reminders = table.keys.sorted().filter { id in
      table[id]?.suspicion.map { suspicion in suspicion.remindAt.map { $0 <= now } ?? false } ?? false
    }
    for id in reminders {
      guard var state = table[id], var suspicion = state.suspicion, suspicion.deadline > now else { continue }
      suspicion.remindAt = now + settings.probeInterval
      state.suspicion = suspicion
      table[id] = state
      send(.gossip(updates: [MemberUpdate(member: state.member, suspectedBy: myself.id)]), to: id, &out)
    }
    let due = table.keys.sorted().filter { id in table[id]?.suspicion.map { $0.deadline <= now } ?? false }
    for id in due {
      guard let state = table[id] else { continue }
      var record = state.member
      record.status = settings.holdUnreachableUntilConfirmed ? .unreachable : .dead
      let verdict = MemberUpdate(member: record)
      transition(to: verdict, now: now, &out)
      for recipient in randomMembers(count: settings.urgentFanout, excluding: [id]) {
        send(.gossip(updates: [verdict]), to: recipient, &out)
      }
    }
  }

  /// Lifeguard: a distinct node suspecting the same incarnation shortens the timeout.
  private mutating func confirmSuspicion(
    of id: NodeID, by suspecter: NodeID, now: Duration, _ out: inout [SWIMDirective]
  ) {
    guard var state = table[id], var suspicion = state.suspicion, !suspicion.suspecters.contains(suspecter)
    else { return }
    suspicion.suspecters.insert(suspecter)
    if suspecter == myself.id && suspicion.remindAt == nil { suspicion.remindAt = now + settings.probeInterval }
    state.suspicion = suspicion
    table[id] = state
    enqueueBroadcast(MemberUpdate(member: state.member, suspectedBy: suspecter))
  }

  private func newSuspicion(now: Duration, suspectedBy: NodeID?) -> Suspicion {
    let size = clusterSize
    let expected = size - 2 < settings.expectedConfirmations ? 0 : settings.expectedConfirmations
    return Suspicion(
      startedAt: now, suspecters: suspectedBy.map { [$0] } ?? [], expectedConfirmations: expected,
      minTimeout: minSuspicionTimeout, maxTimeout: maxSuspicionTimeout,
      remindAt: suspectedBy == myself.id ? now + settings.probeInterval : nil)
  }

  // MARK: Applying updates

  /// Merges one update from `sender`. What a single message can do is bounded: `suspectedBy`
  /// counts only when it is the sender; an incarnation of `UInt64.max`, or a rise above
  /// `maxIncarnationJump` not made by the member, is dropped; a `dead` (not a leave) about a
  /// member held alive only starts a suspicion; ids outside the authorised set, and new ids once
  /// the table holds `maxMembers`, are dropped. With an authenticator, a self-made record (alive,
  /// leave) needs the member's valid signature, and an accusation needs a known member and an
  /// incarnation it issued.
  private mutating func apply(
    _ received: MemberUpdate, from sender: NodeID, now: Duration, corrections: inout [MemberUpdate],
    _ out: inout [SWIMDirective]
  ) {
    var update = received
    if update.suspectedBy != sender { update.suspectedBy = nil }
    let incoming = update.member
    // An incarnation of UInt64.max could never be overtaken: nobody issues it.
    guard incoming.incarnation < .max, isAuthorized(incoming.id) else { return reject() }
    if incoming.id == myself.id {
      if incoming.incarnation > myself.incarnation,
        incoming.incarnation - myself.incarnation > settings.maxIncarnationJump, !isSignedByItsMember(update)
      {
        return reject()
      }
      if incoming.status != .alive && incoming.incarnation < myself.incarnation && !hasLeft {
        corrections.append(myRecord())
      }
      applyAboutMyself(update, from: sender, &out)
      return
    }
    if let authenticator, !update.credential.isEmpty {
      if authenticator.accept(credential: update.credential, of: incoming.id) {
        if credentials[incoming.id] != update.credential, table[incoming.id] != nil || table.count < settings.maxMembers
        {
          credentials[incoming.id] = update.credential
        }
      } else {
        statistics.updatesRejected += 1
      }
    }
    guard let state = table[incoming.id] else {
      // A death of a member never heard of carries nothing to report; nor, when records are
      // signed, does an accusation (it could name anyone).
      guard incoming.status != .dead else { return }
      if authenticator != nil && (!update.isSelfMade || !isSignedByItsMember(update)) { return reject() }
      guard table.count < settings.maxMembers else { return reject() }
      var fresh = MemberState(member: incoming, statusSince: now)
      fresh.signature = update.isSelfMade ? update.signature : []
      if incoming.status == .suspect { fresh.suspicion = newSuspicion(now: now, suspectedBy: update.suspectedBy) }
      table[incoming.id] = fresh
      unknownSenderSyncedAt[incoming.id] = nil
      let position = probeCursor + randomIndex(below: probeOrder.count - probeCursor + 1)
      probeOrder.insert(incoming.id, at: min(position, probeOrder.count))
      enqueueBroadcast(MemberUpdate(member: incoming, suspectedBy: update.suspectedBy, signature: fresh.signature))
      out.append(.event(.joined(incoming)))
      return
    }
    let current = state.member
    if authenticator != nil && !update.isSelfMade && incoming.incarnation > current.incarnation {
      return reject()  // an accusation at an incarnation the member never issued
    }
    if sender != incoming.id, incoming.incarnation > current.incarnation,
      incoming.incarnation - current.incarnation > settings.maxIncarnationJump, !isSignedByItsMember(update)
    {
      return reject()
    }
    if incoming.status != .alive && current.status == .alive && incoming.incarnation < current.incarnation {
      corrections.append(record(of: state))
    }
    if (incoming.status == .dead && !incoming.leftGracefully) || incoming.status == .unreachable,
      current.status == .alive
    {
      // Someone else's verdict about a member this node sees alive: only a suspicion here, so
      // the member gets its chance to refute, and one message cannot kill it.
      update.member.status = .suspect
      update.member.leftGracefully = false
      update.suspectedBy = sender
    }
    let news = update.member
    if current.isSuperseded(byStatus: news.status, incarnation: news.incarnation) {
      if authenticator != nil && update.isSelfMade && !isSignedByItsMember(update) { return reject() }
      transition(to: update, now: now, &out)
    } else if news.status == .suspect, current.status == .suspect, news.incarnation == current.incarnation,
      let suspecter = update.suspectedBy
    {
      confirmSuspicion(of: news.id, by: suspecter, now: now, &out)
    }
  }

  private mutating func reject() { statistics.updatesRejected += 1 }

  private func isAuthorized(_ id: NodeID) -> Bool { id == myself.id || (authorizedMembers?.contains(id) ?? true) }

  /// Whether the update is a self-made record with its member's valid signature.
  private func isSignedByItsMember(_ update: MemberUpdate) -> Bool {
    guard let authenticator, update.isSelfMade, !update.signature.isEmpty else { return false }
    return authenticator.verify(signature: update.signature, over: update.signedContent, by: update.member.id)
  }

  /// Counts a message against its sender's budget for the current second.
  private mutating func admitMessage(from sender: NodeID, now: Duration) -> Bool {
    if now >= rateWindowStart + .seconds(1) || now < rateWindowStart {
      rateWindowStart = now
      rateCounts = [:]
    }
    let count = rateCounts[sender, default: 0]
    guard count < settings.maxMessagesPerSenderPerSecond else { return false }
    // The window's table is bounded too: a flood of new senders cannot grow it without limit.
    if count == 0 && rateCounts.count >= settings.maxMembers * 2 { return false }
    rateCounts[sender] = count + 1
    return true
  }

  /// This node's record, signed when records are signed (the signature is cached).
  private mutating func myRecord() -> MemberUpdate {
    if let signedSelf, signedSelf.member == myself { return signedSelf }
    var record = MemberUpdate(member: myself)
    if let authenticator { record.signature = authenticator.sign(record.signedContent) ?? [] }
    signedSelf = record
    return record
  }

  /// A known member's record as this node relays it: with the member's signature when it is a
  /// record the member made.
  private func record(of state: MemberState) -> MemberUpdate {
    MemberUpdate(member: state.member, signature: state.signature)
  }

  /// Replaces a known member's record by a newer one, and reports and re-gossips the change.
  private mutating func transition(to update: MemberUpdate, now: Duration, _ out: inout [SWIMDirective]) {
    let incoming = update.member
    guard var state = table[incoming.id] else { return }
    let previous = state.member
    state.member.status = incoming.status
    state.member.leftGracefully = incoming.leftGracefully
    let metadataChanged = incoming.incarnation > previous.incarnation && incoming.metadata != previous.metadata
    if metadataChanged { state.member.metadata = incoming.metadata }
    state.member.incarnation = incoming.incarnation
    state.signature = update.isSelfMade ? update.signature : []
    if previous.status != incoming.status { state.statusSince = now }
    switch incoming.status {
    case .suspect:
      if previous.status != .suspect || previous.incarnation != incoming.incarnation || state.suspicion == nil {
        state.suspicion = newSuspicion(now: now, suspectedBy: update.suspectedBy)
      }
    case .alive, .unreachable, .dead:
      state.suspicion = nil
    }
    table[incoming.id] = state
    enqueueBroadcast(
      MemberUpdate(member: state.member, suspectedBy: update.suspectedBy, signature: state.signature))
    if previous.status != incoming.status {
      out.append(.event(.statusChanged(state.member, previous: previous.status)))
    }
    if metadataChanged { out.append(.event(.metadataChanged(state.member))) }
  }

  /// Someone said something about this node. A claim that it is not alive, at its incarnation or
  /// later, is refuted by a higher incarnation sent at once to the accusers; a newer alive record,
  /// or one at this incarnation with other metadata (from before a restart), is overtaken.
  private mutating func applyAboutMyself(_ update: MemberUpdate, from sender: NodeID, _ out: inout [SWIMDirective]) {
    let claimed = update.member.incarnation
    if update.member.status != .alive {
      guard claimed >= myself.incarnation else { return }
      raiseIncarnation(above: claimed)
      statistics.refutations += 1
      // Lifeguard: being suspected hints that this node is the slow one.
      adjustLocalHealth(by: 1)
      var accusers = [sender]
      if let suspecter = update.suspectedBy, suspecter != sender, suspecter != myself.id { accusers.append(suspecter) }
      announceMyself(urgentlyTo: accusers, &out)
    } else if claimed > myself.incarnation
      || (claimed == myself.incarnation && update.member.metadata != myself.metadata)
    {
      // A newer record from before a restart, or one at this incarnation with other metadata
      // (this node restarted before anyone suspected it): overtake it, or peers keep the old
      // metadata for ever.
      raiseIncarnation(above: claimed)
      announceMyself(urgentlyTo: [sender], &out)
    }
  }

  /// Sets this node's incarnation to `claimed + 1`. Callers never pass `UInt64.max` (`apply`
  /// drops such records), so the addition cannot overflow.
  private mutating func raiseIncarnation(above claimed: UInt64) {
    let (next, overflow) = claimed.addingReportingOverflow(1)
    precondition(!overflow, "incarnation \(claimed) of \(myself.id) cannot be raised")
    myself.incarnation = max(myself.incarnation, next)
  }

  private mutating func announceMyself(urgentlyTo accusers: [NodeID], _ out: inout [SWIMDirective]) {
    let announcement = myRecord()
    enqueueBroadcast(announcement)
    let others = randomMembers(count: settings.urgentFanout, excluding: Set(accusers))
    for recipient in accusers + others { send(.gossip(updates: [announcement]), to: recipient, &out) }
  }

  private mutating func forgetExpiredTombstones(now: Duration, _ out: inout [SWIMDirective]) {
    let expired = table.keys.sorted().filter { id in
      guard let state = table[id], state.member.status == .dead else { return false }
      return state.statusSince + settings.deadMemberRetention <= now
    }
    for id in expired {
      guard let state = table.removeValue(forKey: id) else { continue }
      broadcasts[id] = nil
      credentials[id] = nil
      out.append(.event(.removed(state.member)))
    }
  }

  // MARK: Dissemination

  private mutating func enqueueBroadcast(_ update: MemberUpdate) {
    broadcastCounter += 1
    broadcasts[update.member.id] = Broadcast(update: update, transmissions: 0, order: broadcastCounter)
  }

  /// The updates to piggyback on one message: the least-sent first (newest first among equals),
  /// within `maxPiggybackBytes` together with the message's explicit updates; each counts one
  /// transmission and is dropped after `retransmitLimit`. An update larger than the whole budget
  /// goes alone, on a message that carries nothing else, so that it is never stuck in the queue.
  /// With `buddy`, a suspicion of that member goes first (Lifeguard's buddy system: a probed
  /// suspect learns of it from the probe itself).
  private mutating func piggyback(buddy: NodeID?, besides explicit: [MemberUpdate]) -> [MemberUpdate] {
    var chosen: [MemberUpdate] = []
    var budget = settings.maxPiggybackBytes - explicit.reduce(0) { $0 + $1.wireBytes().count }
    var isEmpty = explicit.isEmpty
    let skipped = Set(explicit.map(\.member.id))
    if let buddy, !skipped.contains(buddy), let state = table[buddy],
      state.member.status == .suspect || state.member.status == .unreachable
    {
      let notice = MemberUpdate(member: state.member)
      let size = notice.wireBytes().count
      if size <= budget || isEmpty {
        budget -= size
        isEmpty = false
        chosen.append(notice)
      }
    }
    guard !broadcasts.isEmpty else { return chosen }
    let limit = retransmitLimit
    let candidates = broadcasts.values.sorted {
      ($0.transmissions, UInt64.max - $0.order) < ($1.transmissions, UInt64.max - $1.order)
    }
    for candidate in candidates {
      if budget <= 0 { break }
      let id = candidate.update.member.id
      if skipped.contains(id) || (id == buddy && !chosen.isEmpty) { continue }
      let size = candidate.update.wireBytes().count
      if size > budget {
        // Oversized: alone on an otherwise empty message, else wait for one.
        guard isEmpty, size > settings.maxPiggybackBytes else { continue }
        budget = 0
      } else {
        budget -= size
      }
      isEmpty = false
      chosen.append(candidate.update)
      let sent = candidate.transmissions + 1
      if sent >= limit {
        broadcasts[id] = nil
      } else {
        broadcasts[id]?.transmissions = sent
      }
    }
    statistics.updatesPiggybacked += chosen.count
    return chosen
  }

  /// Adds the piggyback to a message and emits it.
  private mutating func send(
    _ message: SWIMMessage, to recipient: NodeID, buddy: NodeID? = nil, _ out: inout [SWIMDirective]
  ) {
    statistics.messagesSent += 1
    switch message {
    case .ping(let sequence, let extra):
      out.append(
        .send(.ping(sequence: sequence, updates: extra + piggyback(buddy: buddy, besides: extra)), to: recipient))
    case .pingRequest(let sequence, let target, let extra):
      out.append(
        .send(
          .pingRequest(sequence: sequence, target: target, updates: extra + piggyback(buddy: nil, besides: extra)),
          to: recipient))
    case .ack(let sequence, let target, let extra):
      out.append(
        .send(
          .ack(sequence: sequence, target: target, updates: extra + piggyback(buddy: nil, besides: extra)),
          to: recipient))
    case .nack(let sequence, let target, let extra):
      out.append(
        .send(
          .nack(sequence: sequence, target: target, updates: extra + piggyback(buddy: nil, besides: extra)),
          to: recipient))
    case .gossip(let extra):
      out.append(.send(.gossip(updates: extra + piggyback(buddy: nil, besides: extra)), to: recipient))
    case .pushPull:
      out.append(.send(message, to: recipient))
    }
  }

  /// This node and every known member, for push-pull. Suspicions carry no suspecter: a full
  /// sync is not an independent confirmation.
  private mutating func fullState() -> [MemberUpdate] {
    var list = myRecord()
    if let authenticator { list.credential = authenticator.credential }
    return [list]
      + table.keys.sorted().compactMap { id in
        guard let state = table[id] else { return nil }
        var update = record(of: state)
        update.credential = credentials[id] ?? []
        return update
      }
  }

  // MARK: Randomness and time

  /// A random sequence number: an ack or nack can only match a probe if its sender saw the
  /// probe, never by guessing the next number.
  private mutating func takeSequence() -> UInt64 { max(1, random.next()) }

  private mutating func randomIndex(below bound: Int) -> Int {
    bound <= 1 ? 0 : Int(random.next() % UInt64(bound))
  }

  private mutating func shuffle(_ ids: inout [NodeID]) {
    guard ids.count > 1 else { return }
    for i in stride(from: ids.count - 1, to: 0, by: -1) { ids.swapAt(i, randomIndex(below: i + 1)) }
  }

  /// Up to `count` distinct alive members other than this node and `excluded`, uniformly chosen.
  private mutating func randomMembers(count: Int, excluding excluded: Set<NodeID>) -> [NodeID] {
    guard count > 0 else { return [] }
    var pool = table.keys.sorted().filter { !excluded.contains($0) && table[$0]?.member.status == .alive }
    var picked: [NodeID] = []
    while picked.count < count && !pool.isEmpty {
      picked.append(pool.remove(at: randomIndex(below: pool.count)))
    }
    return picked
  }

  private mutating func fraction(of duration: Duration, randomUpTo limit: Double) -> Duration {
    Self.multiply(duration, by: Double(random.next() % 1_000_000) / 1_000_000 * limit)
  }

  private func scaled(_ duration: Duration) -> Duration { duration * (1 + localHealth) }

  /// `duration · factor`, rounded to the nanosecond.
  public static func multiply(_ duration: Duration, by factor: Double) -> Duration {
    let (seconds, attoseconds) = duration.components
    let nanoseconds = Double(seconds) * 1e9 + Double(attoseconds) / 1e9
    return .nanoseconds(Int64((nanoseconds * factor).rounded()))
  }
}

// MARK: - Internal state

struct MemberState: Sendable {
  var member: Member
  var statusSince: Duration
  var suspicion: Suspicion?
  /// The member's signature of `member` when it is a record the member made (alive, leave).
  var signature: [UInt8] = []

  init(member: Member, statusSince: Duration) {
    self.member = member
    self.statusSince = statusSince
  }
}

/// Lifeguard's dynamic suspicion: the timeout starts at `maxTimeout` and falls towards
/// `minTimeout` as distinct nodes confirm it, reaching it after `expectedConfirmations`.
struct Suspicion: Sendable {
  var startedAt: Duration
  /// Distinct nodes that suspected the member; the first raised it, the others confirm.
  var suspecters: Set<NodeID>
  var expectedConfirmations: Int
  var minTimeout: Duration
  var maxTimeout: Duration
  /// When this node, being one of the suspecters, next tells the suspect directly (buddy
  /// system); nil when this node only heard of the suspicion.
  var remindAt: Duration?

  var deadline: Duration {
    let confirmations = max(0, suspecters.count - 1)
    if expectedConfirmations == 0 || confirmations >= expectedConfirmations { return startedAt + minTimeout }
    let progress = log(Double(confirmations + 1)) / log(Double(expectedConfirmations + 1))
    let timeout = SWIMCore.multiply(maxTimeout - minTimeout, by: 1 - progress) + minTimeout
    return startedAt + timeout
  }
}

struct Probe: Sendable {
  var target: NodeID
  var sequence: UInt64
  var directDeadline: Duration
  var periodEnd: Duration
  var acked = false
  var indirectSent = false
  var expectedNacks = 0
  var nacks = 0
  var helpers: Set<NodeID> = []
}

struct Relay: Sendable {
  var origin: NodeID
  var originSequence: UInt64
  var target: NodeID
  var deadline: Duration
}

struct Broadcast: Sendable {
  var update: MemberUpdate
  var transmissions: Int
  var order: UInt64
}

struct JoinState: Sendable {
  var seeds: [NodeID]
  var nextAttemptAt: Duration
}
