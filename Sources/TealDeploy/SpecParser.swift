// Parsing and validating service specs from YAML or JSON. Both formats go through one tree
// (`SpecNode`) and one set of rules, so a JSON spec and its YAML twin give the same result and the
// same errors. Every error names the field path and the rule it broke.

import Foundation
import Yams

// MARK: - Errors

/// A spec that cannot be used, with the field at fault and the rule it broke, e.g.
/// `deployment.canary.canaryPercent: must be in 0.1...100, got 150`.
public struct SpecError: Error, Hashable, Sendable, CustomStringConvertible {
  /// The file the spec came from, when known.
  public var file: String?
  /// Dotted path of the field at fault (`deployment.lifecycleHooks[0].http.url`), or `(document)`.
  public var path: String
  /// The rule the value broke, in words a user can act on.
  public var rule: String

  public init(file: String? = nil, path: String, rule: String) {
    self.file = file
    self.path = path
    self.rule = rule
  }

  public var description: String {
    let located = "\(path): \(rule)"
    return file.map { "\($0): \(located)" } ?? located
  }
}

// MARK: - Entry points

extension ServiceSpec {
  /// Parses and validates a YAML spec.
  public static func parse(yaml: String) throws(SpecError) -> ServiceSpec {
    let root: Node?
    do {
      root = try Yams.compose(yaml: yaml)
    } catch {
      throw SpecError(path: "(document)", rule: "invalid YAML: \(error)")
    }
    guard let root else {
      throw SpecError(path: "(document)", rule: "is empty; expected a mapping with name, task, ...")
    }
    return try SpecParser.parseService(SpecNode(yams: root, path: "(document)"))
  }

  /// Parses and validates a JSON spec (same fields and rules as YAML).
  public static func parse(json: String) throws(SpecError) -> ServiceSpec {
    do {
      _ = try JSONSerialization.jsonObject(with: Data(json.utf8), options: [])
    } catch {
      throw SpecError(path: "(document)", rule: "invalid JSON: \(error.localizedDescription)")
    }
    // JSON is a subset of YAML's flow style: reuse the YAML tree, where quoted scalars stay strings.
    return try parse(yaml: json)
  }

  /// Parses the text of the file `fileName`: as JSON when the name ends in `.json`, as YAML
  /// otherwise. Errors carry the file name. (No I/O: the caller reads the file.)
  public static func parse(_ text: String, fileName: String) throws(SpecError) -> ServiceSpec {
    do {
      return fileName.hasSuffix(".json") ? try parse(json: text) : try parse(yaml: text)
    } catch {
      var located = error
      located.file = fileName
      throw located
    }
  }
}

// MARK: - Format-neutral tree

/// A parsed document: scalars keep whether they were quoted, so `"3"` is a string and `3` a number
/// in both YAML and JSON.
indirect enum SpecNode {
  case scalar(String, quoted: Bool)
  case list([SpecNode])
  case map([(key: String, value: SpecNode)])
  case null

  init(yams node: Node, path: String) throws(SpecError) {
    switch node {
    case .scalar(let scalar):
      let quoted = scalar.style != .plain
      if !quoted && ["", "~", "null", "Null", "NULL"].contains(scalar.string) {
        self = .null
      } else {
        self = .scalar(scalar.string, quoted: quoted)
      }
    case .sequence(let sequence):
      var items: [SpecNode] = []
      for (index, item) in sequence.enumerated() { items.append(try SpecNode(yams: item, path: "\(path)[\(index)]")) }
      self = .list(items)
    case .mapping(let mapping):
      var pairs: [(key: String, value: SpecNode)] = []
      var seen: Set<String> = []
      for (keyNode, valueNode) in mapping {
        guard case .scalar(let keyScalar) = keyNode else {
          throw SpecError(path: path, rule: "keys must be plain strings")
        }
        let key = keyScalar.string
        let childPath = SpecParser.join(path, key)
        guard seen.insert(key).inserted else { throw SpecError(path: childPath, rule: "is given more than once") }
        pairs.append((key, try SpecNode(yams: valueNode, path: childPath)))
      }
      self = .map(pairs)
    @unknown default:
      throw SpecError(path: path, rule: "unsupported YAML node")
    }
  }

  var kindName: String {
    switch self {
    case .scalar(_, let quoted): return quoted ? "a string" : "a scalar"
    case .list: return "a list"
    case .map: return "a mapping"
    case .null: return "null"
    }
  }
}

// MARK: - Readers

/// A mapping being read: fields not in `allowed` are rejected up front.
struct ObjectReader {
  let path: String
  let fields: [String: SpecNode]

