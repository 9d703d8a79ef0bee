// NodeConfiguration: what one `teal node start` runs with, read from YAML and flags and validated
// before anything opens a socket or a file.

import Foundation
import TealWire
import Yams

/// Everything one node needs to start. Built by ``NodeConfiguration/load(file:overrides:)`` from a
/// YAML file (keys as in Docs/OPERATIONS.md) and command-line overrides; ``validate()`` names the
/// field at fault for every refusal.
public struct NodeConfiguration: Sendable, Hashable {
  /// This node's id (NodeID rules: 1-63 characters of `[a-z0-9-]`, not starting with `-`).
  public var node: NodeID
  /// The address every listener of this node binds (peer, API, service listeners) and the source
  /// address of every connection it dials, so that a fault tool can cut one node by address.
  public var address: String
  public var peerPort: Int
  public var apiPort: Int
  /// The Raft write-ahead log and snapshots.
  public var dataDirectory: String
  /// Task logs and the task ledger.
  public var taskDirectory: String
  /// `ca.pem`, `<node>.pem`, `<node>.key`.
  public var certificateDirectory: String
  /// The API's bearer token (the file's first line; mode 0600).
  public var tokenFile: String
  /// Every founding member, this node included: id to address. Peers listen on `peerPort` and
  /// serve the API on `apiPort`, the same ports as this node, as on separate machines.
  public var peers: [NodeID: String]
  /// A founding member (true) or a node that joins an existing cluster (false).
  public var bootstrap: Bool
  /// The Raft election timeout's lower bound (the upper bound is twice it). Default 1 s.
  public var electionTimeoutMilliseconds: Int
  /// Ports tasks are given through `PORT` when their spec does not fix one.
  public var taskPortRange: ClosedRange<Int>
  /// Serve the API over TLS (the node's certificate; clients pin the cluster CA) instead of plain
  /// HTTP. Every node of a cluster should agree, since members' API URLs use this node's scheme.
  public var apiTLS = false

  /// Election timeout bounds accepted, in milliseconds.
  public static let electionTimeoutRange = 100...60_000

  public init(
    node: NodeID, address: String, peerPort: Int = 7000, apiPort: Int = 7070, dataDirectory: String,
    taskDirectory: String, certificateDirectory: String, tokenFile: String, peers: [NodeID: String],
    bootstrap: Bool = true, electionTimeoutMilliseconds: Int = 1000, taskPortRange: ClosedRange<Int> = 20_000...29_999
  ) {
    self.node = node
    self.address = address
    self.peerPort = peerPort
    self.apiPort = apiPort
    self.dataDirectory = dataDirectory
    self.taskDirectory = taskDirectory
    self.certificateDirectory = certificateDirectory
    self.tokenFile = tokenFile
    self.peers = peers
    self.bootstrap = bootstrap
    self.electionTimeoutMilliseconds = electionTimeoutMilliseconds
    self.taskPortRange = taskPortRange
  }

  /// The API endpoint of a member.
  public func apiURL(of member: NodeID) -> String? {
    peers[member].map { "\(apiTLS ? "https" : "http")://\(Self.hostLiteral($0)):\(apiPort)" }
  }

  static func hostLiteral(_ host: String) -> String { host.contains(":") ? "[\(host)]" : host }

