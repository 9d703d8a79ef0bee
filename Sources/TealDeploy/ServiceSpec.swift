// The service spec: what a user writes in YAML or JSON. Parsing and validation live in the TealSpec
// module (`SpecParser`); these are the validated values, pure and Codable, as the replicated state
// keeps them.

/// A validated service spec. Every value here passed the rules of TealSpec's `SpecParser`.
public struct ServiceSpec: Codable, Hashable, Sendable {
  /// Service name: lowercase letters, digits and `-`, starting with a letter, at most 63 characters.
  public var name: String
  /// Number of tasks of the serving revision (1...1000).
  public var desiredCount: Int
  /// Port every node's production listener accepts traffic on.
  public var productionPort: Int
  /// Port every node's test listener accepts traffic on; differs from `productionPort`.
  public var testPort: Int
  public var task: TaskSpec
  public var deployment: DeploymentConfiguration

  public init(
    name: String, desiredCount: Int, productionPort: Int, testPort: Int, task: TaskSpec,
    deployment: DeploymentConfiguration
  ) {
    self.name = name
    self.desiredCount = desiredCount
    self.productionPort = productionPort
    self.testPort = testPort
    self.task = task
    self.deployment = deployment
  }

  /// Whether `name` is a valid service name: 1 to 63 of `a-z 0-9 -`, starting with a letter.
  public static func isValidName(_ name: String) -> Bool {
    guard let first = name.unicodeScalars.first, name.unicodeScalars.count <= 63, ("a"..."z").contains(first) else {
      return false
    }
    return name.unicodeScalars.allSatisfy { ("a"..."z").contains($0) || ("0"..."9").contains($0) || $0 == "-" }
  }
}

/// What one task runs: a local process and how the load balancer checks its health.
public struct TaskSpec: Codable, Hashable, Sendable {
  public var command: String
  public var args: [String]
  public var env: [String: String]
  /// The port the task listens on (the load balancer's target port). 0 (the default): the node
  /// gives each task a free port through `PORT`, so several tasks can share a node; a fixed port
  /// allows one task of the revision per node.
  public var port: Int
  public var healthCheck: HealthCheckConfiguration

  public init(command: String, args: [String], env: [String: String], port: Int, healthCheck: HealthCheckConfiguration)
  {
    self.command = command
    self.args = args
    self.env = env
    self.port = port
    self.healthCheck = healthCheck
  }
}

/// An HTTP health check of a task. Invariant: `timeout <= interval`.
public struct HealthCheckConfiguration: Codable, Hashable, Sendable {
  public var path: String
  public var interval: TimeSpan
  public var timeout: TimeSpan
  public var healthyThreshold: Int
  public var unhealthyThreshold: Int

  public init(path: String, interval: TimeSpan, timeout: TimeSpan, healthyThreshold: Int, unhealthyThreshold: Int) {
    self.path = path
    self.interval = interval
    self.timeout = timeout
    self.healthyThreshold = healthyThreshold
    self.unhealthyThreshold = unhealthyThreshold
  }
}

/// How production traffic moves from blue to green.
public enum DeploymentStrategy: String, Codable, Hashable, Sendable, CaseIterable {
  /// All production traffic at once.
  case BLUE_GREEN
  /// `canaryPercent`, then `canaryBakeTime`, then the rest.
  case CANARY
  /// `stepPercent` more every `stepBakeTime` until 100 %.
  case LINEAR
  /// A list of production weights (`steps`), each held for `stepBakeTime` (Argo Rollouts' steps).
  case STEPS
}

/// The `deployment` section of a spec.
///
/// Invariant: `canary` is set exactly when `strategy == .CANARY`, `linear` exactly when `.LINEAR`,
/// `steps` exactly when `.STEPS`.
public struct DeploymentConfiguration: Codable, Hashable, Sendable {
  public var strategy: DeploymentStrategy
  /// How long blue keeps running after production traffic is on green.
  public var bakeTime: TimeSpan
  public var canary: CanaryConfiguration?
  public var linear: LinearConfiguration?
  public var steps: StepsConfiguration?
  public var lifecycleHooks: [LifecycleHookConfiguration]
  public var alarms: [AlarmConfiguration]
  public var circuitBreaker: CircuitBreakerConfiguration
  /// Rollback: how long green keeps running, drained, before it is stopped (Argo's
  /// `abortScaleDownDelay`), so that a rollback of a rollback stays cheap and logs can be read.
  public var abortScaleDownDelay: TimeSpan
  /// The deployment rolls back when it has not finished this long after it was submitted.
  public var progressDeadline: TimeSpan?