  init(_ node: SpecNode, path: String, allowed: [String]) throws(SpecError) {
    guard case .map(let pairs) = node else {
      throw SpecError(
        path: path, rule: "must be a mapping with fields \(allowed.joined(separator: ", ")), got \(node.kindName)")
    }
    for pair in pairs where !allowed.contains(pair.key) {
      throw SpecError(
        path: SpecParser.join(path, pair.key),
        rule: "unknown field (allowed here: \(allowed.joined(separator: ", ")))")
    }
    self.path = path
    var fields: [String: SpecNode] = [:]
    for pair in pairs { fields[pair.key] = pair.value }
    self.fields = fields
  }

  func childPath(_ key: String) -> String { SpecParser.join(path, key) }

  /// The value of `key`, or nil when it is absent or null.
  func optional<T>(_ key: String, _ read: (SpecNode, String) throws(SpecError) -> T) throws(SpecError) -> T? {
    guard let node = fields[key] else { return nil }
    if case .null = node { return nil }
    return try read(node, childPath(key))
  }

  func required<T>(_ key: String, _ read: (SpecNode, String) throws(SpecError) -> T) throws(SpecError) -> T {
    guard let value = try optional(key, read) else { throw SpecError(path: childPath(key), rule: "is required") }
    return value
  }
}

/// The rules, one function per field type.
enum SpecParser {
  static func join(_ path: String, _ key: String) -> String { path == "(document)" ? key : "\(path).\(key)" }

  // MARK: Scalars

  static func string(_ node: SpecNode, _ path: String) throws(SpecError) -> String {
    guard case .scalar(let text, _) = node else {
      throw SpecError(path: path, rule: "must be a string, got \(node.kindName)")
    }
    return text
  }

  static func nonEmptyString(_ node: SpecNode, _ path: String) throws(SpecError) -> String {
    let text = try string(node, path)
    guard !text.isEmpty else { throw SpecError(path: path, rule: "must not be empty") }
    return text
  }

  static func integer(_ node: SpecNode, _ path: String) throws(SpecError) -> Int {
    guard case .scalar(let text, let quoted) = node, !quoted, let value = Int(text) else {
      throw SpecError(path: path, rule: "must be an integer, got \(describe(node))")
    }
    return value
  }

  static func integer(in range: ClosedRange<Int>) -> (SpecNode, String) throws(SpecError) -> Int {
    { (node, path) throws(SpecError) -> Int in
      let value = try integer(node, path)
      guard range.contains(value) else { throw SpecError(path: path, rule: "must be in \(range), got \(value)") }
      return value
    }
  }

  static func number(_ node: SpecNode, _ path: String) throws(SpecError) -> Double {
    guard case .scalar(let text, let quoted) = node, !quoted, let value = Double(text), value.isFinite else {
      throw SpecError(path: path, rule: "must be a number, got \(describe(node))")
    }
    return value
  }

  /// A percentage in 0.1...100 with at most two decimals (traffic moves in basis points).
  static func percent(_ node: SpecNode, _ path: String) throws(SpecError) -> Double {
    let value = try number(node, path)
    guard value >= 0.1 && value <= 100 else {
      throw SpecError(path: path, rule: "must be in 0.1...100, got \(formatNumber(value))")
    }
    let basisPoints = value * 100
    guard abs(basisPoints - basisPoints.rounded()) < 1e-6 else {
      throw SpecError(path: path, rule: "must have at most two decimal places, got \(formatNumber(value))")
    }
    return value
  }

  static func boolean(_ node: SpecNode, _ path: String) throws(SpecError) -> Bool {
    guard case .scalar(let text, let quoted) = node, !quoted, text == "true" || text == "false" else {
      throw SpecError(path: path, rule: "must be true or false, got \(describe(node))")
    }
    return text == "true"
  }

  static func duration(in range: ClosedRange<TimeSpan>) -> (SpecNode, String) throws(SpecError) -> TimeSpan {
    { (node, path) throws(SpecError) -> TimeSpan in
      guard case .scalar(let text, _) = node, let span = TimeSpan(parsing: text) else {
        throw SpecError(path: path, rule: "must be a duration like 500ms, 30s, 5m or 1h, got \(describe(node))")
      }
      guard range.contains(span) else {
        throw SpecError(path: path, rule: "must be in \(range.lowerBound)...\(range.upperBound), got \(span)")
      }
      return span
    }
  }

  static func enumeration<E: RawRepresentable & CaseIterable>(_ type: E.Type) -> (SpecNode, String) throws(SpecError) ->
    E
  where E.RawValue == String {
    { (node, path) throws(SpecError) -> E in
      let text = try string(node, path)
      guard let value = E(rawValue: text) else {
        let allowed = E.allCases.map(\.rawValue).joined(separator: ", ")
        throw SpecError(path: path, rule: "must be one of \(allowed), got \(text)")
      }
      return value
    }
  }

