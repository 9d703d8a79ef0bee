// Test support for the load balancer: a small HTTP backend that answers with its revision name and
// a keep-alive HTTP/1.1 client, both on real sockets through NIO.

import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import Testing

@testable import TealLoadBalancer

// MARK: - Backend

/// An HTTP server standing in for one task of a revision.
///
/// Paths: `/health` (200, or 503 after `setHealthy(false)`), `/slow?ms=N` (answers after N ms),
/// `/hang` (never answers), `/fail` (500), `/stall` (sends 10 of 100 body bytes, then nothing), `/echo` (answers with the request body; chunked in several parts when the
/// request has `x-chunked-response: 1`), anything else: 200 with body `<revision>\n`.
/// Every response carries `x-backend-revision` and echoes the forwarding headers it saw.
final class LBTestBackend: Sendable {
  let revision: String
  let port: Int
  private let server: any Channel
  private let state: NIOLockedValueBox<State>

  fileprivate struct State {
    var healthy = true
    var children: [ObjectIdentifier: any Channel] = [:]
    var served = 0
    var completedSlow = 0
  }

  var address: TargetAddress { TargetAddress(host: "127.0.0.1", port: self.port) }
  /// Requests answered, health checks excluded.
  var served: Int { self.state.withLockedValue { $0.served } }
  var completedSlow: Int { self.state.withLockedValue { $0.completedSlow } }

  private init(revision: String, server: any Channel, state: NIOLockedValueBox<State>) {
    self.revision = revision
    self.server = server
    self.port = server.localAddress?.port ?? 0
    self.state = state
  }

  /// - Parameter keepAliveTimeout: when set, the backend closes a connection that saw no byte for
  ///   this long, like a server's keep-alive timeout (its own answers are immediate, so that is an
  ///   idle keep-alive connection).
  static func start(
    revision: String, keepAliveTimeout: TimeAmount? = nil,
    group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
  ) async throws -> LBTestBackend {
    let state = NIOLockedValueBox(State())
    let server = try await ServerBootstrap(group: group)
      .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
      .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
      .childChannelInitializer { channel in
        channel.eventLoop.makeCompletedFuture {
          state.withLockedValue { $0.children[ObjectIdentifier(channel)] = channel }
          channel.closeFuture.whenComplete { _ in
            _ = state.withLockedValue { $0.children.removeValue(forKey: ObjectIdentifier(channel)) }
          }
          if let keepAliveTimeout {
            try channel.pipeline.syncOperations.addHandlers([
              IdleStateHandler(allTimeout: keepAliveTimeout), CloseWhenIdle(),
            ])
          }
          try channel.pipeline.syncOperations.configureHTTPServerPipeline()
          try channel.pipeline.syncOperations.addHandler(BackendHandler(revision: revision, state: state))
        }
      }
      .bind(host: "127.0.0.1", port: 0)
      .get()
    return LBTestBackend(revision: revision, server: server, state: state)
  }

  func setHealthy(_ healthy: Bool) {
    self.state.withLockedValue { $0.healthy = healthy }
  }

  /// Stops listening and cuts every open connection, like a crashed process.
  func kill() async {
    try? await self.server.close()
    let children = self.state.withLockedValue { Array($0.children.values) }
    for child in children { try? await child.close() }
  }
}

/// Closes the connection on the first idle event.
private final class CloseWhenIdle: ChannelInboundHandler {
  typealias InboundIn = NIOAny

  func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
    if event is IdleStateHandler.IdleStateEvent {
      context.close(promise: nil)
      return
    }
    context.fireUserInboundEventTriggered(event)
  }
}

private final class BackendHandler: ChannelInboundHandler {
  typealias InboundIn = HTTPServerRequestPart
  typealias OutboundOut = HTTPServerResponsePart

  private let revision: String
  private let state: NIOLockedValueBox<LBTestBackend.State>
  private var head: HTTPRequestHead?
  private var body: [ByteBuffer] = []

  init(revision: String, state: NIOLockedValueBox<LBTestBackend.State>) {
    self.revision = revision
    self.state = state
  }

