// Writing a service spec back as the spec file format (YAML), and `teal deploy --set`'s overrides.
// The one rule: `SpecParser.parse(text: SpecWriter.yaml(spec), format: .yaml) == spec` for every
// spec the parser returns. Fields equal to the parser's defaults are left out, so the text reads like
// a spec a person wrote and defaults derived from other fields (the circuit breaker's failure
// threshold from `desiredCount`) stay derived after an override.

import TealDeploy

/// One `--set key=value`: a dotted key path into the spec document and a YAML value.
///
/// Key paths name fields as the spec file does: `desiredCount`, `task.env.VERSION`,
/// `deployment.canary.canaryPercent`, `deployment.lifecycleHooks[0].callBackDelay`. The value is
/// read as YAML: `4` is a number, `"4"` a string, `[a, b]` a list; an empty value or `null` removes
/// the field (it takes its default).
public struct SpecOverride: Hashable, Sendable, CustomStringConvertible {
  public var keyPath: String
  public var value: String

  public init(keyPath: String, value: String) {
    self.keyPath = keyPath
    self.value = value
  }

  /// `key=value` (the value may contain `=`).
  public init(parsing text: String) throws(SpecErrors) {
    guard let equals = text.firstIndex(of: "="), equals != text.startIndex else {
      throw SpecErrors(SpecError(path: "--set", message: "expected key=value, got \"\(text)\""))
    }
    self.init(keyPath: String(text[..<equals]), value: String(text[text.index(after: equals)...]))
  }

  public var description: String { "\(keyPath)=\(value)" }
}

public enum SpecWriter {
  /// `spec` in the spec file format (YAML). Parsing the text gives `spec` back, for every spec the
  /// parser returns from YAML. One exception from JSON: a string that starts with U+FEFF (a byte
  /// order mark) loses it, because Yams drops a leading one from every scalar it reads.
  public static func yaml(_ spec: ServiceSpec) -> String {
    YAMLText.render(tree(spec))
  }

  /// `spec` with `overrides` applied in order, validated by the parser's rules.
  ///
  /// Setting `deployment.strategy` also removes the sections of the other strategies (`canary`,
  /// `linear`, `steps`) unless an override of the same call sets them.
  /// - Throws: for a key path that is malformed or runs through a value that is not a mapping or a
  ///   list, or an index out of range: an error naming the key path; for a key that is not in the
  ///   spec grammar or a value the rules refuse: the parser's own errors, each with its field path
  ///   (`deployment.canary.canaryPercent: must be in 0.1...100, got 150`).
  public static func applying(_ overrides: [SpecOverride], to spec: ServiceSpec) throws(SpecErrors) -> ServiceSpec {
    var root = tree(spec)
    var strategy: String?
    var touchedSections: Set<String> = []
    for override in overrides {
      let path = try KeyPath.parse(override.keyPath)
      let value = try YAMLNode.value(of: override)
      try root.set(path.segments, to: value, keyPath: override.keyPath, at: [])
      if path.segments.count >= 2, path.segments[0] == .key("deployment"),
        case .key(let section) = path.segments[1]
      {
        if section == "strategy", path.segments.count == 2, case .plain(let text) = value { strategy = text }
        touchedSections.insert(section)
      }
    }
    if let strategy {
      let own = ["CANARY": "canary", "LINEAR": "linear", "STEPS": "steps"][strategy]
      for section in ["canary", "linear", "steps"] where section != own && !touchedSections.contains(section) {
        try root.set([.key("deployment"), .key(section)], to: .null, keyPath: "deployment.\(section)", at: [])
      }
    }
    let text = YAMLText.render(root)
    do {
      return try SpecParser.parse(text: text, format: .yaml)
    } catch {
      // Lines and columns would point into the written text, not into anything the user wrote.
      throw SpecErrors(error.errors.map { SpecError(path: $0.path, message: $0.message) })
    }
  }

