// TaskReconciler: makes this node's processes match the tasks ClusterState places on it, and
// reports what they do.

import Logging
import TealCluster
import TealDeploy
import TealTasks
import TealWire

/// Runs on every node. On every applied change, every task event and every ``resyncInterval``:
/// - starts the tasks placed on this node that are not running yet (once: a task whose process
///   exited is reported, and placement replaces it);
/// - reports `exited` (code `TaskRunState.lostExitCode`) a task ClusterState holds as starting or
///   running here that no process backs: an earlier run of the node reported it, and it died while
///   the node was down or the runner's ledger lost it (see `decide`);
/// - stops the process of a task ClusterState marked `stopping` (every live node has stopped
///   routing to it) and reports `taskStopped`;
/// - stops processes ClusterState no longer knows (a deleted service; a node marked down whose
///   tasks were replaced elsewhere): nothing routes to them;
/// - reports each task whose state, health or address differs from what ClusterState holds.
///
/// After a restart, processes of the previous run (from the runner's ledger) still serve and are
/// still routed: they are reported unhealthy first (so the routes drop them), killed once every
/// live node applied that routes generation (bounded by ``leftoverDrainTimeout``), and then
/// reported exited; only then does the node start new tasks.
actor TaskReconciler {
  private let node: NodeID
  private let address: String
  private let log: any ProposalSink
  private let runner: any NodeTaskRunning
  private let logger: Logger
  private let clock: any ControlClock
  /// Where process starts and stops run (beside the passes).
  private let executor: any ControlExecutor

  static let resyncInterval: Duration = .seconds(2)
  static let leftoverDrainTimeout: Duration = .seconds(30)

  /// Tasks this runner started in this process: never started twice.
  private var started: Set<String> = []
  /// Tasks whose stop is in progress.
  private var stopping: Set<String> = []
  /// Tasks whose `taskStopped` has been committed.
  private var reportedStopped: Set<String> = []

  init(
    node: NodeID, address: String, log: any ProposalSink, runner: any NodeTaskRunning, clock: any ControlClock,
    executor: any ControlExecutor, logger: Logger
  ) {
    self.node = node
    self.address = address
    self.log = log
    self.runner = runner
    self.clock = clock
    self.executor = executor
    self.logger = logger
  }

  // MARK: - Loop

  func run(wakeups: AsyncStream<Void>) async {
    await drainLeftovers()
    for await _ in wakeups {
      guard !Task.isCancelled else { return }
      await reconcile()
    }
  }

  func reconcile() async {
    let state = await log.localState()
    let mine = state.tasks.values.filter { $0.node == node }
    let local = Dictionary(uniqueKeysWithValues: await runner.tasks().map { ($0.taskID, $0) })

    let decisions = Self.decide(
      mine: mine, runnerKnows: Set(local.keys), startedHere: started, stoppingHere: stopping,
      reportedStopped: reportedStopped)
    for task in decisions.start { start(task, state: state) }
    for id in decisions.stop { stop(id, thenReport: true) }
    if !decisions.lost.isEmpty {
      logger.notice(
        "no process backs these tasks (lost while the node was down); reporting them exited",
        metadata: ["tasks": "\(decisions.lost.map(\.taskID))"])
    }
    let known = Set(mine.map(\.id))
    for (id, info) in local where !known.contains(id) && info.state.isLive && !stopping.contains(id) {
      logger.info("stopping a task the cluster no longer places here", metadata: ["task": "\(id)"])
      stop(id, thenReport: false)
    }
    await report(mine, local: await runner.tasks(), lost: decisions.lost)
  }

  // MARK: - Decisions

  /// What ``reconcile()`` does with the tasks ClusterState places on this node.
  struct Decisions: Equatable {
    /// Tasks to start (in id order).
    var start: [ClusterTask] = []
    /// `stopping` tasks whose process to stop before reporting `taskStopped`.
    var stop: [String] = []
    /// Reports for tasks no process backs.
    var lost: [TaskReport] = []
  }

  /// The pure part of ``reconcile()``: from this node's tasks in ClusterState (`mine`), the ids the
  /// runner knows, the tasks this process started (`startedHere`, inserted before the spawn, so a
  /// spawn in flight counts), the stops under way and the `taskStopped` already committed.
  ///
  /// A task meant to run is started when it is `pending`. One ClusterState holds as `starting` or
  /// `running` that this process did not start and the runner does not know was reported by an
  /// earlier run of the node and has no process: it is reported `exited` with
  /// `TaskRunState.lostExitCode` (never started again under the same id), so placement replaces it
  /// and the routes drop it.
  static func decide(
    mine: [ClusterTask], runnerKnows: Set<String>, startedHere: Set<String>, stoppingHere: Set<String>,
    reportedStopped: Set<String>
  ) -> Decisions {
    var decisions = Decisions()
    for task in mine.sorted(by: { $0.id < $1.id }) {
      switch task.desired {
      case .running, .draining:
        guard !runnerKnows.contains(task.id), !startedHere.contains(task.id) else { continue }
        switch task.state {
        case .pending: decisions.start.append(task)
        case .starting, .running:
          // Reported by an earlier run of this node: its process died while the node was down, or
          // the ledger lost it (the ledger's leftovers were drained and reported before the first
          // reconcile).
          decisions.lost.append(
            TaskReport(taskID: task.id, state: .exited(code: TaskRunState.lostExitCode), healthy: false))
        case .exited: break
        }
      case .stopping:
        if !stoppingHere.contains(task.id), !reportedStopped.contains(task.id) { decisions.stop.append(task.id) }
      }
    }
    return decisions
  }

  // MARK: - Start and stop

  private func start(_ task: ClusterTask, state: ClusterState) {
    started.insert(task.id)
    guard let service = state.services[task.service], let revision = service.revision(task.revision.number) else {
      logger.warning("placed task names an unknown revision", metadata: ["task": "\(task.id)"])
      return
    }
    let spec = Self.processSpec(revision.revision.spec.task, taskID: task.id, revision: task.revision, host: address)
    let launch = TaskLaunch(taskID: task.id, revision: task.revision.description, spec: spec)
    let (runner, log, logger, node) = (runner, log, logger, node)
    executor.spawn {
      do {
        try await runner.start(launch)
      } catch {
        logger.error("task did not start", metadata: ["task": "\(task.id)", "error": "\(error)"])
        _ = try? await log.submit(
          .taskReports(node: node, reports: [TaskReport(taskID: task.id, state: .exited(code: 127), healthy: false)]))
      }
    }
  }

  private func stop(_ taskID: String, thenReport: Bool) {
    stopping.insert(taskID)
    executor.spawn {
      await self.runner.stop(taskID)
      await self.runner.forget(taskID)
      if thenReport {
        do {
          _ = try await self.log.submit(.taskStopped(node: self.node, taskID: taskID))
          await self.stopReported(taskID)
        } catch {
          self.logger.warning("taskStopped not committed yet", metadata: ["task": "\(taskID)", "error": "\(error)"])
        }
      }
      await self.stopFinished(taskID)
    }
  }

  private func stopReported(_ taskID: String) { reportedStopped.insert(taskID) }
  private func stopFinished(_ taskID: String) { stopping.remove(taskID) }

  /// The runner's description of a revision's task: the spec's command, arguments and environment,
  /// the port through `PORT` (a non-zero `task.port` fixes it), the health check against this
  /// node's address.
  static func processSpec(_ task: TealDeploy.TaskSpec, taskID: String, revision: RevisionID, host: String)
    -> ProcessSpec
  {
    var environment = task.env
    environment["HOST"] = host
    environment["TEAL_TASK_ID"] = taskID
    environment["TEAL_REVISION"] = revision.description
    let check = task.healthCheck
    let health = TaskHealthCheck(
      probe: .http(path: check.path), interval: .milliseconds(check.interval.milliseconds),
      timeout: .milliseconds(check.timeout.milliseconds), healthyThreshold: check.healthyThreshold,
      unhealthyThreshold: check.unhealthyThreshold, host: host)
    return ProcessSpec(
      command: task.command, arguments: task.args, environment: environment,
      fixedPort: task.port > 0 ? task.port : nil, healthCheck: health)
  }

  // MARK: - Reports

  private func report(_ mine: [ClusterTask], local: [NodeTaskStatus], lost: [TaskReport]) async {
    let byID = Dictionary(uniqueKeysWithValues: local.map { ($0.taskID, $0) })
    var reports = lost
    for task in mine {
      guard let info = byID[task.id], let observed = Self.report(of: info, host: address) else { continue }
      let changed =
        observed.state != task.state || observed.healthy != task.healthy || observed.address != task.address
        || observed.port != task.port
      if changed { reports.append(observed) }
    }
    guard !reports.isEmpty else { return }
    do { _ = try await log.submit(.taskReports(node: node, reports: reports)) } catch {
      logger.debug("task reports not committed yet", metadata: ["error": "\(error)"])
    }
  }

  static func report(of info: TaskInfo, host: String) -> TaskReport? { report(of: NodeTaskStatus(info), host: host) }

  static func report(of info: NodeTaskStatus, host: String) -> TaskReport? {
    switch info.state {
    case .starting:
      return TaskReport(taskID: info.taskID, state: .starting, healthy: false, address: host, port: info.port)
    case .healthy:
      return TaskReport(taskID: info.taskID, state: .running, healthy: true, address: host, port: info.port)
    case .unhealthy:
      return TaskReport(taskID: info.taskID, state: .running, healthy: false, address: host, port: info.port)
    case .stopping: return nil
    case .exited(let exit):
      // The cluster's convention: a negative code is the signal that ended the process.
      let code: Int32 =
        switch exit.termination {
        case .exited(let code): code
        case .signaled(let signal): -signal
        }
      return TaskReport(taskID: info.taskID, state: .exited(code: code), healthy: false)
    }
  }

  // MARK: - Leftovers of a previous run

  private func drainLeftovers() async {
    let ids = await runner.leftoversFromPreviousRun()
    guard !ids.isEmpty else { return }
    logger.notice("processes of the previous run are still alive; draining them", metadata: ["tasks": "\(ids)"])
    let deadline = clock.monotonicNow.advanced(by: Self.leftoverDrainTimeout)
    // 1. Out of the routes: report them unhealthy (they are, as far as this node can vouch), as the
    // previous run's, so that the circuit breaker does not take them for a revision going bad.
    let reports = ids.map { TaskReport(taskID: $0, state: .running, healthy: false, previousRun: true) }
    while clock.monotonicNow < deadline {
      do {
        _ = try await log.submit(.taskReports(node: node, reports: reports))
        break
      } catch {
        try? await clock.sleep(for: .milliseconds(200))
      }
    }
    // 2. Wait until every live node applied routes without them.
    while clock.monotonicNow < deadline {
      let state = await log.localState()
      if Self.unrouted(ids, in: state) { break }
      try? await clock.sleep(for: .milliseconds(100))
    }
    // 3. Stop them, and say so: as lost, since they end because their node restarted, not by a
    // fault of their revision (neither the circuit breaker nor the crash-loop backoff counts them).
    await runner.killLeftoversFromPreviousRun()
    let exited = ids.map { TaskReport(taskID: $0, state: .exited(code: TaskRunState.lostExitCode), healthy: false) }
    _ = try? await log.submit(.taskReports(node: node, reports: exited))
  }

  /// True when no service's committed routes contain `ids` and every live node applied them.
  static func unrouted(_ ids: [String], in state: ClusterState) -> Bool {
    let set = Set(ids)
    return state.services.allSatisfy { name, service in
      !service.routes.targets.contains { set.contains($0.taskID) }
        && state.everyLiveNodeApplied(generation: service.routes.generation, of: name)
    }
  }
}
