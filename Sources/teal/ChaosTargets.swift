import ArgumentParser
import Dispatch
import Foundation
import TealChaos
import TealClient
import Yams

#if canImport(Glibc)
  import Glibc
#endif

// The cluster every `teal chaos` command works on, and how it reaches each node's process and
// network: the local cluster of `teal cluster up` (`--dir`: node.pid, spawnNode, its task ledgers)
// or a cluster described by a targets file (`--targets`: each node on this machine, found by its
// --config path in /proc, or on a host reached through a command prefix such as `ssh root@HOST`,
// through which every fault command runs). Both go through ``ClusterTargets`` and ``ChaosNode``.
// Docs/CHAOS.md.

/// `--dir` or `--targets`: which cluster a chaos command works on.
struct ClusterOptions: ParsableArguments {
  @Option(name: .long, help: "The local cluster directory of `teal cluster up` (default: .teal).")
  var dir: String?

  @Option(
    name: .long,
    help: ArgumentHelp(
      "A cluster `teal cluster up` did not start, described by a targets file (Docs/CHAOS.md).", valueName: "file"))
  var targets: String?

  func validate() throws {
    if dir != nil && targets != nil { throw ValidationError("give --dir or --targets, not both") }
  }

  func load() throws -> ClusterTargets {
    if let targets { return try ClusterTargets.load(targetsFile: targets) }
    return try ClusterTargets.load(dir: dir ?? ".teal")
  }
}

/// Where a node's host is, for the commands that make its faults.
enum NodeHost: Hashable, Sendable {
  /// This machine.
  case local
  /// A command prefix that runs one shell command line (its last argument) on the node's host:
  /// `[ssh, root@HOST]`, `[ssh, HOST, sudo]`, `[/bin/sh, -c]`.
  case exec([String])

  var label: String {
    switch self {
    case .local: "this machine"
    case .exec(let prefix): prefix.joined(separator: " ")
    }
  }
}

/// A node process as found: its PID, its start time (clock ticks since boot, to tell it from a
/// later process that got the same PID) and its process group.
struct NodeProcess: Equatable, Sendable {
  var pid: pid_t
  var startTicks: UInt64
  var group: pid_t
  var leadsItsGroup: Bool { group == pid }
}

/// One node as chaos sees it: its addresses and how to reach its process.
struct ChaosNode: Sendable {
  enum Locator: Sendable {
    /// `teal cluster up`'s directory: the PID in nI/node.pid, checked to be that node.
    case layout(ClusterLayout)
    /// A targets file's node: the `teal node start` process whose arguments name this config
    /// (nil: the file gives none, and process faults say so).
    case config(String?)
  }

  let id: String
  let address: String
  let api: String
  let peerPort: Int
  let host: NodeHost
  let locator: Locator
  /// The task directory on the node's host (the ledger is `tasks.ledger` in it).
  let taskDir: String?
  /// The targets file's start command line.
  let startCommand: String?
  /// `targets.yaml nodes[1]`, or the cluster file: where a missing field is named.
  let origin: String

  /// Where to look when it misbehaves.
  var logHint: String {
    if case .layout(let layout) = locator { return "see \(layout.logFile(id))" }
    return "see its log on \(host.label)"
  }

  // MARK: Finding the process

  /// The node's running process, or nil when none is running. Never a PID that is not this node.
  func process() throws -> NodeProcess? {
    switch locator {
    case .layout(let layout):
      guard let pid = runningPID(layout, id), let start = processStartTicks(pid) else { return nil }
      return NodeProcess(pid: pid, startTicks: start, group: getpgid(pid))
    case .config(let config):
      guard let config else {
        throw CommandFailure(
          message: "\(id) has no config in \(origin): process faults find the node's process by the "
            + "--config path of its `teal node start` command line")
      }
      let found = try listProcesses(naming: config).filter { isTealNodeCommand($0.arguments, config: config) }
      guard found.count <= 1 else {
        throw CommandFailure(
          message: "\(found.count) `teal node start` processes on \(host.label) name \(config) (pids "
            + found.map { String($0.process.pid) }.joined(separator: ", ") + "): which one is \(id)?")
      }
      return found.first?.process
    }
  }

