import Foundation
import Logging
import TealGossip
import TealWire

/// What one node knows of the cluster at one moment.
public struct MembershipSnapshot: Sendable, Hashable {
  /// This node's own record.
  public let myself: Member
  /// Every other member known, dead ones included until their tombstone expires, by id.
  public let members: [Member]
  /// How many events the service had published when the snapshot was taken: the snapshot
  /// includes every event up to this version and none after it.
  public let version: UInt64

  public init(myself: Member, members: [Member], version: UInt64 = 0) {
    self.myself = myself
    self.members = members
    self.version = version
  }

  /// This node and every member that is alive or suspect (still presumed to serve).
  public var reachable: [Member] { [myself] + members.filter { $0.status == .alive || $0.status == .suspect } }

  /// The member that most recently announced itself leader (highest term), if any is alive.
  /// Advisory only: Raft decides who leads.
  public var announcedLeader: Member? {
    reachable.filter { $0.metadata.raftRole == .leader }.max { $0.metadata.raftTerm < $1.metadata.raftTerm }
  }
}

/// One event with its place in the service's sequence (1, 2, 3, ...). A subscriber that sees a
/// version other than the previous one plus one missed events (its buffer overflowed) and should
/// re-read `subscribeWithSnapshot()`.
public struct VersionedMembershipEvent: Sendable, Hashable {
  public let version: UInt64
  public let event: MembershipEvent
}

/// Where a service stands with joining the cluster.
public enum MembershipJoinStatus: Sendable, Hashable {
  /// `start(seeds:)` has not run yet.
  case notStarted
  /// No seed has answered yet; the join is retried every `joinRetryInterval`. `unknownSeeds`
  /// lists seeds that the transport does not know at all (a configuration error).
  case joining(seeds: [NodeID], unknownSeeds: [NodeID])
  /// A seed answered (or the node started with no seeds and waits to be joined).
  case joined
  /// The node left or stopped.
  case stopped
}

/// Counters of what the shell dropped or failed to do, for metrics and tests.
public struct MembershipCounters: Sendable, Hashable {
  /// Sends the transport refused (peer unavailable, queue full, shut down, unknown peer).
  public var sendFailures = 0
  /// Messages dropped because the outbox was full (the oldest go first).
  public var outboxDropped = 0
  /// Events dropped because a consumer's buffer was full (summed over all consumers).
  public var eventsDropped = 0
  /// Payloads that did not decode.
  public var undecodableMessages = 0
}

