/// The name of one node of the cluster, e.g. `n1`.
///
/// Invariant: 1 to 63 characters of `a-z`, `0-9` and `-`, starting with a letter or digit. The
/// same string is the DNS subject alternative name of the node's certificate, so it must be a
/// valid DNS label.
public struct NodeID: Hashable, Comparable, Sendable, CustomStringConvertible, Codable {
  public let rawValue: String

  /// Fails with a message naming the rule that `rawValue` breaks.
  public init(validating rawValue: String) throws(NodeIDError) {
    if let reason = NodeID.problem(with: rawValue) { throw NodeIDError(value: rawValue, reason: reason) }
    self.rawValue = rawValue
  }

  /// For literals known to be valid (tests, constants); traps on an invalid id.
  public init(_ rawValue: String) {
    precondition(NodeID.problem(with: rawValue) == nil, "invalid node id \(rawValue)")
    self.rawValue = rawValue
  }

  public var description: String { rawValue }

  public static func < (lhs: NodeID, rhs: NodeID) -> Bool { lhs.rawValue < rhs.rawValue }

  static func problem(with value: String) -> String? {
    if value.isEmpty { return "must not be empty" }
    if value.utf8.count > 63 { return "must be at most 63 characters" }
    for c in value.utf8 {
      let ok = (c >= 0x61 && c <= 0x7a) || (c >= 0x30 && c <= 0x39) || c == 0x2d
      if !ok { return "may contain only a-z, 0-9 and '-'" }
    }
    if value.utf8.first == 0x2d { return "must not start with '-'" }
    return nil
  }

  public init(from decoder: any Decoder) throws {
    let value = try decoder.singleValueContainer().decode(String.self)
    try self.init(validating: value)
  }

  public func encode(to encoder: any Encoder) throws {
    var container = encoder.singleValueContainer()
    try container.encode(rawValue)
  }
}

public struct NodeIDError: Error, Equatable, Sendable, CustomStringConvertible {
  public let value: String
  public let reason: String
  public var description: String { "invalid node id '\(value)': \(reason)" }
}

extension NodeID: WireCodable {
  public func encode(to writer: inout WireWriter) { writer.write(rawValue) }

  public init(from reader: inout WireReader) throws(WireError) {
    let raw = try reader.readString("nodeID")
    do { try self.init(validating: raw) } catch { throw .invalidValue(field: "nodeID", reason: error.reason) }
  }
}