  /// The processes on the node's host whose command line contains `text` (not zombies).
  private func listProcesses(naming text: String) throws -> [(process: NodeProcess, arguments: [String])] {
    switch host {
    case .local:
      let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
      return entries.compactMap { entry -> (process: NodeProcess, arguments: [String])? in
        guard let pid = pid_t(entry), let data = FileManager.default.contents(atPath: "/proc/\(entry)/cmdline"),
          data.range(of: Data(text.utf8)) != nil,
          let stat = FileManager.default.contents(atPath: "/proc/\(entry)/stat"),
          let process = parseStat(String(decoding: stat, as: UTF8.self)), process.pid == pid, !process.zombie
        else { return nil }
        return (process.process, data.split(separator: 0).map { String(decoding: $0, as: UTF8.self) })
      }
    case .exec:
      // One line per candidate: its stat line, \u{2}, its arguments separated by \u{1}.
      let script = """
        for d in /proc/[0-9]*; do \
        c=$(tr '\\000' '\\001' < "$d/cmdline" 2>/dev/null) || continue; \
        case "$c" in *\(shellQuote(text))*) ;; *) continue ;; esac; \
        s=$(cat "$d/stat" 2>/dev/null) || continue; \
        printf '%s\\002%s\\n' "$s" "$c"; done
        """
      let output = try runOnHost(script, what: "list the processes").output
      return output.split(separator: "\n").compactMap { line -> (process: NodeProcess, arguments: [String])? in
        let parts = line.split(separator: "\u{2}", maxSplits: 1, omittingEmptySubsequences: false)
        guard parts.count == 2, let process = parseStat(String(parts[0])), !process.zombie else { return nil }
        let arguments = parts[1].split(separator: "\u{1}", omittingEmptySubsequences: false).map(String.init)
        return (process.process, arguments.last == "" ? Array(arguments.dropLast()) : arguments)
      }
    }
  }

  /// Whether `process` still runs (same PID, same start time, not a zombie).
  func isAlive(_ process: NodeProcess) -> Bool {
    let stat: String?
    switch host {
    case .local:
      stat = FileManager.default.contents(atPath: "/proc/\(process.pid)/stat").map {
        String(decoding: $0, as: UTF8.self)
      }
    case .exec:
      // A host that does not answer counts as "still there": the caller's deadline decides.
      guard let answer = try? runOnHost("cat /proc/\(process.pid)/stat 2>/dev/null || true", what: "read /proc")
      else { return true }
      stat = answer.output
    }
    guard let stat, let now = parseStat(stat) else { return false }
    return now.process.startTicks == process.startTicks && !now.zombie
  }

  // MARK: Signals

  /// Sends `signal` to `process` (and its process group with `group`), after checking that its
  /// PID still names that process.
  func signal(_ process: NodeProcess, _ signal: Int32, group: Bool = false) throws {
    let name = signalName(signal)
    switch host {
    case .local:
      guard processStartTicks(process.pid) == process.startTicks else {
        throw CommandFailure(message: "\(id) (pid \(process.pid)) is no longer running")
      }
      guard kill(process.pid, signal) == 0 else {
        throw CommandFailure(
          message: "cannot send SIG\(name) to \(id) (pid \(process.pid)): \(String(cString: strerror(errno)))")
      }
      if group && process.leadsItsGroup { kill(-process.pid, signal) }
    case .exec:
      let pid = process.pid
      let script =
        "s=$(sed 's/^.*) //' /proc/\(pid)/stat 2>/dev/null | cut -d' ' -f20); "
        + "[ \"$s\" = \"\(process.startTicks)\" ] || { echo 'pid \(pid) is no longer running'; exit 3; }; "
        + "kill -s \(name) \(pid) || exit 4"
        + (group && process.leadsItsGroup ? "; kill -s \(name) -- -\(pid) 2>/dev/null; true" : "")
      let result = try runOnHost(script, what: "send SIG\(name) to pid \(pid)", check: false)
      guard result.status == 0 else {
        throw CommandFailure(
          message: "cannot send SIG\(name) to \(id) (pid \(pid)) through \(host.label): \(result.output)"
            + (result.status == 4 ? " (kill rights on the node's host: run as the node's user or root)" : ""))
      }
    }
  }

