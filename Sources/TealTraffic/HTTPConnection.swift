// One keep-alive HTTP/1.1 client connection: one request at a time, every failure classified.

import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix

/// Why a request got no complete response. Every failed request has exactly one kind.
public enum TrafficFailure: String, Sendable, Hashable, CaseIterable, Error, CustomStringConvertible {
  /// The connection could not be opened: nothing listens on the target (ECONNREFUSED).
  case connectRefused
  /// The connection could not be opened for another reason (connect timeout, unreachable).
  case connectFailed
  /// The request was sent (or being sent) and the connection closed or failed before the
  /// response was complete.
  case resetBeforeResponse
  /// No complete response within the request timeout (the connection is then closed).
  case timeout
  /// The peer answered with something that is not a valid HTTP/1.1 response, or a body larger
  /// than ``HTTPConnection/maximumResponseBodyBytes``.
  case badResponse

  public var description: String { rawValue }
}

/// A complete response.
public struct HTTPResponse: Sendable {
  public var status: Int
  public var headers: HTTPHeaders
  public var body: [UInt8]
  /// False when the server said `Connection: close` (or spoke HTTP/1.0 without keep-alive): the
  /// connection is closed after this response.
  public var keepAlive: Bool

  public init(status: Int, headers: HTTPHeaders, body: [UInt8], keepAlive: Bool) {
    self.status = status
    self.headers = headers
    self.body = body
    self.keepAlive = keepAlive
  }

  /// The body as UTF-8 text.
  public var text: String { String(decoding: body, as: UTF8.self) }

  /// The first value of a header (names are case-insensitive).
  public func header(_ name: String) -> String? { headers[canonicalForm: name].first.map(String.init) }
}

/// A keep-alive HTTP/1.1 connection to one listener, one request at a time (no pipelining).
///
/// Used by ``TrafficGenerator``'s clients, and by tests and tools that need a plain HTTP client
/// whose failures are classified as ``TrafficFailure``.
public final class HTTPConnection: Sendable {
  /// Largest response body accepted; a larger one fails the request as ``TrafficFailure/badResponse``.
  public static let maximumResponseBodyBytes = 8 * 1024 * 1024

  private let channel: Channel
  private let host: String
  private let port: Int
  /// False once a request failed or a response said `Connection: close` (the channel may take a
  /// moment longer to report itself inactive).
  private let reusable = NIOLockedValueBox(true)

  private init(channel: Channel, host: String, port: Int) {
    self.channel = channel
    self.host = host
    self.port = port
  }

  /// Opens a connection to `host:port` (an address literal or a name), within `timeout`.
  /// Throws ``TrafficFailure/connectRefused`` or ``TrafficFailure/connectFailed``.
  public static func connect(
    host: String, port: Int, timeout: Duration = .seconds(2),
    group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
  ) async throws(TrafficFailure) -> HTTPConnection {
    let bootstrap = ClientBootstrap(group: group)
      .connectTimeout(.nanoseconds(Int64(timeout.nanosecondsClamped)))
      .channelOption(.socketOption(.tcp_nodelay), value: 1)
      .channelInitializer { channel in
        channel.eventLoop.makeCompletedFuture {
          try channel.pipeline.syncOperations.addHTTPClientHandlers()
          try channel.pipeline.syncOperations.addHandler(ExchangeHandler())
        }
      }
    do {
      let channel = try await bootstrap.connect(host: host, port: port).get()
      return HTTPConnection(channel: channel, host: host, port: port)
    } catch {
      throw Self.classifyConnect(error)
    }
  }

  static func classifyConnect(_ error: any Error) -> TrafficFailure {
    if let io = error as? IOError, io.errnoCode == ECONNREFUSED { return .connectRefused }
    if let connect = error as? NIOConnectionError {
      for attempt in connect.connectionErrors {
        if let io = attempt.error as? IOError, io.errnoCode == ECONNREFUSED { return .connectRefused }
      }
    }
    return .connectFailed
  }

  /// True until the connection closed (by either side, or after a failure or `Connection: close`).
  public var isOpen: Bool { reusable.withLockedValue { $0 } && channel.isActive }

