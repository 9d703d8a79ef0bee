// The recorded history of a Jepsen-style run: every client operation on a variable with its
// invocation and completion times (open when the client never learned the outcome), the faults the
// nemesis injected, and what the run observed of its deployments. Plain Codable values, written to
// and read from JSON (Docs/BENCHMARKS.md, "Jepsen-style test").

import Foundation

/// One client operation on one variable (a register): a read, a blind write, or a compare-and-set.
public struct JepsenOperation: Codable, Sendable, Hashable, CustomStringConvertible {
  public enum Kind: String, Codable, Sendable, Hashable {
    /// `GET /v1/variables/{key}` (`stale`: with `?stale=true`).
    case read
    /// `PUT /v1/variables/{key}` without `?cas`.
    case write
    /// `PUT /v1/variables/{key}?cas=expectedVersion`.
    case cas
  }

  /// What the client learned.
  public enum Outcome: String, Codable, Sendable, Hashable {
    /// The operation took effect (a read: returned `readValue` at `version`).
    case ok
    /// It certainly did not take effect (refused before it was proposed, or a compare-and-set
    /// that found `version` instead of `expectedVersion`).
    case fail
    /// Unknown: a timeout or an `outcome_unknown`. The operation may take effect at any time after
    /// its invocation, or never (an open end: `completedAt` is nil).
    case info
  }

  /// Unique within a history.
  public var id: Int
  /// The client (a logical process: one operation at a time).
  public var process: Int
  /// The node whose API the request went to.
  public var node: String
  public var key: String
  public var kind: Kind
  /// A write's or compare-and-set's new value (unique per history, so that a read names its write).
  public var value: String?
  /// A compare-and-set's expected version (0: only if the variable does not exist).
  public var expectedVersion: UInt64?
  /// The value the client had read at `expectedVersion` (nil: none, or not known).
  public var expectedValue: String?
  /// A read with `?stale=true` (served from the node's own state, not linearizable).
  public var stale: Bool
  /// Nanoseconds since the start of the run (one monotonic clock for every client).
  public var invokedAt: Int64
  /// Nil: an open end (`info`).
  public var completedAt: Int64?
  public var outcome: Outcome
  /// A successful read's value (nil: the variable did not exist, a 404).
  public var readValue: String?
  /// `ok` read: the version read (0: absent); `ok` write or compare-and-set: the version it
  /// created; `fail` compare-and-set: the current version the 409 named.
  public var version: UInt64?
  /// Why it failed or is unknown (status and error code, or the transport error).
  public var error: String?

  public init(
    id: Int, process: Int, node: String, key: String, kind: Kind, value: String? = nil, expectedVersion: UInt64? = nil,
    expectedValue: String? = nil, stale: Bool = false, invokedAt: Int64, completedAt: Int64?, outcome: Outcome,
    readValue: String? = nil, version: UInt64? = nil, error: String? = nil
  ) {
    self.id = id
    self.process = process
    self.node = node
    self.key = key
    self.kind = kind
    self.value = value
    self.expectedVersion = expectedVersion
    self.expectedValue = expectedValue
    self.stale = stale
    self.invokedAt = invokedAt
    self.completedAt = completedAt
    self.outcome = outcome
    self.readValue = readValue
    self.version = version
    self.error = error
  }

  public var description: String {
    let end = completedAt.map { String(format: "%.3f", Double($0) / 1e9) } ?? "open"
    let span = "[\(String(format: "%.3f", Double(invokedAt) / 1e9)), \(end)]"
    let what: String
    switch kind {
    case .read:
      what = "read\(stale ? "(stale)" : "") -> \(readValue ?? "nil")@\(version.map(String.init) ?? "?")"
    case .write: what = "write(\(value ?? "nil")) -> \(version.map(String.init) ?? "?")"
    case .cas:
      what =
        "cas(\(expectedVersion.map(String.init) ?? "?")=\(expectedValue ?? "?") -> \(value ?? "nil")) -> "
        + "\(version.map(String.init) ?? "?")"
    }
    return "#\(id) p\(process)@\(node) \(key) \(what) \(outcome.rawValue) \(span)" + (error.map { " (\($0))" } ?? "")
  }
}

/// One fault the nemesis injected: what, on which nodes, from when to when (nanoseconds since the
/// start of the run; `endedAt` nil while it lasted to the end).
public struct JepsenFault: Codable, Sendable, Hashable {
  public var kind: String
  public var nodes: [String]
  public var startedAt: Int64
  public var endedAt: Int64?
  public var detail: String?

  public init(kind: String, nodes: [String], startedAt: Int64, endedAt: Int64? = nil, detail: String? = nil) {
    self.kind = kind
    self.nodes = nodes
    self.startedAt = startedAt
    self.endedAt = endedAt
    self.detail = detail
  }
}

/// A whole run: its operations, its faults and free-form notes (seed, duration, machine load).
public struct JepsenHistory: Codable, Sendable {
  public var operations: [JepsenOperation]
  public var faults: [JepsenFault]
  public var notes: [String: String]

  public init(operations: [JepsenOperation], faults: [JepsenFault] = [], notes: [String: String] = [:]) {
    self.operations = operations
    self.faults = faults
    self.notes = notes
  }

  public func encoded() throws -> Data {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
    return try encoder.encode(self)
  }

  public static func decode(_ data: Data) throws -> JepsenHistory {
    try JSONDecoder().decode(JepsenHistory.self, from: data)
  }
}
