// A small, strict parser of the Prometheus text exposition format (version 0.0.4), for tests of
// `/metrics`: it rejects what Prometheus would reject (bad names, bad escapes, duplicate series, a
// TYPE after samples, interleaved families) and checks each histogram's buckets against its
// `_sum` and `_count`.

/// One parsed exposition.
public struct PrometheusExposition: Sendable {
  public struct Sample: Sendable, Hashable {
    public var name: String
    public var labels: [String: String]
    public var value: Double
  }

  public struct Family: Sendable {
    public var name: String
    /// counter, gauge, histogram, summary or untyped.
    public var type: String
    public var help: String?
    public var samples: [Sample] = []
  }

  /// Families by name, in the order they appeared in `familyOrder`.
  public private(set) var families: [String: Family] = [:]
  public private(set) var familyOrder: [String] = []

  /// The value of the one sample named `name` whose labels are exactly `labels`.
  public func value(_ name: String, _ labels: [String: String] = [:]) -> Double? {
    self.allSamples.first { $0.name == name && $0.labels == labels }?.value
  }

  /// The sum of every sample named `name` whose labels include `matching`.
  public func sum(_ name: String, matching: [String: String] = [:]) -> Double {
    self.allSamples.filter { sample in
      sample.name == name && matching.allSatisfy { sample.labels[$0.key] == $0.value }
    }.reduce(0) { $0 + $1.value }
  }

  /// Every sample named `name` whose labels include `matching`.
  public func samples(_ name: String, matching: [String: String] = [:]) -> [Sample] {
    self.allSamples.filter { sample in
      sample.name == name && matching.allSatisfy { sample.labels[$0.key] == $0.value }
    }
  }

  public var allSamples: [Sample] { self.familyOrder.flatMap { self.families[$0]?.samples ?? [] } }

  /// Parses `text`; throws ``PrometheusTextError`` naming the line and what is wrong.
  public init(parsing text: String) throws(PrometheusTextError) {
    var parser = Parser()
    var lineNumber = 0
    for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
      lineNumber += 1
      do throws(PrometheusTextError.Problem) { try parser.consume(Substring(line)) } catch {
        throw PrometheusTextError(line: lineNumber, text: String(line), problem: error)
      }
    }
    guard text.isEmpty || text.hasSuffix("\n") else {
      throw PrometheusTextError(line: lineNumber, text: "", problem: .init("the exposition must end with a line feed"))
    }
    do throws(PrometheusTextError.Problem) { try parser.finish() } catch {
      throw PrometheusTextError(line: lineNumber, text: "", problem: error)
    }
    self.families = parser.families
    self.familyOrder = parser.order
  }
}

public struct PrometheusTextError: Error, CustomStringConvertible, Sendable {
  public struct Problem: Error, Sendable {
    public var message: String
    init(_ message: String) { self.message = message }
  }

  public var line: Int
  public var text: String
  public var problem: Problem

  public var description: String { "line \(self.line) ('\(self.text)'): \(self.problem.message)" }
}

private struct Parser {
  var families: [String: PrometheusExposition.Family] = [:]
  var order: [String] = []
  /// The family whose samples came last (samples of one family must be contiguous).
  var current: String?
  var finishedFamilies: Set<String> = []
  var seenSeries: Set<String> = []

