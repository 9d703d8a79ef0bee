// Absolute time and durations for the pure deployment core. TealDeploy never reads a clock: every
// input carries `now` as an `Instant`, and every deadline it keeps is an `Instant` in its state.

/// A point in time: milliseconds since the Unix epoch. The shell converts its clock into this.
///
/// Invariant: deadlines stored in a deployment's state are `Instant`s, never relative delays, so a
/// copy of the state resumed on another node keeps the same deadlines.
public struct Instant: Codable, Hashable, Comparable, Sendable, CustomStringConvertible {
  /// Milliseconds since 1970-01-01T00:00:00Z.
  public var millisecondsSinceEpoch: Int64

  public init(millisecondsSinceEpoch: Int64) {
    self.millisecondsSinceEpoch = millisecondsSinceEpoch
  }

  public static func < (lhs: Instant, rhs: Instant) -> Bool {
    lhs.millisecondsSinceEpoch < rhs.millisecondsSinceEpoch
  }

  public static func + (lhs: Instant, rhs: TimeSpan) -> Instant {
    Instant(millisecondsSinceEpoch: lhs.millisecondsSinceEpoch &+ rhs.milliseconds)
  }

  /// The span from `rhs` to `lhs` (negative when `lhs` is earlier).
  public static func - (lhs: Instant, rhs: Instant) -> TimeSpan {
    TimeSpan(milliseconds: lhs.millisecondsSinceEpoch &- rhs.millisecondsSinceEpoch)
  }

  public var description: String { "@\(millisecondsSinceEpoch)ms" }

  public init(from decoder: any Decoder) throws {
    millisecondsSinceEpoch = try decoder.singleValueContainer().decode(Int64.self)
  }

  public func encode(to encoder: any Encoder) throws {
    var container = encoder.singleValueContainer()
    try container.encode(millisecondsSinceEpoch)
  }
}

/// A non-calendar duration in milliseconds, written in specs as `500ms`, `30s`, `5m` or `1h`.
public struct TimeSpan: Codable, Hashable, Comparable, Sendable, CustomStringConvertible {
  public var milliseconds: Int64

  public init(milliseconds: Int64) { self.milliseconds = milliseconds }

  public static func milliseconds(_ value: Int64) -> TimeSpan { TimeSpan(milliseconds: value) }
  public static func seconds(_ value: Int64) -> TimeSpan { TimeSpan(milliseconds: value * 1000) }
  public static func minutes(_ value: Int64) -> TimeSpan { TimeSpan(milliseconds: value * 60_000) }
  public static func hours(_ value: Int64) -> TimeSpan { TimeSpan(milliseconds: value * 3_600_000) }
  public static let zero = TimeSpan(milliseconds: 0)

  public static func < (lhs: TimeSpan, rhs: TimeSpan) -> Bool { lhs.milliseconds < rhs.milliseconds }
  public static func + (lhs: TimeSpan, rhs: TimeSpan) -> TimeSpan {
    TimeSpan(milliseconds: lhs.milliseconds &+ rhs.milliseconds)
  }

  /// The canonical spelling: the largest unit that divides the value exactly (`90s`, `5m`, `250ms`).
  public var description: String {
    if milliseconds != 0 && milliseconds % 3_600_000 == 0 { return "\(milliseconds / 3_600_000)h" }
    if milliseconds != 0 && milliseconds % 60_000 == 0 { return "\(milliseconds / 60_000)m" }
    if milliseconds % 1000 == 0 { return "\(milliseconds / 1000)s" }
    return "\(milliseconds)ms"
  }

  /// Parses `<digits><unit>` with unit `ms`, `s`, `m` or `h`; nil for anything else (no sign, no
  /// fractions, no spaces, at most 30 days so that arithmetic cannot overflow).
  public init?(parsing text: String) {
    let units: [(suffix: String, factor: Int64)] = [("ms", 1), ("s", 1000), ("m", 60_000), ("h", 3_600_000)]
    for unit in units where text.hasSuffix(unit.suffix) {
      let digits = text.dropLast(unit.suffix.count)
      guard !digits.isEmpty, digits.count <= 9, digits.allSatisfy({ $0.isASCII && $0.isNumber }),
        let value = Int64(digits)
      else { return nil }
      let total = value * unit.factor
      guard total <= 30 * 24 * 3_600_000 else { return nil }
      self.milliseconds = total
      return
    }
    return nil
  }

  public init(from decoder: any Decoder) throws {
    milliseconds = try decoder.singleValueContainer().decode(Int64.self)
  }

  public func encode(to encoder: any Encoder) throws {
    var container = encoder.singleValueContainer()
    try container.encode(milliseconds)
  }
}

extension Instant {
  /// `message` with every instant written as `@<milliseconds>ms` (as `description` writes them)
  /// replaced by `render(instant)`: the engine's history lines keep the raw form, readers choose
  /// how to show it (an offset in `teal spec plan`, a UTC time in the cluster's events).
  public static func rewritingInstants(in message: String, _ render: (Instant) -> String) -> String {
    var output = ""
    var rest = Substring(message)
    while let at = rest.firstIndex(of: "@") {
      output += rest[..<at]
      let digits = rest[rest.index(after: at)...].prefix { $0.isNumber }
      let afterDigits = rest.index(at, offsetBy: digits.count + 1)
      if !digits.isEmpty, rest[afterDigits...].hasPrefix("ms"), let value = Int64(digits) {
        output += render(Instant(millisecondsSinceEpoch: value))
        rest = rest[rest.index(afterDigits, offsetBy: 2)...]
      } else {
        output += "@"
        rest = rest[rest.index(after: at)...]
      }
    }
    return output + rest
  }
}