  public init(
    strategy: DeploymentStrategy, bakeTime: TimeSpan, canary: CanaryConfiguration? = nil,
    linear: LinearConfiguration? = nil, steps: StepsConfiguration? = nil,
    lifecycleHooks: [LifecycleHookConfiguration] = [], alarms: [AlarmConfiguration] = [],
    circuitBreaker: CircuitBreakerConfiguration = .default, abortScaleDownDelay: TimeSpan = .seconds(30),
    progressDeadline: TimeSpan? = nil
  ) {
    self.strategy = strategy
    self.bakeTime = bakeTime
    self.canary = canary
    self.linear = linear
    self.steps = steps
    self.lifecycleHooks = lifecycleHooks
    self.alarms = alarms
    self.circuitBreaker = circuitBreaker
    self.abortScaleDownDelay = abortScaleDownDelay
    self.progressDeadline = progressDeadline
  }

  /// How long a rollback may wait for blue to be healthy (the circuit breaker's scaleUpTimeout).
  public var rollbackTimeout: TimeSpan { circuitBreaker.scaleUpTimeout }

  private enum CodingKeys: String, CodingKey {
    case strategy, bakeTime, canary, linear, steps, lifecycleHooks, alarms, circuitBreaker, abortScaleDownDelay,
      progressDeadline
  }

  /// Fields added after the first version decode with their defaults when absent.
  public init(from decoder: any Decoder) throws {
    let container = try decoder.container(keyedBy: CodingKeys.self)
    strategy = try container.decode(DeploymentStrategy.self, forKey: .strategy)
    bakeTime = try container.decode(TimeSpan.self, forKey: .bakeTime)
    canary = try container.decodeIfPresent(CanaryConfiguration.self, forKey: .canary)
    linear = try container.decodeIfPresent(LinearConfiguration.self, forKey: .linear)
    steps = try container.decodeIfPresent(StepsConfiguration.self, forKey: .steps)
    lifecycleHooks = try container.decode([LifecycleHookConfiguration].self, forKey: .lifecycleHooks)
    alarms = try container.decode([AlarmConfiguration].self, forKey: .alarms)
    circuitBreaker = try container.decode(CircuitBreakerConfiguration.self, forKey: .circuitBreaker)
    abortScaleDownDelay =
      try container.decodeIfPresent(TimeSpan.self, forKey: .abortScaleDownDelay) ?? .seconds(30)
    progressDeadline = try container.decodeIfPresent(TimeSpan.self, forKey: .progressDeadline)
  }
}

/// CANARY settings. `canaryPercent` is in 0.1...100 in steps of 0.1 (ECS's range).
public struct CanaryConfiguration: Codable, Hashable, Sendable {
  public var canaryPercent: Double
  public var canaryBakeTime: TimeSpan

  public init(canaryPercent: Double, canaryBakeTime: TimeSpan) {
    self.canaryPercent = canaryPercent
    self.canaryBakeTime = canaryBakeTime
  }
}

/// LINEAR settings. `stepPercent` is in 3...100 in steps of 0.1 (ECS's range).
public struct LinearConfiguration: Codable, Hashable, Sendable {
  public var stepPercent: Double
  public var stepBakeTime: TimeSpan

  public init(stepPercent: Double, stepBakeTime: TimeSpan) {
    self.stepPercent = stepPercent
    self.stepBakeTime = stepBakeTime
  }
}

/// STEPS settings: green's production share at each step, strictly increasing, ending at 100, each
/// in 0.1...100 in steps of 0.1; every step but the last is held for `stepBakeTime`.
public struct StepsConfiguration: Codable, Hashable, Sendable {
  public var percents: [Double]
  public var stepBakeTime: TimeSpan

  public init(percents: [Double], stepBakeTime: TimeSpan) {
    self.percents = percents
    self.stepBakeTime = stepBakeTime
  }
}

/// What a hook calls.
public enum HookAction: Codable, Hashable, Sendable {
  /// An HTTP POST of the hook context as JSON to `url` (plain `http://`).
  case http(url: String, timeout: TimeSpan)
  /// A local command; the hook context is written to its stdin as JSON.
  case command(argv: [String], timeout: TimeSpan)
  /// Nothing is called: the deployment waits at the stage for an operator's `continue` (go on) or
  /// `rollback`, until the hook's overall timeout and its `timeoutAction`.
  case pause

  /// How long one call may take before it counts as unanswered (zero for PAUSE).
  public var timeout: TimeSpan {
    switch self {
    case .http(_, let timeout), .command(_, let timeout): return timeout
    case .pause: return .zero
    }
  }
}

/// What a timed-out hook does to the deployment.
public enum HookTimeoutAction: String, Codable, Hashable, Sendable, CaseIterable {
  case ROLLBACK
  case CONTINUE
}

