// Reading a scenario file: YAML (through Yams' node tree, which keeps every value's line) into a
// checked ``ChaosScenario``. The first error stops the read and names the field and its line.

import TealDeploy
import Yams

/// A scenario that cannot be run: the field (`faults[1].at`), its line when known, and why.
public struct ScenarioError: Error, Hashable, Sendable, CustomStringConvertible {
  public var file: String?
  public var field: String
  public var line: Int?
  public var message: String

  public init(file: String? = nil, field: String, line: Int?, message: String) {
    self.file = file
    self.field = field
    self.line = line
    self.message = message
  }

  /// `kill.yaml:12: faults[1].at: unknown stage 'BAKE' (stages: ...)`.
  public var description: String {
    var text = file ?? "scenario"
    if let line { text += ":\(line)" }
    return text + ": " + (field.isEmpty ? "" : field + ": ") + message
  }
}

public enum ScenarioParser {
  /// Parses a scenario file's text; `file` names it in errors.
  public static func parse(_ text: String, file: String? = nil) throws(ScenarioError) -> ChaosScenario {
    do {
      return try read(text)
    } catch {
      var named = error
      named.file = file
      throw named
    }
  }

  /// The document's root node: at most `maximumBytes` (`what` names the kind of file in the error),
  /// not empty, valid YAML; errors carry the line where Yams knows it.
  static func composeRoot(_ text: String, maximumBytes: Int, what: String) throws(ScenarioError) -> Node {
    guard text.utf8.count <= maximumBytes else {
      throw ScenarioError(
        field: "", line: nil, message: "the file has \(text.utf8.count) bytes; \(what) is at most \(maximumBytes)")
    }
    do {
      guard let node = try Yams.compose(yaml: text) else {
        throw ScenarioError(field: "", line: nil, message: "the file is empty")
      }
      return node
    } catch let error as ScenarioError {
      throw error
    } catch let error as YamlError {
      throw ScenarioError(field: "", line: yamlErrorLine(error), message: "not valid YAML: \(error)")
    } catch {
      throw ScenarioError(field: "", line: nil, message: "not valid YAML: \(error)")
    }
  }

  private static func read(_ text: String) throws(ScenarioError) -> ChaosScenario {
    let root = try composeRoot(text, maximumBytes: ScenarioLimits.maximumBytes, what: "a scenario")
    let top = try Fields(
      root, path: "",
      allowed: [
        "name", "description", "service", "deployment", "duration", "faults", "random", "traffic", "expect",
      ])
    let name = try top.required("name").string()
    let service = try Fields(top.required("service"), path: "service", allowed: ["spec", "set"])
    var scenario = ChaosScenario(name: name, serviceSpec: try service.required("spec").string())
    if let description = top["description"] { scenario.description = try description.string() }
    if let set = service["set"] { scenario.serviceSet = try set.keyValues() }

    if let deploymentNode = top["deployment"] {
      let deployment = try Fields(
        deploymentNode, path: "deployment", allowed: ["strategy", "bakeTime", "set", "timeout"])
      var set: [KeyValue] = []
      if let strategy = deployment["strategy"] {
        let value = try strategy.string()
        guard ["BLUE_GREEN", "CANARY", "LINEAR", "STEPS"].contains(value) else {
          throw strategy.error("must be BLUE_GREEN, CANARY, LINEAR or STEPS, got '\(value)'")
        }
        set.append(KeyValue("deployment.strategy", value))
      }
      if let bake = deployment["bakeTime"] {
        set.append(
          KeyValue(
            "deployment.bakeTime", formatDuration(try bake.duration(maximum: ScenarioLimits.maximumRunMilliseconds))))
      }
      if let more = deployment["set"] { set += try more.keyValues() }
      scenario.deploymentSet = set
      if let timeout = deployment["timeout"] {
        scenario.deploymentTimeoutMs = try timeout.duration(maximum: ScenarioLimits.maximumRunMilliseconds, minimum: 1)
      }
    }
    if let duration = top["duration"] {
      scenario.durationMs = try duration.duration(maximum: ScenarioLimits.maximumRunMilliseconds, minimum: 1)
    }
    if let faults = top["faults"] {
      let items = try faults.list()
      guard items.count <= ScenarioLimits.maximumFaultEntries else {
        throw faults.error("at most \(ScenarioLimits.maximumFaultEntries) entries, got \(items.count)")
      }
      scenario.faults = try items.map { item throws(ScenarioError) in try fault(item) }
    }
    if let random = top["random"] { scenario.random = try randomFaults(random) }
    if let traffic = top["traffic"] { scenario.traffic = try trafficPlan(traffic) }
    if let expect = top["expect"] { scenario.expect = try expectation(expect) }
    if scenario.random != nil && scenario.durationMs == nil && scenario.random?.endMs == nil {
      throw ScenarioError(field: "random.end", line: top["random"]?.line, message: "give random.end or a duration")
    }
    return scenario
  }

