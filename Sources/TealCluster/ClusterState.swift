// The replicated state machine. `apply` is deterministic: no clock, no randomness, no iteration
// over a Dictionary or Set whose order reaches the output (every such loop sorts its keys first).

import TealDeploy
import TealWire

/// Everything the cluster agreed on: services and revisions, task placements and their reports,
/// committed routes, committed liveness, idempotency records, client sessions and the event history.
///
/// Invariants: every task's service exists and has the task's revision; every task's node is known
/// and up (tasks of a node that goes down are removed with it); `logTime` never decreases;
/// `appliedIndex` increases with every applied entry.
public struct ClusterState: Codable, Hashable, Sendable {
  /// Log index of the last applied entry (0 before any).
  public internal(set) var appliedIndex: UInt64 = 0
  /// The largest `now` of any applied entry's stamp.
  public internal(set) var logTime: LogTime = .zero
  /// By name.
  public internal(set) var services: [String: ClusterService] = [:]
  /// By task id.
  public internal(set) var tasks: [String: ClusterTask] = [:]
  /// By node id.
  public internal(set) var nodes: [String: ClusterNode] = [:]
  /// The last task sequence number handed out (task ids end in it).
  public internal(set) var taskSequence: UInt64 = 0
  public internal(set) var idempotency: IdempotencyTable
  public internal(set) var sessions: ClientSessionTable
  public internal(set) var history: EventHistory
  /// Task ids per service: an index derived from `tasks`, rebuilt on decode (not in the snapshot).
  /// Changed only through `insertTask` and `removeTask`.
  var taskIDsByService: [String: Set<String>] = [:]

  // MARK: Deployment state

  /// The deployments of each service, by service name: the engine's state, fed on every node by
  /// `apply` (see ClusterState+Deployments.swift). A service that never had a deployment has none.
  public internal(set) var deployments: [String: ServiceDeployments] = [:]
  /// Summaries of each service's replaced deployments, oldest first, at most
  /// ``maximumPastDeploymentsPerService`` per service.
  public internal(set) var pastDeployments: [String: [DeploymentSummary]] = [:]
  /// The answered hook executions of each held deployment, by deployment id.
  public internal(set) var hookRecords: [String: [HookRecord]] = [:]
  /// Membership changes: added members' addresses, the change in flight, removed ids
  /// (ClusterState+Members.swift).
  public internal(set) var membership = ClusterMembership()

  // MARK: Variables

  /// The key/value store of hooks and configuration (see Variables.swift).
  public internal(set) var variables = VariableTable()

  public init(
    eventCapacity: Int = EventHistory.defaultCapacity, idempotencyCapacity: Int = IdempotencyTable.defaultCapacity,
    idempotencyRetentionMilliseconds: Int64 = IdempotencyTable.defaultRetentionMilliseconds,
    sessionCapacity: Int = ClientSessionTable.defaultCapacity,
    sessionIdleMilliseconds: Int64 = ClientSessionTable.defaultIdleMilliseconds
  ) {
    idempotency = IdempotencyTable(
      capacity: idempotencyCapacity, retentionMilliseconds: idempotencyRetentionMilliseconds)
    sessions = ClientSessionTable(capacity: sessionCapacity, idleMilliseconds: sessionIdleMilliseconds)
    history = EventHistory(capacity: eventCapacity)
  }

  // MARK: Coding (the task index is derived, so it is rebuilt rather than stored)

  enum CodingKeys: String, CodingKey {
    case appliedIndex, logTime, services, tasks, nodes, taskSequence, idempotency, sessions, history, deployments,
      pastDeployments, hookRecords, variables, membership
  }

  public init(from decoder: any Decoder) throws {
    let container = try decoder.container(keyedBy: CodingKeys.self)
    appliedIndex = try container.decode(UInt64.self, forKey: .appliedIndex)
    logTime = try container.decode(LogTime.self, forKey: .logTime)
    services = try container.decode([String: ClusterService].self, forKey: .services)
    tasks = try container.decode([String: ClusterTask].self, forKey: .tasks)
    nodes = try container.decode([String: ClusterNode].self, forKey: .nodes)
    taskSequence = try container.decode(UInt64.self, forKey: .taskSequence)
    idempotency = try container.decode(IdempotencyTable.self, forKey: .idempotency)
    sessions = try container.decode(ClientSessionTable.self, forKey: .sessions)
    history = try container.decode(EventHistory.self, forKey: .history)
    deployments = try container.decodeIfPresent([String: ServiceDeployments].self, forKey: .deployments) ?? [:]
    pastDeployments =
      try container.decodeIfPresent([String: [DeploymentSummary]].self, forKey: .pastDeployments) ?? [:]
    hookRecords = try container.decodeIfPresent([String: [HookRecord]].self, forKey: .hookRecords) ?? [:]
    // Absent from version 1 snapshots, which predate variables.
    variables = try container.decodeIfPresent(VariableTable.self, forKey: .variables) ?? VariableTable()
    membership = try container.decodeIfPresent(ClusterMembership.self, forKey: .membership) ?? ClusterMembership()
    for task in tasks.values { taskIDsByService[task.service, default: []].insert(task.id) }
  }

