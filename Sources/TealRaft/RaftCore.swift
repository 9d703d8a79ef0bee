import TealWire

// MARK: - Options and persistent state

/// Tunables of one Raft node. Time is counted in ticks: the shell calls ``RaftCore/tick()`` at a
/// fixed interval. The defaults assume 5 ms ticks: a 50 ms heartbeat and a 300 ms election
/// timeout, randomized in [300, 600) ms. (Coarser ticks make two followers' timers fire in the
/// same tick more often, which splits votes: with 10 ms ticks the p99 failover measured 770 ms
/// instead of 570 ms; see Docs/RAFT.md.)
public struct RaftOptions: Sendable, Hashable {
  /// The tick interval the defaults are meant for.
  public static let defaultTickMilliseconds = 5
  /// T: a follower campaigns after hearing nothing from a leader for a random number of ticks in
  /// [T, 2T); a leader steps down (check-quorum) after T ticks without hearing from a majority.
  public var electionTicks: Int = 60
  /// Ticks between heartbeats from the leader. Must be well below `electionTicks`.
  public var heartbeatTicks: Int = 10
  /// Pre-vote (thesis §9.6): a node only increments its term when a majority would vote for it.
  public var preVote: Bool = true
  /// Check-quorum (thesis §6.2): a leader steps down if it has not heard from a majority for an
  /// election timeout, and a follower that hears from a leader ignores votes for that long.
  public var checkQuorum: Bool = true
  /// Upper bounds of one AppendEntries message.
  public var maxEntriesPerAppend: Int = 256
  public var maxBytesPerAppend: Int = 1 << 20
  /// Unacknowledged appends per follower in replicate state (the flow-control window).
  public var maxInflightAppends: Int = 64
  /// The same window in bytes (entry data plus 16 bytes per entry): no new append goes to a follower while
  /// its unacknowledged appends carry this many bytes. One append is always allowed when none is in flight.
  public var maxInflightBytes: Int = 16 << 20
  /// Bytes of command data a leader holds appended but not committed. A proposal that would exceed it is
  /// refused with ``RaftError/uncommittedLimit(bytes:limit:)`` (retryable once entries commit); one is
  /// always accepted when nothing is uncommitted, so a single large command is never refused forever.
  public var maxUncommittedBytes: Int = 32 << 20
  /// How many entries before a snapshot's index ``RaftCore/compact(upTo:snapshotData:)`` keeps in memory,
  /// so that a follower a little behind catches up from the log instead of being sent the snapshot. A
  /// leader keeps fewer when its healthy followers (in replicate state or heard from this round) already
  /// hold them: it compacts to max(index - N, min(index, slowest healthy follower's match)). Other nodes
  /// (which may lead next) keep N. 0 compacts the log up to the snapshot's index.
  public var compactionTailEntries: UInt64 = 1_024
  /// Bytes per InstallSnapshot chunk.
  public var snapshotChunkBytes: Int = 256 << 10
  /// Upper bound of committed entries handed out in one Ready.
  public var maxCommittedEntriesPerReady: Int = 4096
  /// A learner may be promoted when its log is at most this many entries behind the leader's, and only
  /// once it has acknowledged at least one entry (an empty learner is never caught up) and holds the
  /// leader's commit index (which also ends a joining learner's join mode).
  public var learnerCatchUpLag: UInt64 = 16
  /// Reads a new leader holds until its term's no-op commits (then it serves them).
  public var maxHeldReads: Int = 4096

  public init() {}
}

/// What a node finds on its disk at start: the hard state, the latest snapshot (if any) and the
/// entries after it. All empty for a brand-new node.
public struct RaftPersistentState: Sendable, Hashable {
  public var hardState: HardState
  public var snapshot: RaftSnapshot?
  /// Consecutive entries following the snapshot (or starting at index 1).
  public var entries: [RaftEntry]

  public init(hardState: HardState = HardState(), snapshot: RaftSnapshot? = nil, entries: [RaftEntry] = []) {
    self.hardState = hardState
    self.snapshot = snapshot
    self.entries = entries
  }
}

// MARK: - Ready

/// Everything the shell must do after feeding inputs to the core. Process it in this order:
///
/// 1. Persist `snapshot` (if any), then `entries` (overwriting any stored entry at or after the
///    first one's index), then `hardState` (if any), and sync. Readys must be persisted in the
///    order they were produced.
/// 2. Send `messages`. They may be sent before or while persisting (a leader's appends may go out
///    in parallel with its own write, thesis §10.2.1). When the Ready changes the term or the vote,
///    every message is in `messagesAfterPersist` instead: nothing that depends on a term or vote
///    leaves before it is durable (a single voter elects itself and appends in one Ready).
/// 3. Only after step 1 is durable, send `messagesAfterPersist` (votes and acknowledgements that
///    promise durable state).
/// 4. Install `snapshot` into the state machine, then apply `committedEntries` in order (only
///    `.command` entries carry application data), then serve `readStates` once the applied
///    index reaches each read's index. `committedEntries` are always entries an earlier Ready
///    persisted, so when the Ready has no `snapshot` they may be applied before step 1 (a leader
///    then answers its clients without waiting for the write of newer entries).
/// 5. Call ``RaftCore/advance(_:)`` with this Ready.
///
/// If the write in step 1 fails, the node must stop (crash) rather than continue: it may then
/// restart from what is on disk.
public struct RaftReady: Sendable, Hashable {
  public var hardState: HardState?
  public var snapshot: RaftSnapshot?
  public var entries: [RaftEntry] = []
  public var messages: [RaftMessage] = []
  public var messagesAfterPersist: [RaftMessage] = []
  public var committedEntries: [RaftEntry] = []
  public var readStates: [ReadState] = []
  /// Whether step 1 must be durable before `messagesAfterPersist` go out: true when the Ready carries a
  /// snapshot, entries, or a new term or vote. False when the only thing to persist is a higher commit
  /// index (etcd's MustSync rule): the shell may then skip the write (or write without syncing) and
  /// record the commit index with its next synced write; a restart with an older commit index only
  /// relearns it from the leader.
  public var mustSync: Bool = false
  /// Soft state at the time of the Ready (never persisted).
  public var role: RaftRole = .follower
  public var leader: NodeID?
  public var term: UInt64 = 0

  public init() {}

  /// True when there is nothing to persist, send or apply.
  public var isEmpty: Bool {
    hardState == nil && snapshot == nil && entries.isEmpty && messages.isEmpty && messagesAfterPersist.isEmpty
      && committedEntries.isEmpty && readStates.isEmpty
  }
}

// MARK: - RaftCore

