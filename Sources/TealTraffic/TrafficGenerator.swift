// The traffic generator: keep-alive HTTP/1.1 clients against listeners, GET and POST with a body,
// every request recorded.

import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix

/// What a ``TrafficGenerator`` sends. Every bound is checked by ``validate()``.
public struct TrafficConfiguration: Sendable {
  /// The listeners (host and port); each gets ``clientsPerTarget`` clients of its own.
  public var targets: [TrafficTarget]
  /// Keep-alive clients per target, each with at most one request in flight (1...512).
  public var clientsPerTarget: Int
  /// Share of requests that are POSTs with a body (0...1); the rest are GETs. The mix is
  /// deterministic per client: after n requests, exactly `floor(n * postFraction)` were POSTs.
  public var postFraction: Double
  public var getPath: String
  public var postPath: String
  /// Size of each POST body in bytes (0...16 MiB).
  public var bodyBytes: Int
  /// Requests per second per client (nil: as fast as responses come).
  public var requestsPerSecondPerClient: Double?
  /// Each client stops after this many requests (nil: no limit).
  public var maximumRequestsPerClient: Int?
  /// The generator stops by itself this long after ``TrafficGenerator/start()`` (1 ms...24 h).
  public var maximumDuration: Duration
  /// A request without a complete response by then fails as ``TrafficFailure/timeout``.
  public var requestTimeout: Duration
  public var connectTimeout: Duration
  /// Pause after a failed connect before the client tries again (so that a dead listener costs
  /// at most one failed request per client per pause).
  public var reconnectDelay: Duration
  /// Records kept (the most recent ones; 1...10,000,000). Counts stay exact beyond it.
  public var maximumRecords: Int
  /// Extra headers on every request.
  public var headers: [(String, String)]

  public static let clientsRange = 1...512
  public static let bodyBytesRange = 0...(16 * 1024 * 1024)
  public static let recordsRange = 1...10_000_000

  public init(
    targets: [TrafficTarget], clientsPerTarget: Int = 4, postFraction: Double = 0.5, getPath: String = "/",
    postPath: String = "/", bodyBytes: Int = 1024, requestsPerSecondPerClient: Double? = nil,
    maximumRequestsPerClient: Int? = nil, maximumDuration: Duration = .seconds(60),
    requestTimeout: Duration = .seconds(5), connectTimeout: Duration = .seconds(2),
    reconnectDelay: Duration = .milliseconds(50), maximumRecords: Int = 100_000, headers: [(String, String)] = []
  ) {
    self.targets = targets
    self.clientsPerTarget = clientsPerTarget
    self.postFraction = postFraction
    self.getPath = getPath
    self.postPath = postPath
    self.bodyBytes = bodyBytes
    self.requestsPerSecondPerClient = requestsPerSecondPerClient
    self.maximumRequestsPerClient = maximumRequestsPerClient
    self.maximumDuration = maximumDuration
    self.requestTimeout = requestTimeout
    self.connectTimeout = connectTimeout
    self.reconnectDelay = reconnectDelay
    self.maximumRecords = maximumRecords
    self.headers = headers
  }

  /// Names the first field out of its bounds.
  public func validate() throws(TrafficConfigurationError) {
    if targets.isEmpty { throw .init(field: "targets", "give at least one host:port") }
    if Set(targets).count != targets.count { throw .init(field: "targets", "a target is listed twice") }
    for target in targets where !(1...65_535).contains(target.port) {
      throw .init(field: "targets", "\(target): port must be in 1...65535")
    }
    if !Self.clientsRange.contains(clientsPerTarget) {
      throw .init(field: "clientsPerTarget", "must be in 1...512, got \(clientsPerTarget)")
    }
    if !(0...1).contains(postFraction) { throw .init(field: "postFraction", "must be in 0...1, got \(postFraction)") }
    for (field, path) in [("getPath", getPath), ("postPath", postPath)] where !path.hasPrefix("/") {
      throw .init(field: field, "must start with /, got '\(path)'")
    }
    if !Self.bodyBytesRange.contains(bodyBytes) {
      throw .init(field: "bodyBytes", "must be in 0...16777216, got \(bodyBytes)")
    }
    if let rate = requestsPerSecondPerClient, !(rate > 0 && rate <= 100_000) {
      throw .init(field: "requestsPerSecondPerClient", "must be in (0, 100000], got \(rate)")
    }
    if let limit = maximumRequestsPerClient, limit < 0 {
      throw .init(field: "maximumRequestsPerClient", "must not be negative, got \(limit)")
    }
    if maximumDuration < .milliseconds(1) || maximumDuration > .seconds(86_400) {
      throw .init(field: "maximumDuration", "must be in 1ms...24h, got \(maximumDuration)")
    }
    for (field, value) in [
      ("requestTimeout", requestTimeout), ("connectTimeout", connectTimeout),
    ] where value < .milliseconds(1) || value > .seconds(3600) {
      throw .init(field: field, "must be in 1ms...1h, got \(value)")
    }
    if reconnectDelay < .zero || reconnectDelay > .seconds(60) {
      throw .init(field: "reconnectDelay", "must be in 0...60s, got \(reconnectDelay)")
    }
    if !Self.recordsRange.contains(maximumRecords) {
      throw .init(field: "maximumRecords", "must be in 1...10000000, got \(maximumRecords)")
    }
  }
}

/// A traffic configuration out of bounds; names the field.
public struct TrafficConfigurationError: Error, Sendable, Hashable, CustomStringConvertible {
  public var field: String
  public var reason: String
  init(field: String, _ reason: String) {
    self.field = field
    self.reason = reason
  }
  public var description: String { "traffic: \(field): \(reason)" }
}

