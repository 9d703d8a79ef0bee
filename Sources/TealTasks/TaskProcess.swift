// Spawning a task process in its own process group, capturing its output, and reaping it.

import Foundation

#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

/// One spawned task process (the "main process" of a task) and the thread that watches it.
///
/// Invariants:
/// - the process leads its own process group (`pgid == pid`), so a signal to `-pid` reaches every
///   process the task started that did not leave the group on purpose (`setsid`, `setpgid`);
/// - the group is signalled only while the main process has not been reaped (a zombie still holds
///   its pid), so a signal never reaches an unrelated group that reused the id;
/// - when the main process ends, the watcher sends SIGKILL to the group *before* reaping, so no
///   helper process of the task outlives it, then reaps it with `waitpid(pid)` (never `-1`: other
///   parts of the node may own other children);
/// - stdout and stderr are read to EOF (at most one second after the exit, for output held open by
///   processes that escaped the group) and written to size-capped rotating files.
final class TaskProcess: @unchecked Sendable {
  let pid: pid_t
  private let reapLock = NSLock()
  private var reaped = false

  private init(pid: pid_t) {
    self.pid = pid
  }

  /// Sends `signal` to the task's process group. Returns false when the main process was already
  /// reaped (nothing is sent then) or when `kill` failed (e.g. the group is gone).
  @discardableResult
  func signalGroup(_ signal: Int32) -> Bool {
    reapLock.lock()
    defer { reapLock.unlock() }
    guard !reaped else { return false }
    return kill(-pid, signal) == 0
  }

  // MARK: Spawn

  /// Spawns `command` with `posix_spawnp`, stdin from `/dev/null`, stdout and stderr into pipes,
  /// in a new process group, with default signal dispositions and an empty signal mask (so a task
  /// never inherits the node's ignored SIGPIPE or blocked signals). Then starts the watcher thread,
  /// which calls `onExit` exactly once, after the process was reaped and its output drained.
  static func spawn(
    taskID: String,
    command: String,
    arguments: [String],
    environment: [String: String],
    workingDirectory: String?,
    stdoutLog: TaskLogFile,
    stderrLog: TaskLogFile,
    onExit: @escaping @Sendable (TaskTermination) -> Void
  ) throws(TaskRunnerError) -> TaskProcess {
    var stdoutPipe: [Int32] = [-1, -1]
    var stderrPipe: [Int32] = [-1, -1]
    guard TaskLibc.pipeCloseOnExec(&stdoutPipe) == 0 else {
      throw .cannotStart(taskID: taskID, command: command, reason: "pipe: \(Self.errnoText(errno))")
    }
    guard TaskLibc.pipeCloseOnExec(&stderrPipe) == 0 else {
      let reason = "pipe: \(Self.errnoText(errno))"
      _ = close(stdoutPipe[0])
      _ = close(stdoutPipe[1])
      throw .cannotStart(taskID: taskID, command: command, reason: reason)
    }

    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    var attributes = posix_spawnattr_t()
    posix_spawnattr_init(&attributes)
    defer { posix_spawnattr_destroy(&attributes) }

    if let workingDirectory {
      guard TaskLibc.addChangeDirectory(&actions, workingDirectory) == 0 else {
        _ = close(stdoutPipe[0])
        _ = close(stdoutPipe[1])
        _ = close(stderrPipe[0])
        _ = close(stderrPipe[1])
        throw .cannotStart(
          taskID: taskID, command: command,
          reason: "this C library cannot set a working directory for posix_spawn (glibc 2.29 or later needed)")
      }
    }
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
    posix_spawn_file_actions_adddup2(&actions, stdoutPipe[1], 1)
    posix_spawn_file_actions_adddup2(&actions, stderrPipe[1], 2)
    // Nothing else of this process reaches the task: a descriptor opened without close-on-exec
    // (a listening socket of the node) would otherwise keep its port bound after the node died.
    guard TaskLibc.addCloseFrom(&actions, 3) == 0 else {
      for descriptor in stdoutPipe + stderrPipe { _ = close(descriptor) }
      throw .cannotStart(
        taskID: taskID, command: command,
        reason: "this C library cannot close inherited descriptors for posix_spawn (glibc 2.34 or later needed)")
    }

    posix_spawnattr_setpgroup(&attributes, 0)
    var emptyMask = sigset_t()
    sigemptyset(&emptyMask)
    posix_spawnattr_setsigmask(&attributes, &emptyMask)
    var defaultSignals = sigset_t()
    sigemptyset(&defaultSignals)
    for signal in [SIGHUP, SIGINT, SIGQUIT, SIGPIPE, SIGTERM, SIGCHLD, SIGUSR1, SIGUSR2, SIGALRM, SIGTTIN, SIGTTOU] {
      sigaddset(&defaultSignals, signal)
    }
    posix_spawnattr_setsigdefault(&attributes, &defaultSignals)
    let flags = POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF
    posix_spawnattr_setflags(&attributes, Int16(flags))

    let argv: [UnsafeMutablePointer<CChar>?] = ([command] + arguments).map { strdup($0) } + [nil]
    let envp: [UnsafeMutablePointer<CChar>?] =
      environment.sorted { $0.key < $1.key }.map { strdup("\($0.key)=\($0.value)") } + [nil]
    defer {
      for pointer in argv { free(pointer) }
      for pointer in envp { free(pointer) }
    }

    var pid: pid_t = 0
    let result = posix_spawnp(&pid, command, &actions, &attributes, argv, envp)
    _ = close(stdoutPipe[1])
    _ = close(stderrPipe[1])
    guard result == 0 else {
      _ = close(stdoutPipe[0])
      _ = close(stderrPipe[0])
      throw .cannotStart(taskID: taskID, command: command, reason: Self.errnoText(result))
    }

    let process = TaskProcess(pid: pid)
    let watcher = TaskProcessWatcher(
      process: process,
      streams: [(stdoutPipe[0], stdoutLog), (stderrPipe[0], stderrLog)],
      onExit: onExit
    )
    let thread = Thread { watcher.run() }
    thread.name = "teal-task-\(pid)"
    thread.stackSize = 256 * 1024
    thread.start()
    return process
  }