/// One lifecycle hook: called at each of `stages` (all hookable), again after `callBackDelay`
/// while it answers IN_PROGRESS, until it answers or its overall timeout passes.
public struct LifecycleHookConfiguration: Codable, Hashable, Sendable {
  public var stages: [LifecycleStage]
  public var action: HookAction
  public var callBackDelay: TimeSpan
  public var timeoutAction: HookTimeoutAction
  /// ECS's `timeoutInMinutes` (1...1440, default 1440): the longest one hook execution may take,
  /// over all its attempts; an absolute deadline in the state, so failovers do not extend it.
  public var overallTimeout: TimeSpan
  /// Call the PRODUCTION_TRAFFIC_SHIFT hooks at every production step, not only the first.
  public var everyStep: Bool
  /// ECS's `hookDetails`: passed on every call.
  public var hookDetails: JSONValue?

  public init(
    stages: [LifecycleStage], action: HookAction, callBackDelay: TimeSpan = .seconds(30),
    timeoutAction: HookTimeoutAction = .ROLLBACK, overallTimeout: TimeSpan = .hours(24), everyStep: Bool = false,
    hookDetails: JSONValue? = nil
  ) {
    self.stages = stages
    self.action = action
    self.callBackDelay = callBackDelay
    self.timeoutAction = timeoutAction
    self.overallTimeout = overallTimeout
    self.everyStep = everyStep
    self.hookDetails = hookDetails
  }

  private enum CodingKeys: String, CodingKey {
    case stages, action, callBackDelay, timeoutAction, overallTimeout, everyStep, hookDetails
  }

  /// Fields added after the first version decode with their defaults when absent.
  public init(from decoder: any Decoder) throws {
    let container = try decoder.container(keyedBy: CodingKeys.self)
    stages = try container.decode([LifecycleStage].self, forKey: .stages)
    action = try container.decode(HookAction.self, forKey: .action)
    callBackDelay = try container.decode(TimeSpan.self, forKey: .callBackDelay)
    timeoutAction = try container.decode(HookTimeoutAction.self, forKey: .timeoutAction)
    overallTimeout = try container.decodeIfPresent(TimeSpan.self, forKey: .overallTimeout) ?? .hours(24)
    everyStep = try container.decodeIfPresent(Bool.self, forKey: .everyStep) ?? false
    hookDetails = try container.decodeIfPresent(JSONValue.self, forKey: .hookDetails)
  }
}

/// A load balancer metric an alarm watches (on green's target group).
public enum AlarmMetric: String, Codable, Hashable, Sendable, CaseIterable {
  /// Fraction of responses with a 5xx status, 0...1.
  case http5xxRate
  /// 99th percentile response latency, in milliseconds.
  case latencyP99
}

/// An alarm over green's metrics during `evaluateDuring`'s stages.
///
/// The `window` is split into `evaluationPeriods` equal periods; each period with at least
/// `minimumRequests` requests is a datapoint, breaching when its value is strictly above
/// `threshold`. The alarm fires when `datapointsToAlarm` of the datapoints breach (N of M, as in
/// CloudWatch), and rolls back when `rollback` (otherwise it is only recorded).
public struct AlarmConfiguration: Codable, Hashable, Sendable {
  public var name: String
  public var metric: AlarmMetric
  public var threshold: Double
  public var window: TimeSpan
  public var evaluateDuring: [LifecycleStage]
  public var minimumRequests: Int
  public var evaluationPeriods: Int
  public var datapointsToAlarm: Int
  public var rollback: Bool

  public init(
    name: String, metric: AlarmMetric, threshold: Double, window: TimeSpan,
    evaluateDuring: [LifecycleStage] = AlarmConfiguration.defaultStages, minimumRequests: Int = 1,
    evaluationPeriods: Int = 1, datapointsToAlarm: Int = 1, rollback: Bool = true
  ) {
    self.name = name
    self.metric = metric
    self.threshold = threshold
    self.window = window
    self.evaluateDuring = evaluateDuring
    self.minimumRequests = minimumRequests
    self.evaluationPeriods = evaluationPeriods
    self.datapointsToAlarm = datapointsToAlarm
    self.rollback = rollback
  }

  /// Stages an alarm watches when the spec does not say: from production shift to the end of bake.
  public static let defaultStages: [LifecycleStage] = [
    .PRODUCTION_TRAFFIC_SHIFT, .POST_PRODUCTION_TRAFFIC_SHIFT, .BAKE_TIME,
  ]

  private enum CodingKeys: String, CodingKey {
    case name, metric, threshold, window, evaluateDuring, minimumRequests, evaluationPeriods, datapointsToAlarm,
      rollback
  }

