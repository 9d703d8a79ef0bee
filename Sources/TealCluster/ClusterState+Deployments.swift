// Deployments inside the replicated state. The log carries facts; `apply` feeds them to the
// deployment engine (TealDeploy's `ServiceDeployments`) on every node, so every node holds the same
// deployment state and the same desired state, and the routes and placements follow from it.
//
// Mapping between the engine and the cluster:
// - The engine's routes weights become the service's committed production and test weights; its
//   routes generation g is recorded with the first committed routes generation G that carries it
//   (`DeploymentRouteMarks`). A node that reported routes generation G' >= G applied g.
// - A task set the engine drains loses its targets in the committed routes (generation D); a node
//   that reported D or later has drained it (its balancer reports a generation only after the
//   targets it removed finished their requests).
// - Task health per node and revision, liveness, and "no task of a stopped revision on this node"
//   are read from the state and fed to the engine whenever they differ from what it last saw.
// - Placement runs each revision at the count the engine's task sets ask for (see `Placement`).
// - When a deployment ends with all production traffic on one revision, the service is handed back:
//   that revision becomes current with the task set's count, and placement owns it again.

import TealDeploy
import TealWire

/// How the routes of the deployment in control map onto the service's committed routes.
///
/// Invariant: `since` is a committed generation of the service's routes that carries the engine's
/// weights of `engineGeneration`; every later committed generation carries them or newer ones.
public struct DeploymentRouteMarks: Codable, Hashable, Sendable {
  public var deploymentID: String
  /// The engine's routes generation the committed routes carry.
  public var engineGeneration: Int
  /// The first committed routes generation that carries it.
  public var since: UInt64
  /// Revisions the deployment drains, each with the first committed generation without its targets.
  /// Sorted by revision.
  public var draining: [DrainMark]
}

/// A revision being drained and the first committed routes generation without its targets.
public struct DrainMark: Codable, Hashable, Sendable {
  public var revision: RevisionID
  public var since: UInt64
}

extension ClusterState {
  /// At most this many rounds of "feed the facts, re-derive the routes" per service and entry. Every
  /// round either feeds a new fact or stops; facts are monotone, so a handful always suffices.
  static let maximumDeploymentRounds = 8

  /// The deployment whose desired state rules the service's tasks and routes: its current deployment
  /// while it is active, or once it ended with production split between two revisions (a failed
  /// rollback) until the next deployment.
  public func deploymentInControl(of service: String) -> Deployment? {
    guard let current = deployments[service]?.current else { return nil }
    if current.isActive { return current }
    return services[service]?.deploymentRoutes?.deploymentID == current.id ? current : nil
  }

  /// The service a deployment id names: ids are `<service>-<log index>`, and service names may
  /// contain `-`, so the service is everything before the last one.
  public static func service(ofDeployment id: String) -> String? {
    id.lastIndex(of: "-").map { String(id[..<$0]) }
  }

  /// The deployment `id` (current or queued) of any service.
  public func deployment(id: String) -> Deployment? {
    Self.service(ofDeployment: id).flatMap { deployments[$0]?.deployment(id) }
  }

  /// Every deployment the state holds (each service's current and queued one), by id.
  public func allDeployments() -> [Deployment] {
    deployments.keys.sorted().flatMap { name in
      [deployments[name]?.current, deployments[name]?.queued].compactMap { $0 }
    }
  }

  /// Task counts per revision the service should run now: the deployment's task sets while one is in
  /// control (a stopped set counts 0), otherwise the current revision at `desiredCount`. Revisions
  /// not listed should run no task.
  public func desiredTaskCounts(of name: String) -> [(revision: RevisionID, count: Int)] {
    guard let service = services[name], !service.deleting else { return [] }
    guard let deployment = deploymentInControl(of: name) else {
      return [(service.currentRevisionID, service.desiredCount)]
    }
    return deployment.desired.taskSets.map { set in (set.revision, set.phase == .stopped ? 0 : set.count) }
  }

  var deploymentTime: Instant { Instant(millisecondsSinceEpoch: logTime.millisecondsSinceEpoch) }

  // MARK: Requests

