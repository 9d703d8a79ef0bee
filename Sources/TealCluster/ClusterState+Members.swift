// Membership changes as ClusterState records them: the addresses of members added through the API,
// the change in flight (one at a time), the ids removed for good, and the outcome of the last change.
// The Raft configuration itself lives in Raft's configuration entries; the leader's membership
// controller turns the change recorded here into those entries and commits `finishMemberChange`.

import TealWire

/// An operator's membership request (`POST` / `DELETE /v1/cluster/members`).
public enum MemberChangeRequest: Codable, Hashable, Sendable, CustomStringConvertible {
  /// Add a node: it joins as a Raft learner, the leader promotes it to voter once it caught up.
  case add(NodeInfo)
  /// Remove a member (voter or learner). Its id is never admitted again.
  case remove(NodeID)

  public var node: NodeID {
    switch self {
    case .add(let info): info.id
    case .remove(let id): id
    }
  }

  public var action: String {
    switch self {
    case .add: "add"
    case .remove: "remove"
    }
  }

  public var description: String { "\(action) \(node)" }
}

/// The change in flight: what was asked, at which log index and log time.
public struct MemberChange: Codable, Hashable, Sendable {
  public var request: MemberChangeRequest
  public var index: UInt64
  public var requestedAt: LogTime
}

/// How the last change ended.
public struct MemberChangeOutcome: Codable, Hashable, Sendable {
  public var request: MemberChangeRequest
  public var requestedAt: LogTime
  public var finishedAt: LogTime
  /// Why the change could not be made; nil when it was.
  public var error: String?
}

/// ClusterState's membership records.
///
/// Invariants: at most one change is in flight; an id in `removed` is in neither `directory` nor
/// the state's `nodes`, and no request adds it again; `removed` holds at most ``maximumRemoved`` ids
/// (further removals are refused: the cluster's history of removals is bounded).
public struct ClusterMembership: Codable, Hashable, Sendable {
  /// Where each member added through the API listens, by node id. Founding members are found
  /// through their own `announceNode` (and the static configuration until then).
  public internal(set) var directory: [String: NodeInfo] = [:]
  /// Ids removed for good, with the log time of their removal.
  public internal(set) var removed: [String: LogTime] = [:]
  public internal(set) var change: MemberChange?
  public internal(set) var last: MemberChangeOutcome?

  public static let maximumRemoved = 4096

  public init() {}
}

extension ClusterState {
  /// Where `node` listens: its own announcement, else the address it was added with.
  public func memberAddress(_ node: NodeID) -> NodeInfo? {
    nodes[node.rawValue]?.info ?? membership.directory[node.rawValue]
  }

  /// Whether `node` was removed from the cluster (its id is never admitted again).
  public func wasRemoved(_ node: NodeID) -> Bool { membership.removed[node.rawValue] != nil }

  mutating func applyRequestMemberChange(
    _ request: MemberChangeRequest, _ context: inout ApplyContext
  ) throws(ClusterRejection) -> ClusterResponse {
    let node = request.node
    if let current = membership.change {
      // Removing the node an add is still bringing in aborts that add.
      if case .add(let info) = current.request, case .remove(let id) = request, info.id == id {
        membership.change = MemberChange(request: request, index: context.index, requestedAt: logTime)
        record(.membershipChange, service: nil, "membership: adding \(id) aborted; removing it", context)
        return .memberChangeAccepted(node: id)
      }
      throw ClusterRejection(
        code: .conflict,
        message:
          "a membership change is in flight (\(current.request), requested at index \(current.index)); "
          + "one change at a time: retry once it finished",
        field: "id")
    }
    if wasRemoved(node) {
      throw ClusterRejection(
        code: .conflict,
        message:
          "node id \(node) was removed from this cluster; a removed id is never admitted again (a node whose data "
          + "is gone must not vote under its old identity): give the node a new id",
        field: "id")
    }
    switch request {
    case .add(let info):
      if let problem = Self.addressProblem(info.address) {
        throw ClusterRejection(code: .badRequest, message: "node \(node) address \(problem)", field: "address")
      }
      guard (1...65535).contains(info.peerPort) else {
        throw ClusterRejection(
          code: .badRequest, message: "node \(node) peerPort \(info.peerPort) is not in 1...65535", field: "peerPort")
      }
      guard !info.apiURL.isEmpty, info.apiURL.utf8.count <= 2048 else {
        throw ClusterRejection(code: .badRequest, message: "node \(node) apiURL must be 1...2048 bytes", field: "api")
      }
      if nodes[node.rawValue] != nil || membership.directory[node.rawValue] != nil {
        throw ClusterRejection(code: .conflict, message: "node \(node) is already a member", field: "id")
      }
      membership.directory[node.rawValue] = info
      record(
        .membershipChange, service: nil,
        "membership: adding \(node) at \(info.address):\(info.peerPort) (api \(info.apiURL)) as a learner", context)
    case .remove:
      guard membership.removed.count < ClusterMembership.maximumRemoved else {
        throw ClusterRejection(
          code: .conflict,
          message: "this cluster has removed \(ClusterMembership.maximumRemoved) ids, the most it records")
      }
      record(.membershipChange, service: nil, "membership: removing \(node)", context)
    }
    membership.change = MemberChange(request: request, index: context.index, requestedAt: logTime)
    return .memberChangeAccepted(node: node)
  }

  mutating func applyFinishMemberChange(
    _ node: NodeID, error: String?, _ context: inout ApplyContext
  ) throws(ClusterRejection) -> ClusterResponse {
    guard let current = membership.change, current.request.node == node else {
      return .ignored(reason: "no membership change of \(node) is in flight")
    }
    let problem = error.map { String($0.prefix(1024)) }
    membership.change = nil
    membership.last = MemberChangeOutcome(
      request: current.request, requestedAt: current.requestedAt, finishedAt: logTime, error: problem)
    switch (current.request, problem) {
    case (.add, nil):
      record(.membershipChange, service: nil, "membership: \(node) is a voter", context)
    case (.add, let reason?):
      membership.directory[node.rawValue] = nil
      record(.membershipChange, service: nil, "membership: adding \(node) failed: \(reason)", context)
    case (.remove, nil):
      if nodes[node.rawValue]?.isUp == true {
        _ = try applyNodeDown(node, incarnation: nodes[node.rawValue]?.incarnation ?? 0, &context)
      }
      nodes[node.rawValue] = nil
      membership.directory[node.rawValue] = nil
      membership.removed[node.rawValue] = logTime
      context.allServicesTouched = true
      record(.membershipChange, service: nil, "membership: \(node) removed; its id is never admitted again", context)
    case (.remove, let reason?):
      record(.membershipChange, service: nil, "membership: removing \(node) failed: \(reason)", context)
    }
    return .memberChangeFinished(node: node)
  }
}
