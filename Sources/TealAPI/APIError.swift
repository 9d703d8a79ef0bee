import Foundation

/// The body of every error answer: `{"error": {"code": "not_found", "message": "...", "field": "..."}}`.
/// A compare-and-set refused with `version_mismatch` also carries the object's current `version`
/// (0 when it does not exist): `{"error": {...}, "version": 12}`.
public struct APIErrorBody: Codable, Hashable, Sendable {
  public var error: APIError
  /// The current version, on `version_mismatch` only.
  public var version: UInt64?

  public init(error: APIError, version: UInt64? = nil) {
    self.error = error
    self.version = version
  }

  public init(_ code: APIErrorCode, _ message: String, field: String? = nil, version: UInt64? = nil) {
    self.error = APIError(code: code, message: message, field: field)
    self.version = version
  }
}

/// What went wrong, for a person: a stable code, a message, and the field at fault when there is one.
public struct APIError: Codable, Hashable, Sendable, CustomStringConvertible {
  public var code: APIErrorCode
  public var message: String
  /// The path of the field at fault, e.g. `spec.deployment.bakeTime`; absent when not about a field.
  public var field: String?

  public init(code: APIErrorCode, message: String, field: String? = nil) {
    self.code = code
    self.message = message
    self.field = field
  }

  public var description: String {
    field.map { "\(code.rawValue): \($0): \(message)" } ?? "\(code.rawValue): \(message)"
  }
}

/// The stable error codes. A struct over its raw string so that a client keeps working when a newer
/// server sends a code it does not know.
public struct APIErrorCode: RawRepresentable, Codable, Hashable, Sendable, CustomStringConvertible {
  public var rawValue: String

  public init(rawValue: String) { self.rawValue = rawValue }

  public init(from decoder: any Decoder) throws {
    rawValue = try decoder.singleValueContainer().decode(String.self)
  }

  public func encode(to encoder: any Encoder) throws {
    var container = encoder.singleValueContainer()
    try container.encode(rawValue)
  }

  public var description: String { rawValue }

  /// 400: malformed request (bad JSON, bad query value).
  public static let badRequest = APIErrorCode(rawValue: "bad_request")
  /// 401: no or wrong bearer token.
  public static let unauthorized = APIErrorCode(rawValue: "unauthorized")
  /// 403: authenticated but not allowed.
  public static let forbidden = APIErrorCode(rawValue: "forbidden")
  /// 404: no such service, path or resource.
  public static let notFound = APIErrorCode(rawValue: "not_found")
  /// 409: conflicts with the current state (e.g. the service already exists).
  public static let conflict = APIErrorCode(rawValue: "conflict")
  /// 409: a compare-and-set (`?cas=VERSION`) found another version; the body's `version` is the
  /// current one (0: the object does not exist).
  public static let versionMismatch = APIErrorCode(rawValue: "version_mismatch")
  /// 413: request body or headers too large.
  public static let tooLarge = APIErrorCode(rawValue: "too_large")
  /// 422: the spec is invalid; `field` names the spec field.
  public static let invalidSpec = APIErrorCode(rawValue: "invalid_spec")
  /// 422: the Idempotency-Key was used before with another body.
  public static let idempotencyMismatch = APIErrorCode(rawValue: "idempotency_mismatch")
  /// 503: no leader known (an election is under way); sent with `Retry-After: 1`.
  public static let noLeader = APIErrorCode(rawValue: "no_leader")
  /// 503: the write was proposed but its outcome is unknown (e.g. its leader stepped down); retry
  /// with the same Idempotency-Key.
  public static let outcomeUnknown = APIErrorCode(rawValue: "outcome_unknown")
  /// 500: a bug or an unexpected failure on the node.
  public static let `internal` = APIErrorCode(rawValue: "internal")

  /// The HTTP status that goes with this code (500 for a code this version does not know).
  public var httpStatus: Int {
    switch rawValue {
    case "bad_request": return 400
    case "unauthorized": return 401
    case "forbidden": return 403
    case "not_found": return 404
    case "conflict", "version_mismatch": return 409
    case "too_large": return 413
    case "invalid_spec", "idempotency_mismatch": return 422
    case "no_leader", "outcome_unknown": return 503
    default: return 500
    }
  }
}
