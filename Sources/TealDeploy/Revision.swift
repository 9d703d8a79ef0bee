// Revisions: immutable, numbered per service (`web:1`, `web:2`), addressed by a SHA-256 digest of a
// canonical encoding of their spec.

/// A revision's name: service and number, written `web:3`.
public struct RevisionID: Codable, Hashable, Sendable, Comparable, CustomStringConvertible {
  public var service: String
  /// 1 for the first revision of a service, then 2, 3, ...
  public var number: Int

  public init(service: String, number: Int) {
    self.service = service
    self.number = number
  }

  /// Parses `service:number`; nil when the text is not of that form.
  public init?(parsing text: String) {
    guard let colon = text.lastIndex(of: ":"), let number = Int(text[text.index(after: colon)...]), number > 0 else {
      return nil
    }
    let service = String(text[..<colon])
    guard ServiceSpec.isValidName(service) else { return nil }
    self.init(service: service, number: number)
  }

  public var description: String { "\(service):\(number)" }

  public static func < (lhs: RevisionID, rhs: RevisionID) -> Bool {
    (lhs.service, lhs.number) < (rhs.service, rhs.number)
  }
}

/// An immutable, registered spec.
///
/// Invariant: `digest == Revision.digest(of: spec)`; two revisions with equal specs have equal digests.
public struct Revision: Codable, Hashable, Sendable {
  public let id: RevisionID
  /// Lowercase hex SHA-256 of `Revision.canonicalEncoding(of: spec)`.
  public let digest: String
  public let spec: ServiceSpec

  public init(id: RevisionID, spec: ServiceSpec) {
    self.id = id
    self.spec = spec
    self.digest = Revision.digest(of: spec)
  }

  /// The content digest of a spec: SHA-256 over its canonical encoding, as 64 hex characters.
  public static func digest(of spec: ServiceSpec) -> String {
    SHA256.hexDigest(Array(canonicalEncoding(of: spec).utf8))
  }

  /// A canonical JSON text of `spec`: object keys sorted, no whitespace, numbers in Swift's shortest
  /// round-trip form, durations in milliseconds. Independent of Foundation, so every platform agrees.
  public static func canonicalEncoding(of spec: ServiceSpec) -> String {
    CanonicalValue.service(spec).text
  }
}