  /// Checks every field; the error names the first one at fault.
  public func validate() throws(NodeConfigurationError) {
    guard Self.isIPAddress(address) else {
      throw .invalid(field: "address", "'\(address)' is not an IPv4 or IPv6 address literal")
    }
    for (field, port) in [("peerPort", peerPort), ("apiPort", apiPort)] where !(1...65_535).contains(port) {
      throw .invalid(field: field, "\(port) is not a TCP port (1-65535)")
    }
    guard peerPort != apiPort else { throw .invalid(field: "apiPort", "must differ from peerPort (\(peerPort))") }
    for (field, path) in [
      ("dataDir", dataDirectory), ("taskDir", taskDirectory), ("certDir", certificateDirectory),
      ("tokenFile", tokenFile),
    ] where path.isEmpty {
      throw .invalid(field: field, "must not be empty")
    }
    guard peers[node] != nil else {
      throw .invalid(field: "peers", "must list this node (\(node)) with its own address")
    }
    guard peers[node] == address else {
      throw .invalid(field: "peers.\(node)", "is \(peers[node] ?? ""), but address is \(address)")
    }
    for (id, host) in peers where !Self.isIPAddress(host) {
      throw .invalid(field: "peers.\(id)", "'\(host)' is not an IPv4 or IPv6 address literal")
    }
    guard Self.electionTimeoutRange.contains(electionTimeoutMilliseconds) else {
      throw .invalid(
        field: "electionTimeoutMs",
        "\(electionTimeoutMilliseconds) is outside \(Self.electionTimeoutRange.lowerBound)-"
          + "\(Self.electionTimeoutRange.upperBound)")
    }
    guard taskPortRange.lowerBound >= 1024, taskPortRange.upperBound <= 65_535 else {
      throw .invalid(field: "taskPortRange", "must lie within 1024-65535")
    }
  }

  static func isIPAddress(_ text: String) -> Bool {
    var v4 = in_addr()
    var v6 = in6_addr()
    return inet_pton(AF_INET, text, &v4) == 1 || inet_pton(AF_INET6, text, &v6) == 1
  }
}

/// Why a configuration was refused. Every case names the field (YAML key or flag) at fault.
public enum NodeConfigurationError: Error, Sendable, Hashable, CustomStringConvertible {
  case unreadable(file: String, reason: String)
  case malformed(file: String, reason: String)
  case missing(field: String)
  case invalid(field: String, String)
  case unknownField(String)

  public var description: String {
    switch self {
    case .unreadable(let file, let reason): "cannot read the node configuration \(file): \(reason)"
    case .malformed(let file, let reason): "the node configuration \(file) is not valid YAML: \(reason)"
    case .missing(let field): "node configuration: '\(field)' is required"
    case .invalid(let field, let reason): "node configuration: '\(field)' \(reason)"
    case .unknownField(let field): "node configuration: unknown field '\(field)'"
    }
  }
}

// MARK: - Loading

extension NodeConfiguration {
  /// The YAML keys a node configuration may hold; anything else is refused (a typo must not be
  /// silently ignored).
  public static let knownKeys: Set<String> = [
    "node", "address", "peerPort", "apiPort", "dataDir", "taskDir", "certDir", "tokenFile", "peers", "bootstrap",
    "electionTimeoutMs", "taskPortRange", "apiTLS",
  ]

  /// Largest configuration file accepted.
  public static let maximumFileBytes = 64 * 1024

  /// Reads `file` (if given), applies `overrides` (the same keys, from flags; a flag wins over the
  /// file), resolves relative paths against the file's directory (or the working directory), and
  /// validates the result.
  public static func load(file: String?, overrides: [String: String] = [:]) throws(NodeConfigurationError)
    -> NodeConfiguration
  {
    var fields: [String: Any] = [:]
    var base = FileManager.default.currentDirectoryPath
    if let file {
      let url = URL(fileURLWithPath: file)
      base = url.deletingLastPathComponent().path
      let data: Data
      do { data = try Data(contentsOf: url) } catch {
        throw .unreadable(file: file, reason: "\(error.localizedDescription)")
      }
      guard data.count <= maximumFileBytes else {
        throw .unreadable(file: file, reason: "larger than \(maximumFileBytes) bytes")
      }
      guard let text = String(data: data, encoding: .utf8) else {
        throw .malformed(file: file, reason: "not UTF-8")
      }
      let parsed: Any?
      do { parsed = try Yams.load(yaml: text) } catch { throw .malformed(file: file, reason: "\(error)") }
      guard let mapping = parsed as? [String: Any] else {
        throw .malformed(file: file, reason: "the top level must be a mapping of keys to values")
      }
      fields = mapping
    }
    for (key, value) in overrides { fields[key] = value }
    for key in fields.keys where !knownKeys.contains(key) { throw .unknownField(key) }
    return try build(from: fields, base: base)
  }

