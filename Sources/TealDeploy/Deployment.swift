// One deployment: ECS's blue/green lifecycle as a pure state machine fed by the replicated log.
//
// `apply(input)` changes the state; nothing else comes out. The state carries the desired state
// (`desired`) that nodes reconcile the world to, and the world's answers come back as inputs, so
// nothing can be lost between a commit and an action. The only external effect, a hook call, is
// derived from the state too (`pendingHookCall`), and every deadline is an absolute log time
// (`nextWakeup`). A failover therefore needs no special path: a new leader reads the same state.

import TealWire

/// One entry of a deployment's history, like an ECS service event.
public struct DeploymentEvent: Codable, Hashable, Sendable, CustomStringConvertible {
  public var at: Instant
  public var deploymentId: String
  public var stage: LifecycleStage?
  public var status: DeploymentStatus
  public var message: String

  public var description: String { "\(at) \(deploymentId) [\(status)\(stage.map { " \($0)" } ?? "")] \(message)" }
}

/// When a stage was entered.
public struct StageEntry: Codable, Hashable, Sendable {
  public var stage: LifecycleStage
  public var enteredAt: Instant
}

/// A deployment of one service from its blue revision to a green one.
///
/// Invariants (checked by the tests):
/// - the stage only moves forward; a rollback changes the status, never the stage;
/// - the deployment moves past a routes change only when every live node applied it, and calls a
///   stage's hooks only then; a task set is stopped only after every live node drained it;
/// - blue's task set is drained only at CLEAN_UP, after BAKE_TIME;
/// - rollback: blue back to its own count and healthy, then weights to blue, then green drained,
///   then (after `abortScaleDownDelay`) green stopped; ROLLBACK_SUCCESSFUL only on observed health;
/// - every attempt of one hook execution carries the same executionId;
/// - the state's encoding is canonical (arrays only), so replaying the same inputs gives the same
///   bytes (`canonicalEncoding`).
public struct Deployment: Codable, Hashable, Sendable {
  /// History entries kept (the oldest are dropped beyond this).
  public static let historyLimit = 500
  /// Characters of a hook's output kept in one history entry.
  public static let outputLimit = 4096
  /// Nodes a deployment tracks; nodeUp beyond this is ignored (a cluster has 3 to 7 nodes).
  public static let nodeLimit = 64
  /// Metric samples kept for the alarms (the oldest beyond this are dropped).
  public static let sampleLimit = 1024
  /// Transitions one input may cause; a guard against a bug looping, not a real bound.
  static let transitionLimit = 10_000

  // MARK: Identity (fixed at submission)

  public let id: String
  public let service: String
  public let blue: BlueRevision
  public let green: RevisionID
  /// Green's desired task count (from green's spec).
  public let desiredCount: Int
  public let configuration: DeploymentConfiguration
  public let createdAt: Instant
  public let activeRevisions: [RevisionID]

  // MARK: State

  /// The latest input time: inputs' `now` clamped so that time never runs backwards.
  public private(set) var clock: Instant
  public private(set) var status: DeploymentStatus = .PENDING
  /// Nil while PENDING.
  public private(set) var stage: LifecycleStage?
  public private(set) var stageTimeline: [StageEntry] = []
  /// What every node must reconcile to.
  public private(set) var desired: DesiredState
  /// The nodes and their reports, sorted by node.
  public private(set) var nodes: [NodeObservation]
  /// What forward progress waits for (IN_PROGRESS only).
  public private(set) var gate: Gate?
  /// The hook execution in progress, if any.
  public private(set) var hook: HookExecution?
  /// PRODUCTION_TRAFFIC_SHIFT: index into `configuration.productionWeightSteps` of the current weight.
  public private(set) var productionStep = 0
  /// SCALE_UP: when the circuit breaker trips if green is not all healthy.
  public private(set) var scaleUpDeadline: Instant?
  /// After SCALE_UP: since when green has been below its health floor for want of tasks (forward
  /// progress holds; the breaker trips at this + `healthFloorGrace`). Nil when at or above it.
  public private(set) var belowFloorSince: Instant?
  public private(set) var greenFailures = 0
  /// Set while the deployment rolls back (and kept after, for the record).
  public private(set) var rollback: RollbackProgress?
  /// Set while an operator holds the deployment.
  public private(set) var pause: PauseState?
  /// Set once `promote` was accepted: no further production steps, hooks of later stages or bake.
  public private(set) var promoted = false
  /// Metric samples of green, for the alarms (replicated, so a failover keeps the window).
  public private(set) var samples: [MetricSample] = []
  /// Why the deployment rolled back or stopped, if it did.
  public private(set) var reason: String?
  public private(set) var history: [DeploymentEvent] = []

  /// What forward progress waits for.
  public enum Gate: Codable, Hashable, Sendable {
    /// The world must reach the desired state first.
    case converging(Convergence)
    /// The stage's hooks run one after another; `cursor` indexes `hooksToRun()`.
    case runningHooks(cursor: Int)
    /// A production step's wait or bake time, until an absolute log time.
    case waiting(until: Instant)
  }

