// The commands of the replicated log: inputs to ClusterState, never outputs. Each is a client's
// request, a node's report of a fact, or a decision the leader derived from its own view.

import TealDeploy
import TealWire

/// One input to ``ClusterState``.
///
/// Three kinds (see `isLeaderOnly`):
/// - **Requests** (`createService`, `registerRevision`, `scaleService`, `deleteService`, `putVariable`,
///   `deleteVariable`): from the API,
///   usually with an idempotency key; validated against the current state.
/// - **Reports** (`announceNode`, `taskReports`, `routesApplied`, `taskStopped`): facts from a node;
///   checked against the current state (a report about an unknown task is ignored, not rejected).
/// - **Leader decisions** (`placeTask`, `retireTask`, `nodeDown`, `nodeUp`): derived from leader-only
///   state (placement, gossip); rejected on apply when the entry's term is not the stamp's term.
public enum ClusterCommand: Codable, Hashable, Sendable {
  // MARK: Requests

  /// Creates the service and its revision 1 from `spec` (the revision's digest is the spec's).
  case createService(ServiceSpec)
  /// Registers `spec` as the next revision of `service` (none if equal to the latest). Does not change
  /// the current revision: a deployment does that.
  case registerRevision(service: String, spec: ServiceSpec)
  /// Sets the desired task count of the current revision (0...1000).
  case scaleService(service: String, desiredCount: Int)
  /// Retires every task of the service (through the stop rule) and removes the service once none remain.
  case deleteService(service: String)
  /// Opens a client session; its id is the entry's log index (see `ClientSessionStamp`).
  case registerSession

  // MARK: Reports (facts from a node)

  /// A node's identity and addresses; a node announced for the first time starts up.
  case announceNode(NodeInfo)
  /// The node's view of its tasks. Reports about tasks that are unknown or not on `node` are ignored.
  case taskReports(node: NodeID, reports: [TaskReport])
  /// The routes generation per service that `node`'s balancer applied and whose removed targets it drained.
  case routesApplied(node: NodeID, generations: [String: UInt64])
  /// `node` stopped the process of a task that was `stopping`; removes the task.
  case taskStopped(node: NodeID, taskID: String)
  /// `node` is shutting down gracefully (SIGTERM): placement stops using it and its tasks are retired
  /// through the stop rule; it stays a live node (its balancer keeps serving) until it goes down.
  /// Cleared when the node announces itself again or comes back up.
  case drainNode(node: NodeID)

  // MARK: Leader decisions (rejected when the stamp's term is not the entry's term)

  /// Places a new task of revision `revision` of `service` on `node`; apply names it
  /// `<service>.<revision>.<sequence>`.
  case placeTask(service: String, revision: Int, node: NodeID)
  /// Takes a task out of the routes and stops it once every live node stopped routing to it.
  case retireTask(taskID: String, reason: String)
  /// Committed liveness: `node` is down (its tasks are removed and replaced by placement).
  case nodeDown(node: NodeID, incarnation: UInt64)
  /// Committed liveness: `node` is up again.
  case nodeUp(node: NodeID, incarnation: UInt64)

  // MARK: Deployments

  /// Registers `spec` as the next revision of `service` (or reuses the latest revision when equal) and
  /// starts a deployment from the serving revision (blue) to it (green). Its id is
  /// `<service>-<log index>`. With `supersede`, a deployment in progress is rolled back first;
  /// without it, the command is refused while one is in progress. A request.
  case submitDeployment(service: String, spec: ServiceSpec, supersede: Bool)
  /// An operator's request to a deployment (stop = roll back, as in ECS). A request.
  case deploymentAction(service: String, deploymentID: String, action: DeploymentAction)
  /// A hook's answer, as the leader's controller received it. A fact: ignored unless that execution
  /// and attempt is the one the deployment awaits.
  case hookAnswered(service: String, deploymentID: String, result: HookResult)
  /// Time passed: the deployment acts on every deadline at or before the stamp's `now`. Leader-only.
  case deploymentWakeUp(service: String, deploymentID: String)
  /// One aggregated datapoint of green's production traffic over all nodes' balancers. Leader-only.
  case deploymentMetrics(service: String, deploymentID: String, sample: MetricSample)
  /// An operator's membership request: add a node (as a learner, promoted once caught up) or remove
  /// one. Refused while another change is in flight. A request.
  case requestMemberChange(MemberChangeRequest)
  /// The leader made (or could not make) the change in flight in Raft's configuration. Leader-only.
  case finishMemberChange(node: NodeID, error: String?)

  // MARK: Variables (requests)

  /// Sets the variable at `path` to `value`; its version becomes the entry's log index. With `cas`,
  /// only if the variable's version is `cas` (0: only if it does not exist); otherwise refused with
  /// `version_mismatch` carrying the current version.
  case putVariable(path: String, value: String, cas: UInt64?)
  /// Removes the variable at `path` (`not_found` if absent). With `cas`, only if its version is `cas`.
  case deleteVariable(path: String, cas: UInt64?)