  /// SIGKILL to a node that did not stop: its process group, and (on this machine) the task
  /// process groups of its children, which would outlive it.
  func killHard(_ process: NodeProcess) {
    switch host {
    case .local:
      guard processStartTicks(process.pid) == process.startTicks else { return }
      let tasks = childProcesses(of: process.pid)
      if process.leadsItsGroup { kill(-process.pid, SIGKILL) } else { kill(process.pid, SIGKILL) }
      for task in tasks {
        if getpgid(task) == task { kill(-task, SIGKILL) } else { kill(task, SIGKILL) }
      }
    case .exec:
      try? signal(process, SIGKILL, group: true)
    }
  }

  // MARK: Tasks

  /// The task process groups in the node's ledger whose leader is still the process recorded.
  func taskGroups() throws -> [(group: pid_t, task: String)] {
    if case .layout(let layout) = locator { return liveTaskGroups(layout, id) }
    let directory: String
    if let taskDir {
      directory = taskDir
    } else if host == .local, case .config(let config?) = locator,
      let data = FileManager.default.contents(atPath: config),
      let object = try? Yams.load(yaml: String(decoding: data, as: UTF8.self)) as? [String: Any],
      let configured = object["taskDir"] as? String, !configured.isEmpty
    {
      directory = configured
    } else {
      throw CommandFailure(
        message: "\(id) has no taskDir in \(origin): task faults read the node's task ledger (TASKDIR/tasks.ledger)")
    }
    let ledger = directory + "/tasks.ledger"
    switch host {
    case .local:
      guard let data = FileManager.default.contents(atPath: ledger) else { return [] }
      return parseLedger(String(decoding: data, as: UTF8.self), check: { processStartTicks($0) })
    case .exec:
      let script =
        "[ -r \(shellQuote(ledger)) ] || exit 0; while read g s t; do "
        + "c=$(sed 's/^.*) //' /proc/$g/stat 2>/dev/null | cut -d' ' -f20); "
        + "[ \"$c\" = \"$s\" ] && echo \"$g $s $t\"; done < \(shellQuote(ledger)); true"
      let output = try runOnHost(script, what: "read the task ledger").output
      return parseLedger(output, check: { _ in nil }, trusted: true)
    }
  }

  /// SIGKILL to task process groups (from ``taskGroups()``, just read).
  func killTaskGroups(_ groups: [pid_t]) {
    guard !groups.isEmpty else { return }
    switch host {
    case .local:
      for group in groups {
        kill(-group, SIGKILL)
        kill(group, SIGKILL)
      }
    case .exec:
      let script = groups.map { "kill -s KILL -- -\($0) 2>/dev/null; kill -s KILL \($0) 2>/dev/null" }.joined(
        separator: "; ")
      _ = try? runOnHost(script + "; true", what: "kill task process groups")
    }
  }

  // MARK: Starting

  /// Starts the node again; returns what was done, for the output.
  func start() throws -> (pid: pid_t?, note: String) {
    switch locator {
    case .layout(let layout):
      try? FileManager.default.removeItem(atPath: layout.pidFile(id))
      let pid = try spawnNode(layout, id)
      return (pid, "pid \(pid), log \(layout.logFile(id))")
    case .config:
      guard let startCommand else {
        throw CommandFailure(
          message: "\(id) has no start in \(origin): restarting a node needs its start command line "
            + "(e.g. `systemctl start teal`)")
      }
      let result = try runOnHost(startCommand, what: "start \(id)", check: false, timeout: .seconds(60))
      guard result.status == 0 else {
        throw CommandFailure(
          message: "\(id)'s start command `\(startCommand)` failed on \(host.label) (exit \(result.status)): "
            + result.output)
      }
      return ((try? process())?.pid, "ran `\(startCommand)` on \(host.label)")
    }
  }

  // MARK: Network

