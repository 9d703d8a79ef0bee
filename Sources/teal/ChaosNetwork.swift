import ArgumentParser
import Foundation

#if canImport(Glibc)
  import Glibc
#endif

// `teal chaos partition|loss|heal`: network faults on one node's peer traffic, with nftables.
// Every node binds its own address and dials from it, so a rule on (address, peer port) cuts one
// node and nothing else: its API, its listeners and the other nodes' links are untouched. The rules
// go to the cut node's own host (this machine, or through its targets-file exec prefix). Each
// cluster (directory or targets file) has its own nftables table (`NetworkFaults.tableName`),
// removed from every node's host at the start of every command, when the fault's time is up, and
// when the command is interrupted. Docs/CHAOS.md.

/// The nftables table of one cluster and the rules that make each fault. A fault's rules go to
/// the host of the node they cut (``ChaosNode/nft(_:input:)``); removing the table removes it from
/// every node's host.
struct NetworkFaults: Sendable {
  let targets: ClusterTargets

  /// `teal_` and 12 hex digits of a hash of the cluster's directory (or targets file): one table
  /// per cluster.
  var tableName: String { targets.tableName }

  /// The most a `loss` may drop (100 % is a partition: use that).
  static let maximumLossPercent = 99

  enum Fault {
    /// Every peer packet to or from the node, both directions of every connection.
    case partition(ChaosNode)
    /// Only the connections `node` dials to `peer` (both directions of those); `peer`'s own
    /// connections to `node` still carry its messages.
    case oneWay(ChaosNode, from: ChaosNode)
    /// `percent` of the node's peer packets, at random.
    case loss(ChaosNode, percent: Int)

    /// The node whose host gets the rules.
    var node: ChaosNode {
      switch self {
      case .partition(let node), .oneWay(let node, _), .loss(let node, _): node
      }
    }
  }

  /// The rules of `fault`, as `nft -f` reads them (the table is created fresh).
  func ruleset(_ fault: Fault) -> String {
    func family(_ address: String) -> String { address.contains(":") ? "ip6" : "ip" }
    var rules: [String] = []
    switch fault {
    case .partition(let node), .loss(let node, _):
      let verdict: String
      if case .loss(_, let percent) = fault {
        verdict = "numgen random mod 100 < \(percent) drop"
      } else {
        verdict = "drop"
      }
      let ip = family(node.address)
      for side in ["saddr", "daddr"] {
        for port in ["dport", "sport"] {
          rules.append("\(ip) \(side) \(node.address) tcp \(port) \(node.peerPort) \(verdict)")
        }
      }
    case .oneWay(let node, let peer):
      let ip = family(node.address)
      rules.append("\(ip) saddr \(node.address) \(ip) daddr \(peer.address) tcp dport \(peer.peerPort) drop")
      rules.append("\(ip) saddr \(peer.address) \(ip) daddr \(node.address) tcp sport \(peer.peerPort) drop")
    }
    // On loopback every packet passes the output hook once; elsewhere input catches what comes in.
    var text = "table inet \(tableName) {\n"
    for hook in ["output", "input"] {
      text += "  chain \(hook) {\n    type filter hook \(hook) priority 0; policy accept;\n"
      for rule in rules { text += "    \(rule)\n" }
      text += "  }\n"
    }
    return text + "}\n"
  }

  /// Installs `fault` on its node's host (replacing whatever this cluster's table held anywhere).
  func install(_ fault: Fault) throws {
    remove()
    try fault.node.nft(["-f", "-"], input: ruleset(fault))
  }

  /// Removes this cluster's table from every node's host, if it is there (idempotent).
  func remove() {
    for host in targets.hosts { _ = try? host.nft(["delete", "table", "inet", tableName], input: nil) }
  }

  /// Whether this cluster's table exists on some node's host.
  func isInstalled() -> Bool {
    targets.hosts.contains { (try? $0.nft(["list", "table", "inet", tableName], input: nil)) != nil }
  }

  /// Fails with a clear message when nft is missing on this machine and `nodes` include one here
  /// (a host reached through a prefix says so itself when a rule is installed).
  static func check(_ nodes: [ChaosNode]) throws {
    if nodes.contains(where: { $0.host == .local }) { _ = try executable() }
  }

  /// The nft executable, or a message saying how to get it.
  static func executable() throws -> String {
    for directory in ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
    where FileManager.default.isExecutableFile(
      atPath: "\(directory)/nft")
    {
      return "\(directory)/nft"
    }
    throw CommandFailure(
      message: "nftables is missing (no nft in /usr/sbin, /sbin, /usr/bin): install it (apt-get install nftables); "
        + "chaos partition and loss need it")
  }

  /// Runs `nft arguments` (with `input` on stdin); throws with nft's own message on failure.
  @discardableResult
  static func nft(_ arguments: [String], input: String?) throws -> String {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: try executable())
    process.arguments = arguments
    let output = Pipe()
    let stdin = Pipe()
    process.standardOutput = output
    process.standardError = output
    process.standardInput = stdin
    try process.run()
    if let input { stdin.fileHandleForWriting.write(Data(input.utf8)) }
    try? stdin.fileHandleForWriting.close()
    let data = output.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    let text = String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
    guard process.terminationStatus == 0 else {
      let hint =
        text.contains("Operation not permitted") || text.contains("Permission denied")
        ? " (nftables needs root or CAP_NET_ADMIN)" : ""
      throw CommandFailure(message: "nft \(arguments.joined(separator: " ")) failed: \(text)\(hint)")
    }
    return text
  }
}

extension Chaos {
  /// Options shared by the faults that last a while (pause, partition, loss).
  struct FaultOptions: ParsableArguments {
    @Option(
      name: .customLong("for"),
      help: ArgumentHelp("How long the fault lasts (500ms, 10s, 2m; at most 1h).", valueName: "duration"))
    var duration: String

