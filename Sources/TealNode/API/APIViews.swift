// ClusterState's records in the API's words (TealAPI bodies). Pure functions of the state.

import Foundation
import TealAPI
import TealCluster
import TealConsensus
import TealDeploy
import TealRaft
import TealWire

enum APIViews {
  static func date(_ time: LogTime) -> Date { Date(timeIntervalSince1970: Double(time.millisecondsSinceEpoch) / 1000) }

  static func summary(_ name: String, in state: ClusterState) -> ServiceSummary? {
    guard let service = state.services[name] else { return nil }
    let tasks = state.tasks.values.filter { $0.service == name }
    let current = service.currentRevisionID
    return ServiceSummary(
      name: name, desiredCount: service.desiredCount,
      runningCount: tasks.filter { $0.state == .running && $0.revision == current }.count,
      healthyCount: tasks.filter { $0.isRoutable && $0.revision == current }.count,
      currentRevision: current.description, productionPort: service.productionPort, testPort: service.testPort)
  }

  static func detail(_ name: String, in state: ClusterState) -> ServiceDetail? {
    guard let service = state.services[name], let summary = summary(name, in: state) else { return nil }
    let revisions = service.revisions.map {
      RevisionView(id: $0.id.description, number: $0.id.number, digest: $0.digest, createdAt: date($0.createdAt))
    }
    let tasks = state.tasks.values.filter { $0.service == name }.sorted { $0.sequence < $1.sequence }.map(task)
    return ServiceDetail(summary: summary, revisions: revisions, tasks: tasks, routes: routes(service.routes))
  }

  /// Weights as percentages of the listener's total.
  static func routes(_ routes: TealCluster.ServiceRoutes) -> RoutesView {
    func percentages(_ weights: [RevisionID: Int]) -> [String: Double] {
      let total = Double(weights.values.reduce(0, +))
      guard total > 0 else { return [:] }
      var result: [String: Double] = [:]
      for (revision, weight) in weights {
        let share: Double = Double(weight) * 10_000 / total
        result[revision.description] = share.rounded() / 100
      }
      return result
    }
    return RoutesView(
      generation: routes.generation, production: percentages(routes.production), test: percentages(routes.test),
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

  static func events(in state: ClusterState, service: String?, after: UInt64?, limit: Int) -> [EventView] {
    var selected = state.history.events.filter { event in
      (service == nil || event.service == service) && (after.map { event.index > $0 } ?? true)
    }
    if selected.count > limit { selected = Array(selected.prefix(limit)) }
    return selected.map {
      EventView(index: $0.index, time: date($0.time), service: $0.service, kind: $0.kind.rawValue, message: $0.message)
    }
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
