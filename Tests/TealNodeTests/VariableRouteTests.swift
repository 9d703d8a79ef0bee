import Foundation
import Hummingbird
import Logging
import NIOCore
import TealAPI
import TealClient
import TealWire
import Testing

@testable import TealCluster
@testable import TealNode

/// The variable routes on a real Hummingbird server in this process, over a ClusterState that
/// applies every write at the next index (as the log would), driven through TealClient.
@Suite("Variable routes (in process, through TealClient)")
struct VariableRouteTests {
  actor FakeLog {
    var state = ClusterState()
    var index: UInt64 = 0
    var reads = 0

    func apply(_ entry: ClusterEntry) -> ClusterResult {
      index += 1
      return state.apply(entry, index: index, term: 1)
    }

    func read() -> ClusterState {
      reads += 1
      return state
    }
  }

  struct Backend: VariableBackend {
    let log: FakeLog

    func read(_ request: Request) async throws -> ClusterState { await log.read() }

    func submit(_ command: ClusterCommand, _ request: Request, body: [UInt8], digestingQuery: Bool) async throws
      -> ClusterResponse
    {
      let key = try APIServer.idempotencyKey(request, body: body, digestingQuery: digestingQuery)
      let entry = ClusterEntry(
        stamp: CommandStamp(now: .zero, node: NodeID("n1"), term: 1), idempotency: key, command: command)
      switch await log.apply(try ClusterEntry(decoding: entry.encode())) {
      case .ok(let answer): return answer
      case .rejected(let rejection): throw APIFailure(rejection)
      }
    }
  }

  /// The production error mapping, without the node headers (they need a ClusterLog).
  struct ErrorMapping<Context: RequestContext>: RouterMiddleware {
    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws
      -> Response
    {
      await APIFailure.responding { try await next(request, context) }
    }
  }

  static let quiet: Logger = {
    var logger = Logger(label: "variable-route-tests")
    logger.logLevel = .critical
    return logger
  }()

  /// Runs `body` with a client of a server of the variable routes over `log`.
  func withServer(_ body: (TealClient, FakeLog) async throws -> Void) async throws {
    let log = FakeLog()
    let router = Router(context: BasicRequestContext.self)
    router.add(middleware: ErrorMapping())
    VariableRoutes.add(to: router, backend: Backend(log: log))
    let (ports, continuation) = AsyncStream.makeStream(of: Int.self)
    let app = Application(
      router: router, configuration: ApplicationConfiguration(address: .hostname("127.0.0.1", port: 0)),
      onServerRunning: { channel in
        continuation.yield(channel.localAddress?.port ?? 0)
        continuation.finish()
      }, logger: Self.quiet)
    let server = Task { try await app.runService(gracefulShutdownSignals: []) }
    defer { server.cancel() }
    var iterator = ports.makeAsyncIterator()
    let port = try #require(await iterator.next())
    var configuration = TealClientConfiguration(endpoints: [try Endpoint(url: "http://127.0.0.1:\(port)")])
    configuration.maxAttempts = 1
    let client = TealClient(configuration: configuration)
    do {
      try await body(client, log)
    } catch {
      await client.shutdown()
      throw error
    }
    await client.shutdown()
  }

  /// The raw answer to `method path` (error statuses returned, not thrown).
  static func raw(
    _ client: TealClient, _ method: TealRequest.Method, _ path: String, body: String? = nil, key: String? = nil
  ) async throws -> (status: Int, body: String) {
    var request = TealRequest(
      method: method, path: path, body: body.map { Data($0.utf8) }, contentType: "application/json",
      idempotencyKey: key)
    request.acceptedStatuses = [400, 404, 409, 413, 422]
    let response = try await client.send(request)
    return (response.status, String(decoding: response.body, as: UTF8.self))
  }