/// The SWIM shell: drives a `SWIMCore` with the real monotonic clock and timers, sends its
/// messages through a `PeerMessageSender` on `PeerChannel.gossip` (the mutually authenticated
/// TLS peer transport in production), and publishes membership events.
///
/// Members are addressed by `NodeID`: the transport knows each node's peer address. Gossip only
/// reports: nothing here changes the Raft configuration.
///
/// Wire it up by passing `messageHandler` (or calling `receive(from:payload:)`) for messages on
/// the gossip channel, then `start(seeds:)`.
///
/// Bounds: the outbox holds at most `outboxLimit` messages (the oldest are dropped and counted);
/// each event consumer buffers at most `eventBufferLimit` events (the oldest are dropped and
/// counted; versioned subscribers see the gap).
public actor MembershipService {
  /// Messages waiting for the transport, at most.
  public static let outboxLimit = 1024
  /// Events buffered per consumer, at most.
  public static let eventBufferLimit = 4096
  /// How long `leave()` waits for the members to acknowledge the farewell, by default.
  public static let defaultLeaveTimeout: Duration = .seconds(1)

  /// Every membership change this node observes, in order, for one consumer (use `subscribe()`
  /// for more). Buffers the newest 4096 events if nobody reads; a reader that falls that far
  /// behind should re-read `snapshot()` (or use `subscribeWithSnapshot()`, which shows gaps).
  /// Finishes when the service stops.
  public nonisolated let events: AsyncStream<MembershipEvent>
  public nonisolated let id: NodeID

  private var core: SWIMCore
  private let sender: any PeerMessageSender
  private let eventContinuation: AsyncStream<MembershipEvent>.Continuation
  private var subscribers: [Int: AsyncStream<MembershipEvent>.Continuation] = [:]
  private var versionedSubscribers: [Int: AsyncStream<VersionedMembershipEvent>.Continuation] = [:]
  private var nextSubscriberID = 0
  private var eventVersion: UInt64 = 0
  private let outbox: AsyncStream<(NodeID, [UInt8])>.Continuation
  private let outboxStream: AsyncStream<(NodeID, [UInt8])>
  private let origin: ContinuousClock.Instant
  private var log: Logger
  private var senderTask: Task<Void, Never>?
  private var timerTask: Task<Void, Never>?
  private var scheduledWakeup: Duration?
  private var timerGeneration = 0
  private var isRunning = false
  private var isLeaving = false
  private var isStopped = false
  private var farewellWaiter: CheckedContinuation<Void, Never>?
  private var unknownPeers: Set<NodeID> = []
  public private(set) var counters = MembershipCounters()

  /// - Parameters:
  ///   - incarnation: the first incarnation. Pass a value above any used before a restart when
  ///     one is persisted; by default it is the wall clock in milliseconds since 1970, which is
  ///     above the incarnation of any earlier run of this node unless the clock went back.
  ///   - authenticator: signs this node's records and verifies the others' (production:
  ///     `CertificateRecordAuthenticator` over the node's key and the cluster CA). Without one,
  ///     any member can speak for another within the core's other bounds.
  ///   - authorizedMembers: the only ids allowed as members and senders (for example the Raft
  ///     configuration); nil allows any id the transport delivers. See `setAuthorizedMembers`.
  public init(
    id: NodeID, metadata: MemberMetadata, settings: SWIMSettings = SWIMSettings(), incarnation: UInt64? = nil,
    sender: any PeerMessageSender, logger: Logger = Logger(label: "teal.membership"),
    authenticator: (any SWIMRecordAuthenticator)? = nil, authorizedMembers: Set<NodeID>? = nil
  ) throws(SWIMSettingsError) {
    let origin = ContinuousClock.now
    self.origin = origin
    self.id = id
    self.core = try SWIMCore(
      id: id, metadata: metadata, settings: settings, incarnation: incarnation ?? Self.wallClockIncarnation(),
      random: SystemRandomNumberGenerator(), now: .zero, authenticator: authenticator)
    core.setAuthorizedMembers(authorizedMembers)
    self.sender = sender
    var log = logger
    log[metadataKey: "node"] = "\(id)"
    self.log = log
    (events, eventContinuation) = AsyncStream.makeStream(bufferingPolicy: .bufferingNewest(Self.eventBufferLimit))
    (outboxStream, outbox) = AsyncStream.makeStream(bufferingPolicy: .bufferingNewest(Self.outboxLimit))
  }

  /// Milliseconds since 1970: a first incarnation that grows across restarts without storage.
  public static func wallClockIncarnation() -> UInt64 {
    UInt64(max(0, (Date().timeIntervalSince1970 * 1000).rounded(.down)))
  }

  // MARK: Lifecycle

  /// Starts probing and joins through `seeds` (node ids the transport can reach). With no seeds
  /// the node waits for others to join it. Seeds are never forgotten: while one is not alive it
  /// is offered a push-pull every `reconnectInterval`, even after it left.
  public func start(seeds: [NodeID]) {
    guard !isRunning, !isStopped else { return }
    isRunning = true
    let stream = outboxStream
    let sender = sender
    senderTask = Task { [weak self] in
      for await (peer, payload) in stream {
        do {
          try await sender.send(payload, on: .gossip, to: peer)
        } catch {
          // SWIM treats a failed send as a lost message; the protocol recovers.
          await self?.sendFailed(to: peer, error)
        }
      }
    }
    let now = elapsed()
    carryOut(core.join(seeds: seeds, now: now))
    carryOut(core.tick(now: now))
  }

  /// Adds peers never to forget, for example the members of the Raft configuration.
  public func addConfiguredPeers(_ peers: [NodeID]) { core.setConfiguredPeers(peers) }

  /// Restricts members and senders to `members` (this node is always allowed); nil lifts it.
  /// Call it when the Raft configuration or the transport's peer list changes.
  public func setAuthorizedMembers(_ members: Set<NodeID>?) {
    core.setAuthorizedMembers(members.map { $0.union([id]) })
  }

  /// Leaves gracefully: tells every member that is not dead, then waits until each has
  /// acknowledged the farewell or `timeout` passed, then stops. After it returns the transport
  /// can be shut down without turning the leave into a failure.
  public func leave(timeout: Duration = MembershipService.defaultLeaveTimeout) async {
    guard isRunning else { return }
    carryOut(core.leave(now: elapsed()))
    isRunning = false
    isLeaving = true
    log.info("leaving the cluster")
    if !core.unconfirmedFarewells.isEmpty {
      let timer = Task { [weak self] in
        try? await Task.sleep(for: timeout)
        await self?.farewellsDone()
      }
      await withCheckedContinuation { farewellWaiter = $0 }
      timer.cancel()
    }
    let missing = core.unconfirmedFarewells
    if !missing.isEmpty { log.warning("left without an acknowledgement from \(missing)") }
    isLeaving = false
    stop()
    await senderTask?.value
  }

  private func farewellsDone() {
    farewellWaiter?.resume()
    farewellWaiter = nil
  }

  /// Stops timers and sending; already queued messages are still handed to the sender. The
  /// event streams finish.
  public func stop() {
    guard !isStopped else { return }
    isStopped = true
    isRunning = false
    farewellsDone()
    timerTask?.cancel()
    timerTask = nil
    outbox.finish()
    eventContinuation.finish()
    for subscriber in subscribers.values { subscriber.finish() }
    for subscriber in versionedSubscribers.values { subscriber.finish() }
    subscribers = [:]
    versionedSubscribers = [:]
  }

  /// A further stream of the events from now on, with the same buffering as `events`. It
  /// finishes when the service stops or the consumer stops iterating.
  public func subscribe() -> AsyncStream<MembershipEvent> {
    let (stream, continuation) = AsyncStream.makeStream(
      of: MembershipEvent.self, bufferingPolicy: .bufferingNewest(Self.eventBufferLimit))
    if isStopped {
      continuation.finish()
      return stream
    }
    let subscriberID = nextSubscriberID
    nextSubscriberID += 1
    subscribers[subscriberID] = continuation
    continuation.onTermination = { [weak self] _ in
      Task { await self?.unsubscribe(subscriberID) }
    }
    return stream
  }

  /// The current view and, atomically with it, a stream of every later event: the first event
  /// on the stream has version `snapshot.version + 1`. The stream buffers at most
  /// `bufferLimit` events (the oldest are dropped); a version that does not follow the previous
  /// one by 1 signals the gap, and the consumer should call this again.
  public func subscribeWithSnapshot(
    bufferLimit: Int = MembershipService.eventBufferLimit
  ) -> (snapshot: MembershipSnapshot, events: AsyncStream<VersionedMembershipEvent>) {
    precondition(bufferLimit > 0, "bufferLimit must be positive, not \(bufferLimit)")
    let (stream, continuation) = AsyncStream.makeStream(
      of: VersionedMembershipEvent.self, bufferingPolicy: .bufferingNewest(bufferLimit))
    if isStopped {
      continuation.finish()
    } else {
      let subscriberID = nextSubscriberID
      nextSubscriberID += 1
      versionedSubscribers[subscriberID] = continuation
      continuation.onTermination = { [weak self] _ in
        Task { await self?.unsubscribe(subscriberID) }
      }
    }
    return (snapshot(), stream)
  }

  private func unsubscribe(_ subscriberID: Int) {
    subscribers[subscriberID] = nil
    versionedSubscribers[subscriberID] = nil
  }

  // MARK: Inputs

  /// A `PeerMessageHandler` that passes gossip-channel messages to this service.
  public nonisolated var messageHandler: PeerMessageHandler {
    { [weak self] from, channel, payload in
      guard channel == .gossip, let self else { return }
      await self.receive(from: from, payload: payload)
    }
  }

  /// Handles one gossip-channel message. Undecodable payloads are logged, counted and dropped.
  public func receive(from peer: NodeID, payload: [UInt8]) {
    guard isRunning || isLeaving else { return }
    let message: SWIMMessage
    do {
      message = try SWIMMessage(wireBytes: payload)
    } catch {
      counters.undecodableMessages += 1
      log.warning("dropped an undecodable gossip message from \(peer): \(error)")
      return
    }
    carryOut(core.receive(message, from: peer, now: elapsed()))
    if isLeaving && core.unconfirmedFarewells.isEmpty { farewellsDone() }
  }

  /// Announces new metadata (for example a new Raft role and term) to the cluster.
  public func updateMetadata(_ metadata: MemberMetadata) {
    guard isRunning else { return }
    carryOut(core.updateMetadata(metadata, now: elapsed()))
  }

  /// Records that a member is dead after a replicated decision (only meaningful with
  /// `SWIMSettings.holdUnreachableUntilConfirmed`).
  public func confirmDead(_ member: NodeID) {
    guard isRunning else { return }
    carryOut(core.confirmDead(member, now: elapsed()))
  }

  // MARK: Queries

  public func snapshot() -> MembershipSnapshot {
    MembershipSnapshot(myself: core.myself, members: core.members, version: eventVersion)
  }

  /// Whether the join went through (see `MembershipJoinStatus`).
  public var joinStatus: MembershipJoinStatus {
    if isStopped || core.hasLeft { return .stopped }
    if !isRunning { return .notStarted }
    guard core.isJoining else { return .joined }
    let seeds = core.joinSeeds
    return .joining(seeds: seeds, unknownSeeds: seeds.filter { unknownPeers.contains($0) })
  }

  /// Lifeguard's local health multiplier (0 is healthy).
  public var localHealth: Int { core.localHealth }

  public var statistics: SWIMStatistics { core.statistics }

  // MARK: Driving the core

  private func elapsed() -> Duration { ContinuousClock.now - origin }

  private func sendFailed(to peer: NodeID, _ error: any Error) {
    counters.sendFailures += 1
    if case .unknownPeer = error as? PeerSendError {
      if unknownPeers.insert(peer).inserted {
        log.error("gossip peer \(peer) is unknown to the transport (is it configured?)")
      }
    } else {
      log.trace("gossip to \(peer) not sent: \(error)")
    }
  }

  private func carryOut(_ directives: [SWIMDirective]) {
    for directive in directives {
      switch directive {
      case .send(let message, let peer):
        if case .dropped = outbox.yield((peer, message.wireBytes())) { counters.outboxDropped += 1 }
      case .event(let event):
        log.debug("\(event)")
        eventVersion += 1
        if case .dropped = eventContinuation.yield(event) { counters.eventsDropped += 1 }
        for subscriber in subscribers.values {
          if case .dropped = subscriber.yield(event) { counters.eventsDropped += 1 }
        }
        let versioned = VersionedMembershipEvent(version: eventVersion, event: event)
        for subscriber in versionedSubscribers.values {
          if case .dropped = subscriber.yield(versioned) { counters.eventsDropped += 1 }
        }
      }
    }
    scheduleWakeup()
  }

  /// Keeps exactly one timer armed, at the core's next wakeup.
  private func scheduleWakeup() {
    guard isRunning, let wakeup = core.nextWakeup else { return }
    if let scheduledWakeup, scheduledWakeup <= wakeup { return }
    scheduledWakeup = wakeup
    timerGeneration += 1
    let generation = timerGeneration
    timerTask?.cancel()
    let deadline = origin + wakeup
    timerTask = Task { [weak self] in
      do {
        try await Task.sleep(until: deadline, clock: .continuous)
      } catch {
        return
      }
      await self?.timerFired(generation: generation)
    }
  }

  private func timerFired(generation: Int) {
    guard isRunning, generation == timerGeneration else { return }
    scheduledWakeup = nil
    carryOut(core.tick(now: elapsed()))
    scheduleWakeup()
  }
}
