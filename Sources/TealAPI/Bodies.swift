import Foundation

// The request and response bodies of every endpoint (NODE-CONTRACT). Optional properties are left
// out of the JSON when nil. Indexes, terms and generations are UInt64; ports and counts Int.

// MARK: - Health and readiness

/// `GET /health`: the process is up. `{"status": "ok", "node": "n1"}`.
public struct HealthResponse: Codable, Hashable, Sendable {
  public var status: String
  public var node: String

  public init(status: String = "ok", node: String) {
    self.status = status
    self.node = node
  }
}

/// `GET /ready`: 200 with `ready: true` when the node is a member with a known leader, else 503
/// with `ready: false`.
public struct ReadyResponse: Codable, Hashable, Sendable {
  public var ready: Bool
  public var node: String
  public var leader: String?

  public init(ready: Bool, node: String, leader: String? = nil) {
    self.ready = ready
    self.node = node
    self.leader = leader
  }
}

// MARK: - Cluster

/// `GET /v1/cluster`.
public struct ClusterStatus: Codable, Hashable, Sendable {
  /// The leader's node id, absent when none is known.
  public var leader: String?
  public var term: UInt64
  public var commitIndex: UInt64
  public var appliedIndex: UInt64
  public var members: [ClusterMember]

  public init(leader: String?, term: UInt64, commitIndex: UInt64, appliedIndex: UInt64, members: [ClusterMember]) {
    self.leader = leader
    self.term = term
    self.commitIndex = commitIndex
    self.appliedIndex = appliedIndex
    self.members = members
  }
}

/// One member of the cluster as the answering node sees it.
public struct ClusterMember: Codable, Hashable, Sendable {
  public var id: String
  public var address: String
  /// Committed liveness (`nodeDown` / `nodeUp` in the log), not one node's local opinion.
  public var state: MemberState
  public var role: MemberRole
  /// The member's API endpoint, e.g. `http://127.0.0.1:7070`.
  public var api: String

  public init(id: String, address: String, state: MemberState, role: MemberRole, api: String) {
    self.id = id
    self.address = address
    self.state = state
    self.role = role
    self.api = api
  }
}

public enum MemberState: String, Codable, Hashable, Sendable, CaseIterable {
  case up
  case down
}

public enum MemberRole: String, Codable, Hashable, Sendable, CaseIterable {
  case leader
  case follower
  case candidate
  case learner
  /// The answering node does not know (e.g. it is a follower and has not heard of that member).
  case unknown
}

/// `GET /v1/cluster/state`: this node's applied state in one line. Two nodes at the same applied
/// index hold byte-identical snapshots exactly when their `stateHash` values are equal.
public struct ClusterStateDigest: Codable, Hashable, Sendable {
  public var node: String
  public var appliedIndex: UInt64
  /// SHA-256 (hex) of the node's canonical ClusterState snapshot.
  public var stateHash: String

  public init(node: String, appliedIndex: UInt64, stateHash: String) {
    self.node = node
    self.appliedIndex = appliedIndex
    self.stateHash = stateHash
  }
}

// MARK: - Services

/// `GET /v1/services`.
public struct ServiceList: Codable, Hashable, Sendable {
  public var services: [ServiceSummary]

  public init(services: [ServiceSummary]) { self.services = services }
}

/// One service, short.
public struct ServiceSummary: Codable, Hashable, Sendable {
  public var name: String
  public var desiredCount: Int
  public var runningCount: Int
  public var healthyCount: Int
  /// The revision serving production, e.g. `web:1`.
  public var currentRevision: String
  public var productionPort: Int
  public var testPort: Int

  public init(
    name: String, desiredCount: Int, runningCount: Int, healthyCount: Int, currentRevision: String,
    productionPort: Int, testPort: Int
  ) {
    self.name = name
    self.desiredCount = desiredCount
    self.runningCount = runningCount
    self.healthyCount = healthyCount
    self.currentRevision = currentRevision
    self.productionPort = productionPort
    self.testPort = testPort
  }
}

/// `POST /v1/services` (201), `GET /v1/services/{name}`, `PUT .../scale`, `DELETE .../{name}`:
/// the ServiceSummary fields plus revisions, tasks and routes.
public struct ServiceDetail: Codable, Hashable, Sendable {
  public var name: String
  public var desiredCount: Int
  public var runningCount: Int
  public var healthyCount: Int
  public var currentRevision: String
  public var productionPort: Int
  public var testPort: Int
  /// Oldest first.
  public var revisions: [RevisionView]
  public var tasks: [TaskView]
  public var routes: RoutesView

  public init(summary: ServiceSummary, revisions: [RevisionView], tasks: [TaskView], routes: RoutesView) {
    self.name = summary.name
    self.desiredCount = summary.desiredCount
    self.runningCount = summary.runningCount
    self.healthyCount = summary.healthyCount
    self.currentRevision = summary.currentRevision
    self.productionPort = summary.productionPort
    self.testPort = summary.testPort
    self.revisions = revisions
    self.tasks = tasks
    self.routes = routes
  }

  /// The ServiceSummary fields alone.
  public var summary: ServiceSummary {
    ServiceSummary(
      name: name, desiredCount: desiredCount, runningCount: runningCount, healthyCount: healthyCount,
      currentRevision: currentRevision, productionPort: productionPort, testPort: testPort)
  }
}

/// `DELETE /v1/services/{name}`: the service while its tasks drain (`deleting`), or `deleted` once it
/// is gone (at once when it had no task).
public struct ServiceDeletion: Codable, Hashable, Sendable {
  public var name: String
  public var status: Status
  /// While `deleting`: the service with its draining tasks.
  public var service: ServiceDetail?

  public enum Status: String, Codable, Hashable, Sendable, CaseIterable {
    case deleting
    case deleted
  }