  static func errnoText(_ code: Int32) -> String {
    String(cString: strerror(code))
  }

  // MARK: Reaping

  /// If the main process has ended: kills what is left of its group, reaps it and returns how it
  /// ended. With `blocking`, waits for the end; otherwise returns nil while it still runs.
  fileprivate func reapIfExited(blocking: Bool) -> TaskTermination? {
    var info = siginfo_t()
    let options = WEXITED | WNOWAIT | (blocking ? 0 : WNOHANG)
    while true {
      memset(&info, 0, MemoryLayout<siginfo_t>.size)
      if waitid(P_PID, id_t(pid), &info, options) == 0 { break }
      if errno == EINTR { continue }
      // ECHILD: someone else reaped our child; its status is lost.
      return markReaped(status: nil)
    }
    if info._sifields._sigchld.si_pid == 0 { return nil }  // WNOHANG, still running
    reapLock.lock()
    defer { reapLock.unlock() }
    _ = kill(-pid, SIGKILL)
    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
    reaped = true
    return Self.termination(fromWaitStatus: status)
  }

  private func markReaped(status: Int32?) -> TaskTermination {
    reapLock.lock()
    reaped = true
    reapLock.unlock()
    return status.map(Self.termination(fromWaitStatus:)) ?? .exited(code: -1)
  }

  /// Decodes a `waitpid` status (the `WIFEXITED`/`WTERMSIG` macros do not import into Swift).
  static func termination(fromWaitStatus status: Int32) -> TaskTermination {
    let signal = status & 0x7f
    if signal == 0 { return .exited(code: (status >> 8) & 0xff) }
    return .signaled(signal: signal)
  }
}

// MARK: - GNU functions

