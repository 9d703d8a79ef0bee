// Processes, signals, process groups and free ports for the real-process test harnesses
// (TealNodeClusterTests, TealJepsenTests; Linux and macOS).

import Foundation
import NIOConcurrencyHelpers

#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

public struct SpawnError: Error, CustomStringConvertible {
  public var description: String
  public init(description: String) { self.description = description }
}

/// Every process and process group this test process started, killed (SIGKILL) at exit even when
/// a test crashed past its own cleanup.
public enum SpawnedProcesses {
  /// Process group id to the start time of its leader (nil: unknown, killed regardless).
  private static let groups = NIOLockedValueBox<[pid_t: UInt64?]>([:])
  private static let registered = NIOLockedValueBox(false)

  public static func track(group: pid_t, startTime: UInt64?) {
    groups.withLockedValue { $0[group] = startTime }
    registered.withLockedValue { done in
      guard !done else { return }
      done = true
      atexit { SpawnedProcesses.killAll() }
    }
  }

  public static func untrack(group: pid_t) { groups.withLockedValue { _ = $0.removeValue(forKey: group) } }

  /// SIGKILL to every tracked group whose leader is still the process we saw (or unknown).
  public static func killAll() {
    for (group, startTime) in groups.withLockedValue({ $0 }) {
      killGroup(group, startTime: startTime)
    }
  }
}

/// `signal` (SIGKILL unless told) to a process group and its leader, unless the leader's PID now
/// names another process.
public func killGroup(_ group: pid_t, startTime: UInt64?, signal: Int32 = SIGKILL) {
  if let startTime, let now = processStartTime(group), now != startTime { return }
  kill(-group, signal)
  kill(group, signal)
}

/// Starts `executable` in a process group of its own with stdout and stderr appended to `logPath`
/// and stdin from /dev/null. Returns its PID (= its process group id).
public func spawnInOwnGroup(_ executable: String, _ arguments: [String], logPath: String) throws -> pid_t {
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
  SpawnedProcesses.track(group: pid, startTime: processStartTime(pid))
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
public enum ChildExit: Equatable, Sendable, CustomStringConvertible {
  case exited(Int32)
  case signalled(Int32)

  public var description: String {
    switch self {
    case .exited(let code): "exit \(code)"
    case .signalled(let signal): "killed by signal \(signal)"
    }
  }
}

/// Reaps `pid` if it has exited (never blocks).
public func reap(_ pid: pid_t) -> ChildExit? {
  var status: Int32 = 0
  let result = waitpid(pid, &status, WNOHANG)
  guard result == pid else { return nil }
  if status & 0x7f == 0 { return .exited((status >> 8) & 0xff) }
  return .signalled(status & 0x7f)
}

/// The start time (clock ticks since boot, field 22 of /proc/PID/stat) of a process, to tell a
/// process group leader from a later process that reused its PID. Nil when unreadable.
public func processStartTime(_ pid: pid_t) -> UInt64? {
  guard let text = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
    let close = text.lastIndex(of: ")")
  else { return nil }
  let fields = text[text.index(after: close)...].split(separator: " ")
  // After the command: field 3 (state) is fields[0], so field 22 is fields[19].
  guard fields.count > 19 else { return nil }
  return UInt64(fields[19])
}

/// The task ledger of a node's task runner: `<pgid> <starttime> <taskID>` per line.
public func readTaskLedger(_ path: String) -> [(group: pid_t, startTime: UInt64, task: String)] {
  guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return [] }
  return text.split(whereSeparator: \.isNewline).compactMap { line in
    let fields = line.split(separator: " ", maxSplits: 2)
    guard fields.count == 3, let group = pid_t(fields[0]), group > 1, let start = UInt64(fields[1]) else { return nil }
    return (group, start, String(fields[2]))
  }
}

// MARK: - Free ports

public enum FreePorts {
  private static let handedOut = NIOLockedValueBox<Set<Int>>([])

  /// A TCP port that binds on every one of `hosts` right now and that this process has not
  /// handed out before. (Another process may still take it before the node binds it; the ports
  /// come from the kernel's ephemeral range, where that is unlikely.)
  public static func pick(on hosts: [String]) throws -> Int {
    for _ in 0..<200 {
      guard let port = bindable(host: hosts[0], port: 0) else { continue }
      let fresh = handedOut.withLockedValue { $0.insert(port).inserted }
      guard fresh else { continue }
      if hosts.dropFirst().allSatisfy({ bindable(host: $0, port: port) != nil }) { return port }
    }
    throw SpawnError(description: "no port free on all of \(hosts) after 200 tries")
  }

  /// `count` consecutive ports free on every host, for a node's `taskPortRange`.
  public static func range(count: Int, on hosts: [String]) throws -> ClosedRange<Int> {
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
  public static func bindable(host: String, port: Int) -> Int? {
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
