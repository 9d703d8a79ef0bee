import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix

/// Why one exchange on a connection ended early.
enum ConnectionFailure: Error, CustomStringConvertible {
  /// The connection closed (or reset) before the answer was complete.
  case closed
  /// The exchange's deadline passed; the connection was closed.
  case timedOut
  /// The bytes were not an HTTP response.
  case protocolError(String)

  var description: String {
    switch self {
    case .closed: return "the connection closed before the answer was complete"
    case .timedOut: return "no complete answer in time"
    case .protocolError(let text): return "not an HTTP/1.1 response (\(text))"
    }
  }
}

/// One keep-alive HTTP/1.1 connection to an endpoint, carrying one exchange at a time. Reading is
/// pulled: `autoRead` is off and a socket read is issued only when the reader waits for a part, so
/// a slow reader of a streamed body holds at most one read's worth of bytes in memory.
final class HTTPConnection: Sendable {
  let endpoint: Endpoint
  let channel: any Channel
  private let handler: NIOLoopBound<ExchangeHandler>
  /// How many exchanges were started on this connection (a reused connection may have been closed
  /// by the server while idle).
  private let exchanges = NIOLockedValueBox(0)

  private init(endpoint: Endpoint, channel: any Channel, handler: NIOLoopBound<ExchangeHandler>) {
    self.endpoint = endpoint
    self.channel = channel
    self.handler = handler
  }

  static func connect(
    to endpoint: Endpoint, group: any EventLoopGroup, security: any ClientConnectionSecurity,
    connectTimeout: TimeAmount
  ) async throws -> HTTPConnection {
    let bootstrap = ClientBootstrap(group: group)
      .connectTimeout(connectTimeout)
      .channelOption(.autoRead, value: false)
      .channelOption(.socketOption(.tcp_nodelay), value: 1)
    let connection = try await bootstrap.connect(host: endpoint.host, port: endpoint.port) { channel in
      channel.eventLoop.makeCompletedFuture {
        try security.secure(channel, endpoint: endpoint)
        try channel.pipeline.syncOperations.addHTTPClientHandlers()
        let handler = ExchangeHandler(eventLoop: channel.eventLoop)
        try channel.pipeline.syncOperations.addHandler(handler)
        return HTTPConnection(
          endpoint: endpoint, channel: channel, handler: NIOLoopBound(handler, eventLoop: channel.eventLoop))
      }
    }
    do { try await security.established(connection.channel).get() } catch {
      connection.channel.close(promise: nil)
      throw error
    }
    return connection
  }

  var isActive: Bool { channel.isActive }

  /// Whether an exchange ran on this connection before the current one.
  var wasReused: Bool { exchanges.withLockedValue { $0 } > 1 }

  /// Starts an exchange: arms its deadline and writes the request.
  func send(head: HTTPRequestHead, body: ByteBuffer?, deadline: NIODeadline) async throws {
    exchanges.withLockedValue { $0 += 1 }
    try await channel.eventLoop.flatSubmit {
      self.handler.value.begin(deadline: deadline)
      self.channel.write(HTTPClientRequestPart.head(head), promise: nil)
      if let body, body.readableBytes > 0 {
        self.channel.write(HTTPClientRequestPart.body(.byteBuffer(body)), promise: nil)
      }
      return self.channel.writeAndFlush(HTTPClientRequestPart.end(nil))
    }.get()
  }

  /// The next part of the answer.
  func nextPart() async throws -> HTTPClientResponsePart {
    try await channel.eventLoop.flatSubmit { self.handler.value.next() }.get()
  }

  /// Whether any part of an answer arrived in the current exchange.
  func receivedAnything() async -> Bool {
    (try? await channel.eventLoop.submit { self.handler.value.receivedAnything }.get()) ?? false
  }

  /// Stops the exchange's deadline (the answer is complete, or a stream's head arrived).
  func disarm() {
    channel.eventLoop.execute { self.handler.value.disarm() }
  }

  func close() {
    channel.close(promise: nil)
  }
}

/// Hands the response parts of the current exchange to `next()`, one socket read at a time.
final class ExchangeHandler: ChannelInboundHandler {
  typealias InboundIn = HTTPClientResponsePart

  private let eventLoop: any EventLoop
  private var context: ChannelHandlerContext?
  /// Parts decoded from one socket read and not yet taken; bounded by one read's worth of bytes.
  private var buffered = CircularBuffer<HTTPClientResponsePart>()
  private var waiter: EventLoopPromise<HTTPClientResponsePart>?
  private var failure: ConnectionFailure?
  private var deadlineTask: Scheduled<Void>?
  private(set) var receivedAnything = false

  init(eventLoop: any EventLoop) { self.eventLoop = eventLoop }

  func handlerAdded(context: ChannelHandlerContext) { self.context = context }

  func handlerRemoved(context: ChannelHandlerContext) { self.context = nil }

  func begin(deadline: NIODeadline) {
    receivedAnything = false
    deadlineTask?.cancel()
    guard let context else { return }
    let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
    deadlineTask = context.eventLoop.scheduleTask(deadline: deadline) { bound.value.fail(.timedOut) }
  }

  func disarm() {
    deadlineTask?.cancel()
    deadlineTask = nil
  }

  func next() -> EventLoopFuture<HTTPClientResponsePart> {
    guard let context else { return makeFailed(.closed) }
    if !buffered.isEmpty { return context.eventLoop.makeSucceededFuture(buffered.removeFirst()) }
    if let failure { return context.eventLoop.makeFailedFuture(failure) }
    precondition(waiter == nil, "ExchangeHandler: next() while a read is pending; one reader per connection")
    let promise = context.eventLoop.makePromise(of: HTTPClientResponsePart.self)
    waiter = promise
    context.read()
    return promise.futureResult
  }

  private func makeFailed(_ failure: ConnectionFailure) -> EventLoopFuture<HTTPClientResponsePart> {
    eventLoop.makeFailedFuture(failure)
  }

  func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    let part = unwrapInboundIn(data)
    receivedAnything = true
    if let waiter {
      self.waiter = nil
      waiter.succeed(part)
    } else {
      buffered.append(part)
    }
  }

  func channelReadComplete(context: ChannelHandlerContext) {
    // The read ended without a whole part (e.g. half a head): read on while someone waits.
    if waiter != nil { context.read() }
  }

  func errorCaught(context: ChannelHandlerContext, error: any Error) {
    fail(error is HTTPParserError ? .protocolError("\(error)") : .closed)
  }

  func channelInactive(context: ChannelHandlerContext) {
    fail(.closed)
    context.fireChannelInactive()
  }

  private func fail(_ reason: ConnectionFailure) {
    disarm()
    if failure == nil { failure = reason }
    if let waiter {
      self.waiter = nil
      waiter.fail(failure ?? reason)
    }
    context?.close(promise: nil)
  }
}
