// The deployment engine: ECS's blue/green lifecycle as a pure, resumable state machine.
//
// `(state, event, now) -> (state, [Effect])`. The engine never reads a clock, never does I/O and
// keeps every deadline as an absolute `Instant` in its Codable state, so that a new leader can
// decode the replicated state and `resume(now:)` exactly where the old one stopped.

// MARK: - Hook protocol values

/// A listener's split in percent, as hooks see it.
public struct WeightPercents: Codable, Hashable, Sendable {
  public var blue: Double
  public var green: Double

  public init(_ split: WeightSplit) {
    blue = split.bluePercent
    green = split.greenPercent
  }
}

/// The JSON body a hook receives (HTTP body or command stdin).
///
/// Invariant: every attempt at the same stage of the same deployment carries the same
/// `executionId`; `attempt` counts from 1.
public struct HookContext: Codable, Hashable, Sendable {
  public var executionId: String
  public var lifecycleStage: LifecycleStage
  public var deploymentId: String
  public var service: String
  /// The green revision, e.g. `web:2`.
  public var targetRevision: String
  /// The blue revision, e.g. `web:1`.
  public var sourceRevision: String
  public var testTrafficWeights: WeightPercents
  public var productionTrafficWeights: WeightPercents
  public var attempt: Int

  public init(
    executionId: String, lifecycleStage: LifecycleStage, deploymentId: String, service: String,
    targetRevision: String, sourceRevision: String, testTrafficWeights: WeightPercents,
    productionTrafficWeights: WeightPercents, attempt: Int
  ) {
    self.executionId = executionId
    self.lifecycleStage = lifecycleStage
    self.deploymentId = deploymentId
    self.service = service
    self.targetRevision = targetRevision
    self.sourceRevision = sourceRevision
    self.testTrafficWeights = testTrafficWeights
    self.productionTrafficWeights = productionTrafficWeights
    self.attempt = attempt
  }
}

/// One hook call the shell must make, then answer with `Event.hookResult`.
public struct HookInvocation: Codable, Hashable, Sendable {
  /// Index of the hook in `DeploymentConfig.lifecycleHooks`.
  public var hookIndex: Int
  public var hook: LifecycleHookSpec
  public var context: HookContext

  public init(hookIndex: Int, hook: LifecycleHookSpec, context: HookContext) {
    self.hookIndex = hookIndex
    self.hook = hook
    self.context = context
  }
}

/// What a hook answered, or that it did not answer in time.
public enum HookOutcome: Codable, Hashable, Sendable {
  case succeeded
  case failed(reason: String)
  case inProgress
  case timedOut
}

/// The answer to one `HookInvocation`. `output` (truncated stdout/stderr or body) goes into history.
public struct HookResult: Codable, Hashable, Sendable {
  public var executionId: String
  public var hookIndex: Int
  public var attempt: Int
  public var outcome: HookOutcome
  public var output: String?

  public init(executionId: String, hookIndex: Int, attempt: Int, outcome: HookOutcome, output: String? = nil) {
    self.executionId = executionId
    self.hookIndex = hookIndex
    self.attempt = attempt
    self.outcome = outcome
    self.output = output
  }

  /// The result answering `invocation`.
  public init(answering invocation: HookInvocation, outcome: HookOutcome, output: String? = nil) {
    self.init(
      executionId: invocation.context.executionId, hookIndex: invocation.hookIndex,
      attempt: invocation.context.attempt, outcome: outcome, output: output)
  }
}

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

// MARK: - Engine

/// A deployment of one service from its blue revision to a green one.
///
/// Invariants (checked by the property tests):
/// - production and test weights each sum to 100 % (`WeightSplit` makes this structural);
/// - blue's task set is stopped only on entering CLEAN_UP, which happens only after BAKE_TIME;
/// - the stage only moves forward; a rollback changes the status, never the stage;
/// - every hook invocation at a stage carries that stage's `executionId`;
/// - after a rollback both listeners send 100 % to blue, set by one `setWeights` effect.
///
/// The shell must persist (replicate) the new state before carrying out the effects it got, so a
/// new leader never misses a hook call or a weight it already acted on.
public struct DeploymentEngine: Codable, Hashable, Sendable {
  /// What the shell must do.
  public enum Effect: Codable, Hashable, Sendable {
    /// Run `count` tasks of `revision` (its target group).
    case scaleTaskSet(revision: RevisionID, count: Int)
    /// Set both listeners' blue/green weights at once.
    case setWeights(TrafficWeights)
    /// Call a hook and answer with `Event.hookResult`.
    case invokeHook(HookInvocation)
    /// Deliver `Event.wakeUp` at (or after) `at`. Spurious or late wake-ups are harmless.
    case scheduleWakeUp(at: Instant)
    /// Stop every task of `revision`.
    case stopTaskSet(revision: RevisionID)
    /// Append to the replicated event history (also kept in `history`).
    case recordEvent(DeploymentEvent)
    /// A request (stop, supersede) was refused; tell the caller why. The state did not change.
    case requestRefused(reason: String)
  }

