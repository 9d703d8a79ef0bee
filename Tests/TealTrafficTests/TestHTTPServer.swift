// A small HTTP/1.1 server on real sockets for the traffic generator's tests.

import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix

/// Answers every request with 200, `x-teal-revision: web:1`, `x-teal-generation: 3`,
/// `x-teal-node: t1` after `delay`. `GET /hang` is never answered; `/close` answers with
/// `Connection: close`. Counts requests by method and the POST body bytes it received.
final class TestHTTPServer: Sendable {
  struct Counts: Sendable, Equatable {
    var byMethod: [String: Int] = [:]
    var postBodyBytes = 0
    var connections = 0
  }

  let port: Int
  private let listener: Channel
  private let children: NIOLockedValueBox<[ObjectIdentifier: Channel]>
  private let counts: NIOLockedValueBox<Counts>

  private init(
    listener: Channel, children: NIOLockedValueBox<[ObjectIdentifier: Channel]>, counts: NIOLockedValueBox<Counts>
  ) {
    self.listener = listener
    self.port = listener.localAddress?.port ?? 0
    self.children = children
    self.counts = counts
  }

  static func start(delay: TimeAmount = .zero, garbage: Bool = false) async throws -> TestHTTPServer {
    let children = NIOLockedValueBox<[ObjectIdentifier: Channel]>([:])
    let counts = NIOLockedValueBox(Counts())
    let bootstrap = ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
      .serverChannelOption(.backlog, value: 256)
      .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
      .childChannelInitializer { channel in
        children.withLockedValue { $0[ObjectIdentifier(channel)] = channel }
        counts.withLockedValue { $0.connections += 1 }
        channel.closeFuture.whenComplete { _ in
          _ = children.withLockedValue { $0.removeValue(forKey: ObjectIdentifier(channel)) }
        }
        return channel.eventLoop.makeCompletedFuture {
          if garbage {
            try channel.pipeline.syncOperations.addHandler(GarbageHandler())
          } else {
            try channel.pipeline.syncOperations.configureHTTPServerPipeline()
            try channel.pipeline.syncOperations.addHandler(AnswerHandler(delay: delay, counts: counts))
          }
        }
      }
    let listener = try await bootstrap.bind(host: "127.0.0.1", port: 0).get()
    return TestHTTPServer(listener: listener, children: children, counts: counts)
  }

  var target: String { "127.0.0.1:\(port)" }

  var received: Counts { counts.withLockedValue { $0 } }

  /// Closes the listener and every open connection at once, as a killed process would.
  func kill() async {
    try? await listener.close()
    let open = children.withLockedValue { Array($0.values) }
    for channel in open {
      try? await channel.close()
    }
  }
}

private final class AnswerHandler: ChannelInboundHandler {
  typealias InboundIn = HTTPServerRequestPart
  typealias OutboundOut = HTTPServerResponsePart

  private let delay: TimeAmount
  private let counts: NIOLockedValueBox<TestHTTPServer.Counts>
  private var head: HTTPRequestHead?
  private var bodyBytes = 0

  init(delay: TimeAmount, counts: NIOLockedValueBox<TestHTTPServer.Counts>) {
    self.delay = delay
    self.counts = counts
  }

  func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    switch unwrapInboundIn(data) {
    case .head(let request):
      head = request
      bodyBytes = 0
    case .body(let buffer):
      bodyBytes += buffer.readableBytes
    case .end:
      guard let request = head else { return }
      head = nil
      let bytes = bodyBytes
      counts.withLockedValue {
        $0.byMethod[request.method.rawValue, default: 0] += 1
        if request.method == .POST { $0.postBodyBytes += bytes }
      }
      if request.uri == "/hang" { return }
      let close = request.uri == "/close"
      if delay == .zero {
        respond(context: context, version: request.version, close: close)
      } else {
        let loop = context.eventLoop.assumeIsolated()
        loop.scheduleTask(in: delay) { self.respond(context: context, version: request.version, close: close) }
      }
    }
  }

  private func respond(context: ChannelHandlerContext, version: HTTPVersion, close: Bool) {
    guard context.channel.isActive else { return }
    var headers = HTTPHeaders()
    headers.add(name: "content-length", value: "2")
    headers.add(name: "x-teal-revision", value: "web:1")
    headers.add(name: "x-teal-generation", value: "3")
    headers.add(name: "x-teal-node", value: "t1")
    if close { headers.add(name: "connection", value: "close") }
    context.write(
      wrapOutboundOut(.head(HTTPResponseHead(version: version, status: .ok, headers: headers))), promise: nil)
    context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(string: "ok")))), promise: nil)
    let done = context.writeAndFlush(wrapOutboundOut(.end(nil)))
    if close {
      done.assumeIsolated().whenComplete { _ in context.close(promise: nil) }
    }
  }
}

/// Answers anything with bytes that are not HTTP.
private final class GarbageHandler: ChannelInboundHandler {
  typealias InboundIn = ByteBuffer
  typealias OutboundOut = ByteBuffer

  func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    context.writeAndFlush(
      wrapOutboundOut(context.channel.allocator.buffer(string: "this is not http\r\n\r\n")), promise: nil)
  }
}
