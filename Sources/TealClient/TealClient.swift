import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import TealAPI

/// How a ``TealClient`` talks to the cluster. Every bound is here.
public struct TealClientConfiguration: Sendable {
  /// The nodes to talk to; any node accepts any request. Tried in order, starting with the last one
  /// that answered.
  public var endpoints: [Endpoint]
  /// The bearer token (`<dir>/token` or `TEAL_TOKEN`); sent on every request.
  public var token: String?
  /// Bound on establishing one connection.
  public var connectTimeout: Duration = .seconds(2)
  /// Bound on one attempt: from sending the request to the end of a buffered answer, or to the head
  /// of a streamed one.
  public var requestTimeout: Duration = .seconds(15)
  /// Bound on a whole call, retries and waits included.
  public var overallTimeout: Duration = .seconds(30)
  /// Attempts per call (the first included); at least 1.
  public var maxAttempts: Int = 6
  /// Delay before the second attempt; doubled per attempt up to `maxBackoff`, with jitter.
  public var initialBackoff: Duration = .milliseconds(100)
  public var maxBackoff: Duration = .seconds(2)
  /// Largest buffered answer body read; a larger one fails with ``TealClientError/responseTooLarge``.
  /// A streamed body has no total bound (it is read as it is consumed).
  public var maxResponseBytes: Int = 16 * 1024 * 1024
  /// Idle keep-alive connections kept per endpoint.
  public var maxIdleConnectionsPerEndpoint: Int = 4
  /// The connections' security: plain HTTP, or TLS pinning the cluster CA (``APITLSSecurity``).
  public var security: any ClientConnectionSecurity = PlaintextSecurity()

  public init(endpoints: [Endpoint], token: String? = nil) {
    self.endpoints = endpoints
    self.token = token
  }
}

/// One API request.
public struct TealRequest: Sendable {
  public enum Method: String, Sendable {
    case GET
    case POST
    case PUT
    case DELETE

    /// A write: carries an Idempotency-Key.
    public var isWrite: Bool { self != .GET }
  }

  public var method: Method
  /// Path and query, e.g. `/v1/tasks?service=web`.
  public var path: String
  public var body: Data?
  public var contentType: String?
  /// Sent on every attempt of a write; generated (a UUID) when nil.
  public var idempotencyKey: String?
  /// Extra headers.
  public var headers: [(name: String, value: String)]
  /// Error statuses returned as answers instead of thrown (and, for 503, instead of retried).
  public var acceptedStatuses: Set<Int> = []

  public init(
    method: Method, path: String, body: Data? = nil, contentType: String? = nil, idempotencyKey: String? = nil,
    headers: [(name: String, value: String)] = []
  ) {
    self.method = method
    self.path = path
    self.body = body
    self.contentType = contentType
    self.idempotencyKey = idempotencyKey
    self.headers = headers
  }
}

/// A buffered answer.
public struct TealResponse: Sendable {
  public var status: Int
  /// Header names lowercased; repeated headers joined with ", ".
  public var headers: [String: String]
  public var body: Data
  /// The endpoint that answered.
  public var endpoint: Endpoint

  /// `x-teal-node`: the node that answered.
  public var node: String? { headers[APIHeader.node] }
  /// `x-teal-leader`, when the answering node knew the leader.
  public var leader: String? { headers[APIHeader.leader] }

  /// The body as a `T`, or ``TealClientError/invalidResponse`` naming what did not decode.
  public func decode<T: Decodable>(_ type: T.Type) throws(TealClientError) -> T {
    do {
      return try TealJSON.decode(type, from: body)
    } catch {
      throw .invalidResponse(endpoint: endpoint.description, reason: "the body is not a \(T.self): \(error)")
    }
  }
}

/// A streamed answer: the head, and the body as an AsyncSequence of chunks.
public struct TealStreamingResponse: Sendable {
  public var status: Int
  public var headers: [String: String]
  public var endpoint: Endpoint
  public var body: ResponseBodyStream
}

/// The chunks of a streamed body, as they arrive. Iterate it once. Reading stops at the end of the
/// body, then the connection is reused; abandoning the stream closes its connection.
public struct ResponseBodyStream: AsyncSequence, Sendable {
  public typealias Element = [UInt8]

  final class State: Sendable {
    let connection: HTTPConnection
    let release: @Sendable (HTTPConnection, Bool) -> Void
    let keepAlive: Bool
    let finished = NIOLockedValueBox(false)

