// The service spec: what a user writes in YAML or JSON. Parsing and validation live in
// SpecParser.swift; these are the validated values.

/// A validated service spec. Every value here passed the rules in `SpecParser`.
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
  public var deployment: DeploymentConfig

  public init(
    name: String, desiredCount: Int, productionPort: Int, testPort: Int, task: TaskSpec,
    deployment: DeploymentConfig
  ) {
    self.name = name
    self.desiredCount = desiredCount
    self.productionPort = productionPort
    self.testPort = testPort
    self.task = task
    self.deployment = deployment
  }
}

/// What one task runs: a local process and how the load balancer checks its health.
public struct TaskSpec: Codable, Hashable, Sendable {
  public var command: String
  public var args: [String]
  public var env: [String: String]
  /// The port the task listens on (the load balancer's target port).
  public var port: Int
  public var healthCheck: HealthCheckSpec

  public init(command: String, args: [String], env: [String: String], port: Int, healthCheck: HealthCheckSpec) {
    self.command = command
    self.args = args
    self.env = env
    self.port = port
    self.healthCheck = healthCheck
  }
}

/// An HTTP health check of a task. Invariant: `timeout <= interval`.
public struct HealthCheckSpec: Codable, Hashable, Sendable {
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
}

/// The `deployment` section of a spec.
///
/// Invariant: `canary` is set exactly when `strategy == .CANARY`, `linear` exactly when `.LINEAR`.
public struct DeploymentConfig: Codable, Hashable, Sendable {
  public var strategy: DeploymentStrategy
  /// How long blue keeps running after production traffic is on green.
  public var bakeTime: TimeSpan
  public var canary: CanaryConfig?
  public var linear: LinearConfig?
  public var lifecycleHooks: [LifecycleHookSpec]
  public var alarms: [AlarmSpec]
  public var circuitBreaker: CircuitBreakerSpec

  public init(
    strategy: DeploymentStrategy, bakeTime: TimeSpan, canary: CanaryConfig? = nil, linear: LinearConfig? = nil,
    lifecycleHooks: [LifecycleHookSpec] = [], alarms: [AlarmSpec] = [],
    circuitBreaker: CircuitBreakerSpec = .default
  ) {
    self.strategy = strategy
    self.bakeTime = bakeTime
    self.canary = canary
    self.linear = linear
    self.lifecycleHooks = lifecycleHooks
    self.alarms = alarms
    self.circuitBreaker = circuitBreaker
  }
}

/// CANARY settings. `canaryPercent` is in 0.1...100 with at most two decimals.
public struct CanaryConfig: Codable, Hashable, Sendable {
  public var canaryPercent: Double
  public var canaryBakeTime: TimeSpan

  public init(canaryPercent: Double, canaryBakeTime: TimeSpan) {
    self.canaryPercent = canaryPercent
    self.canaryBakeTime = canaryBakeTime
  }
}

/// LINEAR settings. `stepPercent` is in 0.1...100 with at most two decimals.
public struct LinearConfig: Codable, Hashable, Sendable {
  public var stepPercent: Double
  public var stepBakeTime: TimeSpan

  public init(stepPercent: Double, stepBakeTime: TimeSpan) {
    self.stepPercent = stepPercent
    self.stepBakeTime = stepBakeTime
  }
}

/// What a hook calls.
public enum HookAction: Codable, Hashable, Sendable {
  /// An HTTP POST of the hook context as JSON to `url` (plain `http://`).
  case http(url: String, timeout: TimeSpan)
  /// A local command; the hook context is written to its stdin as JSON.
  case command(argv: [String], timeout: TimeSpan)

  /// How long one invocation may take before it counts as timed out.
  public var timeout: TimeSpan {
    switch self {
    case .http(_, let timeout), .command(_, let timeout): return timeout
    }
  }
}

/// What a timed-out hook does to the deployment.
public enum HookTimeoutAction: String, Codable, Hashable, Sendable {
  case ROLLBACK
  case CONTINUE
}

/// One lifecycle hook: called at each of `stages` (all hookable), again after `callBackDelay`
/// while it answers IN_PROGRESS.
public struct LifecycleHookSpec: Codable, Hashable, Sendable {
  public var stages: [LifecycleStage]
  public var action: HookAction
  public var callBackDelay: TimeSpan
  public var timeoutAction: HookTimeoutAction

  public init(
    stages: [LifecycleStage], action: HookAction, callBackDelay: TimeSpan = .seconds(30),
    timeoutAction: HookTimeoutAction = .ROLLBACK
  ) {
    self.stages = stages
    self.action = action
    self.callBackDelay = callBackDelay
    self.timeoutAction = timeoutAction
  }
}

/// A load balancer metric an alarm watches (on green's target group).
public enum AlarmMetric: String, Codable, Hashable, Sendable {
  /// Fraction of responses with a 5xx status, 0...1.
  case http5xxRate
  /// 99th percentile response latency, in milliseconds.
  case latencyP99
}

/// An alarm: fires when `metric` over the last `window` exceeds `threshold` during one of
/// `evaluateDuring`'s stages; a firing alarm rolls the deployment back.
public struct AlarmSpec: Codable, Hashable, Sendable {
  public var name: String
  public var metric: AlarmMetric
  public var threshold: Double
  public var window: TimeSpan
  public var evaluateDuring: [LifecycleStage]

  public init(
    name: String, metric: AlarmMetric, threshold: Double, window: TimeSpan,
    evaluateDuring: [LifecycleStage] = AlarmSpec.defaultStages
  ) {
    self.name = name
    self.metric = metric
    self.threshold = threshold
    self.window = window
    self.evaluateDuring = evaluateDuring
  }

  /// Stages an alarm watches when the spec does not say: from production shift to the end of bake.
  public static let defaultStages: [LifecycleStage] = [
    .PRODUCTION_TRAFFIC_SHIFT, .POST_PRODUCTION_TRAFFIC_SHIFT, .BAKE_TIME,
  ]
}

/// The deployment circuit breaker: green tasks that fail `failureThreshold` times, or are not all
/// healthy within `scaleUpTimeout` of SCALE_UP, trip it. With `rollback` it rolls back; without, it
/// stops the deployment where it is.
public struct CircuitBreakerSpec: Codable, Hashable, Sendable {
  public var enable: Bool
  public var rollback: Bool
  public var failureThreshold: Int
  public var scaleUpTimeout: TimeSpan

  public init(enable: Bool, rollback: Bool, failureThreshold: Int, scaleUpTimeout: TimeSpan) {
    self.enable = enable
    self.rollback = rollback
    self.failureThreshold = failureThreshold
    self.scaleUpTimeout = scaleUpTimeout
  }

  public static let `default` = CircuitBreakerSpec(
    enable: true, rollback: true, failureThreshold: 3, scaleUpTimeout: .minutes(10))
}
