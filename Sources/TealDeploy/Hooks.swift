// The hook protocol: what the leader sends to a hook (`HookContext`, ECS-shaped) and what it feeds
// back as an input (`HookResult`). Hook executions are the only external effects of a deployment;
// `Deployment.pendingHookCall` derives the one due from the state alone.

/// The JSON body a hook receives (HTTP body or command stdin), shaped like the payload of an ECS
/// lifecycle hook so that an ECS hook handler can be reused: `executionId`, `lifecycleStage`,
/// `resourceArn` and `executionDetails` with the weights keyed by revision.
///
/// Invariant: every attempt of one hook execution carries the same `executionId`, from every
/// leader; `attempt` counts from 1 (a new leader may repeat the attempt number of a call whose
/// answer it never saw).
public struct HookContext: Codable, Hashable, Sendable {
  public var executionId: String
  public var lifecycleStage: LifecycleStage
  /// `teal:service/<service>/deployment/<deploymentId>`.
  public var resourceArn: String
  public var executionDetails: ExecutionDetails
  /// The hook's `hookDetails` from the spec, passed on every call.
  public var hookDetails: JSONValue?
  public var deploymentId: String
  public var service: String
  /// The green revision, e.g. `web:2`.
  public var targetRevision: String
  /// The blue revision, e.g. `web:1`.
  public var sourceRevision: String
  /// Production step (0 for the first) the call belongs to.
  public var productionStep: Int
  public var direction: HookDirection
  public var attempt: Int

  public init(
    executionId: String, lifecycleStage: LifecycleStage, resourceArn: String, executionDetails: ExecutionDetails,
    hookDetails: JSONValue?, deploymentId: String, service: String, targetRevision: String, sourceRevision: String,
    productionStep: Int, direction: HookDirection, attempt: Int
  ) {
    self.executionId = executionId
    self.lifecycleStage = lifecycleStage
    self.resourceArn = resourceArn
    self.executionDetails = executionDetails
    self.hookDetails = hookDetails
    self.deploymentId = deploymentId
    self.service = service
    self.targetRevision = targetRevision
    self.sourceRevision = sourceRevision
    self.productionStep = productionStep
    self.direction = direction
    self.attempt = attempt
  }

  /// ECS's `executionDetails`: both listeners' weights, in percent, keyed by revision id.
  public struct ExecutionDetails: Codable, Hashable, Sendable {
    public var testTrafficWeights: [String: Double]
    public var productionTrafficWeights: [String: Double]
    /// `teal:service/<service>`.
    public var serviceArn: String
    /// `teal:revision/<service>:<number>` of green.
    public var targetServiceRevisionArn: String

    public init(
      testTrafficWeights: [String: Double], productionTrafficWeights: [String: Double], serviceArn: String,
      targetServiceRevisionArn: String
    ) {
      self.testTrafficWeights = testTrafficWeights
      self.productionTrafficWeights = productionTrafficWeights
      self.serviceArn = serviceArn
      self.targetServiceRevisionArn = targetServiceRevisionArn
    }
  }
}

/// Whether a hook runs on the way forward or during a rollback (part of the executionId).
public enum HookDirection: String, Codable, Hashable, Sendable {
  case FORWARD
  case ROLLBACK
}

/// One hook call the leader must make now (or at `notBefore`), then answer with
/// `DeploymentCommand.hookAnswered`.
public struct HookInvocation: Codable, Hashable, Sendable {
  /// Index of the hook in `DeploymentConfiguration.lifecycleHooks`.
  public var hookIndex: Int
  public var hook: LifecycleHookConfiguration
  public var context: HookContext
  /// Not before this log time (a callBackDelay or a retry backoff).
  public var notBefore: Instant

  public init(hookIndex: Int, hook: LifecycleHookConfiguration, context: HookContext, notBefore: Instant) {
    self.hookIndex = hookIndex
    self.hook = hook
    self.context = context
    self.notBefore = notBefore
  }
}