  mutating func consume(_ line: Substring) throws(PrometheusTextError.Problem) {
    if line.isEmpty { return }
    if line.hasPrefix("#") {
      let parts = line.dropFirst().drop { $0 == " " }
      if parts.hasPrefix("HELP ") {
        let rest = parts.dropFirst(5)
        let name = rest.prefix { $0 != " " }
        try checkMetricName(name)
        let help = try unescape(rest.dropFirst(name.count).drop { $0 == " " }, allowQuote: false)
        var family = try family(String(name), declaring: true)
        guard family.help == nil else { throw .init("a second HELP for \(name)") }
        family.help = help
        self.families[String(name)] = family
      } else if parts.hasPrefix("TYPE ") {
        let fields = parts.dropFirst(5).split(separator: " ", omittingEmptySubsequences: true)
        guard fields.count == 2 else { throw .init("TYPE needs a name and a type") }
        try checkMetricName(fields[0])
        guard ["counter", "gauge", "histogram", "summary", "untyped"].contains(fields[1]) else {
          throw .init("unknown type \(fields[1])")
        }
        var family = try family(String(fields[0]), declaring: true)
        guard family.type == "untyped", family.samples.isEmpty, !typed.contains(family.name) else {
          throw .init("TYPE of \(fields[0]) after its samples or a second time")
        }
        family.type = String(fields[1])
        typed.insert(family.name)
        self.families[family.name] = family
      }
      return  // any other comment is ignored
    }
    try sample(line)
  }

  var typed: Set<String> = []

  /// The family `name` (creating it); a family whose samples ended may not take more lines.
  mutating func family(_ name: String, declaring: Bool) throws(PrometheusTextError.Problem)
    -> PrometheusExposition.Family
  {
    if let family = self.families[name] {
      guard !self.finishedFamilies.contains(name) else { throw .init("lines of \(name) are not contiguous") }
      return family
    }
    let family = PrometheusExposition.Family(name: name, type: "untyped")
    self.families[name] = family
    self.order.append(name)
    return family
  }

