import Foundation
import TealTLS
import TealWire
import Yams

#if canImport(Glibc)
  import Glibc
#endif

// The local cluster directory of `teal cluster up` (NODE-CONTRACT "Local cluster layout"), and the
// node processes it records: spawning them, telling whether a recorded PID is still that node, and
// stopping them.

/// One node's line in `cluster.yaml`.
struct ClusterFileNode: Codable, Equatable {
  var id: String
  var address: String
  var api: String
  var peerPort: Int
}

struct ClusterFile: Codable, Equatable {
  var nodes: [ClusterFileNode]
}

/// The paths of a cluster directory.
struct ClusterLayout {
  /// Absolute and standardized.
  let dir: String

  init(dir: String) {
    let absolute =
      dir.hasPrefix("/") ? dir : FileManager.default.currentDirectoryPath + "/" + dir
    self.dir = URL(fileURLWithPath: absolute).standardizedFileURL.path
  }

  var clusterFile: String { "\(dir)/cluster.yaml" }
  var tokenFile: String { "\(dir)/token" }
  var certDir: String { "\(dir)/certs" }
  func nodeDir(_ id: String) -> String { "\(dir)/\(id)" }
  func configFile(_ id: String) -> String { "\(dir)/\(id)/node.yaml" }
  func dataDir(_ id: String) -> String { "\(dir)/\(id)/data" }
  func taskDir(_ id: String) -> String { "\(dir)/\(id)/tasks" }
  func logFile(_ id: String) -> String { "\(dir)/\(id)/node.log" }
  func pidFile(_ id: String) -> String { "\(dir)/\(id)/node.pid" }

  /// The nodes of `cluster.yaml`, or nil when there is none.
  func readClusterFile() throws -> [ClusterFileNode]? {
    guard let data = FileManager.default.contents(atPath: clusterFile) else { return nil }
    do {
      let file = try YAMLDecoder().decode(ClusterFile.self, from: String(decoding: data, as: UTF8.self))
      guard !file.nodes.isEmpty else { throw CommandFailure(message: "\(clusterFile) lists no nodes") }
      return file.nodes
    } catch let failure as CommandFailure {
      throw failure
    } catch {
      throw CommandFailure(message: "\(clusterFile) is not a cluster file: \(error)")
    }
  }

  /// The `electionTimeoutMs` of a node's config, if it sets one.
  func electionTimeout(of id: String) -> Int? {
    guard let data = FileManager.default.contents(atPath: configFile(id)),
      let object = try? Yams.load(yaml: String(decoding: data, as: UTF8.self)) as? [String: Any]
    else { return nil }
    return object["electionTimeoutMs"] as? Int
  }
}

/// What a new local cluster looks like.
struct ClusterPlan {
  var nodes: Int
  var peerPort: Int
  var apiPort: Int
  var electionTimeoutMs: Int?
  var apiTLS = false

  static let maximumNodes = 254
  /// What `cluster up --nodes` accepts: odd voter counts up to 7.
  static let allowedNodeCounts: Set<Int> = [1, 3, 5, 7]

  func node(_ index: Int) -> ClusterFileNode {
    let address = "127.0.0.\(index)"
    return ClusterFileNode(
      id: "n\(index)", address: address, api: "\(apiTLS ? "https" : "http")://\(address):\(apiPort)",
      peerPort: peerPort)
  }

  var members: [ClusterFileNode] { (1...nodes).map(node) }
}