  /// Whether the command was derived from leader-only state (see the type's documentation).
  public var isLeaderOnly: Bool {
    switch self {
    case .placeTask, .retireTask, .nodeDown, .nodeUp, .deploymentWakeUp, .deploymentMetrics, .finishMemberChange:
      return true
    case .submitDeployment, .deploymentAction, .hookAnswered, .putVariable, .deleteVariable, .requestMemberChange:
      return false
    case .createService, .registerRevision, .scaleService, .deleteService, .registerSession, .announceNode,
      .taskReports,
      .routesApplied, .taskStopped, .drainNode:
      return false
    }
  }

  /// The command's name as it appears in the log and in messages, e.g. `createService`.
  public var name: String {
    switch self {
    case .createService: return "createService"
    case .registerRevision: return "registerRevision"
    case .scaleService: return "scaleService"
    case .deleteService: return "deleteService"
    case .registerSession: return "registerSession"
    case .announceNode: return "announceNode"
    case .taskReports: return "taskReports"
    case .routesApplied: return "routesApplied"
    case .taskStopped: return "taskStopped"
    case .drainNode: return "drainNode"
    case .placeTask: return "placeTask"
    case .retireTask: return "retireTask"
    case .nodeDown: return "nodeDown"
    case .nodeUp: return "nodeUp"
    case .submitDeployment: return "submitDeployment"
    case .deploymentAction: return "deploymentAction"
    case .hookAnswered: return "hookAnswered"
    case .deploymentWakeUp: return "deploymentWakeUp"
    case .deploymentMetrics: return "deploymentMetrics"
    case .putVariable: return "putVariable"
    case .deleteVariable: return "deleteVariable"
    case .requestMemberChange: return "requestMemberChange"
    case .finishMemberChange: return "finishMemberChange"
    }
  }
}

/// What an operator may ask of a deployment (`teal deployment stop|rollback|pause|continue|promote|retry`).
public enum DeploymentAction: String, Codable, Hashable, Sendable, CaseIterable {
  /// Roll back (as ECS's stop): STOP_REQUESTED, then the rollback, ending ROLLBACK_SUCCESSFUL (or
  /// STOPPED for a deployment that had not started).
  case stop
  /// ROLLBACK_REQUESTED, then the rollback; final status ROLLBACK_SUCCESSFUL.
  case rollback
  /// Hold where it is; alarms and the circuit breaker still roll back.
  case pause
  /// End a pause, or release a PAUSE hook.
  case `continue`
  /// Skip the remaining production steps and bake time.
  case promote
  /// Start a new deployment of the same green over the same blue as a rolled-back or stopped one.
  case retry
}

/// What a node announces about itself.
public struct NodeInfo: Codable, Hashable, Sendable {
  public var id: NodeID
  /// The address the node binds and dials from, e.g. `127.0.0.2`.
  public var address: String
  /// Base URL of its HTTP API, e.g. `http://127.0.0.2:7070`.
  public var apiURL: String
  public var peerPort: Int

  public init(id: NodeID, address: String, apiURL: String, peerPort: Int) {
    self.id = id
    self.address = address
    self.apiURL = apiURL
    self.peerPort = peerPort
  }
}

/// The process state of a task as its node sees it.
public enum TaskRunState: Codable, Hashable, Sendable {
  /// Placed, not started yet (the state of a task no report has mentioned).
  case pending
  /// The process was spawned; not listening yet.
  case starting
  case running
  /// The process ended with `code` (negative: killed by signal `-code`; ``lostExitCode``: its node
  /// found no process for it). Terminal.
  case exited(code: Int32)

  /// The code a node reports for a task that ended because of its node, not of its revision: one
  /// ClusterState has starting or running on it that no process of the node backs (it died while the
  /// node was down, or the runner's ledger lost it), or one of its previous run that the restarted
  /// node stopped. 256 is neither an exit status (0...255) nor a signal (negative). Neither the
  /// deployment's circuit breaker nor the crash-loop backoff counts such an exit.
  public static let lostExitCode: Int32 = 256

  /// The API's spelling: `pending`, `starting`, `running` or `exited`.
  public var name: String {
    switch self {
    case .pending: return "pending"
    case .starting: return "starting"
    case .running: return "running"
    case .exited: return "exited"
    }
  }
}

/// One task's state in a node's report.
public struct TaskReport: Codable, Hashable, Sendable {
  public var taskID: String
  public var state: TaskRunState
  /// The balancer's health verdict for the task (only a running task can be healthy).
  public var healthy: Bool
  /// Where the task listens; nil until known.
  public var address: String?
  public var port: Int?
  /// True when a restarted node reports a process of its previous run that it takes out of the
  /// routes before stopping it: unhealthy because its node restarted, not because its revision
  /// went bad (the circuit breaker's health floor does not count it as unhealthy). Nil otherwise,
  /// and absent from the encoding then.
  public var previousRun: Bool?

  public init(
    taskID: String, state: TaskRunState, healthy: Bool, address: String? = nil, port: Int? = nil,
    previousRun: Bool? = nil
  ) {
    self.taskID = taskID
    self.state = state
    self.healthy = healthy
    self.address = address
    self.port = port
    self.previousRun = previousRun
  }
}