  /// What happened.
  public enum Event: Codable, Hashable, Sendable {
    /// `healthy` tasks of `revision` currently pass their health check.
    case taskSetHealth(revision: RevisionID, healthy: Int)
    /// A task of `revision` failed (exited, or never became healthy).
    case taskFailed(revision: RevisionID, reason: String)
    case hookResult(HookResult)
    /// A scheduled wake-up (or any timer tick): the engine checks all its deadlines against `now`.
    case wakeUp
    case alarmFired(alarm: String, reason: String)
    /// A person asked to stop, with or without rollback.
    case stopRequested(rollback: Bool, requestedBy: String)
    /// A newer deployment of the same service asked this one to roll back.
    case superseded(by: String)
    /// This node became leader: same as `resume(now:)`.
    case leadershipResumed
  }

  /// Extra time the engine grants a hook beyond its own timeout before it treats it as timed out
  /// itself (covers a shell that died mid-call).
  public static let hookResponseGrace = TimeSpan.seconds(5)
  /// History entries kept per deployment (the oldest are dropped beyond this).
  public static let historyLimit = 500
  /// Characters of a hook's output kept in one history entry.
  public static let outputLimit = 4096

  // MARK: State

  public let deploymentId: String
  public let service: String
  public let blue: RevisionID
  public let green: RevisionID
  public let desiredCount: Int
  public let config: DeploymentConfig
  public let createdAt: Instant

  public private(set) var status: DeploymentStatus = .PENDING
  /// Nil while PENDING.
  public private(set) var stage: LifecycleStage?
  public private(set) var stageTimeline: [StageEntry] = []
  public private(set) var weights: TrafficWeights = .allBlue
  public private(set) var greenHealthy = 0
  public private(set) var blueHealthy: Int
  public private(set) var greenFailures = 0
  /// Why the deployment rolled back or stopped, if it did.
  public private(set) var reason: String?
  public private(set) var history: [DeploymentEvent] = []

  /// SCALE_UP: when the circuit breaker trips if green is not all healthy.
  public private(set) var scaleUpDeadline: Instant?
  /// Index of the hook (among this stage's hooks) being run; equals their count when done.
  public private(set) var stageHookCursor = 0
  public private(set) var hookRun: HookRun?
  /// PRODUCTION_TRAFFIC_SHIFT: index into `config.productionWeightSteps` of the current weight.
  public private(set) var productionStep = 0
  /// PRODUCTION_TRAFFIC_SHIFT: when the current step's wait ends.
  public private(set) var stepDeadline: Instant?
  /// BAKE_TIME: when CLEAN_UP begins.
  public private(set) var bakeDeadline: Instant?
  /// ROLLBACK_IN_PROGRESS: when rollback fails if blue is not all healthy.
  public private(set) var rollbackDeadline: Instant?

  /// The hook being called at the current stage.
  public struct HookRun: Codable, Hashable, Sendable {
    public var hookIndex: Int
    public var executionId: String
    public var attempt: Int
    public var waiting: Waiting

    public enum Waiting: Codable, Hashable, Sendable {
      /// Invoked; no answer yet. Treated as timed out at `deadline`.
      case response(deadline: Instant)
      /// Answered IN_PROGRESS; call again at `at`.
      case callBack(at: Instant)
    }
  }

  /// A deployment of `green` replacing `blue`, PENDING until `start(now:)`. Desired count and
  /// deployment configuration come from green's spec. Blue is assumed fully healthy until a
  /// `taskSetHealth` event says otherwise.
  public init(deploymentId: String, blue: RevisionID, green: Revision, createdAt: Instant) {
    self.deploymentId = deploymentId
    self.service = green.id.service
    self.blue = blue
    self.green = green.id
    self.desiredCount = green.spec.desiredCount
    self.config = green.spec.deployment
    self.createdAt = createdAt
    self.blueHealthy = green.spec.desiredCount
  }