  private static func build(from fields: [String: Any], base: String) throws(NodeConfigurationError)
    -> NodeConfiguration
  {
    func string(_ key: String) throws(NodeConfigurationError) -> String {
      guard let value = fields[key] else { throw .missing(field: key) }
      if let text = value as? String { return text }
      if let number = value as? Int { return String(number) }
      throw .invalid(field: key, "must be a string")
    }
    func optionalInt(_ key: String) throws(NodeConfigurationError) -> Int? {
      guard let value = fields[key] else { return nil }
      if let number = value as? Int { return number }
      if let text = value as? String, let number = Int(text) { return number }
      throw .invalid(field: key, "must be an integer")
    }
    func optionalBool(_ key: String) throws(NodeConfigurationError) -> Bool? {
      switch fields[key] {
      case nil: return nil
      case let flag as Bool: return flag
      case let text as String where ["true", "false"].contains(text): return text == "true"
      default: throw .invalid(field: key, "must be true or false")
      }
    }
    func path(_ key: String) throws(NodeConfigurationError) -> String {
      let text = try string(key)
      guard !text.isEmpty else { throw .invalid(field: key, "must not be empty") }
      return text.hasPrefix("/") ? text : URL(fileURLWithPath: base).appendingPathComponent(text).standardized.path
    }
    let nodeText = try string("node")
    let node: NodeID
    do { node = try NodeID(validating: nodeText) } catch { throw .invalid(field: "node", error.description) }
    var peers: [NodeID: String] = [:]
    switch fields["peers"] {
    case nil: throw .missing(field: "peers")
    case let mapping as [String: Any]:
      for (key, value) in mapping {
        guard let id = try? NodeID(validating: key) else {
          throw .invalid(field: "peers", "'\(key)' is not a valid node id")
        }
        guard let host = value as? String else { throw .invalid(field: "peers.\(key)", "must be an address string") }
        peers[id] = host
      }
    case let text as String:
      // Flag form: n1=127.0.0.1,n2=127.0.0.2
      for pair in text.split(separator: ",") {
        let parts = pair.split(separator: "=", maxSplits: 1).map(String.init)
        guard parts.count == 2, let id = try? NodeID(validating: parts[0]) else {
          throw .invalid(field: "peers", "'\(pair)' is not of the form id=address")
        }
        peers[id] = parts[1]
      }
    default: throw .invalid(field: "peers", "must be a mapping of node id to address")
    }
    let bootstrap = try optionalBool("bootstrap") ?? true
    let apiTLS = try optionalBool("apiTLS") ?? false
    var portRange = 20_000...29_999
    if let text = fields["taskPortRange"] {
      let parts = "\(text)".split(separator: "-").compactMap { Int($0) }
      guard parts.count == 2, parts[0] <= parts[1] else {
        throw .invalid(field: "taskPortRange", "must be of the form LOW-HIGH")
      }
      portRange = parts[0]...parts[1]
    }
    var configuration = NodeConfiguration(
      node: node, address: try string("address"), peerPort: try optionalInt("peerPort") ?? 7000,
      apiPort: try optionalInt("apiPort") ?? 7070, dataDirectory: try path("dataDir"),
      taskDirectory: try path("taskDir"), certificateDirectory: try path("certDir"),
      tokenFile: try path("tokenFile"), peers: peers, bootstrap: bootstrap,
      electionTimeoutMilliseconds: try optionalInt("electionTimeoutMs") ?? 1000, taskPortRange: portRange)
    configuration.apiTLS = apiTLS
    try configuration.validate()
    return configuration
  }
}