    /// `--dir` or `--targets`.
    @OptionGroup var cluster: ClusterOptions

    @Flag(name: .long, help: "Print one JSON object per action instead of text.")
    var json = false

    func validate() throws {
      let value = try parseChaosDuration(duration, option: "--for")
      if value > .seconds(3600) { throw ValidationError("--for must be at most 1h, got \(duration)") }
    }
  }

  struct Partition: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Cut a node's peer traffic (both directions, nftables) for a while.",
      discussion: """
        NODE is a node id of the cluster in --dir (or --targets), or `leader`. Every peer connection \
        to and from the node's address and peer port is cut, by rules on the node's own host; its API and listeners stay reachable. With --from \
        PEER only the connections NODE dials to PEER are cut (both ways): PEER's messages to NODE \
        still arrive, NODE's to PEER do not. The rules are removed when the time is up and when \
        this command is interrupted. Needs nftables and root (or CAP_NET_ADMIN).
        """)

    @Argument(help: "A node id (n1, n2, ...) or `leader`.")
    var node: String

    @Option(name: .long, help: "Cut only NODE's own connections to this node (a one-way cut).")
    var from: String?

    @OptionGroup var options: FaultOptions

    func run() async throws {
      let target = try await ChaosTarget.resolve(node, cluster: options.cluster)
      let fault: NetworkFaults.Fault
      var fields: [String: Any] = ["action": "partition", "node": target.node.id]
      if let from {
        guard let peer = target.faults.targets.node(from), peer.id != target.node.id else {
          throw CommandFailure(message: "--from \(from) is not another node of \(target.faults.targets.description)")
        }
        fault = .oneWay(target.node, from: peer)
        fields["from"] = peer.id
      } else {
        fault = .partition(target.node)
      }
      let what = from.map { "\(target.node.id)'s connections to \($0) (one way)" } ?? "\(target.node.id)'s peer traffic"
      try await runFault(fault, target: target, options: options, what: what, fields: fields)
    }
  }

  struct Loss: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Drop a percentage of a node's peer packets (nftables numgen) for a while.",
      discussion: "NODE is a node id or `leader`. Needs nftables and root (or CAP_NET_ADMIN).")

    @Argument(help: "A node id (n1, n2, ...) or `leader`.")
    var node: String

    @Option(name: .long, help: "Percent of the node's peer packets to drop (1-99).")
    var percent: Int

    @OptionGroup var options: FaultOptions

    func validate() throws {
      guard (1...NetworkFaults.maximumLossPercent).contains(percent) else {
        throw ValidationError(
          "--percent must be 1-\(NetworkFaults.maximumLossPercent), got \(percent) (100 % is `chaos partition`)")
      }
    }

    func run() async throws {
      let target = try await ChaosTarget.resolve(node, cluster: options.cluster)
      try await runFault(
        .loss(target.node, percent: percent), target: target, options: options,
        what: "\(percent) % of \(target.node.id)'s peer packets",
        fields: ["action": "loss", "node": target.node.id, "percent": percent])
    }
  }

  struct Heal: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Remove every network fault of the cluster in --dir or --targets (its nftables table, on every host).")

    @OptionGroup var cluster: ClusterOptions

    func run() async throws {
      let faults = NetworkFaults(targets: try cluster.load())
      try NetworkFaults.check(faults.targets.nodes)
      let had = faults.isInstalled()
      faults.remove()
      print(had ? "removed the nftables table \(faults.tableName)" : "no fault installed (\(faults.tableName))")
    }
  }
}

/// The node a fault is aimed at, and the cluster's fault table.
struct ChaosTarget {
  let node: ChaosNode
  let faults: NetworkFaults
  let term: UInt64?

  static func resolve(_ name: String, cluster options: ClusterOptions) async throws -> ChaosTarget {
    let cluster = try ChaosCluster(try options.load())
    defer { Task { await cluster.client.shutdown() } }
    // Every node here: say so before asking who leads.
    if cluster.nodes.allSatisfy({ $0.host == .local }) { _ = try NetworkFaults.executable() }
    let (node, term) = try await cluster.resolveNode(name)
    try NetworkFaults.check([node])
    return ChaosTarget(node: node, faults: NetworkFaults(targets: cluster.targets), term: term)
  }
}

/// Installs `fault` for the options' time, removing it when done and when interrupted.
private func runFault(
  _ fault: NetworkFaults.Fault, target: ChaosTarget, options: Chaos.FaultOptions, what: String,
  fields: [String: Any]
) async throws {
  let out = ChaosOutput(json: options.json)
  let length = try parseChaosDuration(options.duration, option: "--for")
  let faults = target.faults
  SignalPipe.install([SIGINT, SIGTERM, SIGHUP]) { signalNumber in
    faults.remove()
    out.say(
      "interrupted (signal \(signalNumber)): removed the fault on \(what)",
      ["action": "heal", "node": target.node.id, "interrupted": true])
    Glibc.exit(128 + signalNumber)
  }
  defer { faults.remove() }
  try faults.install(fault)
  var said = fields
  said["seconds"] = seconds(length)
  said["table"] = faults.tableName
  if let term = target.term { said["term"] = Int(term) }
  let termNote = target.term.map { " (the leader in term \($0))" } ?? ""
  out.say("cut \(what)\(termNote) for \(formatSeconds(length)) (nftables table \(faults.tableName))", said)
  let clock = ContinuousClock()
  let started = clock.now
  try? await Task.sleep(for: length)
  faults.remove()
  out.say(
    "healed \(what) after \(formatSeconds(clock.now - started))", ["action": "heal", "node": target.node.id])
}
