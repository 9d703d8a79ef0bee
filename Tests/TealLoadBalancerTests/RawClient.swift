// A raw client connection for the socket tests: bytes in, everything the server sends collected.

import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// A raw client connection that collects everything the server sends.
final class RawClient: Sendable {
  let channel: any Channel
  private let received: NIOLockedValueBox<String>

  var text: String { self.received.withLockedValue { $0 } }
  var isOpen: Bool { self.channel.isActive }

  private init(channel: any Channel, received: NIOLockedValueBox<String>) {
    self.channel = channel
    self.received = received
  }

  static func connect(port: Int) async throws -> RawClient {
    let received = NIOLockedValueBox("")
    let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
      .channelInitializer { channel in
        channel.eventLoop.makeCompletedFuture {
          try channel.pipeline.syncOperations.addHandler(Collector(received: received))
        }
      }
      .connect(host: "127.0.0.1", port: port)
      .get()
    return RawClient(channel: channel, received: received)
  }

  func send(_ bytes: String) async throws {
    try await self.channel.writeAndFlush(ByteBuffer(string: bytes))
  }

  /// Whether the server closed the connection within `timeout`.
  func closedByServer(within timeout: Duration) async -> Bool {
    await lbEventually(timeout: timeout) { !self.isOpen }
  }

  func close() async {
    try? await self.channel.close()
  }

  private final class Collector: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    let received: NIOLockedValueBox<String>

    init(received: NIOLockedValueBox<String>) {
      self.received = received
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
      let buffer = self.unwrapInboundIn(data)
      self.received.withLockedValue { $0 += String(buffer: buffer) }
    }
  }
}