/// Writes a new cluster's files: certificates, token, each node's config and directories, and
/// cluster.yaml last (its presence marks a complete directory).
func writeCluster(_ plan: ClusterPlan, layout: ClusterLayout) throws -> [String] {
  let members = plan.members
  let fileManager = FileManager.default
  var written: [String] = []
  do {
    try fileManager.createDirectory(atPath: layout.dir, withIntermediateDirectories: true)
    let ids = try members.map { try NodeID(validating: $0.id) }
    let certificates = CertificateDirectory(path: layout.certDir)
    if fileManager.fileExists(atPath: certificates.caCertificatePath) {
      // An interrupted earlier `up`: keep the CA, add what is missing.
      for (member, id) in zip(members, ids) where !fileManager.fileExists(atPath: "\(layout.certDir)/\(member.id).pem")
      {
        written += try certificates.addNode(id, addresses: [member.address])
      }
    } else {
      written += try CertificateDirectory.initialize(
        at: layout.certDir, nodes: ids,
        addresses: Dictionary(uniqueKeysWithValues: zip(ids, members.map { [$0.address] })))
    }
  } catch let error as CertificateDirectoryError {
    throw CommandFailure(message: "cannot write the certificates in \(layout.certDir): \(error)")
  } catch let error as NodeIDError {
    throw CommandFailure(message: "\(error)")
  }
  if !fileManager.fileExists(atPath: layout.tokenFile) {
    try writeExclusively(layout.tokenFile, contents: newToken() + "\n", mode: 0o600)
    written.append(layout.tokenFile)
  }
  for member in members {
    for path in [layout.nodeDir(member.id), layout.dataDir(member.id), layout.taskDir(member.id)] {
      try createDirectory(path)
    }
    try writeFile(layout.configFile(member.id), nodeConfig(member, plan: plan, layout: layout))
    written.append(layout.configFile(member.id))
  }
  try writeFile(layout.clusterFile, clusterFileText(members))
  written.append(layout.clusterFile)
  return written
}

/// `cluster.yaml`: the CLI's default endpoints.
func clusterFileText(_ members: [ClusterFileNode]) -> String {
  var text = "# Written by `teal cluster up`: the nodes of this local cluster (the CLI's default endpoints).\nnodes:\n"
  for member in members {
    text += "  - id: \(member.id)\n    address: \(member.address)\n    api: \"\(member.api)\"\n"
    text += "    peerPort: \(member.peerPort)\n"
  }
  return text
}

/// A node's `node.yaml` (NODE-CONTRACT "Node configuration"), paths absolute.
func nodeConfig(_ member: ClusterFileNode, plan: ClusterPlan, layout: ClusterLayout) -> String {
  var text = """
    # Written by `teal cluster up`; read by `teal node start --config \(layout.configFile(member.id))`.
    node: \(member.id)
    address: \(member.address)
    peerPort: \(plan.peerPort)
    apiPort: \(plan.apiPort)
    dataDir: \(yamlQuoted(layout.dataDir(member.id)))
    taskDir: \(yamlQuoted(layout.taskDir(member.id)))
    certDir: \(yamlQuoted(layout.certDir))
    tokenFile: \(yamlQuoted(layout.tokenFile))
    peers:

    """
  for peer in plan.members { text += "  \(peer.id): \(peer.address)\n" }
  text += "bootstrap: true\n"
  if let timeout = plan.electionTimeoutMs { text += "electionTimeoutMs: \(timeout)\n" }
  if plan.apiTLS { text += "apiTLS: true\n" }
  return text
}

/// A YAML double-quoted scalar (JSON string syntax is valid YAML).
func yamlQuoted(_ text: String) -> String { "\"\(jsonEscaped(text))\"" }

/// 32 random bytes as 64 hex characters (the system's cryptographic generator).
func newToken() -> String {
  var generator = SystemRandomNumberGenerator()
  return (0..<32).map { _ in String(format: "%02x", UInt8.random(in: 0...255, using: &generator)) }.joined()
}

private func createDirectory(_ path: String) throws {
  do {
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
  } catch {
    throw CommandFailure(message: "cannot create the directory \(path): \(error.localizedDescription)")
  }
}

func writeFile(_ path: String, _ contents: String) throws {
  do {
    try contents.write(toFile: path, atomically: true, encoding: .utf8)
  } catch {
    throw CommandFailure(message: "cannot write \(path): \(error.localizedDescription)")
  }
}

/// Creates `path` with `mode`; fails if it exists (so a secret is never widened or replaced).
private func writeExclusively(_ path: String, contents: String, mode: mode_t) throws {
  let descriptor = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode)
  guard descriptor >= 0 else {
    throw CommandFailure(message: "cannot create \(path): \(String(cString: strerror(errno)))")
  }
  defer { close(descriptor) }
  let bytes = Array(contents.utf8)
  let written = bytes.withUnsafeBytes { write(descriptor, $0.baseAddress, $0.count) }
  guard written == bytes.count, fchmod(descriptor, mode) == 0 else {
    throw CommandFailure(message: "cannot write \(path): \(String(cString: strerror(errno)))")
  }
}