  /// Sends one request and waits for its complete response, at most `timeout`. On any failure the
  /// connection is closed. A request sent on a connection that is already closed fails with
  /// ``TrafficFailure/resetBeforeResponse``.
  public func request(
    method: HTTPMethod, path: String, headers: [(String, String)] = [], body: [UInt8]? = nil,
    timeout: Duration = .seconds(5)
  ) async throws(TrafficFailure) -> HTTPResponse {
    var head = HTTPRequestHead(version: .http1_1, method: method, uri: path)
    head.headers.add(name: "host", value: port == 80 ? host : "\(host):\(port)")
    for (name, value) in headers { head.headers.add(name: name, value: value) }
    if let body {
      head.headers.replaceOrAdd(name: "content-length", value: String(body.count))
    } else if method == .POST || method == .PUT {
      head.headers.replaceOrAdd(name: "content-length", value: "0")
    }
    let promise = channel.eventLoop.makePromise(of: HTTPResponse.self)
    let exchange = Exchange(head: head, body: body, promise: promise)
    let channel = self.channel
    let timer = channel.eventLoop.scheduleTask(in: .nanoseconds(Int64(timeout.nanosecondsClamped))) {
      promise.fail(TrafficFailure.timeout)
      channel.close(promise: nil)
    }
    channel.writeAndFlush(exchange).whenFailure { _ in
      promise.fail(TrafficFailure.resetBeforeResponse)
    }
    do {
      let response = try await promise.futureResult.get()
      timer.cancel()
      if !response.keepAlive { reusable.withLockedValue { $0 = false } }
      return response
    } catch {
      timer.cancel()
      reusable.withLockedValue { $0 = false }
      channel.close(promise: nil)
      throw error as? TrafficFailure ?? .resetBeforeResponse
    }
  }

  /// Closes the connection (idempotent) and waits until it is closed.
  public func close() async {
    try? await channel.close()
  }
}

extension Duration {
  var nanosecondsClamped: Int64 {
    let (seconds, attoseconds) = components
    guard seconds < Int64.max / 1_000_000_000 else { return Int64.max }
    return max(0, seconds * 1_000_000_000 + attoseconds / 1_000_000_000)
  }
}

/// One request with the promise of its response.
struct Exchange {
  var head: HTTPRequestHead
  var body: [UInt8]?
  var promise: EventLoopPromise<HTTPResponse>
}

/// Writes one exchange at a time and completes its promise with the response, or fails it with a
/// ``TrafficFailure`` when the connection errors or closes first.
final class ExchangeHandler: ChannelDuplexHandler {
  typealias InboundIn = HTTPClientResponsePart
  typealias OutboundIn = Exchange
  typealias OutboundOut = HTTPClientRequestPart

  private var pending: EventLoopPromise<HTTPResponse>?
  private var responseHead: HTTPResponseHead?
  private var body: [UInt8] = []
  private var tooLarge = false

  func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
    let exchange = unwrapOutboundIn(data)
    guard pending == nil else {
      preconditionFailure("HTTPConnection sends one request at a time; a second was written while one is pending")
    }
    guard context.channel.isActive else {
      exchange.promise.fail(TrafficFailure.resetBeforeResponse)
      promise?.fail(TrafficFailure.resetBeforeResponse)
      return
    }
    pending = exchange.promise
    responseHead = nil
    body = []
    tooLarge = false
    context.write(wrapOutboundOut(.head(exchange.head)), promise: nil)
    if let bytes = exchange.body, !bytes.isEmpty {
      context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(bytes: bytes)))), promise: nil)
    }
    context.write(wrapOutboundOut(.end(nil)), promise: promise)
  }

  func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    switch unwrapInboundIn(data) {
    case .head(let head):
      // 1xx informational answers precede the real one.
      if head.status.code >= 100 && head.status.code < 200 { return }
      responseHead = head
    case .body(let buffer):
      guard responseHead != nil else { return }
      if body.count + buffer.readableBytes > HTTPConnection.maximumResponseBodyBytes {
        tooLarge = true
      } else {
        body.append(contentsOf: buffer.readableBytesView)
      }
    case .end:
      guard let head = responseHead, let promise = pending else { return }
      pending = nil
      responseHead = nil
      if tooLarge {
        promise.fail(TrafficFailure.badResponse)
        context.close(promise: nil)
        return
      }
      let response = HTTPResponse(
        status: Int(head.status.code), headers: head.headers, body: body, keepAlive: head.isKeepAlive)
      body = []
      promise.succeed(response)
      if !response.keepAlive { context.close(promise: nil) }
    }
  }

  func errorCaught(context: ChannelHandlerContext, error: any Error) {
    let failure: TrafficFailure = error is HTTPParserError ? .badResponse : .resetBeforeResponse
    if let promise = pending {
      pending = nil
      promise.fail(failure)
    }
    context.close(promise: nil)
  }

  func channelInactive(context: ChannelHandlerContext) {
    if let promise = pending {
      pending = nil
      promise.fail(TrafficFailure.resetBeforeResponse)
    }
    context.fireChannelInactive()
  }
}