  /// Runs `nft arguments` on the node's host (with `input` on stdin).
  @discardableResult
  func nft(_ arguments: [String], input: String?) throws -> String {
    switch host {
    case .local:
      return try NetworkFaults.nft(arguments, input: input)
    case .exec:
      let script =
        "n=$(command -v nft 2>/dev/null); for d in /usr/sbin /sbin /usr/bin; do "
        + "[ -z \"$n\" ] && [ -x $d/nft ] && n=$d/nft; done; "
        + "[ -n \"$n\" ] || { echo 'nftables is missing (no nft): install it (apt-get install nftables)'; exit 127; }; "
        + "exec \"$n\" " + arguments.map(shellQuote).joined(separator: " ")
      let result = try runOnHost(script, what: "run nft", input: input, check: false)
      guard result.status == 0 else {
        let hint =
          result.output.contains("Operation not permitted") || result.output.contains("Permission denied")
          ? " (nftables needs root or CAP_NET_ADMIN on the node's host)" : ""
        throw CommandFailure(
          message: "nft \(arguments.joined(separator: " ")) failed on \(host.label): \(result.output)\(hint)")
      }
      return result.output
    }
  }

  // MARK: Running commands on the host

  /// Runs the shell command line `script` on the node's host: `/bin/sh -c SCRIPT` here, or
  /// `PREFIX... "sh -c 'SCRIPT'"` through the exec prefix (which must run its last argument as a
  /// shell command line, as ssh and `sh -c` do). At most `timeout` (then SIGKILL).
  func runOnHost(
    _ script: String, what: String, input: String? = nil, check: Bool = true, timeout: Duration = .seconds(30)
  ) throws -> (status: Int32, output: String) {
    let command: [String]
    switch host {
    case .local: command = ["/bin/sh", "-c", script]
    // One argument that any POSIX shell runs as `sh -c SCRIPT`: ssh hands it to the remote login
    // shell, `[ssh, HOST, sudo]` makes it `sudo sh -c SCRIPT`, `[/bin/sh, -c]` runs it as is.
    case .exec(let prefix): command = prefix + ["sh -c " + shellQuote(script)]
    }
    let result = try runBounded(command, input: input, timeout: timeout)
    if check && result.status != 0 {
      throw CommandFailure(
        message: "cannot \(what) of \(id) on \(host.label) (exit \(result.status)): \(result.output)")
    }
    return result
  }
}

/// Runs `command` (its first word looked up in PATH unless it has a `/`), `input` on stdin,
/// stdout and stderr to a temporary file, for at most `timeout` (then SIGKILL). Spawned directly,
/// every descriptor above 2 closed in the child, and reaped by its own PID: a start command that
/// leaves a node running in the background cannot hold anything of ours open (Foundation's
/// Process waits for a socket every descendant inherits, and would wait for the node's exit).
func runBounded(_ command: [String], input: String?, timeout: Duration) throws -> (status: Int32, output: String) {
  precondition(!command.isEmpty, "an empty command")
  let arguments = command[0].contains("/") ? command : ["/usr/bin/env"] + command
  var template = Array((NSTemporaryDirectory() + "/teal-chaos-XXXXXX").utf8CString)
  let descriptor = mkstemp(&template)
  guard descriptor >= 0 else {
    throw CommandFailure(message: "cannot create a temporary file: \(String(cString: strerror(errno)))")
  }
  let path = String(decoding: template.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
  defer {
    close(descriptor)
    unlink(path)
  }
  var ends: [Int32] = [-1, -1]
  guard pipe(&ends) == 0 else { throw CommandFailure(message: "pipe() failed: \(String(cString: strerror(errno)))") }

  var actions = posix_spawn_file_actions_t()
  posix_spawn_file_actions_init(&actions)
  defer { posix_spawn_file_actions_destroy(&actions) }
  if input == nil {
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
  } else {
    posix_spawn_file_actions_adddup2(&actions, ends[0], 0)
  }
  posix_spawn_file_actions_adddup2(&actions, descriptor, 1)
  posix_spawn_file_actions_adddup2(&actions, descriptor, 2)
  if let closeFrom = spawnCloseFrom { _ = closeFrom(&actions, 3) }
  let (spawned, pid) = spawnProcess(arguments[0], arguments, actions: &actions, newProcessGroup: false)
  close(ends[0])
  guard spawned == 0 else {
    close(ends[1])
    throw CommandFailure(message: "cannot run \(command[0]): \(String(cString: strerror(spawned)))")
  }
  if let input {
    // Bounded by the kernel's pipe buffer: a ruleset is a few hundred bytes.
    let bytes = Array(input.utf8)
    var written = 0
    while written < bytes.count {
      let count = bytes[written...].withUnsafeBytes { write(ends[1], $0.baseAddress, $0.count) }
      if count <= 0 { break }
      written += count
    }
  }
  close(ends[1])
  let clock = ContinuousClock()
  let deadline = clock.now + timeout
  var status: Int32 = 0
  while true {
    let result = waitpid(pid, &status, WNOHANG)
    if result == pid { break }
    if result < 0 && errno != EINTR {
      throw CommandFailure(message: "lost `\(command[0])` (pid \(pid)): \(String(cString: strerror(errno)))")
    }
    if clock.now >= deadline {
      kill(pid, SIGKILL)
      _ = waitpid(pid, &status, 0)
      throw CommandFailure(
        message: "`\(command.joined(separator: " "))` did not finish within \(formatSeconds(timeout))")
    }
    usleep(5_000)
  }
  let code: Int32 = status & 0x7f == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
  let text = FileManager.default.contents(atPath: path).map { String(decoding: $0, as: UTF8.self) } ?? ""
  return (code, text.trimmingCharacters(in: .whitespacesAndNewlines))
}

/// glibc's `posix_spawn_file_actions_addclosefrom_np` (2.34+; the Swift importer does not see
/// it), or nil where the C library lacks it.
private let spawnCloseFrom: (@convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32)? = {
  guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "posix_spawn_file_actions_addclosefrom_np") else {
    return nil
  }
  return unsafeBitCast(
    symbol, to: (@convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32).self)
}()

