// The variable routes (`/v1/variables`): a small key/value store for hooks and configuration.
// Parsing and rendering only: writes go through the log like every other write, reads through the
// same linearizable read as every other read.

import Foundation
import HTTPTypes
import Hummingbird
import TealAPI
import TealCluster

/// What the variable routes need from the node (``APIServer``; tests give a state of their own).
protocol VariableBackend: Sendable {
  /// The state to answer a read from: linearizable unless the request says `?stale=true`.
  func read(_ request: Request) async throws -> ClusterState
  /// Proposes `command` with the request's idempotency key and returns its response once applied; a
  /// refusal throws its ``APIFailure``.
  func submit(_ command: ClusterCommand, _ request: Request, body: [UInt8], digestingQuery: Bool) async throws
    -> ClusterResponse
}

extension APIServer: VariableBackend {}

/// `GET /v1/variables?prefix=&after=&limit=`, `GET|PUT|DELETE /v1/variables/{path}[?cas=VERSION]`.
///
/// The path is the rest of the request path after `/v1/variables/`, percent-decoded, and must follow
/// ``VariableTable/pathProblem(_:)``. Limits: see ``VariableTable``; a page lists at most
/// ``ClusterState/maximumVariablePage`` variables.
enum VariableRoutes {
  static let prefix = APIPath.variablesRoot + "/"

  static func add<Context: RequestContext>(to router: Router<Context>, backend: some VariableBackend) {
    router.get(RouterPath(APIPath.variablesRoot)) { request, _ in try await list(request, backend) }
    router.get("/v1/variables/**") { request, _ in
      let path = try variablePath(request)
      let state = try await backend.read(request)
      guard let variable = state.variable(path) else { throw APIFailure.notFound("no variable at \(path)") }
      return try json(VariableView(path: path, value: variable.value, version: variable.version))
    }
    router.put("/v1/variables/**") { request, _ in
      let path = try variablePath(request)
      let cas = try casVersion(request)
      let body = try await readBody(request)
      let write: VariableWrite
      do { write = try TealJSON.decode(VariableWrite.self, from: Data(body)) } catch {
        throw APIFailure.badRequest(
          "the body must be {\"value\": \"<string>\"}: \(APIViews.describe(error))", field: "value")
      }
      if let problem = VariableTable.valueProblem(write.value) {
        throw APIFailure(
          status: .contentTooLarge, code: "too_large", message: "variable \(path): \(problem)", field: "value")
      }
      let answer = try await backend.submit(
        .putVariable(path: path, value: write.value, cas: cas), request, body: body, digestingQuery: true)
      guard case .variableWritten(_, let version) = answer else {
        preconditionFailure("putVariable answered \(answer)")
      }
      return try json(VariableView(path: path, value: write.value, version: version))
    }
    router.delete("/v1/variables/**") { request, _ in
      let path = try variablePath(request)
      let cas = try casVersion(request)
      let answer = try await backend.submit(
        .deleteVariable(path: path, cas: cas), request, body: [], digestingQuery: true)
      guard case .variableDeleted(_, let version) = answer else {
        preconditionFailure("deleteVariable answered \(answer)")
      }
      return try json(VariableView(path: path, value: nil, version: version))
    }
  }

  private static func list(_ request: Request, _ backend: some VariableBackend) async throws -> Response {
    let query = request.uri.queryParameters
    let prefix = query.get("prefix")
    let after = query.get("after")
    for (name, value) in [("prefix", prefix), ("after", after)] {
      if let value, value.utf8.count > VariableTable.maximumPathBytes {
        throw APIFailure.badRequest(
          "\(name) is \(value.utf8.count) bytes; at most \(VariableTable.maximumPathBytes) allowed", field: name)
      }
    }
    let limit = try query.get("limit").map { text -> Int in
      guard let value = Int(text), (1...ClusterState.maximumVariablePage).contains(value) else {
        throw APIFailure.badRequest("limit must be 1-\(ClusterState.maximumVariablePage)", field: "limit")
      }
      return value
    }
    let state = try await backend.read(request)
    let page = state.variables(prefix: prefix, after: after, limit: limit ?? ClusterState.maximumVariablePage)
    return try json(
      VariableList(
        variables: page.variables.map { VariableSummary(path: $0.path, version: $0.version) }, next: page.next))
  }

  /// The variable path of the request: the percent-decoded rest of its path after `/v1/variables/`.
  static func variablePath(_ request: Request) throws -> String {
    let raw = request.uri.path
    // The router skips empty segments (`//v1//variables/a` matches too): only the exact prefix counts.
    guard raw.hasPrefix(prefix) else {
      throw APIFailure.badRequest("variable paths are under \(prefix), not in \(raw)", field: "path")
    }
    let encoded = String(raw.dropFirst(prefix.count))
    guard let path = encoded.removingPercentEncoding else {
      throw APIFailure.badRequest("the variable path \"\(encoded)\" is not valid percent-encoding", field: "path")
    }
    if let problem = VariableTable.pathProblem(path) {
      throw APIFailure.badRequest("variable path \"\(path)\" \(problem)", field: "path")
    }
    return path
  }

  /// `?cas=VERSION`, when given.
  static func casVersion(_ request: Request) throws -> UInt64? {
    try request.uri.queryParameters.get("cas").map { text in
      guard let version = UInt64(text) else {
        throw APIFailure.badRequest(
          "cas must be a version (0 or more; 0 = only if the variable does not exist), got '\(text)'", field: "cas")
      }
      return version
    }
  }

  private static func readBody(_ request: Request) async throws -> [UInt8] {
    var request = request
    do {
      let buffer = try await request.collectBody(upTo: APIServer.maximumBodyBytes)
      return Array(buffer.readableBytesView)
    } catch {
      throw APIFailure.tooLarge("the request body exceeds \(APIServer.maximumBodyBytes) bytes")
    }
  }
}
