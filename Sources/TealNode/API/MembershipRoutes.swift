// The membership routes: GET, POST /v1/cluster/members and DELETE /v1/cluster/members/{id}. A
// request is checked here against this node's view (for a clear 4xx at once), then recorded through
// the log as the change in flight (ClusterState refuses a second one, deterministically); the
// leader's MembershipController makes it in Raft's configuration.

import Foundation
import Hummingbird
import TealAPI
import TealCluster
import TealRaft
import TealWire

extension APIServer {
  func addMembershipRoutes(_ router: Router<BasicRequestContext>) {
    router.get("/v1/cluster/members") { request, _ in
      let state = try await read(request)
      return try json(MembershipChecks.view(state, raft: await log.raft.membership))
    }
    router.post("/v1/cluster/members") { request, _ in
      let body = try await readBody(request)
      let member: MemberAddRequest
      do { member = try TealJSON.decode(MemberAddRequest.self, from: Data(body)) } catch {
        throw APIFailure.badRequest(
          "the body must be {\"id\": \"n4\", \"address\": \"127.0.0.4\", \"peerPort\": 7000, \"apiPort\": 7070}: "
            + APIViews.describe(error))
      }
      let state = await log.localState()
      let info = try MembershipChecks.add(
        member, defaults: configuration, raft: await log.raft.membership, state: state)
      _ = try await write(.requestMemberChange(.add(info)), request, body: body) { _, _ in Response(status: .accepted) }
      return try await acceptedView()
    }
    router.delete("/v1/cluster/members/:id") { request, context in
      let text = try context.parameters.require("id")
      let state = await log.localState()
      let id = try MembershipChecks.remove(text, raft: await log.raft.membership, state: state)
      _ = try await write(.requestMemberChange(.remove(id)), request, body: []) { _, _ in Response(status: .accepted) }
      return try await acceptedView()
    }
  }
}

extension APIServer {
  /// The membership after a change was recorded, as this node applied it: 202 (the change is in flight).
  fileprivate func acceptedView() async throws -> Response {
    let state = await log.localState()
    return try json(MembershipChecks.view(state, raft: await log.raft.membership), status: .accepted)
  }
}

/// The checks of a membership request against one node's view, and the membership view. Pure.
enum MembershipChecks {
  /// The member to add, or the refusal: 400 for a malformed id, address or port; 409 for an id
  /// that is a member or was removed, or while a change is in flight.
  static func add(
    _ request: MemberAddRequest, defaults: NodeConfiguration, raft: RaftConfiguration, state: ClusterState
  ) throws(APIFailure) -> NodeInfo {
    let id: NodeID
    do { id = try NodeID(validating: request.id) } catch {
      throw .badRequest("'\(request.id)' is not a node id: \(error)", field: "id")
    }
    guard NodeConfiguration.isIPAddress(request.address) else {
      throw .badRequest(
        "'\(request.address)' is not an IPv4 or IPv6 address literal (the node binds and dials from it)",
        field: "address")
    }
    let peerPort = request.peerPort ?? defaults.peerPort
    let apiPort = request.apiPort ?? defaults.apiPort
    for (field, port) in [("peerPort", peerPort), ("apiPort", apiPort)] where !(1...65_535).contains(port) {
      throw .badRequest("\(port) is not a TCP port (1-65535)", field: field)
    }
    guard peerPort != apiPort else { throw .badRequest("must differ from peerPort (\(peerPort))", field: "apiPort") }
    if raft.members.contains(id) || state.node(id) != nil || state.membership.directory[id.rawValue] != nil {
      throw conflict("node \(id) is already a member", field: "id")
    }
    if state.wasRemoved(id) {
      throw conflict(
        "node id \(id) was removed from this cluster and is never admitted again (a node whose data is gone must "
          + "not vote under its old identity); give the node a new id", field: "id")
    }
    try checkNoChangeInFlight(state)
    return NodeInfo(
      id: id, address: request.address,
      apiURL: "http://\(NodeConfiguration.hostLiteral(request.address)):\(apiPort)", peerPort: peerPort)
  }

  /// The member to remove, or the refusal: 400 for a malformed id, 404 for an id that is not a
  /// member, 409 for the last voter or while another change is in flight.
  static func remove(_ text: String, raft: RaftConfiguration, state: ClusterState) throws(APIFailure) -> NodeID {
    let id: NodeID
    do { id = try NodeID(validating: text) } catch {
      throw .badRequest("'\(text)' is not a node id: \(error)", field: "id")
    }
    let adding: NodeID? =
      if case .add(let info) = state.membership.change?.request { info.id } else { nil }
    guard raft.members.contains(id) || adding == id else {
      if state.wasRemoved(id) { throw .notFound("node \(id) was removed already") }
      throw .notFound(
        "no member \(id); the members are " + raft.members.sorted().map(\.rawValue).joined(separator: ", "))
    }
    if raft.voters == [id] {
      throw conflict("cannot remove \(id): it is the last voter (a cluster keeps at least one)", field: "id")
    }
    // Removing the node an add is still bringing in aborts the add; anything else waits its turn.
    if adding != id { try checkNoChangeInFlight(state) }
    return id
  }

  private static func checkNoChangeInFlight(_ state: ClusterState) throws(APIFailure) {
    guard let change = state.membership.change else { return }
    throw conflict(
      "a membership change is in flight (\(change.request), requested at index \(change.index)); one change at "
        + "a time: retry once it finished (GET /v1/cluster/members)", field: "id")
  }

  private static func conflict(_ message: String, field: String) -> APIFailure {
    APIFailure(status: .conflict, code: "conflict", message: message, field: field)
  }

  /// The members of `raft` (the latest configuration, as this node knows it) with their addresses.
  static func view(_ state: ClusterState, raft: RaftConfiguration) -> MembershipView {
    let members = raft.members.sorted().map { id -> MembershipMember in
      let info = state.memberAddress(id)
      let liveness = state.node(id).map { $0.isUp ? "up" : "down" } ?? "unknown"
      return MembershipMember(
        id: id.rawValue, role: raft.voters.contains(id) ? .voter : .learner, address: info?.address ?? "",
        peerPort: info?.peerPort, api: info?.apiURL ?? "", state: liveness)
    }
    let change = state.membership.change.map {
      MemberChangeView(
        action: $0.request.action, id: $0.request.node.rawValue, requestedAt: APIViews.date($0.requestedAt))
    }
    let last = state.membership.last.map {
      MemberChangeView(
        action: $0.request.action, id: $0.request.node.rawValue, requestedAt: APIViews.date($0.requestedAt),
        finishedAt: APIViews.date($0.finishedAt), error: $0.error)
    }
    return MembershipView(
      members: members, change: change, last: last, removed: state.membership.removed.keys.sorted())
  }
}