  // MARK: Spec to tree

  static func tree(_ spec: ServiceSpec) -> YAMLNode {
    .object([
      ("name", .text(spec.name)),
      ("desiredCount", .integer(spec.desiredCount)),
      ("productionPort", .integer(spec.productionPort)),
      ("testPort", .integer(spec.testPort)),
      ("task", task(spec.task)),
      ("deployment", deployment(spec.deployment, desiredCount: spec.desiredCount)),
    ])
  }

  static func task(_ task: TaskSpec) -> YAMLNode {
    var fields: [(String, YAMLNode)] = [("command", .text(task.command))]
    if !task.args.isEmpty { fields.append(("args", .items(task.args.map { .quoted($0) }))) }
    if !task.env.isEmpty {
      fields.append(("env", .object(task.env.keys.sorted().map { ($0, .quoted(task.env[$0] ?? "")) })))
    }
    if task.port != 0 { fields.append(("port", .integer(task.port))) }
    let check = task.healthCheck
    var health: [(String, YAMLNode)] = []
    if check.path != "/health" { health.append(("path", .text(check.path))) }
    if check.interval != .seconds(5) { health.append(("interval", .span(check.interval))) }
    if check.timeout != .seconds(2) { health.append(("timeout", .span(check.timeout))) }
    if check.healthyThreshold != 2 { health.append(("healthyThreshold", .integer(check.healthyThreshold))) }
    if check.unhealthyThreshold != 3 { health.append(("unhealthyThreshold", .integer(check.unhealthyThreshold))) }
    fields.append(("healthCheck", .object(health)))
    return .object(fields)
  }

  static func deployment(_ configuration: DeploymentConfiguration, desiredCount: Int) -> YAMLNode {
    var fields: [(String, YAMLNode)] = [
      ("strategy", .plain(configuration.strategy.rawValue)), ("bakeTime", .span(configuration.bakeTime)),
    ]
    if let canary = configuration.canary {
      fields.append(
        (
          "canary",
          .object([("canaryPercent", .number(canary.canaryPercent)), ("canaryBakeTime", .span(canary.canaryBakeTime))])
        ))
    }
    if let linear = configuration.linear {
      fields.append(
        (
          "linear",
          .object([("stepPercent", .number(linear.stepPercent)), ("stepBakeTime", .span(linear.stepBakeTime))])
        )
      )
    }
    if let steps = configuration.steps {
      fields.append(
        (
          "steps",
          .object([
            ("percents", .items(steps.percents.map(YAMLNode.number))), ("stepBakeTime", .span(steps.stepBakeTime)),
          ])
        )
      )
    }
    if !configuration.lifecycleHooks.isEmpty {
      fields.append(("lifecycleHooks", .items(configuration.lifecycleHooks.map(hook))))
    }
    if !configuration.alarms.isEmpty { fields.append(("alarms", .items(configuration.alarms.map(alarm)))) }
    let breaker = configuration.circuitBreaker
    let defaults = CircuitBreakerConfiguration.default(desiredCount: desiredCount)
    var breakerFields: [(String, YAMLNode)] = []
    if breaker.enable != defaults.enable { breakerFields.append(("enable", .boolean(breaker.enable))) }
    if breaker.rollback != defaults.rollback { breakerFields.append(("rollback", .boolean(breaker.rollback))) }
    if breaker.failureThreshold != defaults.failureThreshold {
      breakerFields.append(("failureThreshold", .integer(breaker.failureThreshold)))
    }
    if breaker.scaleUpTimeout != defaults.scaleUpTimeout {
      breakerFields.append(("scaleUpTimeout", .span(breaker.scaleUpTimeout)))
    }
    if breaker.healthFloorGrace != defaults.healthFloorGrace {
      breakerFields.append(("healthFloorGrace", .span(breaker.healthFloorGrace)))
    }
    if !breakerFields.isEmpty { fields.append(("circuitBreaker", .object(breakerFields))) }
    if configuration.abortScaleDownDelay != .seconds(30) {
      fields.append(("abortScaleDownDelay", .span(configuration.abortScaleDownDelay)))
    }
    if let deadline = configuration.progressDeadline { fields.append(("progressDeadline", .span(deadline))) }
    return .object(fields)
  }