  // MARK: - Sections

  static let faultKinds = ["kill", "pause", "partition", "loss", "restart-all", "kill-task"]

  private static func fault(_ node: Value) throws(ScenarioError) -> FaultEntry {
    let fields = try Fields(
      node, path: node.path,
      allowed: faultKinds + ["at", "after", "every", "count", "for", "from", "percent", "restartAfter", "withTasks"])
    let kinds = faultKinds.filter { fields[$0] != nil }
    guard kinds.count == 1, let kind = kinds.first, let target = fields[kind] else {
      throw node.error(
        "give exactly one of \(faultKinds.joined(separator: ", ")) (the fault), got "
          + (kinds.isEmpty ? "none" : kinds.joined(separator: ", ")))
    }
    func length() throws(ScenarioError) -> Int64 {
      try fields.required("for").duration(maximum: ScenarioLimits.maximumFaultMilliseconds, minimum: 1)
    }
    let used: [String]
    let action: FaultAction
    switch kind {
    case "kill":
      let restart = try fields["restartAfter"]?.duration(maximum: ScenarioLimits.maximumFaultMilliseconds)
      action = .kill(
        try target.selector(), restartAfterMs: restart, withTasks: try fields["withTasks"]?.bool() ?? false)
      used = ["restartAfter", "withTasks"]
    case "pause":
      action = .pause(try target.selector(), forMs: try length())
      used = ["for"]
    case "partition":
      let node = try target.selector()
      let from = try fields["from"]?.selector()
      if let from, from == node, from != .follower {
        throw fields["from"]!.error("must be another node than the one partitioned (\(node))")
      }
      action = .partition(node, from: from, forMs: try length())
      used = ["for", "from"]
    case "loss":
      let percent = try fields.required("percent").integer(in: ScenarioLimits.lossPercent)
      action = .loss(try target.selector(), percent: percent, forMs: try length())
      used = ["for", "percent"]
    case "restart-all":
      let mode = try target.string()
      guard mode == "rolling" || mode == "at-once" else {
        throw target.error("must be rolling or at-once, got '\(mode)'")
      }
      action = .restartAll(atOnce: mode == "at-once")
      used = []
    default:
      let text = try target.string()
      action = .killTask(text == "any" ? nil : try target.selector())
      used = []
    }
    for option in ["for", "from", "percent", "restartAfter", "withTasks"] where !used.contains(option) {
      if let extra = fields[option] { throw extra.error("does not apply to \(kind)") }
    }
    let trigger: FaultTrigger
    switch (fields["at"], fields["after"]) {
    case (let at?, nil): trigger = try moment(at)
    case (nil, let after?): trigger = .after(try after.duration(maximum: ScenarioLimits.maximumRunMilliseconds))
    case (_?, _?): throw fields["after"]!.error("give at or after, not both")
    case (nil, nil): throw node.error("give at (STAGE, STAGE+6s, BAKE_TIME+60%, STEP2) or after (10s)")
    }
    let count = try fields["count"]?.integer(in: 1...ScenarioLimits.maximumRepeats) ?? 1
    let every = try fields["every"]?.duration(maximum: ScenarioLimits.maximumFaultMilliseconds, minimum: 1)
    if count > 1 && every == nil { throw fields["count"]!.error("give every (the period) with count") }
    if every != nil && count == 1 { throw fields["every"]!.error("give count (how many times) with every") }
    return FaultEntry(action: action, trigger: trigger, everyMs: every, count: count, line: node.line)
  }

