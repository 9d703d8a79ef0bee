// The task runner: one actor per node that runs tasks as local processes.

import Foundation
import Logging
import NIOCore
import NIOPosix
import TealHealth

#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

/// Runs tasks as local processes, checks their health and reports every state change.
///
/// Invariants:
/// - every task is spawned in its own process group; stopping a task signals the whole group;
/// - every spawned process is reaped by its watcher thread with `waitpid(pid)`, so the runner leaves
///   no zombie; when a task's main process ends, what is left of its group is killed first;
/// - `stop` sends SIGTERM, waits the grace period, then sends SIGKILL; it returns only after the
///   main process was reaped;
/// - `shutdown` stops every live task that way and finishes the event streams; afterwards no task
///   of this runner is running (see Docs/TASKS.md for the crash case);
/// - events of one task arrive in the order its state changed; `.exited` is always the last one.
public actor TaskRunner {
  /// How the runner places files and what it does by default.
  public struct Configuration: Sendable {
    /// Where `<task>.stdout.log` and `<task>.stderr.log` are written (created if missing).
    public var logDirectory: String
    public var logPolicy: TaskLogPolicy
    /// The grace period between SIGTERM and SIGKILL when neither `stop` nor the spec sets one.
    public var defaultStopGracePeriod: Duration
    /// The variables a task takes from the node's environment (when the node has them); nothing
    /// else of the node's environment reaches a task. `ProcessSpec.environment` comes on top, then
    /// the runner's own variables (`PORT`, `TEAL_TASK_ID`, `TEAL_REVISION`).
    public var inheritedEnvironmentNames: Set<String>
    /// `PATH`, `HOME`, `LANG`, `LC_ALL`, `TZ`, `TMPDIR`: what a program needs to find commands, its
    /// locale and its time zone; no credential or node setting.
    public static let defaultInheritedEnvironmentNames: Set<String> = [
      "PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR",
    ]
    /// `PATH` given to a task when the node has none.
    public static let defaultPath = "/usr/local/bin:/usr/bin:/bin"
    /// Ports handed out to tasks; nil lets the kernel pick a free ephemeral port.
    public var portRange: ClosedRange<Int>?
    /// The ledger of live process groups (`<pgid> <starttime> <taskID>` lines), rewritten on every
    /// start and exit, read by `killLeftoversFromPreviousRun()`. Default: `<logDirectory>/tasks.ledger`.
    public var ledgerPath: String

    public init(
      logDirectory: String,
      logPolicy: TaskLogPolicy = TaskLogPolicy(),
      defaultStopGracePeriod: Duration = .seconds(10),
      inheritedEnvironmentNames: Set<String> = Configuration.defaultInheritedEnvironmentNames,
      portRange: ClosedRange<Int>? = nil,
      ledgerPath: String? = nil
    ) {
      self.logDirectory = logDirectory
      self.logPolicy = logPolicy
      self.defaultStopGracePeriod = defaultStopGracePeriod
      self.inheritedEnvironmentNames = inheritedEnvironmentNames
      self.portRange = portRange
      self.ledgerPath = ledgerPath ?? "\(logDirectory)/tasks.ledger"
    }
  }

  // MARK: State

  private struct Record {
    var launch: TaskLaunch
    var serial: UInt64
    var process: TaskProcess
    var port: Int
    /// From `/proc/<pid>/stat`, for the ledger; 0 when unreadable.
    var startTime: UInt64
    var state: TaskState
    var stdoutLogPath: String
    var stderrLogPath: String
    var stopRequested = false
    var killedAfterGracePeriod = false
    var healthTask: Task<Void, Never>?
    var escalationTask: Task<Void, Never>?
    var exitWaiters: [CheckedContinuation<TaskExit, Never>] = []

    var info: TaskInfo {
      TaskInfo(
        taskID: launch.taskID, revision: launch.revision, pid: process.pid, port: port, state: state,
        stdoutLogPath: stdoutLogPath, stderrLogPath: stderrLogPath)
    }
  }

  public let configuration: Configuration
  private let clock: TaskClock
  private let prober: HealthProber
  private let log: Logger
  private var records: [String: Record] = [:]
  private var nextSerial: UInt64 = 0
  private var subscribers: [UInt64: AsyncStream<TaskEvent>.Continuation] = [:]
  private var nextSubscriber: UInt64 = 0
  private var nextPortCandidate: Int?
  private var isShutDown = false
  private let deregister: (@Sendable (TaskInfo) async -> Void)?

  /// Events buffered per subscriber that has not read them yet. When a subscriber's buffer is
  /// full, its oldest event is dropped for the new one (`bufferingNewest`): a slow reader loses
  /// old transitions, never the latest state of a task; `tasks()` and `task(_:)` give the current
  /// state of every task at any time.
  public static let eventBufferLimit = 1024

  /// - Parameters:
  ///   - eventLoopGroup: runs the health probes; the shared NIO group by default.
  ///   - clock: health-check intervals, start period and stop grace period.
  ///   - deregister: called by `stop` (and `shutdown`) before SIGTERM is sent, with the task in state
  ///     `stopping`; SIGTERM follows only once it returned. The node passes the load balancer's
  ///     per-target deregistration (stop routing to the task, wait for its requests in flight,
  ///     bounded by the deregistration delay), so a task is never signalled while it is routed.
  public init(
    configuration: Configuration,
    eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
    clock: TaskClock = .continuous,
    logger: Logger = Logger(label: "teal.tasks"),
    deregister: (@Sendable (TaskInfo) async -> Void)? = nil
  ) {
    self.deregister = deregister
    self.configuration = configuration
    self.clock = clock
    self.prober = HealthProber(group: eventLoopGroup)
    self.log = logger
  }

  deinit {
    // Last line of defence if `shutdown()` was never called: no task outlives its runner.
    for record in records.values where record.state.isLive {
      record.process.signalGroup(SIGKILL)
    }
  }

  // MARK: Events

  /// A new subscription to every state change from now on. Each call returns an independent
  /// stream; streams finish after `shutdown()`. At most ``eventBufferLimit`` unread events are kept
  /// per stream, the newest.
  public func events() -> AsyncStream<TaskEvent> {
    let (stream, continuation) = AsyncStream<TaskEvent>.makeStream(
      bufferingPolicy: .bufferingNewest(Self.eventBufferLimit))
    if isShutDown {
      continuation.finish()
      return stream
    }
    let key = nextSubscriber
    nextSubscriber += 1
    subscribers[key] = continuation
    continuation.onTermination = { [weak self] _ in
      Task { await self?.unsubscribe(key) }
    }
    return stream
  }

  private func unsubscribe(_ key: UInt64) {
    subscribers[key] = nil
  }

  private func emit(_ record: Record) {
    let event = TaskEvent(
      taskID: record.launch.taskID, revision: record.launch.revision, pid: record.process.pid, state: record.state)
    for continuation in subscribers.values {
      continuation.yield(event)
    }
  }

  // MARK: Queries

  /// The task with this id (live, or exited and not yet replaced).
  public func task(_ taskID: String) -> TaskInfo? {
    records[taskID]?.info
  }

  /// Every task the runner knows, sorted by id.
  public func tasks() -> [TaskInfo] {
    records.values.map(\.info).sorted { $0.taskID < $1.taskID }
  }

  // MARK: Start

  /// Spawns the task and returns at once, in state `starting` (or `healthy` without a health
  /// check). Never waits for the task to become healthy: follow `events()` for that.
  ///
  /// - Throws: `TaskRunnerError` with a message naming the task and what is wrong, e.g.
  ///   `task web:2/abc: cannot start '/no/such': No such file or directory`. Nothing is left
  ///   running when it throws.
  @discardableResult
  public func start(_ launch: TaskLaunch) throws(TaskRunnerError) -> TaskInfo {
    guard !isShutDown else { throw .shutDown }
    let taskID = launch.taskID
    let spec = launch.spec
    if let existing = records[taskID], existing.state.isLive { throw .duplicateTaskID(taskID) }
    try Self.validate(launch)
    if let directory = spec.workingDirectory, !Self.isDirectory(directory) {
      throw .workingDirectoryMissing(taskID: taskID, path: directory)
    }

    let port: Int
    if let fixedPort = spec.fixedPort {
      port = fixedPort
    } else {
      port = try allocatePort(taskID: taskID)
    }
    var environment = ProcessInfo.processInfo.environment.filter {
      configuration.inheritedEnvironmentNames.contains($0.key)
    }
    if environment["PATH"] == nil { environment["PATH"] = Configuration.defaultPath }
    environment.merge(spec.environment) { _, new in new }
    environment[spec.portEnvironmentName] = String(port)
    environment["TEAL_TASK_ID"] = taskID
    environment["TEAL_REVISION"] = launch.revision

    let baseName = Self.logFileBaseName(taskID)
    let stdoutPath = "\(configuration.logDirectory)/\(baseName).stdout.log"
    let stderrPath = "\(configuration.logDirectory)/\(baseName).stderr.log"
    let stdoutLog: TaskLogFile
    let stderrLog: TaskLogFile
    do {
      try FileManager.default.createDirectory(atPath: configuration.logDirectory, withIntermediateDirectories: true)
    } catch {
      throw .cannotOpenLog(taskID: taskID, path: configuration.logDirectory, reason: "\(error)")
    }
    do throws(TaskLogFileError) {
      stdoutLog = try TaskLogFile(path: stdoutPath, policy: configuration.logPolicy)
      stderrLog = try TaskLogFile(path: stderrPath, policy: configuration.logPolicy)
    } catch {
      throw .cannotOpenLog(taskID: taskID, path: error.path, reason: error.reason)
    }

    nextSerial += 1
    let serial = nextSerial
    let process = try TaskProcess.spawn(
      taskID: taskID,
      command: spec.command,
      arguments: spec.arguments,
      environment: environment,
      workingDirectory: spec.workingDirectory,
      stdoutLog: stdoutLog,
      stderrLog: stderrLog,
      onExit: { [weak self] termination in
        Task { await self?.processExited(taskID: taskID, serial: serial, termination: termination) }
      }
    )
    let startedAt = clock.now()
    var record = Record(
      launch: launch, serial: serial, process: process, port: port,
      startTime: TaskLedger.startTime(of: process.pid) ?? 0, state: .starting,
      stdoutLogPath: stdoutPath, stderrLogPath: stderrPath)
    // Exit waiters of a replaced (exited) record were resumed when it exited.
    records[taskID] = record
    writeLedger()
    log.info(
      "task started",
      metadata: ["task": "\(taskID)", "pid": "\(process.pid)", "port": "\(port)", "command": "\(spec.command)"])
    emit(record)

    if let check = spec.healthCheck {
      record.healthTask = Task { [weak self] in
        await self?.runHealthChecks(taskID: taskID, serial: serial, check: check, port: port, startedAt: startedAt)
      }
      records[taskID] = record
    } else {
      record.state = .healthy
      records[taskID] = record
      emit(record)
    }
    return record.info
  }

  private static func validate(_ launch: TaskLaunch) throws(TaskRunnerError) {
    let spec = launch.spec
    if launch.taskID.isEmpty { throw .invalidSpec(field: "taskID", reason: "must not be empty") }
    if launch.taskID.contains(where: { $0.isNewline }) || launch.revision.contains(where: { $0.isNewline }) {
      throw .invalidSpec(field: "taskID", reason: "and revision must be single-line")
    }
    if spec.command.isEmpty { throw .invalidSpec(field: "command", reason: "must not be empty") }
    if spec.portEnvironmentName.isEmpty || spec.portEnvironmentName.contains("=") {
      throw .invalidSpec(field: "portEnvironmentName", reason: "must be a non-empty name without '='")
    }
    for name in spec.environment.keys where name.isEmpty || name.contains("=") {
      throw .invalidSpec(field: "environment", reason: "has an invalid variable name '\(name)'")
    }
    if let port = spec.fixedPort, !(1...65535).contains(port) {
      throw .invalidSpec(field: "fixedPort", reason: "must be in 1...65535, got \(port)")
    }
    if let grace = spec.stopGracePeriod, grace < .zero {
      throw .invalidSpec(field: "stopGracePeriod", reason: "must not be negative")
    }
    try spec.healthCheck?.validate()
  }

  private static func isDirectory(_ path: String) -> Bool {
    var isDirectory: ObjCBool = false
    return FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) && isDirectory.boolValue
  }

  /// A file-name-safe form of the task id; a short hash keeps ids that differ only in unsafe
  /// characters apart (`web:2/abc` → `web_2_abc-1a2b3c4d`).
  static func logFileBaseName(_ taskID: String) -> String {
    let allowed = Set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
    var safe = String(taskID.map { allowed.contains($0) ? $0 : "_" })
    if safe.hasPrefix(".") { safe = "_" + safe.dropFirst() }
    if safe == taskID { return safe }
    var hash: UInt32 = 2_166_136_261
    for byte in taskID.utf8 {
      hash = (hash ^ UInt32(byte)) &* 16_777_619
    }
    let hex = String(hash, radix: 16)
    return "\(safe)-\(String(repeating: "0", count: 8 - hex.count))\(hex)"
  }

  // MARK: Ports

  private func allocatePort(taskID: String) throws(TaskRunnerError) -> Int {
    let inUse = Set(records.values.filter { $0.state.isLive }.map(\.port))
    if let range = configuration.portRange {
      var candidate = nextPortCandidate.map { range.contains($0) ? $0 : range.lowerBound } ?? range.lowerBound
      for _ in 0..<range.count {
        let port = candidate
        candidate = port >= range.upperBound ? range.lowerBound : port + 1
        if !inUse.contains(port), Self.bindablePort(port) != nil {
          nextPortCandidate = candidate
          return port
        }
      }
      throw .noFreePort(taskID: taskID, reason: "every port in \(range) is taken")
    }
    for _ in 0..<64 {
      guard let port = Self.bindablePort(0) else { break }
      if !inUse.contains(port) { return port }
    }
    throw .noFreePort(taskID: taskID, reason: "the kernel gave no free port")
  }

  /// Binds a TCP socket on all IPv4 addresses to `port` (0: kernel's choice), closes it and
  /// returns the port, or nil when it cannot be bound. The port is free at that moment only.
  private static func bindablePort(_ port: Int) -> Int? {
    #if canImport(Glibc)
      let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    #else
      let fd = socket(AF_INET, SOCK_STREAM, 0)
    #endif
    guard fd >= 0 else { return nil }
    defer { _ = close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = in_port_t(UInt16(port).bigEndian)
    address.sin_addr = in_addr(s_addr: INADDR_ANY)
    let bound = withUnsafePointer(to: &address) { pointer in
      pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
        bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
      }
    }
    guard bound == 0 else { return nil }
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let named = withUnsafeMutablePointer(to: &address) { pointer in
      pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
    }
    guard named == 0 else { return nil }
    return Int(UInt16(bigEndian: address.sin_port))
  }

  // MARK: Health

  private func runHealthChecks(taskID: String, serial: UInt64, check: TaskHealthCheck, port: Int, startedAt: Duration)
    async
  {
    var tracker = HealthTracker(
      healthyThreshold: check.healthyThreshold, unhealthyThreshold: check.unhealthyThreshold)
    while !Task.isCancelled {
      guard let record = records[taskID], record.serial == serial, !record.stopRequested, record.state.isLive else {
        return
      }
      let failure = await prober.probe(check.probe, host: check.host, port: port, timeout: check.timeout)
      let inStartPeriod = clock.now() - startedAt < check.startPeriod
      if let change = tracker.record(passed: failure == nil, excusable: inStartPeriod) {
        guard var current = records[taskID], current.serial == serial, !current.stopRequested,
          current.state.isLive, !Task.isCancelled
        else { return }
        switch change {
        case .healthy: current.state = .healthy
        case .unhealthy: current.state = .unhealthy(reason: failure ?? "health check failed")
        case .unknown: current.state = .starting
        }
        records[taskID] = current
        log.info("task health changed", metadata: ["task": "\(taskID)", "state": "\(current.state)"])
        emit(current)
      }
      do {
        try await clock.sleep(check.interval)
      } catch {
        return
      }
    }
  }

  // MARK: Ledger

  private func writeLedger() {
    let entries = records.values.filter { $0.state.isLive }.sorted { $0.launch.taskID < $1.launch.taskID }.map {
      TaskLedgerEntry(taskID: $0.launch.taskID, processGroup: $0.process.pid, startTime: $0.startTime)
    }
    TaskLedger.write(entries, to: configuration.ledgerPath)
  }

  /// The process groups a previous runner with the same ledger left running (the ledger's entries
  /// whose process still exists with the recorded start time), without touching them. The node uses
  /// it at startup to take those tasks out of the routes before ``killLeftoversFromPreviousRun()``.
  /// Call it before starting any task: starting one rewrites the ledger.
  public func leftoversFromPreviousRun() -> [TaskLedgerEntry] {
    let ours = Set(records.values.filter { $0.state.isLive }.map(\.process.pid))
    return TaskLedger.read(configuration.ledgerPath).filter {
      !ours.contains($0.processGroup) && TaskLedger.mayBeOurs($0)
    }
  }

  /// Kills (SIGKILL) the process groups that a previous runner with the same ledger left running,
  /// e.g. after the node was killed with SIGKILL and could not stop its tasks. Call it once at
  /// startup, before starting tasks. Returns the entries whose group was signalled. A ledger entry
  /// whose pid now belongs to another process (different start time) is skipped.
  @discardableResult
  public func killLeftoversFromPreviousRun() -> [TaskLedgerEntry] {
    let ours = Set(records.values.filter { $0.state.isLive }.map(\.process.pid))
    var killed: [TaskLedgerEntry] = []
    for entry in TaskLedger.read(configuration.ledgerPath) where !ours.contains(entry.processGroup) {
      guard TaskLedger.mayBeOurs(entry) else { continue }
      if kill(-entry.processGroup, SIGKILL) == 0 {
        killed.append(entry)
        log.warning(
          "killed a task left running by a previous run",
          metadata: ["task": "\(entry.taskID)", "pgid": "\(entry.processGroup)"])
      }
    }
    writeLedger()
    return killed
  }

  // MARK: Exit

  private func processExited(taskID: String, serial: UInt64, termination: TaskTermination) {
    guard var record = records[taskID], record.serial == serial else { return }
    record.healthTask?.cancel()
    record.escalationTask?.cancel()
    record.healthTask = nil
    record.escalationTask = nil
    let exit = TaskExit(
      termination: termination, stopRequested: record.stopRequested,
      killedAfterGracePeriod: record.killedAfterGracePeriod)
    record.state = .exited(exit)
    let waiters = record.exitWaiters
    record.exitWaiters = []
    records[taskID] = record
    writeLedger()
    if record.stopRequested || termination.isSuccess {
      log.info("task exited", metadata: ["task": "\(taskID)", "exit": "\(exit)"])
    } else {
      log.warning("task exited unexpectedly", metadata: ["task": "\(taskID)", "exit": "\(exit)"])
    }
    emit(record)
    for waiter in waiters {
      waiter.resume(returning: exit)
    }
  }

  /// Waits until the task's main process has been reaped; nil for an unknown id.
  public func waitForExit(_ taskID: String) async -> TaskExit? {
    guard let record = records[taskID] else { return nil }
    if case .exited(let exit) = record.state { return exit }
    let serial = record.serial
    return await withCheckedContinuation { (continuation: CheckedContinuation<TaskExit, Never>) in
      // Runs before the suspension, on this actor: the record is still the live one checked above.
      if var current = records[taskID], current.serial == serial {
        current.exitWaiters.append(continuation)
        records[taskID] = current
      }
    }
  }

  // MARK: Stop

  /// Stops the task: first the `deregister` hook given at init (the task is `stopping` meanwhile and
  /// still running), then SIGTERM to its process group, then SIGKILL to the group if the main
  /// process is still running after the grace period (`gracePeriod`, else the spec's, else the
  /// runner's default; counted from SIGTERM). Returns once the main process was reaped; nil for an
  /// unknown id. Calling it again while a stop is under way waits for the same exit (the first grace
  /// period stays in force).
  @discardableResult
  public func stop(_ taskID: String, gracePeriod: Duration? = nil) async -> TaskExit? {
    guard var record = records[taskID] else { return nil }
    if case .exited(let exit) = record.state { return exit }
    if !record.stopRequested {
      let serial = record.serial
      let grace = max(.zero, gracePeriod ?? record.launch.spec.stopGracePeriod ?? configuration.defaultStopGracePeriod)
      record.stopRequested = true
      record.healthTask?.cancel()
      record.healthTask = nil
      record.state = .stopping
      records[taskID] = record
      emit(record)
      if let deregister {
        log.info("task deregistering", metadata: ["task": "\(taskID)"])
        await deregister(record.info)
      }
      // The task may have exited during the deregistration; then there is nothing to signal.
      guard var current = records[taskID], current.serial == serial, current.state.isLive else {
        return await waitForExit(taskID)
      }
      current.escalationTask = Task { [clock, weak self] in
        do {
          try await clock.sleep(grace)
        } catch {
          return
        }
        await self?.killAfterGracePeriod(taskID: taskID, serial: serial)
      }
      records[taskID] = current
      current.process.signalGroup(SIGTERM)
      log.info("task stopping", metadata: ["task": "\(taskID)", "grace": "\(grace)"])
    }
    return await waitForExit(taskID)
  }

  private func killAfterGracePeriod(taskID: String, serial: UInt64) {
    guard var record = records[taskID], record.serial == serial, record.state.isLive else { return }
    record.killedAfterGracePeriod = true
    records[taskID] = record
    log.warning("task ignored SIGTERM for its grace period; sending SIGKILL", metadata: ["task": "\(taskID)"])
    record.process.signalGroup(SIGKILL)
  }

  /// Stops every live task concurrently (each with `stop`'s semantics); returns when all exited.
  public func stopAll(gracePeriod: Duration? = nil) async {
    let live = records.values.filter { $0.state.isLive }.map(\.launch.taskID)
    await withTaskGroup(of: Void.self) { group in
      for taskID in live {
        group.addTask { _ = await self.stop(taskID, gracePeriod: gracePeriod) }
      }
    }
  }

  /// Refuses new tasks, stops every live task (SIGTERM, grace, SIGKILL), waits until all were
  /// reaped, then finishes every event stream. Call it before the node exits.
  public func shutdown(gracePeriod: Duration? = nil) async {
    isShutDown = true
    await stopAll(gracePeriod: gracePeriod)
    for continuation in subscribers.values {
      continuation.finish()
    }
    subscribers = [:]
  }

  /// Removes an exited task from `tasks()`; returns false when it is unknown or still live.
  @discardableResult
  public func forget(_ taskID: String) -> Bool {
    guard let record = records[taskID], !record.state.isLive else { return false }
    records[taskID] = nil
    return true
  }
}
