// Time as the replicated log knows it. ClusterState never reads a clock: every entry carries its
// proposer's `now`, and the state keeps `logTime = max(logTime, stamp.now)`, so log time never runs
// backwards and every replica agrees on it.

import TealWire

/// A point in log time: milliseconds since 1970-01-01T00:00:00Z.
public struct LogTime: Codable, Hashable, Comparable, Sendable, CustomStringConvertible {
  public var millisecondsSinceEpoch: Int64

  public init(millisecondsSinceEpoch: Int64) {
    self.millisecondsSinceEpoch = millisecondsSinceEpoch
  }

  /// The epoch itself: the log time of a state that has applied nothing.
  public static let zero = LogTime(millisecondsSinceEpoch: 0)

  public static func < (lhs: LogTime, rhs: LogTime) -> Bool {
    lhs.millisecondsSinceEpoch < rhs.millisecondsSinceEpoch
  }

  /// `self` plus `milliseconds` (saturating, so a bogus far-future stamp cannot trap).
  public func adding(milliseconds: Int64) -> LogTime {
    let (sum, overflow) = millisecondsSinceEpoch.addingReportingOverflow(milliseconds)
    return LogTime(millisecondsSinceEpoch: overflow ? (milliseconds > 0 ? .max : .min) : sum)
  }

  public var description: String { iso8601 }

  /// ISO-8601 UTC with milliseconds, e.g. `2026-12-01T08:10:30.123Z` (proleptic Gregorian calendar,
  /// computed without Foundation so every platform prints the same text).
  public var iso8601: String {
    let milliseconds = millisecondsSinceEpoch
    var days = milliseconds / 86_400_000
    var remainder = milliseconds % 86_400_000
    if remainder < 0 {
      remainder += 86_400_000
      days -= 1
    }
    // Howard Hinnant's civil_from_days.
    let shifted = days + 719_468
    let era = (shifted >= 0 ? shifted : shifted - 146_096) / 146_097
    let dayOfEra = shifted - era * 146_097
    let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36_524 - dayOfEra / 146_096) / 365
    let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
    let monthIndex = (5 * dayOfYear + 2) / 153
    let day = dayOfYear - (153 * monthIndex + 2) / 5 + 1
    let month = monthIndex < 10 ? monthIndex + 3 : monthIndex - 9
    let year = yearOfEra + era * 400 + (month <= 2 ? 1 : 0)
    func pad(_ value: Int64, _ width: Int) -> String {
      let text = String(value)
      return String(repeating: "0", count: max(0, width - text.count)) + text
    }
    return "\(pad(year, 4))-\(pad(month, 2))-\(pad(day, 2))T\(pad(remainder / 3_600_000, 2)):"
      + "\(pad(remainder / 60_000 % 60, 2)):\(pad(remainder / 1000 % 60, 2)).\(pad(remainder % 1000, 3))Z"
  }

  public init(from decoder: any Decoder) throws {
    millisecondsSinceEpoch = try decoder.singleValueContainer().decode(Int64.self)
  }

  public func encode(to encoder: any Encoder) throws {
    var container = encoder.singleValueContainer()
    try container.encode(millisecondsSinceEpoch)
  }
}

/// Who proposed an entry, when and in which term: put on every entry by its proposer.
///
/// `now` is the proposer's wall clock (the node's `NodeClock`); `term` is the Raft term the proposer
/// believed current. A leader-only command whose stamp term differs from the term of the entry that
/// carries it is rejected on apply (it was derived from a former leader's view).
public struct CommandStamp: Codable, Hashable, Sendable {
  public var now: LogTime
  public var node: NodeID
  public var term: UInt64

  public init(now: LogTime, node: NodeID, term: UInt64) {
    self.now = now
    self.node = node
    self.term = term
  }
}
