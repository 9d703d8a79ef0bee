// The records ClusterState holds. All are value types; every dictionary in them is keyed by String
// so that the snapshot (JSON with sorted keys) is canonical.

import TealDeploy
import TealWire

// MARK: Services and revisions

/// A registered revision and the log time it was registered at.
public struct ClusterRevision: Codable, Hashable, Sendable {
  public var revision: Revision
  public var createdAt: LogTime

  public init(revision: Revision, createdAt: LogTime) {
    self.revision = revision
    self.createdAt = createdAt
  }

  public var id: RevisionID { revision.id }
  public var digest: String { revision.digest }
}

/// One service.
///
/// Invariants: revision numbers strictly increase along `revisions`, from 1 (old revisions nothing
/// uses any more are forgotten beyond ``ClusterState/maximumRevisionsPerService``, so numbers may have
/// gaps; the newest is never forgotten, so the next number is always the last one's plus 1);
/// `currentRevision` is one of them; a registered revision never changes.
public struct ClusterService: Codable, Hashable, Sendable {
  public var name: String
  /// Tasks of the current revision that placement keeps running (0...1000).
  public var desiredCount: Int
  public var productionPort: Int
  public var testPort: Int
  public var revisions: [ClusterRevision]
  /// The number of the revision serving production (the one placement runs).
  public var currentRevision: Int
  /// Set by `deleteService`: its tasks drain and stop, then the service disappears.
  public var deleting: Bool
  public var routes: ServiceRoutes
  public var createdAt: LogTime
  /// How the routes of the deployment in control map onto `routes` (nil while none is).
  public var deploymentRoutes: DeploymentRouteMarks?
  /// The revisions whose tasks crash (see ``CrashLoop``), keyed by revision number in decimal; nil
  /// rather than empty, so a service that never crashed snapshots as before.
  public var crashLoops: [String: CrashLoop]? = nil

  public var currentRevisionID: RevisionID { RevisionID(service: name, number: currentRevision) }

  public func revision(_ number: Int) -> ClusterRevision? {
    // Contiguous from 1 until the first revision is forgotten: then a binary search.
    if number >= 1, number <= revisions.count, revisions[number - 1].id.number == number {
      return revisions[number - 1]
    }
    var low = 0
    var high = revisions.count
    while low < high {
      let middle = (low + high) / 2
      if revisions[middle].id.number < number { low = middle + 1 } else { high = middle }
    }
    return low < revisions.count && revisions[low].id.number == number ? revisions[low] : nil
  }

  /// The number the next registered revision gets.
  public var nextRevisionNumber: Int { (revisions.last?.id.number ?? 0) + 1 }

  /// The spec of the current revision.
  public var currentSpec: ServiceSpec {
    guard let revision = revision(currentRevision) else {
      preconditionFailure("service \(name): current revision \(currentRevision) is not registered")
    }
    return revision.revision.spec
  }
}

// MARK: Routes

/// One target of a service's committed routes: a task that is running, healthy, meant to run and on
/// a node that is up.
public struct RouteTarget: Codable, Hashable, Sendable {
  public var taskID: String
  public var node: NodeID
  public var address: String
  public var port: Int
  public var revision: RevisionID

  public init(taskID: String, node: NodeID, address: String, port: Int, revision: RevisionID) {
    self.taskID = taskID
    self.node = node
    self.address = address
    self.port = port
    self.revision = revision
  }
}

/// The committed routes of one service.
///
/// Invariants: `generation` starts at 1 when the service is created and increases by one whenever
/// `targets` or a weight changes, never otherwise and never backwards; `targets` is sorted by task
/// id; weights are in basis points (10,000 = 100 %) and each listener's weights sum to 10,000.
public struct ServiceRoutes: Codable, Hashable, Sendable {
  public var generation: UInt64
  public var targets: [RouteTarget]
  /// Production listener weights per revision, in basis points.
  public var production: [RevisionID: Int]
  /// Test listener weights per revision, in basis points.
  public var test: [RevisionID: Int]

  public init(generation: UInt64, targets: [RouteTarget], production: [RevisionID: Int], test: [RevisionID: Int]) {
    self.generation = generation
    self.targets = targets
    self.production = production
    self.test = test
  }

  /// 10,000 basis points: all traffic.
  public static let fullWeight = 10_000

  /// Weights as the HTTP API writes them: `"web:1"` → percent (basis points / 100).
  public static func percentages(_ weights: [RevisionID: Int]) -> [String: Double] {
    Dictionary(uniqueKeysWithValues: weights.map { ($0.key.description, Double($0.value) / 100) })
  }

  private struct Weight: Codable {
    var revision: RevisionID
    var basisPoints: Int
  }

  private enum CodingKeys: String, CodingKey { case generation, targets, production, test }

