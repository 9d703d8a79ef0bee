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
    case .tooLarge: self.init(status: .contentTooLarge, code: rejection.code.rawValue, message: rejection.message)
    case .unknownSession, .staleSequence:
      self.init(status: .conflict, code: rejection.code.rawValue, message: rejection.message, field: rejection.field)
    case .staleTerm:
      self.init(
        status: .serviceUnavailable, code: "no_leader", message: rejection.message, retryAfter: 1)
    }
  }

  /// A spec that does not parse or breaks a rule: 422 naming the first field, every error in the message.
  init(spec errors: SpecErrors) {
    let first = errors.errors.first
    self.init(
      status: .unprocessableContent, code: "invalid_spec",
      message: errors.errors.prefix(20).map(\.description).joined(separator: "; "),
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

  func response() -> Response {
    var headers = HTTPFields()
    headers[.contentType] = APIContentType.json
    if let retryAfter { headers[.retryAfter] = "\(retryAfter)" }
    let body = APIErrorBody(APIErrorCode(rawValue: code), message, field: field)
    let data =
      (try? TealJSON.encode(body)) ?? Data(#"{"error":{"code":"internal","message":"unencodable error"}}"#.utf8)
    return Response(status: status, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(bytes: data)))
  }
}
