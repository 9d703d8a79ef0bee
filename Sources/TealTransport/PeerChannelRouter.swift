import NIOConcurrencyHelpers
import TealWire

/// Hands each inbound message to the handler registered for its channel.
///
/// Each shell (Raft, gossip, control) registers its handler after it is created, so the transport
/// can be created first and given to the shells as their ``PeerMessageSender``: no init cycle.
/// A message on a channel with no handler is dropped and counted (delivery is at most once);
/// register every handler before ``PeerTransport/start()`` to drop none.
///
/// Thread-safe: the table is behind a lock taken once per message.
public final class PeerChannelRouter: Sendable {
  private struct State {
    var handlers: [PeerChannel: PeerMessageHandler] = [:]
    var dropped: [PeerChannel: Int] = [:]
  }

  private let state = NIOLockedValueBox(State())

  public init() {}

  /// Registers (or, with nil, removes) the handler for `channel`, replacing any earlier one.
  /// ``PeerChannel/transport`` is the transport's own and cannot be routed.
  public func setHandler(_ handler: PeerMessageHandler?, for channel: PeerChannel) {
    precondition(channel != .transport, "the transport channel is reserved for the transport itself")
    state.withLockedValue { $0.handlers[channel] = handler }
  }

  /// Delivers one message to its channel's handler; returns false when none is registered.
  @discardableResult
  public func deliver(from sender: NodeID, channel: PeerChannel, payload: [UInt8]) async -> Bool {
    let handler = state.withLockedValue { state -> PeerMessageHandler? in
      if let handler = state.handlers[channel] { return handler }
      state.dropped[channel, default: 0] += 1
      return nil
    }
    guard let handler else { return false }
    await handler(sender, channel, payload)
    return true
  }

  /// How many messages arrived on `channel` while it had no handler.
  public func droppedCount(on channel: PeerChannel) -> Int { state.withLockedValue { $0.dropped[channel] ?? 0 } }
}