  static func hook(_ hook: LifecycleHookConfiguration) -> YAMLNode {
    var fields: [(String, YAMLNode)] = [("stages", .items(hook.stages.map { .plain($0.rawValue) }))]
    switch hook.action {
    case .http(let url, let timeout):
      var http: [(String, YAMLNode)] = [("url", .text(url))]
      if timeout != .seconds(30) { http.append(("timeout", .span(timeout))) }
      fields.append(("http", .object(http)))
    case .command(let argv, let timeout):
      var command: [(String, YAMLNode)] = [("argv", .items(argv.map { .quoted($0) }))]
      if timeout != .seconds(30) { command.append(("timeout", .span(timeout))) }
      fields.append(("command", .object(command)))
    case .pause:
      fields.append(("pause", .boolean(true)))
    }
    if hook.callBackDelay != .seconds(30) { fields.append(("callBackDelay", .span(hook.callBackDelay))) }
    if hook.timeoutAction != .ROLLBACK { fields.append(("timeoutAction", .plain(hook.timeoutAction.rawValue))) }
    // The parser reads whole minutes; a part minute (never from the parser) is written rounded up.
    let minutes = (hook.overallTimeout.milliseconds + 59_999) / 60_000
    if minutes != 1440 { fields.append(("timeoutInMinutes", .plain(String(minutes)))) }
    if hook.everyStep { fields.append(("everyStep", .boolean(true))) }
    if let details = hook.hookDetails, details != .null { fields.append(("hookDetails", json(details))) }
    return .object(fields)
  }

  static func alarm(_ alarm: AlarmConfiguration) -> YAMLNode {
    var fields: [(String, YAMLNode)] = [
      ("name", .text(alarm.name)), ("metric", .plain(alarm.metric.rawValue)), ("threshold", .number(alarm.threshold)),
    ]
    if alarm.window != .minutes(1) { fields.append(("window", .span(alarm.window))) }
    if alarm.evaluateDuring != AlarmConfiguration.defaultStages {
      fields.append(("evaluateDuring", .items(alarm.evaluateDuring.map { .plain($0.rawValue) })))
    }
    if alarm.minimumRequests != 1 { fields.append(("minimumRequests", .integer(alarm.minimumRequests))) }
    if alarm.evaluationPeriods != 1 { fields.append(("evaluationPeriods", .integer(alarm.evaluationPeriods))) }
    if alarm.datapointsToAlarm != 1 { fields.append(("datapointsToAlarm", .integer(alarm.datapointsToAlarm))) }
    if !alarm.rollback { fields.append(("rollback", .boolean(false))) }
    return .object(fields)
  }

  /// `hookDetails`, written in flow style throughout (`{"a": [1, "x"]}`), so that its nesting costs
  /// no indentation. Strings are quoted; numbers, booleans and null are plain, as the parser reads them.
  static func json(_ value: JSONValue) -> YAMLNode {
    switch value {
    case .null: return .null
    case .bool(let flag): return .boolean(flag)
    case .number(let number): return .number(number)
    case .string(let text): return .quoted(text)
    case .array(let items): return .list(items.map(json), flow: true)
    case .object(let members): return .object(members.map { ($0.key, json($0.value)) }, flow: true)
    }
  }
}

// MARK: - The YAML tree