// MARK: - Node processes

/// The absolute path of the running `teal` executable.
func currentExecutable() -> String {
  var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
  let length = readlink("/proc/self/exe", &buffer, buffer.count - 1)
  if length > 0 { return String(decoding: buffer[0..<length].map { UInt8(bitPattern: $0) }, as: UTF8.self) }
  return URL(fileURLWithPath: CommandLine.arguments[0]).standardizedFileURL.path
}

/// The PID recorded for `id`, if the file holds one.
func recordedPID(_ layout: ClusterLayout, _ id: String) -> pid_t? {
  guard let data = FileManager.default.contents(atPath: layout.pidFile(id)) else { return nil }
  return pid_t(String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines))
}

/// Whether `pid` is alive and is `teal node start --config <that node's config>` (a recorded PID
/// may have been reused by another process since).
func isNodeProcess(_ pid: pid_t, layout: ClusterLayout, id: String) -> Bool {
  guard pid > 0, kill(pid, 0) == 0 || errno == EPERM, !isZombie(pid) else { return false }
  guard let data = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") else { return false }
  let arguments = data.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
  guard let program = arguments.first, URL(fileURLWithPath: program).lastPathComponent.hasPrefix("teal") else {
    return false
  }
  guard let start = arguments.firstIndex(of: "node"), arguments.count > start + 1, arguments[start + 1] == "start"
  else { return false }
  return arguments.contains(layout.configFile(id))
}

/// The running node's PID, if its recorded PID is that node.
func runningPID(_ layout: ClusterLayout, _ id: String) -> pid_t? {
  guard let pid = recordedPID(layout, id), isNodeProcess(pid, layout: layout, id: id) else { return nil }
  return pid
}

/// Whether `pid` has exited but is not reaped yet (`Z` in /proc/PID/stat).
func isZombie(_ pid: pid_t) -> Bool {
  guard let data = FileManager.default.contents(atPath: "/proc/\(pid)/stat") else { return false }
  let text = String(decoding: data, as: UTF8.self)
  guard let close = text.lastIndex(of: ")") else { return false }
  return text[text.index(after: close)...].trimmingCharacters(in: .whitespaces).hasPrefix("Z")
}

/// Whether `pid` is gone (or only a zombie).
func hasExited(_ pid: pid_t) -> Bool {
  (kill(pid, 0) != 0 && errno == ESRCH) || isZombie(pid)
}

/// Starts `teal node start --config <config>` in its own process group, stdin from /dev/null and
/// stdout+stderr appended to node.log, and records its PID.
func spawnNode(_ layout: ClusterLayout, _ id: String) throws -> pid_t {
  let executable = currentExecutable()
  let arguments = [executable, "node", "start", "--config", layout.configFile(id)]

  var actions = posix_spawn_file_actions_t()
  posix_spawn_file_actions_init(&actions)
  defer { posix_spawn_file_actions_destroy(&actions) }
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
  posix_spawn_file_actions_addopen(&actions, 1, layout.logFile(id), O_WRONLY | O_CREAT | O_APPEND, 0o644)
  posix_spawn_file_actions_adddup2(&actions, 1, 2)

  let (status, pid) = spawnProcess(executable, arguments, actions: &actions, newProcessGroup: true)
  guard status == 0 else {
    throw CommandFailure(message: "cannot start node \(id) (\(executable)): \(String(cString: strerror(status)))")
  }
  try writeFile(layout.pidFile(id), "\(pid)\n")
  return pid
}