/// A value in canonical JSON form.
private indirect enum CanonicalValue {
  case string(String)
  case integer(Int64)
  case number(Double)
  case boolean(Bool)
  case array([CanonicalValue])
  case object([String: CanonicalValue])
  case null

  var text: String {
    switch self {
    case .string(let value): return Self.quote(value)
    case .integer(let value): return String(value)
    case .number(let value): return value == value.rounded() && abs(value) < 1e15 ? String(Int64(value)) : "\(value)"
    case .boolean(let value): return value ? "true" : "false"
    case .null: return "null"
    case .array(let items): return "[" + items.map(\.text).joined(separator: ",") + "]"
    case .object(let fields):
      let sortedKeys = fields.keys.sorted { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) }
      return "{" + sortedKeys.map { Self.quote($0) + ":" + (fields[$0]?.text ?? "null") }.joined(separator: ",") + "}"
    }
  }

  static func quote(_ text: String) -> String {
    var output = "\""
    for scalar in text.unicodeScalars {
      switch scalar {
      case "\"": output += "\\\""
      case "\\": output += "\\\\"
      case "\n": output += "\\n"
      case "\r": output += "\\r"
      case "\t": output += "\\t"
      default:
        if scalar.value < 0x20 {
          let hex = String(scalar.value, radix: 16)
          output += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
        } else {
          output.unicodeScalars.append(scalar)
        }
      }
    }
    return output + "\""
  }

  static func span(_ span: TimeSpan) -> CanonicalValue { .integer(span.milliseconds) }
  static func stages(_ stages: [LifecycleStage]) -> CanonicalValue { .array(stages.map { .string($0.rawValue) }) }

  /// `healthFloorGrace` only when it is not the default, so digests of revisions registered before it
  /// existed do not change.
  static func circuitBreaker(_ breaker: CircuitBreakerConfiguration) -> [String: CanonicalValue] {
    var fields: [String: CanonicalValue] = [
      "enable": .boolean(breaker.enable), "rollback": .boolean(breaker.rollback),
      "failureThreshold": .integer(Int64(breaker.failureThreshold)), "scaleUpTimeout": span(breaker.scaleUpTimeout),
    ]
    if breaker.healthFloorGrace != CircuitBreakerConfiguration.defaultHealthFloorGrace {
      fields["healthFloorGrace"] = span(breaker.healthFloorGrace)
    }
    return fields
  }

  static func service(_ spec: ServiceSpec) -> CanonicalValue {
    let task = spec.task
    let check = task.healthCheck
    let deployment = spec.deployment
    var deploymentFields: [String: CanonicalValue] = [
      "strategy": .string(deployment.strategy.rawValue),
      "bakeTime": span(deployment.bakeTime),
      "lifecycleHooks": .array(deployment.lifecycleHooks.map(hook)),
      "alarms": .array(deployment.alarms.map(alarm)),
      "circuitBreaker": .object(circuitBreaker(deployment.circuitBreaker)),
    ]
    if let canary = deployment.canary {
      deploymentFields["canary"] = .object([
        "canaryPercent": .number(canary.canaryPercent), "canaryBakeTime": span(canary.canaryBakeTime),
      ])
    }
    if let steps = deployment.steps {
      deploymentFields["steps"] = .object([
        "percents": .array(steps.percents.map { .number($0) }), "stepBakeTime": span(steps.stepBakeTime),
      ])
    }
    if deployment.abortScaleDownDelay != .seconds(30) {
      deploymentFields["abortScaleDownDelay"] = span(deployment.abortScaleDownDelay)
    }
    if let deadline = deployment.progressDeadline { deploymentFields["progressDeadline"] = span(deadline) }
    if let linear = deployment.linear {
      deploymentFields["linear"] = .object([
        "stepPercent": .number(linear.stepPercent), "stepBakeTime": span(linear.stepBakeTime),
      ])
    }
    return .object([
      "name": .string(spec.name),
      "desiredCount": .integer(Int64(spec.desiredCount)),
      "productionPort": .integer(Int64(spec.productionPort)),
      "testPort": .integer(Int64(spec.testPort)),
      "task": .object([
        "command": .string(task.command),
        "args": .array(task.args.map { .string($0) }),
        "env": .object(task.env.mapValues { .string($0) }),
        "port": .integer(Int64(task.port)),
        "healthCheck": .object([
          "path": .string(check.path), "interval": span(check.interval), "timeout": span(check.timeout),
          "healthyThreshold": .integer(Int64(check.healthyThreshold)),
          "unhealthyThreshold": .integer(Int64(check.unhealthyThreshold)),
        ]),
      ]),
      "deployment": .object(deploymentFields),
    ])
  }

  static func json(_ value: JSONValue) -> CanonicalValue {
    switch value {
    case .null: return .null
    case .bool(let flag): return .boolean(flag)
    case .number(let number): return .number(number)
    case .string(let text): return .string(text)
    case .array(let items): return .array(items.map(json))
    case .object(let members):
      var fields: [String: CanonicalValue] = [:]
      for member in members { fields[member.key] = json(member.value) }
      return .object(fields)
    }
  }

  static func alarm(_ alarm: AlarmConfiguration) -> CanonicalValue {
    var fields: [String: CanonicalValue] = [
      "name": .string(alarm.name), "metric": .string(alarm.metric.rawValue),
      "threshold": .number(alarm.threshold),
      "window": span(alarm.window), "evaluateDuring": stages(alarm.evaluateDuring),
    ]
    if alarm.minimumRequests != 1 { fields["minimumRequests"] = .integer(Int64(alarm.minimumRequests)) }
    if alarm.evaluationPeriods != 1 { fields["evaluationPeriods"] = .integer(Int64(alarm.evaluationPeriods)) }
    if alarm.datapointsToAlarm != 1 { fields["datapointsToAlarm"] = .integer(Int64(alarm.datapointsToAlarm)) }
    if !alarm.rollback { fields["rollback"] = .boolean(false) }
    return .object(fields)
  }

  static func hook(_ hook: LifecycleHookConfiguration) -> CanonicalValue {
    var fields: [String: CanonicalValue] = [
      "stages": stages(hook.stages), "callBackDelay": span(hook.callBackDelay),
      "timeoutAction": .string(hook.timeoutAction.rawValue),
    ]
    switch hook.action {
    case .http(let url, let timeout):
      fields["http"] = .object(["url": .string(url), "timeout": span(timeout)])
    case .command(let argv, let timeout):
      fields["command"] = .object(["argv": .array(argv.map { .string($0) }), "timeout": span(timeout)])
    case .pause:
      fields["pause"] = .object([:])
    }
    // Fields added later appear only when not at their default, so older digests stay valid.
    if hook.overallTimeout != .hours(24) { fields["overallTimeout"] = span(hook.overallTimeout) }
    if hook.everyStep { fields["everyStep"] = .boolean(true) }
    if let details = hook.hookDetails { fields["hookDetails"] = json(details) }
    return .object(fields)
  }
}

/// The revisions of one service. A value type: the replicated state keeps one per service.
///
/// Invariants: numbers start at 1 and increase by one; a registered revision never changes;
/// registering a spec identical to the latest revision returns that revision instead of a new one
/// (so a retried `teal deploy` does not create `web:3` equal to `web:2`).
public struct RevisionHistory: Codable, Hashable, Sendable {
  public let service: String
  public private(set) var revisions: [Revision] = []

  public init(service: String) { self.service = service }

  public var latest: Revision? { revisions.last }

  public func revision(_ id: RevisionID) -> Revision? {
    guard id.service == service, id.number >= 1, id.number <= revisions.count else { return nil }
    return revisions[id.number - 1]
  }

  /// Registers `spec` and returns its revision, and whether it is new.
  public mutating func register(_ spec: ServiceSpec) throws(RevisionError) -> (revision: Revision, isNew: Bool) {
    guard spec.name == service else { throw .wrongService(expected: service, got: spec.name) }
    if let latest, latest.digest == Revision.digest(of: spec) { return (latest, false) }
    let revision = Revision(id: RevisionID(service: service, number: revisions.count + 1), spec: spec)
    revisions.append(revision)
    return (revision, true)
  }
}

/// Why a spec cannot be registered as a revision.
public enum RevisionError: Error, Hashable, Sendable, CustomStringConvertible {
  /// The spec names another service.
  case wrongService(expected: String, got: String)

  public var description: String {
    switch self {
    case .wrongService(let expected, let got):
      return "name: must be \"\(expected)\" to register a revision of that service, got \"\(got)\""
    }
  }
}
