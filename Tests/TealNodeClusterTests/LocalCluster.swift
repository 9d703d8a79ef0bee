// LocalCluster: N real `teal node start` processes on 127.0.0.1..N, laid out as NODE-CONTRACT.md's
// local cluster, with per-cluster ports, and every process it starts (nodes and, through the task
// ledgers, their tasks) killed by PID and process group on every exit path.

import Foundation
import NIOConcurrencyHelpers
import NIOHTTP1
import TealTestSupport
import TealTraffic
import Testing

#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

struct ClusterNode: Sendable {
  var id: String
  var index: Int
  var address: String
  var directory: String
  var configPath: String { "\(directory)/node.yaml" }
  var logPath: String { "\(directory)/node.log" }
  var ledgerPath: String { "\(directory)/tasks/tasks.ledger" }
  /// This node's `taskPortRange` (disjoint from the other nodes').
  var taskPorts: ClosedRange<Int>
}

final class LocalCluster: Sendable {
  let directory: String
  let nodes: [ClusterNode]
  let peerPort: Int
  let apiPort: Int
  let token: String
  let electionTimeoutMs: Int

  private struct State {
    /// Running node processes by node id.
    var running: [String: pid_t] = [:]
    /// Every node PID ever started, with its start time.
    var started: [pid_t: UInt64?] = [:]
    /// Task process groups seen in any ledger, with their leaders' start time.
    var taskGroups: [pid_t: UInt64] = [:]
    /// Node processes started by another program (not our children).
    var adopted: Set<pid_t> = []
    var destroyed = false
  }
  private let state = NIOLockedValueBox(State())
  /// Nodes added after the start by `teal cluster add-node` / `replace-node`, by id.
  private let joined = NIOLockedValueBox<[String: ClusterNode]>([:])

  /// Lays out a cluster of `count` nodes (certificates, token, one node.yaml each); starts nothing.
  init(nodes count: Int = 3, electionTimeoutMs: Int = 1500) throws {
    precondition((1...9).contains(count), "a local cluster has 1...9 nodes")
    directory =
      FileManager.default.temporaryDirectory.appendingPathComponent(
        "teal-cluster-\(UUID().uuidString.prefix(8))"
      ).path
    self.electionTimeoutMs = electionTimeoutMs
    let addresses = (1...count).map { "127.0.0.\($0)" }
    peerPort = try FreePorts.pick(on: addresses)
    apiPort = try FreePorts.pick(on: addresses)
    var nodes: [ClusterNode] = []
    for index in 1...count {
      nodes.append(
        ClusterNode(
          id: "n\(index)", index: index, address: addresses[index - 1], directory: "\(directory)/n\(index)",
          taskPorts: try FreePorts.range(count: 40, on: ["0.0.0.0"])))
    }
    self.nodes = nodes
    var bytes = [UInt8](repeating: 0, count: 32)
    for index in bytes.indices { bytes[index] = UInt8.random(in: 0...255) }
    token = bytes.map { String(format: "%02x", $0) }.joined()

    let files = FileManager.default
    try files.createDirectory(atPath: directory, withIntermediateDirectories: true)
    let certs = try run(
      Binaries.teal,
      ["certs", "init", "--out", "\(directory)/certs", "--nodes", nodes.map(\.id).joined(separator: ",")]
        + nodes.flatMap { ["--address", "\($0.id)=\($0.address)"] })
    guard certs.status == 0 else { throw SpawnError(description: "teal certs init failed: \(certs.output)") }
    guard
      files.createFile(
        atPath: "\(directory)/token", contents: Data((token + "\n").utf8),
        attributes: [.posixPermissions: 0o600])
    else { throw SpawnError(description: "cannot write \(directory)/token") }
    let peers = nodes.map { "  \($0.id): \($0.address)" }.joined(separator: "\n")
    for node in nodes {
      try files.createDirectory(atPath: node.directory, withIntermediateDirectories: true)
      let yaml = """
        node: \(node.id)
        address: \(node.address)
        peerPort: \(peerPort)
        apiPort: \(apiPort)
        dataDir: \(node.directory)/data
        taskDir: \(node.directory)/tasks
        certDir: \(directory)/certs
        tokenFile: \(directory)/token
        peers:
        \(peers)
        bootstrap: true
        electionTimeoutMs: \(electionTimeoutMs)
        taskPortRange: "\(node.taskPorts.lowerBound)-\(node.taskPorts.upperBound)"

        """
      try yaml.write(toFile: node.configPath, atomically: true, encoding: .utf8)
    }
    // cluster.yaml as `teal cluster up` writes it, so that `teal chaos ... --dir` and the other
    // commands that read a local cluster directory work on this one.
    var clusterFile = "nodes:\n"
    for node in nodes {
      clusterFile +=
        "  - id: \(node.id)\n    address: \(node.address)\n    api: \"http://\(node.address):\(apiPort)\"\n"
        + "    peerPort: \(peerPort)\n"
    }
    try clusterFile.write(toFile: "\(directory)/cluster.yaml", atomically: true, encoding: .utf8)
  }

