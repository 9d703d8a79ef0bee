// ClusterState's records in the API's words (TealAPI bodies). Pure functions of the state.

import Foundation
import TealAPI
import TealCluster
import TealConsensus
import TealRaft
import TealWire

enum APIViews {
  static func date(_ time: LogTime) -> Date { Date(timeIntervalSince1970: Double(time.millisecondsSinceEpoch) / 1000) }

  static func summary(_ name: String, in state: ClusterState) -> ServiceSummary? {
    state.serviceSummary(name).map(summary)
  }

  static func summary(_ view: ClusterServiceSummary) -> ServiceSummary {
    ServiceSummary(
      name: view.name, desiredCount: view.desiredCount, runningCount: view.runningCount,
      healthyCount: view.healthyCount, currentRevision: view.currentRevision.description,
      productionPort: view.productionPort, testPort: view.testPort)
  }

  static func detail(_ name: String, in state: ClusterState) -> ServiceDetail? {
    guard let view = state.serviceDetail(name) else { return nil }
    let revisions = view.revisions.map {
      RevisionView(id: $0.id.description, number: $0.id.number, digest: $0.digest, createdAt: date($0.createdAt))
    }
    return ServiceDetail(
      summary: summary(view.summary), revisions: revisions, tasks: view.tasks.map(task), routes: routes(view.routes))
  }

  /// Weights as percentages (ClusterState's weights are basis points).
  static func routes(_ routes: TealCluster.ServiceRoutes) -> RoutesView {
    RoutesView(
      generation: routes.generation, production: TealCluster.ServiceRoutes.percentages(routes.production),
      test: TealCluster.ServiceRoutes.percentages(routes.test),
      targets: routes.targets.map {
        TealAPI.RouteTarget(
          task: $0.taskID, node: $0.node.rawValue, address: $0.address, port: $0.port, revision: $0.revision.description
        )
      })
  }

  static func task(_ task: ClusterTask) -> TaskView {
    let desired: TealAPI.TaskDesiredState =
      switch task.desired {
      case .running: .running
      case .draining: .draining
      case .stopping: .stopping
      }
    let state: TealAPI.TaskRunState =
      switch task.state {
      case .pending: .pending
      case .starting: .starting
      case .running: .running
      case .exited: .exited
      }
    return TaskView(
      id: task.id, service: task.service, revision: task.revision.description, node: task.node.rawValue,
      desired: desired, state: state, healthy: task.healthy, address: task.address ?? "", port: task.port ?? 0,
      startedAt: task.startedAt.map(date))
  }

  static func event(_ event: ClusterEvent) -> EventView {
    EventView(
      index: event.index, time: date(event.time), service: event.service, kind: event.kind.rawValue,
      message: event.message)
  }

  /// Members: every node of the Raft configuration and every node ClusterState knows, with Raft's
  /// role as far as this node can tell (its own, and who leads) and the committed liveness.
  static func clusterStatus(
    state: ClusterState, raft: RaftNodeStatus, membership: RaftConfiguration, configuration: NodeConfiguration
  ) -> ClusterStatus {
    var ids = Set(membership.members.map(\.rawValue))
    ids.formUnion(state.nodes.keys)
    let members = ids.sorted().map { id -> ClusterMember in
      let record = state.nodes[id]
      let nodeID = try? NodeID(validating: id)
      let role: MemberRole
      if nodeID == raft.leader {
        role = .leader
      } else if let nodeID, membership.learners.contains(nodeID) {
        role = .learner
      } else if nodeID == raft.id {
        role =
          switch raft.role {
          case .leader: .leader
          case .candidate, .preCandidate: .candidate
          case .follower: .follower
          }
      } else if let nodeID, membership.voters.contains(nodeID) {
        role = .follower
      } else {
        role = .unknown
      }
      let address = record?.info.address ?? nodeID.flatMap { configuration.peers[$0] } ?? ""
      let api = record?.info.apiURL ?? nodeID.flatMap { configuration.apiURL(of: $0) } ?? ""
      return ClusterMember(
        id: id, address: address, state: record?.isUp == true ? .up : .down, role: role, api: api)
    }
    return ClusterStatus(
      leader: raft.leader?.rawValue, term: raft.term, commitIndex: raft.commitIndex, appliedIndex: raft.appliedIndex,
      members: members)
  }

  static func describe(_ error: any Error) -> String {
    switch error {
    case DecodingError.keyNotFound(let key, _): "missing field '\(key.stringValue)'"
    case DecodingError.typeMismatch(_, let context), DecodingError.valueNotFound(_, let context):
      "wrong type at '\(context.codingPath.map(\.stringValue).joined(separator: "."))'"
    case DecodingError.dataCorrupted(let context): "malformed JSON: \(context.debugDescription)"
    default: "\(error)"
    }
  }
}