/// `text` as one word of a POSIX shell command line.
func shellQuote(_ text: String) -> String {
  "'" + text.replacingOccurrences(of: "'", with: "'\\''") + "'"
}

/// Whether `arguments` is `teal... node start ... --config CONFIG` (or `--config=CONFIG`).
func isTealNodeCommand(_ arguments: [String], config: String) -> Bool {
  guard let program = arguments.first, URL(fileURLWithPath: program).lastPathComponent.hasPrefix("teal"),
    let node = arguments.firstIndex(of: "node"), arguments.count > node + 1, arguments[node + 1] == "start"
  else { return false }
  return arguments.contains(config) || arguments.contains("--config=\(config)")
}

/// A /proc/PID/stat line: the process, and whether it is a zombie.
func parseStat(_ line: String) -> (process: NodeProcess, pid: pid_t, zombie: Bool)? {
  guard let open = line.firstIndex(of: "("), let close = line.lastIndex(of: ")"),
    let pid = pid_t(line[..<open].trimmingCharacters(in: .whitespaces))
  else { return nil }
  // After "(comm)": state (field 3), ppid, pgrp (field 5), ..., starttime (field 22).
  let fields = line[line.index(after: close)...].split(separator: " ")
  guard fields.count > 19, let group = pid_t(fields[2]), let start = UInt64(fields[19]) else { return nil }
  return (NodeProcess(pid: pid, startTicks: start, group: group), pid, fields[0] == "Z")
}

/// Ledger lines `<pgid> <starttime> <taskID>` whose group leader still started at that time.
private func parseLedger(
  _ text: String, check: (pid_t) -> UInt64?, trusted: Bool = false
) -> [(group: pid_t, task: String)] {
  text.split(whereSeparator: \.isNewline).compactMap { line in
    let fields = line.split(separator: " ", maxSplits: 2)
    guard fields.count == 3, let group = pid_t(fields[0]), group > 1, let start = UInt64(fields[1]) else { return nil }
    guard trusted || check(group) == start else { return nil }
    return (group, String(fields[2]))
  }
}

private func signalName(_ signal: Int32) -> String {
  switch signal {
  case SIGKILL: "KILL"
  case SIGSTOP: "STOP"
  case SIGCONT: "CONT"
  case SIGTERM: "TERM"
  case SIGINT: "INT"
  default: preconditionFailure("no name for signal \(signal)")
  }
}

// MARK: - The cluster