/// One Raft node as a pure state machine: no I/O, no clock, no global randomness.
///
/// Inputs are `mutating` functions (``tick()``, ``step(_:)``, ``propose(_:)``,
/// ``readIndex(context:)``, ``transferLeadership(to:)``, ``proposeConfigChange(_:)``,
/// ``compact(upTo:snapshotData:)``); their effects are collected and handed out by ``ready()``;
/// ``advance(_:)`` reports that a Ready was persisted.
///
/// Guarantees (Raft Figure 3): at most one leader per term; logs that share an entry share the
/// prefix before it; a committed entry is in the log of every later leader; no two nodes apply
/// different entries at the same index. A leader counts its own log towards a quorum only up to
/// what it has persisted, and commits only by counting replicas of entries of its own term
/// (§5.4.2).
public struct RaftCore: Sendable {
  public let id: NodeID
  public let options: RaftOptions
  private var random: SplitMix64

  public private(set) var term: UInt64 = 0
  public private(set) var vote: NodeID?
  public private(set) var role: RaftRole = .follower
  /// The leader of `term` as far as this node knows.
  public private(set) var leader: NodeID?
  /// The latest configuration in the log, committed or not (it takes effect on append).
  public private(set) var configuration: RaftConfiguration
  /// Index of the entry that set `configuration` (or of the snapshot / 0 for the bootstrap one).
  public private(set) var configurationIndex: UInt64 = 0
  /// The most recent snapshot, kept to send to lagging followers.
  public private(set) var snapshot: RaftSnapshot?

  var log = RaftLog()
  private var snapshotConfiguration: RaftConfiguration

  // Timers
  /// Ticks since this node started (the leader's clock for flow control).
  private var ticks: UInt64 = 0
  private var electionElapsed = 0
  private var heartbeatElapsed = 0
  private var randomizedElectionTimeout = 0

  // Candidate
  private var votes: [NodeID: Bool] = [:]
  /// A joining node with an empty disk: it neither votes nor campaigns until a leader's entries or
  /// snapshot reached it (see `init(joining:)`).
  public private(set) var awaitingLeaderLog = false

  // Leader
  private var progress: [NodeID: Progress] = [:]
  /// Index of the no-op entry this node appended when it became leader of `term` (meaningful only
  /// while `role == .leader`). Once it is applied, the leader acts on the current state.
  public private(set) var termStartIndex: UInt64 = 0
  public private(set) var transferTarget: NodeID?
  private var readSequence: UInt64 = 0
  private var pendingReads: [PendingRead] = []
  /// Reads that reached this leader before its no-op committed (bounded by `maxHeldReads`).
  private var heldReads: [HeldRead] = []

  private struct HeldRead: Sendable {
    var context: [UInt8]
    var requester: NodeID?
  }
  /// Bytes of command data in this leader's log after the commit index (bounded by
  /// `maxUncommittedBytes`).
  public private(set) var uncommittedBytes = 0
  private var broadcastPending = false
  private var heartbeatPending = false
  private var commitBroadcastPending = false

  // Follower receiving a snapshot: only from one leader, in one term, for one whole snapshot.
  private var incomingSnapshot: IncomingSnapshot?
  /// The checksum of `snapshot`'s data, computed once per snapshot when it is first sent.
  private var snapshotChecksum: (index: UInt64, checksum: UInt32)?

  private struct IncomingSnapshot: Sendable {
    var metadata: SnapshotMetadata
    var term: UInt64
    var leader: NodeID
    var totalLength: UInt64
    var checksum: UInt32
    var bytes: [UInt8]
  }

  private struct SnapshotChunk {
    var offset: UInt64
    var data: [UInt8]
    var done: Bool
    var totalLength: UInt64
    var checksum: UInt32
    /// The sending leader's term.
    var term: UInt64
  }

  // Output
  private var outbox: [RaftMessage] = []
  private var outboxAfterPersist: [RaftMessage] = []
  private var readStates: [ReadState] = []
  private var snapshotToInstall: RaftSnapshot?
  private var handedHardState = HardState()

  private struct PendingRead: Sendable {
    var sequence: UInt64
    var index: UInt64
    var context: [UInt8]
    var requester: NodeID?
  }

  /// Starts a node from what its disk holds.
  ///
  /// - Parameters:
  ///   - bootstrap: the initial configuration, used only when `state` holds neither a snapshot
  ///     nor a configuration entry. Every founding member must be given the same one.
  ///   - randomSeed: seeds the election-timeout generator (use a different seed per node).
  ///   - appliedIndex: what the state machine has already applied (defaults to the snapshot's
  ///     index: the application restores the snapshot and re-applies committed entries).
  ///   - joining: the node joins an existing cluster. If `state` is empty (a new or wiped data
  ///     directory) the node neither votes nor campaigns until it has received entries or a
  ///     snapshot from a leader (``awaitingLeaderLog``): a voter whose disk was wiped cannot vote
  ///     a second time in a term it already voted in. `bootstrap` is still the configuration at
  ///     index 0 (the founding members) until the log says otherwise.
  public init(
    id: NodeID, options: RaftOptions = RaftOptions(), bootstrap: RaftConfiguration, randomSeed: UInt64,
    restoring state: RaftPersistentState = RaftPersistentState(), appliedIndex: UInt64? = nil,
    joining: Bool = false
  ) throws(RaftError) {
    self.id = id
    self.options = options
    self.random = SplitMix64(seed: randomSeed)
    self.configuration = bootstrap
    self.snapshotConfiguration = bootstrap
    if options.electionTicks < 2 || options.heartbeatTicks < 1 || options.heartbeatTicks >= options.electionTicks {
      throw .invalidPersistentState(
        field: "options", reason: "need electionTicks >= 2 and 1 <= heartbeatTicks < electionTicks")
    }
    if let snap = state.snapshot {
      log.restore(index: snap.metadata.index, term: snap.metadata.term)
      snapshot = snap
      snapshotConfiguration = snap.metadata.configuration
      configuration = snap.metadata.configuration
      configurationIndex = snap.metadata.index
    }
    var expected = log.snapshotIndex + 1
    for e in state.entries {
      if e.index <= log.snapshotIndex { continue }
      if e.index != expected {
        throw .invalidPersistentState(field: "entries", reason: "expected index \(expected), found \(e.index)")
      }
      if e.term < log.lastTerm {
        throw .invalidPersistentState(field: "entries", reason: "term decreases at index \(e.index)")
      }
      if e.kind == .configuration, (try? RaftConfiguration(wireBytes: e.data)) == nil {
        throw .invalidPersistentState(
          field: "entries", reason: "the configuration entry at index \(e.index) does not decode")
      }
      log.append(e)
      expected += 1
    }
    let hs = state.hardState
    if hs.commit > log.lastIndex {
      throw .invalidPersistentState(
        field: "hardState.commit", reason: "commit \(hs.commit) is beyond the last entry \(log.lastIndex)")
    }
    if log.lastTerm > hs.term {
      throw .invalidPersistentState(
        field: "hardState.term", reason: "term \(hs.term) is below the last entry's term \(log.lastTerm)")
    }
    term = hs.term
    vote = hs.vote
    log.committed = max(hs.commit, log.snapshotIndex)
    log.persisted = log.lastIndex
    log.unstableFrom = log.lastIndex + 1
    let applied = appliedIndex ?? log.snapshotIndex
    if applied < log.snapshotIndex || applied > log.committed {
      throw .invalidPersistentState(
        field: "appliedIndex",
        reason: "applied \(applied) must lie between the snapshot \(log.snapshotIndex) and commit \(log.committed)")
    }
    log.applied = applied
    handedHardState = HardState(term: term, vote: vote, commit: log.committed)
    awaitingLeaderLog = joining && state.snapshot == nil && state.entries.isEmpty && state.hardState == HardState()
    recomputeConfiguration()
    resetElectionTimer()
  }

