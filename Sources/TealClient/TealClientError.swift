import TealAPI

/// Why a call failed, in terms a user can act on. The three outcomes that matter for a write are
/// kept apart: ``notSent`` (nothing reached a node: safe to try again), ``outcomeUnknown`` (a node
/// may have applied it: retry with the same Idempotency-Key, which is safe) and ``server`` (a node
/// answered with an error).
public enum TealClientError: Error, Sendable, CustomStringConvertible, Equatable {
  /// No request reached any node (every endpoint refused or could not be reached in time).
  case notSent(endpoint: String, reason: String)
  /// The request reached `endpoint` but no complete answer came back; it may have taken effect.
  case outcomeUnknown(endpoint: String, reason: String, idempotencyKey: String?)
  /// A node answered with an error status and body.
  case server(status: Int, endpoint: String, error: APIError)
  /// The answer was larger than the configured limit; it was not read.
  case responseTooLarge(endpoint: String, limit: Int)
  /// The answer was not what the API sends (not HTTP, a redirect, a body that does not decode).
  case invalidResponse(endpoint: String, reason: String)
  /// An endpoint URL or the configuration is unusable.
  case invalidEndpoint(String, reason: String)
  case noEndpoints

  public var description: String {
    switch self {
    case .notSent(let endpoint, let reason):
      return "cannot reach a Teal node (last tried \(endpoint): \(reason)); nothing was sent. "
        + "Is the cluster running (`teal cluster up` starts a local one)? Check --endpoint"
    case .outcomeUnknown(let endpoint, let reason, let key):
      let retry = key.map { "; retrying with Idempotency-Key \($0) applies it at most once" } ?? ""
      return "\(endpoint) received the request but no answer came (\(reason)); it may or may not have taken effect"
        + retry
    case .server(let status, let endpoint, let error):
      let field = error.field.map { " (field \($0))" } ?? ""
      return "\(endpoint) answered \(status) \(error.code.rawValue): \(error.message)\(field)"
    case .responseTooLarge(let endpoint, let limit):
      return "the answer from \(endpoint) is larger than the client's limit of \(limit) bytes"
    case .invalidResponse(let endpoint, let reason):
      return "unexpected answer from \(endpoint): \(reason)"
    case .invalidEndpoint(let text, let reason):
      return "invalid endpoint '\(text)': \(reason)"
    case .noEndpoints:
      return "no endpoint to talk to: give --endpoint http://HOST:PORT or start a cluster with `teal cluster up`"
    }
  }

  /// The API error when a node answered with one.
  public var apiError: APIError? {
    if case .server(_, _, let error) = self { return error }
    return nil
  }

  /// The HTTP status when a node answered with an error.
  public var status: Int? {
    if case .server(let status, _, _) = self { return status }
    return nil
  }
}
