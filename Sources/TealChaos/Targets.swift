// A targets file: a cluster that `teal cluster up` did not lay out, described for `teal chaos
// --targets FILE` — each node's API, peer address and port, and how this machine reaches the node's
// host to make process and network faults there (this machine, or a command prefix such as
// `[ssh, root@10.0.0.2]`). Read strictly: the first error names the field and its line.
// Docs/CHAOS.md "A cluster `teal cluster up` did not start".

import Foundation
import Yams

/// A checked targets file. Paths of files this machine reads (`tokenFile`, `ca`) are resolved
/// against the file's directory; paths on a node's host (`config`, `taskDir`) are absolute.
public struct ChaosTargetsFile: Sendable, Equatable {
  /// Names the cluster's nftables table (default: the targets file's path).
  public var name: String?
  public var token: String?
  public var tokenFile: String?
  /// The CA certificate the nodes' `https://` APIs chain to.
  public var ca: String?
  public var nodes: [ChaosTargetNode]

  public init(
    name: String? = nil, token: String? = nil, tokenFile: String? = nil, ca: String? = nil,
    nodes: [ChaosTargetNode]
  ) {
    self.name = name
    self.token = token
    self.tokenFile = tokenFile
    self.ca = ca
    self.nodes = nodes
  }
}

/// One node of a targets file.
public struct ChaosTargetNode: Sendable, Equatable {
  public var id: String
  /// `http://HOST:PORT` or `https://HOST:PORT`.
  public var api: String
  /// The address the node binds and dials from (an IPv4 or IPv6 literal): its peer traffic.
  public var address: String
  public var peerPort: Int
  /// The command prefix that runs a shell command line on the node's host (it gets the line as
  /// one more argument), or nil for this machine.
  public var exec: [String]?
  /// The node's config file as it appears in its command line (`teal node start --config PATH`):
  /// how its process is found.
  public var config: String?
  /// The node's task directory (holding `tasks.ledger`), for `--with-tasks` and `kill-task`.
  public var taskDir: String?
  /// A shell command line that starts the node again (`systemctl start teal`).
  public var start: String?
  /// `nodes[2]`: where errors about this node point.
  public var field: String

  public init(
    id: String, api: String, address: String, peerPort: Int, exec: [String]? = nil, config: String? = nil,
    taskDir: String? = nil, start: String? = nil, field: String
  ) {
    self.id = id
    self.api = api
    self.address = address
    self.peerPort = peerPort
    self.exec = exec
    self.config = config
    self.taskDir = taskDir
    self.start = start
    self.field = field
  }
}

public enum TargetsLimits {
  /// Largest targets file read (256 KiB).
  public static let maximumBytes = 256 * 1024
  /// Nodes in one file (as `teal cluster up`).
  public static let maximumNodes = 254
  /// Words in an `exec` prefix.
  public static let maximumExecWords = 32
}

public enum TargetsParser {
  static let topFields = ["name", "token", "tokenFile", "ca", "nodes"]
  static let nodeFields = ["id", "api", "address", "peerPort", "exec", "config", "taskDir", "start"]

  /// Parses a targets file's text; `file` names it in errors, `baseDirectory` (absolute) resolves
  /// its relative `tokenFile` and `ca`.
  public static func parse(_ text: String, file: String, baseDirectory: String) throws(ScenarioError)
    -> ChaosTargetsFile
  {
    do {
      return try read(text, baseDirectory: baseDirectory)
    } catch {
      var named = error
      named.file = file
      throw named
    }
  }