  /// Messages with a term, index or offset at or above this are malformed and dropped (no honest
  /// cluster reaches it, and refusing it keeps index and term arithmetic from overflowing).
  public static let maximumTerm: UInt64 = 1 << 62

  private static func withinBounds(_ body: RaftMessage.Body) -> Bool {
    let limit = maximumTerm
    switch body {
    case .preVote(let i, let t), .vote(let i, let t, _): return i < limit && t < limit
    case .preVoteResponse, .voteResponse, .timeoutNow, .readIndex: return true
    case .append(let prevIndex, let prevTerm, let entries, let commit):
      return prevIndex < limit && prevTerm < limit && commit < limit
        && entries.allSatisfy {
          $0.index < limit && $0.term < limit
            && ($0.kind != .configuration || (try? RaftConfiguration(wireBytes: $0.data)) != nil)
        }
    case .appendResponse(let index, _, let hintIndex, let hintTerm):
      return index < limit && hintIndex < limit && hintTerm < limit
    case .heartbeat(let commit, let sequence): return commit < limit && sequence < limit
    case .heartbeatResponse(let sequence): return sequence < limit
    case .snapshotChunk(let metadata, let offset, _, _, let totalLength, _):
      return metadata.index < limit && metadata.term < limit && offset < limit && totalLength < limit
    case .snapshotChunkResponse(let index, let offset): return index < limit && offset < limit
    case .readIndexResponse(let index, _): return index < limit
    }
  }

  // MARK: Read-only views (for shells, tests and the simulation)

  public var commitIndex: UInt64 { log.committed }
  public var appliedIndex: UInt64 { log.applied }
  public var persistedIndex: UInt64 { log.persisted }
  public var firstIndex: UInt64 { log.firstIndex }
  public var lastIndex: UInt64 { log.lastIndex }
  public var lastTerm: UInt64 { log.lastTerm }
  public var hardState: HardState { HardState(term: term, vote: vote, commit: log.committed) }
  /// The term of the entry at `index`, nil if compacted or beyond the log.
  public func term(at index: UInt64) -> UInt64? { log.term(at: index) }
  /// The entry at `index` if it is in memory.
  public func entry(at index: UInt64) -> RaftEntry? {
    index >= log.firstIndex && index <= log.lastIndex ? log.entry(at: index) : nil
  }
  /// True when this node leads and has committed an entry of its term (it can serve reads and
  /// accept membership changes).
  public var isReadyLeader: Bool { role == .leader && log.committed >= termStartIndex }
  /// The replication state the leader keeps for `node`: (match, next), nil when not leading.
  public func replication(of node: NodeID) -> (match: UInt64, next: UInt64)? {
    progress[node].map { ($0.match, $0.next) }
  }

  // MARK: Invariants

  /// The first broken internal invariant, described with its context, or nil. Costs O(entries in
  /// memory + members); the simulation calls it after every event.
  public func invariantViolation() -> String? {
    let where_ = "node \(id) (\(role), term \(term))"
    if !(log.snapshotIndex <= log.applied && log.applied <= log.committed && log.committed <= log.lastIndex) {
      return "\(where_): need snapshot \(log.snapshotIndex) <= applied \(log.applied) <= commit "
        + "\(log.committed) <= last \(log.lastIndex)"
    }
    if log.persisted > log.lastIndex || log.unstableFrom > log.lastIndex + 1 {
      return "\(where_): persisted \(log.persisted) / unstableFrom \(log.unstableFrom) beyond last \(log.lastIndex)"
    }
    var previousTerm = log.snapshotTerm
    for (offset, e) in log.entries.enumerated() {
      if e.index != log.snapshotIndex + 1 + UInt64(offset) {
        return "\(where_): entry \(e) at position \(offset) after snapshot \(log.snapshotIndex)"
      }
      if e.term < previousTerm { return "\(where_): term decreases at \(e)" }
      previousTerm = e.term
    }
    if log.lastTerm > term { return "\(where_): last entry's term \(log.lastTerm) is above the current term" }
    if configurationIndex > log.lastIndex {
      return "\(where_): configuration index \(configurationIndex) beyond last \(log.lastIndex)"
    }
    switch role {
    case .leader:
      if leader != id || vote != id { return "\(where_): a leader must lead and have voted for itself" }
      if termStartIndex > log.lastIndex || (termStartIndex > log.snapshotIndex && log.term(at: termStartIndex) != term)
      {
        return "\(where_): the term-start entry \(termStartIndex) is not of this term"
      }
      let peers = Set(progress.keys)
      if peers != configuration.members.subtracting([id]) {
        return "\(where_): replication state for \(peers.sorted()) but members \(configuration.members.sorted())"
      }
      for (peer, pr) in progress where pr.match > log.lastIndex || pr.next > log.lastIndex + 1 || pr.next == 0 {
        return "\(where_): progress of \(peer) match \(pr.match) next \(pr.next) beyond last \(log.lastIndex)"
      }
    case .candidate, .preCandidate:
      if leader != nil { return "\(where_): a candidate knows leader \(leader?.rawValue ?? "")" }
      if !progress.isEmpty { return "\(where_): a candidate keeps replication state" }
    case .follower:
      if !progress.isEmpty { return "\(where_): a follower keeps replication state" }
    }
    return nil
  }

  /// Stops the process, with the context, if an internal invariant is broken (see
  /// ``invariantViolation()``).
  public func checkInvariants() {
    if let violation = invariantViolation() { preconditionFailure("RaftCore invariant broken: \(violation)") }
  }

  // MARK: - Inputs

  /// Advances logical time by one tick.
  public mutating func tick() {
    ticks &+= 1
    if role == .leader {
      tickLeader()
      return
    }
    electionElapsed += 1
    if electionElapsed >= randomizedElectionTimeout && configuration.voters.contains(id) && !awaitingLeaderLog {
      campaign(transfer: false)
    }
  }