  /// One hook execution: every attempt carries its executionId.
  public struct HookExecution: Codable, Hashable, Sendable {
    public var hookIndex: Int
    public var executionId: String
    public var stage: LifecycleStage
    public var productionStep: Int
    public var direction: HookDirection
    /// The attempt to make now or being made (from 1).
    public var attempt: Int
    /// When the current attempt is due (callBackDelay, or retry backoff).
    public var nextCallAt: Instant
    /// The overall timeout (`timeoutInMinutes`), absolute: failovers do not extend it.
    public var deadline: Instant
    /// Consecutive attempts that timed out or could not reach the hook (for the backoff).
    public var unansweredAttempts: Int
    /// PAUSE hooks: waiting for `continue` or `rollback`.
    public var isPause: Bool
  }

  /// The steps of a rollback, in order.
  public struct RollbackProgress: Codable, Hashable, Sendable {
    public var startedAt: Instant
    public var phase: Phase

    public enum Phase: Codable, Hashable, Sendable {
      /// Blue runs its own desired count; waiting until that many are healthy, at most until `deadline`.
      case restoringBlue(deadline: Instant)
      /// Both listeners on blue and green unroutable; waiting until every live node drained green.
      case drainingGreen
      /// Green drained; stopped at `until` (`abortScaleDownDelay`).
      case delayingStop(until: Instant)
      /// Green's task set stopped; waiting until every live node reports it.
      case stoppingGreen
      /// Green is gone; blue must be (still) healthy, at most until `deadline`.
      case confirmingBlue(deadline: Instant)
      /// Finished (successfully or not: see the status).
      case finished
    }
  }

  /// An operator's pause.
  public struct PauseState: Codable, Hashable, Sendable {
    public var since: Instant
    public var requestedBy: String
  }

  // MARK: Creation

  /// A PENDING deployment of `submission.green` over `submission.blue`.
  public init(id: String, submission: DeploymentSubmission, now: Instant, routesGeneration: Int = 0) {
    let green = submission.green
    self.id = id
    self.service = green.id.service
    self.blue = submission.blue
    self.green = green.id
    self.desiredCount = green.spec.desiredCount
    self.configuration = green.spec.deployment
    self.createdAt = now
    self.activeRevisions = submission.activeRevisions.sorted()
    self.clock = now
    self.desired = DesiredState(
      routes: Routes(generation: routesGeneration, blue: submission.blue.revision, green: green.id, weights: .allBlue),
      taskSets: [
        TaskSetTarget(revision: submission.blue.revision, count: submission.blue.desiredCount, phase: .serving)
      ]
    )
    var nodes: [NodeObservation] = []
    for node in submission.nodes.prefix(Self.nodeLimit) { nodes.upsert(NodeObservation(node: node), by: \.node) }
    self.nodes = nodes
  }

  /// A PENDING deployment `id` that retries `previous`: same green, blue and configuration, on the
  /// nodes `previous` saw live, continuing its routes generations.
  init(id: String, retrying previous: Deployment, now: Instant) {
    self.id = id
    self.service = previous.service
    self.blue = previous.blue
    self.green = previous.green
    self.desiredCount = previous.desiredCount
    self.configuration = previous.configuration
    self.createdAt = now
    self.activeRevisions = previous.activeRevisions
    self.clock = max(now, previous.clock)
    var desired = previous.desired
    desired.routes.weights = .allBlue
    desired.taskSets = [
      TaskSetTarget(revision: previous.blue.revision, count: previous.blue.desiredCount, phase: .serving)
    ]
    self.desired = desired
    self.nodes = previous.nodes.filter(\.live).map { node in
      var fresh = NodeObservation(node: node.node)
      fresh.routesGeneration = node.routesGeneration
      fresh.health = node.health.filter { $0.revision == previous.blue.revision }
      return fresh
    }
    record("retry of deployment \(previous.id)", clock)
  }

  /// A PENDING deployment continues the routes generations of the deployment before it.
  mutating func continueRoutes(after generation: Int) {
    precondition(status == .PENDING, "only a PENDING deployment can take over routes generations")
    desired.routes.generation = max(desired.routes.generation, generation)
  }

  /// True while the deployment still holds its service (not terminal).
  public var isActive: Bool { !status.isTerminal }

  /// The execution id of hook `hookIndex` at `stage`, production step `step`, in `direction`:
  /// the same for every attempt and every leader.
  public func executionId(stage: LifecycleStage, hookIndex: Int, step: Int, direction: HookDirection) -> String {
    "\(id):\(stage.rawValue):\(hookIndex):\(step):\(direction.rawValue)"
  }

  /// Indices into `configuration.lifecycleHooks` of the hooks to run at the current stage and
  /// production step, in spec order.
  public func hooksToRun() -> [Int] {
    guard let stage else { return [] }
    if stage == .RECONCILE_SERVICE && activeRevisions.count <= 1 { return [] }
    if promoted && stage > .PRODUCTION_TRAFFIC_SHIFT { return [] }
    return configuration.lifecycleHooks.indices.filter { index in
      let hook = configuration.lifecycleHooks[index]
      guard hook.stages.contains(stage) else { return false }
      return stage != .PRODUCTION_TRAFFIC_SHIFT || productionStep == 0 || hook.everyStep
    }
  }

  // MARK: Derived: effects and wake-ups