  func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    switch self.unwrapInboundIn(data) {
    case .head(let head):
      self.head = head
      self.body = []
    case .body(let buffer):
      self.body.append(buffer)
    case .end:
      guard let head = self.head else { return }
      self.respond(to: head, context: context)
    }
  }

  private func respond(to head: HTTPRequestHead, context: ChannelHandlerContext) {
    let path = head.uri.split(separator: "?").first.map(String.init) ?? head.uri
    var headers = HTTPHeaders()
    headers.add(name: "x-backend-revision", value: self.revision)
    headers.add(name: "x-seen-forwarded-for", value: head.headers["x-forwarded-for"].joined(separator: ","))
    headers.add(name: "x-seen-forwarded-proto", value: head.headers["x-forwarded-proto"].joined(separator: ","))
    headers.add(name: "x-seen-expect", value: head.headers["expect"].joined(separator: ","))
    headers.add(name: "x-seen-hop", value: head.headers["x-hop"].joined(separator: ","))
    headers.add(name: "x-seen-host", value: head.headers["host"].joined(separator: ","))
    headers.add(name: "x-seen-version", value: "\(head.version.major).\(head.version.minor)")
    if path != "/health" { self.state.withLockedValue { $0.served += 1 } }
    switch path {
    case "/health":
      let healthy = self.state.withLockedValue { $0.healthy }
      self.send(status: healthy ? .ok : .serviceUnavailable, headers: headers, body: "health\n", context: context)
    case "/hang":
      return
    case "/fail":
      self.send(status: .internalServerError, headers: headers, body: "failed\n", context: context)
    case "/stall":
      // A response head and the first 10 of 100 body bytes, then nothing.
      var stallHeaders = headers
      stallHeaders.add(name: "content-length", value: "100")
      context.write(
        self.wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .ok, headers: stallHeaders))),
        promise: nil)
      context.writeAndFlush(
        self.wrapOutboundOut(.body(.byteBuffer(ByteBuffer(repeating: UInt8(ascii: "x"), count: 10)))), promise: nil)
      return
    case "/slow":
      let milliseconds = Int64(head.uri.split(separator: "=").last.flatMap { Int($0) } ?? 500)
      context.eventLoop.assumeIsolated().scheduleTask(in: .milliseconds(milliseconds)) {
        self.state.withLockedValue { $0.completedSlow += 1 }
        self.send(status: .ok, headers: headers, body: "\(self.revision)\n", context: context)
      }
    case "/echo":
      if head.headers["x-chunked-response"].first == "1" {
        headers.add(name: "transfer-encoding", value: "chunked")
        context.write(
          self.wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .ok, headers: headers))), promise: nil)
        for part in self.body { context.write(self.wrapOutboundOut(.body(.byteBuffer(part))), promise: nil) }
        context.writeAndFlush(self.wrapOutboundOut(.end(nil)), promise: nil)
      } else {
        var all = context.channel.allocator.buffer(capacity: self.body.reduce(0) { $0 + $1.readableBytes })
        for var part in self.body { all.writeBuffer(&part) }
        self.send(status: .ok, headers: headers, buffer: all, context: context)
      }
    default:
      self.send(status: .ok, headers: headers, body: "\(self.revision)\n", context: context)
    }
  }

  private func send(status: HTTPResponseStatus, headers: HTTPHeaders, body: String, context: ChannelHandlerContext) {
    self.send(
      status: status, headers: headers, buffer: context.channel.allocator.buffer(string: body), context: context)
  }

  private func send(
    status: HTTPResponseStatus, headers: HTTPHeaders, buffer: ByteBuffer, context: ChannelHandlerContext
  ) {
    var headers = headers
    headers.add(name: "content-length", value: String(buffer.readableBytes))
    context.write(
      self.wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers))), promise: nil)
    context.write(self.wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
    context.writeAndFlush(self.wrapOutboundOut(.end(nil)), promise: nil)
  }
}

// MARK: - Client

struct LBTestResponse: Sendable {
  var status: HTTPResponseStatus
  var headers: HTTPHeaders
  var body: ByteBuffer
  /// Whether a `100 Continue` arrived before the final response.
  var sawContinue: Bool