/// A YAML document as the writer builds it: scalars already in their written form.
indirect enum YAMLNode {
  /// Written as is: numbers, durations, enumeration values, booleans, safe strings.
  case plain(String)
  /// Written in double quotes, escaped.
  case quoted(String)
  case null
  /// `flow`: written `[a, b]`; otherwise a list of mappings is written in block style.
  case list([YAMLNode], flow: Bool)
  case map([(key: String, value: YAMLNode)], flow: Bool)

  static func items(_ items: [YAMLNode]) -> YAMLNode { .list(items, flow: false) }
  static func object(_ pairs: [(String, YAMLNode)], flow: Bool = false) -> YAMLNode {
    .map(pairs.map { (key: $0.0, value: $0.1) }, flow: flow)
  }
  static func integer(_ value: Int) -> YAMLNode { .plain(String(value)) }
  static func number(_ value: Double) -> YAMLNode { .plain(Rules.format(value)) }
  static func span(_ value: TimeSpan) -> YAMLNode { .plain(value.description) }
  static func boolean(_ value: Bool) -> YAMLNode { .plain(value ? "true" : "false") }

  /// A string: plain when that reads back as the same string, quoted otherwise.
  static func text(_ value: String) -> YAMLNode { YAMLText.isSafePlain(value) ? .plain(value) : .quoted(value) }

  var kindName: String {
    switch self {
    case .plain, .quoted: return "a scalar"
    case .null: return "null"
    case .list: return "a list"
    case .map: return "a mapping"
    }
  }

  /// An override's value, read as YAML within `SpecLimits`.
  static func value(of override: SpecOverride) throws(SpecErrors) -> YAMLNode {
    let text = String(
      override.value.drop { $0 == " " || $0 == "\t" }.reversed().drop { $0 == " " || $0 == "\t" }.reversed())
    if text.isEmpty { return .null }
    do {
      return from(try SpecDocument.read(text, format: .yaml))
    } catch {
      throw SpecErrors(
        SpecError(
          path: override.keyPath, message: "the value \"\(override.value)\" is not YAML: \(error.error.message)"))
    }
  }

  /// The parser's tree as the writer's.
  static func from(_ node: SpecNode) -> YAMLNode {
    switch node.kind {
    case .null: return .null
    case .scalar(let text, let quoted): return quoted || !YAMLText.isSafePlain(text) ? .quoted(text) : .plain(text)
    case .list(let items): return .items(items.map(from))
    case .map(let pairs): return .object(pairs.map { ($0.key, from($0.value)) })
    }
  }

  /// Sets (or, with `.null`, removes) the value at `path` below this node. `at` is the path walked
  /// so far, for errors.
  mutating func set(_ path: [KeyPath.Segment], to value: YAMLNode, keyPath: String, at walked: [KeyPath.Segment])
    throws(SpecErrors)
  {
    guard let segment = path.first else {
      self = value
      return
    }
    let rest = Array(path.dropFirst())
    let here = KeyPath.text(walked)
    func fail(_ message: String) -> SpecErrors { SpecErrors(SpecError(path: keyPath, message: message)) }
    switch (segment, self) {
    case (.key(let key), .map(var pairs, let flow)):
      if let index = pairs.firstIndex(where: { $0.key == key }) {
        if rest.isEmpty, case .null = value {
          pairs.remove(at: index)
        } else {
          try pairs[index].value.set(rest, to: value, keyPath: keyPath, at: walked + [segment])
        }
      } else {
        if case .null = value { return }  // removing what is not there
        var child = YAMLNode.null
        try child.set(rest, to: value, keyPath: keyPath, at: walked + [segment])
        pairs.append((key: key, value: child))
      }
      self = .map(pairs, flow: flow)
    case (.key(let key), .null):
      if case .null = value, rest.isEmpty { return }
      var child = YAMLNode.null
      try child.set(rest, to: value, keyPath: keyPath, at: walked + [segment])
      self = .map([(key: key, value: child)], flow: false)
    case (.index(let index), .list(var items, let flow)):
      if index < items.count {
        if rest.isEmpty, case .null = value {
          items.remove(at: index)
        } else {
          try items[index].set(rest, to: value, keyPath: keyPath, at: walked + [segment])
        }
      } else if index == items.count {
        if case .null = value, rest.isEmpty { return }
        var child = YAMLNode.null
        try child.set(rest, to: value, keyPath: keyPath, at: walked + [segment])
        items.append(child)
      } else {
        throw fail(
          "\(here) has \(items.count) item\(items.count == 1 ? "" : "s"); index \(index) is out of range "
            + "(\(items.count) appends one)")
      }
      self = .list(items, flow: flow)
    case (.index(let index), .null):
      guard index == 0 else { throw fail("\(here) has no items; index \(index) is out of range (0 appends one)") }
      if case .null = value, rest.isEmpty { return }
      var child = YAMLNode.null
      try child.set(rest, to: value, keyPath: keyPath, at: walked + [segment])
      self = .list([child], flow: false)
    case (.key(let key), _):
      throw fail("\(here) is \(kindName), not a mapping; it has no field \(key)")
    case (.index(let index), _):
      throw fail("\(here) is \(kindName), not a list; it has no item [\(index)]")
    }
  }
}

