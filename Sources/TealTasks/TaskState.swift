// What the task runner reports: states, exits, events and errors.

#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

// MARK: - Termination

/// How a task's main process ended, as `waitpid` reported it.
public enum TaskTermination: Sendable, Hashable, CustomStringConvertible {
  /// The process called `exit(code)` (or returned from `main`).
  case exited(code: Int32)
  /// The process was ended by a signal (e.g. 9 for SIGKILL, 15 for SIGTERM).
  case signaled(signal: Int32)

  public var description: String {
    switch self {
    case .exited(let code): return "exited with code \(code)"
    case .signaled(let signal): return "killed by signal \(signal) (\(Self.signalName(signal)))"
    }
  }

  /// True for `exit(0)` only.
  public var isSuccess: Bool { self == .exited(code: 0) }

  static func signalName(_ signal: Int32) -> String {
    switch signal {
    case SIGHUP: return "SIGHUP"
    case SIGINT: return "SIGINT"
    case SIGQUIT: return "SIGQUIT"
    case SIGILL: return "SIGILL"
    case SIGABRT: return "SIGABRT"
    case SIGKILL: return "SIGKILL"
    case SIGSEGV: return "SIGSEGV"
    case SIGPIPE: return "SIGPIPE"
    case SIGTERM: return "SIGTERM"
    case SIGBUS: return "SIGBUS"
    case SIGFPE: return "SIGFPE"
    case SIGUSR1: return "SIGUSR1"
    case SIGUSR2: return "SIGUSR2"
    default: return "signal \(signal)"
    }
  }
}

/// The end of a task: how its process ended and whether the runner asked for it.
public struct TaskExit: Sendable, Hashable, CustomStringConvertible {
  public var termination: TaskTermination
  /// True when the exit followed `stop` (or `shutdown`); false for a crash or a voluntary exit.
  public var stopRequested: Bool
  /// True when the grace period ran out and the runner sent SIGKILL.
  public var killedAfterGracePeriod: Bool

  public init(termination: TaskTermination, stopRequested: Bool, killedAfterGracePeriod: Bool) {
    self.termination = termination
    self.stopRequested = stopRequested
    self.killedAfterGracePeriod = killedAfterGracePeriod
  }

  public var description: String {
    var text = termination.description
    if killedAfterGracePeriod {
      text += " (SIGKILL after the stop grace period)"
    } else if stopRequested {
      text += " (stop requested)"
    }
    return text
  }
}

// MARK: - State

/// The lifecycle of one task.
///
/// Transitions: `starting → healthy ⇄ unhealthy`, `starting → unhealthy`, any live state →
/// `stopping` (on `stop`), any state → `exited` (final). A task without a health check goes
/// `starting → healthy` as soon as its process has been spawned.
public enum TaskState: Sendable, Hashable, CustomStringConvertible {
  /// Spawned; the health check has not passed yet.
  case starting
  /// The health check passed `healthyThreshold` times in a row.
  case healthy
  /// The health check failed `unhealthyThreshold` times in a row (the process still runs).
  case unhealthy(reason: String)
  /// SIGTERM was sent to the task's process group; waiting for it to exit.
  case stopping
  /// The main process ended and was reaped; its process group was killed. Final.
  case exited(TaskExit)

  public var description: String {
    switch self {
    case .starting: return "starting"
    case .healthy: return "healthy"
    case .unhealthy(let reason): return "unhealthy (\(reason))"
    case .stopping: return "stopping"
    case .exited(let exit): return exit.description
    }
  }

  /// True until the process has been reaped.
  public var isLive: Bool {
    if case .exited = self { return false }
    return true
  }
}

// MARK: - Events

/// One state change of one task, in the order the runner saw them.
public struct TaskEvent: Sendable, Hashable, CustomStringConvertible {
  public var taskID: String
  public var revision: String
  /// The task's main process id (also its process group id).
  public var pid: Int32
  public var state: TaskState

  public init(taskID: String, revision: String, pid: Int32, state: TaskState) {
    self.taskID = taskID
    self.revision = revision
    self.pid = pid
    self.state = state
  }

  public var description: String { "task \(taskID) (pid \(pid)): \(state)" }
}

// MARK: - Snapshot

/// What the runner knows about one task right now.
public struct TaskInfo: Sendable, Hashable {
  public var taskID: String
  public var revision: String
  /// The main process id; the task runs in process group `pid`.
  public var pid: Int32
  /// The port given to the task in its port variable.
  public var port: Int
  public var state: TaskState
  /// Path of the live stdout log file (rotated files add `.1`, `.2`, ...).
  public var stdoutLogPath: String
  /// Path of the live stderr log file (rotated files add `.1`, `.2`, ...).
  public var stderrLogPath: String
}

// MARK: - Errors

/// Why the runner refused or failed to start a task. Messages name the task and the field at fault.
public enum TaskRunnerError: Error, Sendable, Hashable, CustomStringConvertible {
  /// The spec is invalid; `field` is its path in `ProcessSpec`.
  case invalidSpec(field: String, reason: String)
  /// `posix_spawn` (or exec) failed, e.g. no such file, permission denied.
  case cannotStart(taskID: String, command: String, reason: String)
  /// The working directory does not exist or is not a directory.
  case workingDirectoryMissing(taskID: String, path: String)
  /// A live task already has this id.
  case duplicateTaskID(String)
  /// The log files could not be created.
  case cannotOpenLog(taskID: String, path: String, reason: String)
  /// No free port could be found for the task.
  case noFreePort(taskID: String, reason: String)
  /// `shutdown()` was called; the runner starts nothing any more.
  case shutDown

  public var description: String {
    switch self {
    case .invalidSpec(let field, let reason): return "invalid task spec: \(field) \(reason)"
    case .cannotStart(let taskID, let command, let reason):
      return "task \(taskID): cannot start '\(command)': \(reason)"
    case .workingDirectoryMissing(let taskID, let path):
      return "task \(taskID): working directory '\(path)' does not exist or is not a directory"
    case .duplicateTaskID(let taskID): return "task \(taskID) is already running"
    case .cannotOpenLog(let taskID, let path, let reason):
      return "task \(taskID): cannot open log file '\(path)': \(reason)"
    case .noFreePort(let taskID, let reason): return "task \(taskID): no free port: \(reason)"
    case .shutDown: return "the task runner has been shut down and starts no new task"
    }
  }
}
