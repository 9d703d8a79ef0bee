// Three real `teal node start` processes on 127.0.0.1-3 for the Jepsen-style run (the layout of
// Tests/TealNodeClusterTests' LocalCluster, trimmed to what the run needs): start, SIGKILL, SIGTERM,
// SIGSTOP/SIGCONT, restart from the data directory, and a cleanup that kills every node and every
// task process group by PID (checked by start time) on every exit path.

import Foundation
import NIOConcurrencyHelpers
import TealTestSupport

#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

/// The built executables, beside the test bundle.
enum Binaries {
  static let directory = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().path
  static let teal = "\(directory)/teal"
  static let tealDemo = "\(directory)/teal-demo"

  /// Why the real-cluster run cannot run here, or nil.
  static let missing: String? = {
    let files = FileManager.default
    guard files.isExecutableFile(atPath: teal) else { return "no teal executable at \(teal)" }
    guard files.isExecutableFile(atPath: tealDemo) else { return "no teal-demo executable at \(tealDemo)" }
    return nil
  }()
}

/// Whether nftables can be used (the partition faults need it; without it they are skipped).
enum NFTables {
  static let executable = ["/usr/sbin/nft", "/sbin/nft", "/usr/bin/nft"].first {
    FileManager.default.isExecutableFile(atPath: $0)
  }
  static let usable: Bool = {
    guard let executable, let listed = try? run(executable, ["list", "tables"]) else { return false }
    return listed.status == 0
  }()

  static func tables() -> [String] {
    guard let executable, let listed = try? run(executable, ["list", "tables"]), listed.status == 0 else { return [] }
    return listed.output.split(separator: "\n").compactMap { line in
      let words = line.split(separator: " ")
      return words.count == 3 && words[0] == "table" ? String(words[2]) : nil
    }
  }
}

struct HarnessError: Error, CustomStringConvertible {
  var description: String
}

struct JepsenNode: Sendable {
  var id: String
  var address: String
  var directory: String
  var configPath: String { "\(directory)/node.yaml" }
  var logPath: String { "\(directory)/node.log" }
  var ledgerPath: String { "\(directory)/tasks/tasks.ledger" }
}

final class RealCluster: Sendable {
  let directory: String
  let nodes: [JepsenNode]
  let peerPort: Int
  let apiPort: Int
  let token: String

  private struct State {
    var running: [String: pid_t] = [:]
    var started: [pid_t: UInt64?] = [:]
    var taskGroups: [pid_t: UInt64] = [:]
    var destroyed = false
  }
  private let state = NIOLockedValueBox(State())

  init(nodes count: Int = 3, electionTimeoutMs: Int = 1500) throws {
    directory =
      FileManager.default.temporaryDirectory.appendingPathComponent("teal-jepsen-\(UUID().uuidString.prefix(8))").path
    let addresses = (1...count).map { "127.0.0.\($0)" }
    peerPort = try FreePorts.pick(on: addresses)
    apiPort = try FreePorts.pick(on: addresses)
    let root = directory
    nodes = (1...count).map { JepsenNode(id: "n\($0)", address: addresses[$0 - 1], directory: "\(root)/n\($0)") }
    var bytes = [UInt8](repeating: 0, count: 32)
    for index in bytes.indices { bytes[index] = UInt8.random(in: 0...255) }
    token = bytes.map { String(format: "%02x", $0) }.joined()
    try Self.layOut(
      directory: directory, nodes: nodes.count, addresses: addresses, peerPort: peerPort, apiPort: apiPort,
      token: token, electionTimeoutMs: electionTimeoutMs)
  }

  private static func layOut(
    directory: String, nodes count: Int, addresses: [String], peerPort: Int, apiPort: Int, token: String,
    electionTimeoutMs: Int
  ) throws {
    let files = FileManager.default
    try files.createDirectory(atPath: directory, withIntermediateDirectories: true)
    let ids = (1...count).map { "n\($0)" }
    let certs = try run(
      Binaries.teal,
      ["certs", "init", "--out", "\(directory)/certs", "--nodes", ids.joined(separator: ",")]
        + zip(ids, addresses).flatMap { ["--address", "\($0)=\($1)"] })
    guard certs.status == 0 else { throw HarnessError(description: "teal certs init failed: \(certs.output)") }
    guard
      files.createFile(
        atPath: "\(directory)/token", contents: Data((token + "\n").utf8), attributes: [.posixPermissions: 0o600])
    else { throw HarnessError(description: "cannot write \(directory)/token") }
    let peers = zip(ids, addresses).map { "  \($0): \($1)" }.joined(separator: "\n")
    var clusterFile = "nodes:\n"
    for (id, address) in zip(ids, addresses) {
      let nodeDirectory = "\(directory)/\(id)"
      try files.createDirectory(atPath: nodeDirectory, withIntermediateDirectories: true)
      let taskPorts = try FreePorts.range(count: 40, on: ["0.0.0.0"])
      let yaml = """
        node: \(id)
        address: \(address)
        peerPort: \(peerPort)
        apiPort: \(apiPort)
        dataDir: \(nodeDirectory)/data
        taskDir: \(nodeDirectory)/tasks
        certDir: \(directory)/certs
        tokenFile: \(directory)/token
        peers:
        \(peers)
        bootstrap: true
        electionTimeoutMs: \(electionTimeoutMs)
        taskPortRange: "\(taskPorts.lowerBound)-\(taskPorts.upperBound)"

        """
      try yaml.write(toFile: "\(nodeDirectory)/node.yaml", atomically: true, encoding: .utf8)
      clusterFile +=
        "  - id: \(id)\n    address: \(address)\n    api: \"http://\(address):\(apiPort)\"\n    peerPort: \(peerPort)\n"
    }
    // As `teal cluster up` writes it, so that `teal chaos partition --dir` works on this cluster.
    try clusterFile.write(toFile: "\(directory)/cluster.yaml", atomically: true, encoding: .utf8)
  }