    init(connection: HTTPConnection, keepAlive: Bool, release: @escaping @Sendable (HTTPConnection, Bool) -> Void) {
      self.connection = connection
      self.keepAlive = keepAlive
      self.release = release
    }

    func finish(reusable: Bool) {
      let first = finished.withLockedValue { done in
        defer { done = true }
        return !done
      }
      if first { release(connection, reusable && keepAlive) }
    }

    deinit { finish(reusable: false) }
  }

  let state: State

  public struct AsyncIterator: AsyncIteratorProtocol {
    let state: State

    public mutating func next() async throws -> [UInt8]? {
      if state.finished.withLockedValue({ $0 }) { return nil }
      while true {
        let part: HTTPClientResponsePart
        do {
          part = try await withTaskCancellationHandler {
            try await state.connection.nextPart()
          } onCancel: { [state] in
            state.connection.close()
          }
        } catch {
          state.finish(reusable: false)
          if Task.isCancelled { throw CancellationError() }
          throw TealClientError.outcomeUnknown(
            endpoint: state.connection.endpoint.description, reason: "the stream broke: \(error)",
            idempotencyKey: nil)
        }
        switch part {
        case .head: continue
        case .body(let buffer):
          if buffer.readableBytes == 0 { continue }
          return Array(buffer.readableBytesView)
        case .end:
          state.finish(reusable: true)
          return nil
        }
      }
    }
  }

  public func makeAsyncIterator() -> AsyncIterator { AsyncIterator(state: state) }
}

/// An async client of Teal's HTTP API (NODE-CONTRACT): talks to any node, keeps one keep-alive
/// connection pool per endpoint, moves to another node when one refuses connections or answers 503,
/// and retries retryable failures with the same Idempotency-Key, within bounded attempts and time.
/// Follows no redirects. Call ``shutdown()`` when done to close idle connections.
public final class TealClient: Sendable {
  public let configuration: TealClientConfiguration
  private let group: any EventLoopGroup
  private let idle = NIOLockedValueBox([Endpoint: [HTTPConnection]]())
  /// Index of the endpoint that answered last.
  private let preferred = NIOLockedValueBox(0)

  public init(configuration: TealClientConfiguration, group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton)
  {
    precondition(configuration.maxAttempts >= 1, "TealClientConfiguration.maxAttempts must be at least 1")
    precondition(configuration.maxResponseBytes >= 0, "TealClientConfiguration.maxResponseBytes must be >= 0")
    self.configuration = configuration
    self.group = group
  }

  /// Closes the idle connections. Calls still running keep theirs until they end.
  public func shutdown() async {
    let connections = idle.withLockedValue { pool in
      defer { pool = [:] }
      return pool.values.flatMap { $0 }
    }
    for connection in connections { try? await connection.channel.close() }
  }

  // MARK: - Calls

  /// Sends `request` and reads the whole answer (bounded by `maxResponseBytes`). An error status
  /// throws ``TealClientError/server(status:endpoint:error:)``.
  public func send(_ request: TealRequest) async throws -> TealResponse {
    switch try await execute(request, streaming: false) {
    case .buffered(let response): return response
    case .streaming: preconditionFailure("TealClient: a buffered call produced a stream")
    }
  }

  /// Sends `request` and returns once the head of a successful answer arrived; the body streams.
  /// Retries happen only before the head; an error status is read whole and thrown.
  public func stream(_ request: TealRequest) async throws -> TealStreamingResponse {
    switch try await execute(request, streaming: true) {
    case .streaming(let response): return response
    case .buffered: preconditionFailure("TealClient: a streaming call produced a buffered answer")
    }
  }

  enum Outcome: Sendable {
    case buffered(TealResponse)
    case streaming(TealStreamingResponse)
  }

  /// Why one attempt failed.
  enum AttemptFailure: Error {
    /// Nothing was sent: move to another endpoint at once.
    case notSent(String)
    /// Sent, no complete answer.
    case unknown(String)
    /// A reused connection was closed by the server before this exchange got anything back:
    /// retry at once on a fresh connection (once per attempt).
    case staleConnection
    /// Not retryable; thrown as is.
    case final(TealClientError)
    /// 503: retry elsewhere after `retryAfter`.
    case unavailable(TealClientError, retryAfter: Duration?)
  }

