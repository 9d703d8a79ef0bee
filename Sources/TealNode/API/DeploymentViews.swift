// Deployments in the API's words (TealAPI bodies). Pure functions of the state.

import Foundation
import TealAPI
import TealCluster
import TealDeploy
import TealWire

enum DeploymentViews {
  static func date(_ instant: Instant) -> Date {
    Date(timeIntervalSince1970: Double(instant.millisecondsSinceEpoch) / 1000)
  }

  /// Lines of the deployment's history in a view.
  static let recentLimit = 20

  /// Active and recent deployments, newest first, optionally of one service.
  static func list(_ state: ClusterState, service: String?) -> DeploymentList {
    var items: [(created: Instant, view: DeploymentSummaryView)] = []
    for deployment in state.allDeployments() where service == nil || deployment.service == service {
      items.append((deployment.createdAt, summary(deployment)))
    }
    for (name, past) in state.pastDeployments where service == nil || name == service {
      for summary in past {
        items.append(
          (
            summary.createdAt,
            DeploymentSummaryView(
              id: summary.id, service: summary.service, status: summary.status.rawValue,
              stage: summary.stage?.rawValue, blue: summary.blue.description, green: summary.green.description,
              createdAt: date(summary.createdAt), updatedAt: date(summary.endedAt))
          ))
      }
    }
    items.sort { ($0.created, $0.view.id) > ($1.created, $1.view.id) }
    return DeploymentList(deployments: items.map(\.view))
  }

  static func summary(_ deployment: Deployment) -> DeploymentSummaryView {
    DeploymentSummaryView(
      id: deployment.id, service: deployment.service, status: deployment.status.rawValue,
      stage: deployment.stage?.rawValue, blue: deployment.blue.revision.description,
      green: deployment.green.description, createdAt: date(deployment.createdAt), updatedAt: date(deployment.clock))
  }

  /// The full view of deployment `id` (a held one, or the summary of a replaced one), or nil.
  static func view(_ id: String, in state: ClusterState, controller: ControllerView?) -> DeploymentView? {
    if let deployment = state.deployment(id: id) {
      return view(deployment, in: state, controller: controller)
    }
    guard let service = ClusterState.service(ofDeployment: id),
      let past = state.pastDeployments[service]?.first(where: { $0.id == id })
    else { return nil }
    let none = WeightPair(blue: 0, green: 0)
    // A summary keeps no configuration; the green revision's spec holds the strategy it ran with.
    let strategy = state.services[service]?.revision(past.green.number)?.revision.spec.deployment.strategy
    return DeploymentView(
      id: past.id, service: past.service, status: past.status.rawValue, stage: past.stage?.rawValue,
      blue: past.blue.description, green: past.green.description,
      strategy: strategy?.rawValue ?? DeploymentStrategy.BLUE_GREEN.rawValue,
      createdAt: date(past.createdAt), updatedAt: date(past.endedAt),
      stageTimeline: past.stageTimeline.map { StageTime(stage: $0.stage.rawValue, enteredAt: date($0.enteredAt)) },
      weights: DeploymentWeights(production: none, test: none, generation: 0), bake: nil, hooks: [], tasks: [],
      controller: nil, pausedBy: nil, reason: past.reason, recent: [])
  }

  static func view(_ deployment: Deployment, in state: ClusterState, controller: ControllerView?) -> DeploymentView {
    let weights = deployment.desired.routes.weights
    func pair(_ split: WeightSplit) -> WeightPair { WeightPair(blue: split.bluePercent, green: split.greenPercent) }
    let configuration = deployment.configuration
    let bakeStart = deployment.stageTimeline.last { $0.stage == .BAKE_TIME }?.enteredAt
    var bakeEnd: Instant?
    if deployment.stage == .BAKE_TIME, case .waiting(let until) = deployment.gate {
      bakeEnd = until
    } else if let bakeStart {
      bakeEnd = bakeStart + configuration.bakeTime
    }
    var hooks = (state.hookRecords[deployment.id] ?? []).map { record in
      let ended = record.result == nil && deployment.hook?.executionId != record.executionId
      return HookExecutionView(
        stage: record.stage.rawValue, executionId: record.executionId, attempts: record.attempts,
        result: record.result ?? (ended ? "TIMED_OUT" : nil))
    }
    if let running = deployment.hook, !hooks.contains(where: { $0.executionId == running.executionId }) {
      hooks.append(
        HookExecutionView(
          stage: running.stage.rawValue, executionId: running.executionId, attempts: running.attempt - 1, result: nil))
    }
    var counts: [String: DeploymentTaskCount] = [:]
    for task in state.tasks(service: deployment.service) where task.desired == .running {
      guard task.revision == deployment.green || task.revision == deployment.blue.revision else { continue }
      let key = "\(task.revision) \(task.node)"
      var count =
        counts[key]
        ?? DeploymentTaskCount(revision: task.revision.description, node: task.node.rawValue, running: 0, healthy: 0)
      count.running += 1
      if task.healthy { count.healthy += 1 }
      counts[key] = count
    }
    return DeploymentView(
      id: deployment.id, service: deployment.service, status: deployment.status.rawValue,
      stage: deployment.stage?.rawValue, blue: deployment.blue.revision.description,
      green: deployment.green.description, strategy: configuration.strategy.rawValue,
      createdAt: date(deployment.createdAt), updatedAt: date(deployment.clock),
      stageTimeline: deployment.stageTimeline.map {
        StageTime(stage: $0.stage.rawValue, enteredAt: date($0.enteredAt))
      },
      weights: DeploymentWeights(
        production: pair(weights.production), test: pair(weights.test), generation: deployment.desired.routes.generation
      ),
      bake: BakeWindow(
        seconds: Double(configuration.bakeTime.milliseconds) / 1000, startedAt: bakeStart.map(date),
        endsAt: bakeEnd.map(date)),
      hooks: hooks, tasks: counts.keys.sorted().compactMap { counts[$0] },
      controller: controller, pausedBy: deployment.pause?.requestedBy,
      reason: deployment.reason,
      recent: deployment.history.suffix(recentLimit).map {
        DeploymentNote(at: date($0.at), message: ClusterState.readable($0.message))
      })
  }
}