  static func list<T>(
    _ element: @escaping (SpecNode, String) throws(SpecError) -> T
  ) -> (SpecNode, String) throws(SpecError) -> [T] {
    { (node, path) throws(SpecError) -> [T] in
      guard case .list(let items) = node else {
        throw SpecError(path: path, rule: "must be a list, got \(node.kindName)")
      }
      var values: [T] = []
      for (index, item) in items.enumerated() { values.append(try element(item, "\(path)[\(index)]")) }
      return values
    }
  }

  static func describe(_ node: SpecNode) -> String {
    switch node {
    case .scalar(let text, let quoted): return quoted ? "\"\(text)\"" : text
    default: return node.kindName
    }
  }

  static func formatNumber(_ value: Double) -> String {
    value == value.rounded() && abs(value) < 1e15 ? String(Int64(value)) : String(value)
  }

  // MARK: Sections

  static func parseService(_ root: SpecNode) throws(SpecError) -> ServiceSpec {
    let object = try ObjectReader(
      root, path: "(document)",
      allowed: ["name", "desiredCount", "productionPort", "testPort", "task", "deployment"])
    let name = try object.required("name", string)
    guard isServiceName(name) else {
      throw SpecError(
        path: "name",
        rule: "must be 1 to 63 lowercase letters, digits or '-', starting with a letter, got \"\(name)\"")
    }
    let desiredCount = try object.required("desiredCount", integer(in: 1...1000))
    let productionPort = try object.required("productionPort", integer(in: 1...65535))
    let testPort = try object.required("testPort", integer(in: 1...65535))
    guard testPort != productionPort else {
      throw SpecError(path: "testPort", rule: "must differ from productionPort (\(productionPort))")
    }
    let task = try object.required("task", parseTask)
    let deployment = try object.required("deployment", parseDeployment)
    return ServiceSpec(
      name: name, desiredCount: desiredCount, productionPort: productionPort, testPort: testPort, task: task,
      deployment: deployment)
  }

  static func isServiceName(_ name: String) -> Bool {
    guard let first = name.unicodeScalars.first, name.unicodeScalars.count <= 63, ("a"..."z").contains(first) else {
      return false
    }
    return name.unicodeScalars.allSatisfy { ("a"..."z").contains($0) || ("0"..."9").contains($0) || $0 == "-" }
  }

  static func parseTask(_ node: SpecNode, _ path: String) throws(SpecError) -> TaskSpec {
    let object = try ObjectReader(node, path: path, allowed: ["command", "args", "env", "port", "healthCheck"])
    let command = try object.required("command", nonEmptyString)
    let args = try object.optional("args", list(string)) ?? []
    let env = try object.optional("env", parseEnvironment) ?? [:]
    let port = try object.required("port", integer(in: 1...65535))
    let healthCheck = try object.required("healthCheck", parseHealthCheck)
    return TaskSpec(command: command, args: args, env: env, port: port, healthCheck: healthCheck)
  }

  static func parseEnvironment(_ node: SpecNode, _ path: String) throws(SpecError) -> [String: String] {
    guard case .map(let pairs) = node else {
      throw SpecError(path: path, rule: "must be a mapping of variable names to strings, got \(node.kindName)")
    }
    var env: [String: String] = [:]
    for pair in pairs {
      let childPath = join(path, pair.key)
      guard isEnvironmentName(pair.key) else {
        throw SpecError(path: childPath, rule: "variable names must match [A-Za-z_][A-Za-z0-9_]*")
      }
      env[pair.key] = try string(pair.value, childPath)
    }
    return env
  }

  static func isEnvironmentName(_ name: String) -> Bool {
    guard let first = name.unicodeScalars.first, !("0"..."9").contains(first) else { return false }
    return name.unicodeScalars.allSatisfy {
      ("a"..."z").contains($0) || ("A"..."Z").contains($0) || ("0"..."9").contains($0) || $0 == "_"
    }
  }

