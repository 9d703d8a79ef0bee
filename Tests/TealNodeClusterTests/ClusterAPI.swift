// The node's HTTP API as NODE-CONTRACT.md describes it: JSON shapes and a plain HTTP client
// (TealTraffic's HTTPConnection; TealClient is not used so that this suite tests the wire format).

import Foundation
import NIOHTTP1
import TealAPIConformance
import TealTraffic
import Testing

// MARK: - Response shapes (only the fields the tests read; extra fields are ignored)

struct HealthView: Decodable, Equatable {
  var status: String
  var node: String
}

struct ReadyView: Decodable, Equatable {
  var ready: Bool
  var node: String
  var leader: String?
}

struct ClusterStatusView: Decodable, Equatable {
  var leader: String?
  var term: Int
  var commitIndex: Int
  var appliedIndex: Int?
  var members: [MemberView]
}

struct MemberView: Decodable, Equatable {
  var id: String
  var address: String?
  var state: String
  var role: String?
  var api: String?
}

struct ServiceListView: Decodable, Equatable {
  var services: [ServiceSummaryView]
}

struct ServiceSummaryView: Decodable, Equatable {
  var name: String
  var desiredCount: Int
  var runningCount: Int
  var healthyCount: Int
  var currentRevision: String?
  var productionPort: Int
  var testPort: Int
}

struct ServiceDetailView: Decodable, Equatable {
  var name: String
  var desiredCount: Int
  var runningCount: Int
  var healthyCount: Int
  var currentRevision: String?
  var productionPort: Int
  var testPort: Int
  var revisions: [RevisionView]
  var tasks: [TaskView]
  var routes: RoutesView

  /// What every node must agree on once a write is applied everywhere (task states may lag).
  var committedShape: String {
    "\(name) desired \(desiredCount) revision \(currentRevision ?? "-") revisions "
      + revisions.map { "\($0.id)@\($0.digest)" }.joined(separator: ",") + " routes \(routes.generation)"
  }
}

struct RevisionView: Decodable, Equatable {
  var id: String
  var number: Int
  var digest: String
  var createdAt: String?
}

struct RoutesView: Decodable, Equatable {
  var generation: Int
  var production: [String: Double]?
  var test: [String: Double]?
  var targets: [RouteTargetView]?
}

struct RouteTargetView: Decodable, Equatable {
  var task: String
  var node: String
  var address: String
  var port: Int
  var revision: String
}

struct TaskListView: Decodable, Equatable {
  var tasks: [TaskView]
}

struct TaskView: Decodable, Equatable {
  var id: String
  var service: String
  var revision: String
  var node: String
  var desired: String
  var state: String
  var healthy: Bool?
  var address: String?
  var port: Int?
  var startedAt: String?

  var isServing: Bool { desired == "running" && state == "running" && healthy == true }
}

struct EventListView: Decodable, Equatable {
  var events: [EventView]
}

struct EventView: Decodable, Equatable {
  var index: Int
  var time: String
  var service: String?
  var kind: String
  var message: String
}

struct ErrorView: Decodable, Equatable {
  struct Detail: Decodable, Equatable {
    var code: String
    var message: String
    var field: String?
  }
  var error: Detail
}

// MARK: - Client

struct APIError: Error, CustomStringConvertible {
  var description: String
}

/// One node's API endpoint and the bearer token.
struct NodeAPI: Sendable {
  var node: String
  var host: String
  var port: Int
  var token: String

  static let requestTimeout: Duration = .seconds(10)

  /// One request on a fresh connection. `token: nil` sends no Authorization header. Writes get
  /// an `Idempotency-Key` (a fresh one unless given), as the contract's client always sends.
  func send(
    _ method: HTTPMethod, _ path: String, body: String? = nil, contentType: String = "application/json",
    idempotencyKey: String? = nil, authorized: Bool = true, token overrideToken: String? = nil
  ) async throws -> HTTPResponse {
    var headers: [(String, String)] = [("accept", "application/json")]
    if authorized { headers.append(("authorization", "Bearer \(overrideToken ?? token)")) }
    if body != nil { headers.append(("content-type", contentType)) }
    if method == .POST || method == .PUT || method == .DELETE {
      headers.append(("idempotency-key", idempotencyKey ?? UUID().uuidString))
    }
    let connection = try await HTTPConnection.connect(host: host, port: port, timeout: .seconds(3))
    defer { Task { await connection.close() } }
    let response: HTTPResponse
    do {
      response = try await connection.request(
        method: method, path: path, headers: headers, body: body.map { Array($0.utf8) }, timeout: Self.requestTimeout)
    } catch {
      throw APIError(description: "\(method) \(path) on \(node): \(error)")
    }
    Self.checkAgainstTheDocument(method, path, response)
    return response
  }

  /// Every answer any cluster test receives must be what Docs/openapi.yaml says (recorded as an
  /// issue, so that a caller that retries or ignores errors still fails the test).
  static func checkAgainstTheDocument(_ method: HTTPMethod, _ path: String, _ response: HTTPResponse) {
    let contract: OpenAPIContract
    do { contract = try documentedContract.get() } catch {
      Issue.record("Docs/openapi.yaml does not load: \(error)")
      return
    }
    for problem in contract.check(
      method: method.rawValue, path: path, status: response.status,
      contentType: response.headers.first(name: "content-type"), body: response.body)
    {
      Issue.record("the answer departs from Docs/openapi.yaml: \(problem)")
    }
  }

  /// A request that must answer `status`; its body decoded as `T`.
  func call<T: Decodable>(
    _ method: HTTPMethod, _ path: String, body: String? = nil, contentType: String = "application/json",
    idempotencyKey: String? = nil, expect status: Int = 200, as type: T.Type
  ) async throws -> T {
    let response = try await send(method, path, body: body, contentType: contentType, idempotencyKey: idempotencyKey)
    guard response.status == status else {
      throw APIError(
        description: "\(method) \(path) on \(node): expected \(status), got \(response.status): \(response.text)")
    }
    return try decode(T.self, response, what: "\(method) \(path) on \(node)")
  }

  func get<T: Decodable>(_ path: String, as type: T.Type) async throws -> T {
    try await call(.GET, path, as: type)
  }

  func cluster() async throws -> ClusterStatusView { try await get("/v1/cluster", as: ClusterStatusView.self) }

  func service(_ name: String, stale: Bool = true) async throws -> ServiceDetailView {
    try await get("/v1/services/\(name)\(stale ? "?stale=true" : "")", as: ServiceDetailView.self)
  }
}

/// The repository's OpenAPI document and its checker, loaded once.
let documentPath = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
  .deletingLastPathComponent().appendingPathComponent("Docs/openapi.yaml").path
let documentedContract = Result { try OpenAPIContract.load(path: documentPath) }

/// The routes node `id` logged at start (`API routes`), as `METHOD /path/{param}`.
func loggedRoutes(_ cluster: LocalCluster, _ id: String) -> Set<String>? {
  guard let log = try? String(contentsOfFile: cluster.node(id).logPath, encoding: .utf8),
    let line = log.split(separator: "\n").last(where: { $0.contains("API routes: ") }),
    let start = line.range(of: "API routes: ")?.upperBound
  else { return nil }
  return Set(line[start...].components(separatedBy: ", "))
}

func decode<T: Decodable>(_ type: T.Type, _ response: HTTPResponse, what: String) throws -> T {
  do {
    return try JSONDecoder().decode(T.self, from: Data(response.body))
  } catch {
    throw APIError(description: "\(what): the body is not a \(T.self): \(error); body: \(response.text)")
  }
}
