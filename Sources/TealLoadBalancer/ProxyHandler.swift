// The HTTP/1.1 reverse proxy: one ProxyServerHandler per client connection, on that connection's event
// loop, leasing upstream connections from the same loop's pool. No actor hop on the request path.

import NIOCore
import NIOHTTP1

/// Per-listener settings the data path reads (immutable while a listener runs).
struct ProxySettings: Sendable {
  var role: ListenerRole
  var responseTimeout: TimeAmount
  var forwardedProto: String
  /// Times one request may be sent again after a failure before any response byte (bounded).
  var maxRetries: Int
  /// A response body that sends nothing for this long is cut (the client connection closes).
  var responseBodyIdleTimeout: TimeAmount = .seconds(10)
  /// Client connections per service (both listeners); one more gets 503 and is closed.
  var maxClientConnections: Int = 10_000
  /// Peers whose `x-forwarded-for` is kept (and appended to); anyone else's is replaced.
  var trustedProxies: Set<String> = []
}

// MARK: - Exchange

/// One request/response exchange on a client connection.
private final class Exchange {
  let clientVersion: HTTPVersion
  let forwardedHead: HTTPRequestHead
  let isIdempotentWithoutBody: Bool
  let requestHasBody: Bool
  let clientKeepAlive: Bool
  let expectContinue: Bool
  /// HEAD or CONNECT: the response has no body whatever its headers say.
  let responseHasNoBody: Bool
  /// The response's body carries a transfer-coding besides chunked: the proxy writes the chunked
  /// framing itself (NIO's encoder frames only a bare `chunked`).
  var framesChunksItself = false
  let start: NIODeadline
  var choice: RouteChoice
  /// Parts received before the upstream connection was ready.
  var buffered: [HTTPClientRequestPart] = []
  var requestEnded = false
  /// Retries made so far (at most `ProxySettings.maxRetries`), and the targets that failed.
  var retries = 0
  var failedTargets: Set<TargetAddress> = []
  var staleRetried = false
  var upstream: UpstreamConnection?
  var upstreamReused = false
  var responseStarted = false
  /// When the target last sent a response part (for the body idle timeout).
  var lastUpstreamRead = NIODeadline.now()
  var status = 0
  var upstreamKeepAlive = true
  var closeClientAfterResponse = false

  init(head: HTTPRequestHead, forwardedHead: HTTPRequestHead, choice: RouteChoice, start: NIODeadline) {
    self.clientVersion = head.version
    self.forwardedHead = forwardedHead
    self.requestHasBody = headDeclaresBody(head)
    switch head.method {
    case .GET, .HEAD, .OPTIONS, .TRACE, .PUT, .DELETE: self.isIdempotentWithoutBody = !self.requestHasBody
    default: self.isIdempotentWithoutBody = false
    }
    self.clientKeepAlive = head.isKeepAlive
    self.responseHasNoBody = head.method == .HEAD || head.method == .CONNECT
    self.expectContinue =
      head.headers.contains(name: "expect")
      && head.headers["expect"].contains { $0.lowercased() == "100-continue" }
    self.choice = choice
    self.start = start
  }
}

/// The first transfer-coding other than `chunked` a request declares, if any.
private func unsupportedTransferCoding(_ head: HTTPRequestHead) -> String? {
  for value in head.headers["transfer-encoding"] {
    for coding in value.split(separator: ",") {
      let name = coding.trimmingASCIISpaces()
      if !name.isEmpty, !name.caseInsensitiveASCIIEquals("chunked") { return name }
    }
  }
  return nil
}

private func headDeclaresBody(_ head: HTTPRequestHead) -> Bool {
  if head.headers.contains(name: "transfer-encoding") { return true }
  if let length = head.headers.first(name: "content-length"), let value = Int(length), value > 0 { return true }
  return false
}

/// The transfer-codings a message lists, in order, over every `transfer-encoding` field.
private func transferCodings(_ headers: HTTPHeaders) -> [String] {
  var codings: [String] = []
  for value in headers["transfer-encoding"] {
    for coding in value.split(separator: ",") {
      let name = coding.trimmingASCIISpaces()
      if !name.isEmpty { codings.append(name) }
    }
  }
  return codings
}

private func isChunked(_ coding: String) -> Bool {
  coding.caseInsensitiveASCIIEquals("chunked")
}

