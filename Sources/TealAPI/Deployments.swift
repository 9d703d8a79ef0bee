import Foundation

// The bodies of the deployment endpoints:
// - `POST /v1/services/{name}/deployments` (body: the new spec, YAML or JSON by Content-Type;
//   `?supersede=true` rolls back a deployment in progress first) → 201 ``DeploymentView``;
// - `GET /v1/deployments?service=` → ``DeploymentList``;
// - `GET /v1/deployments/{id}` → ``DeploymentView``;
// - `POST /v1/deployments/{id}/{action}` (``DeploymentActionName``, no body) → 200 ``DeploymentView``
//   (`retry` → 201 with the new deployment);
// - `GET /v1/services/{name}/spec` → the serving revision's spec as YAML (`teal deploy --set`).

/// The operator actions of `POST /v1/deployments/{id}/{action}`.
public enum DeploymentActionName: String, Codable, Hashable, Sendable, CaseIterable {
  /// Roll back, as ECS's stop: STOP_REQUESTED, then ROLLBACK_SUCCESSFUL (STOPPED if it had not
  /// started).
  case stop
  /// Roll back (final status ROLLBACK_SUCCESSFUL).
  case rollback
  case pause
  /// End a pause, or release a PAUSE hook.
  case `continue`
  /// Skip the remaining production steps and bake time.
  case promote
  /// A new deployment of the same revisions as a rolled-back or stopped one.
  case retry
}

/// `GET /v1/deployments?service=`: active and recent deployments, newest first.
public struct DeploymentList: Codable, Hashable, Sendable {
  public var deployments: [DeploymentSummaryView]

  public init(deployments: [DeploymentSummaryView]) { self.deployments = deployments }
}

/// One deployment, short.
public struct DeploymentSummaryView: Codable, Hashable, Sendable {
  /// `web-42`: the service and the log index that submitted it.
  public var id: String
  public var service: String
  /// ECS's statuses: `PENDING`, `IN_PROGRESS`, ..., `SUCCESSFUL`, `ROLLBACK_SUCCESSFUL`, ...
  public var status: String
  /// The lifecycle stage, absent before the first.
  public var stage: String?
  /// `web:1`.
  public var blue: String
  /// `web:2`.
  public var green: String
  public var createdAt: Date
  /// The log time of the deployment's last input.
  public var updatedAt: Date

  public init(
    id: String, service: String, status: String, stage: String?, blue: String, green: String, createdAt: Date,
    updatedAt: Date
  ) {
    self.id = id
    self.service = service
    self.status = status
    self.stage = stage
    self.blue = blue
    self.green = green
    self.createdAt = createdAt
    self.updatedAt = updatedAt
  }
}

/// `GET /v1/deployments/{id}`: everything `teal deployment describe` and `watch` show.
public struct DeploymentView: Codable, Hashable, Sendable {
  public var id: String
  public var service: String
  public var status: String
  public var stage: String?
  public var blue: String
  public var green: String
  /// `BLUE_GREEN`, `CANARY`, `LINEAR` or `STEPS`.
  public var strategy: String
  public var createdAt: Date
  public var updatedAt: Date
  /// Every stage entered, in order.
  public var stageTimeline: [StageTime]
  public var weights: DeploymentWeights
  /// Present once the configuration has a bake time; `startedAt` once BAKE_TIME began.
  public var bake: BakeWindow?
  /// Every hook execution so far, in order; the one awaited has no result yet.
  public var hooks: [HookExecutionView]
  /// Tasks of blue and green per node.
  public var tasks: [DeploymentTaskCount]
  /// The node that drives the deployment now (the leader) and its term.
  public var controller: ControllerView?
  /// Set while an operator's pause holds the deployment.
  public var pausedBy: String?
  /// Why it rolled back, stopped or failed.
  public var reason: String?
  /// The deployment's last history lines, oldest first (at most 20).
  public var recent: [DeploymentNote]