  @Test func putGetAndDeleteANestedPathAnswerPathValueAndVersion() async throws {
    try await withServer { client, log in
      let put = try await client.putVariable("hooks/web/token", value: "s3cret")
      #expect(put == VariableView(path: "hooks/web/token", value: "s3cret", version: 1))
      let raw = try await Self.raw(client, .GET, "/v1/variables/hooks/web/token")
      #expect(raw.status == 200 && raw.body == #"{"path":"hooks/web/token","value":"s3cret","version":1}"#)
      let again = try await client.putVariable("hooks/web/token", value: "new")
      #expect(again.version == 2)
      #expect(
        try await client.variable("hooks/web/token") == VariableView(path: "hooks/web/token", value: "new", version: 2))
      let deleted = try await Self.raw(client, .DELETE, "/v1/variables/hooks/web/token")
      #expect(deleted.status == 200 && deleted.body == #"{"path":"hooks/web/token","version":2}"#)
      let missing = try await Self.raw(client, .GET, "/v1/variables/hooks/web/token")
      #expect(missing.status == 404)
      #expect(missing.body == #"{"error":{"code":"not_found","message":"no variable at hooks/web/token"}}"#)
      await #expect(throws: TealClientError.self) { try await client.variable("hooks/web/token") }
      #expect(await log.reads == 4)
    }
  }

  @Test func aCompareAndSetMismatchIs409WithTheCurrentVersion() async throws {
    try await withServer { client, _ in
      _ = try await client.putVariable("a/b", value: "1", cas: 0)
      let created = try await Self.raw(client, .PUT, "/v1/variables/a/b?cas=0", body: #"{"value":"2"}"#)
      #expect(created.status == 409)
      #expect(
        created.body
          == #"{"error":{"code":"version_mismatch","field":"cas","message":"variable a/b is at version 1, not version 0"},"version":1}"#
      )
      do {
        _ = try await client.putVariable("a/b", value: "3", cas: 9)
        Issue.record("a stale cas was accepted")
      } catch let mismatch as VariableVersionMismatch {
        #expect(mismatch.current == 1 && mismatch.expected == 9 && mismatch.path == "a/b")
      }
      // Refused writes take log entries too: the winner's entry is index 4.
      #expect(try await client.putVariable("a/b", value: "3", cas: 1).version == 4)
      let absent = try await Self.raw(client, .DELETE, "/v1/variables/other?cas=4")
      #expect(absent.status == 409 && absent.body.hasSuffix(#""version":0}"#), "\(absent.body)")
      do {
        _ = try await client.deleteVariable("a/b", cas: 1)
        Issue.record("a stale delete was accepted")
      } catch let mismatch as VariableVersionMismatch {
        #expect(mismatch.current == 4)
      }
      #expect(try await client.deleteVariable("a/b", cas: 4) == VariableView(path: "a/b", value: nil, version: 4))
    }
  }

  @Test func badPathsCasValuesAndBodiesAreRefusedNamingTheProblem() async throws {
    try await withServer { client, log in
      let cases: [(String, String, Int, String)] = [
        ("PUT", "/v1/variables/a//b", 400, #"variable path \"a//b\" must not contain an empty segment ('//')"#),
        ("PUT", "/v1/variables/a/", 400, #"variable path \"a/\" must not end with '/'"#),
        ("PUT", "/v1/variables/a/../b", 400, #"variable path \"a/../b\" must not contain a '.' or '..' segment"#),
        (
          "GET", "/v1/variables/a%20b", 400,
          #"variable path \"a b\" may contain only A-Z, a-z, 0-9, '.', '_', '-' and '/'"#
        ),
        (
          "PUT", "/v1/variables/a?cas=x", 400,
          "cas must be a version (0 or more; 0 = only if the variable does not exist), got 'x'"
        ),
        ("DELETE", "/v1/variables/a?cas=-1", 400, "cas must be a version"),
        ("PUT", "/v1/variables/" + String(repeating: "p", count: 257), 400, "the path limit is 256 bytes"),
        ("GET", "//v1//variables/a", 400, "variable paths are under /v1/variables/, not in //v1//variables/a"),
        ("PUT", "/v1/variables//a", 400, #"variable path \"/a\" must not start with '/'"#),
      ]
      for (method, path, status, message) in cases {
        let answer = try await Self.raw(
          client, TealRequest.Method(rawValue: method)!, path, body: method == "PUT" ? #"{"value":"v"}"# : nil)
        #expect(answer.status == status, "\(method) \(path): \(answer.body)")
        #expect(answer.body.contains(message), "\(method) \(path): \(answer.body)")
      }
      let notJSON = try await Self.raw(client, .PUT, "/v1/variables/a", body: "value=1")
      #expect(notJSON.status == 400 && notJSON.body.contains(#"the body must be {\"value\": \"<string>\"}"#))
      let number = try await Self.raw(client, .PUT, "/v1/variables/a", body: #"{"value":1}"#)
      #expect(number.status == 400, "\(number.body)")
      let big = String(repeating: "x", count: VariableTable.maximumValueBytes + 1)
      let tooLarge = try await Self.raw(client, .PUT, "/v1/variables/a", body: #"{"value":"\#(big)"}"#)
      #expect(tooLarge.status == 413)
      #expect(
        tooLarge.body.contains("value is 65537 bytes; the value limit is 65536 bytes (64 KiB)"),
        "\(tooLarge.body.prefix(300))")
      // Nothing bad reached the log.
      #expect(await log.index == 0)
      // A percent-encoded valid path is the same variable.
      _ = try await client.putVariable("x.y/z_1-2", value: "ok")
      #expect(try await Self.raw(client, .GET, "/v1/variables/x.y%2Fz_1-2").status == 200)
    }
  }

  @Test func aRetryWithTheSameKeyGetsTheFirstAnswerAndAnotherCasUnderItIsRefused() async throws {
    try await withServer { client, _ in
      let first = try await Self.raw(client, .PUT, "/v1/variables/k?cas=0", body: #"{"value":"1"}"#, key: "key-1")
      #expect(first.status == 200)
      _ = try await client.putVariable("k", value: "2")
      let retry = try await Self.raw(client, .PUT, "/v1/variables/k?cas=0", body: #"{"value":"1"}"#, key: "key-1")
      #expect(retry.status == 200 && retry.body == first.body)
      // The query is part of the request: the same key with another cas is another request.
      let other = try await Self.raw(client, .PUT, "/v1/variables/k?cas=2", body: #"{"value":"1"}"#, key: "key-1")
      #expect(other.status == 422 && other.body.contains("idempotency_mismatch"), "\(other.body)")
    }
  }

  @Test func listingsFilterByPrefixArePagedWithNextAndBounded() async throws {
    try await withServer { client, _ in
      for path in ["hooks/web/b", "hooks/web/a", "hooks/api/a", "cfg/x"] {
        _ = try await client.putVariable(path, value: "v")
      }
      let all = try await client.variables()
      #expect(all.variables.map(\.path) == ["cfg/x", "hooks/api/a", "hooks/web/a", "hooks/web/b"] && all.next == nil)
      #expect(all.variables.first == VariableSummary(path: "cfg/x", version: 4))
      let page = try await client.variables(prefix: "hooks/", limit: 2)
      #expect(page.variables.map(\.path) == ["hooks/api/a", "hooks/web/a"] && page.next == "hooks/web/a")
      let rest = try await client.variables(prefix: "hooks/", after: page.next, limit: 2)
      #expect(rest.variables.map(\.path) == ["hooks/web/b"] && rest.next == nil)
      let raw = try await Self.raw(client, .GET, "/v1/variables?prefix=cfg")
      #expect(raw.body == #"{"variables":[{"path":"cfg/x","version":4}]}"#)
      let unbounded = try await Self.raw(client, .GET, "/v1/variables?limit=1001")
      #expect(unbounded.status == 400 && unbounded.body.contains("limit must be 1-1000"))
    }
  }
}