  func node(_ id: String) -> ClusterNode {
    if let node = nodes.first(where: { $0.id == id }) ?? joined.withLockedValue({ $0[id] }) { return node }
    preconditionFailure("no node \(id) in the cluster")
  }

  /// Records a node that the CLI laid out in this cluster's directory and started (`teal cluster
  /// add-node`), and adopts its process, so that it is stopped and cleaned up like the others.
  @discardableResult
  func adoptJoined(_ id: String, address: String) throws -> pid_t {
    let node = ClusterNode(
      id: id, index: nodes.count + joined.withLockedValue { $0.count } + 1, address: address,
      directory: "\(directory)/\(id)", taskPorts: 0...0)
    joined.withLockedValue { $0[id] = node }
    return try adopt(id)
  }

  func api(_ id: String) -> NodeAPI {
    NodeAPI(node: id, host: node(id).address, port: apiPort, token: token)
  }

  var ids: [String] { nodes.map(\.id) }

  // MARK: - Processes

  /// Starts a node's process (it must not be running).
  func start(_ id: String) throws {
    let node = node(id)
    try state.withLockedValue { state in
      precondition(!state.destroyed, "the cluster was destroyed")
      precondition(state.running[id] == nil, "\(id) is already running")
      try "--- start \(Date()) ---\n".appendLine(to: node.logPath)
      let pid = try spawnInOwnGroup(
        Binaries.teal, ["node", "start", "--config", node.configPath], logPath: node.logPath)
      state.running[id] = pid
      state.started[pid] = processStartTime(pid)
      try? "\(pid)\n".write(toFile: "\(node.directory)/node.pid", atomically: true, encoding: .utf8)
    }
  }

  func startAll() throws {
    for id in ids { try start(id) }
  }

  func pid(_ id: String) -> pid_t? { state.withLockedValue { $0.running[id] } }

  /// Takes over a node process another program started (`teal chaos kill-leader
  /// --restart-after`): its PID from `nI/node.pid`, so that it is stopped and cleaned up like the
  /// others. Not our child: its exit is seen by polling, not by `waitpid`.
  func adopt(_ id: String) throws -> pid_t {
    let path = "\(node(id).directory)/node.pid"
    guard let text = try? String(contentsOfFile: path, encoding: .utf8),
      let pid = pid_t(text.trimmingCharacters(in: .whitespacesAndNewlines)), pid > 1
    else { throw SpawnError(description: "no PID in \(path)") }
    let start = processStartTime(pid)
    state.withLockedValue { state in
      state.running[id] = pid
      state.started[pid] = start
      state.adopted.insert(pid)
    }
    SpawnedProcesses.track(group: pid, startTime: start)
    return pid
  }

  /// Whether a process of this cluster has exited: reaped if it is our child, else gone or a zombie.
  private func exitOf(_ pid: pid_t) -> ChildExit? {
    let adopted = state.withLockedValue { $0.adopted.contains(pid) }
    guard adopted else { return reap(pid) }
    if kill(pid, 0) != 0 && errno == ESRCH { return .signalled(SIGKILL) }
    return nil
  }

  func isRunning(_ id: String) -> Bool {
    guard let pid = pid(id) else { return false }
    if let exit = exitOf(pid) {
      forget(id, pid: pid, exit: exit)
      return false
    }
    return true
  }

  /// SIGKILL to the node's process and its process group (its tasks live in groups of their own
  /// and keep running, as after a real crash); waits until it is gone.
  /// SIGKILL of node `id` (its process and group); with `withTasks`, first of every task process
  /// group its ledger lists (as `teal chaos kill-leader --with-tasks` does).
  func kill9(_ id: String, withTasks: Bool) async throws {
    if withTasks, let node = nodes.first(where: { $0.id == id }) {
      for entry in readTaskLedger(node.ledgerPath) { killGroup(entry.group, startTime: entry.startTime) }
    }
    try await kill9(id)
  }

  func kill9(_ id: String) async throws {
    harvestLedgers()
    guard let pid = pid(id) else { throw SpawnError(description: "\(id) is not running") }
    kill(-pid, SIGKILL)
    kill(pid, SIGKILL)
    let exit = try await waitForExit(id, pid: pid, timeout: .seconds(10))
    forget(id, pid: pid, exit: exit)
  }