  mutating func applySubmitDeployment(
    _ name: String, spec: ServiceSpec, supersede: Bool, _ context: inout ApplyContext
  ) throws(ClusterRejection) -> ClusterResponse {
    var service = try liveService(name)
    guard spec.name == name else {
      throw ClusterRejection(
        code: .invalidSpec, message: "spec names service \"\(spec.name)\", not \"\(name)\"", field: "name")
    }
    try Self.checkDesiredCount(spec.desiredCount, field: "desiredCount")
    for (field, port, serving) in [
      ("productionPort", spec.productionPort, service.productionPort), ("testPort", spec.testPort, service.testPort),
    ] where port != serving {
      throw ClusterRejection(
        code: .invalidSpec,
        message: "\(field) \(port) differs from the service's \(serving); a deployment cannot move a listener",
        field: field)
    }
    try Self.checkTask(spec.task)
    let blue = service.currentRevisionID
    let digest = Revision.digest(of: spec)
    guard service.revision(blue.number)?.digest != digest else {
      throw ClusterRejection(
        code: .conflict, message: "the spec equals the serving revision \(blue); there is nothing to deploy")
    }
    var registered: ClusterRevision?
    let green: Revision
    if let latest = service.revisions.last, latest.digest == digest {
      green = latest.revision
    } else {
      green = Revision(id: RevisionID(service: name, number: service.nextRevisionNumber), spec: spec)
      registered = ClusterRevision(revision: green, createdAt: logTime)
    }
    let id = "\(name)-\(context.index)"
    let running = Set(tasks(service: name).filter { $0.desired == .running }.map(\.revision))
    let submission = DeploymentSubmission(
      green: green, blue: BlueRevision(revision: blue, desiredCount: service.desiredCount),
      nodes: nodes.values.filter(\.isUp).map(\.id).sorted(), activeRevisions: Array(running.union([blue])).sorted(),
      supersede: supersede)
    var held = deployments[name] ?? ServiceDeployments(service: name)
    let reply = held.apply(DeploymentInput(deploymentId: id, now: deploymentTime, command: .submit(submission)))
    if let reason = Self.refusal(reply) { throw ClusterRejection(code: .conflict, message: reason) }
    if let registered {
      service.revisions.append(registered)
      forgetUnusedRevisions(of: &service)
      services[name] = service
      record(.revisionRegistered, service: name, "revision \(green.id) registered (digest \(digest))", context)
    }
    commit(held, before: deployments[name] ?? ServiceDeployments(service: name), service: name, context)
    record(
      .deploymentSubmitted, service: name,
      "deployment \(id) submitted: \(blue) -> \(green.id), strategy \(spec.deployment.strategy.rawValue)"
        + (supersede ? " (superseding)" : ""), context)
    context.touchedServices.insert(name)
    return .deploymentSubmitted(service: name, deploymentID: id, revision: green.id)
  }

  mutating func applyDeploymentAction(
    _ name: String, id: String, action: DeploymentAction, _ context: inout ApplyContext
  ) throws(ClusterRejection) -> ClusterResponse {
    guard var held = deployments[name], held.deployment(id) != nil else {
      throw ClusterRejection(
        code: .notFound, message: "service \(name) has no deployment \(id)", field: "deploymentID")
    }
    let by = "operator via \(context.proposer)"
    // A retry is a new deployment, with an id of its own; every other action goes to `id`.
    let newID = action == .retry ? "\(name)-\(context.index)" : id
    let command: DeploymentCommand
    switch action {
    case .stop: command = .stop(requestedBy: by)
    case .rollback: command = .rollback(requestedBy: by)
    case .pause: command = .pause(requestedBy: by)
    case .continue: command = .continue(requestedBy: by)
    case .promote: command = .promote(requestedBy: by)
    case .retry: command = .retry(of: id, requestedBy: by)
    }
    let before = held
    let reply = held.apply(DeploymentInput(deploymentId: newID, now: deploymentTime, command: command))
    if let reason = Self.refusal(reply) { throw ClusterRejection(code: .conflict, message: reason) }
    commit(held, before: before, service: name, context)
    context.touchedServices.insert(name)
    if action == .retry {
      guard let green = held.deployment(newID)?.green else {
        preconditionFailure("retry of \(id) accepted without deployment \(newID)")
      }
      record(.deploymentSubmitted, service: name, "deployment \(newID) submitted: retry of \(id)", context)
      return .deploymentSubmitted(service: name, deploymentID: newID, revision: green)
    }
    if case .ignored(let reason) = reply { return .ignored(reason: reason) }
    return .deploymentUpdated(service: name, deploymentID: id)
  }