  /// The hook call the leader must make (at `notBefore` or later), derived from the state alone.
  /// A new leader gets the same call, with the same executionId and attempt.
  public var pendingHookCall: HookInvocation? {
    guard status == .IN_PROGRESS, pause == nil, let hook, !hook.isPause,
      configuration.lifecycleHooks.indices.contains(hook.hookIndex)
    else { return nil }
    let weights = desired.routes.weights
    func percents(_ split: WeightSplit) -> [String: Double] {
      [blue.revision.description: split.bluePercent, green.description: split.greenPercent]
    }
    let context = HookContext(
      executionId: hook.executionId, lifecycleStage: hook.stage,
      resourceArn: "teal:service/\(service)/deployment/\(id)",
      executionDetails: HookContext.ExecutionDetails(
        testTrafficWeights: percents(weights.test), productionTrafficWeights: percents(weights.production),
        serviceArn: "teal:service/\(service)", targetServiceRevisionArn: "teal:revision/\(green)"),
      hookDetails: configuration.lifecycleHooks[hook.hookIndex].hookDetails, deploymentId: id, service: service,
      targetRevision: green.description, sourceRevision: blue.revision.description,
      productionStep: hook.productionStep, direction: hook.direction, attempt: hook.attempt)
    return HookInvocation(
      hookIndex: hook.hookIndex, hook: configuration.lifecycleHooks[hook.hookIndex], context: context,
      notBefore: hook.nextCallAt)
  }

  /// The earliest log time at which a `wakeUp` changes something, or nil when only other inputs
  /// can (the shell arms one timer at the earlier of this and `pendingHookCall?.notBefore`).
  public var nextWakeup: Instant? {
    var times: [Instant] = []
    switch status {
    case .STOP_REQUESTED, .ROLLBACK_REQUESTED:
      times.append(clock)
    case .IN_PROGRESS:
      if let hook { times.append(hook.deadline) }
      if let progressDeadline = configuration.progressDeadline { times.append(createdAt + progressDeadline) }
      guard pause == nil else { break }
      if case .waiting(let until) = gate { times.append(until) }
      if stage == .SCALE_UP, let scaleUpDeadline { times.append(scaleUpDeadline) }
      if let belowFloorSince { times.append(belowFloorSince + configuration.circuitBreaker.healthFloorGrace) }
    case .ROLLBACK_IN_PROGRESS:
      switch rollback?.phase {
      case .restoringBlue(let deadline), .confirmingBlue(let deadline): times.append(deadline)
      case .delayingStop(let until): times.append(until)
      default: break
      }
    default:
      break
    }
    return times.min()
  }

  /// Healthy tasks of `revision` on live nodes.
  public func healthyCount(_ revision: RevisionID) -> Int {
    nodes.filter(\.live).reduce(0) { $0 + $1.healthy(revision) }
  }

  /// Tasks of `revision` on live nodes that run but went unhealthy after passing their checks.
  public func unhealthyCount(_ revision: RevisionID) -> Int {
    nodes.filter(\.live).reduce(0) { $0 + $1.unhealthy(revision) }
  }

  /// Whether the world reached `convergence` (a node marked down does not count).
  public func isConverged(_ convergence: Convergence) -> Bool {
    let live = nodes.filter(\.live)
    switch convergence {
    case .routes(let generation):
      return live.allSatisfy { $0.routesGeneration >= generation }
    case .healthy(let revision, let count):
      return healthyCount(revision) >= count
    case .drained(let revision):
      let generation = desired.routes.generation
      return live.allSatisfy { $0.routesGeneration >= generation && $0.drained.contains(revision) }
    case .stopped(let revision):
      return live.allSatisfy { $0.stopped.contains(revision) }
    }
  }

  /// The state as canonical bytes: sorted keys, no dictionaries in the state, so a follower that
  /// applied the same inputs has the same bytes.
  public func canonicalEncoding() -> [UInt8] { CanonicalJSON.encode(self) }

  // MARK: Inputs

  /// Applies one input from the log. Inputs for another deployment are ignored (and change
  /// nothing); `now` is clamped to `clock`. After the input (unless refused), the deployment makes
  /// every transition it can at that time.
  @discardableResult
  public mutating func apply(_ input: DeploymentInput) -> DeploymentReply {
    guard input.deploymentId == id else {
      return .ignored(reason: "input for deployment \(input.deploymentId), not \(id)")
    }
    if input.now > clock { clock = input.now }
    let now = clock
    let reply = handle(input.command, now)
    if case .refused = reply { return reply }
    // Also after an ignored input: its time may have passed a deadline.
    if status == .STOP_REQUESTED || status == .ROLLBACK_REQUESTED {
      switch input.command {
      case .stop, .rollback, .superseded:
        // The request stays visible until the next input (`nextWakeup` is now).
        return reply
      default:
        break
      }
    }
    advance(now)
    return reply
  }

