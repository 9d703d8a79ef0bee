// Outbound Raft messages: one ordered queue and one sending task per peer.

import Logging
import TealRaft
import TealWire

/// Hands encoded Raft messages to the network without making the node's Ready loop wait.
///
/// Each peer has its own bounded queue drained by its own task, so messages to one peer stay in order and a
/// slow or unreachable peer never delays the others. When a queue is full, new messages are dropped: Raft
/// treats the network as lossy and retransmits (heartbeats, probes, ReadIndex retries).
struct PeerOutbox {
  private let sender: any PeerMessageSender
  private let limit: Int
  private let logger: Logger
  private var queues: [NodeID: AsyncStream<[UInt8]>.Continuation] = [:]
  private var tasks: [Task<Void, Never>] = []
  /// Messages dropped because a queue was full.
  private(set) var dropped = 0

  init(sender: any PeerMessageSender, limit: Int, logger: Logger) {
    self.sender = sender
    self.limit = max(limit, 1)
    self.logger = logger
  }

  mutating func send(_ message: RaftMessage) {
    let queue = queue(for: message.to)
    if case .dropped = queue.yield(message.wireBytes()) {
      dropped += 1
      if dropped.isMultiple(of: 1_000) || dropped == 1 {
        logger.warning(
          "outbound Raft queue full; dropping messages", metadata: ["peer": "\(message.to)", "dropped": "\(dropped)"])
      }
    }
  }

  /// Stops every sending task; queued messages are discarded.
  mutating func close() {
    for queue in queues.values { queue.finish() }
    for task in tasks { task.cancel() }
    queues = [:]
    tasks = []
  }

  private mutating func queue(for peer: NodeID) -> AsyncStream<[UInt8]>.Continuation {
    if let existing = queues[peer] { return existing }
    let (stream, continuation) = AsyncStream<[UInt8]>.makeStream(bufferingPolicy: .bufferingOldest(limit))
    let sender = self.sender
    let logger = self.logger
    tasks.append(
      Task.detached {
        var failures = 0
        for await bytes in stream {
          do {
            try await sender.send(bytes, on: .raft, to: peer)
          } catch {
            failures += 1
            if failures == 1 || failures.isMultiple(of: 1_000) {
              logger.debug("Raft message not sent", metadata: ["peer": "\(peer)", "error": "\(error)"])
            }
          }
        }
      })
    queues[peer] = continuation
    return continuation
  }
}
