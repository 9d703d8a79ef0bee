// The one mapping from everything that can go wrong in a request to an HTTP status and the
// `{"error": {"code", "message", "field"}}` body.

import Foundation
import Hummingbird
import TealAPI
import TealCluster
import TealConsensus
import TealSpec

/// An error the API answers with. Every failure of a handler becomes one of these, here and only
/// here, so status codes and error codes stay consistent across routes.
struct APIFailure: Error, Sendable, CustomStringConvertible {
  var status: HTTPResponse.Status
  var code: String
  var message: String
  var field: String?
  /// Seconds for `Retry-After` (503 only).
  var retryAfter: Int?
  /// The current version, on 409 `version_mismatch` only (the body's top-level `version`).
  var version: UInt64?

  var description: String { "\(status.code) \(code): \(message)" }
}

extension APIFailure {

  static func badRequest(_ message: String, field: String? = nil) -> APIFailure {
    APIFailure(status: .badRequest, code: "bad_request", message: message, field: field)
  }
  static func notFound(_ message: String) -> APIFailure {
    APIFailure(status: .notFound, code: "not_found", message: message)
  }
  static func unauthorized(_ message: String) -> APIFailure {
    APIFailure(status: .unauthorized, code: "unauthorized", message: message)
  }
  static func tooLarge(_ message: String) -> APIFailure {
    APIFailure(status: .contentTooLarge, code: "too_large", message: message)
  }
  static func noLeader(_ message: String) -> APIFailure {
    APIFailure(status: .serviceUnavailable, code: "no_leader", message: message, retryAfter: 1)
  }
  static func unavailable(_ message: String) -> APIFailure {
    APIFailure(status: .serviceUnavailable, code: "unavailable", message: message, retryAfter: 1)
  }

  /// A refusal from ClusterState: its code decides the status.
  init(_ rejection: ClusterRejection) {
    switch rejection.code {
    case .notFound: self.init(status: .notFound, code: rejection.code.rawValue, message: rejection.message)
    case .conflict:
      self.init(status: .conflict, code: rejection.code.rawValue, message: rejection.message, field: rejection.field)
    case .invalidSpec, .idempotencyMismatch:
      self.init(
        status: .unprocessableContent, code: rejection.code.rawValue, message: rejection.message,
        field: rejection.field)
    case .badRequest:
      self.init(status: .badRequest, code: rejection.code.rawValue, message: rejection.message, field: rejection.field)
    case .tooLarge:
      self.init(
        status: .contentTooLarge, code: rejection.code.rawValue, message: rejection.message, field: rejection.field)
    case .unknownSession, .staleSequence:
      self.init(status: .conflict, code: rejection.code.rawValue, message: rejection.message, field: rejection.field)
    case .staleTerm:
      self.init(
        status: .serviceUnavailable, code: "no_leader", message: rejection.message, retryAfter: 1)
    case .versionMismatch:
      self.init(
        status: .conflict, code: rejection.code.rawValue, message: rejection.message, field: rejection.field,
        version: rejection.version ?? 0)
    }
  }

  /// A spec that is not a well-formed document (syntax, size, nesting): 400 `bad_request`. A
  /// document that breaks a rule: 422 `invalid_spec` naming the first field, every error in the
  /// message.
  init(spec errors: SpecErrors) {
    let message = errors.errors.prefix(20).map(\.description).joined(separator: "; ")
    if let first = errors.errors.first, first.path == "(document)" {
      self.init(status: .badRequest, code: "bad_request", message: message)
      return
    }
    let first = errors.errors.first
    self.init(
      status: .unprocessableContent, code: "invalid_spec", message: message,
      field: first.map { $0.path.isEmpty ? "spec" : "spec.\($0.path)" })
  }

  init(_ error: SubmitError) {
    switch error {
    case .noLeader(let reason): self = .noLeader(reason)
    case .outcomeUnknown(let reason):
      self = APIFailure(
        status: .serviceUnavailable, code: "outcome_unknown",
        message: "\(reason); retry with the same Idempotency-Key", retryAfter: 1)
    case .refused(let reason): self = .unavailable(reason)
    }
  }

  init(read error: RaftNodeError) {
    switch error {
    case .notLeader, .retryLater, .timedOut:
      self = .noLeader(
        "a linearizable read could not be confirmed by a leader: \(error); use ?stale=true to read this node's state")
    default:
      self = .unavailable("\(error)")
    }
  }

  /// The answer of `handler`, or the error response of what it threw (every error becomes one here).
  static func responding(_ handler: () async throws -> Response) async -> Response {
    do {
      return try await handler()
    } catch let failure as APIFailure {
      return failure.response()
    } catch let error as HTTPResponseError {
      return APIFailure(
        status: error.status, code: error.status.code == 404 ? "not_found" : "bad_request", message: "\(error)"
      ).response()
    } catch {
      return APIFailure(status: .internalServerError, code: "internal", message: "\(error)").response()
    }
  }

  func response() -> Response {
    var headers = HTTPFields()
    headers[.contentType] = APIContentType.json
    if let retryAfter { headers[.retryAfter] = "\(retryAfter)" }
    let body = APIErrorBody(APIErrorCode(rawValue: code), message, field: field, version: version)
    let data =
      (try? TealJSON.encode(body)) ?? Data(#"{"error":{"code":"internal","message":"unencodable error"}}"#.utf8)
    return Response(status: status, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(bytes: data)))
  }
}
