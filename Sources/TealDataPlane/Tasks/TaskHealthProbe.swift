// One health probe (HTTP GET or TCP connect) over SwiftNIO, and the pure threshold tracker.

import NIOCore
import NIOHTTP1
import NIOPosix

#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

// MARK: - Probe

/// Runs single health probes against `host:port`. Every probe opens a fresh connection, sends at
/// most one request with `Connection: close`, and is bounded by `timeout` as a whole (connect,
/// request and response head).
struct TaskHealthProber: Sendable {
  let group: any EventLoopGroup

  /// Returns nil when the probe passed, or why it failed.
  func probe(_ probe: TaskHealthCheck.Probe, host: String, port: Int, timeout: Duration) async -> String? {
    let promise = group.next().makePromise(of: Void.self)
    let timeoutAmount = TimeAmount.nanoseconds(
      Int64(timeout.components.seconds) * 1_000_000_000
        + timeout.components.attoseconds / 1_000_000_000)
    let request: HTTPRequestHead?
    switch probe {
    case .tcp:
      request = nil
    case .http(let path):
      var head = HTTPRequestHead(version: .http1_1, method: .GET, uri: path)
      head.headers.add(name: "Host", value: "\(host):\(port)")
      head.headers.add(name: "User-Agent", value: "teal-health-check")
      head.headers.add(name: "Connection", value: "close")
      request = head
    }
    let bootstrap = ClientBootstrap(group: promise.futureResult.eventLoop)
      .connectTimeout(timeoutAmount)
      .channelInitializer { channel in
        channel.eventLoop.makeCompletedFuture {
          if let request {
            try channel.pipeline.syncOperations.addHTTPClientHandlers()
            try channel.pipeline.syncOperations.addHandler(TaskHTTPProbeHandler(request: request, promise: promise))
          }
        }
      }
    let timer = promise.futureResult.eventLoop.scheduleTask(in: timeoutAmount) {
      promise.fail(TaskProbeFailure("no answer within \(timeout)"))
    }
    bootstrap.connect(host: host, port: port).whenComplete { result in
      switch result {
      case .success(let channel):
        if request == nil {
          promise.succeed(())
        }
        promise.futureResult.whenComplete { _ in channel.close(promise: nil) }
      case .failure(let error):
        promise.fail(TaskProbeFailure("cannot connect to \(host):\(port): \(Self.describe(error))"))
      }
    }
    do {
      try await promise.futureResult.get()
      timer.cancel()
      return nil
    } catch let failure as TaskProbeFailure {
      timer.cancel()
      return failure.reason
    } catch {
      timer.cancel()
      return "\(error)"
    }
  }
}

extension TaskHealthProber {
  /// A short reason for a connect failure ("Connection refused" rather than NIO's nested dump).
  fileprivate static func describe(_ error: any Error) -> String {
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

/// Why one probe failed, in words for the `unhealthy` state.
private struct TaskProbeFailure: Error {
  var reason: String
  init(_ reason: String) { self.reason = reason }
}

/// Sends the GET on activation and completes the promise with the response status.
private final class TaskHTTPProbeHandler: ChannelInboundHandler {
  typealias InboundIn = HTTPClientResponsePart
  typealias OutboundOut = HTTPClientRequestPart

  private let request: HTTPRequestHead
  private let promise: EventLoopPromise<Void>

  init(request: HTTPRequestHead, promise: EventLoopPromise<Void>) {
    self.request = request
    self.promise = promise
  }

  func channelActive(context: ChannelHandlerContext) {
    context.write(wrapOutboundOut(.head(request)), promise: nil)
    context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
    context.fireChannelActive()
  }

  func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    if case .head(let head) = unwrapInboundIn(data) {
      if (200..<300).contains(head.status.code) {
        promise.succeed(())
      } else {
        promise.fail(TaskProbeFailure("GET \(request.uri) answered \(head.status.code)"))
      }
    }
  }

  func channelInactive(context: ChannelHandlerContext) {
    promise.fail(TaskProbeFailure("connection closed before a response to GET \(request.uri)"))
    context.fireChannelInactive()
  }

  func errorCaught(context: ChannelHandlerContext, error: any Error) {
    promise.fail(TaskProbeFailure("GET \(request.uri) failed: \(error)"))
    context.close(promise: nil)
  }
}

// MARK: - Thresholds (pure)

/// Turns probe results into health transitions; a pure value, no clock reads.
///
/// Invariants: `status` changes to `.healthy` only after `healthyThreshold` consecutive passes and
/// to `.unhealthy` only after `unhealthyThreshold` consecutive failures that were not excused by the
/// start period (which ends early at the first pass, as in ECS); a pass resets the failure count and a failure resets the pass count.
struct TaskHealthTracker: Sendable, Hashable {
  enum Status: Sendable, Hashable {
    case starting
    case healthy
    case unhealthy
  }

  let healthyThreshold: Int
  let unhealthyThreshold: Int
  private(set) var status: Status = .starting
  private(set) var consecutivePasses = 0
  private(set) var consecutiveFailures = 0
  /// True once any probe passed; from then on the start period no longer excuses failures (ECS).
  private(set) var hasPassed = false

  init(healthyThreshold: Int, unhealthyThreshold: Int) {
    self.healthyThreshold = healthyThreshold
    self.unhealthyThreshold = unhealthyThreshold
  }

  /// Records one probe; returns the new status when it changed.
  mutating func record(passed: Bool, inStartPeriod: Bool) -> Status? {
    if passed {
      hasPassed = true
      consecutiveFailures = 0
      consecutivePasses += 1
      if status != .healthy && consecutivePasses >= healthyThreshold {
        status = .healthy
        return .healthy
      }
    } else {
      consecutivePasses = 0
      if inStartPeriod && !hasPassed { return nil }
      consecutiveFailures += 1
      if status != .unhealthy && consecutiveFailures >= unhealthyThreshold {
        status = .unhealthy
        return .unhealthy
      }
    }
    return nil
  }
}