  /// A hook answer, wake-up or datapoint: facts and leader inputs are never refused; one that no
  /// longer applies (an answer not awaited, a deployment that finished) is ignored.
  mutating func applyDeploymentInput(
    _ name: String, id: String, _ command: DeploymentCommand, _ context: inout ApplyContext
  ) throws(ClusterRejection) -> ClusterResponse {
    guard var held = deployments[name], held.deployment(id) != nil else {
      return .ignored(reason: "service \(name) has no deployment \(id)")
    }
    let before = held
    let reply = held.apply(DeploymentInput(deploymentId: id, now: deploymentTime, command: command))
    if case .hookAnswered(let result) = command, case .accepted = reply,
      let execution = before.deployment(id)?.hook, execution.executionId == result.executionId
    {
      noteHookAnswer(result, stage: execution.stage, deploymentID: id)
    }
    commit(held, before: before, service: name, context)
    context.touchedServices.insert(name)
    switch reply {
    case .accepted: return .deploymentUpdated(service: name, deploymentID: id)
    case .ignored(let reason), .refused(let reason): return .ignored(reason: reason)
    }
  }

  static func refusal(_ reply: DeploymentReply) -> String? {
    if case .refused(let reason) = reply { return reason }
    return nil
  }

  // MARK: Facts from the state

  /// Feeds the service's deployments what the state now says about the world: starts a startable
  /// deployment, and gives each deployment the liveness, task health, applied routes, drains and
  /// stopped task sets that differ from what it last saw. Returns whether any deployment changed.
  mutating func feedDeployments(_ name: String, _ context: ApplyContext) -> Bool {
    guard var held = deployments[name] else { return false }
    let before = held
    let now = deploymentTime
    if let id = held.startable { held.apply(DeploymentInput(deploymentId: id, now: now, command: .start)) }
    for deployment in [held.current, held.queued].compactMap({ $0 }) where deployment.isActive {
      for fact in facts(for: deployment, service: name) {
        held.apply(DeploymentInput(deploymentId: deployment.id, now: now, command: fact))
      }
    }
    guard held != before else { return false }
    commit(held, before: before, service: name, context)
    return true
  }

  /// The facts `deployment` has not seen yet, in a defined order (nodes by id).
  func facts(for deployment: Deployment, service name: String) -> [DeploymentCommand] {
    var facts: [DeploymentCommand] = []
    let marks = services[name]?.deploymentRoutes.flatMap { $0.deploymentID == deployment.id ? $0 : nil }
    let serviceTasks = tasks(service: name)
    for node in nodes.values.sorted(by: { $0.id < $1.id }) {
      let observation = deployment.nodes.first { $0.node == node.id }
      guard node.isUp else {
        if observation?.live == true { facts.append(.nodeDown(node.id)) }
        continue
      }
      guard let observation, observation.live else {
        facts.append(.nodeUp(node.id))
        continue
      }
      for revision in [deployment.blue.revision, deployment.green] {
        let serving = serviceTasks.filter { $0.node == node.id && $0.revision == revision && $0.desired == .running }
        let healthy = serving.filter(\.healthy).count
        // Went unhealthy after passing its checks: the revision failing, not a replacement starting
        // nor a process of its node's previous run being drained.
        let unhealthy = serving.filter {
          !$0.healthy && $0.state == .running && $0.healthyAt != nil && $0.previousRun != true
        }.count
        if healthy != observation.healthy(revision) || unhealthy != observation.unhealthy(revision) {
          facts.append(.taskHealth(node: node.id, revision: revision, healthy: healthy, unhealthy: unhealthy))
        }
      }
      let applied = node.routesApplied[name] ?? 0
      if let marks, applied >= marks.since, observation.routesGeneration < marks.engineGeneration {
        facts.append(.routesApplied(node: node.id, generation: marks.engineGeneration))
      }
      for mark in marks?.draining ?? [] where applied >= mark.since && !observation.drained.contains(mark.revision) {
        facts.append(.revisionDrained(node: node.id, revision: mark.revision))
      }
      for set in deployment.desired.taskSets where set.phase == .stopped && !observation.stopped.contains(set.revision)
      {
        if !serviceTasks.contains(where: { $0.node == node.id && $0.revision == set.revision }) {
          facts.append(.taskSetStopped(node: node.id, revision: set.revision))
        }
      }
    }
    return facts
  }