/// The nodes a chaos command works on, the API credentials, and the nftables table of this cluster.
struct ClusterTargets: Sendable {
  /// `the cluster in /home/me/.teal` or `the cluster of targets.yaml`, for messages.
  let description: String
  /// What to do when it has no node running (`teal cluster up --dir X` first).
  let startHint: String
  let nodes: [ChaosNode]
  let token: String?
  /// The CA for `https://` APIs (nil: plain HTTP).
  let caFile: String?
  /// `teal_` and 12 hex digits of a hash of the cluster directory's path (or the targets file's
  /// `name`, else its path): one nftables table per cluster.
  let tableName: String

  /// The local cluster of `teal cluster up` in `dir`.
  static func load(dir: String) throws -> ClusterTargets {
    let layout = ClusterLayout(dir: dir)
    guard let files = try layout.readClusterFile() else {
      throw CommandFailure(
        message: "no cluster in \(dir) (no \(layout.clusterFile)): start one with `teal cluster up --dir \(dir)`, "
          + "or describe another cluster with --targets FILE")
    }
    let nodes = files.map {
      ChaosNode(
        id: $0.id, address: $0.address, api: $0.api, peerPort: $0.peerPort, host: .local, locator: .layout(layout),
        taskDir: nil, startCommand: nil, origin: layout.clusterFile)
    }
    var caFile: String?
    let https = nodes.filter { $0.api.hasPrefix("https://") }.count
    if https > 0 {
      guard https == nodes.count else {
        throw CommandFailure(message: "the endpoints mix http:// and https://: give one scheme for every node")
      }
      let environment = ProcessInfo.processInfo.environment["TEAL_CA"].flatMap { $0.isEmpty ? nil : $0 }
      caFile = environment ?? "\(layout.certDir)/ca.pem"
    }
    return ClusterTargets(
      description: "the cluster in \(layout.dir)", startHint: "`teal cluster up --dir \(dir)` first", nodes: nodes,
      token: try readToken(dir: dir), caFile: caFile, tableName: tableName(for: layout.dir))
  }

  /// The cluster a targets file describes (Docs/CHAOS.md).
  static func load(targetsFile: String) throws -> ClusterTargets {
    let absolute =
      targetsFile.hasPrefix("/") ? targetsFile : FileManager.default.currentDirectoryPath + "/" + targetsFile
    let path = URL(fileURLWithPath: absolute).standardizedFileURL.path
    let text: String
    do { text = try String(contentsOfFile: path, encoding: .utf8) } catch {
      throw CommandFailure(message: "cannot read the targets file \(targetsFile): \(error.localizedDescription)")
    }
    let file: ChaosTargetsFile
    do {
      file = try TargetsParser.parse(
        text, file: targetsFile, baseDirectory: URL(fileURLWithPath: path).deletingLastPathComponent().path)
    } catch {
      throw CommandFailure(message: error.description)
    }
    var token = file.token
    if let tokenFile = file.tokenFile {
      guard let data = FileManager.default.contents(atPath: tokenFile) else {
        throw CommandFailure(message: "\(targetsFile): tokenFile: cannot read \(tokenFile)")
      }
      token = String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
      if token?.isEmpty == true { throw CommandFailure(message: "\(targetsFile): tokenFile: \(tokenFile) is empty") }
    }
    if token == nil, let environment = ProcessInfo.processInfo.environment["TEAL_TOKEN"], !environment.isEmpty {
      token = environment
    }
    var caFile: String?
    if file.nodes.contains(where: { $0.api.hasPrefix("https://") }) {
      let environment = ProcessInfo.processInfo.environment["TEAL_CA"].flatMap { $0.isEmpty ? nil : $0 }
      guard let ca = file.ca ?? environment else {
        throw CommandFailure(
          message: "\(targetsFile): ca: the nodes' APIs are https://: give ca (the cluster CA certificate) "
            + "or set TEAL_CA")
      }
      caFile = ca
    }
    let nodes = file.nodes.map { node in
      ChaosNode(
        id: node.id, address: node.address, api: node.api, peerPort: node.peerPort,
        host: node.exec.map { .exec($0) } ?? .local, locator: .config(node.config), taskDir: node.taskDir,
        startCommand: node.start, origin: "\(targetsFile) \(node.field)")
    }
    return ClusterTargets(
      description: "the cluster of \(targetsFile)", startHint: "start it", nodes: nodes, token: token,
      caFile: caFile, tableName: tableName(for: "targets:" + (file.name ?? path)))
  }