  private static func read(_ text: String, baseDirectory: String) throws(ScenarioError) -> ChaosTargetsFile {
    let root = try ScenarioParser.composeRoot(text, maximumBytes: TargetsLimits.maximumBytes, what: "a targets file")
    let top = try Fields(root, path: "", allowed: topFields)
    func local(_ value: Value) throws(ScenarioError) -> String {
      let path = try value.string()
      guard !path.isEmpty else { throw value.error("must not be empty") }
      return path.hasPrefix("/") ? path : baseDirectory + "/" + path
    }
    var name: String?
    if let value = top["name"] {
      let text = try value.string()
      guard (1...64).contains(text.utf8.count), text.utf8.allSatisfy(isNameByte) else {
        throw value.error("must be 1-64 letters, digits, '.', '_' or '-', got '\(text)'")
      }
      name = text
    }
    var token: String?
    if let value = top["token"] {
      let text = try value.string()
      guard !text.isEmpty, !text.contains(where: \.isWhitespace) else {
        throw value.error("must be the API token (no spaces); or give tokenFile, or set TEAL_TOKEN")
      }
      token = text
    }
    var tokenFile: String?
    if let value = top["tokenFile"] {
      if token != nil { throw value.error("give token or tokenFile, not both") }
      tokenFile = try local(value)
    }
    let ca = try top["ca"].map { value throws(ScenarioError) in try local(value) }

    let list = try top.required("nodes")
    let items = try list.list()
    guard !items.isEmpty else { throw list.error("give at least one node") }
    guard items.count <= TargetsLimits.maximumNodes else {
      throw list.error("at most \(TargetsLimits.maximumNodes) nodes, got \(items.count)")
    }
    var nodes: [ChaosTargetNode] = []
    for item in items {
      let node = try targetNode(item)
      if let other = nodes.first(where: { $0.id == node.id }) {
        throw ScenarioError(
          field: node.field + ".id", line: item.line, message: "\(node.id) is given twice (also \(other.field))")
      }
      if let other = nodes.first(where: { $0.address == node.address && $0.peerPort == node.peerPort }) {
        throw ScenarioError(
          field: node.field + ".peerPort", line: item.line,
          message: "\(node.address) port \(node.peerPort) is also \(other.id)'s (\(other.field)): "
            + "each node needs an address and peer port of its own")
      }
      nodes.append(node)
    }
    let https = nodes.filter { $0.api.hasPrefix("https://") }
    if !https.isEmpty && https.count != nodes.count {
      let plain = nodes.first { !$0.api.hasPrefix("https://") }!
      throw ScenarioError(
        field: plain.field + ".api", line: nil,
        message: "the nodes mix http:// and https:// APIs (\(https[0].id) is https://): give one scheme for every node")
    }
    if ca != nil && https.isEmpty {
      throw ScenarioError(
        field: "ca", line: top["ca"]?.line, message: "the nodes' APIs are http://; a CA applies to https:// only")
    }
    return ChaosTargetsFile(name: name, token: token, tokenFile: tokenFile, ca: ca, nodes: nodes)
  }

  private static func targetNode(_ item: Value) throws(ScenarioError) -> ChaosTargetNode {
    let fields = try Fields(item, path: item.path, allowed: nodeFields)
    let idValue = try fields.required("id")
    let id = try idValue.string()
    guard (1...63).contains(id.utf8.count), id.utf8.allSatisfy(isNameByte) else {
      throw idValue.error("must be 1-63 letters, digits, '.', '_' or '-', got '\(id)'")
    }
    let apiValue = try fields.required("api")
    let api = try apiValue.string()
    if let problem = apiProblem(api) { throw apiValue.error(problem) }
    let addressValue = try fields.required("address")
    let address = try addressValue.string()
    guard isIPv4(address) || isIPv6(address) else {
      throw addressValue.error(
        "must be the IPv4 or IPv6 address the node binds (nftables matches it), got '\(address)'")
    }
    let peerPort = try fields.required("peerPort").integer(in: 1...65535)
    var node = ChaosTargetNode(id: id, api: api, address: address, peerPort: peerPort, field: item.path)
    if let value = fields["exec"] {
      let words = try value.list()
      guard !words.isEmpty else {
        throw value.error("give the command prefix, e.g. [ssh, root@10.0.0.2] (leave exec out for this machine)")
      }
      guard words.count <= TargetsLimits.maximumExecWords else {
        throw value.error("at most \(TargetsLimits.maximumExecWords) words, got \(words.count)")
      }
      node.exec = try words.map { word throws(ScenarioError) in
        let text = try word.string()
        guard !text.isEmpty else { throw word.error("must not be empty") }
        return text
      }
    }
    func hostPath(_ key: String) throws(ScenarioError) -> String? {
      guard let value = fields[key] else { return nil }
      let path = try value.string()
      guard path.hasPrefix("/") else {
        throw value.error("must be an absolute path on the node's host, got '\(path)'")
      }
      return path
    }
    node.config = try hostPath("config")
    node.taskDir = try hostPath("taskDir")
    if let value = fields["start"] {
      let line = try value.string()
      guard !line.trimmingCharacters(in: .whitespaces).isEmpty else {
        throw value.error("must be a shell command line that starts the node (e.g. systemctl start teal)")
      }
      node.start = line
    }
    return node
  }