  private mutating func handle(_ command: DeploymentCommand, _ now: Instant) -> DeploymentReply {
    switch command {
    case .submit, .retry:
      return .ignored(reason: "deployment \(id) is already submitted")
    case .start:
      guard status == .PENDING else { return .ignored(reason: "deployment \(id) is \(status.rawValue), not PENDING") }
      status = .IN_PROGRESS
      record("deployment started: \(blue.revision) -> \(green), strategy \(configuration.strategy.rawValue)", now)
      enter(.RECONCILE_SERVICE, now)
      return .accepted
    case .taskHealth(let node, let revision, let healthy, let unhealthy):
      guard revision == green || revision == blue.revision else {
        return .ignored(reason: "\(revision) is neither blue nor green")
      }
      return updateNode(node) {
        $0.health.upsert(
          RevisionHealth(revision: revision, healthy: max(0, healthy), unhealthy: max(0, unhealthy ?? 0)),
          by: \.revision)
      }
    case .taskFailed(let node, let revision, let why):
      guard nodes.contains(where: { $0.node == node }) else { return .ignored(reason: "unknown node \(node)") }
      guard revision == green, status == .IN_PROGRESS, let stage, stage >= .SCALE_UP else {
        record("task of \(revision) on \(node) failed: \(why)", now)
        return .accepted
      }
      greenFailures += 1
      record(
        "green task on \(node) failed (\(greenFailures)/\(configuration.circuitBreaker.failureThreshold)): \(why)",
        now)
      let breaker = configuration.circuitBreaker
      if breaker.enable, greenFailures >= breaker.failureThreshold {
        tripCircuitBreaker(
          "\(greenFailures) green task failures reached failureThreshold \(breaker.failureThreshold)", now)
      }
      return .accepted
    case .routesApplied(let node, let generation):
      return updateNode(node) { $0.routesGeneration = max($0.routesGeneration, generation) }
    case .revisionDrained(let node, let revision):
      return updateNode(node) { $0.drained.insertSorted(revision) }
    case .taskSetStopped(let node, let revision):
      return updateNode(node) { $0.stopped.insertSorted(revision) }
    case .nodeDown(let node):
      guard let index = nodes.firstIndex(where: { $0.node == node }) else {
        return .ignored(reason: "unknown node \(node)")
      }
      guard nodes[index].live else { return .ignored(reason: "node \(node) is already down") }
      nodes[index].live = false
      record("node \(node) is down: it no longer holds the deployment back", now)
      return .accepted
    case .nodeUp(let node):
      if let index = nodes.firstIndex(where: { $0.node == node }) {
        guard !nodes[index].live else { return .ignored(reason: "node \(node) is already up") }
        nodes[index].live = true
      } else {
        guard nodes.count < Self.nodeLimit else { return .ignored(reason: "more than \(Self.nodeLimit) nodes") }
        nodes.upsert(NodeObservation(node: node), by: \.node)
      }
      record("node \(node) is up: the deployment waits for its reports too", now)
      return .accepted
    case .hookAnswered(let result):
      return onHookResult(result, now)
    case .wakeUp:
      return .accepted
    case .metricSample(let sample):
      return onSample(sample, now)
    case .stop(let by):
      return onRollbackRequest(reason: "stop requested by \(by)", status: .STOP_REQUESTED, now)
    case .rollback(let by):
      return onRollbackRequest(reason: "rollback requested by \(by)", status: .ROLLBACK_REQUESTED, now)
    case .superseded(let newer):
      return onRollbackRequest(reason: "superseded by deployment \(newer)", status: .ROLLBACK_REQUESTED, now)
    case .pause(let by):
      guard status == .IN_PROGRESS else { return .refused(reason: "deployment \(id) is \(status.rawValue)") }
      guard pause == nil else { return .ignored(reason: "deployment \(id) is already paused") }
      pause = PauseState(since: now, requestedBy: by)
      record("paused by \(by)", now)
      return .accepted
    case .continue(let by):
      return onContinue(by, now)
    case .promote(let by):
      return onPromote(by, now)
    }
  }

  private mutating func updateNode(_ node: NodeID, _ change: (inout NodeObservation) -> Void) -> DeploymentReply {
    guard let index = nodes.firstIndex(where: { $0.node == node }) else {
      return .ignored(reason: "unknown node \(node)")
    }
    change(&nodes[index])
    return .accepted
  }

  // MARK: Hooks

  private mutating func startHook(_ hookIndex: Int, _ now: Instant) {
    guard let stage else { return }
    let spec = configuration.lifecycleHooks[hookIndex]
    let step = stage == .PRODUCTION_TRAFFIC_SHIFT ? productionStep : 0
    let executionId = executionId(stage: stage, hookIndex: hookIndex, step: step, direction: .FORWARD)
    let isPause: Bool
    if case .pause = spec.action { isPause = true } else { isPause = false }
    hook = HookExecution(
      hookIndex: hookIndex, executionId: executionId, stage: stage, productionStep: step,
      direction: .FORWARD, attempt: 1, nextCallAt: now, deadline: now + spec.overallTimeout,
      unansweredAttempts: 0, isPause: isPause)
    record(
      isPause
        ? "PAUSE hook \(hookIndex) waits for continue or rollback until \(now + spec.overallTimeout) (\(executionId))"
        : "hook \(hookIndex) execution \(executionId) begins; overall timeout \(spec.overallTimeout)", now)
  }

  /// Backoff after an unanswered attempt: 1 s doubling up to 60 s (bounded; within the overall timeout).
  static func retryBackoff(afterUnanswered count: Int) -> TimeSpan {
    .seconds(Int64(min(60, 1 << min(6, max(0, count - 1)))))
  }