/// What a hook answered, or why it gave no answer.
public enum HookOutcome: Codable, Hashable, Sendable {
  case succeeded
  case failed(reason: String)
  /// Call again after the answer's `callBackDelay` (or the hook's default).
  case inProgress
  /// No complete answer within the per-call timeout: called again, within the overall timeout.
  case timedOut
  /// The hook could not be reached (connection refused, program missing): retried with backoff
  /// within the overall timeout, not taken as FAILED at once.
  case unreachable(reason: String)
}

/// The answer to one `HookInvocation`; `output` (truncated stdout/stderr or body) goes into history.
public struct HookResult: Codable, Hashable, Sendable {
  public var executionId: String
  public var attempt: Int
  public var outcome: HookOutcome
  public var output: String?
  /// ECS's `callBackDelay` returned by the hook with IN_PROGRESS (clamped to 1s...1h).
  public var callBackDelay: TimeSpan?

  public init(
    executionId: String, attempt: Int, outcome: HookOutcome, output: String? = nil, callBackDelay: TimeSpan? = nil
  ) {
    self.executionId = executionId
    self.attempt = attempt
    self.outcome = outcome
    self.output = output
    self.callBackDelay = callBackDelay
  }

  /// The result answering `invocation`.
  public init(
    answering invocation: HookInvocation, outcome: HookOutcome, output: String? = nil, callBackDelay: TimeSpan? = nil
  ) {
    self.init(
      executionId: invocation.context.executionId, attempt: invocation.context.attempt, outcome: outcome,
      output: output, callBackDelay: callBackDelay)
  }
}

/// A JSON value (for `hookDetails`), with object members in a fixed order so that its encoding is
/// canonical.
public indirect enum JSONValue: Codable, Hashable, Sendable {
  case null
  case bool(Bool)
  case number(Double)
  case string(String)
  case array([JSONValue])
  /// Members sorted by key, keys distinct.
  case object([Member])

  public struct Member: Codable, Hashable, Sendable {
    public var key: String
    public var value: JSONValue

    public init(key: String, value: JSONValue) {
      self.key = key
      self.value = value
    }
  }

  /// An object from members in any order (sorted here; a later duplicate key wins).
  public static func object(sorting members: [(String, JSONValue)]) -> JSONValue {
    var byKey: [String: JSONValue] = [:]
    for (key, value) in members { byKey[key] = value }
    return .object(byKey.keys.sorted().map { Member(key: $0, value: byKey[$0] ?? .null) })
  }

  private struct Key: CodingKey {
    var stringValue: String
    var intValue: Int? { nil }
    init(stringValue: String) { self.stringValue = stringValue }
    init?(intValue: Int) { nil }
  }

  public init(from decoder: any Decoder) throws {
    if let object = try? decoder.container(keyedBy: Key.self) {
      self = .object(
        sorting: try object.allKeys.map { ($0.stringValue, try object.decode(JSONValue.self, forKey: $0)) })
      return
    }
    if var array = try? decoder.unkeyedContainer() {
      var items: [JSONValue] = []
      while !array.isAtEnd { items.append(try array.decode(JSONValue.self)) }
      self = .array(items)
      return
    }
    let single = try decoder.singleValueContainer()
    if single.decodeNil() {
      self = .null
    } else if let value = try? single.decode(Bool.self) {
      self = .bool(value)
    } else if let value = try? single.decode(Double.self) {
      self = .number(value)
    } else {
      self = .string(try single.decode(String.self))
    }
  }

  public func encode(to encoder: any Encoder) throws {
    switch self {
    case .null:
      var single = encoder.singleValueContainer()
      try single.encodeNil()
    case .bool(let value):
      var single = encoder.singleValueContainer()
      try single.encode(value)
    case .number(let value):
      var single = encoder.singleValueContainer()
      try single.encode(value)
    case .string(let value):
      var single = encoder.singleValueContainer()
      try single.encode(value)
    case .array(let items):
      var array = encoder.unkeyedContainer()
      for item in items { try array.encode(item) }
    case .object(let members):
      var object = encoder.container(keyedBy: Key.self)
      for member in members { try object.encode(member.value, forKey: Key(stringValue: member.key)) }
    }
  }
}
