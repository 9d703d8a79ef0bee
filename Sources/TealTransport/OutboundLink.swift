import NIOCore
import TealWire

/// Which of a link's two queues a message waits in.
enum Lane: CaseIterable {
  /// Messages of at most ``OutboundLink/urgentMaximumPayload`` bytes: heartbeats, votes, gossip,
  /// control, small appends. Written as whole frames, never behind more than one bulk fragment.
  case urgent
  /// Larger messages (snapshot chunks, large append batches): written one fragment at a time.
  case bulk
}

/// The state of this node's connection to one peer, owned by the ``PeerTransport`` actor.
///
/// Its async methods run on the caller's isolation (the transport actor), never concurrently.
/// Two lanes, each a FIFO bounded by count and bytes: urgent messages are written as they come,
/// whole; a bulk message is cut into fragments of at most ``fragmentPayload`` bytes and its
/// writer hands the channel the next fragment only after the previous one has been written to
/// the socket. So an urgent frame never waits behind more than one bulk fragment (64 KiB) in this
/// process. Order is kept within a lane, not across lanes.
///
/// Invariants: `queuedBytes[lane]` is the sum of that lane's queued frame sizes; at most one writer
/// per lane waits in ``nextBatch(_:)``; once stopped, a link never connects again.
final class OutboundLink {
  /// The largest payload sent in the urgent lane (and the largest bulk fragment).
  static let urgentMaximumPayload = 64 << 10
  static let fragmentPayload = 64 << 10

  enum State {
    case connecting
    case connected
    case backingOff
  }

  /// One queued message: a whole frame (urgent) or a bulk message's fragments.
  private struct Queued {
    var fragments: [ByteBuffer]
    var next = 0
    var bytes: Int
  }

  let id: UInt64
  let peer: NodeID
  let address: PeerAddress
  var state: State = .connecting
  var failures = 0
  var task: Task<Void, Never>?
  /// The version agreed with the peer on the current connection.
  var protocolVersion: UInt64?
  /// The last refusal from the peer, kept until a connection is accepted.
  var lastRefusal: PeerRefusal?
  private(set) var isStopped = false
  private var stopReason: PeerSendError = .shutDown

  private var queues: [Lane: CircularBuffer<Queued>] = [.urgent: [], .bulk: []]
  private var queuedBytes: [Lane: Int] = [.urgent: 0, .bulk: 0]
  private var writerWaiters: [Lane: CheckedContinuation<Void, Never>] = [:]
  private var roomWaiters: [CheckedContinuation<Void, any Error>] = []
  private var channel: (any Channel)?
  private var connectionOpen = false

  init(id: UInt64, peer: NodeID, address: PeerAddress) {
    self.id = id
    self.peer = peer
    self.address = address
  }

  var isConnected: Bool { state == .connected && connectionOpen }
  var isBackingOff: Bool { state == .backingOff }

  static func lane(forPayload size: Int) -> Lane { size <= urgentMaximumPayload ? .urgent : .bulk }

  /// Queues a message in the lane its size picks. Each lane holds at most `limit` messages and
  /// `byteLimit` bytes (a single larger message is still accepted into an empty lane).
  func enqueue(_ payload: [UInt8], on channel: PeerChannel, limit: Int, byteLimit: Int) throws(PeerSendError) {
    if isStopped { throw stopReason }
    let lane = Self.lane(forPayload: payload.count)
    let size = payload.count + Frame.headerSize
    let count = queues[lane]!.count
    if count >= limit || (count > 0 && queuedBytes[lane]! + size > byteLimit) {
      throw .queueFull(peer, limit: limit)
    }
    let fragments =
      lane == .urgent
      ? [Frame.encode(channel: channel, payload: payload)]
      : Frame.encodeFragments(channel: channel, payload: payload, fragmentPayload: Self.fragmentPayload)
    queues[lane]!.append(Queued(fragments: fragments, bytes: size))
    queuedBytes[lane]! += size
    wakeWriter(lane)
  }

  /// Suspends until a message leaves a queue (or the link stops, which throws).
  func waitForRoom(isolation: isolated (any Actor)? = #isolation) async throws(PeerSendError) {
    do {
      try await withCheckedThrowingContinuation { roomWaiters.append($0) }
    } catch {
      throw (error as? PeerSendError) ?? .shutDown
    }
  }

  /// The next frames to write in `lane`, waiting for some; nil once the connection ended or the
  /// link stopped. Urgent: whole frames, up to `maximumCount` and `maximumBytes`. Bulk: exactly
  /// one fragment.
  func nextBatch(
    _ lane: Lane, maximumCount: Int = 128, maximumBytes: Int = 4 << 20,
    isolation: isolated (any Actor)? = #isolation
  ) async -> [ByteBuffer]? {
    while true {
      if isStopped || !connectionOpen { return nil }
      if !queues[lane]!.isEmpty {
        var batch: [ByteBuffer] = []
        switch lane {
        case .urgent:
          var bytes = 0
          while let next = queues[lane]!.first, batch.count < maximumCount,
            batch.isEmpty || bytes + next.bytes <= maximumBytes
          {
            batch.append(next.fragments[0])
            bytes += next.bytes
            queues[lane]!.removeFirst()
          }
          queuedBytes[lane]! -= bytes
        case .bulk:
          var head = queues[lane]!.removeFirst()
          batch.append(head.fragments[head.next])
          head.next += 1
          if head.next == head.fragments.count {
            queuedBytes[lane]! -= head.bytes
          } else {
            queues[lane]!.prepend(head)
          }
        }
        let waiters = roomWaiters
        roomWaiters = []
        for waiter in waiters { waiter.resume() }
        return batch
      }
      await withCheckedContinuation { writerWaiters[lane] = $0 }
    }
  }

  /// Writes `lane` until the connection ends: each batch is handed to `write`, which returns once
  /// the batch has left the process (been written to the socket).
  func runWriter(
    _ lane: Lane, isolation: isolated (any Actor)? = #isolation,
    write: ([ByteBuffer]) async throws -> Void
  ) async throws {
    while let batch = await nextBatch(lane) {
      try await write(batch)
    }
  }

  func connectionStarted(_ channel: any Channel) {
    self.channel = channel
    connectionOpen = true
    state = .connected
  }

  func connectionEnded() {
    connectionOpen = false
    channel = nil
    protocolVersion = nil
    for lane in Lane.allCases { wakeWriter(lane) }
  }

  /// Closes the current connection (the link re-dials after its backoff).
  func dropConnection() { channel?.close(promise: nil) }

  /// Drops queued messages, failing anyone waiting for room with `error`.
  func failQueued(_ error: PeerSendError) {
    for lane in Lane.allCases {
      queues[lane]!.removeAll()
      queuedBytes[lane] = 0
    }
    let waiters = roomWaiters
    roomWaiters = []
    for waiter in waiters { waiter.resume(throwing: error) }
  }

  func stop(failing error: PeerSendError) {
    isStopped = true
    stopReason = error
    channel?.close(promise: nil)
    failQueued(error)
    for lane in Lane.allCases { wakeWriter(lane) }
    task?.cancel()
  }

  private func wakeWriter(_ lane: Lane) {
    writerWaiters.removeValue(forKey: lane)?.resume()
  }
}
