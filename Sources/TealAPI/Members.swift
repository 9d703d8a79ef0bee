import Foundation

// The bodies of the membership routes: `GET /v1/cluster/members`, `POST /v1/cluster/members`,
// `DELETE /v1/cluster/members/{id}` (Docs/API.md "Membership").

/// `POST /v1/cluster/members`: a node to add. It joins as a Raft learner and the leader promotes it to
/// voter once it has caught up. `peerPort` and `apiPort` default to the answering node's ports.
///
/// `{"id": "n4", "address": "127.0.0.4", "peerPort": 7000, "apiPort": 7070}`
public struct MemberAddRequest: Codable, Hashable, Sendable {
  /// The new node's id (1-63 characters of `[a-z0-9-]`, not starting with `-`); never one that was removed.
  public var id: String
  /// The IP address the node binds and dials from (its certificate must carry it).
  public var address: String
  public var peerPort: Int?
  public var apiPort: Int?

  public init(id: String, address: String, peerPort: Int? = nil, apiPort: Int? = nil) {
    self.id = id
    self.address = address
    self.peerPort = peerPort
    self.apiPort = apiPort
  }
}

/// Every member's place in the Raft configuration and where it listens, the change in flight and
/// how the last one ended. The answer of all three routes (`POST` and `DELETE` answer 202 with it:
/// the change is in flight; poll `GET` until `change` is absent).
public struct MembershipView: Codable, Hashable, Sendable {
  /// By id.
  public var members: [MembershipMember]
  /// The change in flight, if any (at most one).
  public var change: MemberChangeView?
  /// How the last finished change ended.
  public var last: MemberChangeView?
  /// Ids removed from this cluster; they are never admitted again.
  public var removed: [String]

  public init(members: [MembershipMember], change: MemberChangeView?, last: MemberChangeView?, removed: [String]) {
    self.members = members
    self.change = change
    self.last = last
    self.removed = removed
  }
}

/// A member of the Raft configuration.
public struct MembershipMember: Codable, Hashable, Sendable {
  public var id: String
  /// `voter` or `learner`.
  public var role: MembershipRole
  /// Empty when the answering node knows no address for it.
  public var address: String
  public var peerPort: Int?
  /// The member's API endpoint, e.g. `http://127.0.0.4:7070`; empty when unknown.
  public var api: String
  /// Committed liveness (`up`, `down`), or `unknown` before the member announced itself.
  public var state: String

  public init(id: String, role: MembershipRole, address: String, peerPort: Int?, api: String, state: String) {
    self.id = id
    self.role = role
    self.address = address
    self.peerPort = peerPort
    self.api = api
    self.state = state
  }
}

public enum MembershipRole: String, Codable, Hashable, Sendable, CaseIterable {
  case voter
  case learner
}

/// A membership change: in flight (`finishedAt` and `error` absent) or finished.
public struct MemberChangeView: Codable, Hashable, Sendable {
  /// `add` or `remove`.
  public var action: String
  public var id: String
  public var requestedAt: Date
  public var finishedAt: Date?
  /// Why a finished change could not be made; absent when it was.
  public var error: String?

  public init(action: String, id: String, requestedAt: Date, finishedAt: Date? = nil, error: String? = nil) {
    self.action = action
    self.id = id
    self.requestedAt = requestedAt
    self.finishedAt = finishedAt
    self.error = error
  }
}

extension APIPath {
  /// `GET` and `POST /v1/cluster/members`.
  public static let members = "/v1/cluster/members"

  /// `DELETE /v1/cluster/members/{id}`.
  public static func member(_ id: String) -> String { "\(members)/\(segment(id))" }
}