  private mutating func onHookResult(_ result: HookResult, _ now: Instant) -> DeploymentReply {
    guard status == .IN_PROGRESS, var run = hook, !run.isPause, result.executionId == run.executionId,
      result.attempt == run.attempt
    else {
      return .ignored(
        reason: "hook answer for \(result.executionId) attempt \(result.attempt) is not awaited (stale or late)")
    }
    let spec = configuration.lifecycleHooks[run.hookIndex]
    let label = "hook \(run.hookIndex) at \(run.stage.rawValue) attempt \(run.attempt)"
    let output = result.output.map { ": \(Self.bounded($0))" } ?? ""
    switch result.outcome {
    case .succeeded:
      record("\(label) SUCCEEDED\(output)", now)
      finishHook(now)
    case .failed(let why):
      record("\(label) FAILED: \(why)\(output)", now)
      beginRollback("\(label) FAILED: \(why)", now)
    case .inProgress:
      let delay = min(TimeSpan.hours(1), max(TimeSpan.seconds(1), result.callBackDelay ?? spec.callBackDelay))
      run.attempt += 1
      run.unansweredAttempts = 0
      run.nextCallAt = now + delay
      hook = run
      record("\(label) IN_PROGRESS; calling again at \(run.nextCallAt)\(output)", now)
    case .timedOut, .unreachable:
      run.attempt += 1
      run.unansweredAttempts += 1
      run.nextCallAt = now + Self.retryBackoff(afterUnanswered: run.unansweredAttempts)
      hook = run
      let why: String
      if case .unreachable(let detail) = result.outcome {
        why = "could not reach the hook (\(detail))"
      } else {
        why = "no answer within \(spec.action.timeout)"
      }
      record("\(label): \(why); retrying at \(run.nextCallAt), overall timeout at \(run.deadline)\(output)", now)
    }
    return .accepted
  }

  private mutating func finishHook(_ now: Instant) {
    hook = nil
    if case .runningHooks(let cursor) = gate { gate = .runningHooks(cursor: cursor + 1) }
  }

  private mutating func hookTimedOut(_ run: HookExecution, _ now: Instant) {
    let spec = configuration.lifecycleHooks[run.hookIndex]
    let label = run.isPause ? "PAUSE hook \(run.hookIndex)" : "hook \(run.hookIndex) at \(run.stage.rawValue)"
    switch spec.timeoutAction {
    case .ROLLBACK:
      record("\(label) reached its overall timeout \(spec.overallTimeout); timeoutAction ROLLBACK", now)
      beginRollback("\(label) timed out after \(spec.overallTimeout)", now)
    case .CONTINUE:
      record("\(label) reached its overall timeout \(spec.overallTimeout); timeoutAction CONTINUE", now)
      finishHook(now)
    }
  }

  // MARK: Operator requests

  /// Why a rollback or stop would be refused now, or nil when it would be accepted.
  public var rollbackRefusal: String? {
    if status.isTerminal {
      if stage == .CLEAN_UP && status == .SUCCESSFUL {
        return "deployment \(id) reached CLEAN_UP: blue \(blue.revision) is stopped and cannot be rolled back to"
      }
      return "deployment \(id) is already \(status.rawValue)"
    }
    if stage == .CLEAN_UP && status == .IN_PROGRESS {
      return "deployment \(id) is in CLEAN_UP: blue \(blue.revision) is draining and cannot be rolled back to"
    }
    return nil
  }

  private mutating func onRollbackRequest(
    reason why: String, status requested: DeploymentStatus, _ now: Instant
  ) -> DeploymentReply {
    if let refusal = rollbackRefusal {
      record("refused: \(why): \(refusal)", now)
      return .refused(reason: refusal)
    }
    switch status {
    case .PENDING:
      status = .STOPPED
      reason = why
      record("stopped before it started: \(why)", now)
    case .IN_PROGRESS:
      status = requested
      reason = why
      gate = nil
      hook = nil
      pause = nil
      record("\(requested.rawValue): \(why)", now)
    default:
      record("\(why): the rollback continues", now)
    }
    return .accepted
  }

  private mutating func onContinue(_ by: String, _ now: Instant) -> DeploymentReply {
    guard status == .IN_PROGRESS else { return .refused(reason: "deployment \(id) is \(status.rawValue)") }
    if let pause {
      let held = now - pause.since
      self.pause = nil
      if case .waiting(let until) = gate { gate = .waiting(until: until + held) }
      if let deadline = scaleUpDeadline { scaleUpDeadline = deadline + held }
      record("continued by \(by) after a pause of \(held)", now)
      return .accepted
    }
    if let run = hook, run.isPause {
      record("PAUSE hook \(run.hookIndex) released by \(by)", now)
      finishHook(now)
      return .accepted
    }
    return .ignored(reason: "deployment \(id) is neither paused nor waiting at a PAUSE hook")
  }