  /// Proposes an application command. Only the leader accepts it; the entry commits (or is lost
  /// in a leader change) later.
  @discardableResult
  public mutating func propose(_ data: [UInt8]) throws(RaftError) -> ProposalPosition {
    guard role == .leader else { throw .notLeader(leader: leader) }
    guard transferTarget == nil else { throw .transferInProgress }
    if uncommittedBytes > 0 && uncommittedBytes + data.count > options.maxUncommittedBytes {
      throw .uncommittedLimit(bytes: uncommittedBytes, limit: options.maxUncommittedBytes)
    }
    return appendAsLeader(kind: .command, data: data)
  }

  /// Proposes one membership change. Refused unless this leader has committed an entry of its
  /// term and no other change is uncommitted (thesis §4.1 and its fix for single-server changes).
  @discardableResult
  public mutating func proposeConfigChange(_ change: ConfigChange) throws(RaftError) -> ProposalPosition {
    guard role == .leader else { throw .notLeader(leader: leader) }
    guard transferTarget == nil else { throw .transferInProgress }
    guard log.committed >= termStartIndex else { throw .leaderNotReady }
    guard configurationIndex <= log.committed else { throw .configChangePending }
    if case .promote(let node) = change, let pr = progress[node] {
      // A learner is caught up once it holds the commit index and is within `learnerCatchUpLag` of the
      // last entry. Holding the commit index also takes a joining node out of join mode (it votes only
      // once an append brought it up to the leader's commit index): promoted before that, it is a voter
      // that refuses votes, and a 1-voter leader that restarts can then never be elected again. (So a
      // learner that acknowledged nothing is never caught up, however short the log.)
      if pr.match == 0 || pr.match < log.committed || pr.match + options.learnerCatchUpLag < log.lastIndex {
        throw .learnerNotCaughtUp(node, match: pr.match, lastIndex: log.lastIndex)
      }
    }
    let next: RaftConfiguration
    switch configuration.applying(change) {
    case .success(let c): next = c
    case .failure(let error): throw error
    }
    return appendAsLeader(kind: .configuration, data: next.wireBytes())
  }

  /// Requests a linearizable read point (ReadIndex, thesis §6.4). The answer arrives as a
  /// ``ReadState`` carrying `context` in a later Ready; a follower forwards the request to the
  /// leader. A new leader holds reads (its own and forwarded ones, at most `maxHeldReads`; beyond
  /// that a local read throws ``RaftError/leaderNotReady`` and a forwarded one is dropped) until
  /// its term's no-op commits, then serves them. A request may be dropped (leader change, loss);
  /// the caller retries after a timeout.
  public mutating func readIndex(context: [UInt8]) throws(RaftError) {
    if role == .leader {
      if log.committed < termStartIndex {
        guard heldReads.count < options.maxHeldReads else { throw .leaderNotReady }
        heldReads.append(HeldRead(context: context, requester: nil))
        return
      }
      registerRead(context: context, requester: nil)
      return
    }
    guard let leader else { throw .notLeader(leader: nil) }
    send(RaftMessage(from: id, to: leader, term: term, body: .readIndex(context: context)))
  }

  /// Hands leadership to `target` (thesis §3.10): replicate to it, then tell it to campaign at
  /// once. Proposals are refused meanwhile; the transfer is abandoned after an election timeout.
  public mutating func transferLeadership(to target: NodeID) throws(RaftError) {
    guard role == .leader else { throw .notLeader(leader: leader) }
    if target == id { return }
    guard configuration.voters.contains(target), let pr = progress[target] else {
      throw .invalidTransferTarget(target, reason: "it is not a voter")
    }
    transferTarget = target
    electionElapsed = 0
    if pr.match == log.lastIndex {
      send(RaftMessage(from: id, to: target, term: term, body: .timeoutNow))
    } else {
      sendAppend(to: target)
    }
  }

  /// Records a snapshot the application took of its state after applying `index`, and drops the
  /// log up to it. Returns the snapshot with its metadata for the shell to persist (before it
  /// deletes the covered log segments).
  public mutating func compact(upTo index: UInt64, snapshotData: [UInt8]) throws(RaftError) -> RaftSnapshot {
    guard index <= log.applied else {
      throw .invalidSnapshot("index \(index) has not been applied yet (applied \(log.applied))")
    }
    let current = max(snapshot?.metadata.index ?? 0, log.snapshotIndex)
    guard index > current, let t = log.term(at: index) else {
      throw .invalidSnapshot("index \(index) is not after the current snapshot \(current)")
    }
    let config = configuration(at: index)
    let snap = RaftSnapshot(
      metadata: SnapshotMetadata(index: index, term: t, configuration: config), data: snapshotData)
    let keepAfter = compactionPoint(snapshotIndex: index)
    if keepAfter > log.snapshotIndex {
      let baseConfiguration = configuration(at: keepAfter)
      log.compact(upTo: keepAfter)
      snapshotConfiguration = baseConfiguration
    }
    snapshot = snap
    return snap
  }

  /// The index up to which the log is dropped for a snapshot at `index`: a tail of at most
  /// `compactionTailEntries` entries stays (see ``RaftOptions/compactionTailEntries``).
  private func compactionPoint(snapshotIndex index: UInt64) -> UInt64 {
    let tail = options.compactionTailEntries
    var point = index > tail ? index - tail : 0
    if role == .leader {
      var slowest = index
      for pr in progress.values where pr.state != .snapshot && (pr.state == .replicate || pr.recentActive) {
        slowest = min(slowest, pr.match)
      }
      point = max(point, slowest)
    }
    return max(min(point, index), log.snapshotIndex)
  }