  var bodyString: String { String(buffer: self.body) }
  /// The `x-teal-revision` header; nil when missing or empty (no revision was chosen).
  var revision: String? { self.headers.first(name: "x-teal-revision").flatMap { $0.isEmpty ? nil : $0 } }
  var generation: UInt64? { self.headers.first(name: "x-teal-generation").flatMap { UInt64($0) } }
}

struct LBTestClientError: Error, CustomStringConvertible {
  var description: String
}

/// A keep-alive HTTP/1.1 client on one connection; requests are sent one at a time.
final class LBTestHTTPClient: Sendable {
  let channel: any Channel

  private init(channel: any Channel) {
    self.channel = channel
  }

  static func connect(port: Int, group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) async throws
    -> LBTestHTTPClient
  {
    let channel = try await ClientBootstrap(group: group)
      .channelOption(.socketOption(.tcp_nodelay), value: 1)
      .channelInitializer { channel in
        channel.eventLoop.makeCompletedFuture {
          try channel.pipeline.syncOperations.addHandlers([
            HTTPRequestEncoder(),
            ByteToMessageHandler(
              HTTPResponseDecoder(leftOverBytesStrategy: .dropBytes, informationalResponseStrategy: .forward)),
            ClientHandler(),
          ])
        }
      }
      .connect(host: "127.0.0.1", port: port)
      .get()
    return LBTestHTTPClient(channel: channel)
  }

  /// Sends one request and waits for the complete response. With `waitForContinue`, the body is sent
  /// only after the server answered `100 Continue`.
  func request(
    _ method: HTTPMethod = .GET, _ uri: String = "/", headers: [(String, String)] = [], body: [ByteBuffer] = [],
    waitForContinue: Bool = false
  ) async throws -> LBTestResponse {
    var httpHeaders = HTTPHeaders([("host", "teal.test")])
    for (name, value) in headers { httpHeaders.add(name: name, value: value) }
    if !body.isEmpty, !httpHeaders.contains(name: "transfer-encoding"), !httpHeaders.contains(name: "content-length") {
      httpHeaders.add(name: "content-length", value: String(body.reduce(0) { $0 + $1.readableBytes }))
    }
    let promise = self.channel.eventLoop.makePromise(of: LBTestResponse.self)
    let request = ClientRequest(
      head: HTTPRequestHead(version: .http1_1, method: method, uri: uri, headers: httpHeaders), body: body,
      waitForContinue: waitForContinue, promise: promise)
    self.channel.writeAndFlush(request).whenFailure { promise.fail($0) }
    return try await promise.futureResult.get()
  }

  /// Sends `count` GET requests, keeping `depth` of them pipelined on the connection, driven from the
  /// event loop (no task hop per request). Returns how many responses each revision served; a non-200
  /// response counts under "status <code>".
  func repeatGET(_ uri: String = "/", count: Int, depth: Int = 4) async throws -> [String: Int] {
    let promise = self.channel.eventLoop.makePromise(of: [String: Int].self)
    let loop = self.channel.eventLoop
    let channel = self.channel
    let head = HTTPRequestHead(version: .http1_1, method: .GET, uri: uri, headers: ["host": "teal.test"])
    loop.execute {
      let counts = NIOLoopBoundBox([String: Int](), eventLoop: loop)
      let unsent = NIOLoopBoundBox(count, eventLoop: loop)
      let unanswered = NIOLoopBoundBox(count, eventLoop: loop)
      @Sendable func send() {
        guard unsent.value > 0 else { return }
        unsent.value -= 1
        let responsePromise = loop.makePromise(of: LBTestResponse.self)
        channel.writeAndFlush(ClientRequest(head: head, body: [], waitForContinue: false, promise: responsePromise))
          .whenFailure { responsePromise.fail($0) }
        responsePromise.futureResult.whenComplete { result in
          switch result {
          case .success(let response):
            let key = response.status == .ok ? (response.revision ?? "none") : "status \(response.status.code)"
            counts.value[key, default: 0] += 1
            unanswered.value -= 1
            if unanswered.value == 0 { promise.succeed(counts.value) } else { send() }
          case .failure(let error):
            promise.fail(error)
          }
        }
      }
      if count == 0 { promise.succeed([:]) }
      for _ in 0..<min(depth, count) { send() }
    }
    return try await promise.futureResult.get()
  }