  /// Tells the deployment in control that a task of `revision` on `node` exited (the circuit
  /// breaker counts green's).
  mutating func noteTaskExit(_ task: ClusterTask, code: Int32, _ context: ApplyContext) {
    guard var held = deployments[task.service], let current = held.current, current.isActive else { return }
    let before = held
    held.apply(
      DeploymentInput(
        deploymentId: current.id, now: deploymentTime,
        command: .taskFailed(
          node: task.node, revision: task.revision, reason: "task \(task.id) exited with code \(code)")
      ))
    commit(held, before: before, service: task.service, context)
  }

  // MARK: Routes and hand-back

  /// The committed weights and the marks of the deployment in control, or nil when none is.
  func deploymentRoutes(of name: String) -> (
    production: [RevisionID: Int], test: [RevisionID: Int], hidden: Set<RevisionID>
  )? {
    guard let deployment = deploymentInControl(of: name) else { return nil }
    let routes = deployment.desired.routes
    func split(_ weights: WeightSplit) -> [RevisionID: Int] {
      var result: [RevisionID: Int] = [:]
      if weights.blueBasisPoints > 0 { result[routes.blue] = weights.blueBasisPoints }
      if weights.greenBasisPoints > 0 { result[routes.green] = weights.greenBasisPoints }
      return result
    }
    let hidden = Set(deployment.desired.taskSets.filter { $0.phase != .serving }.map(\.revision))
    return (split(routes.weights.production), split(routes.weights.test), hidden)
  }

  /// Records, after the routes were derived, which committed generation carries the deployment's
  /// weights and which removed each draining revision's targets.
  mutating func markDeploymentRoutes(_ name: String) {
    guard var service = services[name] else { return }
    guard let deployment = deploymentInControl(of: name) else {
      if service.deploymentRoutes != nil {
        service.deploymentRoutes = nil
        services[name] = service
      }
      return
    }
    let generation = service.routes.generation
    var marks =
      service.deploymentRoutes
      ?? DeploymentRouteMarks(
        deploymentID: deployment.id, engineGeneration: -1, since: generation, draining: [])
    if marks.deploymentID != deployment.id {
      marks = DeploymentRouteMarks(deploymentID: deployment.id, engineGeneration: -1, since: generation, draining: [])
    }
    if marks.engineGeneration != deployment.desired.routes.generation {
      marks.engineGeneration = deployment.desired.routes.generation
      marks.since = generation
    }
    let draining = deployment.desired.taskSets.filter { $0.phase == .draining }.map(\.revision)
    marks.draining = draining.sorted().map { revision in
      marks.draining.first { $0.revision == revision } ?? DrainMark(revision: revision, since: generation)
    }
    if service.deploymentRoutes != marks {
      service.deploymentRoutes = marks
      services[name] = service
    }
  }

  /// When the service's deployment ended with all production traffic on one revision, that revision
  /// becomes current at its task set's count and the deployment lets go of the service.
  mutating func handBackIfFinished(_ name: String, _ context: ApplyContext) {
    guard var service = services[name], let marks = service.deploymentRoutes,
      let deployment = deployments[name]?.current, deployment.id == marks.deploymentID, !deployment.isActive
    else { return }
    let weights = deployment.desired.routes.weights.production
    let serving: RevisionID
    switch weights.greenBasisPoints {
    case WeightSplit.allGreen.greenBasisPoints: serving = deployment.green
    case WeightSplit.allBlue.greenBasisPoints: serving = deployment.blue.revision
    default: return  // A failed rollback left traffic split: the deployment keeps the service.
    }
    let count = deployment.desired.taskSet(serving)?.count ?? service.desiredCount
    let changed = service.currentRevision != serving.number || service.desiredCount != count
    service.currentRevision = serving.number
    service.desiredCount = count
    service.deploymentRoutes = nil
    services[name] = service
    record(
      .deploymentProgress, service: name,
      "deployment \(deployment.id) \(deployment.status.rawValue): \(serving) serves \(name)"
        + (changed ? " with \(count) desired tasks" : ""), context)
  }

  /// Stores the service's deployments after an input: records what changed as events and keeps a
  /// summary of every deployment that left (replaced by a newer one).
  mutating func commit(
    _ after: ServiceDeployments, before: ServiceDeployments, service name: String, _ context: ApplyContext
  ) {
    deployments[name] = after
    noteProgress(before: before, after: after, service: name, context)
    for departed in [before.current, before.queued].compactMap({ $0 }) where after.deployment(departed.id) == nil {
      hookRecords[departed.id] = nil
      var past = pastDeployments[name] ?? []
      past.append(DeploymentSummary(departed))
      pastDeployments[name] = Array(past.suffix(Self.maximumPastDeploymentsPerService))
    }
  }