  /// The execution id every hook call at `stage` carries.
  public func executionId(for stage: LifecycleStage) -> String { "\(deploymentId)-\(stage.rawValue)" }

  /// Indices into `config.lifecycleHooks` of the hooks that run at `stage`, in spec order.
  public func hookIndices(at stage: LifecycleStage) -> [Int] {
    config.lifecycleHooks.indices.filter { config.lifecycleHooks[$0].stages.contains(stage) }
  }

  /// Why a stop or rollback would be refused now, or nil when it would be accepted.
  public var stopRefusal: String? {
    if status.isTerminal {
      if stage == .CLEAN_UP {
        return "deployment \(deploymentId) reached CLEAN_UP: blue \(blue) is stopped and cannot be rolled back to"
      }
      return "deployment \(deploymentId) is already \(status.rawValue)"
    }
    if status == .ROLLBACK_IN_PROGRESS || status == .ROLLBACK_REQUESTED {
      return "deployment \(deploymentId) is already rolling back"
    }
    return nil
  }

  /// True while the deployment still holds its service (not terminal).
  public var isActive: Bool { !status.isTerminal }

  // MARK: Inputs

  /// Starts a PENDING deployment: IN_PROGRESS at RECONCILE_SERVICE. No effect when not PENDING.
  public mutating func start(now: Instant) -> [Effect] {
    guard status == .PENDING else { return [] }
    var effects: [Effect] = []
    status = .IN_PROGRESS
    record("deployment started: \(blue) -> \(green), strategy \(config.strategy.rawValue)", now, &effects)
    enter(.RECONCILE_SERVICE, now, &effects)
    progress(now, &effects)
    return effects
  }

  /// Applies one event at `now` and returns what the shell must do.
  public mutating func handle(_ event: Event, now: Instant) -> [Effect] {
    var effects: [Effect] = []
    switch event {
    case .taskSetHealth(let revision, let healthy):
      onTaskSetHealth(revision, healthy, now, &effects)
    case .taskFailed(let revision, let why):
      onTaskFailed(revision, why, now, &effects)
    case .hookResult(let result):
      onHookResult(result, now, &effects)
    case .wakeUp:
      onWakeUp(now, &effects)
    case .alarmFired(let alarm, let why):
      onAlarm(alarm, why, now, &effects)
    case .stopRequested(let rollback, let requestedBy):
      onStopRequest(rollback: rollback, reason: "stop requested by \(requestedBy)", now, &effects)
    case .superseded(let newer):
      onStopRequest(rollback: true, reason: "superseded by deployment \(newer)", now, &effects)
    case .leadershipResumed:
      return resume(now: now)
    }
    return effects
  }

  /// The engine as a function: `(state, event, now) -> (state, [Effect])`.
  public static func step(_ state: DeploymentEngine, _ event: Event, now: Instant) -> (DeploymentEngine, [Effect]) {
    var next = state
    let effects = next.handle(event, now: now)
    return (next, effects)
  }

  /// Continues after this state was decoded on a (new) leader: re-arms every deadline at its
  /// absolute time, re-invokes an unanswered hook with the same executionId and the next attempt,
  /// re-issues the idempotent scale-up or rollback effects of the current step, then acts on any
  /// deadline that passed meanwhile. Never restarts a timer.
  public mutating func resume(now: Instant) -> [Effect] {
    var effects: [Effect] = []
    switch status {
    case .IN_PROGRESS:
      record("resumed by a new leader", now, &effects)
      if stage == .SCALE_UP, greenHealthy < desiredCount {
        effects.append(.scaleTaskSet(revision: green, count: desiredCount))
        if let scaleUpDeadline { effects.append(.scheduleWakeUp(at: scaleUpDeadline)) }
      }
      if let run = hookRun {
        switch run.waiting {
        case .response:
          invokeHook(run.hookIndex, attempt: run.attempt + 1, now, &effects)
        case .callBack(let at):
          effects.append(.scheduleWakeUp(at: at))
        }
      }
      if let stepDeadline { effects.append(.scheduleWakeUp(at: stepDeadline)) }
      if let bakeDeadline, stage == .BAKE_TIME { effects.append(.scheduleWakeUp(at: bakeDeadline)) }
      onWakeUp(now, &effects)
    case .ROLLBACK_IN_PROGRESS:
      record("resumed by a new leader during rollback", now, &effects)
      effects.append(.setWeights(.allBlue))
      effects.append(.stopTaskSet(revision: green))
      if blueHealthy < desiredCount {
        effects.append(.scaleTaskSet(revision: blue, count: desiredCount))
        if let rollbackDeadline { effects.append(.scheduleWakeUp(at: rollbackDeadline)) }
      }
      onWakeUp(now, &effects)
    default:
      break
    }
    return effects
  }