  mutating func sample(_ line: Substring) throws(PrometheusTextError.Problem) {
    var rest = line[...]
    let name = rest.prefix { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "_" || $0 == ":") }
    try checkMetricName(name)
    rest = rest.dropFirst(name.count)
    var labels: [String: String] = [:]
    if rest.first == "{" {
      rest = rest.dropFirst()
      while true {
        rest = rest.drop { $0 == " " }
        if rest.first == "}" {
          rest = rest.dropFirst()
          break
        }
        let labelName = rest.prefix { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "_") }
        guard let first = labelName.first, !first.isNumber else { throw .init("bad label name") }
        guard !labelName.hasPrefix("__") else { throw .init("label names starting with __ are reserved") }
        rest = rest.dropFirst(labelName.count)
        guard rest.first == "=" else { throw .init("expected = after label \(labelName)") }
        rest = rest.dropFirst()
        guard rest.first == "\"" else { throw .init("label values are quoted") }
        rest = rest.dropFirst()
        var raw = ""
        var escaped = false
        var closed = false
        while let character = rest.first {
          rest = rest.dropFirst()
          if escaped {
            switch character {
            case "\\": raw.append("\\")
            case "\"": raw.append("\"")
            case "n": raw.append("\n")
            default: throw .init("bad escape \\\(character) in a label value")
            }
            escaped = false
          } else if character == "\\" {
            escaped = true
          } else if character == "\"" {
            closed = true
            break
          } else {
            raw.append(character)
          }
        }
        guard closed else { throw .init("unterminated label value") }
        guard labels.updateValue(raw, forKey: String(labelName)) == nil else {
          throw .init("label \(labelName) twice")
        }
        rest = rest.drop { $0 == " " }
        if rest.first == "," {
          rest = rest.dropFirst()
        } else if rest.first != "}" {
          throw .init("expected , or } after a label")
        }
      }
    }
    guard rest.first == " " else { throw .init("expected a space before the value") }
    let fields = rest.split(separator: " ", omittingEmptySubsequences: true)
    guard fields.count == 1 || fields.count == 2 else { throw .init("expected a value and an optional timestamp") }
    guard let value = parseValue(fields[0]) else { throw .init("bad value \(fields[0])") }
    if fields.count == 2, Int64(fields[1]) == nil { throw .init("bad timestamp \(fields[1])") }

    let familyName = familyOf(String(name))
    var family = try family(familyName, declaring: false)
    if let current, current != familyName { self.finishedFamilies.insert(current) }
    self.current = familyName
    let key =
      String(name) + "{"
      + labels.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(
        separator: "\u{0}") + "}"
    guard self.seenSeries.insert(key).inserted else { throw .init("a second sample of the same series") }
    switch family.type {
    case "counter":
      guard value >= 0 || value.isNaN else { throw .init("a counter below 0") }
    case "histogram":
      if name.hasSuffix("_bucket") {
        guard let le = labels["le"], parseValue(Substring(le)) != nil else {
          throw .init("a histogram bucket needs an le label")
        }
      } else if labels["le"] != nil {
        throw .init("only _bucket samples have le")
      }
    default: break
    }
    family.samples.append(PrometheusExposition.Sample(name: String(name), labels: labels, value: value))
    self.families[familyName] = family
  }

  /// X for X_bucket, X_sum, X_count when X is a declared histogram (or summary); else the name.
  func familyOf(_ name: String) -> String {
    for suffix in ["_bucket", "_sum", "_count"] where name.hasSuffix(suffix) {
      let base = String(name.dropLast(suffix.count))
      if let family = self.families[base], family.type == "histogram" || family.type == "summary" { return base }
    }
    return name
  }

  func finish() throws(PrometheusTextError.Problem) {
    for name in self.order {
      guard let family = self.families[name], family.type == "histogram" else { continue }
      try checkHistogram(family)
    }
  }

  /// Per label set: buckets ascending in le and cumulative, a +Inf bucket equal to _count, a _sum.
  func checkHistogram(_ family: PrometheusExposition.Family) throws(PrometheusTextError.Problem) {
    var groups: [[String: String]: (buckets: [(Double, Double)], sum: Double?, count: Double?)] = [:]
    for sample in family.samples {
      var labels = sample.labels
      labels["le"] = nil
      var group = groups[labels] ?? ([], nil, nil)
      if sample.name == family.name + "_bucket" {
        group.buckets.append((parseValue(Substring(sample.labels["le"] ?? "")) ?? .nan, sample.value))
      } else if sample.name == family.name + "_sum" {
        group.sum = sample.value
      } else if sample.name == family.name + "_count" {
        group.count = sample.value
      } else {
        throw .init("\(sample.name) is not a sample of histogram \(family.name)")
      }
      groups[labels] = group
    }
    for (labels, group) in groups {
      let sorted = group.buckets.sorted { $0.0 < $1.0 }
      guard sorted.map(\.0) == group.buckets.map(\.0) else { throw .init("\(family.name)\(labels): le not ascending") }
      guard let last = sorted.last, last.0 == .infinity else { throw .init("\(family.name)\(labels): no +Inf bucket") }
      for index in sorted.indices.dropFirst() where sorted[index].1 < sorted[index - 1].1 {
        throw .init("\(family.name)\(labels): buckets are not cumulative")
      }
      guard let count = group.count, count == last.1 else {
        throw .init("\(family.name)\(labels): _count is missing or differs from the +Inf bucket")
      }
      guard let sum = group.sum, sum >= 0 || count == 0 else { throw .init("\(family.name)\(labels): no _sum") }
    }
  }
}

private func checkMetricName(_ name: Substring) throws(PrometheusTextError.Problem) {
  guard let first = name.first, !first.isNumber,
    name.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "_" || $0 == ":") })
  else { throw .init("bad metric name '\(name)'") }
}

private func parseValue(_ text: Substring) -> Double? {
  switch text {
  case "+Inf", "Inf": return .infinity
  case "-Inf": return -.infinity
  case "NaN": return .nan
  default: return Double(text)
  }
}

/// HELP text escapes: `\\` and `\n` (and, in label values, `\"`).
private func unescape(_ text: Substring, allowQuote: Bool) throws(PrometheusTextError.Problem) -> String {
  var out = ""
  var escaped = false
  for character in text {
    if escaped {
      switch character {
      case "\\": out.append("\\")
      case "n": out.append("\n")
      case "\"" where allowQuote: out.append("\"")
      default: throw .init("bad escape \\\(character)")
      }
      escaped = false
    } else if character == "\\" {
      escaped = true
    } else {
      out.append(character)
    }
  }
  guard !escaped else { throw .init("a trailing backslash") }
  return out
}