  private mutating func onPromote(_ by: String, _ now: Instant) -> DeploymentReply {
    guard status == .IN_PROGRESS, let stage else {
      return .refused(reason: "deployment \(id) is \(status.rawValue)")
    }
    guard stage > .SCALE_UP else {
      return .refused(reason: "deployment \(id) is at \(stage.rawValue): green is not healthy yet")
    }
    guard stage < .CLEAN_UP, !promoted else { return .ignored(reason: "deployment \(id) is already finishing") }
    promoted = true
    hook = nil
    pause = nil
    record("promoted by \(by): production 100 % green, then CLEAN_UP", now)
    if stage < .PRODUCTION_TRAFFIC_SHIFT {
      enter(.PRODUCTION_TRAFFIC_SHIFT, now)
    }
    productionStep = max(0, configuration.productionWeightSteps.count - 1)
    if desired.routes.weights != TrafficWeights(production: .allGreen, test: .allGreen) {
      setWeights(TrafficWeights(production: .allGreen, test: .allGreen), now)
    }
    gate = .converging(.routes(generation: desired.routes.generation))
    if let current = self.stage, current > .PRODUCTION_TRAFFIC_SHIFT, current < .CLEAN_UP {
      // Already past the shift: only bake is left to skip.
      enter(.CLEAN_UP, now)
    }
    return .accepted
  }

  // MARK: Alarms

  private mutating func onSample(_ sample: MetricSample, _ now: Instant) -> DeploymentReply {
    guard status == .IN_PROGRESS, let stage else { return .ignored(reason: "deployment \(id) is not in progress") }
    samples.append(sample)
    let longest = configuration.alarms.map(\.window).max() ?? .zero
    let cutoff = Instant(millisecondsSinceEpoch: sample.at.millisecondsSinceEpoch - longest.milliseconds)
    samples.removeAll { $0.at <= cutoff }
    if samples.count > Self.sampleLimit { samples.removeFirst(samples.count - Self.sampleLimit) }
    let evaluator = AlarmEvaluator(alarms: configuration.alarms, samples: samples)
    let breaches = evaluator.breaches(stage: stage, now: now)
    for breach in breaches { record("alarm \(breach.alarm): \(breach.reason)", now) }
    if let first = breaches.first(where: \.rollback) {
      beginRollback("alarm \(first.alarm) fired: \(first.reason)", now)
    }
    return .accepted
  }

  // MARK: Transitions

  /// Makes every transition possible at `now`, until the deployment waits for an input.
  private mutating func advance(_ now: Instant) {
    for _ in 0..<Self.transitionLimit {
      let moved: Bool
      switch status {
      case .STOP_REQUESTED, .ROLLBACK_REQUESTED:
        beginRollback(reason ?? "rollback requested", now)
        moved = true
      case .IN_PROGRESS:
        moved = stepForward(now)
      case .ROLLBACK_IN_PROGRESS:
        moved = stepRollback(now)
      default:
        moved = false
      }
      if !moved { return }
    }
    preconditionFailure(
      "deployment \(id) made \(Self.transitionLimit) transitions on one input at \(stage.map(\.rawValue) ?? "-")")
  }

  /// One forward transition at `now`; false when waiting.
  private mutating func stepForward(_ now: Instant) -> Bool {
    if let progressDeadline = configuration.progressDeadline, now >= createdAt + progressDeadline {
      beginRollback("progressDeadline \(progressDeadline) passed before the deployment finished", now)
      return true
    }
    if let run = hook, now >= run.deadline {
      hookTimedOut(run, now)
      return true
    }
    guard pause == nil else { return false }
    if stage == .SCALE_UP, let deadline = scaleUpDeadline, now >= deadline,
      !isConverged(.healthy(revision: green, count: desiredCount))
    {
      tripCircuitBreaker(
        "green \(green) has \(healthyCount(green))/\(desiredCount) healthy tasks after scaleUpTimeout "
          + "\(configuration.circuitBreaker.scaleUpTimeout)", now)
      return true
    }
    if let stage, stage > .SCALE_UP, stage < .CLEAN_UP, configuration.circuitBreaker.enable {
      switch checkHealthFloor(now) {
      case .tripped: return true
      case .holding: return false
      case .atFloor: break
      }
    }
    guard let gate else { return false }
    switch gate {
    case .converging(let convergence):
      guard isConverged(convergence) else { return false }
      afterConvergence(convergence, now)
      return true
    case .runningHooks(let cursor):
      let hooks = hooksToRun()
      if cursor >= hooks.count {
        afterHooks(now)
        return true
      }
      guard hook == nil else { return false }
      startHook(hooks[cursor], now)
      return true
    case .waiting(let until):
      guard now >= until else { return false }
      afterWait(now)
      return true
    }
  }

  private enum FloorCheck { case atFloor, holding, tripped }

  /// After SCALE_UP, green must keep `healthFloor` healthy tasks. Below it because tasks went
  /// unhealthy (too many to reach the floor even if every missing one came back), the breaker trips
  /// at once: green is bad. Below it only for want of tasks (a node died, restarted or drains and
  /// the replacements are not healthy yet), the deployment holds where it is (no traffic step, no end
  /// of bake, no clean-up of blue) and the breaker trips only if that lasts `healthFloorGrace`.
  private mutating func checkHealthFloor(_ now: Instant) -> FloorCheck {
    let floor = Self.healthFloor(desiredCount: desiredCount)
    let healthy = healthyCount(green)
    guard healthy < floor else {
      if let since = belowFloorSince {
        belowFloorSince = nil
        record(
          "green \(green) is back at \(healthy)/\(desiredCount) healthy tasks (floor \(floor)) after "
            + "\(now - since) below it; going on", now)
      }
      return .atFloor
    }
    let unhealthy = unhealthyCount(green)
    if desiredCount - unhealthy < floor {
      tripCircuitBreaker(
        "green \(green) fell to \(healthy)/\(desiredCount) healthy tasks after SCALE_UP (floor \(floor)), "
          + "\(unhealthy) of them unhealthy", now)
      return .tripped
    }
    let grace = configuration.circuitBreaker.healthFloorGrace
    let since = belowFloorSince ?? now
    if now >= since + grace {
      tripCircuitBreaker(
        "green \(green) stayed below its floor (\(healthy)/\(desiredCount) healthy tasks, floor \(floor)) "
          + "for healthFloorGrace \(grace) after SCALE_UP", now)
      return .tripped
    }
    if belowFloorSince == nil {
      belowFloorSince = now
      record(
        "green \(green) fell to \(healthy)/\(desiredCount) healthy tasks (floor \(floor)) for want of tasks; "
          + "holding until they are replaced, at most healthFloorGrace \(grace)", now)
    }
    return .holding
  }