/// `--set`'s key paths: names separated by `.`, each optionally followed by `[index]`s.
struct KeyPath {
  enum Segment: Hashable {
    case key(String)
    case index(Int)
  }

  var segments: [Segment]

  static func parse(_ text: String) throws(SpecErrors) -> KeyPath {
    func fail(_ message: String) -> SpecErrors {
      SpecErrors(SpecError(path: text.isEmpty ? "--set" : text, message: message))
    }
    guard !text.isEmpty else { throw fail("the key path is empty; expected e.g. task.env.VERSION") }
    var segments: [Segment] = []
    for part in text.split(separator: ".", omittingEmptySubsequences: false) {
      var rest = Substring(part)
      let nameEnd = rest.firstIndex(of: "[") ?? rest.endIndex
      let name = rest[..<nameEnd]
      guard !name.isEmpty else {
        throw fail("every part of a key path needs a field name (e.g. deployment.lifecycleHooks[0].stages)")
      }
      guard
        name.unicodeScalars.allSatisfy({
          $0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0) || $0 == "_" || $0 == "-")
        })
      else { throw fail("\"\(name)\" is not a field name (letters, digits, '_' and '-')") }
      segments.append(.key(String(name)))
      rest = rest[nameEnd...]
      while !rest.isEmpty {
        guard rest.first == "[", let close = rest.firstIndex(of: "]") else {
          throw fail("expected [index] after \(name), got \"\(rest)\"")
        }
        let digits = rest[rest.index(after: rest.startIndex)..<close]
        guard !digits.isEmpty, digits.count <= 6, digits.allSatisfy({ $0.isASCII && $0.isNumber }),
          let index = Int(digits)
        else { throw fail("[\(digits)] is not a list index (0, 1, ...)") }
        segments.append(.index(index))
        rest = rest[rest.index(after: close)...]
      }
    }
    return KeyPath(segments: segments)
  }

  /// `deployment.lifecycleHooks[0]`; `the document` for the root.
  static func text(_ segments: [Segment]) -> String {
    if segments.isEmpty { return "the document" }
    var out = ""
    for segment in segments {
      switch segment {
      case .key(let key): out += out.isEmpty ? key : ".\(key)"
      case .index(let index): out += "[\(index)]"
      }
    }
    return out
  }
}

// MARK: - Rendering

enum YAMLText {
  static func render(_ root: YAMLNode) -> String {
    var lines: [String] = []
    switch root {
    case .map(let pairs, flow: false) where !pairs.isEmpty: block(pairs, indent: 0, into: &lines)
    default: lines.append(inline(root))
    }
    return lines.joined(separator: "\n") + "\n"
  }

