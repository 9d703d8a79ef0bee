// What goes into a deployment (inputs carried in the replicated log) and what comes out (the
// desired state every node reconciles to). Everything here is Codable with a canonical encoding:
// no dictionaries or sets, only arrays in a defined order.

import TealWire

// MARK: - Inputs

/// One input to a deployment, as a Raft command carries it.
///
/// Invariant: `now` is the proposer's clock; the deployment clamps it so that its time never runs
/// backwards (`Deployment.clock`). An input naming another deployment is ignored.
public struct DeploymentInput: Codable, Hashable, Sendable {
  public var deploymentId: String
  public var now: Instant
  public var command: DeploymentCommand

  public init(deploymentId: String, now: Instant, command: DeploymentCommand) {
    self.deploymentId = deploymentId
    self.now = now
    self.command = command
  }
}

/// What happened, or what someone asks for. Node reports and hook answers are facts, checked
/// against the current state (a stale one is ignored); wake-ups and alarm datapoints come from
/// the leader; operator requests from the API.
public enum DeploymentCommand: Codable, Hashable, Sendable {
  // MARK: Lifecycle
  /// A new deployment (PENDING). Handled by `ServiceDeployments`.
  case submit(DeploymentSubmission)
  /// Starts a PENDING deployment once its service is free (`ServiceDeployments.startable`).
  case start

  // MARK: Node reports
  /// `healthy` tasks of `revision` on `node` pass their health check now, and `unhealthy` run but
  /// fail it after having passed it (a revision going bad, not a replacement still starting).
  case taskHealth(node: NodeID, revision: RevisionID, healthy: Int, unhealthy: Int? = nil)
  /// A task of `revision` on `node` failed (exited, or never became healthy).
  case taskFailed(node: NodeID, revision: RevisionID, reason: String)
  /// `node` has applied routes of `generation` (or later) to its load balancer.
  case routesApplied(node: NodeID, generation: Int)
  /// `node` routes nothing to `revision` any more and its requests in flight finished.
  case revisionDrained(node: NodeID, revision: RevisionID)
  /// `node` runs no task of `revision` any more.
  case taskSetStopped(node: NodeID, revision: RevisionID)
  /// Committed liveness: a node marked down does not hold a deployment back.
  case nodeDown(NodeID)
  /// Committed liveness: a node (new or back) must report before the deployment moves on.
  case nodeUp(NodeID)

  // MARK: Hooks
  /// A hook's answer. Ignored unless that execution and attempt is the one awaited.
  case hookAnswered(HookResult)

  // MARK: From the leader
  /// Time passed: the deployment acts on every deadline at or before `now`.
  case wakeUp
  /// A metrics sample of green's target group, aggregated by the leader from node reports.
  case metricSample(MetricSample)

  // MARK: Operator
  /// Stop means roll back (as in ECS): STOP_REQUESTED, then the rollback. During a rollback, the
  /// rollback continues.
  case stop(requestedBy: String)
  /// ROLLBACK_REQUESTED, then the rollback.
  case rollback(requestedBy: String)
  /// Holds the deployment where it is (no stage, step or hook moves; deadlines of waits are
  /// extended by the pause). Alarms and the circuit breaker still roll back.
  case pause(requestedBy: String)
  /// Ends a pause, and releases a PAUSE hook that waits.
  case `continue`(requestedBy: String)
  /// Skips the remaining production steps and bake time: 100 % green, then CLEAN_UP.
  case promote(requestedBy: String)
  /// A newer deployment of the same service asked this one to roll back.
  case superseded(by: String)
  /// A new deployment (the input's deploymentId) of the same green over the same blue as the
  /// rolled-back or stopped deployment `of`, which must be the service's current one. Handled by
  /// `ServiceDeployments`.
  case retry(of: String, requestedBy: String)
}

/// A new deployment: green replaces blue on `nodes`.
public struct DeploymentSubmission: Codable, Hashable, Sendable {
  /// The revision to deploy; its spec gives the desired count and the deployment configuration.
  public var green: Revision
  /// The revision serving now, with its own desired count (never borrowed from green).
  public var blue: BlueRevision
  /// The live nodes when the deployment was submitted (later changes come as nodeUp/nodeDown).
  public var nodes: [NodeID]
  /// Revisions of the service with running tasks (RECONCILE_SERVICE hooks run only when more than
  /// one is active, as in ECS).
  public var activeRevisions: [RevisionID]
  /// Roll back the service's active deployment first instead of refusing.
  public var supersede: Bool

  public init(
    green: Revision, blue: BlueRevision, nodes: [NodeID], activeRevisions: [RevisionID]? = nil, supersede: Bool = false
  ) {
    self.green = green
    self.blue = blue
    self.nodes = nodes
    self.activeRevisions = activeRevisions ?? [blue.revision]
    self.supersede = supersede
  }
}

/// The blue side of a deployment: its revision and its own desired count.
public struct BlueRevision: Codable, Hashable, Sendable {
  public var revision: RevisionID
  public var desiredCount: Int

  public init(revision: RevisionID, desiredCount: Int) {
    self.revision = revision
    self.desiredCount = desiredCount
  }
}

/// What the deployment answers to an input.
public enum DeploymentReply: Codable, Hashable, Sendable {
  /// The input changed the state (or was a fact already known).
  case accepted
  /// The input was stale or did not apply (a late hook answer, a report for another revision).
  case ignored(reason: String)
  /// A request was refused; the state did not change. Tell the caller why.
  case refused(reason: String)
}