/// `pipe2` and `posix_spawn_file_actions_addchdir_np` are GNU extensions that the Glibc module
/// does not export to Swift; they are looked up once in the C library by name.
private enum TaskLibc {
  private typealias Pipe2 = @convention(c) (UnsafeMutablePointer<Int32>?, Int32) -> Int32
  private typealias AddChdir =
    @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>?, UnsafePointer<CChar>?) -> Int32

  private static let pipe2: Pipe2? = symbol("pipe2").map { unsafeBitCast($0, to: Pipe2.self) }
  private static let addChdir: AddChdir? =
    symbol("posix_spawn_file_actions_addchdir_np").map { unsafeBitCast($0, to: AddChdir.self) }
  private typealias AddCloseFrom = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>?, Int32) -> Int32
  private static let addCloseFromSymbol: AddCloseFrom? =
    symbol("posix_spawn_file_actions_addclosefrom_np").map { unsafeBitCast($0, to: AddCloseFrom.self) }

  private static func symbol(_ name: String) -> UnsafeMutableRawPointer? {
    dlsym(dlopen(nil, RTLD_NOW), name)
  }

  /// `pipe2(fds, O_CLOEXEC)`: both ends close on exec, atomically (no other spawn can inherit them).
  static func pipeCloseOnExec(_ descriptors: inout [Int32]) -> Int32 {
    guard let pipe2 else {
      errno = ENOSYS
      return -1
    }
    return descriptors.withUnsafeMutableBufferPointer { pipe2($0.baseAddress, O_CLOEXEC) }
  }

  /// Adds "close every descriptor from `lowest` up" to the spawn's file actions; -1 when the C
  /// library lacks it.
  static func addCloseFrom(_ actions: inout posix_spawn_file_actions_t, _ lowest: Int32) -> Int32 {
    guard let addCloseFromSymbol else { return -1 }
    return addCloseFromSymbol(&actions, lowest)
  }

  /// Adds a `chdir(path)` to the spawn's file actions; -1 when the C library lacks it.
  static func addChangeDirectory(_ actions: inout posix_spawn_file_actions_t, _ path: String) -> Int32 {
    guard let addChdir else { return -1 }
    return addChdir(&actions, path)
  }
}

// MARK: - Watcher thread

/// The body of a task's watcher thread. Owns the read ends of the pipes and the log files; nothing
/// else touches them once the thread started (hence `@unchecked Sendable`).
private final class TaskProcessWatcher: @unchecked Sendable {
  private let process: TaskProcess
  private var streams: [(descriptor: Int32, log: TaskLogFile)]
  private let logs: [TaskLogFile]
  private let onExit: @Sendable (TaskTermination) -> Void

  /// How long output is still drained after the main process ended.
  private static let drainAfterExit: Duration = .seconds(1)
  /// How often the thread checks for an exit while the pipes stay quiet.
  private static let exitPollMilliseconds: Int32 = 50

  init(
    process: TaskProcess,
    streams: [(Int32, TaskLogFile)],
    onExit: @escaping @Sendable (TaskTermination) -> Void
  ) {
    self.process = process
    self.streams = streams.map { (descriptor: $0.0, log: $0.1) }
    self.logs = streams.map(\.1)
    self.onExit = onExit
  }

  func run() {
    let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 64 * 1024, alignment: 16)
    defer { buffer.deallocate() }
    let clock = ContinuousClock()
    var termination: TaskTermination?
    var drainDeadline = clock.now

    while true {
      if termination == nil && streams.isEmpty {
        // Both pipes closed while the process runs: nothing left to read, wait for the exit.
        termination = process.reapIfExited(blocking: true)
        break
      }
      if termination != nil && (streams.isEmpty || clock.now >= drainDeadline) { break }

      var polled = streams.map { pollfd(fd: $0.descriptor, events: Int16(POLLIN), revents: 0) }
      let ready = poll(&polled, nfds_t(polled.count), Self.exitPollMilliseconds)
      if ready > 0 {
        var stillOpen: [(descriptor: Int32, log: TaskLogFile)] = []
        for (index, entry) in polled.enumerated() {
          let stream = streams[index]
          guard entry.revents != 0 else {
            stillOpen.append(stream)
            continue
          }
          let count = read(stream.descriptor, buffer.baseAddress, buffer.count)
          if count > 0 {
            stream.log.append(UnsafeRawBufferPointer(rebasing: buffer[0..<count]))
            stillOpen.append(stream)
          } else if count < 0 && (errno == EINTR || errno == EAGAIN) {
            stillOpen.append(stream)
          } else {
            _ = close(stream.descriptor)
          }
        }
        streams = stillOpen
      }
      if termination == nil, let ended = process.reapIfExited(blocking: false) {
        termination = ended
        drainDeadline = clock.now + Self.drainAfterExit
      }
    }

    for stream in streams {
      _ = close(stream.descriptor)
    }
    streams = []
    for log in logs {
      log.closeFile()
    }
    onExit(termination ?? .exited(code: -1))
  }
}