  /// `STAGE`, `STAGE+6s`, `BAKE_TIME+60%`, `STEP2`, `STEP2+1s`.
  private static func moment(_ node: Value) throws(ScenarioError) -> FaultTrigger {
    let text = try node.string()
    let parts = text.split(separator: "+", maxSplits: 1, omittingEmptySubsequences: false).map(String.init)
    let head = parts[0]
    let tail = parts.count == 2 ? parts[1] : nil
    if head.hasPrefix("STEP"), let n = Int(head.dropFirst(4)) {
      guard (1...100).contains(n) else { throw node.error("STEPn: n must be in 1...100, got \(n)") }
      var offset: Int64 = 0
      if let tail {
        guard let value = parseDurationMilliseconds(tail), value <= ScenarioLimits.maximumFaultMilliseconds else {
          throw node.error("expected an offset such as +6s after STEP\(n), got '+\(tail)'")
        }
        offset = value
      }
      return .step(n, offset)
    }
    guard let stage = LifecycleStage(rawValue: head) else {
      throw node.error(
        "unknown stage '\(head)' (stages: \(LifecycleStage.allCases.map(\.rawValue).joined(separator: ", ")); "
          + "or STEPn, the n-th production traffic step)")
    }
    guard let tail else { return .stage(stage, .milliseconds(0)) }
    if tail.hasSuffix("%") {
      guard stage == .BAKE_TIME else { throw node.error("a percentage offset applies to BAKE_TIME only") }
      guard let share = Double(tail.dropLast()), share >= 0, share <= 100 else {
        throw node.error("expected a percentage 0...100 of the bake time, got '\(tail)'")
      }
      return .stage(stage, .percentOfBake(share, plusMilliseconds: 0))
    }
    guard let value = parseDurationMilliseconds(tail), value <= ScenarioLimits.maximumFaultMilliseconds else {
      throw node.error("expected an offset such as \(stage.rawValue)+6s (at most 1h), got '+\(tail)'")
    }
    return .stage(stage, .milliseconds(value))
  }

  private static func randomFaults(_ node: Value) throws(ScenarioError) -> RandomFaults {
    let fields = try Fields(node, path: "random", allowed: ["seed", "count", "kinds", "start", "end", "for", "gap"])
    let seedNode = try fields.required("seed")
    guard case .scalar(let scalar) = seedNode.node, let seed = UInt64(scalar.string) else {
      throw seedNode.error("must be a whole number 0...\(UInt64.max)")
    }
    let count = try fields.required("count").integer(in: 1...ScenarioLimits.maximumPlannedFaults)
    var kinds = RandomFaults.allowedKinds.filter { $0 != "restart-all" }
    if let list = fields["kinds"] {
      kinds = try list.list().map { item throws(ScenarioError) in
        let kind = try item.string()
        guard RandomFaults.allowedKinds.contains(kind) else {
          throw item.error("unknown kind '\(kind)' (kinds: \(RandomFaults.allowedKinds.joined(separator: ", ")))")
        }
        return kind
      }
      if kinds.isEmpty { throw list.error("give at least one kind") }
    }
    let start = try fields["start"]?.duration(maximum: ScenarioLimits.maximumRunMilliseconds) ?? 5_000
    let end = try fields["end"]?.duration(maximum: ScenarioLimits.maximumRunMilliseconds)
    if let end, end <= start { throw fields["end"]!.error("must be after start") }
    var minimum: Int64 = 2_000
    var maximum: Int64 = 6_000
    if let range = fields["for"] {
      let items = try range.list()
      guard items.count == 2 else { throw range.error("expected [shortest, longest], such as [2s, 6s]") }
      minimum = try items[0].duration(maximum: ScenarioLimits.maximumFaultMilliseconds, minimum: 1)
      maximum = try items[1].duration(maximum: ScenarioLimits.maximumFaultMilliseconds, minimum: 1)
      if maximum < minimum { throw range.error("the longest is shorter than the shortest") }
    }
    let gap = try fields["gap"]?.duration(maximum: ScenarioLimits.maximumFaultMilliseconds) ?? 10_000
    return RandomFaults(
      seed: seed, count: count, kinds: kinds, startMs: start, endMs: end, minimumForMs: minimum, maximumForMs: maximum,
      gapMs: gap)
  }