  /// Green's healthy count below which the circuit breaker trips after SCALE_UP: half the desired
  /// count, rounded up (at least 1), as ECS derives its threshold from the desired count.
  public static func healthFloor(desiredCount: Int) -> Int { max(1, (desiredCount + 1) / 2) }

  /// Enters `next` and sets the desired state and gate of its action.
  private mutating func enter(_ next: LifecycleStage, _ now: Instant) {
    stage = next
    stageTimeline.append(StageEntry(stage: next, enteredAt: now))
    hook = nil
    record("entered \(next.rawValue)", now)
    switch next {
    case .RECONCILE_SERVICE, .PRE_SCALE_UP, .POST_SCALE_UP, .POST_TEST_TRAFFIC_SHIFT, .POST_PRODUCTION_TRAFFIC_SHIFT:
      gate = .runningHooks(cursor: 0)
    case .SCALE_UP:
      desired.taskSets.upsert(TaskSetTarget(revision: green, count: desiredCount, phase: .serving), by: \.revision)
      record("green \(green): run \(desiredCount) tasks", now)
      if configuration.circuitBreaker.enable { scaleUpDeadline = now + configuration.circuitBreaker.scaleUpTimeout }
      gate = .converging(.healthy(revision: green, count: desiredCount))
    case .TEST_TRAFFIC_SHIFT:
      setWeights(TrafficWeights(production: desired.routes.weights.production, test: .allGreen), now)
      gate = .converging(.routes(generation: desired.routes.generation))
    case .PRODUCTION_TRAFFIC_SHIFT:
      productionStep = 0
      let first = configuration.productionWeightSteps.first ?? .allGreen
      setWeights(TrafficWeights(production: first, test: desired.routes.weights.test), now)
      gate = .converging(.routes(generation: desired.routes.generation))
    case .BAKE_TIME:
      gate = .waiting(until: now + configuration.bakeTime)
      record("baking until \(now + configuration.bakeTime)", now)
    case .CLEAN_UP:
      setTaskSet(blue.revision, phase: .draining, now)
      gate = .converging(.drained(blue.revision))
    }
  }

  private mutating func afterConvergence(_ convergence: Convergence, _ now: Instant) {
    guard let stage else { return }
    switch (stage, convergence) {
    case (.SCALE_UP, _):
      scaleUpDeadline = nil
      record("green \(green): \(healthyCount(green))/\(desiredCount) tasks healthy", now)
      enter(.POST_SCALE_UP, now)
    case (.CLEAN_UP, .drained):
      setTaskSet(blue.revision, phase: .stopped, now)
      gate = .converging(.stopped(blue.revision))
    case (.CLEAN_UP, .stopped):
      gate = nil
      status = .SUCCESSFUL
      record("deployment successful: \(green) serves all traffic; blue \(blue.revision) stopped", now)
    case (.PRODUCTION_TRAFFIC_SHIFT, _) where promoted:
      enter(.CLEAN_UP, now)
    default:
      record("converged: \(convergence)", now)
      gate = .runningHooks(cursor: 0)
    }
  }

  private mutating func afterHooks(_ now: Instant) {
    guard let stage else { return }
    if stage == .PRODUCTION_TRAFFIC_SHIFT, productionStep < configuration.productionWeightSteps.count - 1 {
      let until = now + configuration.productionStepWait(after: productionStep)
      gate = .waiting(until: until)
      record("holding production step \(productionStep + 1) until \(until)", now)
      return
    }
    if stage == .POST_PRODUCTION_TRAFFIC_SHIFT && promoted {
      enter(.CLEAN_UP, now)
      return
    }
    guard let next = stage.next else { return }
    enter(next, now)
  }

  private mutating func afterWait(_ now: Instant) {
    guard let stage else { return }
    switch stage {
    case .PRODUCTION_TRAFFIC_SHIFT:
      productionStep += 1
      let steps = configuration.productionWeightSteps
      setWeights(TrafficWeights(production: steps[productionStep], test: desired.routes.weights.test), now)
      record("production step \(productionStep + 1)/\(steps.count)", now)
      gate = .converging(.routes(generation: desired.routes.generation))
    case .BAKE_TIME:
      enter(.CLEAN_UP, now)
    default:
      gate = .runningHooks(cursor: 0)
    }
  }

  /// New weights: a new routes generation.
  private mutating func setWeights(_ weights: TrafficWeights, _ now: Instant) {
    desired.routes.weights = weights
    desired.routes.generation += 1
    record("routes generation \(desired.routes.generation): \(weights)", now)
  }