  /// Handles a message from a peer. Messages for another node or from an older term are
  /// dropped (or answered with this node's term so a stale leader steps down).
  public mutating func step(_ m: RaftMessage) {
    // Terms near the top of the range are never reached honestly; refusing them keeps `term + 1`
    // from overflowing.
    guard m.to == id, m.from != id, m.term < Self.maximumTerm, Self.withinBounds(m.body) else { return }
    if m.term > term {
      switch m.body {
      case .vote(_, _, let transfer):
        if inLease && !transfer { return }
      case .preVote:
        if inLease { return }
      default: break
      }
      switch m.body {
      case .preVote: break
      case .preVoteResponse(let granted) where granted: break
      case .append, .heartbeat, .snapshotChunk: becomeFollower(term: m.term, leader: m.from)
      default: becomeFollower(term: m.term, leader: nil)
      }
    } else if m.term < term {
      switch m.body {
      case .append, .heartbeat, .snapshotChunk:
        // A leader cut off in an old term learns the new term and steps down.
        send(RaftMessage(from: id, to: m.from, term: term, body: .heartbeatResponse(readSequence: 0)))
      case .preVote:
        send(RaftMessage(from: id, to: m.from, term: term, body: .preVoteResponse(granted: false)))
      default: break
      }
      return
    }

    switch m.body {
    case .preVote(let lastIndex, let lastTerm):
      let canVote = !awaitingLeaderLog && (vote == m.from || (vote == nil && leader == nil) || m.term > term)
      let granted = canVote && log.isUpToDate(lastIndex: lastIndex, lastTerm: lastTerm)
      send(
        RaftMessage(from: id, to: m.from, term: granted ? m.term : term, body: .preVoteResponse(granted: granted)))
    case .vote(let lastIndex, let lastTerm, _):
      let canVote = !awaitingLeaderLog && (vote == m.from || (vote == nil && leader == nil))
      if canVote && log.isUpToDate(lastIndex: lastIndex, lastTerm: lastTerm) {
        vote = m.from
        electionElapsed = 0
        send(RaftMessage(from: id, to: m.from, term: term, body: .voteResponse(granted: true)))
      } else {
        send(RaftMessage(from: id, to: m.from, term: term, body: .voteResponse(granted: false)))
      }
    case .preVoteResponse(let granted):
      if role == .preCandidate && (m.term == term + 1 || !granted) { countVote(from: m.from, granted: granted) }
    case .voteResponse(let granted):
      if role == .candidate { countVote(from: m.from, granted: granted) }
    case .append(let prevIndex, let prevTerm, let entries, let commit):
      acceptLeader(m.from)
      onAppend(from: m.from, prevIndex: prevIndex, prevTerm: prevTerm, entries: entries, commit: commit)
    case .heartbeat(let commit, let readSequence):
      acceptLeader(m.from)
      if commit > log.committed { log.commit(to: min(commit, log.lastIndex)) }
      send(RaftMessage(from: id, to: m.from, term: term, body: .heartbeatResponse(readSequence: readSequence)))
    case .snapshotChunk(let metadata, let offset, let data, let done, let totalLength, let checksum):
      acceptLeader(m.from)
      onSnapshotChunk(
        from: m.from, metadata: metadata,
        chunk: SnapshotChunk(
          offset: offset, data: data, done: done, totalLength: totalLength, checksum: checksum, term: m.term))
    case .timeoutNow:
      if role != .leader && configuration.voters.contains(id) && !awaitingLeaderLog { campaign(transfer: true) }
    case .appendResponse(let index, let reject, let hintIndex, let hintTerm):
      if role == .leader {
        onAppendResponse(from: m.from, index: index, reject: reject, hintIndex: hintIndex, hintTerm: hintTerm)
      }
    case .heartbeatResponse(let readSequence):
      if role == .leader { onHeartbeatResponse(from: m.from, readSequence: readSequence) }
    case .snapshotChunkResponse(let index, let nextOffset):
      if role == .leader { onSnapshotChunkResponse(from: m.from, index: index, nextOffset: nextOffset) }
    case .readIndex(let context):
      if role == .leader {
        if log.committed >= termStartIndex {
          registerRead(context: context, requester: m.from)
        } else if heldReads.count < options.maxHeldReads {
          heldReads.append(HeldRead(context: context, requester: m.from))
        }
      }
    case .readIndexResponse(let index, let context):
      // Only the leader this node follows answers its reads (a stale answer from elsewhere is dropped).
      if role == .follower && leader == m.from { readStates.append(ReadState(index: index, context: context)) }
    }
  }

  // MARK: - Ready / advance

  /// Collects everything to persist, send and apply since the last call. See ``RaftReady`` for
  /// the order in which the shell must act on it.
  public mutating func ready() -> RaftReady {
    if broadcastPending || commitBroadcastPending {
      // New entries go to every follower; a commit advance is announced even without entries.
      let announceCommit = commitBroadcastPending
      broadcastPending = false
      commitBroadcastPending = false
      for peer in progress.keys.sorted() { sendAppend(to: peer, allowEmpty: announceCommit) }
    }
    if heartbeatPending {
      heartbeatPending = false
      broadcastHeartbeat()
    }
    var r = RaftReady()
    let hs = hardState
    // Nothing may leave before a new term or vote it depends on is durable (a single voter elects
    // itself and sends its appends in the same Ready).
    var holdMessages = false
    if hs != handedHardState {
      r.hardState = hs
      holdMessages = hs.term != handedHardState.term || hs.vote != handedHardState.vote
      handedHardState = hs
    }
    r.snapshot = snapshotToInstall
    snapshotToInstall = nil
    r.mustSync = holdMessages || r.snapshot != nil
    if log.unstableFrom <= log.lastIndex {
      r.entries = Array(log.slice(from: max(log.unstableFrom, log.firstIndex), through: log.lastIndex))
      log.unstableFrom = log.lastIndex + 1
      r.mustSync = true
    }
    if holdMessages {
      r.messagesAfterPersist = outbox + outboxAfterPersist
    } else {
      r.messages = outbox
      r.messagesAfterPersist = outboxAfterPersist
    }
    outbox = []
    outboxAfterPersist = []
    let applyTo = min(
      min(log.committed, log.persisted), log.applied + UInt64(options.maxCommittedEntriesPerReady))
    if applyTo > log.applied {
      r.committedEntries = Array(log.slice(from: log.applied + 1, through: applyTo))
      log.applied = applyTo
    }
    r.readStates = readStates
    readStates = []
    r.role = role
    r.leader = leader
    r.term = term
    return r
  }

  /// Reports that `ready` has been persisted (its snapshot, entries and hard state are durable).
  public mutating func advance(_ ready: RaftReady) {
    if let snap = ready.snapshot, log.snapshotIndex == snap.metadata.index, log.persisted < snap.metadata.index {
      log.persisted = snap.metadata.index
    }
    if let last = ready.entries.last, log.term(at: last.index) == last.term, last.index > log.persisted {
      log.persisted = last.index
    }
    if role == .leader && maybeCommit() { commitBroadcastPending = true }
  }

  // MARK: - Elections

  /// With check-quorum, a leader always ignores (pre-)vote requests (it steps down by itself when
  /// it loses its quorum), and a follower that heard from its leader recently ignores them too
  /// (thesis §4.2.3). "Recently" is one heartbeat interval shorter than the minimum election
  /// timeout, so that when the leader dies, the follower whose timer fires first is not ignored by
  /// the others merely because their timers tick a little out of phase.
  private var inLease: Bool {
    guard options.checkQuorum else { return false }
    if role == .leader { return true }
    return leader != nil && electionElapsed < max(options.electionTicks - options.heartbeatTicks, 1)
  }

  private mutating func resetElectionTimer() {
    electionElapsed = 0
    randomizedElectionTimeout = options.electionTicks + random.below(options.electionTicks)
  }

  private mutating func becomeFollower(term newTerm: UInt64, leader newLeader: NodeID?) {
    if newTerm > term {
      term = newTerm
      vote = nil
      incomingSnapshot = nil
    }
    role = .follower
    leader = newLeader
    resetLeaderState()
    resetElectionTimer()
  }

  private mutating func resetLeaderState() {
    progress = [:]
    uncommittedBytes = 0
    pendingReads = []
    heldReads = []
    transferTarget = nil
    broadcastPending = false
    heartbeatPending = false
    commitBroadcastPending = false
    votes = [:]
  }