  private static func trafficPlan(_ node: Value) throws(ScenarioError) -> TrafficPlan {
    let fields = try Fields(
      node, path: "traffic", allowed: ["clients", "get", "post", "postShare", "bodyBytes", "rate", "timeout"])
    var plan = TrafficPlan()
    if let clients = fields["clients"] {
      plan.clientsPerListener = try clients.integer(in: ScenarioLimits.clientsPerListener)
    }
    for (key, keyPath) in [("get", \TrafficPlan.getPath), ("post", \TrafficPlan.postPath)] {
      guard let value = fields[key] else { continue }
      let path = try value.string()
      guard path.hasPrefix("/"), path.allSatisfy({ $0.isASCII && !$0.isWhitespace }) else {
        throw value.error("must be a path starting with / (no spaces), got '\(path)'")
      }
      plan[keyPath: keyPath] = path
    }
    if fields["post"] != nil { plan.postFraction = 0.5 }
    if let share = fields["postShare"] {
      plan.postFraction = try share.number(in: 0...1)
      if plan.postFraction > 0 && fields["post"] == nil { throw share.error("give post (the POST path) too") }
    }
    if let body = fields["bodyBytes"] { plan.bodyBytes = try body.integer(in: 0...(1024 * 1024)) }
    if let rate = fields["rate"] {
      if case .scalar(let scalar) = rate.node, scalar.string == "max" {
        plan.ratePerClient = nil
      } else {
        let value = try rate.number(in: 0...ScenarioLimits.maximumRatePerClient)
        guard value > 0 else { throw rate.error("must be more than 0 (or max)") }
        plan.ratePerClient = value
      }
    }
    if let timeout = fields["timeout"] { plan.requestTimeoutMs = try timeout.duration(maximum: 600_000, minimum: 1) }
    return plan
  }

  private static func expectation(_ node: Value) throws(ScenarioError) -> ChaosExpectation {
    let fields = try Fields(
      node, path: "expect", allowed: ["status", "bakeDeviation", "failedRequests", "failedUnderFault", "timeToLeader"])
    var expect = ChaosExpectation()
    if let status = fields["status"] {
      let value = try status.string()
      let statuses = ["SUCCESSFUL", "ROLLBACK_SUCCESSFUL", "STOPPED", "ROLLBACK_FAILED"]
      guard statuses.contains(value) else {
        throw status.error("must be one of \(statuses.joined(separator: ", ")), got '\(value)'")
      }
      expect.status = value
    }
    if let bake = fields["bakeDeviation"] {
      if case .scalar(let scalar) = bake.node, scalar.string == "any" {
        expect.bakeDeviationMs = nil
      } else {
        expect.bakeDeviationMs = try bake.duration(maximum: ScenarioLimits.maximumRunMilliseconds)
      }
    }
    if let failed = fields["failedRequests"] { expect.failedRequests = try failed.integer(in: 0...Int(Int32.max)) }
    if let failed = fields["failedUnderFault"] {
      if case .scalar(let scalar) = failed.node, scalar.string == "any" {
        expect.failedUnderFault = nil
      } else {
        expect.failedUnderFault = try failed.integer(in: 0...Int(Int32.max))
      }
    }
    if let time = fields["timeToLeader"] {
      expect.maximumTimeToLeaderMs = try time.duration(maximum: ScenarioLimits.maximumFaultMilliseconds, minimum: 1)
    }
    return expect
  }

  static func yamlErrorLine(_ error: YamlError) -> Int? {
    switch error {
    case .scanner(_, _, let mark, _), .parser(_, _, let mark, _): return mark.line
    default: return nil
    }
  }
}

// MARK: - Reading nodes

/// A node and the field path that reached it.
struct Value {
  let node: Node
  let path: String

  var line: Int? { node.mark?.line }

  func error(_ message: String) -> ScenarioError { ScenarioError(field: path, line: line, message: message) }

  func string() throws(ScenarioError) -> String {
    guard case .scalar(let scalar) = node else { throw error("must be a text value") }
    guard scalar.string.utf8.count <= 4096 else { throw error("at most 4096 bytes") }
    return scalar.string
  }

  func bool() throws(ScenarioError) -> Bool {
    let text = try string()
    switch text {
    case "true": return true
    case "false": return false
    default: throw error("must be true or false, got '\(text)'")
    }
  }