  /// SIGTERM to the node; waits for it to exit (it drains first) and returns how it ended.
  @discardableResult
  func sigterm(_ id: String, timeout: Duration = .seconds(45)) async throws -> ChildExit {
    harvestLedgers()
    guard let pid = pid(id) else { throw SpawnError(description: "\(id) is not running") }
    kill(pid, SIGTERM)
    let exit = try await waitForExit(id, pid: pid, timeout: timeout)
    forget(id, pid: pid, exit: exit)
    return exit
  }

  func sigstop(_ id: String) throws {
    guard let pid = pid(id) else { throw SpawnError(description: "\(id) is not running") }
    kill(pid, SIGSTOP)
  }

  func sigcont(_ id: String) throws {
    guard let pid = pid(id) else { throw SpawnError(description: "\(id) is not running") }
    kill(pid, SIGCONT)
  }

  /// Starts a node again from its data directory (it must have stopped).
  func restart(_ id: String) throws {
    if isRunning(id) { throw SpawnError(description: "\(id) is still running; stop it first") }
    try start(id)
  }

  private func waitForExit(_ id: String, pid: pid_t, timeout: Duration) async throws -> ChildExit {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
      if let exit = exitOf(pid) { return exit }
      try await Task.sleep(for: .milliseconds(20))
    }
    throw SpawnError(description: "\(id) (pid \(pid)) did not exit within \(timeout)")
  }

  private func forget(_ id: String, pid: pid_t, exit: ChildExit) {
    state.withLockedValue { state in
      if state.running[id] == pid { state.running[id] = nil }
    }
    // A foreign node (`startForeign`) is not one of `nodes`: its own log is left alone.
    if let node = nodes.first(where: { $0.id == id }) ?? joined.withLockedValue({ $0[id] }) {
      try? "--- \(id) pid \(pid): \(exit) ---\n".appendLine(to: node.logPath)
    }
  }

  /// Remembers every task process group the nodes' ledgers name, so that cleanup kills them even
  /// after a node rewrote its ledger.
  func harvestLedgers() {
    var found: [pid_t: UInt64] = [:]
    for node in nodes + joined.withLockedValue({ Array($0.values) }) {
      for entry in readTaskLedger(node.ledgerPath) { found[entry.group] = entry.startTime }
    }
    guard !found.isEmpty else { return }
    state.withLockedValue { state in
      for (group, start) in found where state.taskGroups[group] == nil {
        state.taskGroups[group] = start
        SpawnedProcesses.track(group: group, startTime: start == 0 ? nil : start)
      }
    }
  }

  /// Kills every node and every task process group seen (SIGKILL, by PID and group), reaps the
  /// nodes, and removes the directory unless `keepDirectory`.
  func destroy(keepDirectory: Bool = false) {
    harvestLedgers()
    let (started, groups) = state.withLockedValue { state -> ([pid_t: UInt64?], [pid_t: UInt64]) in
      state.destroyed = true
      return (state.started, state.taskGroups)
    }
    for (pid, start) in started { killGroup(pid, startTime: start) }
    for (group, start) in groups { killGroup(group, startTime: start == 0 ? nil : start) }
    for pid in started.keys {
      var status: Int32 = 0
      _ = waitpid(pid, &status, 0)
      SpawnedProcesses.untrack(group: pid)
    }
    for group in groups.keys { SpawnedProcesses.untrack(group: group) }
    state.withLockedValue { $0.running = [:] }
    if !keepDirectory { try? FileManager.default.removeItem(atPath: directory) }
  }

  // MARK: - Logs

  /// The last `lines` lines of a node's log.
  func logTail(_ id: String, lines: Int = 40) -> String {
    guard let text = try? String(contentsOfFile: node(id).logPath, encoding: .utf8) else { return "(no log)" }
    return text.split(separator: "\n", omittingEmptySubsequences: false).suffix(lines).joined(separator: "\n")
  }

  func logTails(lines: Int = 40) -> String {
    ids.map { "===== \($0) (\(node($0).logPath)) =====\n\(logTail($0, lines: lines))" }.joined(separator: "\n")
  }
}

extension String {
  fileprivate func appendLine(to path: String) throws {
    if let handle = FileHandle(forWritingAtPath: path) {
      defer { try? handle.close() }
      try handle.seekToEnd()
      try handle.write(contentsOf: Data(utf8))
    } else {
      try write(toFile: path, atomically: false, encoding: .utf8)
    }
  }
}

// MARK: - Running a test against a cluster