  private mutating func acceptLeader(_ node: NodeID) {
    if role != .follower {
      becomeFollower(term: term, leader: node)
    } else {
      leader = node
      electionElapsed = 0
    }
  }

  private mutating func campaign(transfer: Bool) {
    resetLeaderState()
    leader = nil
    resetElectionTimer()
    votes = [id: true]
    if options.preVote && !transfer {
      role = .preCandidate
      if votes.count >= configuration.quorum {
        startElection(transfer: false)
        return
      }
      for peer in configuration.voters.sorted() where peer != id {
        send(
          RaftMessage(
            from: id, to: peer, term: term + 1, body: .preVote(lastIndex: log.lastIndex, lastTerm: log.lastTerm)))
      }
    } else {
      startElection(transfer: transfer)
    }
  }

  private mutating func startElection(transfer: Bool) {
    term += 1
    vote = id
    incomingSnapshot = nil
    role = .candidate
    leader = nil
    votes = [id: true]
    resetElectionTimer()
    if votes.count >= configuration.quorum {
      becomeLeader()
      return
    }
    for peer in configuration.voters.sorted() where peer != id {
      send(
        RaftMessage(
          from: id, to: peer, term: term,
          body: .vote(lastIndex: log.lastIndex, lastTerm: log.lastTerm, transfer: transfer)))
    }
  }

  private mutating func countVote(from node: NodeID, granted: Bool) {
    guard configuration.voters.contains(node) else { return }
    if votes[node] == nil { votes[node] = granted }
    let yes = votes.values.filter { $0 }.count
    let no = votes.count - yes
    if yes >= configuration.quorum {
      if role == .preCandidate {
        startElection(transfer: false)
      } else {
        becomeLeader()
      }
    } else if no >= configuration.quorum {
      becomeFollower(term: term, leader: nil)
    }
  }

  private mutating func becomeLeader() {
    role = .leader
    leader = id
    votes = [:]
    heartbeatElapsed = 0
    electionElapsed = 0
    progress = [:]
    for peer in configuration.members where peer != id {
      progress[peer] = Progress(next: log.lastIndex + 1)
    }
    uncommittedBytes = 0
    for e in log.slice(from: log.committed + 1, through: log.lastIndex) where e.kind == .command {
      uncommittedBytes += e.data.count
    }
    _ = appendAsLeader(kind: .noop, data: [])
    termStartIndex = log.lastIndex
  }

  // MARK: - Leader

  private mutating func tickLeader() {
    heartbeatElapsed += 1
    electionElapsed += 1
    if electionElapsed >= options.electionTicks {
      electionElapsed = 0
      if options.checkQuorum {
        var active = configuration.voters.contains(id) ? 1 : 0
        for (peer, pr) in progress where pr.recentActive && configuration.voters.contains(peer) { active += 1 }
        if active < configuration.quorum {
          becomeFollower(term: term, leader: nil)
          return
        }
        for peer in progress.keys { progress[peer]?.recentActive = false }
      }
      transferTarget = nil
    }
    if heartbeatElapsed >= options.heartbeatTicks {
      heartbeatElapsed = 0
      broadcastHeartbeat()
    }
  }

  private mutating func appendAsLeader(kind: RaftEntryKind, data: [UInt8]) -> ProposalPosition {
    let entry = RaftEntry(term: term, index: log.lastIndex + 1, kind: kind, data: data)
    log.append(entry)
    if kind == .command { uncommittedBytes += data.count }
    if kind == .configuration { adoptConfiguration(Self.decodeConfiguration(entry), at: entry.index) }
    broadcastPending = true
    return ProposalPosition(index: entry.index, term: entry.term)
  }

  private mutating func broadcastHeartbeat() {
    for peer in progress.keys.sorted() {
      guard let pr = progress[peer] else { continue }
      send(
        RaftMessage(
          from: id, to: peer, term: term,
          body: .heartbeat(commit: min(pr.match, log.committed), readSequence: readSequence)))
    }
  }

  private func isPaused(_ pr: Progress) -> Bool {
    pr.isPaused(maxInflight: options.maxInflightAppends, maxBytes: options.maxInflightBytes)
  }

  /// Sends the next batch of entries to `peer` if its flow-control state allows.
  private mutating func sendAppend(to peer: NodeID, allowEmpty: Bool = false) {
    guard var pr = progress[peer], !isPaused(pr) else { return }
    guard let prevTerm = log.term(at: pr.next - 1) else {
      sendSnapshot(to: peer)
      return
    }
    let entries = log.slice(from: pr.next, maxCount: options.maxEntriesPerAppend, maxBytes: options.maxBytesPerAppend)
    if entries.isEmpty && !allowEmpty && pr.state == .replicate { return }
    send(
      RaftMessage(
        from: id, to: peer, term: term,
        body: .append(prevIndex: pr.next - 1, prevTerm: prevTerm, entries: entries, commit: log.committed)))
    switch pr.state {
    case .replicate:
      if let last = entries.last {
        pr.next = last.index + 1
        pr.sent(lastIndex: last.index, bytes: entries.reduce(0) { $0 + $1.data.count + 16 }, at: ticks)
      }
    case .probe:
      pr.probeSent = true
      pr.probeSentAt = ticks
    case .snapshot: break
    }
    progress[peer] = pr
  }

  private mutating func sendSnapshot(to peer: NodeID) {
    guard var pr = progress[peer], let snap = snapshot else { return }
    pr.state = .snapshot
    pr.inflight.removeAll()
    pr.snapshotIndex = snap.metadata.index
    pr.snapshotOffset = 0
    progress[peer] = pr
    sendSnapshotChunk(to: peer)
  }

  private mutating func sendSnapshotChunk(to peer: NodeID) {
    guard let pr = progress[peer], let snap = snapshot else { return }
    if pr.snapshotIndex != snap.metadata.index {
      sendSnapshot(to: peer)
      return
    }
    let start = Int(min(pr.snapshotOffset, UInt64(snap.data.count)))
    let end = min(start + max(options.snapshotChunkBytes, 1), snap.data.count)
    if snapshotChecksum?.index != snap.metadata.index {
      snapshotChecksum = (snap.metadata.index, SnapshotChecksum.of(snap.data))
    }
    send(
      RaftMessage(
        from: id, to: peer, term: term,
        body: .snapshotChunk(
          metadata: snap.metadata, offset: UInt64(start), data: Array(snap.data[start..<end]),
          done: end == snap.data.count, totalLength: UInt64(snap.data.count),
          checksum: snapshotChecksum?.checksum ?? 0)))
  }

