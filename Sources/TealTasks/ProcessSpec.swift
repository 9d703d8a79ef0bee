// The input types of the task runner: what to run, how to check it, where its logs go.
// Independent of TealDeploy: the node maps a revision onto a `ProcessSpec`.

import TealHealth

// MARK: - Task specification

/// What one task runs: a local process, its environment, the port it listens on and how to check it.
///
/// Invariants the runner adds on top of this description:
/// - the variable named `portEnvironmentName` (default `PORT`) holds the task's port, chosen by the
///   runner unless `fixedPort` is set;
/// - `TEAL_TASK_ID` and `TEAL_REVISION` hold the task's identity;
/// - these three override any value of the same name in `environment` or in the runner's own
///   environment.
public struct ProcessSpec: Sendable, Hashable {
  /// The program: an absolute or relative path (contains `/`), or a name looked up in `PATH`.
  public var command: String
  /// The arguments after the program name (`argv[1...]`).
  public var arguments: [String]
  /// Variables added to (and overriding) the runner's inherited environment.
  public var environment: [String: String]
  /// The directory the process starts in; nil keeps the runner's working directory.
  public var workingDirectory: String?
  /// The name of the variable that tells the task its port.
  public var portEnvironmentName: String
  /// A port chosen by the operator; nil lets the runner pick a free one.
  public var fixedPort: Int?
  /// How the runner decides that the task is healthy; nil means "healthy once started".
  public var healthCheck: TaskHealthCheck?
  /// How long a stop waits after SIGTERM before SIGKILL; nil uses the runner's default.
  public var stopGracePeriod: Duration?

  public init(
    command: String,
    arguments: [String] = [],
    environment: [String: String] = [:],
    workingDirectory: String? = nil,
    portEnvironmentName: String = "PORT",
    fixedPort: Int? = nil,
    healthCheck: TaskHealthCheck? = nil,
    stopGracePeriod: Duration? = nil
  ) {
    self.command = command
    self.arguments = arguments
    self.environment = environment
    self.workingDirectory = workingDirectory
    self.portEnvironmentName = portEnvironmentName
    self.fixedPort = fixedPort
    self.healthCheck = healthCheck
    self.stopGracePeriod = stopGracePeriod
  }
}

// MARK: - Health check

/// An active health check, in the terms of an ECS/ELB target group health check.
///
/// Invariants: a task becomes `healthy` after `healthyThreshold` consecutive passing probes and
/// `unhealthy` after `unhealthyThreshold` consecutive failing ones; failures during `startPeriod`
/// (measured from the start of the process) do not count until the first probe passed, successes
/// always count (ECS semantics). A probe that takes longer
/// than `timeout` fails. Probes never overlap: the next one starts `interval` after the previous
/// one ended.
public struct TaskHealthCheck: Sendable, Hashable {
  /// What one probe does (shared with the load balancer; the pass rule is ``HealthRule``: 2xx only).
  public typealias Probe = HealthProbe

  public var probe: Probe
  public var interval: Duration
  public var timeout: Duration
  public var healthyThreshold: Int
  public var unhealthyThreshold: Int
  public var startPeriod: Duration
  /// The address probed; the task is expected to listen on it.
  public var host: String

  public init(
    probe: Probe,
    interval: Duration = .seconds(5),
    timeout: Duration = .seconds(2),
    healthyThreshold: Int = 2,
    unhealthyThreshold: Int = 3,
    startPeriod: Duration = .zero,
    host: String = "127.0.0.1"
  ) {
    self.probe = probe
    self.interval = interval
    self.timeout = timeout
    self.healthyThreshold = healthyThreshold
    self.unhealthyThreshold = unhealthyThreshold
    self.startPeriod = startPeriod
    self.host = host
  }

  /// Checks the fields a user can get wrong; the message names the field.
  public func validate() throws(TaskRunnerError) {
    if case .http(let path) = probe, !path.hasPrefix("/") {
      throw .invalidSpec(field: "healthCheck.path", reason: "must start with '/', got '\(path)'")
    }
    if interval <= .zero { throw .invalidSpec(field: "healthCheck.interval", reason: "must be positive") }
    if timeout <= .zero { throw .invalidSpec(field: "healthCheck.timeout", reason: "must be positive") }
    if healthyThreshold < 1 {
      throw .invalidSpec(field: "healthCheck.healthyThreshold", reason: "must be at least 1")
    }
    if unhealthyThreshold < 1 {
      throw .invalidSpec(field: "healthCheck.unhealthyThreshold", reason: "must be at least 1")
    }
    if startPeriod < .zero { throw .invalidSpec(field: "healthCheck.startPeriod", reason: "must not be negative") }
  }
}

// MARK: - Launch request

/// One task to start: its identity and its specification.
public struct TaskLaunch: Sendable, Hashable {
  /// Unique among the runner's live tasks, e.g. `web:2/abc` (revision / instance).
  public var taskID: String
  /// The revision this task runs, e.g. `web:2`; given to the task in `TEAL_REVISION`.
  public var revision: String
  public var spec: ProcessSpec

  public init(taskID: String, revision: String, spec: ProcessSpec) {
    self.taskID = taskID
    self.revision = revision
    self.spec = spec
  }
}

// MARK: - Logs

/// Size cap and rotation of a task's log files.
///
/// Invariant: each stream (stdout, stderr) uses at most `maxFileBytes * (rotatedFiles + 1)` bytes
/// of disk: the live file `<name>.log` never exceeds `maxFileBytes`; when the next write would pass
/// the cap, `<name>.log.(k)` becomes `<name>.log.(k+1)` (the oldest is deleted) and the live file
/// becomes `<name>.log.1`.
public struct TaskLogPolicy: Sendable, Hashable {
  public var maxFileBytes: Int
  public var rotatedFiles: Int

  public init(maxFileBytes: Int = 10 * 1024 * 1024, rotatedFiles: Int = 3) {
    self.maxFileBytes = max(1, maxFileBytes)
    self.rotatedFiles = max(0, rotatedFiles)
  }
}
