import NIOCore
import TealWire

/// The state of this node's connection to one peer, owned by the ``PeerTransport`` actor.
///
/// Its async methods run on the caller's isolation (the transport actor), never concurrently.
/// Invariants: `queuedBytes` is the sum of the queued payload sizes; at most one writer waits in
/// ``nextBatch()``; once stopped, a link never connects again.
final class OutboundLink {
  enum State {
    case connecting
    case connected
    case backingOff
  }

  let id: UInt64
  let peer: NodeID
  let address: PeerAddress
  var state: State = .connecting
  var failures = 0
  var task: Task<Void, Never>?
  private(set) var isStopped = false
  private var stopReason: PeerSendError = .shutDown

  private var queue = CircularBuffer<ByteBuffer>(initialCapacity: 64)
  private var queuedBytes = 0
  private var writerWaiter: CheckedContinuation<Void, Never>?
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

  func enqueue(_ frame: ByteBuffer, limit: Int, byteLimit: Int) throws(PeerSendError) {
    if isStopped { throw stopReason }
    let size = frame.readableBytes
    if queue.count >= limit || (!queue.isEmpty && queuedBytes + size > byteLimit) {
      throw .queueFull(peer, limit: limit)
    }
    queue.append(frame)
    queuedBytes += size
    wakeWriter()
  }

  /// Suspends until a message leaves the queue (or the link stops, which throws).
  func waitForRoom(isolation: isolated (any Actor)? = #isolation) async throws(PeerSendError) {
    do {
      try await withCheckedThrowingContinuation { roomWaiters.append($0) }
    } catch {
      throw (error as? PeerSendError) ?? .shutDown
    }
  }

  /// The next messages to write, waiting for some; nil once the connection ended or the link stopped.
  func nextBatch(
    maximumCount: Int = 128, maximumBytes: Int = 4 << 20, isolation: isolated (any Actor)? = #isolation
  ) async -> [ByteBuffer]? {
    while true {
      if isStopped || !connectionOpen { return nil }
      if !queue.isEmpty {
        var batch: [ByteBuffer] = []
        var bytes = 0
        while let next = queue.first, batch.count < maximumCount,
          batch.isEmpty || bytes + next.readableBytes <= maximumBytes
        {
          batch.append(queue.removeFirst())
          bytes += next.readableBytes
        }
        queuedBytes -= bytes
        let waiters = roomWaiters
        roomWaiters = []
        for waiter in waiters { waiter.resume() }
        return batch
      }
      await withCheckedContinuation { writerWaiter = $0 }
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
    wakeWriter()
  }

  /// Drops queued messages, failing anyone waiting for room with `error`.
  func failQueued(_ error: PeerSendError) {
    queue.removeAll()
    queuedBytes = 0
    let waiters = roomWaiters
    roomWaiters = []
    for waiter in waiters { waiter.resume(throwing: error) }
  }

  func stop(failing error: PeerSendError) {
    isStopped = true
    stopReason = error
    channel?.close(promise: nil)
    failQueued(error)
    wakeWriter()
    task?.cancel()
  }

  private func wakeWriter() {
    writerWaiter?.resume()
    writerWaiter = nil
  }
}
