// One node's API for the run: a request on a fresh connection with the token, every outcome
// classified as the history needs it (an answer; refused before anything was sent; or unknown).

import Foundation
import NIOHTTP1
import TealTraffic

struct NodeClient: Sendable {
  var node: String
  var host: String
  var port: Int
  var token: String

  enum Answer: Sendable {
    case response(HTTPResponse)
    /// Nothing was sent: the connection could not be opened.
    case notSent(String)
    /// Sent, with no complete answer (timeout, reset): the outcome is unknown.
    case unknown(String)
  }

  func send(_ method: HTTPMethod, _ path: String, body: String? = nil, timeout: Duration) async -> Answer {
    var headers: [(String, String)] = [("accept", "application/json"), ("authorization", "Bearer \(token)")]
    if body != nil { headers.append(("content-type", "application/json")) }
    if method == .PUT || method == .POST || method == .DELETE {
      headers.append(("idempotency-key", UUID().uuidString))
    }
    let connection: HTTPConnection
    do {
      connection = try await HTTPConnection.connect(host: host, port: port, timeout: .seconds(1))
    } catch {
      return .notSent("\(error)")
    }
    defer { Task { await connection.close() } }
    do {
      let response = try await connection.request(
        method: method, path: path, headers: headers, body: body.map { Array($0.utf8) }, timeout: timeout)
      return .response(response)
    } catch {
      return .unknown("\(error)")
    }
  }

  /// A GET that must answer 200 with a `T`.
  func get<T: Decodable>(_ path: String, as type: T.Type, timeout: Duration = .seconds(5)) async throws -> T {
    switch await send(.GET, path, timeout: timeout) {
    case .response(let response) where response.status == 200:
      do { return try JSONDecoder().decode(T.self, from: Data(response.body)) } catch {
        throw HarnessError(description: "GET \(path) on \(node): not a \(T.self): \(error): \(response.text)")
      }
    case .response(let response):
      throw HarnessError(description: "GET \(path) on \(node): \(response.status) \(response.text)")
    case .notSent(let why), .unknown(let why):
      throw HarnessError(description: "GET \(path) on \(node): \(why)")
    }
  }

  /// A request that must answer `status`; its body.
  func call(
    _ method: HTTPMethod, _ path: String, body: String, contentType: String = "application/json", expect status: Int,
    timeout: Duration = .seconds(10)
  ) async throws -> HTTPResponse {
    var headers: [(String, String)] = [
      ("accept", "application/json"), ("authorization", "Bearer \(token)"), ("content-type", contentType),
      ("idempotency-key", UUID().uuidString),
    ]
    if method == .GET { headers.removeLast() }
    let connection = try await HTTPConnection.connect(host: host, port: port, timeout: .seconds(2))
    defer { Task { await connection.close() } }
    let response = try await connection.request(
      method: method, path: path, headers: headers, body: Array(body.utf8), timeout: timeout)
    guard response.status == status else {
      throw HarnessError(description: "\(method) \(path) on \(node): \(response.status) \(response.text)")
    }
    return response
  }
}

// MARK: - The API's shapes (only what the run reads)

struct ClusterStatusView: Decodable {
  struct Member: Decodable {
    var id: String
    var state: String
  }
  var leader: String?
  var term: UInt64
  var members: [Member]
}

struct VariableView: Decodable {
  var path: String
  var value: String?
  var version: UInt64
}

struct MismatchView: Decodable {
  struct Detail: Decodable { var code: String }
  var error: Detail
  var version: UInt64?
}

struct ErrorBodyView: Decodable {
  struct Detail: Decodable { var code: String }
  var error: Detail
}

struct DeploymentView: Decodable, Equatable {
  struct Pair: Decodable, Equatable {
    var blue: Double
    var green: Double
  }
  struct Weights: Decodable, Equatable {
    var production: Pair
    var test: Pair
    var generation: UInt64
  }
  struct Controller: Decodable, Equatable, Hashable {
    var node: String
    var term: UInt64
  }
  var id: String
  var status: String
  var stage: String?
  var blue: String
  var green: String
  var weights: Weights
  var controller: Controller?

  static let finalStatuses: Set<String> = ["SUCCESSFUL", "STOPPED", "ROLLBACK_SUCCESSFUL", "ROLLBACK_FAILED"]
  var isFinished: Bool { Self.finalStatuses.contains(status) }
}

struct ServiceView: Decodable {
  struct Routes: Decodable {
    var generation: UInt64
    var production: [String: Double]?
    var test: [String: Double]?
  }
  struct TaskItem: Decodable {
    var id: String
    var revision: String
    var desired: String
    var state: String
    var healthy: Bool?
  }
  var name: String
  var currentRevision: String?
  var tasks: [TaskItem]
  var routes: Routes
}

struct EventsView: Decodable {
  struct Event: Decodable {
    var index: UInt64
    var kind: String
    var service: String?
    var message: String
  }
  var events: [Event]
}