  /// Fields added after the first version decode with their defaults when absent.
  public init(from decoder: any Decoder) throws {
    let container = try decoder.container(keyedBy: CodingKeys.self)
    name = try container.decode(String.self, forKey: .name)
    metric = try container.decode(AlarmMetric.self, forKey: .metric)
    threshold = try container.decode(Double.self, forKey: .threshold)
    window = try container.decode(TimeSpan.self, forKey: .window)
    evaluateDuring = try container.decode([LifecycleStage].self, forKey: .evaluateDuring)
    minimumRequests = try container.decodeIfPresent(Int.self, forKey: .minimumRequests) ?? 1
    evaluationPeriods = try container.decodeIfPresent(Int.self, forKey: .evaluationPeriods) ?? 1
    datapointsToAlarm = try container.decodeIfPresent(Int.self, forKey: .datapointsToAlarm) ?? 1
    rollback = try container.decodeIfPresent(Bool.self, forKey: .rollback) ?? true
  }
}

/// The deployment circuit breaker: green tasks that fail `failureThreshold` times, or are not all
/// healthy within `scaleUpTimeout` of SCALE_UP, trip it; after SCALE_UP, so does green going
/// unhealthy below its health floor, or staying below the floor for `healthFloorGrace` because
/// tasks are missing (their node died, restarted or drains, and replacements are starting). With
/// `rollback` it rolls back; without, it stops the deployment where it is.
public struct CircuitBreakerConfiguration: Codable, Hashable, Sendable {
  public var enable: Bool
  public var rollback: Bool
  public var failureThreshold: Int
  public var scaleUpTimeout: TimeSpan
  /// How long green may stay below its health floor for want of tasks (not because they went
  /// unhealthy) before the breaker trips; forward progress holds meanwhile. 0 trips at once.
  public var healthFloorGrace: TimeSpan

  /// The default `healthFloorGrace`: long enough for the cluster to notice a dead node (seconds) and
  /// for replacements to pass their health checks, or for a whole cluster to restart.
  public static let defaultHealthFloorGrace = TimeSpan.seconds(60)

  /// The allowed `healthFloorGrace`.
  public static let healthFloorGraceRange = TimeSpan.seconds(0)...TimeSpan.hours(1)

  public init(
    enable: Bool, rollback: Bool, failureThreshold: Int, scaleUpTimeout: TimeSpan,
    healthFloorGrace: TimeSpan = Self.defaultHealthFloorGrace
  ) {
    self.enable = enable
    self.rollback = rollback
    self.failureThreshold = failureThreshold
    self.scaleUpTimeout = scaleUpTimeout
    self.healthFloorGrace = healthFloorGrace
  }

  public static let `default` = CircuitBreakerConfiguration(
    enable: true, rollback: true, failureThreshold: 3, scaleUpTimeout: .minutes(10))

  /// The defaults for a service of `desiredCount` tasks: the failure threshold derived from the
  /// desired count as ECS does (half of it, rounded up, at least 3 and at most 200).
  public static func `default`(desiredCount: Int) -> CircuitBreakerConfiguration {
    CircuitBreakerConfiguration(
      enable: true, rollback: true, failureThreshold: min(200, max(3, (desiredCount + 1) / 2)),
      scaleUpTimeout: .minutes(10))
  }

  private enum CodingKeys: String, CodingKey {
    case enable, rollback, failureThreshold, scaleUpTimeout, healthFloorGrace
  }

  /// `healthFloorGrace` came later: absent, it is the default; at the default it is not encoded, so
  /// revisions and states written before it encode as they did.
  public init(from decoder: any Decoder) throws {
    let container = try decoder.container(keyedBy: CodingKeys.self)
    enable = try container.decode(Bool.self, forKey: .enable)
    rollback = try container.decode(Bool.self, forKey: .rollback)
    failureThreshold = try container.decode(Int.self, forKey: .failureThreshold)
    scaleUpTimeout = try container.decode(TimeSpan.self, forKey: .scaleUpTimeout)
    healthFloorGrace =
      try container.decodeIfPresent(TimeSpan.self, forKey: .healthFloorGrace) ?? Self.defaultHealthFloorGrace
  }

  public func encode(to encoder: any Encoder) throws {
    var container = encoder.container(keyedBy: CodingKeys.self)
    try container.encode(enable, forKey: .enable)
    try container.encode(rollback, forKey: .rollback)
    try container.encode(failureThreshold, forKey: .failureThreshold)
    try container.encode(scaleUpTimeout, forKey: .scaleUpTimeout)
    if healthFloorGrace != Self.defaultHealthFloorGrace {
      try container.encode(healthFloorGrace, forKey: .healthFloorGrace)
    }
  }
}
