// Variables: a small replicated key/value store for hooks and configuration (as Nomad Variables).
// Each variable is a path and a string value; its version is the log index of the entry that last
// wrote it (its modify index), so a version names one write for good and compare-and-set can use it.

/// One variable.
public struct ClusterVariable: Codable, Hashable, Sendable {
  public var value: String
  /// The log index of the entry that last wrote the variable (its modify index): at least 1.
  public var version: UInt64

  public init(value: String, version: UInt64) {
    self.value = value
    self.version = version
  }
}

/// A variable in a listing: its path and version, without its value.
public struct ClusterVariableSummary: Hashable, Sendable {
  public var path: String
  public var version: UInt64
}

/// One page of a listing (see ``ClusterState/variables(prefix:after:limit:)``).
public struct ClusterVariablePage: Hashable, Sendable {
  /// Sorted by path (byte order of UTF-8).
  public var variables: [ClusterVariableSummary]
  /// The path to pass as `after` for the next page; nil when this page holds the last match.
  public var next: String?
}

/// Every variable, by path, with the limits that bound the store.
///
/// In the snapshot it is one JSON object keyed by path (sorted keys, so canonical); `totalBytes` is
/// derived and rebuilt on decode.
///
/// Limits (checked on apply, deterministically, and on restore):
/// - a path is 1...``maximumPathBytes`` bytes of `A-Z a-z 0-9 . _ - /`, made of `/`-separated
///   segments that are neither empty (no leading or trailing `/`, no `//`) nor `.` or `..`;
/// - a value is at most ``maximumValueBytes`` bytes of UTF-8 (an empty value is allowed);
/// - at most ``maximumCount`` variables;
/// - at most ``maximumTotalBytes`` bytes of paths and values together.
public struct VariableTable: Codable, Hashable, Sendable {
  /// Longest path, in bytes.
  public static let maximumPathBytes = 256
  /// Largest value, in bytes of UTF-8 (64 KiB).
  public static let maximumValueBytes = 64 * 1024
  /// Most variables the cluster holds.
  public static let maximumCount = 10_000
  /// Most bytes of paths and values together (16 MiB).
  public static let maximumTotalBytes = 16 * 1024 * 1024

  public private(set) var entries: [String: ClusterVariable] = [:]
  /// Bytes of every path and value (UTF-8), derived from `entries`.
  public private(set) var totalBytes = 0

  public init() {}

  public var count: Int { entries.count }

  public subscript(path: String) -> ClusterVariable? { entries[path] }

  /// The bytes `path` holding `value` counts towards ``maximumTotalBytes``.
  static func size(_ path: String, _ value: String) -> Int { path.utf8.count + value.utf8.count }

  mutating func set(_ path: String, _ variable: ClusterVariable) {
    if let old = entries[path] { totalBytes -= Self.size(path, old.value) }
    entries[path] = variable
    totalBytes += Self.size(path, variable.value)
  }

  /// Room for `capacity` variables (tests use it to get another iteration order).
  mutating func reserveCapacity(_ capacity: Int) { entries.reserveCapacity(capacity) }

  @discardableResult
  mutating func remove(_ path: String) -> ClusterVariable? {
    guard let old = entries.removeValue(forKey: path) else { return nil }
    totalBytes -= Self.size(path, old.value)
    return old
  }

  /// Why `path` is not a usable variable path, or nil.
  public static func pathProblem(_ path: String) -> String? {
    let bytes = Array(path.utf8)
    if bytes.isEmpty { return "must not be empty" }
    if bytes.count > maximumPathBytes {
      return "is \(bytes.count) bytes; the path limit is \(maximumPathBytes) bytes"
    }
    for byte in bytes {
      let allowed =
        (byte >= 0x41 && byte <= 0x5a) || (byte >= 0x61 && byte <= 0x7a) || (byte >= 0x30 && byte <= 0x39)
        || byte == 0x2e || byte == 0x5f || byte == 0x2d || byte == 0x2f
      if !allowed { return "may contain only A-Z, a-z, 0-9, '.', '_', '-' and '/'" }
    }
    if bytes.first == 0x2f { return "must not start with '/'" }
    if bytes.last == 0x2f { return "must not end with '/'" }
    for segment in path.split(separator: "/", omittingEmptySubsequences: false) {
      if segment.isEmpty { return "must not contain an empty segment ('//')" }
      if segment == "." || segment == ".." { return "must not contain a '.' or '..' segment" }
    }
    return nil
  }

  /// Why `value` cannot be stored, or nil.
  public static func valueProblem(_ value: String) -> String? {
    let size = value.utf8.count
    guard size <= maximumValueBytes else {
      return "value is \(size) bytes; the value limit is \(maximumValueBytes) bytes (64 KiB)"
    }
    return nil
  }

  // MARK: Coding

  public init(from decoder: any Decoder) throws {
    let entries = try decoder.singleValueContainer().decode([String: ClusterVariable].self)
    for path in entries.keys.sorted() {
      guard let variable = entries[path] else { continue }
      set(path, variable)
    }
  }

