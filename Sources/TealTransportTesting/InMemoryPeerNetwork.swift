import TealWire

/// Connects any number of nodes in one process for tests: a ``PeerMessageSender`` per node, with
/// partition, drop and delay controls.
///
/// Delivery follows the real transport's contract: asynchronous (a send returns once queued),
/// at most once, and in order per (sender, receiver) pair. Each pair has its own FIFO, bounded at
/// ``queueLimit`` messages (a full queue throws ``PeerSendError/queueFull(_:limit:)``), drained
/// by one task that hands each message to the receiver's handler and waits for it to return.
///
/// - A send across a cut link throws ``PeerSendError/peerUnavailable(_:)``, like a transport
///   whose peer is unreachable; messages already queued on a link when it is cut are lost.
/// - A dropped message (``setDropProbability(_:)``, drawn from a seeded generator) vanishes
///   silently, like a message lost with a broken connection.
/// - With a delay (``setDelay(_:)``), each message is delivered no sooner than that long after
///   it was sent.
/// - A node that ``unregister(_:)``s (a crash, a stop) loses every message queued to or from it;
///   until it registers again, sends to it throw ``PeerSendError/peerUnavailable(_:)`` and its
///   own sends throw ``PeerSendError/shutDown``, like a transport that was shut down.
public actor InMemoryPeerNetwork {
  private struct Pair: Hashable {
    var from: NodeID
    var to: NodeID
  }

  private struct Message {
    var channel: PeerChannel
    var payload: [UInt8]
    var deliverAt: ContinuousClock.Instant
  }

  /// Messages waiting on one (sender, receiver) link, at most.
  public let queueLimit: Int
  private var handlers: [NodeID: PeerMessageHandler] = [:]
  /// Nodes that unregistered and have not registered again.
  private var departed: Set<NodeID> = []
  private var cut: Set<Pair> = []
  private var queues: [Pair: [Message]] = [:]
  private var draining: Set<Pair> = []
  private var idleWaiters: [CheckedContinuation<Void, Never>] = []
  private var dropProbability = 0.0
  private var delay: Duration = .zero
  private var generator: SplitMix64
  private let clock = ContinuousClock()

  /// Messages handed to a handler.
  public private(set) var deliveredCount = 0
  /// Messages lost to drops, to a cut made while they were queued, to an ``unregister(_:)``, or
  /// to a receiver without a handler.
  public private(set) var droppedCount = 0

  public init(seed: UInt64 = 1, queueLimit: Int = 4096) {
    precondition(queueLimit > 0, "queueLimit must be positive")
    self.generator = SplitMix64(seed: seed)
    self.queueLimit = queueLimit
  }

  /// Registers (or replaces) the handler of `node`'s inbound messages on every channel.
  public func register(_ node: NodeID, handler: @escaping PeerMessageHandler) {
    handlers[node] = handler
    departed.remove(node)
  }

  /// Removes `node`'s handler, as a crash or a stop of its process would: every message queued to
  /// or from it is lost, and until it registers again sends to it throw
  /// ``PeerSendError/peerUnavailable(_:)`` (not `unknownPeer`) and its own sends throw
  /// ``PeerSendError/shutDown``. A message already in its handler runs to the end.
  public func unregister(_ node: NodeID) {
    handlers[node] = nil
    departed.insert(node)
    for (pair, queue) in queues where pair.from == node || pair.to == node {
      droppedCount += queue.count
      queues[pair] = []
    }
  }

  /// The sending side of `node`.
  public nonisolated func sender(for node: NodeID) -> Sender { Sender(network: self, node: node) }

  // MARK: Faults

  /// Cuts every link between a node of `side` and a node of `otherSide`, both directions.
  public func partition(_ side: Set<NodeID>, from otherSide: Set<NodeID>) {
    for a in side {
      for b in otherSide where a != b {
        cutLink(from: a, to: b)
        cutLink(from: b, to: a)
      }
    }
  }

  /// Cuts every link to and from `node` (with the nodes registered so far and any later sender).
  public func isolate(_ node: NodeID) {
    partition([node], from: Set(handlers.keys).subtracting([node]))
    isolated.insert(node)
  }

  /// Cuts the one direction `from` → `to`.
  public func cutLink(from: NodeID, to: NodeID) {
    let pair = Pair(from: from, to: to)
    cut.insert(pair)
    if let lost = queues[pair]?.count {
      droppedCount += lost
      queues[pair] = []
    }
  }

  /// Restores every link.
  public func heal() {
    cut = []
    isolated = []
  }

  /// Each message is dropped with this probability (0 to 1), drawn from the seeded generator.
  public func setDropProbability(_ probability: Double) {
    precondition((0...1).contains(probability), "drop probability must be between 0 and 1")
    dropProbability = probability
  }

  /// Every message is delivered no sooner than `delay` after it was sent.
  public func setDelay(_ delay: Duration) {
    precondition(delay >= .zero, "delay must not be negative")
    self.delay = delay
  }

  /// Returns once every queued message has been delivered (or lost).
  public func waitUntilIdle() async {
    if draining.isEmpty { return }
    await withCheckedContinuation { idleWaiters.append($0) }
  }

  private var isolated: Set<NodeID> = []

  private func isCut(_ pair: Pair) -> Bool {
    cut.contains(pair) || isolated.contains(pair.from) || isolated.contains(pair.to)
  }

  // MARK: Delivery

  fileprivate func enqueue(_ payload: [UInt8], on channel: PeerChannel, from: NodeID, to: NodeID)
    throws(PeerSendError)
  {
    if channel == .transport { throw .reservedChannel(channel) }
    if departed.contains(from) { throw .shutDown }
    guard handlers[to] != nil else { throw departed.contains(to) ? .peerUnavailable(to) : .unknownPeer(to) }
    let pair = Pair(from: from, to: to)
    if isCut(pair) { throw .peerUnavailable(to) }
    if dropProbability > 0, Double(generator.next() >> 11) / Double(1 << 53) < dropProbability {
      droppedCount += 1
      return
    }
    if queues[pair, default: []].count >= queueLimit { throw .queueFull(to, limit: queueLimit) }
    queues[pair, default: []].append(Message(channel: channel, payload: payload, deliverAt: clock.now + delay))
    if draining.insert(pair).inserted {
      Task { await self.drain(pair) }
    }
  }

  private func drain(_ pair: Pair) async {
    while let message = queues[pair]?.first {
      if message.deliverAt > clock.now { try? await Task.sleep(until: message.deliverAt, clock: clock) }
      // The link may have been cut (and its queue emptied) while this task slept.
      guard let current = queues[pair]?.first else { break }
      if current.deliverAt > clock.now { continue }
      queues[pair]!.removeFirst()
      guard !isCut(pair), let handler = handlers[pair.to] else {
        droppedCount += 1
        continue
      }
      deliveredCount += 1
      await handler(pair.from, message.channel, message.payload)
    }
    draining.remove(pair)
    if draining.isEmpty {
      let waiters = idleWaiters
      idleWaiters = []
      for waiter in waiters { waiter.resume() }
    }
  }

  /// One node's sending side.
  public struct Sender: PeerMessageSender {
    public let network: InMemoryPeerNetwork
    public let node: NodeID

    public func send(_ payload: [UInt8], on channel: PeerChannel, to peer: NodeID) async throws(PeerSendError) {
      try await network.enqueue(payload, on: channel, from: node, to: peer)
    }
  }
}