  static func parseHealthCheck(_ node: SpecNode, _ path: String) throws(SpecError) -> HealthCheckSpec {
    let object = try ObjectReader(
      node, path: path, allowed: ["path", "interval", "timeout", "healthyThreshold", "unhealthyThreshold"])
    let checkPath = try object.optional("path", string) ?? "/health"
    guard checkPath.hasPrefix("/") else {
      throw SpecError(path: object.childPath("path"), rule: "must start with '/', got \"\(checkPath)\"")
    }
    let interval = try object.optional("interval", duration(in: .seconds(1)...(.minutes(5)))) ?? .seconds(5)
    let timeout = try object.optional("timeout", duration(in: .milliseconds(100)...(.minutes(5)))) ?? .seconds(2)
    guard timeout <= interval else {
      throw SpecError(path: object.childPath("timeout"), rule: "must not exceed interval (\(interval)), got \(timeout)")
    }
    let healthy = try object.optional("healthyThreshold", integer(in: 1...10)) ?? 2
    let unhealthy = try object.optional("unhealthyThreshold", integer(in: 1...10)) ?? 3
    return HealthCheckSpec(
      path: checkPath, interval: interval, timeout: timeout, healthyThreshold: healthy, unhealthyThreshold: unhealthy)
  }

  static func parseDeployment(_ node: SpecNode, _ path: String) throws(SpecError) -> DeploymentConfig {
    let object = try ObjectReader(
      node, path: path,
      allowed: ["strategy", "bakeTime", "canary", "linear", "lifecycleHooks", "alarms", "circuitBreaker"])
    let strategy = try object.required("strategy", enumeration(DeploymentStrategy.self))
    let bakeTime = try object.optional("bakeTime", duration(in: .zero...(.hours(48)))) ?? .minutes(5)
    let canary = try object.optional("canary") { (node, path) throws(SpecError) -> CanaryConfig in
      let section = try ObjectReader(node, path: path, allowed: ["canaryPercent", "canaryBakeTime"])
      return CanaryConfig(
        canaryPercent: try section.required("canaryPercent", percent),
        canaryBakeTime: try section.optional("canaryBakeTime", duration(in: .zero...(.hours(48)))) ?? .minutes(5))
    }
    let linear = try object.optional("linear") { (node, path) throws(SpecError) -> LinearConfig in
      let section = try ObjectReader(node, path: path, allowed: ["stepPercent", "stepBakeTime"])
      return LinearConfig(
        stepPercent: try section.required("stepPercent", percent),
        stepBakeTime: try section.optional("stepBakeTime", duration(in: .zero...(.hours(48)))) ?? .minutes(1))
    }
    switch strategy {
    case .CANARY:
      guard canary != nil else {
        throw SpecError(path: object.childPath("canary"), rule: "is required when strategy is CANARY")
      }
    case .LINEAR:
      guard linear != nil else {
        throw SpecError(path: object.childPath("linear"), rule: "is required when strategy is LINEAR")
      }
    case .BLUE_GREEN:
      break
    }
    if canary != nil && strategy != .CANARY {
      throw SpecError(
        path: object.childPath("canary"), rule: "is only allowed when strategy is CANARY, not \(strategy)")
    }
    if linear != nil && strategy != .LINEAR {
      throw SpecError(
        path: object.childPath("linear"), rule: "is only allowed when strategy is LINEAR, not \(strategy)")
    }
    let hooks = try object.optional("lifecycleHooks", list(parseHook)) ?? []
    let alarms = try object.optional("alarms", list(parseAlarm)) ?? []
    var alarmNames: Set<String> = []
    for (index, alarm) in alarms.enumerated() where !alarmNames.insert(alarm.name).inserted {
      throw SpecError(
        path: "\(object.childPath("alarms"))[\(index)].name", rule: "duplicates alarm name \"\(alarm.name)\"")
    }
    let breaker = try object.optional("circuitBreaker", parseCircuitBreaker) ?? .default
    return DeploymentConfig(
      strategy: strategy, bakeTime: bakeTime, canary: canary, linear: linear, lifecycleHooks: hooks, alarms: alarms,
      circuitBreaker: breaker)
  }