  mutating func insertTask(_ task: ClusterTask) {
    precondition(tasks[task.id] == nil, "task id \(task.id) handed out twice")
    tasks[task.id] = task
    taskIDsByService[task.service, default: []].insert(task.id)
  }

  @discardableResult
  mutating func removeTask(_ id: String) -> ClusterTask? {
    guard let task = tasks.removeValue(forKey: id) else { return nil }
    taskIDsByService[task.service]?.remove(id)
    if taskIDsByService[task.service]?.isEmpty == true { taskIDsByService[task.service] = nil }
    return task
  }

  /// The ids of the service's tasks, sorted.
  func taskIDs(of service: String) -> [String] { (taskIDsByService[service] ?? []).sorted() }

  // MARK: Applying

  /// Applies the entry at log `index`, carried by a Raft entry of term `term`.
  ///
  /// Order: log time advances to `max(logTime, stamp.now)`; expired idempotency records go; an entry
  /// of a client session that is gone is refused (`unknown_session`), one repeating the session's last
  /// sequence gets its answer, an older one is refused (`stale_sequence`); a known idempotency key with
  /// the same digest returns its first answer and changes nothing else, with another digest is refused
  /// (`idempotency_mismatch`); a leader-only command whose stamp term is not `term` is refused
  /// (`stale_term`); then the command's `applyX` runs, derived state (routes, drains, removed services)
  /// follows, and the answer is recorded in the session and under the key (refusals before `applyX`
  /// are not recorded).
  public mutating func apply(_ entry: ClusterEntry, index: UInt64, term: UInt64) -> ClusterResult {
    precondition(index > appliedIndex, "entry index \(index) applied after index \(appliedIndex)")
    appliedIndex = index
    logTime = max(logTime, entry.stamp.now)
    idempotency.expire(now: logTime)
    if let stamp = entry.session {
      guard let session = sessions.session(stamp.clientID, now: logTime) else {
        sessions.remove(stamp.clientID)
        return .rejected(
          ClusterRejection(
            code: .unknownSession,
            message: "client session \(stamp.clientID) is not registered or expired; register a new session"))
      }
      if stamp.sequence == session.lastSequence, let result = session.lastResult { return result }
      guard stamp.sequence > session.lastSequence else {
        return .rejected(
          ClusterRejection(
            code: .staleSequence,
            message:
              "client session \(stamp.clientID) is at sequence \(session.lastSequence); sequence \(stamp.sequence) is stale"
          ))
      }
    }
    if let key = entry.idempotency, let record = idempotency.record(for: key.key) {
      guard record.bodyDigest == key.bodyDigest else {
        return .rejected(
          ClusterRejection(
            code: .idempotencyMismatch,
            message:
              "idempotency key \(key.key) was used at \(record.recordedAt) for a different request; use a new key"))
      }
      return record.result
    }
    if entry.command.isLeaderOnly && entry.stamp.term != term {
      return .rejected(
        ClusterRejection(
          code: .staleTerm,
          message:
            "\(entry.command.name) was proposed by \(entry.stamp.node) in term \(entry.stamp.term) but committed in term \(term)"
        ))
    }
    var context = ApplyContext(index: index, proposer: entry.stamp.node)
    let result: ClusterResult
    do {
      result = .ok(try applyCommand(entry.command, &context))
      updateDerivedState(&context)
    } catch {
      result = .rejected(error)
    }
    if let stamp = entry.session {
      sessions.record(
        clientID: stamp.clientID, sequence: stamp.sequence, result: result, index: index, now: logTime)
    }
    if let key = entry.idempotency {
      idempotency.insert(key: key.key, bodyDigest: key.bodyDigest, result: result, now: logTime)
    }
    return result
  }