  /// A task set changes phase. Draining changes what is routable: a new routes generation.
  private mutating func setTaskSet(_ revision: RevisionID, phase: TaskSetTarget.Phase, _ now: Instant) {
    guard var target = desired.taskSet(revision) else { return }
    target.phase = phase
    desired.taskSets.upsert(target, by: \.revision)
    if phase == .draining {
      desired.routes.generation += 1
      record("routes generation \(desired.routes.generation): \(revision) drains", now)
    } else {
      record("\(revision): task set \(phase.rawValue)", now)
    }
  }

  private mutating func tripCircuitBreaker(_ why: String, _ now: Instant) {
    record("circuit breaker tripped: \(why)", now)
    if configuration.circuitBreaker.rollback {
      beginRollback("circuit breaker: \(why)", now)
    } else {
      gate = nil
      hook = nil
      scaleUpDeadline = nil
      status = .STOPPED
      reason = "circuit breaker: \(why)"
      record("stopped by the circuit breaker (rollback disabled); task sets left as they are", now)
    }
  }

  // MARK: Rollback

  /// Starts the rollback in the safe order: blue first.
  private mutating func beginRollback(_ why: String, _ now: Instant) {
    belowFloorSince = nil
    status = .ROLLBACK_IN_PROGRESS
    if reason == nil { reason = why }
    gate = nil
    hook = nil
    pause = nil
    scaleUpDeadline = nil
    desired.taskSets.upsert(
      TaskSetTarget(revision: blue.revision, count: blue.desiredCount, phase: .serving), by: \.revision)
    let deadline = now + configuration.rollbackTimeout
    rollback = RollbackProgress(startedAt: now, phase: .restoringBlue(deadline: deadline))
    record(
      "rolling back: \(why); blue \(blue.revision) must have \(blue.desiredCount) healthy tasks by \(deadline)", now)
  }

  /// One rollback transition at `now`; false when waiting.
  private mutating func stepRollback(_ now: Instant) -> Bool {
    guard var progress = rollback else { return false }
    defer { rollback = progress }
    switch progress.phase {
    case .restoringBlue(let deadline):
      if isConverged(.healthy(revision: blue.revision, count: blue.desiredCount)) {
        record("blue \(blue.revision): \(healthyCount(blue.revision))/\(blue.desiredCount) tasks healthy", now)
        setWeights(.allBlue, now)
        if desired.taskSet(green) != nil { setTaskSet(green, phase: .draining, now) }
        progress.phase = .drainingGreen
        return true
      }
      guard now >= deadline else { return false }
      fail(
        "blue \(blue.revision) has \(healthyCount(blue.revision))/\(blue.desiredCount) healthy tasks "
          + "\(configuration.rollbackTimeout) after the rollback began; traffic stays where it was", now)
      progress.phase = .finished
      return true
    case .drainingGreen:
      let drained =
        desired.taskSet(green) == nil
        ? isConverged(.routes(generation: desired.routes.generation)) : isConverged(.drained(green))
      guard drained else { return false }
      if desired.taskSet(green) == nil {
        progress.phase = .confirmingBlue(deadline: now + configuration.rollbackTimeout)
      } else {
        let until = now + configuration.abortScaleDownDelay
        record("traffic on blue everywhere, green drained; green stops at \(until)", now)
        progress.phase = .delayingStop(until: until)
      }
      return true
    case .delayingStop(let until):
      guard now >= until else { return false }
      setTaskSet(green, phase: .stopped, now)
      progress.phase = .stoppingGreen
      return true
    case .stoppingGreen:
      guard isConverged(.stopped(green)) else { return false }
      progress.phase = .confirmingBlue(deadline: now + configuration.rollbackTimeout)
      return true
    case .confirmingBlue(let deadline):
      if isConverged(.healthy(revision: blue.revision, count: blue.desiredCount)) {
        status = .ROLLBACK_SUCCESSFUL
        record(
          "rollback successful: blue \(blue.revision) serves all traffic with \(healthyCount(blue.revision))/"
            + "\(blue.desiredCount) healthy tasks", now)
        progress.phase = .finished
        return true
      }
      guard now >= deadline else { return false }
      fail(
        "blue \(blue.revision) lost health after the rollback (\(healthyCount(blue.revision))/\(blue.desiredCount))",
        now)
      progress.phase = .finished
      return true
    case .finished:
      return false
    }
  }

  private mutating func fail(_ why: String, _ now: Instant) {
    status = .ROLLBACK_FAILED
    reason = "\(reason ?? "rollback"); \(why)"
    record("rollback failed: \(why)", now)
  }

  // MARK: History

  /// Hook output as kept in history: at most `outputLimit` characters.
  static func bounded(_ text: String) -> String {
    text.count <= outputLimit ? text : String(text.prefix(outputLimit)) + "...(truncated)"
  }

  mutating func recordRequest(_ message: String) { record(message, clock) }

  private mutating func record(_ message: String, _ now: Instant) {
    history.append(DeploymentEvent(at: now, deploymentId: id, stage: stage, status: status, message: message))
    if history.count > Self.historyLimit { history.removeFirst(history.count - Self.historyLimit) }
  }
}