  static func parseHook(_ node: SpecNode, _ path: String) throws(SpecError) -> LifecycleHookSpec {
    let object = try ObjectReader(
      node, path: path, allowed: ["stages", "http", "command", "callBackDelay", "timeoutAction"])
    let stages = try object.required("stages", list(enumeration(LifecycleStage.self)))
    guard !stages.isEmpty else {
      throw SpecError(path: object.childPath("stages"), rule: "must name at least one stage")
    }
    for (index, stage) in stages.enumerated() {
      guard stage.isHookable else {
        throw SpecError(
          path: "\(object.childPath("stages"))[\(index)]",
          rule: "\(stage) is not hookable (hooks cannot run at SCALE_UP, BAKE_TIME or CLEAN_UP)")
      }
      guard stages.firstIndex(of: stage) == index else {
        throw SpecError(path: "\(object.childPath("stages"))[\(index)]", rule: "repeats stage \(stage)")
      }
    }
    let http = try object.optional("http") { (node, path) throws(SpecError) -> HookAction in
      let section = try ObjectReader(node, path: path, allowed: ["url", "timeout"])
      let url = try section.required("url", string)
      guard url.hasPrefix("http://"), url.count > "http://".count, !url.contains(" ") else {
        throw SpecError(path: section.childPath("url"), rule: "must be a plain http:// URL, got \"\(url)\"")
      }
      let timeout = try section.optional("timeout", duration(in: .milliseconds(100)...(.minutes(15)))) ?? .seconds(30)
      return .http(url: url, timeout: timeout)
    }
    let command = try object.optional("command") { (node, path) throws(SpecError) -> HookAction in
      let section = try ObjectReader(node, path: path, allowed: ["argv", "timeout"])
      let argv = try section.required("argv", list(string))
      guard let first = argv.first, !first.isEmpty else {
        throw SpecError(path: section.childPath("argv"), rule: "must start with the program to run")
      }
      let timeout = try section.optional("timeout", duration(in: .milliseconds(100)...(.minutes(15)))) ?? .seconds(30)
      return .command(argv: argv, timeout: timeout)
    }
    let action: HookAction
    switch (http, command) {
    case (let http?, nil): action = http
    case (nil, let command?): action = command
    case (nil, nil): throw SpecError(path: path, rule: "must have either http or command")
    case (.some, .some): throw SpecError(path: path, rule: "must have either http or command, not both")
    }
    let callBackDelay = try object.optional("callBackDelay", duration(in: .seconds(1)...(.hours(1)))) ?? .seconds(30)
    let timeoutAction = try object.optional("timeoutAction") { (node, path) throws(SpecError) -> HookTimeoutAction in
      let text = try string(node, path)
      guard let value = HookTimeoutAction(rawValue: text) else {
        throw SpecError(path: path, rule: "must be one of ROLLBACK, CONTINUE, got \(text)")
      }
      return value
    }
    return LifecycleHookSpec(
      stages: stages, action: action, callBackDelay: callBackDelay, timeoutAction: timeoutAction ?? .ROLLBACK)
  }

  static func parseAlarm(_ node: SpecNode, _ path: String) throws(SpecError) -> AlarmSpec {
    let object = try ObjectReader(
      node, path: path, allowed: ["name", "metric", "threshold", "window", "evaluateDuring"])
    let metricText = try object.required("metric", string)
    guard let metric = AlarmMetric(rawValue: metricText) else {
      throw SpecError(
        path: object.childPath("metric"), rule: "must be one of http5xxRate, latencyP99, got \(metricText)")
    }
    let name = try object.optional("name", nonEmptyString) ?? metric.rawValue
    let threshold = try object.required("threshold", number)
    switch metric {
    case .http5xxRate:
      guard threshold >= 0 && threshold < 1 else {
        throw SpecError(
          path: object.childPath("threshold"),
          rule: "must be a fraction in 0...1 (0.05 = 5 %) for http5xxRate, got \(formatNumber(threshold))")
      }
    case .latencyP99:
      guard threshold > 0 && threshold <= 600_000 else {
        throw SpecError(
          path: object.childPath("threshold"),
          rule: "must be milliseconds in 0...600000 for latencyP99, got \(formatNumber(threshold))")
      }
    }
    let window = try object.optional("window", duration(in: .seconds(1)...(.hours(1)))) ?? .minutes(1)
    let stages =
      try object.optional("evaluateDuring", list(enumeration(LifecycleStage.self))) ?? AlarmSpec.defaultStages
    guard !stages.isEmpty else {
      throw SpecError(path: object.childPath("evaluateDuring"), rule: "must name at least one stage")
    }
    return AlarmSpec(name: name, metric: metric, threshold: threshold, window: window, evaluateDuring: stages)
  }

  static func parseCircuitBreaker(_ node: SpecNode, _ path: String) throws(SpecError) -> CircuitBreakerSpec {
    let object = try ObjectReader(
      node, path: path, allowed: ["enable", "rollback", "failureThreshold", "scaleUpTimeout"])
    let defaults = CircuitBreakerSpec.default
    return CircuitBreakerSpec(
      enable: try object.optional("enable", boolean) ?? defaults.enable,
      rollback: try object.optional("rollback", boolean) ?? defaults.rollback,
      failureThreshold: try object.optional("failureThreshold", integer(in: 1...100)) ?? defaults.failureThreshold,
      scaleUpTimeout: try object.optional("scaleUpTimeout", duration(in: .seconds(10)...(.hours(2))))
        ?? defaults.scaleUpTimeout)
  }
}
