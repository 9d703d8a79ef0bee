import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix

#if canImport(Glibc)
  import Glibc
#endif

/// A request as the test server received it.
public struct ReceivedRequest: Sendable {
  public var method: String
  public var uri: String
  /// Names lowercased.
  public var headers: [String: String]
  public var body: String
  /// Which accepted connection (0, 1, ...) carried it.
  public var connection: Int
}

/// What the test server does with a request.
public enum Behavior: Sendable {
  case respond(status: Int, headers: [(String, String)] = [], body: String = "")
  /// Closes the connection without answering.
  case close
  /// Never answers.
  case hang
  /// Answers 200 with a chunked body of these pieces, `gap` apart.
  case chunks([String], gap: TimeAmount)
  /// Answers 200 with `count` bytes.
  case large(count: Int)
}

/// A small HTTP/1.1 server on a real loopback socket (the client's and the CLI's tests): answers
/// each request as `behavior` says, given the request and its index among all received.
public final class TestHTTPServer: Sendable {
  public let port: Int
  private let channel: any Channel
  private let state: NIOLockedValueBox<(requests: [ReceivedRequest], connections: Int)>

  public var requests: [ReceivedRequest] { state.withLockedValue { $0.requests } }
  public var connections: Int { state.withLockedValue { $0.connections } }
  public var endpoint: String { "http://127.0.0.1:\(port)" }

  public init(behavior: @escaping @Sendable (ReceivedRequest, Int) -> Behavior) async throws {
    let state = NIOLockedValueBox((requests: [ReceivedRequest](), connections: 0))
    self.state = state
    channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
      .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
      .childChannelInitializer { channel in
        let number = state.withLockedValue { value in
          defer { value.connections += 1 }
          return value.connections
        }
        return channel.eventLoop.makeCompletedFuture {
          try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
          try channel.pipeline.syncOperations.addHandler(
            Handler(connection: number, state: state, behavior: behavior))
        }
      }
      .bind(host: "127.0.0.1", port: 0).get()
    port = channel.localAddress!.port!
  }

  public func stop() async {
    try? await channel.close()
  }

  private final class Handler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    let connection: Int
    let state: NIOLockedValueBox<(requests: [ReceivedRequest], connections: Int)>
    let behavior: @Sendable (ReceivedRequest, Int) -> Behavior
    var head: HTTPRequestHead?
    var body = ""

    init(
      connection: Int, state: NIOLockedValueBox<(requests: [ReceivedRequest], connections: Int)>,
      behavior: @escaping @Sendable (ReceivedRequest, Int) -> Behavior
    ) {
      self.connection = connection
      self.state = state
      self.behavior = behavior
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
      switch unwrapInboundIn(data) {
      case .head(let received):
        head = received
        body = ""
      case .body(let buffer):
        body += String(buffer: buffer)
      case .end:
        guard let head else { return }
        var headers: [String: String] = [:]
        for (name, value) in head.headers { headers[name.lowercased()] = value }
        let request = ReceivedRequest(
          method: head.method.rawValue, uri: head.uri, headers: headers, body: body, connection: connection)
        let index = state.withLockedValue { value in
          value.requests.append(request)
          return value.requests.count - 1
        }
        answer(behavior(request, index), context: context)
      }
    }

    private func answer(_ behavior: Behavior, context: ChannelHandlerContext) {
      switch behavior {
      case .respond(let status, let extra, let body):
        var headers = HTTPHeaders(extra)
        headers.replaceOrAdd(name: "Content-Length", value: String(body.utf8.count))
        headers.add(name: "Content-Type", value: "application/json")
        context.write(
          wrapOutboundOut(
            .head(HTTPResponseHead(version: .http1_1, status: HTTPResponseStatus(statusCode: status), headers: headers))
          ), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: body)))), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
      case .close:
        context.close(promise: nil)
      case .hang:
        break
      case .large(let count):
        var headers = HTTPHeaders()
        headers.add(name: "Transfer-Encoding", value: "chunked")
        context.write(
          wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .ok, headers: headers))), promise: nil)
        var remaining = count
        while remaining > 0 {
          let piece = min(remaining, 64 * 1024)
          context.write(
            wrapOutboundOut(.body(.byteBuffer(ByteBuffer(repeating: UInt8(ascii: "x"), count: piece)))), promise: nil)
          remaining -= piece
        }
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
      case .chunks(let pieces, let gap):
        var headers = HTTPHeaders()
        headers.add(name: "Transfer-Encoding", value: "chunked")
        context.writeAndFlush(
          wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .ok, headers: headers))), promise: nil)
        let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
        for (offset, piece) in pieces.enumerated() {
          context.eventLoop.scheduleTask(in: gap * Int64(offset + 1)) {
            let context = bound.value
            context.writeAndFlush(
              NIOAny(HTTPServerResponsePart.body(.byteBuffer(ByteBuffer(string: piece)))), promise: nil)
            if offset == pieces.count - 1 {
              context.writeAndFlush(NIOAny(HTTPServerResponsePart.end(nil)), promise: nil)
            }
          }
        }
      }
    }
  }
}

/// A loopback port that refuses connections: bound, never listening, held for the test's duration.
public final class RefusingPort: Sendable {
  public let port: Int
  private let socket: Int32

  public init() throws {
    let socket = Glibc.socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    address.sin_port = 0
    let bound = withUnsafePointer(to: &address) {
      $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
        Glibc.bind(socket, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
      }
    }
    precondition(bound == 0, "RefusingPort: bind failed")
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafeMutablePointer(to: &address) {
      $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(socket, $0, &length) }
    }
    self.socket = socket
    port = Int(UInt16(bigEndian: address.sin_port))
  }

  public var endpoint: String { "http://127.0.0.1:\(port)" }

  deinit { close(socket) }
}