  private static func tableName(for key: String) -> String {
    var hash: UInt64 = 0xcbf2_9ce4_8422_2325
    for byte in key.utf8 {
      hash ^= UInt64(byte)
      hash = hash &* 0x0000_0100_0000_01b3
    }
    return "teal_" + String(String(hash, radix: 16).prefix(12))
  }

  func node(_ id: String) -> ChaosNode? { nodes.first { $0.id == id } }

  /// The hosts of the nodes, each once (where the cluster's nftables table may be).
  var hosts: [ChaosNode] {
    var seen: Set<NodeHost> = []
    return nodes.filter { seen.insert($0.host).inserted }
  }

  /// A client of `nodes` with short timeouts, so that a dead node costs one attempt, not thirty
  /// seconds.
  func client(for nodes: [ChaosNode], maxAttempts: Int) throws -> TealClient {
    let endpoints = try nodes.map { node in
      do { return try Endpoint(url: node.api) } catch {
        throw CommandFailure(message: "\(node.origin): api: \(error)")
      }
    }
    var configuration = TealClientConfiguration(endpoints: endpoints, token: token)
    if let caFile {
      do { configuration.security = try APITLSSecurity(caFile: caFile) } catch {
        throw CommandFailure(message: "cannot use \(caFile) as the cluster CA for https:// endpoints: \(error)")
      }
    }
    configuration.connectTimeout = .milliseconds(500)
    configuration.requestTimeout = .seconds(2)
    configuration.overallTimeout = .seconds(4)
    configuration.maxAttempts = maxAttempts
    configuration.maxBackoff = .milliseconds(200)
    return TealClient(configuration: configuration)
  }
}

/// Stops node processes: SIGTERM, then SIGKILL (``ChaosNode/killHard(_:)``) for those still running
/// after `timeout`. Returns the ids that needed SIGKILL.
func stopNodeProcesses(_ processes: [(node: ChaosNode, process: NodeProcess)], timeout: Duration) async -> [String] {
  for entry in processes { try? entry.node.signal(entry.process, SIGTERM) }
  let interval: Duration = processes.allSatisfy { $0.node.host == .local } ? .milliseconds(50) : .milliseconds(250)
  func running() -> [(node: ChaosNode, process: NodeProcess)] {
    for entry in processes { reapChild(entry.process.pid) }
    return processes.filter { $0.node.isAlive($0.process) }
  }
  let clock = ContinuousClock()
  let deadline = clock.now + timeout
  var left = running()
  while clock.now < deadline, !left.isEmpty {
    try? await Task.sleep(for: interval)
    left = running()
  }
  for entry in left { entry.node.killHard(entry.process) }
  let killDeadline = clock.now + .seconds(5)
  var after = left
  while clock.now < killDeadline, !after.isEmpty {
    try? await Task.sleep(for: interval)
    for entry in after { reapChild(entry.process.pid) }
    after = after.filter { $0.node.isAlive($0.process) }
  }
  return left.map(\.node.id)
}

/// Waits (at most `within`) until `process` is gone; reaps it if it is our child.
func waitForNodeExit(_ node: ChaosNode, _ process: NodeProcess, within: Duration) async throws {
  let interval: Duration = node.host == .local ? .milliseconds(10) : .milliseconds(200)
  let clock = ContinuousClock()
  let deadline = clock.now + within
  while node.isAlive(process) {
    reapChild(process.pid)
    if clock.now >= deadline {
      throw CommandFailure(
        message: "\(node.id) (pid \(process.pid)) is still alive \(formatSeconds(within)) after SIGKILL")
    }
    try await Task.sleep(for: interval)
  }
  reapChild(process.pid)
}

/// Reaps `pid` if it is an exited child of this process (a node it started); never blocks. Only
/// by PID: `waitpid(-1)` would also take the status of a command ``runBounded`` waits for.
func reapChild(_ pid: pid_t) {
  var status: Int32 = 0
  _ = waitpid(pid, &status, WNOHANG)
}
