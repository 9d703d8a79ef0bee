// One health probe (HTTP GET or TCP connect) over SwiftNIO, bounded by a timeout as a whole.

import NIOCore
import NIOHTTP1
import NIOPosix

#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

/// Runs single health probes. Every probe opens a fresh connection, sends at most one request with
/// `Connection: close`, and is bounded by `timeout` as a whole (connect, request, response head).
public struct HealthProber: Sendable {
  public let group: any EventLoopGroup

  public init(group: any EventLoopGroup) {
    self.group = group
  }

  /// Probes `host:port` once. Returns nil when the probe passed (``HealthRule``), or why it failed
  /// ("GET /health answered 503", "cannot connect to 127.0.0.1:8080: Connection refused", ...).
  /// Never throws.
  public func probe(_ probe: HealthProbe, host: String, port: Int, timeout: Duration) async -> String? {
    let eventLoop = self.group.next()
    let promise = eventLoop.makePromise(of: Void.self)
    let timeoutAmount = TimeAmount.nanoseconds(
      Int64(timeout.components.seconds) * 1_000_000_000 + timeout.components.attoseconds / 1_000_000_000)
    let request: HTTPRequestHead?
    switch probe {
    case .tcp:
      request = nil
    case .http(let value):
      let path = value.hasPrefix("/") ? value : "/" + value
      var head = HTTPRequestHead(version: .http1_1, method: .GET, uri: path)
      head.headers.add(name: "host", value: "\(host):\(port)")
      head.headers.add(name: "user-agent", value: "teal-health-check")
      head.headers.add(name: "connection", value: "close")
      request = head
    }
    let bootstrap = ClientBootstrap(group: eventLoop)
      .connectTimeout(timeoutAmount)
      .channelInitializer { channel in
        channel.eventLoop.makeCompletedFuture {
          if let request {
            try channel.pipeline.syncOperations.addHTTPClientHandlers()
            try channel.pipeline.syncOperations.addHandler(HTTPProbeHandler(request: request, promise: promise))
          }
        }
      }
    let timer = eventLoop.scheduleTask(in: timeoutAmount) {
      promise.fail(ProbeFailure("no answer within \(timeout)"))
    }
    // An IP literal (the usual case: task addresses) is connected to directly; only a host name
    // goes through NIO's resolver (getaddrinfo on another thread).
    let connecting: EventLoopFuture<any Channel>
    if let address = try? SocketAddress(ipAddress: host, port: port) {
      connecting = bootstrap.connect(to: address)
    } else {
      connecting = bootstrap.connect(host: host, port: port)
    }
    connecting.whenComplete { result in
      switch result {
      case .success(let channel):
        if request == nil { promise.succeed(()) }
        promise.futureResult.whenComplete { _ in channel.close(promise: nil) }
      case .failure(let error):
        promise.fail(ProbeFailure("cannot connect to \(host):\(port): \(Self.describe(error))"))
      }
    }
    defer { timer.cancel() }
    do {
      try await promise.futureResult.get()
      return nil
    } catch let failure as ProbeFailure {
      return failure.reason
    } catch {
      return "\(error)"
    }
  }

  /// A short reason for a connect failure ("Connection refused" rather than NIO's nested dump).
  static func describe(_ error: any Error) -> String {
    if let connection = error as? NIOConnectionError, let first = connection.connectionErrors.first {
      return describe(first.error)
    }
    if let io = error as? IOError {
      return String(cString: strerror(io.errnoCode))
    }
    if let channelError = error as? ChannelError, case .connectTimeout = channelError {
      return "connect timed out"
    }
    return "\(error)"
  }
}

/// Why one probe failed, in words.
private struct ProbeFailure: Error {
  var reason: String
  init(_ reason: String) { self.reason = reason }
}

/// Sends the GET on activation and completes the promise by ``HealthRule``.
private final class HTTPProbeHandler: ChannelInboundHandler {
  typealias InboundIn = HTTPClientResponsePart
  typealias OutboundOut = HTTPClientRequestPart

  private let request: HTTPRequestHead
  private let promise: EventLoopPromise<Void>

  init(request: HTTPRequestHead, promise: EventLoopPromise<Void>) {
    self.request = request
    self.promise = promise
  }

  func channelActive(context: ChannelHandlerContext) {
    context.write(self.wrapOutboundOut(.head(self.request)), promise: nil)
    context.writeAndFlush(self.wrapOutboundOut(.end(nil)), promise: nil)
    context.fireChannelActive()
  }

  func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    guard case .head(let head) = self.unwrapInboundIn(data) else { return }
    if HealthRule.passes(httpStatus: Int(head.status.code)) {
      self.promise.succeed(())
    } else {
      self.promise.fail(ProbeFailure("GET \(self.request.uri) answered \(head.status.code)"))
    }
  }

  func channelInactive(context: ChannelHandlerContext) {
    self.promise.fail(ProbeFailure("connection closed before a response to GET \(self.request.uri)"))
    context.fireChannelInactive()
  }

  func errorCaught(context: ChannelHandlerContext, error: any Error) {
    self.promise.fail(ProbeFailure("GET \(self.request.uri) failed: \(error)"))
    context.close(promise: nil)
  }
}
