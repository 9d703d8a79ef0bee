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
      killGroup(pid, startTime: start, signal: SIGKILL)
    }
    for (group, start) in groups { killGroup(group, startTime: start, signal: SIGKILL) }
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

// MARK: - Processes

/// Every process group this test process started, killed at exit even past a crash.
enum SpawnedProcesses {
  private static let groups = NIOLockedValueBox<[pid_t: UInt64?]>([:])
  private static let registered = NIOLockedValueBox(false)

  static func track(group: pid_t, startTime: UInt64?) {
    groups.withLockedValue { $0[group] = startTime }
    registered.withLockedValue { done in
      guard !done else { return }
      done = true
      atexit {
        for (group, start) in SpawnedProcesses.groups.withLockedValue({ $0 }) {
          killGroup(group, startTime: start, signal: SIGCONT)
          killGroup(group, startTime: start, signal: SIGKILL)
        }
      }
    }
  }

  static func untrack(group: pid_t) { groups.withLockedValue { _ = $0.removeValue(forKey: group) } }
}

/// `signal` to a process group and its leader, unless the leader's PID now names another process.
func killGroup(_ group: pid_t, startTime: UInt64?, signal: Int32) {
  if let startTime, let now = processStartTime(group), now != startTime { return }
  kill(-group, signal)
  kill(group, signal)
}

/// Starts `executable` in a process group of its own, output appended to `logPath`.
func spawnInOwnGroup(_ executable: String, _ arguments: [String], logPath: String) throws -> pid_t {
  var actions = posix_spawn_file_actions_t()
  posix_spawn_file_actions_init(&actions)
  defer { posix_spawn_file_actions_destroy(&actions) }
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
  posix_spawn_file_actions_addopen(&actions, 1, logPath, O_WRONLY | O_CREAT | O_APPEND, 0o644)
  posix_spawn_file_actions_adddup2(&actions, 1, 2)
  if let closeFrom = spawnCloseFrom { _ = closeFrom(&actions, 3) }
  var attributes = posix_spawnattr_t()
  posix_spawnattr_init(&attributes)
  defer { posix_spawnattr_destroy(&attributes) }
  posix_spawnattr_setpgroup(&attributes, 0)
  var noSignals = sigset_t()
  sigemptyset(&noSignals)
  posix_spawnattr_setsigmask(&attributes, &noSignals)
  var defaults = sigset_t()
  sigemptyset(&defaults)
  for signal in [SIGTERM, SIGINT, SIGPIPE, SIGHUP] { sigaddset(&defaults, signal) }
  posix_spawnattr_setsigdefault(&attributes, &defaults)
  posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
  let argv: [UnsafeMutablePointer<CChar>?] = ([executable] + arguments).map { strdup($0) } + [nil]
  defer { for pointer in argv { free(pointer) } }
  var pid: pid_t = 0
  let result = posix_spawn(&pid, executable, &actions, &attributes, argv, environ)
  guard result == 0 else {
    throw HarnessError(description: "cannot start \(executable): \(String(cString: strerror(result)))")
  }
  SpawnedProcesses.track(group: pid, startTime: processStartTime(pid))
  return pid
}

private let spawnCloseFrom: (@convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32)? = {
  guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "posix_spawn_file_actions_addclosefrom_np") else {
    return nil
  }
  return unsafeBitCast(
    symbol, to: (@convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32).self)
}()

/// Reaps a child if it has exited (never blocks); its status, or nil while it runs.
func reapChild(_ pid: pid_t) -> Int32? {
  var status: Int32 = 0
  return waitpid(pid, &status, WNOHANG) == pid ? status : nil
}

/// Field 22 of /proc/PID/stat: the process's start time, to tell it from a later one with its PID.
func processStartTime(_ pid: pid_t) -> UInt64? {
  guard let text = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
    let close = text.lastIndex(of: ")")
  else { return nil }
  let fields = text[text.index(after: close)...].split(separator: " ")
  guard fields.count > 19 else { return nil }
  return UInt64(fields[19])
}

enum FreePorts {
  private static let handedOut = NIOLockedValueBox<Set<Int>>([])

  static func pick(on hosts: [String]) throws -> Int {
    for _ in 0..<200 {
      guard let port = bindable(host: hosts[0], port: 0) else { continue }
      guard handedOut.withLockedValue({ $0.insert(port).inserted }) else { continue }
      if hosts.dropFirst().allSatisfy({ bindable(host: $0, port: port) != nil }) { return port }
    }
    throw HarnessError(description: "no port free on all of \(hosts)")
  }

  static func range(count: Int, on hosts: [String]) throws -> ClosedRange<Int> {
    for _ in 0..<200 {
      let base = Int.random(in: 20_000...31_000)
      let candidate = base...(base + count - 1)
      if handedOut.withLockedValue({ !$0.isDisjoint(with: candidate) }) { continue }
      if candidate.allSatisfy({ port in hosts.allSatisfy { bindable(host: $0, port: port) != nil } }) {
        handedOut.withLockedValue { $0.formUnion(candidate) }
        return candidate
      }
    }
    throw HarnessError(description: "no \(count) consecutive free ports on \(hosts)")
  }

  static func bindable(host: String, port: Int) -> Int? {
    #if canImport(Glibc)
      let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    #else
      let fd = socket(AF_INET, SOCK_STREAM, 0)
    #endif
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = in_port_t(UInt16(port).bigEndian)
    guard inet_pton(AF_INET, host, &address.sin_addr) == 1 else { return nil }
    let bound = withUnsafePointer(to: &address) {
      $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    guard bound == 0 else { return nil }
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let named = withUnsafeMutablePointer(to: &address) {
      $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
    }
    guard named == 0 else { return nil }
    return Int(UInt16(bigEndian: address.sin_port))
  }
}