  private mutating func onAppendResponse(
    from peer: NodeID, index: UInt64, reject: Bool, hintIndex: UInt64, hintTerm: UInt64
  ) {
    guard var pr = progress[peer], index <= log.lastIndex else { return }
    pr.recentActive = true
    if reject && pr.state != .snapshot && index >= pr.match && hintIndex < pr.match {
      // The follower no longer holds entries it acknowledged (its disk was wiped): replicate to it
      // again from what it holds. (A reordered old rejection can land here too; that only costs a
      // re-probe, and a lower match only delays commits.)
      pr.match = hintIndex
      pr.becomeProbe()
      progress[peer] = pr
      sendAppend(to: peer)
      return
    }
    if reject {
      switch pr.state {
      case .replicate:
        if index <= pr.match {
          progress[peer] = pr
          return
        }
        pr.becomeProbe()
      case .probe:
        if index != pr.next - 1 {
          progress[peer] = pr
          return
        }
        pr.probeSent = false
      case .snapshot:
        progress[peer] = pr
        return
      }
      let agreed = log.hint(atMost: hintIndex, term: hintTerm)
      pr.next = max(min(agreed.index + 1, pr.next), pr.match + 1)
      progress[peer] = pr
      sendAppend(to: peer)
      return
    }
    if index > pr.match {
      pr.match = index
      switch pr.state {
      case .probe: pr.becomeReplicate()
      case .snapshot:
        // Leave snapshot state once the follower holds the snapshot (or anything beyond it).
        if index >= pr.snapshotIndex { pr.becomeReplicate() }
      case .replicate:
        pr.acknowledge(upTo: index)
        if pr.next <= index { pr.next = index + 1 }
      }
      progress[peer] = pr
      if maybeCommit() { commitBroadcastPending = true }
      if peer == transferTarget && pr.match == log.lastIndex {
        send(RaftMessage(from: id, to: peer, term: term, body: .timeoutNow))
      }
    } else {
      if pr.state == .probe { pr.probeSent = false }
      progress[peer] = pr
    }
    while let current = progress[peer], current.state != .snapshot, current.next <= log.lastIndex,
      !isPaused(current)
    {
      sendAppend(to: peer)
      if progress[peer]?.state != .replicate { break }
    }
  }

  private mutating func onHeartbeatResponse(from peer: NodeID, readSequence ack: UInt64) {
    guard var pr = progress[peer] else { return }
    pr.recentActive = true
    if ack > pr.readAck { pr.readAck = ack }
    // A heartbeat response can overtake the acknowledgement of an append the follower is still
    // writing: only an append unacknowledged for two heartbeat intervals counts as lost, and only
    // a probe outstanding for one interval is sent again.
    let heartbeat = UInt64(options.heartbeatTicks)
    if pr.isStalled(now: ticks, after: 2 * heartbeat) {
      pr.becomeProbe()  // the pipeline stalled (an append or its ack was lost): resend from the match point
    } else if pr.state == .probe && pr.probeSent && ticks >= pr.probeSentAt + heartbeat {
      pr.probeSent = false
    }
    progress[peer] = pr
    if pr.state == .snapshot {
      sendSnapshotChunk(to: peer)
    } else if pr.match < log.lastIndex {
      sendAppend(to: peer)
    }
    if ack > 0 { releaseReads() }
  }

  private mutating func onSnapshotChunkResponse(from peer: NodeID, index: UInt64, nextOffset: UInt64) {
    guard var pr = progress[peer] else { return }
    pr.recentActive = true
    guard pr.state == .snapshot, pr.snapshotIndex == index else {
      progress[peer] = pr
      return
    }
    pr.snapshotOffset = nextOffset
    progress[peer] = pr
    sendSnapshotChunk(to: peer)
  }

  /// Advances the commit index to the highest index replicated on a quorum of voters, but only
  /// if that entry is of the current term (§5.4.2). Returns whether it advanced.
  private mutating func maybeCommit() -> Bool {
    var matches: [UInt64] = []
    matches.reserveCapacity(configuration.voters.count)
    for voter in configuration.voters {
      matches.append(voter == id ? log.persisted : (progress[voter]?.match ?? 0))
    }
    matches.sort(by: >)
    let candidate = matches[configuration.quorum - 1]
    guard candidate > log.committed, log.term(at: candidate) == term else { return false }
    for e in log.slice(from: log.committed + 1, through: candidate) where e.kind == .command {
      uncommittedBytes -= e.data.count
    }
    uncommittedBytes = max(uncommittedBytes, 0)
    log.commit(to: candidate)
    if !heldReads.isEmpty && candidate >= termStartIndex {
      let held = heldReads
      heldReads = []
      for read in held { registerRead(context: read.context, requester: read.requester) }
    }
    if configurationIndex <= candidate && !configuration.voters.contains(id) {
      // A leader removed from the configuration steps down once the removal commits.
      becomeFollower(term: term, leader: nil)
    }
    return true
  }

  private mutating func registerRead(context: [UInt8], requester: NodeID?) {
    if configuration.voters == [id] {
      deliverRead(index: log.committed, context: context, requester: requester)
      return
    }
    readSequence += 1
    pendingReads.append(
      PendingRead(sequence: readSequence, index: log.committed, context: context, requester: requester))
    heartbeatPending = true
  }

  /// Releases reads whose heartbeat round a quorum confirmed: no newer leader existed when they
  /// were registered, so the commit index then is a linearizable read point.
  private mutating func releaseReads() {
    guard !pendingReads.isEmpty else { return }
    var acks: [UInt64] = []
    for voter in configuration.voters {
      acks.append(voter == id ? readSequence : (progress[voter]?.readAck ?? 0))
    }
    acks.sort(by: >)
    let confirmed = acks[configuration.quorum - 1]
    var released = 0
    while released < pendingReads.count && pendingReads[released].sequence <= confirmed { released += 1 }
    guard released > 0 else { return }
    let ready = pendingReads[..<released]
    pendingReads.removeFirst(released)
    for read in ready { deliverRead(index: read.index, context: read.context, requester: read.requester) }
  }

  private mutating func deliverRead(index: UInt64, context: [UInt8], requester: NodeID?) {
    if let requester {
      send(RaftMessage(from: id, to: requester, term: term, body: .readIndexResponse(index: index, context: context)))
    } else {
      readStates.append(ReadState(index: index, context: context))
    }
  }

  // MARK: - Follower