  private static func isNameByte(_ byte: UInt8) -> Bool {
    (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x5a) || (byte >= 0x61 && byte <= 0x7a)
      || byte == 0x2e || byte == 0x5f || byte == 0x2d
  }

  /// Why `text` is not `http(s)://HOST:PORT` (an optional trailing `/`), or nil.
  static func apiProblem(_ text: String) -> String? {
    let expected = "expected http://HOST:PORT or https://HOST:PORT, got '\(text)'"
    var rest: Substring
    if text.hasPrefix("http://") {
      rest = text.dropFirst(7)
    } else if text.hasPrefix("https://") {
      rest = text.dropFirst(8)
    } else {
      return expected
    }
    if rest.hasSuffix("/") { rest = rest.dropLast() }
    let host: Substring
    let port: Substring
    if rest.hasPrefix("[") {
      guard let close = rest.firstIndex(of: "]") else { return expected }
      host = rest[rest.index(after: rest.startIndex)..<close]
      let tail = rest[rest.index(after: close)...]
      guard tail.hasPrefix(":") else { return expected }
      port = tail.dropFirst()
      guard isIPv6(String(host)) else { return expected }
    } else {
      guard let colon = rest.lastIndex(of: ":") else { return "\(expected) (the port is missing)" }
      host = rest[..<colon]
      port = rest[rest.index(after: colon)...]
      guard !host.isEmpty, host.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "." || $0 == "-" }) else {
        return expected
      }
    }
    guard let number = Int(port), (1...65535).contains(number) else { return "\(expected) (port 1-65535)" }
    return nil
  }

  static func isIPv4(_ text: String) -> Bool {
    let parts = text.split(separator: ".", omittingEmptySubsequences: false)
    return parts.count == 4
      && parts.allSatisfy { part in
        (1...3).contains(part.count) && part.allSatisfy(\.isASCII) && part.allSatisfy(\.isNumber)
          && Int(part).map { $0 <= 255 } == true && !(part.count > 1 && part.hasPrefix("0"))
      }
  }

  static func isIPv6(_ text: String) -> Bool {
    guard text.contains(":"), text.count <= 45 else { return false }
    let groups = text.components(separatedBy: ":")
    guard groups.count >= 3, groups.count <= 8 || (groups.count == 9 && text.contains("::")) else {
      return false
    }
    if text.components(separatedBy: "::").count > 2 || text.contains(":::") { return false }
    if (text.hasPrefix(":") && !text.hasPrefix("::")) || (text.hasSuffix(":") && !text.hasSuffix("::")) {
      return false
    }
    for (index, group) in groups.enumerated() {
      if group.isEmpty { continue }
      if index == groups.count - 1, group.contains(".") {
        if !isIPv4(group) { return false }
        continue
      }
      guard group.count <= 4, group.allSatisfy(\.isHexDigit) else { return false }
    }
    return text.contains("::") || groups.count == 8 || (groups.count == 7 && groups.last!.contains("."))
  }
}