/// `posix_spawn` of `executable` with `arguments` (argv, from argv[0]) and `actions`: no signal
/// blocked, and the signals the CLI handles back at their defaults, so that the child is not born
/// deaf to them; in a process group of its own when `newProcessGroup`. Returns posix_spawn's status
/// and the child's PID.
func spawnProcess(
  _ executable: String, _ arguments: [String], actions: inout posix_spawn_file_actions_t, newProcessGroup: Bool
) -> (status: Int32, pid: pid_t) {
  var attributes = posix_spawnattr_t()
  posix_spawnattr_init(&attributes)
  defer { posix_spawnattr_destroy(&attributes) }
  var flags = POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF
  if newProcessGroup {
    posix_spawnattr_setpgroup(&attributes, 0)
    flags |= POSIX_SPAWN_SETPGROUP
  }
  var noSignals = sigset_t()
  sigemptyset(&noSignals)
  posix_spawnattr_setsigmask(&attributes, &noSignals)
  var defaults = sigset_t()
  sigemptyset(&defaults)
  for signal in [SIGTERM, SIGINT, SIGHUP, SIGPIPE, SIGQUIT] { sigaddset(&defaults, signal) }
  posix_spawnattr_setsigdefault(&attributes, &defaults)
  posix_spawnattr_setflags(&attributes, Int16(flags))
  let argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
  defer { for pointer in argv { free(pointer) } }
  var pid: pid_t = 0
  let status = posix_spawn(&pid, executable, &actions, &attributes, argv, environ)
  return (status, pid)
}

/// The last line of a node's log that reports an error (else its last line), for error messages.
func lastLogLine(_ layout: ClusterLayout, _ id: String) -> String? {
  guard let handle = FileHandle(forReadingAtPath: layout.logFile(id)) else { return nil }
  defer { try? handle.close() }
  let size = (try? handle.seekToEnd()) ?? 0
  try? handle.seek(toOffset: size > 4096 ? size - 4096 : 0)
  let text = String(decoding: handle.readDataToEndOfFile(), as: UTF8.self)
  let lines = text.split(separator: "\n")
  let line = lines.last { $0.lowercased().contains("error") } ?? lines.last
  return line.map { String($0.trimmingCharacters(in: .whitespaces).prefix(300)) }
}

/// Stops the given node processes: SIGTERM, then SIGKILL (to the node's process group) for those
/// still running after `timeout`. Returns the ids that needed SIGKILL.
func stopNodes(_ processes: [(id: String, pid: pid_t)], timeout: Duration) async -> [String] {
  for process in processes { kill(process.pid, SIGTERM) }
  let clock = ContinuousClock()
  let deadline = clock.now + timeout
  while clock.now < deadline, processes.contains(where: { !hasExited($0.pid) }) {
    reapChildren()
    try? await Task.sleep(for: .milliseconds(50))
  }
  var killed: [String] = []
  for process in processes where !hasExited(process.pid) {
    // Its tasks run in their own process groups and would outlive it: find them first.
    let tasks = childProcesses(of: process.pid)
    // The node leads its own process group (spawnNode).
    if getpgid(process.pid) == process.pid { kill(-process.pid, SIGKILL) } else { kill(process.pid, SIGKILL) }
    for task in tasks {
      if getpgid(task) == task { kill(-task, SIGKILL) } else { kill(task, SIGKILL) }
    }
    killed.append(process.id)
  }
  let killDeadline = clock.now + .seconds(5)
  while clock.now < killDeadline, processes.contains(where: { !hasExited($0.pid) }) {
    reapChildren()
    try? await Task.sleep(for: .milliseconds(20))
  }
  return killed
}

/// The processes whose parent is `pid` (from /proc/PID/stat).
func childProcesses(of pid: pid_t) -> [pid_t] {
  let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
  return entries.compactMap { entry -> pid_t? in
    guard let child = pid_t(entry), let data = FileManager.default.contents(atPath: "/proc/\(entry)/stat") else {
      return nil
    }
    let text = String(decoding: data, as: UTF8.self)
    guard let close = text.lastIndex(of: ")") else { return nil }
    // After "(comm)": state, ppid, ...
    let fields = text[text.index(after: close)...].split(separator: " ")
    return fields.count > 1 && pid_t(fields[1]) == pid ? child : nil
  }
}

/// Reaps exited children of this process (nodes this process spawned), so that they do not linger
/// as zombies.
func reapChildren() {
  var status: Int32 = 0
  while waitpid(-1, &status, WNOHANG) > 0 {}
}
