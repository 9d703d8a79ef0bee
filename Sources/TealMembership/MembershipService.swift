import Logging
import TealGossip
import TealWire

/// What one node knows of the cluster at one moment.
public struct MembershipSnapshot: Sendable, Hashable {
  /// This node's own record.
  public let myself: Member
  /// Every other member known, dead ones included until their tombstone expires, by id.
  public let members: [Member]

  /// This node and every member that is alive or suspect (still presumed to serve).
  public var reachable: [Member] { [myself] + members.filter { $0.status == .alive || $0.status == .suspect } }

  /// The member that most recently announced itself leader (highest term), if any is alive.
  /// Advisory only: Raft decides who leads.
  public var announcedLeader: Member? {
    reachable.filter { $0.metadata.raftRole == .leader }.max { $0.metadata.raftTerm < $1.metadata.raftTerm }
  }
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
public actor MembershipService {
  /// Every membership change this node observes, in order, for one consumer (use `subscribe()`
  /// for more). Buffers the newest 4096 events if nobody reads; a reader that falls that far
  /// behind should re-read `snapshot()`. Finishes when the service stops.
  public nonisolated let events: AsyncStream<MembershipEvent>
  public nonisolated let id: NodeID

  private var core: SWIMCore
  private let sender: any PeerMessageSender
  private let eventContinuation: AsyncStream<MembershipEvent>.Continuation
  private var subscribers: [Int: AsyncStream<MembershipEvent>.Continuation] = [:]
  private var nextSubscriberID = 0
  private let outbox: AsyncStream<(NodeID, [UInt8])>.Continuation
  private let outboxStream: AsyncStream<(NodeID, [UInt8])>
  private let origin: ContinuousClock.Instant
  private var log: Logger
  private var senderTask: Task<Void, Never>?
  private var timerTask: Task<Void, Never>?
  private var scheduledWakeup: Duration?
  private var timerGeneration = 0
  private var isRunning = false
  private var isStopped = false

  /// - Parameters:
  ///   - incarnation: the first incarnation; pass a value above any used before a restart when
  ///     one is persisted (otherwise the node refutes its old record as it learns of it).
  public init(
    id: NodeID, metadata: MemberMetadata, settings: SWIMSettings = SWIMSettings(), incarnation: UInt64 = 0,
    sender: any PeerMessageSender, logger: Logger = Logger(label: "teal.membership")
  ) throws(SWIMSettingsError) {
    let origin = ContinuousClock.now
    self.origin = origin
    self.id = id
    self.core = try SWIMCore(
      id: id, metadata: metadata, settings: settings, incarnation: incarnation,
      random: SystemRandomNumberGenerator(), now: .zero)
    self.sender = sender
    var log = logger
    log[metadataKey: "node"] = "\(id)"
    self.log = log
    (events, eventContinuation) = AsyncStream.makeStream(bufferingPolicy: .bufferingNewest(4096))
    (outboxStream, outbox) = AsyncStream.makeStream(bufferingPolicy: .unbounded)
  }

  // MARK: Lifecycle

  /// Starts probing and joins through `seeds` (node ids the transport can reach). With no seeds
  /// the node waits for others to join it.
  public func start(seeds: [NodeID]) {
    guard !isRunning, !isStopped else { return }
    isRunning = true
    let stream = outboxStream
    let sender = sender
    let log = log
    senderTask = Task {
      for await (peer, payload) in stream {
        do {
          try await sender.send(payload, on: .gossip, to: peer)
        } catch {
          // SWIM treats a failed send as a lost message; the protocol recovers.
          log.trace("gossip to \(peer) not sent: \(error)")
        }
      }
    }
    let now = elapsed()
    carryOut(core.join(seeds: seeds, now: now))
    carryOut(core.tick(now: now))
  }

  /// Leaves gracefully (every member learns it at once), then stops. Returns once the farewell
  /// messages have been handed to the sender, so the transport can be shut down after it.
  public func leave() async {
    guard isRunning else { return }
    carryOut(core.leave(now: elapsed()))
    log.info("left the cluster")
    stop()
    await senderTask?.value
  }

  /// Stops timers and sending; already queued messages are still handed to the sender. The
  /// event stream finishes.
  public func stop() {
    guard !isStopped else { return }
    isStopped = true
    isRunning = false
    timerTask?.cancel()
    timerTask = nil
    outbox.finish()
    eventContinuation.finish()
    for subscriber in subscribers.values { subscriber.finish() }
    subscribers = [:]
  }

  /// A further stream of the events from now on, with the same buffering as `events`. It
  /// finishes when the service stops or the consumer stops iterating.
  public func subscribe() -> AsyncStream<MembershipEvent> {
    let (stream, continuation) = AsyncStream.makeStream(
      of: MembershipEvent.self, bufferingPolicy: .bufferingNewest(4096))
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

  private func unsubscribe(_ subscriberID: Int) { subscribers[subscriberID] = nil }

  // MARK: Inputs

  /// A `PeerMessageHandler` that passes gossip-channel messages to this service.
  public nonisolated var messageHandler: PeerMessageHandler {
    { [weak self] from, channel, payload in
      guard channel == .gossip, let self else { return }
      await self.receive(from: from, payload: payload)
    }
  }

  /// Handles one gossip-channel message. Undecodable payloads are logged and dropped.
  public func receive(from peer: NodeID, payload: [UInt8]) {
    guard isRunning else { return }
    let message: SWIMMessage
    do {
      message = try SWIMMessage(wireBytes: payload)
    } catch {
      log.warning("dropped an undecodable gossip message from \(peer): \(error)")
      return
    }
    carryOut(core.receive(message, from: peer, now: elapsed()))
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

  public func snapshot() -> MembershipSnapshot { MembershipSnapshot(myself: core.myself, members: core.members) }

  /// Lifeguard's local health multiplier (0 is healthy).
  public var localHealth: Int { core.localHealth }

  public var statistics: SWIMStatistics { core.statistics }

  // MARK: Driving the core

  private func elapsed() -> Duration { ContinuousClock.now - origin }

  private func carryOut(_ directives: [SWIMDirective]) {
    for directive in directives {
      switch directive {
      case .send(let message, let peer):
        outbox.yield((peer, message.wireBytes()))
      case .event(let event):
        log.debug("\(event)")
        eventContinuation.yield(event)
        for subscriber in subscribers.values { subscriber.yield(event) }
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