/// How a forwarded response's body is framed to the client.
enum ResponseFraming: Equatable {
  /// No body (HEAD, CONNECT, 1xx, 204, 304), a `content-length`, or a bare `chunked` that NIO's
  /// encoder frames: the encoder writes the body as it is told.
  case byEncoder
  /// The target applied a transfer-coding besides chunked: the codings are kept, with chunked
  /// last, and the proxy writes the chunk framing itself.
  case chunkedByProxy
  /// An HTTP/1.0 client without `content-length`: the body ends with the connection.
  case untilClose
  /// The body carries a transfer-coding an HTTP/1.0 client cannot receive (RFC 9112 §6.1) and the
  /// proxy does not decode: 502.
  case refused(coding: String)
}

/// Sets the framing headers of a forwarded response head (the encoder's automatic framing is off,
/// since it would replace `gzip, chunked` by `chunked` and lose the coding; RFC 9112 §6.1 lets a
/// proxy re-frame only the chunked part).
func frameForwardedResponse(
  _ headers: inout HTTPHeaders, status: HTTPResponseStatus, noBody: Bool, clientVersion: HTTPVersion
) -> ResponseFraming {
  let codings = transferCodings(headers)
  if noBody || !status.mayHaveResponseBody {
    if !status.mayHaveResponseBody {
      // 1xx, 204 and 304 never have a body; their framing fields would only confuse (as NIO did).
      headers.remove(name: "transfer-encoding")
      headers.remove(name: "content-length")
    } else if clientVersion.minor == 0 {
      headers.remove(name: "transfer-encoding")
    }
    return .byEncoder
  }
  if codings.isEmpty, headers.contains(name: "content-length") { return .byEncoder }
  // A transfer-coding overrides a content-length (RFC 9112 §6.3), which must then not be sent.
  headers.remove(name: "content-length")
  let others = codings.filter { !isChunked($0) }
  if clientVersion.minor == 0 {
    if let coding = others.first { return .refused(coding: coding) }
    headers.remove(name: "transfer-encoding")
    return .untilClose
  }
  if others.isEmpty {
    headers.replaceOrAdd(name: "transfer-encoding", value: "chunked")
    return .byEncoder
  }
  headers.replaceOrAdd(name: "transfer-encoding", value: (others + ["chunked"]).joined(separator: ", "))
  return .chunkedByProxy
}

/// Headers that describe one hop, never forwarded (RFC 9110 §7.6.1). `transfer-encoding` is kept:
/// NIO's encoders use it to frame the body on the next hop.
private let hopByHopHeaders = ["connection", "keep-alive", "proxy-connection", "te", "trailer", "upgrade"]

/// Framing and routing fields are never hop-by-hop, whatever a `connection` header claims: dropping
/// them would change how the next hop reads the body.
private func isProtectedFromConnectionHeader(_ name: String) -> Bool {
  name.caseInsensitiveASCIIEquals("content-length") || name.caseInsensitiveASCIIEquals("transfer-encoding")
    || name.caseInsensitiveASCIIEquals("host")
}

extension String {
  /// ASCII case-insensitive equality with a lowercase ASCII literal, without allocating.
  fileprivate func caseInsensitiveASCIIEquals(_ lowercase: String) -> Bool {
    guard self.utf8.count == lowercase.utf8.count else { return false }
    for (a, b) in zip(self.utf8, lowercase.utf8) where a != b && (a | 0x20) != b { return false }
    return true
  }
}

extension Substring {
  fileprivate func trimmingASCIISpaces() -> String {
    String(self.drop { $0 == " " || $0 == "\t" }.reversed().drop { $0 == " " || $0 == "\t" }.reversed())
  }
}

// MARK: - Client-side handler

/// Proxies the requests of one client connection.
///
/// Invariants:
/// - At most one exchange at a time (HTTPServerPipelineHandler serialises pipelined requests).
/// - Every exchange begun with `runtime.begin` ends with exactly one `runtime.finish`.
/// - Client reads are held while the upstream connection is being opened or cannot take more bytes;
///   upstream reads are held while the client cannot take more bytes (backpressure both ways).
final class ProxyServerHandler: ChannelDuplexHandler, RemovableChannelHandler {
  typealias InboundIn = HTTPServerRequestPart
  typealias OutboundIn = HTTPServerResponsePart
  typealias OutboundOut = HTTPServerResponsePart