/// Sends traffic to a set of listeners until stopped, until its ``TrafficConfiguration/maximumDuration``,
/// or until every client sent its ``TrafficConfiguration/maximumRequestsPerClient``.
///
/// Each client holds one keep-alive connection and one request in flight at a time. When its
/// connection closes (the server closed it, `Connection: close`, or a failure) the client opens a
/// new one before its next request. A request is counted as failed only when it was sent and got
/// no complete response, or could not be sent because connecting failed.
///
/// ``stop()`` lets every in-flight request finish (each is bounded by the request timeout), so
/// stopping adds no failures; it returns within `connectTimeout + requestTimeout` plus scheduling.
public final class TrafficGenerator: Sendable {
  public let configuration: TrafficConfiguration
  private let group: any EventLoopGroup
  private let recorder: TrafficRecorder
  private let runner: NIOLockedValueBox<Task<Void, Never>?>
  private let stopping: NIOLockedValueBox<Bool>
  private let body: [UInt8]

  public init(
    configuration: TrafficConfiguration, group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
  ) throws(TrafficConfigurationError) {
    try configuration.validate()
    self.configuration = configuration
    self.group = group
    recorder = TrafficRecorder(capacity: configuration.maximumRecords, targets: configuration.targets)
    runner = NIOLockedValueBox(nil)
    stopping = NIOLockedValueBox(false)
    body = (0..<configuration.bodyBytes).map { UInt8(truncatingIfNeeded: 0x61 + $0 % 26) }
  }

  /// Starts every client. Call once.
  public func start() {
    let deadline = ContinuousClock.now + configuration.maximumDuration
    let task = Task { [self] in
      await withTaskGroup(of: Void.self) { group in
        for target in configuration.targets {
          for client in 0..<configuration.clientsPerTarget {
            group.addTask { await self.runClient(target: target, client: client, deadline: deadline) }
          }
        }
      }
    }
    runner.withLockedValue {
      precondition($0 == nil, "TrafficGenerator.start() is called once")
      $0 = task
    }
  }

  /// Stops every client after its in-flight request and waits until all have stopped.
  public func stop() async {
    stopping.withLockedValue { $0 = true }
    await wait()
  }

  /// Waits until every client stopped (by ``stop()``, its request limit or the maximum duration).
  public func wait() async {
    guard let task = runner.withLockedValue({ $0 }) else { return }
    await task.value
  }

  /// The records kept and the exact counts so far.
  public func snapshot() -> TrafficSnapshot { recorder.snapshot() }

  private var isStopping: Bool { stopping.withLockedValue { $0 } }

  // MARK: - One client

  private func runClient(target: TrafficTarget, client: Int, deadline: ContinuousClock.Instant) async {
    let clock = ContinuousClock()
    let start = clock.now
    var connection: HTTPConnection?
    var connectionID: Int?
    var sent = 0
    var postCredit = 0.0
    while !isStopping, clock.now < deadline {
      if let limit = configuration.maximumRequestsPerClient, sent >= limit { break }
      if let rate = configuration.requestsPerSecondPerClient {
        let due = start + .nanoseconds(Int64(Double(sent) / rate * 1e9))
        if due > clock.now {
          let wake = min(due, deadline)
          // Sleep in short steps so that stop() is honoured promptly.
          while clock.now < wake, !isStopping {
            try? await Task.sleep(until: min(wake, clock.now + .milliseconds(20)), clock: clock)
          }
          if isStopping || clock.now >= deadline { break }
        }
      }
      postCredit += configuration.postFraction
      let isPost = postCredit >= 1 - 1e-9
      if isPost { postCredit -= 1 }
      let method: HTTPMethod = isPost ? .POST : .GET
      sent += 1

      let startedAt = clock.now
      let wall = wallClockNanoseconds()
      recorder.requestStarted()
      var outcome: TrafficOutcome
      var response: HTTPResponse?
      if connection == nil || connection?.isOpen == false {
        if let old = connection { await old.close() }
        connection = nil
        connectionID = nil
        do {
          let opened = try await HTTPConnection.connect(
            host: target.host, port: target.port, timeout: configuration.connectTimeout, group: group)
          connection = opened
          connectionID = recorder.connectionOpened(target)
        } catch {
          outcome = .failure(error)
          finish(target, client, nil, method, startedAt, wall, outcome, nil, clock)
          try? await Task.sleep(for: configuration.reconnectDelay)
          continue
        }
      }
      guard let open = connection else { preconditionFailure("a client sends only over an open connection") }
      do {
        let answer = try await open.request(
          method: method, path: isPost ? configuration.postPath : configuration.getPath,
          headers: isPost
            ? [("content-type", "application/octet-stream")] + configuration.headers
            : configuration.headers,
          body: isPost ? body : nil, timeout: configuration.requestTimeout)
        outcome = .status(answer.status)
        response = answer
      } catch {
        outcome = .failure(error)
      }
      finish(target, client, connectionID, method, startedAt, wall, outcome, response, clock)
    }
    if let connection { await connection.close() }
  }

  private func finish(
    _ target: TrafficTarget, _ client: Int, _ connection: Int?, _ method: HTTPMethod,
    _ startedAt: ContinuousClock.Instant, _ wall: Int64, _ outcome: TrafficOutcome, _ response: HTTPResponse?,
    _ clock: ContinuousClock
  ) {
    let latency = clock.now - startedAt
    recorder.requestFinished { sequence in
      TrafficRecord(
        sequence: sequence, target: target, client: client, connection: connection, method: method.rawValue,
        startedAt: startedAt, startedAtWallNanoseconds: wall, outcome: outcome, latency: latency,
        revision: response?.header("x-teal-revision"),
        generation: response?.header("x-teal-generation").flatMap { Int($0) },
        node: response?.header("x-teal-node"))
    }
  }
}
