import Foundation
import TealAPI

/// A compare-and-set (`cas`) found another version: `current` is the variable's version now (0
/// when it does not exist). Thrown by ``TealClient/putVariable(_:value:cas:idempotencyKey:)`` and
/// ``TealClient/deleteVariable(_:cas:idempotencyKey:)`` instead of the generic 409.
public struct VariableVersionMismatch: Error, Sendable, Hashable, CustomStringConvertible {
  public var path: String
  public var expected: UInt64
  public var current: UInt64
  /// The node that answered.
  public var endpoint: String
  /// The server's message.
  public var message: String

  public var description: String { "\(endpoint) answered 409 version_mismatch: \(message)" }
}

// The typed calls of `/v1/variables`.
extension TealClient {
  /// `GET /v1/variables/{path}` (linearizable unless `stale`); a missing variable throws the 404.
  public func variable(_ path: String, stale: Bool = false) async throws -> VariableView {
    let target = APIPath.variable(path)
    return try await send(TealRequest(method: .GET, path: stale ? APIPath.stale(target) : target))
      .decode(VariableView.self)
  }

  /// `PUT /v1/variables/{path}[?cas=VERSION]` with `{"value": ...}`: the answer carries the new version.
  public func putVariable(
    _ path: String, value: String, cas: UInt64? = nil, idempotencyKey: String? = nil
  ) async throws -> VariableView {
    var request = TealRequest(
      method: .PUT, path: APIPath.variable(path, cas: cas), body: try TealJSON.encode(VariableWrite(value: value)),
      contentType: APIContentType.json, idempotencyKey: idempotencyKey)
    request.acceptedStatuses = cas == nil ? [] : [409]
    return try Self.checked(try await send(request), path: path, cas: cas).decode(VariableView.self)
  }

  /// `DELETE /v1/variables/{path}[?cas=VERSION]`: the answer has the version the variable had.
  public func deleteVariable(
    _ path: String, cas: UInt64? = nil, idempotencyKey: String? = nil
  ) async throws -> VariableView {
    var request = TealRequest(
      method: .DELETE, path: APIPath.variable(path, cas: cas), idempotencyKey: idempotencyKey)
    request.acceptedStatuses = cas == nil ? [] : [409]
    return try Self.checked(try await send(request), path: path, cas: cas).decode(VariableView.self)
  }

  /// `GET /v1/variables?prefix=&after=&limit=`: one page; follow `next` as `after`.
  public func variables(
    prefix: String? = nil, after: String? = nil, limit: Int? = nil, stale: Bool = false
  ) async throws -> VariableList {
    let target = APIPath.variables(prefix: prefix, after: after, limit: limit)
    return try await send(TealRequest(method: .GET, path: stale ? APIPath.stale(target) : target))
      .decode(VariableList.self)
  }

  /// A 409 accepted for a compare-and-set becomes ``VariableVersionMismatch`` (or the generic server
  /// error when it is another conflict).
  private static func checked(_ response: TealResponse, path: String, cas: UInt64?) throws -> TealResponse {
    guard response.status == 409, let cas else { return response }
    let body = try response.decode(APIErrorBody.self)
    guard body.error.code == .versionMismatch, let current = body.version else {
      throw TealClientError.server(status: 409, endpoint: response.endpoint.description, error: body.error)
    }
    throw VariableVersionMismatch(
      path: path, expected: cas, current: current, endpoint: response.endpoint.description,
      message: body.error.message)
  }
}