  private let runtime: ServiceRuntime
  private let settings: ProxySettings
  private let pool: UpstreamPool
  private let timeouts: ClientTimeoutHandler?
  private var context: ChannelHandlerContext?
  private var clientAddress = "unknown"
  private var exchange: Exchange?
  /// Set after a response went out before its request ended: the rest of the request is dropped.
  private var discardingRequest = false
  private var readsPaused = false
  private var readPending = false
  private var timeoutTimer: Scheduled<Void>?
  /// Set when the service stops gracefully: the connection closes at its next request boundary.
  private var stopping = false

  /// How long a gracefully closed connection waits for the client to close its side after the
  /// balancer closed its output (bytes arriving meanwhile are dropped); then it is closed outright.
  static let lingerTimeout = TimeAmount.seconds(2)

  init(runtime: ServiceRuntime, settings: ProxySettings, pool: UpstreamPool, timeouts: ClientTimeoutHandler? = nil) {
    self.runtime = runtime
    self.settings = settings
    self.pool = pool
    self.timeouts = timeouts
  }

  // MARK: Channel events

  func handlerAdded(context: ChannelHandlerContext) {
    self.context = context
    if let address = context.channel.remoteAddress?.ipAddress { self.clientAddress = address }
    self.timeouts?.onBodyIdle = { [weak self] in self?.requestBodyStalled() }
  }

  func handlerRemoved(context: ChannelHandlerContext) {
    self.timeouts?.onBodyIdle = nil
    self.timeoutTimer?.cancel()
    self.timeoutTimer = nil
    self.context = nil
  }

  func channelActive(context: ChannelHandlerContext) {
    guard self.runtime.clientOpened(context.channel, limit: self.settings.maxClientConnections) else {
      // Over the connection limit: 503 at once, before any request is read, then close.
      // Written raw, in front of the HTTP handlers: no request has been read.
      let body = "teal: service '\(self.runtime.name)' has too many client connections\n"
      self.timeouts?.respondRawAndClose(status: "503 Service Unavailable", body: body)
      if self.timeouts == nil { context.close(promise: nil) }
      context.fireChannelActive()
      return
    }
    context.fireChannelActive()
    // Accepted while its service began a graceful stop: it closes like every other connection.
    if self.runtime.isStopping { self.beginGracefulClose(context: context) }
  }

