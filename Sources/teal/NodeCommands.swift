import ArgumentParser
import Foundation
import Logging
import TealNode

// MARK: - node

struct NodeCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "node",
    abstract: "Run one Teal node.",
    subcommands: [NodeStart.self]
  )
}

/// `teal node start --config FILE` (every key of the file is also a flag; a flag wins).
struct NodeStart: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "start",
    abstract: "Run one node in the foreground until SIGTERM or SIGINT.",
    discussion: """
      The configuration file's keys are listed in Docs/OPERATIONS.md. On SIGTERM the node hands \
      leadership to another member, stops accepting API requests, drains its tasks (routes first, \
      then processes) and closes its log.
      """
  )

  @Option(name: .long, help: "The node's YAML configuration file.")
  var config: String?

  @Option(name: .long, help: "Node id (key: node).") var node: String?
  @Option(name: .long, help: "Address every listener binds and every dial starts from (key: address).")
  var address: String?
  @Option(name: .long, help: "Peer (Raft, gossip, control) port (key: peerPort).") var peerPort: Int?
  @Option(name: .long, help: "HTTP API port (key: apiPort).") var apiPort: Int?
  @Option(name: .long, help: "Raft data directory (key: dataDir).") var dataDir: String?
  @Option(name: .long, help: "Task logs and ledger directory (key: taskDir).") var taskDir: String?
  @Option(name: .long, help: "Certificate directory with ca.pem, <node>.pem, <node>.key (key: certDir).")
  var certDir: String?
  @Option(name: .long, help: "API token file, mode 0600 (key: tokenFile).") var tokenFile: String?
  @Option(name: .long, help: "Founding members as id=address,... (key: peers).") var peers: String?
  @Option(name: .long, help: "true for a founding member, false to join (key: bootstrap).") var bootstrap: String?
  @Flag(
    name: .long,
    help: "Join an existing cluster (as bootstrap: false): wait, without voting, until the leader adds this node.")
  var join = false
  @Option(name: .long, help: "Raft election timeout in milliseconds (key: electionTimeoutMs).")
  var electionTimeoutMs: Int?
  @Option(name: .long, help: "Ports handed to tasks, LOW-HIGH (key: taskPortRange).") var taskPortRange: String?
  @Option(name: .long, help: "Log level: trace, debug, info, notice, warning, error, critical.")
  var logLevel: String = "info"

  func run() async throws {
    var overrides: [String: String] = [:]
    let pairs: [(String, String?)] = [
      ("node", node), ("address", address), ("peerPort", peerPort.map(String.init)),
      ("apiPort", apiPort.map(String.init)), ("dataDir", dataDir), ("taskDir", taskDir), ("certDir", certDir),
      ("tokenFile", tokenFile), ("peers", peers), ("bootstrap", bootstrap),
      ("electionTimeoutMs", electionTimeoutMs.map(String.init)), ("taskPortRange", taskPortRange),
    ]
    for (key, value) in pairs { if let value { overrides[key] = value } }
    if join {
      if let bootstrap, bootstrap != "false" {
        throw CommandFailure(message: "--join contradicts --bootstrap \(bootstrap)")
      }
      overrides["bootstrap"] = "false"
    }
    guard let level = Logger.Level(rawValue: logLevel) else {
      throw CommandFailure(message: "--log-level: '\(logLevel)' is not a log level")
    }
    let configuration: NodeConfiguration
    do { configuration = try NodeConfiguration.load(file: config, overrides: overrides) } catch {
      throw CommandFailure(message: error.description)
    }
    var logger = Logger(label: "teal.node")
    logger.logLevel = level
    do {
      try await TealNode.run(configuration: configuration, logger: logger)
    } catch let error as NodeStartError {
      throw CommandFailure(message: error.description)
    }
  }
}