  // MARK: Event handlers

  private mutating func onTaskSetHealth(
    _ revision: RevisionID, _ healthy: Int, _ now: Instant, _ effects: inout [Effect]
  ) {
    if revision == green {
      guard healthy != greenHealthy else { return }
      greenHealthy = max(0, healthy)
      record("green \(green): \(greenHealthy)/\(desiredCount) tasks healthy", now, &effects)
      if status == .IN_PROGRESS { progress(now, &effects) }
    } else if revision == blue {
      guard healthy != blueHealthy else { return }
      blueHealthy = max(0, healthy)
      record("blue \(blue): \(blueHealthy)/\(desiredCount) tasks healthy", now, &effects)
      if status == .ROLLBACK_IN_PROGRESS, blueHealthy >= desiredCount {
        finishRollback(now, &effects)
      }
    }
  }

  private mutating func onTaskFailed(_ revision: RevisionID, _ why: String, _ now: Instant, _ effects: inout [Effect]) {
    guard revision == green, status == .IN_PROGRESS else {
      record("task of \(revision) failed: \(why)", now, &effects)
      return
    }
    greenFailures += 1
    record("green task failed (\(greenFailures)/\(config.circuitBreaker.failureThreshold)): \(why)", now, &effects)
    let breaker = config.circuitBreaker
    if breaker.enable, greenFailures >= breaker.failureThreshold {
      tripCircuitBreaker(
        "\(greenFailures) green task failures reached failureThreshold \(breaker.failureThreshold)", now, &effects)
    }
  }

  private mutating func onHookResult(_ result: HookResult, _ now: Instant, _ effects: inout [Effect]) {
    guard status == .IN_PROGRESS, let run = hookRun, case .response = run.waiting,
      result.executionId == run.executionId, result.hookIndex == run.hookIndex, result.attempt == run.attempt,
      config.lifecycleHooks.indices.contains(run.hookIndex)
    else {
      record(
        "ignored hook result for \(result.executionId) hook \(result.hookIndex) attempt \(result.attempt): not awaited",
        now, &effects)
      return
    }
    let hook = config.lifecycleHooks[run.hookIndex]
    let label = "hook \(run.hookIndex) at \(stage?.rawValue ?? "?") attempt \(run.attempt)"
    let output = result.output.map { ": \(Self.bounded($0))" } ?? ""
    switch result.outcome {
    case .succeeded:
      record("\(label) SUCCEEDED\(output)", now, &effects)
      hookRun = nil
      stageHookCursor += 1
      progress(now, &effects)
    case .failed(let why):
      record("\(label) FAILED: \(why)\(output)", now, &effects)
      rollback("\(label) FAILED: \(why)", now, &effects)
    case .inProgress:
      let at = now + hook.callBackDelay
      hookRun?.waiting = .callBack(at: at)
      record("\(label) IN_PROGRESS; calling again at \(at)\(output)", now, &effects)
      effects.append(.scheduleWakeUp(at: at))
    case .timedOut:
      hookTimedOut(run, hook, now, &effects)
    }
  }

  private mutating func hookTimedOut(
    _ run: HookRun, _ hook: LifecycleHookSpec, _ now: Instant, _ effects: inout [Effect]
  ) {
    let label = "hook \(run.hookIndex) at \(stage?.rawValue ?? "?") attempt \(run.attempt)"
    switch hook.timeoutAction {
    case .ROLLBACK:
      record("\(label) timed out after \(hook.action.timeout); timeoutAction ROLLBACK", now, &effects)
      rollback("\(label) timed out", now, &effects)
    case .CONTINUE:
      record("\(label) timed out after \(hook.action.timeout); timeoutAction CONTINUE", now, &effects)
      hookRun = nil
      stageHookCursor += 1
      progress(now, &effects)
    }
  }