  private mutating func onAppend(
    from leaderID: NodeID, prevIndex: UInt64, prevTerm: UInt64, entries: [RaftEntry], commit: UInt64
  ) {
    for (offset, e) in entries.enumerated() where e.index != prevIndex &+ 1 &+ UInt64(offset) || e.term < prevTerm {
      return  // malformed: entries must follow prevIndex consecutively
    }
    if prevIndex < log.committed {
      sendAfterPersist(to: leaderID, .appendResponse(index: log.committed, reject: false, hintIndex: 0, hintTerm: 0))
      return
    }
    guard log.term(at: prevIndex) == prevTerm else {
      let hint = log.hint(atMost: prevIndex, term: prevTerm)
      send(
        RaftMessage(
          from: id, to: leaderID, term: term,
          body: .appendResponse(index: prevIndex, reject: true, hintIndex: hint.index, hintTerm: hint.term)))
      return
    }
    switch log.merge(entries) {
    case .failure:
      return
    case .success(let firstWritten):
      if let firstWritten {
        if firstWritten <= configurationIndex || entries.contains(where: { $0.kind == .configuration }) {
          recomputeConfiguration()
        }
      }
    }
    let lastNew = prevIndex + UInt64(entries.count)
    // A joining node takes part in elections once it holds the leader's log up to its commit index.
    if awaitingLeaderLog && log.lastIndex > 0 && lastNew >= commit { awaitingLeaderLog = false }
    let newCommit = min(commit, lastNew)
    log.commit(to: newCommit)
    sendAfterPersist(to: leaderID, .appendResponse(index: lastNew, reject: false, hintIndex: 0, hintTerm: 0))
  }

  /// Assembles a snapshot from chunks. Chunks join only if they come from the same leader in the same
  /// term and describe the same snapshot (metadata, total length and checksum); the whole is verified
  /// against the length and the CRC before it is installed, and a mismatch restarts the transfer.
  private mutating func onSnapshotChunk(from leaderID: NodeID, metadata: SnapshotMetadata, chunk: SnapshotChunk) {
    if metadata.index <= log.committed {
      incomingSnapshot = nil
      sendAfterPersist(to: leaderID, .appendResponse(index: log.committed, reject: false, hintIndex: 0, hintTerm: 0))
      return
    }
    let sameTransfer: (IncomingSnapshot) -> Bool = {
      $0.metadata == metadata && $0.term == chunk.term && $0.leader == leaderID
        && $0.totalLength == chunk.totalLength && $0.checksum == chunk.checksum
    }
    if chunk.offset == 0 {
      incomingSnapshot = IncomingSnapshot(
        metadata: metadata, term: chunk.term, leader: leaderID, totalLength: chunk.totalLength,
        checksum: chunk.checksum, bytes: chunk.data)
    } else if let incoming = incomingSnapshot, sameTransfer(incoming), UInt64(incoming.bytes.count) == chunk.offset {
      incomingSnapshot?.bytes.append(contentsOf: chunk.data)
    } else {
      let have = incomingSnapshot.map { sameTransfer($0) ? UInt64($0.bytes.count) : 0 } ?? 0
      if let incoming = incomingSnapshot, !sameTransfer(incoming) { incomingSnapshot = nil }
      send(
        RaftMessage(
          from: id, to: leaderID, term: term, body: .snapshotChunkResponse(index: metadata.index, nextOffset: have)))
      return
    }
    if let incoming = incomingSnapshot, UInt64(incoming.bytes.count) > incoming.totalLength {
      // More bytes than announced: start over.
      incomingSnapshot = nil
      send(
        RaftMessage(
          from: id, to: leaderID, term: term, body: .snapshotChunkResponse(index: metadata.index, nextOffset: 0)))
      return
    }
    guard chunk.done, let complete = incomingSnapshot else {
      let have = UInt64(incomingSnapshot?.bytes.count ?? 0)
      send(
        RaftMessage(
          from: id, to: leaderID, term: term, body: .snapshotChunkResponse(index: metadata.index, nextOffset: have)))
      return
    }
    incomingSnapshot = nil
    guard UInt64(complete.bytes.count) == complete.totalLength,
      SnapshotChecksum.of(complete.bytes) == complete.checksum
    else {
      // Damaged or spliced: discard it and ask for the snapshot from its start.
      send(
        RaftMessage(
          from: id, to: leaderID, term: term, body: .snapshotChunkResponse(index: metadata.index, nextOffset: 0)))
      return
    }
    installSnapshot(RaftSnapshot(metadata: complete.metadata, data: complete.bytes))
    // Acknowledge the snapshot's index only: entries after it in this log may still differ.
    sendAfterPersist(to: leaderID, .appendResponse(index: metadata.index, reject: false, hintIndex: 0, hintTerm: 0))
  }

  private mutating func installSnapshot(_ snap: RaftSnapshot) {
    let meta = snap.metadata
    awaitingLeaderLog = false
    if log.term(at: meta.index) == meta.term {
      // Our log already holds the snapshot's last entry: just commit up to it.
      log.commit(to: meta.index)
      return
    }
    log.restore(index: meta.index, term: meta.term)
    snapshot = snap
    snapshotToInstall = snap
    snapshotConfiguration = meta.configuration
    configuration = meta.configuration
    configurationIndex = meta.index
  }

  // MARK: - Configuration

  private mutating func adoptConfiguration(_ config: RaftConfiguration, at index: UInt64) {
    configuration = config
    configurationIndex = index
    guard role == .leader else { return }
    for member in config.members where member != id && progress[member] == nil {
      progress[member] = Progress(next: log.lastIndex + 1)
    }
    for peer in progress.keys where !config.members.contains(peer) {
      progress[peer] = nil
      if transferTarget == peer { transferTarget = nil }
    }
  }

  /// Sets `configuration` from the latest configuration entry in the log, or the snapshot's.
  private mutating func recomputeConfiguration() {
    var index = log.lastIndex
    while index > log.snapshotIndex {
      let e = log.entry(at: index)
      if e.kind == .configuration {
        adoptConfiguration(Self.decodeConfiguration(e), at: index)
        return
      }
      index -= 1
    }
    adoptConfiguration(snapshotConfiguration, at: log.snapshotIndex)
  }

  /// The configuration a configuration entry of this log carries. Every such entry was validated
  /// when it entered the log (decoded from the wire or the disk, or built by the leader), so a
  /// failure here is a broken invariant.
  private static func decodeConfiguration(_ entry: RaftEntry) -> RaftConfiguration {
    do {
      return try RaftConfiguration(wireBytes: entry.data)
    } catch {
      preconditionFailure("RaftCore: configuration entry \(entry) in the log does not decode: \(error)")
    }
  }

  /// The configuration in effect at `index` (which must be in the log or at the snapshot).
  private func configuration(at index: UInt64) -> RaftConfiguration {
    var i = min(index, log.lastIndex)
    while i > log.snapshotIndex {
      let e = log.entry(at: i)
      if e.kind == .configuration { return Self.decodeConfiguration(e) }
      i -= 1
    }
    return snapshotConfiguration
  }

  // MARK: - Output

  /// Queues a message. Votes and acknowledgements promise durable state, so they wait for the
  /// persist step; everything else may go out at once.
  private mutating func send(_ m: RaftMessage) {
    switch m.body {
    case .vote, .voteResponse, .appendResponse:
      outboxAfterPersist.append(m)
    default:
      outbox.append(m)
    }
  }

  private mutating func sendAfterPersist(to peer: NodeID, _ body: RaftMessage.Body) {
    outboxAfterPersist.append(RaftMessage(from: id, to: peer, term: term, body: body))
  }
}