  private func execute(_ original: TealRequest, streaming: Bool) async throws -> Outcome {
    let endpoints = configuration.endpoints
    guard !endpoints.isEmpty else { throw TealClientError.noEndpoints }
    for endpoint in endpoints where endpoint.scheme != configuration.security.scheme {
      throw TealClientError.invalidEndpoint(
        endpoint.description,
        reason: endpoint.scheme == .https
          ? "an https endpoint needs the cluster CA (APITLSSecurity; the CLI's --ca or <dir>/certs/ca.pem)"
          : "the client is configured for \(configuration.security.scheme.rawValue); give https:// endpoints")
    }
    var request = original
    if request.method.isWrite, request.idempotencyKey == nil { request.idempotencyKey = UUID().uuidString }
    let clock = ContinuousClock()
    let overallDeadline = clock.now + configuration.overallTimeout
    var index = preferred.withLockedValue { $0 } % endpoints.count
    var lastError: TealClientError?
    var sentTo: (endpoint: Endpoint, reason: String)?
    var refusedInARow = 0

    for attempt in 1...configuration.maxAttempts {
      let endpoint = endpoints[index]
      let attemptDeadline = min(overallDeadline, clock.now + configuration.requestTimeout)
      var delay: Duration = .zero
      do {
        var result: Outcome?
        do {
          result = try await once(request, endpoint: endpoint, deadline: attemptDeadline, streaming: streaming)
        } catch AttemptFailure.staleConnection {
          result = try await once(
            request, endpoint: endpoint, deadline: attemptDeadline, streaming: streaming, allowReuse: false)
        }
        preferred.withLockedValue { $0 = index }
        return result!
      } catch let failure as AttemptFailure {
        switch failure {
        case .final(let error):
          preferred.withLockedValue { $0 = index }
          throw error
        case .notSent(let reason):
          lastError = .notSent(endpoint: endpoint.description, reason: reason)
          refusedInARow += 1
          // Move on at once while some endpoint of this round is untried; back off after a round.
          if refusedInARow >= endpoints.count {
            delay = backoff(attempt)
            refusedInARow = 0
          }
        case .unknown(let reason):
          sentTo = (endpoint, reason)
          lastError = .outcomeUnknown(
            endpoint: endpoint.description, reason: reason, idempotencyKey: request.idempotencyKey)
          refusedInARow = 0
          delay = backoff(attempt)
        case .staleConnection:
          sentTo = (endpoint, "the kept-alive connection closed")
          lastError = .outcomeUnknown(
            endpoint: endpoint.description, reason: "the connection closed twice",
            idempotencyKey: request.idempotencyKey
          )
          delay = backoff(attempt)
        case .unavailable(let error, let retryAfter):
          lastError = error
          refusedInARow = 0
          delay = max(backoff(attempt), min(retryAfter ?? .zero, configuration.maxBackoff))
        }
      }
      try Task.checkCancellation()
      if attempt == configuration.maxAttempts || clock.now + delay >= overallDeadline { break }
      if delay > .zero { try await Task.sleep(for: delay) }
      index = (index + 1) % endpoints.count
    }
    throw finalError(lastError, sentTo: sentTo, key: request.idempotencyKey)
  }

  /// The error to report once retries are exhausted: once any attempt reached a node without an
  /// answer, the outcome is unknown, whatever the later attempts met.
  private func finalError(
    _ last: TealClientError?, sentTo: (endpoint: Endpoint, reason: String)?, key: String?
  ) -> TealClientError {
    switch last {
    case .notSent(let endpoint, let reason)?:
      if let sentTo {
        return .outcomeUnknown(
          endpoint: sentTo.endpoint.description,
          reason: "\(sentTo.reason); then no node could be reached (last \(endpoint): \(reason))", idempotencyKey: key)
      }
      return .notSent(endpoint: endpoint, reason: reason)
    case .server(503, let endpoint, let error)? where error.code == .outcomeUnknown:
      // The node itself could not tell whether the write took effect.
      return .outcomeUnknown(endpoint: endpoint, reason: error.message, idempotencyKey: key)
    case let error?: return error
    case nil: return .noEndpoints
    }
  }

  private func backoff(_ attempt: Int) -> Duration {
    let base = configuration.initialBackoff * (1 << min(attempt - 1, 16))
    let capped = min(base, configuration.maxBackoff)
    // Jitter: 50...100 % of the capped delay, so retrying clients spread out.
    return capped * Double.random(in: 0.5...1.0)
  }

