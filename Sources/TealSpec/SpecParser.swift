// Parsing and validating service specs from YAML or JSON. Both formats go through one tree
// (`SpecNode`) and one set of rules, so a JSON spec and its YAML twin give the same result and the
// same errors. Every rule reports into one list, so a file's errors come back all at once, each
// naming the field path, the rule and (when known) the line and column.

import TealDeploy

// MARK: - Entry points

/// The one entry point for specs from outside: files on the command line and specs that clients
/// submit to a node's API. Never crashes and never hangs on any input: `SpecLimits` bound size,
/// nesting, aliases and values before and while the text is read.
public enum SpecParser {
  /// Parses and validates `text` as `format`.
  /// - Throws: every error found, in document order (at most `SpecLimits.maximumErrors`).
  public static func parse(text: String, format: SpecFormat) throws(SpecErrors) -> ServiceSpec {
    let root: SpecNode
    do {
      root = try SpecDocument.read(text, format: format)
    } catch {
      throw SpecErrors(error.error)
    }
    let diagnostics = Diagnostics()
    let spec = Rules(diagnostics).service(root)
    guard let spec, diagnostics.errors.isEmpty else {
      let errors = diagnostics.errors
      precondition(!errors.isEmpty, "spec rules returned no spec and no error")
      throw SpecErrors(errors)
    }
    return spec
  }

  /// Parses the text of the file `fileName` (JSON when the name ends in `.json`, YAML otherwise);
  /// every error names the file. No I/O: the caller reads the file.
  public static func parse(_ text: String, fileName: String) throws(SpecErrors) -> ServiceSpec {
    do {
      return try parse(text: text, format: SpecFormat(fileName: fileName))
    } catch {
      throw error.inFile(fileName)
    }
  }
}

// MARK: - Diagnostics

/// Collects the errors of one document, bounded by `SpecLimits.maximumErrors`.
final class Diagnostics {
  private(set) var errors: [SpecError] = []
  private var dropped = 0

  func report(_ path: String, _ message: String, at node: SpecNode?) {
    report(path, message, location: node?.location)
  }

  func report(_ path: String, _ message: String, location: SpecLocation?) {
    guard errors.count < SpecLimits.maximumErrors else {
      dropped += 1
      errors[errors.count - 1] = SpecError(
        path: "(document)", message: "\(dropped + 1) more errors not shown (the limit is \(SpecLimits.maximumErrors))")
      return
    }
    errors.append(SpecError(path: path, message: message, location: location))
  }
}

/// A reader of one field type: the value, or nil after reporting why not.
typealias Read<T> = (SpecNode, String) -> T?

/// A mapping being read. Reports every unknown and every repeated field up front.
struct ObjectReader {
  let path: String
  let node: SpecNode
  private let fields: [String: SpecNode]
  private let diagnostics: Diagnostics

  init?(_ node: SpecNode, path: String, allowed: [String], _ diagnostics: Diagnostics) {
    guard case .map(let pairs) = node.kind else {
      diagnostics.report(
        path, "must be a mapping with fields \(allowed.joined(separator: ", ")), got \(node.kindName)", at: node)
      return nil
    }
    self.path = path
    self.node = node
    self.diagnostics = diagnostics
    var fields: [String: SpecNode] = [:]
    for pair in pairs {
      let childPath = Rules.join(path, pair.key)
      if !allowed.contains(pair.key) {
        diagnostics.report(
          childPath, "unknown field (allowed here: \(allowed.joined(separator: ", ")))", location: pair.location)
      } else if fields[pair.key] != nil {
        diagnostics.report(childPath, "is given more than once", location: pair.location)
      } else {
        fields[pair.key] = pair.value
      }
    }
    self.fields = fields
  }

  func childPath(_ key: String) -> String { Rules.join(path, key) }

  func node(_ key: String) -> SpecNode? { fields[key] }

  func has(_ key: String) -> Bool {
    guard let node = fields[key] else { return false }
    if case .null = node.kind { return false }
    return true
  }

  /// The value of `key`; nil when absent, null or invalid (reported).
  func optional<T>(_ key: String, _ read: Read<T>) -> T? {
    guard let node = fields[key] else { return nil }
    if case .null = node.kind { return nil }
    return read(node, childPath(key))
  }

  /// Like `optional`, but reports a missing value.
  func required<T>(_ key: String, _ read: Read<T>) -> T? {
    guard has(key) else {
      diagnostics.report(childPath(key), "is required", at: fields[key] ?? node)
      return nil
    }
    return optional(key, read)
  }
}

