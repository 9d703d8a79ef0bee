// Processes, signals, process groups and free ports for the cluster harness (Linux and macOS).

import Foundation
import NIOConcurrencyHelpers
import TealTestSupport

#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

/// The built executables, beside the test bundle (`swift build --build-tests` / `swift test`).
enum Binaries {
  static let directory = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().path
  static let teal = "\(directory)/teal"
  static let tealDemo = "\(directory)/teal-demo"

  /// Why the cluster suite cannot run, or nil when it can: both executables exist and `teal node
  /// start --help` exits 0 and describes `--config`.
  static let missing: String? = {
    let files = FileManager.default
    guard files.isExecutableFile(atPath: teal) else { return "no teal executable at \(teal)" }
    guard files.isExecutableFile(atPath: tealDemo) else { return "no teal-demo executable at \(tealDemo)" }
    // ArgumentParser answers `--help` with the nearest command's help and exit 0, so the status
    // alone does not tell: `node start`'s help names its `--config` option.
    guard let help = try? run(teal, ["node", "start", "--help"]), help.status == 0,
      help.output.contains("--config")
    else {
      return "\(teal) has no `node start` subcommand yet (`teal node start --help` does not describe it)"
    }
    return nil
  }()
}

struct SpawnError: Error, CustomStringConvertible {
  var description: String
}

/// Every process and process group this test process started, killed (SIGKILL) at exit even when
/// a test crashed past its own cleanup.
enum SpawnedProcesses {
  /// Process group id to the start time of its leader (nil: unknown, killed regardless).
  private static let groups = NIOLockedValueBox<[pid_t: UInt64?]>([:])
  private static let registered = NIOLockedValueBox(false)

  static func track(group: pid_t, startTime: UInt64?) {
    groups.withLockedValue { $0[group] = startTime }
    registered.withLockedValue { done in
      guard !done else { return }
      done = true
      atexit { SpawnedProcesses.killAll() }
    }
  }

  static func untrack(group: pid_t) { groups.withLockedValue { _ = $0.removeValue(forKey: group) } }

  /// SIGKILL to every tracked group whose leader is still the process we saw (or unknown).
  static func killAll() {
    for (group, startTime) in groups.withLockedValue({ $0 }) {
      killGroup(group, startTime: startTime)
    }
  }
}

/// SIGKILL to a process group and its leader, unless the leader's PID now names another process.
func killGroup(_ group: pid_t, startTime: UInt64?) {
  if let startTime, let now = processStartTime(group), now != startTime { return }
  kill(-group, SIGKILL)
  kill(group, SIGKILL)
}

/// Starts `executable` in a process group of its own with stdout and stderr appended to `logPath`
/// and stdin from /dev/null. Returns its PID (= its process group id).
func spawnInOwnGroup(_ executable: String, _ arguments: [String], logPath: String) throws -> pid_t {
  var actions = posix_spawn_file_actions_t()
  posix_spawn_file_actions_init(&actions)
  defer { posix_spawn_file_actions_destroy(&actions) }
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
  posix_spawn_file_actions_addopen(&actions, 1, logPath, O_WRONLY | O_CREAT | O_APPEND, 0o644)
  posix_spawn_file_actions_adddup2(&actions, 1, 2)
  // Nothing else of the test process (its sockets above all) leaks into the node.
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
  posix_spawnattr_setflags(
    &attributes, Int16(POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))

  let argv: [UnsafeMutablePointer<CChar>?] = ([executable] + arguments).map { strdup($0) } + [nil]
  defer { for pointer in argv { free(pointer) } }
  var pid: pid_t = 0
  let result = posix_spawn(&pid, executable, &actions, &attributes, argv, environ)
  guard result == 0 else {
    throw SpawnError(description: "cannot start \(executable): \(String(cString: strerror(result)))")
  }
  SpawnedProcesses.track(group: pid, startTime: nil)
  return pid
}

/// glibc's `posix_spawn_file_actions_addclosefrom_np` (2.34+; the Swift importer does not see it),
/// or nil where the C library lacks it.
private let spawnCloseFrom: (@convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32)? = {
  guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "posix_spawn_file_actions_addclosefrom_np") else {
    return nil
  }
  return unsafeBitCast(
    symbol, to: (@convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32).self)
}()

/// The exit of a child: nil while it runs.
enum ChildExit: Equatable, CustomStringConvertible {
  case exited(Int32)
  case signalled(Int32)

  var description: String {
    switch self {
    case .exited(let code): "exit \(code)"
    case .signalled(let signal): "killed by signal \(signal)"
    }
  }
}

/// Reaps `pid` if it has exited (never blocks).
func reap(_ pid: pid_t) -> ChildExit? {
  var status: Int32 = 0
  let result = waitpid(pid, &status, WNOHANG)
  guard result == pid else { return nil }
  if status & 0x7f == 0 { return .exited((status >> 8) & 0xff) }
  return .signalled(status & 0x7f)
}

/// The start time (clock ticks since boot, field 22 of /proc/PID/stat) of a process, to tell a
/// process group leader from a later process that reused its PID. Nil when unreadable.
func processStartTime(_ pid: pid_t) -> UInt64? {
  guard let text = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
    let close = text.lastIndex(of: ")")
  else { return nil }
  let fields = text[text.index(after: close)...].split(separator: " ")
  // After the command: field 3 (state) is fields[0], so field 22 is fields[19].
  guard fields.count > 19 else { return nil }
  return UInt64(fields[19])
}

/// The task ledger of a node's task runner: `<pgid> <starttime> <taskID>` per line.
func readTaskLedger(_ path: String) -> [(group: pid_t, startTime: UInt64, task: String)] {
  guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return [] }
  return text.split(whereSeparator: \.isNewline).compactMap { line in
    let fields = line.split(separator: " ", maxSplits: 2)
    guard fields.count == 3, let group = pid_t(fields[0]), group > 1, let start = UInt64(fields[1]) else { return nil }
    return (group, start, String(fields[2]))
  }
}

// MARK: - Free ports

enum FreePorts {
  private static let handedOut = NIOLockedValueBox<Set<Int>>([])

  /// A TCP port that binds on every one of `hosts` right now and that this process has not
  /// handed out before. (Another process may still take it before the node binds it; the ports
  /// come from the kernel's ephemeral range, where that is unlikely.)
  static func pick(on hosts: [String]) throws -> Int {
    for _ in 0..<200 {
      guard let port = bindable(host: hosts[0], port: 0) else { continue }
      let fresh = handedOut.withLockedValue { $0.insert(port).inserted }
      guard fresh else { continue }
      if hosts.dropFirst().allSatisfy({ bindable(host: $0, port: port) != nil }) { return port }
    }
    throw SpawnError(description: "no port free on all of \(hosts) after 200 tries")
  }

  /// `count` consecutive ports free on every host, for a node's `taskPortRange`.
  static func range(count: Int, on hosts: [String]) throws -> ClosedRange<Int> {
    for _ in 0..<200 {
      let base = Int.random(in: 20_000...31_000)
      let candidate = base...(base + count - 1)
      let clashes = handedOut.withLockedValue { !$0.isDisjoint(with: candidate) }
      if clashes { continue }
      if candidate.allSatisfy({ port in hosts.allSatisfy { bindable(host: $0, port: port) != nil } }) {
        handedOut.withLockedValue { $0.formUnion(candidate) }
        return candidate
      }
    }
    throw SpawnError(description: "no \(count) consecutive free ports on \(hosts)")
  }

  /// Binds host:port (0: any) and releases it at once; returns the port bound.
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