  func integer(in range: ClosedRange<Int>) throws(ScenarioError) -> Int {
    let text = try string()
    guard let value = Int(text) else { throw error("must be a whole number, got '\(text)'") }
    guard range.contains(value) else {
      throw error("must be in \(range.lowerBound)...\(range.upperBound), got \(value)")
    }
    return value
  }

  func number(in range: ClosedRange<Double>) throws(ScenarioError) -> Double {
    let text = try string()
    guard let value = Double(text), value.isFinite else { throw error("must be a number, got '\(text)'") }
    guard range.contains(value) else {
      throw error("must be in \(formatNumber(range.lowerBound))...\(formatNumber(range.upperBound)), got \(text)")
    }
    return value
  }

  func duration(maximum: Int64, minimum: Int64 = 0) throws(ScenarioError) -> Int64 {
    let text = try string()
    guard let value = parseDurationMilliseconds(text) else {
      throw error("expected a duration such as 500ms, 5s, 1.5s, 2m or 1h, got '\(text)'")
    }
    guard value >= minimum, value <= maximum else {
      throw error("must be in \(formatDuration(minimum))...\(formatDuration(maximum)), got \(text)")
    }
    return value
  }

  func selector() throws(ScenarioError) -> NodeSelector {
    let text = try string()
    guard let selector = NodeSelector(text) else {
      throw error("expected leader, follower or a node id (n1, n2, ...), got '\(text)'")
    }
    return selector
  }

  func list() throws(ScenarioError) -> [Value] {
    guard case .sequence(let items) = node else { throw error("must be a list") }
    return items.enumerated().map { Value(node: $0.element, path: "\(path)[\($0.offset)]") }
  }

  /// A mapping of spec key paths to YAML values, in file order.
  func keyValues() throws(ScenarioError) -> [KeyValue] {
    guard case .mapping(let mapping) = node else { throw error("must be a mapping of spec key paths to values") }
    guard mapping.count <= ScenarioLimits.maximumOverrides else {
      throw error("at most \(ScenarioLimits.maximumOverrides) entries, got \(mapping.count)")
    }
    var pairs: [KeyValue] = []
    for (key, value) in mapping {
      guard case .scalar(let name) = key else { throw error("keys must be text") }
      let child = Value(node: value, path: "\(path).\(name.string)")
      switch value {
      case .scalar(let scalar):
        // Keep a quoted value a string when the spec reads it as YAML.
        let text =
          scalar.style == .plain
          ? scalar.string : "\"" + scalar.string.replacingOccurrences(of: "\"", with: "\\\"") + "\""
        pairs.append(KeyValue(name.string, text))
      default:
        throw child.error("must be a single value (write lists and mappings inline as YAML text)")
      }
    }
    return pairs
  }
}

/// A mapping's fields, every key checked against the allowed ones.
struct Fields {
  let value: Value
  private var byKey: [String: Value] = [:]

  init(_ value: Value, path: String, allowed: [String]) throws(ScenarioError) {
    self.value = value
    guard case .mapping(let mapping) = value.node else {
      throw value.error("must be a mapping with fields \(allowed.joined(separator: ", "))")
    }
    for (key, child) in mapping {
      guard case .scalar(let name) = key else { throw value.error("keys must be text") }
      let childPath = path.isEmpty ? name.string : "\(path).\(name.string)"
      guard allowed.contains(name.string) else {
        throw ScenarioError(
          field: childPath, line: key.mark?.line,
          message: "unknown field (fields here: \(allowed.joined(separator: ", ")))")
      }
      guard byKey[name.string] == nil else {
        throw ScenarioError(field: childPath, line: key.mark?.line, message: "given twice")
      }
      byKey[name.string] = Value(node: child, path: childPath)
    }
  }

  init(_ node: Node, path: String, allowed: [String]) throws(ScenarioError) {
    try self.init(Value(node: node, path: path), path: path, allowed: allowed)
  }

  subscript(_ key: String) -> Value? { byKey[key] }

  func required(_ key: String) throws(ScenarioError) -> Value {
    guard let child = byKey[key] else {
      let path = value.path.isEmpty ? key : "\(value.path).\(key)"
      throw ScenarioError(field: path, line: value.line, message: "missing (required)")
    }
    return child
  }
}