  public init(
    id: String, service: String, status: String, stage: String?, blue: String, green: String, strategy: String,
    createdAt: Date, updatedAt: Date, stageTimeline: [StageTime], weights: DeploymentWeights, bake: BakeWindow?,
    hooks: [HookExecutionView], tasks: [DeploymentTaskCount], controller: ControllerView?, pausedBy: String?,
    reason: String?, recent: [DeploymentNote]
  ) {
    self.id = id
    self.service = service
    self.status = status
    self.stage = stage
    self.blue = blue
    self.green = green
    self.strategy = strategy
    self.createdAt = createdAt
    self.updatedAt = updatedAt
    self.stageTimeline = stageTimeline
    self.weights = weights
    self.bake = bake
    self.hooks = hooks
    self.tasks = tasks
    self.controller = controller
    self.pausedBy = pausedBy
    self.reason = reason
    self.recent = recent
  }

  /// Whether the deployment reached a final status (`SUCCESSFUL`, `STOPPED`, `ROLLBACK_SUCCESSFUL`,
  /// `ROLLBACK_FAILED`).
  public var isFinished: Bool { DeploymentView.finalStatuses.contains(status) }

  public static let finalStatuses: Set<String> = ["SUCCESSFUL", "STOPPED", "ROLLBACK_SUCCESSFUL", "ROLLBACK_FAILED"]
}

public struct StageTime: Codable, Hashable, Sendable {
  public var stage: String
  public var enteredAt: Date

  public init(stage: String, enteredAt: Date) {
    self.stage = stage
    self.enteredAt = enteredAt
  }
}

/// The deployment's weights, in percent, and the engine's routes generation.
public struct DeploymentWeights: Codable, Hashable, Sendable {
  public var production: WeightPair
  public var test: WeightPair
  /// The deployment's routes generation (raised by each weight change).
  public var generation: Int

  public init(production: WeightPair, test: WeightPair, generation: Int) {
    self.production = production
    self.test = test
    self.generation = generation
  }
}

public struct WeightPair: Codable, Hashable, Sendable {
  /// Percent, 0...100.
  public var blue: Double
  public var green: Double

  public init(blue: Double, green: Double) {
    self.blue = blue
    self.green = green
  }
}

/// Bake time: absolute log times, so a failover neither restarts nor extends it.
public struct BakeWindow: Codable, Hashable, Sendable {
  public var seconds: Double
  public var startedAt: Date?
  public var endsAt: Date?

  public init(seconds: Double, startedAt: Date?, endsAt: Date?) {
    self.seconds = seconds
    self.startedAt = startedAt
    self.endsAt = endsAt
  }
}

public struct HookExecutionView: Codable, Hashable, Sendable {
  public var stage: String
  public var executionId: String
  /// Attempts made so far (calls, including those without an answer).
  public var attempts: Int
  /// `SUCCEEDED`, `FAILED`, `TIMED_OUT` or `CONTINUED`; absent while it runs.
  public var result: String?

  public init(stage: String, executionId: String, attempts: Int, result: String?) {
    self.stage = stage
    self.executionId = executionId
    self.attempts = attempts
    self.result = result
  }
}

/// Tasks of one revision on one node.
public struct DeploymentTaskCount: Codable, Hashable, Sendable {
  public var revision: String
  public var node: String
  /// Tasks meant to run (not retired).
  public var running: Int
  public var healthy: Int

  public init(revision: String, node: String, running: Int, healthy: Int) {
    self.revision = revision
    self.node = node
    self.running = running
    self.healthy = healthy
  }
}

public struct ControllerView: Codable, Hashable, Sendable {
  public var node: String
  public var term: UInt64

  public init(node: String, term: UInt64) {
    self.node = node
    self.term = term
  }
}

public struct DeploymentNote: Codable, Hashable, Sendable {
  public var at: Date
  public var message: String

  public init(at: Date, message: String) {
    self.at = at
    self.message = message
  }
}