  public init(name: String, status: Status, service: ServiceDetail? = nil) {
    self.name = name
    self.status = status
    self.service = service
  }
}

/// An immutable, numbered revision of a service's spec.
public struct RevisionView: Codable, Hashable, Sendable {
  /// `web:1`.
  public var id: String
  public var number: Int
  /// The spec's canonical digest (as `teal spec validate` prints it).
  public var digest: String
  public var createdAt: Date

  public init(id: String, number: Int, digest: String, createdAt: Date) {
    self.id = id
    self.number = number
    self.digest = digest
    self.createdAt = createdAt
  }
}

/// The committed routes of a service: weights per revision on each listener, and the targets.
public struct RoutesView: Codable, Hashable, Sendable {
  /// Raised by every change of the routes; nodes report the generation they applied.
  public var generation: UInt64
  /// Revision id → percent of the production listener's traffic (0...100; may be fractional).
  public var production: [String: Double]
  /// Revision id → percent of the test listener's traffic.
  public var test: [String: Double]
  public var targets: [RouteTarget]

  public init(generation: UInt64, production: [String: Double], test: [String: Double], targets: [RouteTarget]) {
    self.generation = generation
    self.production = production
    self.test = test
    self.targets = targets
  }
}

/// One task the listeners may send traffic to.
public struct RouteTarget: Codable, Hashable, Sendable {
  /// The task id, e.g. `web.1.7`.
  public var task: String
  public var node: String
  public var address: String
  public var port: Int
  public var revision: String

  public init(task: String, node: String, address: String, port: Int, revision: String) {
    self.task = task
    self.node = node
    self.address = address
    self.port = port
    self.revision = revision
  }
}

/// `PUT /v1/services/{name}/scale`: `{"desiredCount": 3}`.
public struct ScaleRequest: Codable, Hashable, Sendable {
  public var desiredCount: Int

  public init(desiredCount: Int) { self.desiredCount = desiredCount }
}

// MARK: - Tasks

/// `GET /v1/tasks?service=&node=`.
public struct TaskList: Codable, Hashable, Sendable {
  public var tasks: [TaskView]

  public init(tasks: [TaskView]) { self.tasks = tasks }
}

/// One task: where the cluster placed it, what it should do and what its node reported.
public struct TaskView: Codable, Hashable, Sendable {
  /// `web.1.7`: service, revision number, sequence.
  public var id: String
  public var service: String
  public var revision: String
  public var node: String
  public var desired: TaskDesiredState
  public var state: TaskRunState
  public var healthy: Bool
  /// The address the task listens on (its node's address).
  public var address: String
  /// The port the task listens on; 0 until the node reported it.
  public var port: Int
  public var startedAt: Date?

  public init(
    id: String, service: String, revision: String, node: String, desired: TaskDesiredState, state: TaskRunState,
    healthy: Bool, address: String, port: Int, startedAt: Date? = nil
  ) {
    self.id = id
    self.service = service
    self.revision = revision
    self.node = node
    self.desired = desired
    self.state = state
    self.healthy = healthy
    self.address = address
    self.port = port
    self.startedAt = startedAt
  }
}

/// What the cluster wants of a task.
public enum TaskDesiredState: String, Codable, Hashable, Sendable, CaseIterable {
  case running
  /// Routing to it is being removed; it stops once every node drained it.
  case draining
  case stopping
}

/// What the task's node reported.
public enum TaskRunState: String, Codable, Hashable, Sendable, CaseIterable {
  case pending
  case starting
  case running
  case exited
}

// MARK: - Events

/// `GET /v1/events?service=&after=&limit=`.
public struct EventList: Codable, Hashable, Sendable {
  public var events: [EventView]

  public init(events: [EventView]) { self.events = events }
}

/// One entry of the cluster's event history, in log order.
public struct EventView: Codable, Hashable, Sendable {
  /// The log index of the entry that recorded it; `after=` takes this.
  public var index: UInt64
  /// The proposer's time stamp of that entry.
  public var time: Date
  public var service: String?
  /// A short, stable kind, e.g. `serviceCreated`, `taskStarted`, `nodeDown`.
  public var kind: String
  public var message: String

  public init(index: UInt64, time: Date, service: String? = nil, kind: String, message: String) {
    self.index = index
    self.time = time
    self.service = service
    self.kind = kind
    self.message = message
  }
}

// MARK: - Variables

/// `PUT /v1/variables/{path}`: `{"value": "..."}`.
public struct VariableWrite: Codable, Hashable, Sendable {
  public var value: String

  public init(value: String) { self.value = value }
}

/// `GET` and `PUT /v1/variables/{path}`: `{"path": "...", "value": "...", "version": 12}`. `DELETE`
/// answers the same shape without `value`, with the version the variable had.
public struct VariableView: Codable, Hashable, Sendable {
  public var path: String
  /// Absent in a `DELETE` answer.
  public var value: String?
  /// The log index of the write that set the value (its modify index).
  public var version: UInt64

  public init(path: String, value: String?, version: UInt64) {
    self.path = path
    self.value = value
    self.version = version
  }
}

/// One variable in `GET /v1/variables`: its path and version, no value.
public struct VariableSummary: Codable, Hashable, Sendable {
  public var path: String
  public var version: UInt64

  public init(path: String, version: UInt64) {
    self.path = path
    self.version = version
  }
}

/// `GET /v1/variables?prefix=&after=&limit=`: sorted by path; `next` (the last path of the page) is
/// present when more match: pass it as `after`.
public struct VariableList: Codable, Hashable, Sendable {
  public var variables: [VariableSummary]
  public var next: String?

  public init(variables: [VariableSummary], next: String? = nil) {
    self.variables = variables
    self.next = next
  }
}