  /// Records one answered attempt of a hook execution.
  mutating func noteHookAnswer(_ result: HookResult, stage: LifecycleStage, deploymentID: String) {
    var records = hookRecords[deploymentID] ?? []
    let outcome: String
    var final = false
    switch result.outcome {
    case .succeeded: (outcome, final) = ("SUCCEEDED", true)
    case .failed: (outcome, final) = ("FAILED", true)
    case .inProgress: outcome = "IN_PROGRESS"
    case .timedOut: outcome = "TIMED_OUT"
    case .unreachable: outcome = "UNREACHABLE"
    }
    var record =
      records.first { $0.executionId == result.executionId }
      ?? HookRecord(executionId: result.executionId, stage: stage, attempts: 0, result: nil, lastOutcome: nil)
    record.attempts = max(record.attempts, result.attempt)
    record.lastOutcome = outcome
    if final { record.result = outcome }
    if let index = records.firstIndex(where: { $0.executionId == result.executionId }) {
      records[index] = record
    } else {
      records.append(record)
    }
    hookRecords[deploymentID] = Array(records.suffix(Self.maximumHookRecordsPerDeployment))
  }

  /// Hook executions remembered per deployment (the newest).
  public static let maximumHookRecordsPerDeployment = 64

  /// Summaries of finished deployments kept per service (the newest).
  public static let maximumPastDeploymentsPerService = 20

  /// Cluster events for what changed in the service's deployments between `before` and `after`: the
  /// engine's new history lines (`deploymentNote`) and stage or status changes (`deploymentProgress`).
  mutating func noteProgress(
    before: ServiceDeployments, after: ServiceDeployments, service name: String, _ context: ApplyContext
  ) {
    for deployment in [after.current, after.queued].compactMap({ $0 }) {
      let previous = before.deployment(deployment.id)
      let seen = previous?.history.last.flatMap { last in deployment.history.lastIndex(of: last) }
      let fresh = seen.map { deployment.history[($0 + 1)...] } ?? deployment.history[...]
      for event in fresh.suffix(Self.maximumDeploymentNotesPerEntry) {
        record(
          .deploymentNote, service: name, "deployment \(deployment.id): \(Self.readable(event.message))", context)
      }
      if previous?.status != deployment.status || previous?.stage != deployment.stage {
        record(
          .deploymentProgress, service: name,
          "deployment \(deployment.id) \(deployment.status.rawValue)"
            + (deployment.stage.map { " at \($0.rawValue)" } ?? ""), context)
      }
    }
  }

  /// An engine history line with its instants as UTC times.
  public static func readable(_ message: String) -> String {
    Instant.rewritingInstants(in: message) { LogTime(millisecondsSinceEpoch: $0.millisecondsSinceEpoch).iso8601 }
  }

  /// At most this many of a deployment's history lines become cluster events per entry.
  static let maximumDeploymentNotesPerEntry = 16
}

/// What remains of a deployment once a newer one replaced it: enough for `deployment list` and
/// `describe` (the full history is in the event log).
public struct DeploymentSummary: Codable, Hashable, Sendable {
  public var id: String
  public var service: String
  public var status: DeploymentStatus
  public var stage: LifecycleStage?
  public var blue: RevisionID
  public var green: RevisionID
  public var createdAt: Instant
  /// The deployment's clock when it was replaced (its last input's time).
  public var endedAt: Instant
  public var reason: String?
  public var stageTimeline: [StageEntry]

  public init(_ deployment: Deployment) {
    id = deployment.id
    service = deployment.service
    status = deployment.status
    stage = deployment.stage
    blue = deployment.blue.revision
    green = deployment.green
    createdAt = deployment.createdAt
    endedAt = deployment.clock
    reason = deployment.reason
    stageTimeline = deployment.stageTimeline
  }
}

/// The answers one hook execution got, for the deployment's views.
public struct HookRecord: Codable, Hashable, Sendable {
  public var executionId: String
  public var stage: LifecycleStage
  /// The highest attempt answered.
  public var attempts: Int
  /// `SUCCEEDED` or `FAILED` once the hook decided; nil while it has not.
  public var result: String?
  /// The last attempt's outcome: also `IN_PROGRESS`, `TIMED_OUT` or `UNREACHABLE`.
  public var lastOutcome: String?
}