  private mutating func onWakeUp(_ now: Instant, _ effects: inout [Effect]) {
    switch status {
    case .IN_PROGRESS:
      if let run = hookRun {
        switch run.waiting {
        case .response(let deadline) where now >= deadline && config.lifecycleHooks.indices.contains(run.hookIndex):
          hookTimedOut(run, config.lifecycleHooks[run.hookIndex], now, &effects)
        case .callBack(let at) where now >= at:
          invokeHook(run.hookIndex, attempt: run.attempt + 1, now, &effects)
        default:
          break
        }
      }
      guard status == .IN_PROGRESS else { return }
      if stage == .SCALE_UP, greenHealthy < desiredCount, let deadline = scaleUpDeadline, now >= deadline {
        tripCircuitBreaker(
          "green \(green) has \(greenHealthy)/\(desiredCount) healthy tasks after scaleUpTimeout "
            + "\(config.circuitBreaker.scaleUpTimeout)", now, &effects)
        return
      }
      progress(now, &effects)
    case .ROLLBACK_IN_PROGRESS:
      if let deadline = rollbackDeadline, now >= deadline, blueHealthy < desiredCount {
        status = .ROLLBACK_FAILED
        reason =
          "\(reason ?? "rollback"); blue \(blue) has \(blueHealthy)/\(desiredCount) healthy tasks "
          + "\(config.circuitBreaker.scaleUpTimeout) after rollback began"
        record("rollback failed: \(reason ?? "")", now, &effects)
      }
    default:
      break
    }
  }

  private mutating func onAlarm(_ alarm: String, _ why: String, _ now: Instant, _ effects: inout [Effect]) {
    guard status == .IN_PROGRESS, let stage,
      let spec = config.alarms.first(where: { $0.name == alarm }), spec.evaluateDuring.contains(stage)
    else {
      record("ignored alarm \(alarm): not evaluated now (\(why))", now, &effects)
      return
    }
    record("alarm \(alarm) fired: \(why)", now, &effects)
    rollback("alarm \(alarm) fired: \(why)", now, &effects)
  }

  private mutating func onStopRequest(
    rollback wantsRollback: Bool, reason why: String, _ now: Instant, _ effects: inout [Effect]
  ) {
    if let refusal = stopRefusal {
      effects.append(.requestRefused(reason: refusal))
      record("refused: \(why): \(refusal)", now, &effects)
      return
    }
    if status == .PENDING {
      status = .STOPPED
      reason = why
      record("stopped before it started: \(why)", now, &effects)
      return
    }
    if wantsRollback {
      status = .ROLLBACK_REQUESTED
      record("rollback requested: \(why)", now, &effects)
      rollback(why, now, &effects)
    } else {
      status = .STOP_REQUESTED
      record("stop requested: \(why)", now, &effects)
      clearTimers()
      status = .STOPPED
      reason = why
      record("stopped at \(stage?.rawValue ?? "?") with \(weights); task sets left as they are", now, &effects)
    }
  }

  // MARK: Lifecycle

  /// Enters `next` and performs its entry action.
  private mutating func enter(_ next: LifecycleStage, _ now: Instant, _ effects: inout [Effect]) {
    stage = next
    stageTimeline.append(StageEntry(stage: next, enteredAt: now))
    stageHookCursor = 0
    hookRun = nil
    record("entered \(next.rawValue)", now, &effects)
    switch next {
    case .SCALE_UP:
      effects.append(.scaleTaskSet(revision: green, count: desiredCount))
      if config.circuitBreaker.enable {
        let deadline = now + config.circuitBreaker.scaleUpTimeout
        scaleUpDeadline = deadline
        effects.append(.scheduleWakeUp(at: deadline))
      }
    case .TEST_TRAFFIC_SHIFT:
      weights.test = .allGreen
      effects.append(.setWeights(weights))
    case .PRODUCTION_TRAFFIC_SHIFT:
      productionStep = 0
      weights.production = config.productionWeightSteps.first ?? .allGreen
      effects.append(.setWeights(weights))
    case .BAKE_TIME:
      let deadline = now + config.bakeTime
      bakeDeadline = deadline
      effects.append(.scheduleWakeUp(at: deadline))
    case .CLEAN_UP:
      effects.append(.stopTaskSet(revision: blue))
      status = .SUCCESSFUL
      record("deployment successful: \(green) serves all traffic; blue \(blue) stopped", now, &effects)
    default:
      break
    }
  }

