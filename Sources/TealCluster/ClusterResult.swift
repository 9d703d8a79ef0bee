// What applying an entry says back to its proposer. Codable, so the node returns it through Raft
// as bytes (`encode()` / `init(decoding:)`), and recorded with the idempotency key.

import Foundation
import TealDeploy
import TealWire

/// The outcome of applying one entry.
public enum ClusterResult: Codable, Hashable, Sendable {
  case ok(ClusterResponse)
  case rejected(ClusterRejection)

  public var isOK: Bool {
    if case .ok = self { return true }
    return false
  }

  /// JSON with sorted keys.
  public func encode() -> [UInt8] {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys]
    do {
      return Array(try encoder.encode(self))
    } catch {
      preconditionFailure("a ClusterResult always encodes to JSON: \(error)")
    }
  }

  public init(decoding bytes: some Collection<UInt8>) throws(ClusterEntryError) {
    do {
      self = try JSONDecoder().decode(ClusterResult.self, from: Data(bytes))
    } catch {
      throw .malformed(reason: "cluster result: " + ClusterEntryError.describe(error))
    }
  }
}

/// What an accepted command did. Small facts only: the node renders the current read views for the
/// HTTP answer (a retried request therefore gets the same outcome with today's view of the service).
public enum ClusterResponse: Codable, Hashable, Sendable {
  case serviceCreated(service: String, revision: RevisionID)
  /// `isNew` is false when the spec equals the latest revision's (no new revision).
  case revisionRegistered(revision: RevisionID, isNew: Bool)
  case serviceScaled(service: String, desiredCount: Int)
  /// `removed`: the service had no tasks left and is gone; otherwise its tasks are draining.
  case serviceDeleting(service: String, removed: Bool)
  /// The new session's client id (the log index of the registration).
  case sessionRegistered(clientID: UInt64)
  case nodeAnnounced(NodeID)
  /// `changed` is false when the node already had that liveness.
  case nodeLiveness(node: NodeID, up: Bool, changed: Bool)
  case taskPlaced(taskID: String)
  case taskRetired(taskID: String)
  /// `accepted` reports changed or confirmed the state; `ignored` ones named unknown tasks or services.
  case reportsApplied(accepted: Int, ignored: Int)
  /// A deployment was submitted (or retried): its id and the green revision.
  case deploymentSubmitted(service: String, deploymentID: String, revision: RevisionID)
  /// A deployment took an operator's request, a hook answer, a wake-up or a datapoint.
  case deploymentUpdated(service: String, deploymentID: String)
  /// A variable was written; `version` is the entry's log index.
  case variableWritten(path: String, version: UInt64)
  /// A variable was removed; `version` is the version it had.
  case variableDeleted(path: String, version: UInt64)
  /// A fact that no longer matters (e.g. `taskStopped` for a task already gone).
  case ignored(reason: String)
  /// A membership change was recorded as the change in flight.
  case memberChangeAccepted(node: NodeID)
  /// The change in flight ended (see `ClusterState.membership.last`).
  case memberChangeFinished(node: NodeID)
}

/// A refused command. `code` matches the HTTP API's error codes; `field` is a path in the service
/// spec (`productionPort`, `task.port`) or a request field (`desiredCount`).
public struct ClusterRejection: Error, Codable, Hashable, Sendable, CustomStringConvertible {
  public enum Code: String, Codable, Hashable, Sendable, CaseIterable {
    /// The entry could not be decoded (HTTP 400).
    case badRequest = "bad_request"
    /// The entry was too large (HTTP 413).
    case tooLarge = "too_large"
    /// A service, revision, task or node named by the command does not exist (HTTP 404).
    case notFound = "not_found"
    /// The command contradicts the current state: name or port taken, service being deleted (HTTP 409).
    case conflict = "conflict"
    /// A value of the spec or request breaks a rule (HTTP 422).
    case invalidSpec = "invalid_spec"
    /// The idempotency key was used before with another request (HTTP 422).
    case idempotencyMismatch = "idempotency_mismatch"
    /// The entry names a client session that was never registered, or expired or was evicted: register
    /// a new one. The command did not take effect.
    case unknownSession = "unknown_session"
    /// The entry's session sequence is below the session's last one: the client moved on; the command
    /// did not take effect (its answer is gone).
    case staleSequence = "stale_sequence"
    /// A leader-only command landed in a term other than its stamp's: the proposer was no longer leader.
    /// Never recorded under an idempotency key; the node may map it to 503 `no_leader`.
    case staleTerm = "stale_term"
    /// A compare-and-set found another version than the one expected; `version` is the current one
    /// (0 when the object does not exist) (HTTP 409).
    case versionMismatch = "version_mismatch"
  }

  public var code: Code
  public var message: String
  public var field: String?
  /// The current version of the object, for `version_mismatch` (absent otherwise, and from the JSON).
  public var version: UInt64?

  public init(code: Code, message: String, field: String? = nil, version: UInt64? = nil) {
    self.code = code
    self.message = message
    self.field = field
    self.version = version
  }

  public var description: String {
    "\(code.rawValue): \(message)" + (field.map { " (field \($0))" } ?? "")
  }
}
