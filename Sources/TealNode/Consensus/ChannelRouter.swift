// Routes inbound peer messages to the shell that owns their channel.

import NIOConcurrencyHelpers
import TealWire

/// The transport delivers every inbound message to one handler; this hands each to the shell
/// registered for its channel. Shells register after the transport exists (they need it to send),
/// which breaks the construction cycle transport → handler → shell → transport.
///
/// A message on a channel with no handler yet (a peer talks before this node finished starting) is
/// dropped; every channel's protocol retries.
final class ChannelRouter: Sendable {
  private let handlers = NIOLockedValueBox<[PeerChannel: PeerMessageHandler]>([:])

  func register(_ channel: PeerChannel, _ handler: @escaping PeerMessageHandler) {
    handlers.withLockedValue { $0[channel] = handler }
  }

  var handler: PeerMessageHandler {
    { [self] from, channel, payload in
      guard let handler = handlers.withLockedValue({ $0[channel] }) else { return }
      await handler(from, channel, payload)
    }
  }
}