  /// Does everything possible at `now` until the deployment waits for an event or a deadline.
  private mutating func progress(_ now: Instant, _ effects: inout [Effect]) {
    while status == .IN_PROGRESS, let current = stage {
      if current == .SCALE_UP && greenHealthy < desiredCount { return }
      let hooks = hookIndices(at: current)
      if stageHookCursor < hooks.count {
        if hookRun == nil { invokeHook(hooks[stageHookCursor], attempt: 1, now, &effects) }
        return
      }
      if current == .PRODUCTION_TRAFFIC_SHIFT {
        let steps = config.productionWeightSteps
        if productionStep < steps.count - 1 {
          guard let deadline = stepDeadline else {
            let deadline = now + config.productionStepWait
            stepDeadline = deadline
            effects.append(.scheduleWakeUp(at: deadline))
            continue
          }
          guard now >= deadline else { return }
          productionStep += 1
          stepDeadline = nil
          weights.production = steps[productionStep]
          record("production traffic step \(productionStep + 1)/\(steps.count): \(weights.production)", now, &effects)
          effects.append(.setWeights(weights))
          continue
        }
      }
      if current == .BAKE_TIME, let deadline = bakeDeadline, now < deadline { return }
      guard let next = current.next else { return }
      enter(next, now, &effects)
    }
  }

  private mutating func invokeHook(_ hookIndex: Int, attempt: Int, _ now: Instant, _ effects: inout [Effect]) {
    guard let stage, config.lifecycleHooks.indices.contains(hookIndex) else { return }
    let hook = config.lifecycleHooks[hookIndex]
    let executionId = executionId(for: stage)
    let deadline = now + hook.action.timeout + Self.hookResponseGrace
    hookRun = HookRun(
      hookIndex: hookIndex, executionId: executionId, attempt: attempt, waiting: .response(deadline: deadline))
    let context = HookContext(
      executionId: executionId, lifecycleStage: stage, deploymentId: deploymentId, service: service,
      targetRevision: green.description, sourceRevision: blue.description,
      testTrafficWeights: WeightPercents(weights.test), productionTrafficWeights: WeightPercents(weights.production),
      attempt: attempt)
    record("invoking hook \(hookIndex) at \(stage.rawValue) attempt \(attempt) (\(executionId))", now, &effects)
    effects.append(.invokeHook(HookInvocation(hookIndex: hookIndex, hook: hook, context: context)))
    effects.append(.scheduleWakeUp(at: deadline))
  }

  private mutating func tripCircuitBreaker(_ why: String, _ now: Instant, _ effects: inout [Effect]) {
    record("circuit breaker tripped: \(why)", now, &effects)
    if config.circuitBreaker.rollback {
      rollback("circuit breaker: \(why)", now, &effects)
    } else {
      clearTimers()
      status = .STOPPED
      reason = "circuit breaker: \(why)"
      record("stopped by the circuit breaker (rollback disabled)", now, &effects)
    }
  }

  /// Both listeners back to blue in one effect, green stopped; successful once blue is all healthy.
  private mutating func rollback(_ why: String, _ now: Instant, _ effects: inout [Effect]) {
    clearTimers()
    status = .ROLLBACK_IN_PROGRESS
    reason = why
    weights = .allBlue
    record("rolling back: \(why)", now, &effects)
    effects.append(.setWeights(.allBlue))
    effects.append(.stopTaskSet(revision: green))
    if blueHealthy >= desiredCount {
      finishRollback(now, &effects)
    } else {
      let deadline = now + config.circuitBreaker.scaleUpTimeout
      rollbackDeadline = deadline
      effects.append(.scaleTaskSet(revision: blue, count: desiredCount))
      effects.append(.scheduleWakeUp(at: deadline))
    }
  }

  private mutating func finishRollback(_ now: Instant, _ effects: inout [Effect]) {
    status = .ROLLBACK_SUCCESSFUL
    rollbackDeadline = nil
    record("rollback successful: blue \(blue) serves all traffic", now, &effects)
  }

  private mutating func clearTimers() {
    hookRun = nil
    stepDeadline = nil
    scaleUpDeadline = nil
  }

  /// Hook output as kept in history: at most `outputLimit` characters.
  static func bounded(_ text: String) -> String {
    text.count <= outputLimit ? text : String(text.prefix(outputLimit)) + "...(truncated)"
  }

  private mutating func record(_ message: String, _ now: Instant, _ effects: inout [Effect]) {
    let event = DeploymentEvent(at: now, deploymentId: deploymentId, stage: stage, status: status, message: message)
    history.append(event)
    if history.count > Self.historyLimit { history.removeFirst(history.count - Self.historyLimit) }
    effects.append(.recordEvent(event))
  }
}