  func close() async {
    try? await self.channel.close()
  }
}

private struct ClientRequest: Sendable {
  var head: HTTPRequestHead
  var body: [ByteBuffer]
  var waitForContinue: Bool
  var promise: EventLoopPromise<LBTestResponse>
}

private final class ClientHandler: ChannelDuplexHandler {
  typealias InboundIn = HTTPClientResponsePart
  typealias OutboundIn = ClientRequest
  typealias OutboundOut = HTTPClientRequestPart

  private var pending: [ClientRequest] = []
  private var heldBody: ClientRequest?
  private var head: HTTPResponseHead?
  private var body = ByteBuffer()
  private var sawContinue = false

  func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
    let request = self.unwrapOutboundIn(data)
    self.pending.append(request)
    context.write(self.wrapOutboundOut(.head(request.head)), promise: nil)
    if request.waitForContinue {
      self.heldBody = request
      context.flush()
      promise?.succeed()
      return
    }
    self.writeBody(request, context: context, promise: promise)
  }

  private func writeBody(_ request: ClientRequest, context: ChannelHandlerContext, promise: EventLoopPromise<Void>?) {
    for part in request.body { context.write(self.wrapOutboundOut(.body(.byteBuffer(part))), promise: nil) }
    context.writeAndFlush(self.wrapOutboundOut(.end(nil)), promise: promise)
  }

  func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    switch self.unwrapInboundIn(data) {
    case .head(let head) where head.status == .continue:
      self.sawContinue = true
      if let held = self.heldBody {
        self.heldBody = nil
        self.writeBody(held, context: context, promise: nil)
      }
    case .head(let head):
      self.head = head
      self.body = context.channel.allocator.buffer(capacity: 0)
    case .body(var buffer):
      self.body.writeBuffer(&buffer)
    case .end:
      guard let head = self.head, !self.pending.isEmpty else { return }
      let request = self.pending.removeFirst()
      self.head = nil
      let response = LBTestResponse(
        status: head.status, headers: head.headers, body: self.body, sawContinue: self.sawContinue)
      self.sawContinue = false
      request.promise.succeed(response)
    }
  }

  func channelInactive(context: ChannelHandlerContext) {
    let pending = self.pending
    self.pending = []
    for request in pending {
      request.promise.fail(LBTestClientError(description: "connection closed before a response"))
    }
    context.fireChannelInactive()
  }

  func errorCaught(context: ChannelHandlerContext, error: Error) {
    context.close(promise: nil)
  }
}

// MARK: - Helpers

/// Polls `condition` every 10 ms until it holds or `timeout` passes; returns whether it held.
func lbEventually(timeout: Duration = .seconds(5), _ condition: () async throws -> Bool) async rethrows -> Bool {
  let deadline = ContinuousClock.now + timeout
  while ContinuousClock.now < deadline {
    if try await condition() { return true }
    try? await Task.sleep(for: .milliseconds(10))
  }
  return try await condition()
}

/// Health checks fast enough for tests: a probe every 100 ms, a target down after 2 failures.
///
/// The timeout is the production default (2 s), not shorter. A probe runs on the proxy's event loops,
/// and on a loaded 2-core machine, with the whole suite in one process, those loops get little CPU: a
/// 500 ms timeout then failed twice in a row for a healthy target, the proxy rightly answered 503 (no
/// revision) and the weight-switch test failed. Detection in these tests never waits for a timeout: a
/// killed target refuses the connect, an unhealthy one answers 503.
let lbFastHealthCheck = HealthCheckConfiguration(
  probe: .http(path: "/health"), interval: .milliseconds(100), timeout: .seconds(2), healthyThreshold: 1,
  unhealthyThreshold: 2)

/// A service on ephemeral ports.
func lbTestService(_ name: String = "web", healthCheck: HealthCheckConfiguration = lbFastHealthCheck)
  -> ServiceConfiguration
{
  ServiceConfiguration(name: name, listenHost: "127.0.0.1", productionPort: 0, testPort: 0, healthCheck: healthCheck)
}