  /// A mapping in block style, one `key: value` per line at `indent`.
  private static func block(_ pairs: [(key: String, value: YAMLNode)], indent: Int, into lines: inout [String]) {
    let pad = String(repeating: " ", count: indent)
    for (key, value) in pairs {
      let written = "\(pad)\(self.key(key)):"
      switch value {
      case .map(let children, flow: false) where !children.isEmpty:
        lines.append(written)
        block(children, indent: indent + 2, into: &lines)
      case .list(let items, flow: false) where items.contains(where: \.isBlockMap):
        lines.append(written)
        for item in items {
          if case .map(let children, flow: false) = item, !children.isEmpty {
            // `- first: ...` then the other fields under it.
            var itemLines: [String] = []
            block(children, indent: indent + 4, into: &itemLines)
            let first = itemLines[0]
            itemLines[0] = pad + "  - " + first.dropFirst(indent + 4)
            lines += itemLines
          } else {
            lines.append("\(pad)  - \(inline(item))")
          }
        }
      default:
        lines.append("\(written) \(inline(value))")
      }
    }
  }

  /// A value on one line: scalars, and lists and mappings in flow style.
  static func inline(_ node: YAMLNode) -> String {
    switch node {
    case .plain(let text): return text
    case .quoted(let text): return quote(text)
    case .null: return "null"
    case .list(let items, _): return "[" + items.map(inline).joined(separator: ", ") + "]"
    case .map(let pairs, _):
      return "{" + pairs.map { "\(quote($0.key)): \(inline($0.value))" }.joined(separator: ", ") + "}"
    }
  }

  /// A block mapping key: plain when it is a simple name, quoted otherwise.
  static func key(_ key: String) -> String {
    let simple =
      !key.isEmpty
      && key.unicodeScalars.allSatisfy {
        $0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0) || $0 == "_" || $0 == "-")
      } && key.first != "-"
    return simple ? key : quote(key)
  }

  /// Whether `text` written plain reads back as the same string: letters, digits and `_./+-`, not
  /// starting with an indicator, and not one of the words the parser reads as null.
  static func isSafePlain(_ text: String) -> Bool {
    guard let first = text.unicodeScalars.first, first != "-" || text.count > 1 else { return false }
    guard !["~", "null", "Null", "NULL"].contains(text) else { return false }
    return text.unicodeScalars.allSatisfy {
      $0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0) || "_./+-".unicodeScalars.contains($0))
    }
  }

  /// `text` in double quotes, with every character YAML would not read back as itself escaped:
  /// quotes, backslashes, control characters, line breaks (NEL, U+2028, U+2029) and the
  /// non-printable (libyaml's printable set: tab, LF, 0x20...0x7E, 0x85, 0xA0...0xD7FF,
  /// 0xE000...0xFFFD but U+FEFF, and above 0xFFFF).
  static func quote(_ text: String) -> String {
    var out = "\""
    for scalar in text.unicodeScalars {
      switch scalar {
      case "\"": out += "\\\""
      case "\\": out += "\\\\"
      case "\n": out += "\\n"
      case "\t": out += "\\t"
      case "\r": out += "\\r"
      default:
        let value = scalar.value
        let printable =
          (0x20...0x7E).contains(value) || (0xA0...0xD7FF).contains(value)
          || ((0xE000...0xFFFD).contains(value) && value != 0xFEFF) || value > 0xFFFF
        let isBreak = value == 0x2028 || value == 0x2029
        if printable && !isBreak {
          out.unicodeScalars.append(scalar)
        } else if value <= 0xFF {
          out += "\\x" + hex(value, digits: 2)
        } else {
          out += "\\u" + hex(value, digits: 4)
        }
      }
    }
    return out + "\""
  }

  private static func hex(_ value: UInt32, digits: Int) -> String {
    let text = String(value, radix: 16, uppercase: true)
    return String(repeating: "0", count: max(0, digits - text.count)) + text
  }
}

extension YAMLNode {
  var isBlockMap: Bool {
    if case .map(let pairs, flow: false) = self { return !pairs.isEmpty }
    return false
  }
}