  func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
    if event is GracefulCloseEvent {
      self.beginGracefulClose(context: context)
      return
    }
    context.fireUserInboundEventTriggered(event)
  }

  /// The service stops gracefully. A connection between requests closes now, without a reset; one
  /// with an exchange, or with the first bytes of a request head already read, is served first, its
  /// response carries `connection: close` (when its head has not gone out yet), and the connection
  /// closes after that response.
  private func beginGracefulClose(context: ChannelHandlerContext) {
    guard !self.stopping else { return }
    self.stopping = true
    if let exchange = self.exchange {
      exchange.closeClientAfterResponse = true
      return
    }
    guard let timeouts = self.timeouts else {
      context.close(promise: nil)
      return
    }
    if timeouts.isBetweenRequests {
      self.closeGracefully(context)
    }
    // Otherwise a request head is arriving: its exchange starts stopping (see startExchange), or
    // the header-read timeout answers 408 and closes.
  }

  /// Closes without a reset (see ``ClientTimeoutHandler/closeGracefully(linger:)``).
  private func closeGracefully(_ context: ChannelHandlerContext) {
    guard let timeouts = self.timeouts else {
      context.close(promise: nil)
      return
    }
    self.readsPaused = false
    self.readPending = false
    timeouts.closeGracefully(linger: Self.lingerTimeout)
  }

  func channelInactive(context: ChannelHandlerContext) {
    self.timeoutTimer?.cancel()
    self.timeoutTimer = nil
    self.runtime.clientClosed(context.channel)
    if let exchange = self.exchange {
      // The client went away mid-exchange: the upstream connection is in an unknown state.
      exchange.upstream?.close()
      exchange.upstream = nil
      self.complete(exchange, status: nil)
    }
    context.fireChannelInactive()
  }

  func read(context: ChannelHandlerContext) {
    if self.readsPaused {
      self.readPending = true
    } else {
      context.read()
    }
  }

  func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    switch self.unwrapInboundIn(data) {
    case .head(let head):
      self.discardingRequest = false
      self.startExchange(head, context: context)
    case .body(let buffer):
      guard !self.discardingRequest, let exchange = self.exchange else { return }
      self.forward(.body(.byteBuffer(buffer)), exchange)
    case .end(let trailers):
      if self.discardingRequest {
        self.discardingRequest = false
        return
      }
      self.timeouts?.requestEnded()
      guard let exchange = self.exchange else { return }
      exchange.requestEnded = true
      self.forward(.end(trailers), exchange)
    }
  }

  func channelReadComplete(context: ChannelHandlerContext) {
    self.exchange?.upstream?.flush()
    context.fireChannelReadComplete()
  }

  func channelWritabilityChanged(context: ChannelHandlerContext) {
    if context.channel.isWritable { self.exchange?.upstream?.setReadsPaused(false) }
    context.fireChannelWritabilityChanged()
  }

  func errorCaught(context: ChannelHandlerContext, error: Error) {
    guard let parserError = error as? HTTPParserError else {
      context.close(promise: nil)
      return
    }
    self.runtime.recordBadRequest()
    if let exchange = self.exchange {
      exchange.upstream?.close()
      exchange.upstream = nil
      let responseStarted = exchange.responseStarted
      self.complete(exchange, status: nil)
      if responseStarted {
        context.close(promise: nil)
        return
      }
    }
    let status: HTTPResponseStatus = parserError == .headerOverflow ? .requestHeaderFieldsTooLarge : .badRequest
    let body =
      status == .badRequest
      ? "teal: malformed HTTP request (\(parserError))\n"
      : "teal: request headers are larger than this listener accepts\n"
    let written = self.writeSimpleResponse(
      status, body: body, revision: nil, version: .http1_1, close: true, context: context)
    self.close(context, after: written)
  }

  // MARK: Request path

  private func startExchange(_ head: HTTPRequestHead, context: ChannelHandlerContext) {
    self.timeouts?.requestHeadReceived(hasBody: headDeclaresBody(head))
    if let coding = unsupportedTransferCoding(head) {
      // Forwarding would silently drop the coding (NIO re-frames a request body as plain chunked).
      let body = "teal: transfer-coding '\(coding)' is not supported; only chunked is\n"
      let written = self.writeSimpleResponse(
        .notImplemented, body: body, revision: nil, version: head.version, close: true, context: context)
      self.close(context, after: written)
      return
    }
    guard let choice = self.runtime.begin(self.settings.role) else {
      let body =
        "teal: no healthy target for service '\(self.runtime.name)' on the \(self.settings.role.rawValue) listener\n"
      self.respondWithoutExchange(.serviceUnavailable, body: body, head: head, context: context)
      return
    }
    let exchange = Exchange(
      head: head, forwardedHead: self.forwardedHead(head, target: choice.target), choice: choice, start: .now())
    exchange.closeClientAfterResponse = self.stopping
    self.exchange = exchange
    if self.timeoutTimer == nil { self.armTimeoutTimer(in: self.timerPeriod, context: context) }
    self.setReadsPaused(true)
    self.dispatch(exchange, allowPooled: true)
  }

  private func forwardedHead(_ head: HTTPRequestHead, target: TargetAddress) -> HTTPRequestHead {
    // One pass over the headers: drop hop-by-hop fields and `expect` (answered here), merge
    // x-forwarded-for. Fields named by `connection` are dropped in a second pass, only when present.
    var headers = HTTPHeaders()
    headers.reserveCapacity(head.headers.count + 2)
    var forwardedFor: String? = nil
    var connectionTokens: [Substring] = []
    var hasHost = false
    for (name, value) in head.headers {
      switch name.utf8.count {
      case 4 where name.caseInsensitiveASCIIEquals("host"):
        hasHost = true
        headers.add(name: name, value: value)
      case 2 where name.caseInsensitiveASCIIEquals("te"): continue
      case 6 where name.caseInsensitiveASCIIEquals("expect"): continue
      case 7 where name.caseInsensitiveASCIIEquals("trailer") || name.caseInsensitiveASCIIEquals("upgrade"): continue
      case 10 where name.caseInsensitiveASCIIEquals("connection"):
        connectionTokens += value.split(separator: ",")
        continue
      case 10 where name.caseInsensitiveASCIIEquals("keep-alive"): continue
      case 15 where name.caseInsensitiveASCIIEquals("x-forwarded-for"):
        forwardedFor = forwardedFor.map { $0 + ", " + value } ?? value
        continue
      case 16 where name.caseInsensitiveASCIIEquals("proxy-connection"): continue
      case 17 where name.caseInsensitiveASCIIEquals("x-forwarded-proto"): continue
      default: headers.add(name: name, value: value)
      }
    }
    for token in connectionTokens {
      let name = token.trimmingASCIISpaces()
      guard !name.isEmpty, !isProtectedFromConnectionHeader(name) else { continue }
      headers.remove(name: name)
    }
    // An HTTP/1.0 request may come without Host; it leaves as HTTP/1.1, which requires one.
    if !hasHost { headers.add(name: "host", value: target.description) }
    // A client's own x-forwarded-for is kept only when it is a trusted proxy; anyone could forge it.
    if let forwardedFor, self.settings.trustedProxies.contains(self.clientAddress) {
      headers.add(name: "x-forwarded-for", value: forwardedFor + ", " + self.clientAddress)
    } else {
      headers.add(name: "x-forwarded-for", value: self.clientAddress)
    }
    headers.add(name: "x-forwarded-proto", value: self.settings.forwardedProto)
    return HTTPRequestHead(version: .http1_1, method: head.method, uri: head.uri, headers: headers)
  }

  /// Sends the exchange to its target over a pooled connection or a new one.
  private func dispatch(_ exchange: Exchange, allowPooled: Bool) {
    if allowPooled,
      let connection = self.pool.take(exchange.choice.target, checkEstablished: !exchange.isIdempotentWithoutBody)
    {
      self.attach(exchange, connection, reused: true)
      return
    }
    let target = exchange.choice.target
    self.pool.connect(target).assumeIsolated().whenComplete { result in
      guard self.exchange === exchange, exchange.choice.target == target else {
        if case .success(let channel) = result { channel.close(promise: nil) }
        return
      }
      switch result {
      case .success(let channel):
        do {
          self.attach(exchange, try self.pool.adopt(channel), reused: false)
        } catch {
          channel.close(promise: nil)
          self.connectFailed(exchange)
        }
      case .failure:
        self.connectFailed(exchange)
      }
    }
  }

  /// A connect failed: nothing was sent, so the request goes to another healthy target of any
  /// weighted revision, whatever its method, up to `maxRetries` times.
  private func connectFailed(_ exchange: Exchange) {
    guard let context = self.context else { return }
    if self.retryElsewhere(exchange) { return }
    self.failBeforeResponse(
      exchange, .badGateway,
      body: "teal: could not connect to a target of revision '\(exchange.choice.revision)'\n", context: context)
  }

  /// Counts a failure of the exchange's target and sends the request to another target; false when
  /// no retry is left or no other target is available (the failure is counted either way).
  private func retryElsewhere(_ exchange: Exchange) -> Bool {
    exchange.failedTargets.insert(exchange.choice.target)
    guard exchange.retries < self.settings.maxRetries else {
      self.runtime.recordConnectFailure(exchange.choice, self.settings.role)
      return false
    }
    guard
      let choice = self.runtime.retry(self.settings.role, failed: exchange.choice, excluding: exchange.failedTargets)
    else { return false }
    exchange.retries += 1
    exchange.choice = choice
    self.dispatch(exchange, allowPooled: true)
    return true
  }

  private func attach(_ exchange: Exchange, _ connection: UpstreamConnection, reused: Bool) {
    guard let context = self.context else {
      self.pool.release(connection)
      return
    }
    exchange.upstream = connection
    exchange.upstreamReused = reused
    connection.owner = self
    connection.write(.head(exchange.forwardedHead))
    for part in exchange.buffered { connection.write(part) }
    exchange.buffered = []
    connection.flush()
    if exchange.expectContinue, !exchange.requestEnded {
      context.writeAndFlush(
        self.wrapOutboundOut(.head(HTTPResponseHead(version: exchange.clientVersion, status: .continue))),
        promise: nil)
    }
    self.setReadsPaused(!connection.isWritable)
  }

  private func forward(_ part: HTTPClientRequestPart, _ exchange: Exchange) {
    guard let connection = exchange.upstream else {
      exchange.buffered.append(part)
      return
    }
    connection.write(part)
    if !connection.isWritable { self.setReadsPaused(true) }
  }

  private func setReadsPaused(_ paused: Bool) {
    self.readsPaused = paused
    if !paused, self.readPending, let context = self.context {
      self.readPending = false
      context.read()
    }
  }

  // MARK: Response path (called by UpstreamConnection on the same loop)

  func upstreamRead(_ part: HTTPClientResponsePart, from connection: UpstreamConnection) {
    guard let context = self.context, let exchange = self.exchange, exchange.upstream === connection else {
      connection.close()
      return
    }
    switch part {
    case .head(let upstreamHead):
      var headers = upstreamHead.headers
      for token in headers[canonicalForm: "connection"] where !isProtectedFromConnectionHeader(String(token)) {
        headers.remove(name: String(token))
      }
      for name in hopByHopHeaders { headers.remove(name: name) }
      let framing = frameForwardedResponse(
        &headers, status: upstreamHead.status, noBody: exchange.responseHasNoBody,
        clientVersion: exchange.clientVersion)
      if case .refused(let coding) = framing {
        self.failBeforeResponse(
          exchange, .badGateway,
          body: "teal: the target sent transfer-coding '\(coding)', which an HTTP/1.0 client cannot receive\n",
          context: context)
        return
      }
      exchange.responseStarted = true
      exchange.lastUpstreamRead = .now()
      exchange.status = Int(upstreamHead.status.code)
      exchange.upstreamKeepAlive = upstreamHead.isKeepAlive
      exchange.framesChunksItself = framing == .chunkedByProxy
      headers.replaceOrAdd(name: "x-teal-revision", value: exchange.choice.revision)
      headers.replaceOrAdd(name: "x-teal-generation", value: String(exchange.choice.generation))
      var close = !exchange.clientKeepAlive || exchange.closeClientAfterResponse
      // An HTTP/1.0 client cannot take chunked framing: the end of the body is the end of the connection.
      if framing == .untilClose { close = true }
      if close {
        headers.add(name: "connection", value: "close")
      } else if exchange.clientVersion.minor == 0 {
        headers.add(name: "connection", value: "keep-alive")
      }
      exchange.closeClientAfterResponse = close
      let head = HTTPResponseHead(version: exchange.clientVersion, status: upstreamHead.status, headers: headers)
      context.write(self.wrapOutboundOut(.head(head)), promise: nil)
    case .body(let buffer):
      exchange.lastUpstreamRead = .now()
      if exchange.framesChunksItself {
        guard buffer.readableBytes > 0 else { return }  // an empty chunk would end the body
        var size = context.channel.allocator.buffer(capacity: 16)
        size.writeString(String(buffer.readableBytes, radix: 16))
        size.writeStaticString("\r\n")
        context.write(self.wrapOutboundOut(.body(.byteBuffer(size))), promise: nil)
        context.write(self.wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
        context.write(self.wrapOutboundOut(.body(.byteBuffer(Self.crlf))), promise: nil)
      } else {
        context.write(self.wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
      }
      if !context.channel.isWritable { connection.setReadsPaused(true) }
    case .end(var trailers):
      if exchange.framesChunksItself {
        // The last chunk and the trailer section, written as body bytes (the encoder frames nothing).
        var last = context.channel.allocator.buffer(capacity: 64)
        last.writeStaticString("0\r\n")
        for (name, value) in trailers ?? [:] {
          last.writeString(name)
          last.writeStaticString(": ")
          last.writeString(value)
          last.writeStaticString("\r\n")
        }
        last.writeStaticString("\r\n")
        context.write(self.wrapOutboundOut(.body(.byteBuffer(last))), promise: nil)
        trailers = nil
      }
      // Complete first: writing the end lets HTTPServerPipelineHandler deliver the next pipelined
      // request synchronously, which must find this exchange already gone.
      let closeClient = self.complete(exchange, status: exchange.status)
      let end = self.wrapOutboundOut(.end(trailers))
      if closeClient {
        self.close(context, after: context.writeAndFlush(end))
      } else {
        context.writeAndFlush(end, promise: nil)
      }
    }
  }

  private static let crlf = ByteBuffer(string: "\r\n")

  /// The encoder configuration of every client connection: framing headers are set by the proxy
  /// (``frameForwardedResponse(_:status:noBody:clientVersion:)`` and the fixed responses), not by
  /// NIO, which would rewrite `gzip, chunked` to `chunked`.
  static let encoderConfiguration: HTTPResponseEncoder.Configuration = {
    var configuration = HTTPResponseEncoder.Configuration()
    configuration.automaticallySetFramingHeaders = false
    return configuration
  }()

  func upstreamReadComplete() {
    self.context?.flush()
  }

  func upstreamWritabilityChanged(from connection: UpstreamConnection) {
    guard let exchange = self.exchange, exchange.upstream === connection else { return }
    self.setReadsPaused(!connection.isWritable)
  }

  func upstreamClosed(_ connection: UpstreamConnection) {
    guard let context = self.context, let exchange = self.exchange, exchange.upstream === connection else { return }
    exchange.upstream = nil
    if exchange.responseStarted {
      // The body was cut: the client must see the connection end, not a complete-looking response.
      self.complete(exchange, status: nil)
      context.close(promise: nil)
      return
    }
    if exchange.isIdempotentWithoutBody, exchange.requestEnded {
      if exchange.upstreamReused, !exchange.staleRetried {
        // A pooled connection the target closed just as we wrote: sending an idempotent request
        // without a body again, on a fresh connection, is safe.
        exchange.staleRetried = true
        self.dispatch(exchange, allowPooled: false)
        return
      }
      // A fresh connection reset before any response byte (the target died): another target.
      if self.retryElsewhere(exchange) { return }
    }
    self.failBeforeResponse(
      exchange, .badGateway,
      body: "teal: target of revision '\(exchange.choice.revision)' closed the connection without a response\n",
      context: context)
  }

  /// The client stopped sending its request body: 408 when no response started, else the
  /// connection closes.
  private func requestBodyStalled() {
    guard let context = self.context else { return }
    guard let exchange = self.exchange else {
      context.close(promise: nil)
      return
    }
    if exchange.responseStarted {
      exchange.upstream?.close()
      exchange.upstream = nil
      self.complete(exchange, status: nil)
      context.close(promise: nil)
      return
    }
    exchange.closeClientAfterResponse = true
    self.failBeforeResponse(
      exchange, .requestTimeout, body: "teal: the request body stopped arriving\n", context: context)
  }

  /// The longest the connection's timer sleeps while an exchange runs: the shorter of the response
  /// timeout and the response body idle timeout, so a body that stalls right after its head is cut
  /// `responseBodyIdleTimeout` after its last byte (before, only when the response timer fired, up
  /// to `responseTimeout` after routing).
  private var timerPeriod: TimeAmount { min(self.settings.responseTimeout, self.settings.responseBodyIdleTimeout) }

  /// One timer per connection, not per request: when it fires it checks the current exchange's age
  /// (or, once its response started, how long the target has been silent) and re-arms for the
  /// remaining time, at most `timerPeriod`, so a keep-alive connection pays no timer cost per
  /// request.
  private func armTimeoutTimer(in delay: TimeAmount, context: ChannelHandlerContext) {
    self.timeoutTimer = context.eventLoop.assumeIsolated().scheduleTask(in: delay) {
      self.timeoutTimer = nil
      guard let context = self.context, let exchange = self.exchange else { return }
      if exchange.responseStarted {
        // A response body that stalls is cut: the client sees the connection end, not a hang. No
        // retry: part of the response went out.
        let idle = NIODeadline.now() - exchange.lastUpstreamRead
        if idle >= self.settings.responseBodyIdleTimeout {
          self.runtime.recordStalledResponse(exchange.choice, self.settings.role)
          exchange.upstream?.close()
          exchange.upstream = nil
          self.complete(exchange, status: nil)
          context.close(promise: nil)
        } else {
          self.armTimeoutTimer(in: self.settings.responseBodyIdleTimeout - idle, context: context)
        }
        return
      }
      let age = NIODeadline.now() - exchange.start
      if age >= self.settings.responseTimeout {
        self.responseTimedOut(exchange)
      } else {
        self.armTimeoutTimer(in: min(self.settings.responseTimeout - age, self.timerPeriod), context: context)
      }
    }
  }

  private func responseTimedOut(_ exchange: Exchange) {
    guard let context = self.context, self.exchange === exchange, !exchange.responseStarted else { return }
    exchange.upstream?.close()
    exchange.upstream = nil
    self.failBeforeResponse(
      exchange, .gatewayTimeout,
      body: "teal: target of revision '\(exchange.choice.revision)' did not answer in time\n", context: context)
  }

  // MARK: Completion

  private func failBeforeResponse(
    _ exchange: Exchange, _ status: HTTPResponseStatus, body: String, context: ChannelHandlerContext
  ) {
    exchange.upstream?.close()
    exchange.upstream = nil
    exchange.closeClientAfterResponse = exchange.closeClientAfterResponse || !exchange.clientKeepAlive
    let closeClient = self.complete(exchange, status: Int(status.code), byBalancer: true)
    let written = self.writeSimpleResponse(
      status, body: body, revision: exchange.choice.revision, generation: exchange.choice.generation,
      version: exchange.clientVersion, close: closeClient, context: context)
    if closeClient { self.close(context, after: written) }
  }

  /// Whether the client connection ends with this exchange's response: the client asked for it, or
  /// the rest of a request body would otherwise have to be read and thrown away.
  private func closesClient(_ exchange: Exchange) -> Bool {
    exchange.closeClientAfterResponse || (!exchange.requestEnded && exchange.requestHasBody)
  }

  /// Ends the exchange before its last response part is written: returns or closes the upstream
  /// connection, records metrics and gets ready for the next request. `status` nil means the exchange
  /// was aborted. Returns whether the caller must close the client connection after its final write.
  @discardableResult
  private func complete(_ exchange: Exchange, status: Int?, byBalancer: Bool = false) -> Bool {
    guard self.exchange === exchange else { return false }
    self.exchange = nil
    if let connection = exchange.upstream {
      exchange.upstream = nil
      if exchange.upstreamKeepAlive, exchange.requestEnded, status != nil {
        self.pool.release(connection)
      } else {
        connection.close()
      }
    }
    let elapsed = NIODeadline.now().uptimeNanoseconds - exchange.start.uptimeNanoseconds
    self.runtime.finish(
      self.settings.role, exchange.choice, status: status, byBalancer: byBalancer,
      nanoseconds: Int64(clamping: elapsed))
    guard status != nil else { return false }
    if self.closesClient(exchange) { return true }
    if !exchange.requestEnded { self.discardingRequest = true }
    self.timeouts?.responseEnded()
    self.setReadsPaused(false)
    return false
  }

  /// Closes the client connection once `written` (the last response write) has reached the socket.
  /// While the service stops gracefully, the close is graceful too (no reset for a client that
  /// already sent its next request).
  private func close(_ context: ChannelHandlerContext, after written: EventLoopFuture<Void>?) {
    let graceful = self.stopping
    guard let written else {
      if graceful { self.closeGracefully(context) } else { context.close(promise: nil) }
      return
    }
    written.assumeIsolated().whenComplete { _ in
      if graceful { self.closeGracefully(context) } else { context.close(promise: nil) }
    }
  }

  /// 503 before any exchange exists (no healthy target).
  private func respondWithoutExchange(
    _ status: HTTPResponseStatus, body: String, head: HTTPRequestHead, context: ChannelHandlerContext
  ) {
    let close = !head.isKeepAlive || headDeclaresBody(head) || self.stopping
    if !close {
      self.discardingRequest = true
      self.timeouts?.responseEnded()
    }
    let written = self.writeSimpleResponse(
      status, body: body, revision: nil, version: head.version, close: close, context: context)
    if close { self.close(context, after: written) }
  }

  /// Writes a complete short response; returns the future of its last write when `close` is set.
  private func writeSimpleResponse(
    _ status: HTTPResponseStatus, body: String, revision: String?, generation: UInt64? = nil, version: HTTPVersion,
    close: Bool, context: ChannelHandlerContext
  ) -> EventLoopFuture<Void>? {
    var headers = HTTPHeaders()
    headers.add(name: "content-type", value: "text/plain; charset=utf-8")
    headers.add(name: "content-length", value: String(body.utf8.count))
    // Every response names the revision and the routes generation; the revision is empty when none
    // was chosen (no healthy target, a request rejected before routing).
    headers.add(name: "x-teal-revision", value: revision ?? "")
    headers.add(name: "x-teal-generation", value: String(generation ?? self.runtime.appliedGeneration))
    if close { headers.add(name: "connection", value: "close") }
    let head = HTTPResponseHead(version: version.minor == 0 ? .http1_0 : .http1_1, status: status, headers: headers)
    context.write(self.wrapOutboundOut(.head(head)), promise: nil)
    context.write(
      self.wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(string: body)))), promise: nil)
    let end = self.wrapOutboundOut(.end(nil))
    guard close else {
      context.writeAndFlush(end, promise: nil)
      return nil
    }
    return context.writeAndFlush(end)
  }
}