  // MARK: - One attempt

  private func acquire(_ endpoint: Endpoint, allowReuse: Bool) async throws(AttemptFailure) -> HTTPConnection {
    if allowReuse {
      while let connection = idle.withLockedValue({ $0[endpoint]?.popLast() }) {
        if connection.isActive { return connection }
      }
    }
    do {
      return try await HTTPConnection.connect(
        to: endpoint, group: group, security: configuration.security,
        connectTimeout: .nanoseconds(configuration.connectTimeout.nanosecondsClamped))
    } catch {
      throw .notSent(Self.describeConnectError(error))
    }
  }

  private func release(_ connection: HTTPConnection, reusable: Bool) {
    guard reusable, connection.isActive else {
      connection.close()
      return
    }
    let kept = idle.withLockedValue { pool in
      var list = pool[connection.endpoint, default: []]
      guard list.count < configuration.maxIdleConnectionsPerEndpoint else { return false }
      list.append(connection)
      pool[connection.endpoint] = list
      return true
    }
    if !kept { connection.close() }
  }

  private func once(
    _ request: TealRequest, endpoint: Endpoint, deadline: ContinuousClock.Instant, streaming: Bool,
    allowReuse: Bool = true
  ) async throws -> Outcome {
    let connection = try await acquire(endpoint, allowReuse: allowReuse)
    let remaining = ContinuousClock.now.duration(to: deadline)
    let nioDeadline = NIODeadline.now() + .nanoseconds(max(0, remaining.nanosecondsClamped))
    return try await withTaskCancellationHandler {
      try await exchange(request, on: connection, deadline: nioDeadline, streaming: streaming)
    } onCancel: {
      connection.close()
    }
  }

  private func exchange(
    _ request: TealRequest, on connection: HTTPConnection, deadline: NIODeadline, streaming: Bool
  ) async throws -> Outcome {
    let endpoint = connection.endpoint
    var head = HTTPRequestHead(
      version: .http1_1, method: HTTPMethod(rawValue: request.method.rawValue), uri: request.path)
    head.headers.add(name: "Host", value: endpoint.authority)
    head.headers.add(name: "User-Agent", value: "teal-client/1")
    head.headers.add(name: APIHeader.accept, value: APIContentType.json)
    if let token = configuration.token {
      head.headers.add(name: APIHeader.authorization, value: APIHeader.bearer(token))
    }
    if let key = request.idempotencyKey { head.headers.add(name: APIHeader.idempotencyKey, value: key) }
    if let contentType = request.contentType { head.headers.add(name: APIHeader.contentType, value: contentType) }
    for header in request.headers { head.headers.add(name: header.name, value: header.value) }
    let body = request.body.map { ByteBuffer(bytes: $0) }
    if request.method.isWrite || body != nil {
      head.headers.replaceOrAdd(name: "Content-Length", value: String(body?.readableBytes ?? 0))
    }

    do {
      try await connection.send(head: head, body: body, deadline: deadline)
    } catch {
      connection.close()
      if Task.isCancelled { throw CancellationError() }
      if connection.wasReused { throw AttemptFailure.staleConnection }
      throw AttemptFailure.unknown("sending failed: \(error)")
    }

    // The head (skipping any 1xx).
    var responseHead: HTTPResponseHead
    do {
      repeat {
        guard case .head(let received) = try await connection.nextPart() else {
          throw ConnectionFailure.protocolError("body before head")
        }
        responseHead = received
      } while responseHead.status.code < 200
    } catch {
      connection.close()
      if Task.isCancelled { throw CancellationError() }
      if connection.wasReused, !(await connection.receivedAnything()), case ConnectionFailure.closed = error {
        throw AttemptFailure.staleConnection
      }
      if case ConnectionFailure.protocolError(let text) = error {
        throw AttemptFailure.final(.invalidResponse(endpoint: endpoint.description, reason: text))
      }
      throw AttemptFailure.unknown("\(error)")
    }

    let status = Int(responseHead.status.code)
    let headers = Self.flatten(responseHead.headers)
    let keepAlive = responseHead.isKeepAlive

    if streaming, (200..<300).contains(status) {
      connection.disarm()
      let state = ResponseBodyStream.State(connection: connection, keepAlive: keepAlive) {
        [self] connection, reusable in
        self.release(connection, reusable: reusable)
      }
      return .streaming(
        TealStreamingResponse(
          status: status, headers: headers, endpoint: endpoint, body: ResponseBodyStream(state: state)))
    }

    // The whole body, bounded.
    var collected = Data()
    do {
      if let length = headers["content-length"].flatMap(Int.init), length > configuration.maxResponseBytes {
        throw AttemptFailure.final(
          .responseTooLarge(endpoint: endpoint.description, limit: configuration.maxResponseBytes))
      }
      reading: while true {
        switch try await connection.nextPart() {
        case .head: throw ConnectionFailure.protocolError("a second head")
        case .body(let buffer):
          guard collected.count + buffer.readableBytes <= configuration.maxResponseBytes else {
            throw AttemptFailure.final(
              .responseTooLarge(endpoint: endpoint.description, limit: configuration.maxResponseBytes))
          }
          collected.append(contentsOf: buffer.readableBytesView)
        case .end: break reading
        }
      }
    } catch let failure as AttemptFailure {
      connection.close()
      throw failure
    } catch {
      connection.close()
      if Task.isCancelled { throw CancellationError() }
      if case ConnectionFailure.protocolError(let text) = error {
        throw AttemptFailure.final(.invalidResponse(endpoint: endpoint.description, reason: text))
      }
      throw AttemptFailure.unknown("\(error) (status \(status) received)")
    }
    connection.disarm()
    release(connection, reusable: keepAlive)

    let response = TealResponse(status: status, headers: headers, body: collected, endpoint: endpoint)
    switch status {
    case 200..<300:
      return .buffered(response)
    case _ where request.acceptedStatuses.contains(status):
      return .buffered(response)
    case 300..<400:
      let location = headers["location"].map { " to \($0)" } ?? ""
      throw AttemptFailure.final(
        .invalidResponse(endpoint: endpoint.description, reason: "redirect (\(status))\(location) not followed"))
    case 503:
      let retryAfter = headers[APIHeader.retryAfter.lowercased()].flatMap(Int.init).map { Duration.seconds($0) }
      throw AttemptFailure.unavailable(Self.serverError(response), retryAfter: retryAfter)
    default:
      throw AttemptFailure.final(Self.serverError(response))
    }
  }