  public func encode(to encoder: any Encoder) throws {
    var container = encoder.singleValueContainer()
    try container.encode(entries)
  }

  public static func == (lhs: VariableTable, rhs: VariableTable) -> Bool { lhs.entries == rhs.entries }

  public func hash(into hasher: inout Hasher) { hasher.combine(entries) }

  /// The first broken rule, or nil (a snapshot is input from disk or a peer).
  func invariantViolation(appliedIndex: UInt64) -> String? {
    if entries.count > Self.maximumCount {
      return "\(entries.count) variables; at most \(Self.maximumCount) allowed"
    }
    if totalBytes > Self.maximumTotalBytes {
      return "variables take \(totalBytes) bytes; at most \(Self.maximumTotalBytes) allowed"
    }
    for path in entries.keys.sorted() {
      guard let variable = entries[path] else { continue }
      if let problem = Self.pathProblem(path) { return "variable path \"\(path)\" \(problem)" }
      if let problem = Self.valueProblem(variable.value) { return "variable \(path): \(problem)" }
      if variable.version == 0 || variable.version > appliedIndex {
        return "variable \(path): version \(variable.version) is not in 1...\(appliedIndex)"
      }
    }
    return nil
  }
}

extension ClusterState {
  /// Most variables one ``variables(prefix:after:limit:)`` page holds.
  public static let maximumVariablePage = 1000

  /// The variable at `path`, if any.
  public func variable(_ path: String) -> ClusterVariable? { variables[path] }

  /// The variables whose path starts with `prefix` (all without one) and sorts after `after`, sorted by
  /// path, at most `limit` (capped at ``maximumVariablePage``); `next` names the last path of the
  /// page when more match.
  public func variables(prefix: String? = nil, after: String? = nil, limit: Int = maximumVariablePage)
    -> ClusterVariablePage
  {
    let cap = max(1, min(limit, Self.maximumVariablePage))
    let prefixBytes = Array((prefix ?? "").utf8)
    let afterBytes = after.map { Array($0.utf8) }
    let matching = variables.entries.keys.filter { path in
      let bytes = Array(path.utf8)
      guard bytes.starts(with: prefixBytes) else { return false }
      guard let afterBytes else { return true }
      return afterBytes.lexicographicallyPrecedes(bytes)
    }.sorted { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) }
    let page = matching.prefix(cap)
    return ClusterVariablePage(
      variables: page.compactMap { path in
        variables[path].map { ClusterVariableSummary(path: path, version: $0.version) }
      },
      next: matching.count > cap ? page.last : nil)
  }

  // MARK: Applying

  mutating func applyPutVariable(
    _ path: String, value: String, cas: UInt64?, _ context: inout ApplyContext
  ) throws(ClusterRejection) -> ClusterResponse {
    try Self.checkVariablePath(path)
    if let problem = VariableTable.valueProblem(value) {
      throw ClusterRejection(code: .tooLarge, message: "variable \(path): \(problem)", field: "value")
    }
    let current = variables[path]
    try Self.checkVersion(path, current: current, cas: cas)
    if current == nil, variables.count >= VariableTable.maximumCount {
      throw ClusterRejection(
        code: .conflict,
        message:
          "the cluster holds \(variables.count) variables, the variable count limit (\(VariableTable.maximumCount)); delete some first",
        field: "path")
    }
    let total =
      variables.totalBytes - (current.map { VariableTable.size(path, $0.value) } ?? 0)
      + VariableTable.size(path, value)
    if total > VariableTable.maximumTotalBytes {
      throw ClusterRejection(
        code: .conflict,
        message:
          "variables would take \(total) bytes; the total variable bytes limit is \(VariableTable.maximumTotalBytes) (16 MiB); delete some first",
        field: "value")
    }
    variables.set(path, ClusterVariable(value: value, version: context.index))
    return .variableWritten(path: path, version: context.index)
  }

  mutating func applyDeleteVariable(
    _ path: String, cas: UInt64?, _ context: inout ApplyContext
  ) throws(ClusterRejection) -> ClusterResponse {
    try Self.checkVariablePath(path)
    let current = variables[path]
    try Self.checkVersion(path, current: current, cas: cas)
    guard let current else {
      throw ClusterRejection(code: .notFound, message: "no variable at \(path)", field: "path")
    }
    variables.remove(path)
    return .variableDeleted(path: path, version: current.version)
  }

  static func checkVariablePath(_ path: String) throws(ClusterRejection) {
    if let problem = VariableTable.pathProblem(path) {
      throw ClusterRejection(code: .badRequest, message: "variable path \"\(path)\" \(problem)", field: "path")
    }
  }

  /// A compare-and-set: `cas` (when given) must be the variable's version, 0 when it does not exist.
  static func checkVersion(_ path: String, current: ClusterVariable?, cas: UInt64?) throws(ClusterRejection) {
    guard let cas else { return }
    let version = current?.version ?? 0
    guard cas == version else {
      let now = current == nil ? "does not exist (version 0)" : "is at version \(version)"
      throw ClusterRejection(
        code: .versionMismatch, message: "variable \(path) \(now), not version \(cas)", field: "cas",
        version: version)
    }
  }
}