/// Lays out and starts a cluster, runs `body`, and then kills every process it started, on every
/// path (return, thrown error, cancellation by a time limit). When `body` throws, the nodes' log
/// tails are printed and the directory is kept for inspection.
func withCluster<T: Sendable>(
  nodes count: Int = 3, electionTimeoutMs: Int = 1500, start: Bool = true,
  _ body: (LocalCluster) async throws -> T
) async throws -> T {
  let cluster = try LocalCluster(nodes: count, electionTimeoutMs: electionTimeoutMs)
  do {
    if start {
      try cluster.startAll()
      try await cluster.waitForLeader()
    }
    let result = try await body(cluster)
    cluster.destroy()
    return result
  } catch {
    print("cluster test failed: \(error)\n\(cluster.logTails())\n(cluster directory kept: \(cluster.directory))")
    cluster.destroy(keepDirectory: true)
    throw error
  }
}

/// Polls `condition` every `interval` until it holds or `timeout` passes. Errors thrown by the
/// condition (a node not answering yet) count as "not yet"; the last one is in the failure.
func waitUntil(
  _ what: String, timeout: Duration = .seconds(30), interval: Duration = .milliseconds(100),
  _ condition: () async throws -> Bool
) async throws {
  let deadline = ContinuousClock.now + timeout
  var lastError: (any Error)?
  while true {
    do {
      if try await condition() { return }
      lastError = nil
    } catch {
      lastError = error
    }
    if ContinuousClock.now >= deadline { break }
    try await Task.sleep(for: interval)
  }
  throw APIError(
    description: "timed out after \(timeout) waiting for \(what)" + (lastError.map { "; last error: \($0)" } ?? ""))
}

extension LocalCluster {
  /// The leader as every running node (or `among`) reports it, once they all agree and every
  /// one of them lists `expectUp` members up.
  @discardableResult
  func waitForLeader(
    among: [String]? = nil, expectUp: Int? = nil, excluding old: String? = nil, timeout: Duration = .seconds(40)
  ) async throws -> String {
    let members = among ?? ids
    let up = expectUp ?? members.count
    var leader = ""
    try await waitUntil("one leader agreed by \(members) with \(up) members up", timeout: timeout) {
      var seen: Set<String> = []
      for id in members {
        let status = try await api(id).cluster()
        guard let reported = status.leader, status.members.filter({ $0.state == "up" }).count == up else {
          return false
        }
        seen.insert(reported)
      }
      guard seen.count == 1, let only = seen.first, only != old, members.contains(only) else { return false }
      leader = only
      return true
    }
    return leader
  }

  func followers(of leader: String) -> [String] { ids.filter { $0 != leader } }
}

// MARK: - A node of another cluster

/// A node laid out with a CA of its own, configured to join this cluster (tests of admission).
struct ForeignNode: Sendable {
  var id: String
  var directory: String
  var configPath: String { "\(directory)/node.yaml" }
  var logPath: String { "\(directory)/node.log" }
}

extension LocalCluster {
  /// Lays out `id` at `address` with certificates from a new, unrelated CA and this cluster's
  /// token, peers and ports, not as a founder.
  func layOutForeignNode(_ id: String, address: String) throws -> ForeignNode {
    let foreign = ForeignNode(id: id, directory: "\(directory)/foreign-\(id)")
    try FileManager.default.createDirectory(atPath: foreign.directory, withIntermediateDirectories: true)
    let certs = try run(
      Binaries.teal,
      ["certs", "init", "--out", "\(foreign.directory)/certs", "--nodes", id, "--address", "\(id)=\(address)"])
    guard certs.status == 0 else { throw SpawnError(description: "teal certs init failed: \(certs.output)") }
    let peers = (nodes.map { "  \($0.id): \($0.address)" } + ["  \(id): \(address)"]).joined(separator: "\n")
    let yaml = """
      node: \(id)
      address: \(address)
      peerPort: \(peerPort)
      apiPort: \(apiPort)
      dataDir: \(foreign.directory)/data
      taskDir: \(foreign.directory)/tasks
      certDir: \(foreign.directory)/certs
      tokenFile: \(directory)/token
      peers:
      \(peers)
      bootstrap: false
      electionTimeoutMs: \(electionTimeoutMs)

      """
    try yaml.write(toFile: foreign.configPath, atomically: true, encoding: .utf8)
    return foreign
  }

  func startForeign(_ node: ForeignNode) throws {
    let pid = try spawnInOwnGroup(Binaries.teal, ["node", "start", "--config", node.configPath], logPath: node.logPath)
    try "\(pid)\n".write(toFile: "\(node.directory)/node.pid", atomically: true, encoding: .utf8)
    state.withLockedValue { state in
      state.running[node.id] = pid
      state.started[pid] = processStartTime(pid)
    }
  }

  func stopForeign(_ node: ForeignNode) {
    guard let pid = pid(node.id) else { return }
    kill(-pid, SIGKILL)
    kill(pid, SIGKILL)
    if let exit = reap(pid) { forget(node.id, pid: pid, exit: exit) }
  }
}