  private static func serverError(_ response: TealResponse) -> TealClientError {
    let error: APIError
    if let body = try? TealJSON.decode(APIErrorBody.self, from: response.body) {
      error = body.error
    } else {
      let text = String(decoding: response.body.prefix(200), as: UTF8.self)
        .trimmingCharacters(in: .whitespacesAndNewlines)
      error = APIError(
        code: APIErrorCode(rawValue: "http_\(response.status)"),
        message: text.isEmpty ? HTTPResponseStatus(statusCode: response.status).reasonPhrase : text)
    }
    return .server(status: response.status, endpoint: response.endpoint.description, error: error)
  }

  private static func flatten(_ headers: HTTPHeaders) -> [String: String] {
    var result: [String: String] = [:]
    for (name, value) in headers {
      let key = name.lowercased()
      result[key] = result[key].map { "\($0), \(value)" } ?? value
    }
    return result
  }

  private static func describeConnectError(_ error: any Error) -> String {
    if let connect = error as? NIOConnectionError {
      if let first = connect.connectionErrors.first { return describeConnectError(first.error) }
      return connect.dnsAAAAError.map { "cannot resolve the host: \($0)" } ?? "cannot connect"
    }
    if let io = error as? IOError {
      switch io.errnoCode {
      case ECONNREFUSED: return "connection refused"
      case ENETUNREACH, EHOSTUNREACH: return "host unreachable"
      default: return "\(io)"
      }
    }
    if let channelError = error as? ChannelError, case .connectTimeout = channelError {
      return "connect timed out"
    }
    return "\(error)"
  }
}

extension Duration {
  /// Whole nanoseconds, clamped to Int64.
  var nanosecondsClamped: Int64 {
    let (seconds, attoseconds) = components
    let (scaled, overflow) = seconds.multipliedReportingOverflow(by: 1_000_000_000)
    if overflow { return seconds < 0 ? .min : .max }
    return scaled.addingReportingOverflow(attoseconds / 1_000_000_000).overflow
      ? .max : scaled + attoseconds / 1_000_000_000
  }
}