  // Weights as arrays sorted by revision: a dictionary keyed by a struct would encode in hash order.
  public init(from decoder: any Decoder) throws {
    let container = try decoder.container(keyedBy: CodingKeys.self)
    generation = try container.decode(UInt64.self, forKey: .generation)
    targets = try container.decode([RouteTarget].self, forKey: .targets)
    func weights(_ key: CodingKeys) throws -> [RevisionID: Int] {
      var result: [RevisionID: Int] = [:]
      for weight in try container.decode([Weight].self, forKey: key) { result[weight.revision] = weight.basisPoints }
      return result
    }
    production = try weights(.production)
    test = try weights(.test)
  }

  public func encode(to encoder: any Encoder) throws {
    var container = encoder.container(keyedBy: CodingKeys.self)
    try container.encode(generation, forKey: .generation)
    try container.encode(targets, forKey: .targets)
    func sorted(_ weights: [RevisionID: Int]) -> [Weight] {
      weights.keys.sorted().map { Weight(revision: $0, basisPoints: weights[$0] ?? 0) }
    }
    try container.encode(sorted(production), forKey: .production)
    try container.encode(sorted(test), forKey: .test)
  }
}

// MARK: Tasks

/// What the cluster wants of a task.
public enum TaskDesiredState: String, Codable, Hashable, Sendable, CaseIterable {
  /// Keep it running (and routed once healthy).
  case running
  /// Retired: out of the routes, waiting until every live node applied the generation without it.
  case draining
  /// Every live node stopped routing to it: its node stops the process and reports `taskStopped`.
  case stopping
}

/// One placed task.
///
/// Invariants: `id == "\(service).\(revision.number).\(sequence)"`; `drainGeneration` is set exactly
/// when `desired != .running`.
public struct ClusterTask: Codable, Hashable, Sendable {
  public var id: String
  public var service: String
  public var revision: RevisionID
  public var node: NodeID
  /// The state's task counter when the task was placed (unique, increasing).
  public var sequence: UInt64
  public var desired: TaskDesiredState
  public var state: TaskRunState
  public var healthy: Bool
  public var address: String?
  public var port: Int?
  public var placedAt: LogTime
  /// Log time of the first report that it runs.
  public var startedAt: LogTime?
  /// Log time of the first report that it is healthy (nil until then).
  public var healthyAt: LogTime? = nil
  /// True once its node, restarted, reported it as a process of its previous run that it drains
  /// (``TaskReport/previousRun``); nil otherwise.
  public var previousRun: Bool? = nil
  /// The routes generation that no longer contains it (set by retirement).
  public var drainGeneration: UInt64?
  /// Why it was retired.
  public var retireReason: String?

  /// Whether the balancers may send it traffic (its node's liveness is checked separately).
  public var isRoutable: Bool {
    desired == .running && state == .running && healthy && address != nil && port != nil
  }
}

// MARK: Nodes

/// Committed liveness of a node.
public enum NodeLiveness: String, Codable, Hashable, Sendable, CaseIterable {
  case up
  case down
}

/// One node of the cluster as the log knows it.
public struct ClusterNode: Codable, Hashable, Sendable {
  public var info: NodeInfo
  public var liveness: NodeLiveness
  /// The gossip incarnation of the last committed liveness change.
  public var incarnation: UInt64
  /// The routes generation per service this node last reported applied (never decreases).
  public var routesApplied: [String: UInt64]
  public var announcedAt: LogTime
  /// Log time of the last liveness change (or of the first announcement).
  public var livenessChangedAt: LogTime
  /// Shutting down gracefully (`drainNode`): no new placements; its tasks drain.
  public var draining: Bool

  public var id: NodeID { info.id }
  public var isUp: Bool { liveness == .up }
}

// MARK: Events

/// What kind of transition an event records.
public enum ClusterEventKind: String, Codable, Hashable, Sendable, CaseIterable {
  case serviceCreated
  case revisionRegistered
  case serviceScaled
  case serviceDeleting
  case serviceDeleted
  case taskPlaced
  case taskStarting
  case taskRunning
  case taskHealthy
  case taskUnhealthy
  case taskExited
  case taskDraining
  case taskStopping
  case taskStopped
  /// Removed without the stop rule because its node is down.
  case taskLost
  case nodeAnnounced
  case nodeUp
  case nodeDown
  case nodeDraining
  /// A membership change was requested, made or refused.
  case membershipChange
  case deploymentSubmitted
  /// A deployment entered a lifecycle stage or changed status.
  case deploymentProgress
  /// A message of the deployment's own history (hooks, convergence, alarms).
  case deploymentNote
}

/// One notable transition, at the log index and log time of the entry that caused it.
public struct ClusterEvent: Codable, Hashable, Sendable {
  public var index: UInt64
  public var time: LogTime
  public var service: String?
  public var kind: ClusterEventKind
  public var message: String

  public init(index: UInt64, time: LogTime, service: String?, kind: ClusterEventKind, message: String) {
    self.index = index
    self.time = time
    self.service = service
    self.kind = kind
    self.message = message
  }
}
