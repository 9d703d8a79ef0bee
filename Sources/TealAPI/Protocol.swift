import Foundation

// The HTTP API every node serves (Docs/API.md): header names, paths, content types.
// Shared by the server (TealNode) and the client (TealClient) so that neither spells a name twice.

/// Header names of Teal's HTTP API. HTTP header names are case-insensitive; these are the
/// spellings Teal sends.
public enum APIHeader {
  /// `x-teal-node: n1` on every answer: the node that answered.
  public static let node = "x-teal-node"
  /// `x-teal-leader: n2` on every answer when the answering node knows the leader.
  public static let leader = "x-teal-leader"
  /// Sent by the client on every write; the same key and body get the first answer.
  public static let idempotencyKey = "Idempotency-Key"
  /// `Authorization: Bearer <token>` on every request but `GET /health`.
  public static let authorization = "Authorization"
  /// `Retry-After: 1` (seconds) on a 503 `no_leader`.
  public static let retryAfter = "Retry-After"
  public static let contentType = "Content-Type"
  public static let accept = "Accept"

  /// The value of the `Authorization` header for `token`.
  public static func bearer(_ token: String) -> String { "Bearer \(token)" }

  /// The token in an `Authorization` header value, or nil when it is not `Bearer <token>`.
  public static func bearerToken(from value: String) -> String? {
    let prefix = "bearer "
    guard value.count > prefix.count, value.lowercased().hasPrefix(prefix) else { return nil }
    let token = value.dropFirst(prefix.count).trimmingCharacters(in: .whitespaces)
    return token.isEmpty ? nil : token
  }
}

/// Content types the API reads and writes.
public enum APIContentType {
  public static let json = "application/json"
  /// A service spec in YAML, as `teal spec validate` reads it (`POST /v1/services`).
  public static let yaml = "application/yaml"
}

/// Paths of the API. Path segments and query values are percent-encoded here.
public enum APIPath {
  public static let health = "/health"
  public static let ready = "/ready"
  public static let cluster = "/v1/cluster"
  /// This node's applied index and state hash (always this node's own view).
  public static let clusterState = "/v1/cluster/state"
  public static let services = "/v1/services"
  public static let tasksRoot = "/v1/tasks"
  public static let eventsRoot = "/v1/events"

  /// `GET /v1/services/{name}`, `DELETE /v1/services/{name}`.
  public static func service(_ name: String) -> String { "/v1/services/\(segment(name))" }

  /// `PUT /v1/services/{name}/scale`.
  public static func scale(_ name: String) -> String { "/v1/services/\(segment(name))/scale" }

  public static let deploymentsRoot = "/v1/deployments"

  /// `POST /v1/services/{name}/deployments[?supersede=true]`.
  public static func deployments(ofService name: String, supersede: Bool = false) -> String {
    "/v1/services/\(segment(name))/deployments" + (supersede ? "?supersede=true" : "")
  }

  /// `GET /v1/services/{name}/spec`: the serving revision's spec as YAML.
  public static func spec(_ name: String) -> String { "/v1/services/\(segment(name))/spec" }

  /// `GET /v1/deployments?service=`.
  public static func deployments(service: String? = nil) -> String {
    deploymentsRoot + query([("service", service)])
  }

  /// `GET /v1/deployments/{id}`.
  public static func deployment(_ id: String) -> String { "/v1/deployments/\(segment(id))" }

  /// `POST /v1/deployments/{id}/{action}`.
  public static func deployment(_ id: String, action: DeploymentActionName) -> String {
    "/v1/deployments/\(segment(id))/\(action.rawValue)"
  }

  /// `GET /v1/tasks?service=&node=`.
  public static func tasks(service: String? = nil, node: String? = nil) -> String {
    tasksRoot + query([("service", service), ("node", node)])
  }

  /// `GET /v1/events?service=&after=&limit=`.
  public static func events(service: String? = nil, after: UInt64? = nil, limit: Int? = nil) -> String {
    eventsRoot + query([("service", service), ("after", after.map(String.init)), ("limit", limit.map(String.init))])
  }

  public static let variablesRoot = "/v1/variables"

  /// `GET|PUT|DELETE /v1/variables/{path}[?cas=VERSION]`: the variable path keeps its `/`; each
  /// segment is percent-encoded.
  public static func variable(_ path: String, cas: UInt64? = nil) -> String {
    let segments = path.split(separator: "/", omittingEmptySubsequences: false).map { segment(String($0)) }
    return variablesRoot + "/" + segments.joined(separator: "/") + query([("cas", cas.map(String.init))])
  }

  /// `GET /v1/variables?prefix=&after=&limit=`.
  public static func variables(prefix: String? = nil, after: String? = nil, limit: Int? = nil) -> String {
    variablesRoot + query([("prefix", prefix), ("after", after), ("limit", limit.map(String.init))])
  }

  /// `path` with `stale=true` added to its query: the read is served from the node's own state.
  public static func stale(_ path: String) -> String {
    path + (path.contains("?") ? "&" : "?") + "stale=true"
  }

  private static let unreserved = CharacterSet(
    charactersIn: "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")

  /// `text` percent-encoded for use as one path segment or query value.
  public static func segment(_ text: String) -> String {
    text.addingPercentEncoding(withAllowedCharacters: unreserved) ?? text
  }

  private static func query(_ items: [(String, String?)]) -> String {
    let present = items.compactMap { name, value in value.map { "\(name)=\(segment($0))" } }
    return present.isEmpty ? "" : "?" + present.joined(separator: "&")
  }
}