// MARK: - Rules

/// The rules, one function per field type, reporting into `diagnostics`.
struct Rules {
  let diagnostics: Diagnostics

  init(_ diagnostics: Diagnostics) { self.diagnostics = diagnostics }

  /// `path.key`; keys that would not read as one path segment are quoted: `path["a b"]`.
  static func join(_ path: String, _ key: String) -> String {
    let plain =
      !key.isEmpty && key.utf8.count <= 64
      && key.unicodeScalars.allSatisfy {
        $0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0) || $0 == "_" || $0 == "-")
      }
    let shown = key.count > 64 ? String(key.prefix(64)) + "..." : key
    let segment = plain ? key : "[\"\(shown.replacingOccurrences(of: "\"", with: "\\\""))\"]"
    if path == "(document)" { return plain ? key : "(document)" + segment }
    return plain ? "\(path).\(key)" : path + segment
  }

  func fail<T>(_ path: String, _ message: String, _ node: SpecNode?) -> T? {
    diagnostics.report(path, message, at: node)
    return nil
  }

  func object(_ node: SpecNode, _ path: String, _ allowed: [String]) -> ObjectReader? {
    ObjectReader(node, path: path, allowed: allowed, diagnostics)
  }

  // MARK: Scalars

  func string(_ node: SpecNode, _ path: String) -> String? {
    guard case .scalar(let text, _) = node.kind else {
      return fail(path, "must be a string, got \(node.kindName)", node)
    }
    return text
  }

  func nonEmptyString(_ node: SpecNode, _ path: String) -> String? {
    guard let text = string(node, path) else { return nil }
    guard !text.isEmpty else { return fail(path, "must not be empty", node) }
    return text
  }

  /// A decimal integer. Digits that do not fit in 64 bits are out of range, not "not an integer".
  func integer(in range: ClosedRange<Int>) -> Read<Int> {
    { node, path in
      guard case .scalar(let text, let quoted) = node.kind, !quoted, let digits = Self.decimalDigits(text) else {
        return fail(path, "must be an integer, got \(Self.describe(node))", node)
      }
      guard let value = Int(digits), range.contains(value) else {
        return fail(path, "must be in \(range), got \(Self.describe(node))", node)
      }
      return value
    }
  }

  /// `text` when it is an optionally signed run of decimal digits.
  static func decimalDigits(_ text: String) -> String? {
    let body = text.first == "-" || text.first == "+" ? text.dropFirst() : Substring(text)
    guard !body.isEmpty, body.utf8.allSatisfy({ (0x30...0x39).contains($0) }) else { return nil }
    return text.first == "+" ? String(body) : text
  }

  func number(_ node: SpecNode, _ path: String) -> Double? {
    guard case .scalar(let text, let quoted) = node.kind, !quoted, Self.isDecimalNumber(text), let value = Double(text)
    else { return fail(path, "must be a number, got \(Self.describe(node))", node) }
    guard value.isFinite else { return fail(path, "is out of range, got \(Self.describe(node))", node) }
    return value
  }

  /// Decimal notation only: `12`, `-0.5`, `1e3`; not YAML's `.inf`, `0x1f` or `1_000`.
  static func isDecimalNumber(_ text: String) -> Bool {
    var bytes = Substring(text).utf8[...]
    func digits() -> Int {
      let count = bytes.prefix { (0x30...0x39).contains($0) }.count
      bytes = bytes.dropFirst(count)
      return count
    }
    if bytes.first == 0x2B || bytes.first == 0x2D { bytes = bytes.dropFirst() }
    var mantissa = digits()
    if bytes.first == 0x2E {
      bytes = bytes.dropFirst()
      mantissa += digits()
    }
    guard mantissa > 0 else { return false }
    if bytes.first == 0x65 || bytes.first == 0x45 {
      bytes = bytes.dropFirst()
      if bytes.first == 0x2B || bytes.first == 0x2D { bytes = bytes.dropFirst() }
      guard digits() > 0 else { return false }
    }
    return bytes.isEmpty
  }

  /// A percentage in `range` in steps of 0.1 (ECS's granularity).
  func percent(in range: ClosedRange<Double>) -> Read<Double> {
    { node, path in
      guard let value = number(node, path) else { return nil }
      guard range.contains(value) else {
        return fail(
          path,
          "must be in \(Self.format(range.lowerBound))...\(Self.format(range.upperBound)), got \(Self.format(value))",
          node)
      }
      let tenths = value * 10
      guard abs(tenths - tenths.rounded()) < 1e-6 else {
        return fail(path, "must be a multiple of 0.1, got \(Self.format(value))", node)
      }
      return value
    }
  }

  func boolean(_ node: SpecNode, _ path: String) -> Bool? {
    guard case .scalar(let text, let quoted) = node.kind, !quoted, text == "true" || text == "false" else {
      return fail(path, "must be true or false, got \(Self.describe(node))", node)
    }
    return text == "true"
  }

  /// `<digits><unit>` with unit `ms`, `s`, `m` or `h`. A well-formed duration outside `range` is
  /// out of range (`1000h`), not "not a duration".
  func duration(in range: ClosedRange<TimeSpan>) -> Read<TimeSpan> {
    { node, path in
      guard case .scalar(let text, _) = node.kind, let span = Self.spanOrOverflow(text) else {
        return fail(path, "must be a duration like 500ms, 30s, 5m or 1h, got \(Self.describe(node))", node)
      }
      guard let span, range.contains(span) else {
        return fail(path, "must be in \(range.lowerBound)...\(range.upperBound), got \(text)", node)
      }
      return span
    }
  }

  /// nil: not a duration; `.some(nil)`: a duration too large to represent.
  static func spanOrOverflow(_ text: String) -> TimeSpan?? {
    let units: [(suffix: String, factor: Int64)] = [("ms", 1), ("s", 1000), ("m", 60_000), ("h", 3_600_000)]
    for unit in units where text.hasSuffix(unit.suffix) {
      let digits = text.dropLast(unit.suffix.count)
      guard !digits.isEmpty, digits.utf8.allSatisfy({ (0x30...0x39).contains($0) }) else { return nil }
      guard digits.count <= 12, let value = Int64(digits) else { return .some(nil) }
      return .some(TimeSpan(milliseconds: value * unit.factor))
    }
    return nil
  }

  func enumeration<E: RawRepresentable & CaseIterable>(_ type: E.Type) -> Read<E> where E.RawValue == String {
    { node, path in
      guard let text = string(node, path) else { return nil }
      guard let value = E(rawValue: text) else {
        let allowed = E.allCases.map(\.rawValue).joined(separator: ", ")
        return fail(path, "must be one of \(allowed), got \(text)", node)
      }
      return value
    }
  }

  /// A list whose every element is read; nil when any element is invalid (all are reported).
  func list<T>(_ element: @escaping Read<T>) -> Read<[T]> {
    { node, path in
      guard case .list(let items) = node.kind else { return fail(path, "must be a list, got \(node.kindName)", node) }
      var values: [T] = []
      var valid = true
      for (index, item) in items.enumerated() {
        if let value = element(item, "\(path)[\(index)]") { values.append(value) } else { valid = false }
      }
      return valid ? values : nil
    }
  }

  /// A list of distinct stages; `hookable` also requires every stage to be hookable.
  func stages(hookable: Bool) -> Read<[LifecycleStage]> {
    { node, path in
      guard let stages = list(enumeration(LifecycleStage.self))(node, path) else { return nil }
      guard !stages.isEmpty else { return fail(path, "must name at least one stage", node) }
      var valid = true
      for (index, stage) in stages.enumerated() {
        let item: SpecNode? = if case .list(let items) = node.kind { items[index] } else { nil }
        if hookable && !stage.isHookable {
          diagnostics.report(
            "\(path)[\(index)]", "\(stage) is not hookable (hooks cannot run at SCALE_UP, BAKE_TIME or CLEAN_UP)",
            at: item)
          valid = false
        } else if stages.firstIndex(of: stage) != index {
          diagnostics.report("\(path)[\(index)]", "repeats stage \(stage)", at: item)
          valid = false
        }
      }
      return valid ? stages : nil
    }
  }

  static func describe(_ node: SpecNode) -> String {
    switch node.kind {
    case .scalar(let text, let quoted):
      let shown = text.count > 40 ? String(text.prefix(40)) + "..." : text
      return quoted ? "\"\(shown)\"" : shown
    default: return node.kindName
    }
  }

  static func format(_ value: Double) -> String {
    value == value.rounded() && abs(value) < 1e15 ? String(Int64(value)) : String(value)
  }
}