  /// Decodes and applies the bytes of a log entry and returns the encoded ``ClusterResult``: the
  /// adapter for a byte-oriented Raft state machine. Undecodable bytes are refused (`bad_request`,
  /// `too_large`) identically on every node, and still advance `appliedIndex`.
  public mutating func apply(bytes: [UInt8], index: UInt64, term: UInt64) -> [UInt8] {
    do {
      let entry = try ClusterEntry(decoding: bytes)
      return apply(entry, index: index, term: term).encode()
    } catch {
      precondition(index > appliedIndex, "entry index \(index) applied after index \(appliedIndex)")
      appliedIndex = index
      let code: ClusterRejection.Code
      if case .tooLarge = error { code = .tooLarge } else { code = .badRequest }
      return ClusterResult.rejected(ClusterRejection(code: code, message: error.description)).encode()
    }
  }

  /// The same as `apply(bytes:index:term:)`, under the name TealConsensus's `ReplicatedStateMachine`
  /// uses, so the node can declare the conformance without an adapter.
  public mutating func apply(_ command: [UInt8], index: UInt64, term: UInt64) -> [UInt8] {
    apply(bytes: command, index: index, term: term)
  }

  /// Replaces the whole state with the one in `snapshot` (see `init(snapshot:)`); on error the state
  /// is unchanged.
  public mutating func restore(from snapshot: [UInt8]) throws(ClusterSnapshotError) {
    self = try ClusterState(snapshot: snapshot)
  }

  /// Per-entry bookkeeping: the services whose routes and drains must be re-derived.
  struct ApplyContext {
    let index: UInt64
    /// The node that proposed the entry.
    let proposer: NodeID
    var touchedServices: Set<String> = []
    var allServicesTouched = false
  }

  private mutating func applyCommand(
    _ command: ClusterCommand, _ context: inout ApplyContext
  ) throws(ClusterRejection) -> ClusterResponse {
    switch command {
    case .createService(let spec): return try applyCreateService(spec, &context)
    case .registerRevision(let service, let spec): return try applyRegisterRevision(service, spec, &context)
    case .scaleService(let service, let desiredCount):
      return try applyScaleService(service, desiredCount: desiredCount, &context)
    case .deleteService(let service): return try applyDeleteService(service, &context)
    case .registerSession:
      sessions.register(clientID: context.index, index: context.index, now: logTime)
      return .sessionRegistered(clientID: context.index)
    case .announceNode(let info): return try applyAnnounceNode(info, &context)
    case .taskReports(let node, let reports): return try applyTaskReports(node, reports, &context)
    case .routesApplied(let node, let generations): return try applyRoutesApplied(node, generations, &context)
    case .taskStopped(let node, let taskID): return try applyTaskStopped(node, taskID: taskID, &context)
    case .drainNode(let node): return try applyDrainNode(node, &context)
    case .placeTask(let service, let revision, let node):
      return try applyPlaceTask(service, revision: revision, node: node, &context)
    case .retireTask(let taskID, let reason): return try applyRetireTask(taskID, reason: reason, &context)
    case .nodeDown(let node, let incarnation): return try applyNodeDown(node, incarnation: incarnation, &context)
    case .nodeUp(let node, let incarnation): return try applyNodeUp(node, incarnation: incarnation, &context)
    case .submitDeployment(let service, let spec, let supersede):
      return try applySubmitDeployment(service, spec: spec, supersede: supersede, &context)
    case .deploymentAction(let service, let id, let action):
      return try applyDeploymentAction(service, id: id, action: action, &context)
    case .hookAnswered(let service, let id, let result):
      return try applyDeploymentInput(service, id: id, .hookAnswered(result), &context)
    case .deploymentWakeUp(let service, let id): return try applyDeploymentInput(service, id: id, .wakeUp, &context)
    case .deploymentMetrics(let service, let id, let sample):
      return try applyDeploymentInput(service, id: id, .metricSample(sample), &context)
    case .putVariable(let path, let value, let cas):
      return try applyPutVariable(path, value: value, cas: cas, &context)
    case .deleteVariable(let path, let cas): return try applyDeleteVariable(path, cas: cas, &context)
    case .requestMemberChange(let request): return try applyRequestMemberChange(request, &context)
    case .finishMemberChange(let node, let error): return try applyFinishMemberChange(node, error: error, &context)
    }
  }

  // MARK: Events

  mutating func record(
    _ kind: ClusterEventKind, service: String?, _ message: String, _ context: ApplyContext
  ) {
    history.append(ClusterEvent(index: context.index, time: logTime, service: service, kind: kind, message: message))
  }
}
