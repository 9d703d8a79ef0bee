// One active health probe of one target: an HTTP GET or a TCP connect, bounded by a timeout.

import NIOCore
import NIOHTTP1
import NIOPosix

enum HealthProbe {
  /// Probes `target` once; true when it passed within `timeout`. Never throws: every failure is a
  /// failed probe.
  static func run(
    _ target: TargetAddress, probe: HealthCheckConfiguration.Probe, timeout: TimeAmount, on eventLoop: any EventLoop
  ) async -> Bool {
    let verdict = eventLoop.makePromise(of: Bool.self)
    let timer = eventLoop.scheduleTask(in: timeout) { verdict.succeed(false) }
    let path: String?
    switch probe {
    case .http(let value): path = value.hasPrefix("/") ? value : "/" + value
    case .tcp: path = nil
    }
    let hostHeader = "\(target.host):\(target.port)"
    let connected = ClientBootstrap(group: eventLoop)
      .connectTimeout(timeout)
      .channelInitializer { channel in
        channel.eventLoop.makeCompletedFuture {
          guard let path else { return }
          try channel.pipeline.syncOperations.addHTTPClientHandlers()
          try channel.pipeline.syncOperations.addHandler(
            ProbeHandler(path: path, host: hostHeader, verdict: verdict))
        }
      }
      .connect(to: target)
    connected.whenComplete { result in
      switch result {
      case .success(let channel):
        if path == nil {
          verdict.succeed(true)
          channel.close(promise: nil)
        } else {
          verdict.futureResult.whenComplete { _ in channel.close(promise: nil) }
        }
      case .failure:
        verdict.succeed(false)
      }
    }
    let passed = (try? await verdict.futureResult.get()) ?? false
    timer.cancel()
    return passed
  }
}

/// Sends `GET path` when the connection opens and passes on a 2xx or 3xx status.
private final class ProbeHandler: ChannelInboundHandler, RemovableChannelHandler {
  typealias InboundIn = HTTPClientResponsePart
  typealias OutboundOut = HTTPClientRequestPart

  private let path: String
  private let host: String
  private let verdict: EventLoopPromise<Bool>

  init(path: String, host: String, verdict: EventLoopPromise<Bool>) {
    self.path = path
    self.host = host
    self.verdict = verdict
  }

  func channelActive(context: ChannelHandlerContext) {
    var headers = HTTPHeaders()
    headers.add(name: "host", value: self.host)
    headers.add(name: "user-agent", value: "teal-health-check")
    headers.add(name: "connection", value: "close")
    let head = HTTPRequestHead(version: .http1_1, method: .GET, uri: self.path, headers: headers)
    context.write(self.wrapOutboundOut(.head(head)), promise: nil)
    context.writeAndFlush(self.wrapOutboundOut(.end(nil)), promise: nil)
    context.fireChannelActive()
  }

  func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    if case .head(let head) = self.unwrapInboundIn(data) {
      self.verdict.succeed((200..<400).contains(Int(head.status.code)))
    }
  }

  func channelInactive(context: ChannelHandlerContext) {
    self.verdict.succeed(false)
    context.fireChannelInactive()
  }

  func errorCaught(context: ChannelHandlerContext, error: Error) {
    self.verdict.succeed(false)
    context.close(promise: nil)
  }
}