  var ids: [String] { nodes.map(\.id) }

  func node(_ id: String) -> JepsenNode {
    guard let node = nodes.first(where: { $0.id == id }) else { preconditionFailure("no node \(id)") }
    return node
  }

  func api(_ id: String) -> NodeClient { NodeClient(node: id, host: node(id).address, port: apiPort, token: token) }

  func pid(_ id: String) -> pid_t? { state.withLockedValue { $0.running[id] } }

  func start(_ id: String) throws {
    let node = node(id)
    try state.withLockedValue { state in
      precondition(!state.destroyed, "the cluster was destroyed")
      precondition(state.running[id] == nil, "\(id) is already running")
      let pid = try spawnInOwnGroup(
        Binaries.teal, ["node", "start", "--config", node.configPath], logPath: node.logPath)
      state.running[id] = pid
      state.started[pid] = processStartTime(pid)
      try? "\(pid)\n".write(toFile: "\(node.directory)/node.pid", atomically: true, encoding: .utf8)
    }
  }

  func startAll() throws { for id in ids { try start(id) } }

  /// SIGKILL to the node's process and group (its tasks keep running, as after a crash of teal).
  func kill9(_ id: String) async throws {
    harvestLedgers()
    guard let pid = pid(id) else { throw HarnessError(description: "\(id) is not running") }
    kill(pid, SIGCONT)
    kill(-pid, SIGKILL)
    kill(pid, SIGKILL)
    try await waitForExit(id, pid: pid, timeout: .seconds(10))
  }

  /// SIGTERM (the node drains and exits); SIGKILL after `timeout`.
  func terminate(_ id: String, timeout: Duration = .seconds(20)) async throws {
    harvestLedgers()
    guard let pid = pid(id) else { throw HarnessError(description: "\(id) is not running") }
    kill(pid, SIGTERM)
    do { try await waitForExit(id, pid: pid, timeout: timeout) } catch {
      kill(-pid, SIGKILL)
      kill(pid, SIGKILL)
      try await waitForExit(id, pid: pid, timeout: .seconds(10))
    }
  }

  func signal(_ id: String, _ number: Int32) {
    if let pid = pid(id) { kill(pid, number) }
  }

  private func waitForExit(_ id: String, pid: pid_t, timeout: Duration) async throws {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
      var status: Int32 = 0
      if waitpid(pid, &status, WNOHANG) == pid {
        state.withLockedValue { if $0.running[id] == pid { $0.running[id] = nil } }
        return
      }
      try await Task.sleep(for: .milliseconds(20))
    }
    throw HarnessError(description: "\(id) (pid \(pid)) did not exit within \(timeout)")
  }

  /// Remembers every task process group the nodes' ledgers name, for the cleanup.
  func harvestLedgers() {
    var found: [pid_t: UInt64] = [:]
    for id in ids {
      guard let text = try? String(contentsOfFile: node(id).ledgerPath, encoding: .utf8) else { continue }
      for line in text.split(whereSeparator: \.isNewline) {
        let fields = line.split(separator: " ", maxSplits: 2)
        guard fields.count == 3, let group = pid_t(fields[0]), group > 1, let start = UInt64(fields[1]) else {
          continue
        }
        found[group] = start
      }
    }
    state.withLockedValue { state in
      for (group, start) in found where state.taskGroups[group] == nil {
        state.taskGroups[group] = start
        SpawnedProcesses.track(group: group, startTime: start)
      }
    }
  }

  /// Kills every node and task group seen (SIGCONT first: a paused node must die too), reaps the
  /// nodes and removes the directory unless `keepDirectory`.
  func destroy(keepDirectory: Bool) {
    harvestLedgers()
    let (started, groups) = state.withLockedValue { state -> ([pid_t: UInt64?], [pid_t: UInt64]) in
      state.destroyed = true
      return (state.started, state.taskGroups)
    }
    for (pid, start) in started {
      killGroup(pid, startTime: start, signal: SIGCONT)
      killGroup(pid, startTime: start)
    }
    for (group, start) in groups { killGroup(group, startTime: start) }
    for pid in started.keys {
      var status: Int32 = 0
      _ = waitpid(pid, &status, 0)
      SpawnedProcesses.untrack(group: pid)
    }
    for group in groups.keys { SpawnedProcesses.untrack(group: group) }
    state.withLockedValue { $0.running = [:] }
    if !keepDirectory { try? FileManager.default.removeItem(atPath: directory) }
  }

  func logTails(lines: Int = 30) -> String {
    ids.map { id in
      let text = (try? String(contentsOfFile: node(id).logPath, encoding: .utf8)) ?? "(no log)"
      let tail = text.split(separator: "\n", omittingEmptySubsequences: false).suffix(lines).joined(separator: "\n")
      return "===== \(id) =====\n\(tail)"
    }.joined(separator: "\n")
  }
}