// MARK: - Desired state

/// The world a deployment wants, at every moment: what every node reconciles its tasks and its
/// load balancer to, and reports back. Anyone can compute what to do from it alone, so nothing is
/// lost between a commit and an action.
public struct DesiredState: Codable, Hashable, Sendable {
  /// The service's listener weights, with the generation nodes report when applied.
  public var routes: Routes
  /// One entry per revision the deployment touches, sorted by revision.
  public var taskSets: [TaskSetTarget]

  /// The desired task set of `revision`, if the deployment has one.
  public func taskSet(_ revision: RevisionID) -> TaskSetTarget? { taskSets.first { $0.revision == revision } }
}

/// The routes of one service.
///
/// Invariant: `generation` increases with every change of weights or of which task sets are
/// routable; both splits sum to 100 % (`WeightSplit`).
public struct Routes: Codable, Hashable, Sendable {
  public var generation: Int
  public var blue: RevisionID
  public var green: RevisionID
  public var weights: TrafficWeights
}

/// How many tasks of a revision should run, and whether the load balancer may send them traffic.
public struct TaskSetTarget: Codable, Hashable, Sendable {
  public var revision: RevisionID
  /// Tasks to run (while `phase` is `.serving` or `.draining`).
  public var count: Int
  public var phase: Phase

  public init(revision: RevisionID, count: Int, phase: Phase) {
    self.revision = revision
    self.count = count
    self.phase = phase
  }

  public enum Phase: String, Codable, Hashable, Sendable {
    /// Run `count` tasks; route to them by the weights.
    case serving
    /// Keep the tasks, route nothing to them; report `revisionDrained` once requests in flight are done.
    case draining
    /// Stop every task (only after every live node reported the revision drained); report
    /// `taskSetStopped`.
    case stopped
  }
}

// MARK: - Observations

/// What the deployment knows of one node, from its reports.
public struct NodeObservation: Codable, Hashable, Sendable {
  public var node: NodeID
  public var live: Bool
  /// Highest routes generation the node reported applied (0: none).
  public var routesGeneration: Int
  /// Healthy tasks per revision on this node, sorted by revision.
  public var health: [RevisionHealth]
  /// Revisions this node reported drained, sorted.
  public var drained: [RevisionID]
  /// Revisions this node reported stopped, sorted.
  public var stopped: [RevisionID]

  init(node: NodeID) {
    self.node = node
    live = true
    routesGeneration = 0
    health = []
    drained = []
    stopped = []
  }

  public func healthy(_ revision: RevisionID) -> Int { health.first { $0.revision == revision }?.healthy ?? 0 }
  public func unhealthy(_ revision: RevisionID) -> Int { health.first { $0.revision == revision }?.unhealthy ?? 0 }
}

/// Healthy tasks of one revision, and those that run but went unhealthy.
public struct RevisionHealth: Codable, Hashable, Sendable {
  public var revision: RevisionID
  public var healthy: Int
  /// Omitted from the encoding when 0, so states without unhealthy tasks encode as before.
  public var unhealthy: Int

  public init(revision: RevisionID, healthy: Int, unhealthy: Int = 0) {
    self.revision = revision
    self.healthy = healthy
    self.unhealthy = unhealthy
  }

  private enum CodingKeys: String, CodingKey { case revision, healthy, unhealthy }

  public init(from decoder: any Decoder) throws {
    let container = try decoder.container(keyedBy: CodingKeys.self)
    revision = try container.decode(RevisionID.self, forKey: .revision)
    healthy = try container.decode(Int.self, forKey: .healthy)
    unhealthy = try container.decodeIfPresent(Int.self, forKey: .unhealthy) ?? 0
  }

  public func encode(to encoder: any Encoder) throws {
    var container = encoder.container(keyedBy: CodingKeys.self)
    try container.encode(revision, forKey: .revision)
    try container.encode(healthy, forKey: .healthy)
    if unhealthy != 0 { try container.encode(unhealthy, forKey: .unhealthy) }
  }
}

/// What a deployment waits for from the world before it moves on.
public enum Convergence: Codable, Hashable, Sendable, CustomStringConvertible {
  /// Every live node applied routes of this generation or later.
  case routes(generation: Int)
  /// At least `count` healthy tasks of `revision` on live nodes.
  case healthy(revision: RevisionID, count: Int)
  /// Every live node reported `revision` drained.
  case drained(RevisionID)
  /// Every live node reported `revision` stopped.
  case stopped(RevisionID)

  public var description: String {
    switch self {
    case .routes(let generation): return "every live node applies routes generation \(generation)"
    case .healthy(let revision, let count): return "\(count) healthy tasks of \(revision)"
    case .drained(let revision): return "every live node drains \(revision)"
    case .stopped(let revision): return "every live node stops \(revision)"
    }
  }
}

extension Array {
  /// Inserts or replaces the element with `key`, keeping the array sorted by `key`.
  mutating func upsert<Key: Comparable>(_ element: Element, by key: (Element) -> Key) {
    let value = key(element)
    if let index = firstIndex(where: { key($0) == value }) {
      self[index] = element
    } else {
      let index = firstIndex { key($0) > value } ?? endIndex
      insert(element, at: index)
    }
  }
}

extension Array where Element: Comparable {
  /// Inserts `element` keeping the array sorted and free of duplicates.
  mutating func insertSorted(_ element: Element) {
    guard !contains(element) else { return }
    insert(element, at: firstIndex { $0 > element } ?? endIndex)
  }
}
