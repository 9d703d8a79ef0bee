// A deterministic world for one deployment: nodes that reconcile to the desired state and report
// back, a leader that calls hooks and proposes wake-ups, and a log every input goes through. Used by
// `teal spec plan` (rehearsal, also of failure paths) and by the tests (crash at any input, replay).
// Pure: simulated time, no I/O.

import TealWire

/// What the simulated world does.
public struct SimulationScenario: Sendable {
  /// What to do at a stage.
  public enum Fault: Sendable, Hashable {
    /// Hooks at the stage answer FAILED.
    case failHook
    /// A breaching metric sample (100 % 5xx) arrives; alarms evaluated at the stage fire.
    case alarm
    /// An operator asks for a rollback.
    case rollback
    /// An operator asks to stop (stop means roll back).
    case stop
  }

  /// Blue's health when a fault strikes.
  public enum BlueCondition: Sendable, Hashable {
    /// Blue keeps all its tasks healthy.
    case healthy
    /// Blue loses all but one task when the fault strikes; nodes restart them, healthy after `blueRecovery`.
    case belowCount
    /// Blue loses every task when the fault strikes and they never become healthy again.
    case dead
  }

  public var nodes: [NodeID] = [NodeID("n1"), NodeID("n2"), NodeID("n3")]
  /// A started task passes its health check this long after it starts.
  public var taskHealthyAfter = TimeSpan.seconds(2)
  /// Green's tasks never become healthy.
  public var greenNeverHealthy = false
  /// A node applies new routes this long after they were committed.
  public var routesApplyAfter = TimeSpan.milliseconds(100)
  /// A node drains a revision this long after it applied the routes that removed it.
  public var drainAfter = TimeSpan.seconds(1)
  /// A node stops a task set this long after it was told to.
  public var stopAfter = TimeSpan.milliseconds(500)
  /// Every hook answers this long after it is called.
  public var hookLatency = TimeSpan.seconds(1)
  /// Scripted answers of the hooks at a stage: attempt n gets element n-1 (the last one repeats).
  /// Unscripted hooks answer SUCCEEDED.
  public var hookOutcomes: [LifecycleStage: [HookOutcome]] = [:]
  /// Faults by stage (applied once, when the deployment is first seen at the stage).
  public var faults: [LifecycleStage: Fault] = [:]
  public var blueCondition = BlueCondition.healthy
  public var blueRecovery = TimeSpan.seconds(20)
  /// The leader crashes when the deployment first reaches these stages: every effect not yet
  /// carried out (hook calls in flight, wake-ups, reports not yet committed) is lost, and a new
  /// leader continues after `outage` from the committed state.
  public var killLeaderAt: Set<LifecycleStage> = []
  /// The leader also crashes right after these input indices (0-based) of the log.
  public var crashAfterInputs: Set<Int> = []
  public var outage = TimeSpan.seconds(10)
  /// After a crash, every node sends its reports again to the new leader (as the node reporters
  /// do). Off only to show that the crash tests detect a lost report.
  public var nodesReportAgainAfterCrash = true
  /// An operator continues a deployment waiting at a PAUSE hook this long after it began waiting
  /// (nil: nobody does, the hook's timeout decides).
  public var pauseApprovedAfter: TimeSpan? = .minutes(1)
  /// The service's active revisions at submission (default: blue only).
  public var activeRevisions: [RevisionID]? = nil
  /// Bound on inputs (a guard; a real deployment needs a few hundred).
  public var maximumInputs = 50_000

  public init() {}
}

/// A hook call the simulated leader made.
public struct SimulatedHookCall: Hashable, Sendable {
  public var at: Instant
  public var executionId: String
  public var attempt: Int
  public var stage: LifecycleStage
}

/// The result of a simulation.
public struct SimulationResult: Sendable {
  public var deployment: Deployment
  /// Every input in log order: replaying them gives the same deployment.
  public var log: [DeploymentInput]
  public var hookCalls: [SimulatedHookCall]
  /// The world at the end, per node: routes generation applied and tasks per revision.
  public var world: [SimulatedNode]
  public var crashes: [Instant]
  public var start: Instant

  /// Whether every live node's world matches the final desired state.
  public var worldMatchesDesiredState: Bool {
    let desired = deployment.desired
    return world.allSatisfy { node in
      guard node.routesGeneration == desired.routes.generation else { return false }
      return desired.taskSets.allSatisfy { target in
        let running = node.running(target.revision)
        return target.phase == .stopped
          ? running == 0
          : running
            == SimulatedWorld.share(
              of: target.count, node: node.node, among: world.map(\.node))
      }
    }
  }
}

/// One simulated node: what it runs and has applied.
public struct SimulatedNode: Hashable, Sendable {
  public var node: NodeID
  public var routesGeneration = 0
  public var tasks: [RevisionID: (running: Int, healthy: Int)] = [:]
  public var drained: Set<RevisionID> = []
  public var stopped: Set<RevisionID> = []

  public func running(_ revision: RevisionID) -> Int { tasks[revision]?.running ?? 0 }
  public func healthy(_ revision: RevisionID) -> Int { tasks[revision]?.healthy ?? 0 }

  public static func == (lhs: SimulatedNode, rhs: SimulatedNode) -> Bool {
    lhs.node == rhs.node && lhs.routesGeneration == rhs.routesGeneration && lhs.drained == rhs.drained
      && lhs.stopped == rhs.stopped && lhs.tasks.keys == rhs.tasks.keys
      && lhs.tasks.allSatisfy { rhs.tasks[$0.key]?.running == $0.value.running }
  }

  public func hash(into hasher: inout Hasher) { hasher.combine(node) }
}

/// The simulated world and its event loop.
public enum SimulatedWorld {
  /// Tasks of a set of `count` that `node` runs: spread evenly, the first nodes take the remainder.
  public static func share(of count: Int, node: NodeID, among nodes: [NodeID]) -> Int {
    let sorted = nodes.sorted()
    guard let index = sorted.firstIndex(of: node), !sorted.isEmpty else { return 0 }
    return count / sorted.count + (index < count % sorted.count ? 1 : 0)
  }

  private enum Event {
    case input(DeploymentCommand)
    case hookAnswer(HookInvocation)
    case wakeUp(Instant)
    case applyRoutes(NodeID)
    case tasksStarted(NodeID, RevisionID, count: Int, healthy: Bool)
    case drained(NodeID, RevisionID)
    case stopped(NodeID, RevisionID)
  }

  /// Runs `green` over blue revision `blue` (with its own count) in `scenario`.
  public static func run(
    green: Revision, blue: BlueRevision, scenario: SimulationScenario, deploymentId: String = "d-1"
  ) -> SimulationResult {
    let start = Instant(millisecondsSinceEpoch: 1_000_000)
    var now = start
    var service = ServiceDeployments(service: green.id.service)
    var log: [DeploymentInput] = []
    var queue: [(due: Instant, sequence: Int, event: Event)] = []
    var sequence = 0
    var hookCalls: [SimulatedHookCall] = []
    var crashes: [Instant] = []
    var inFlightHook: String?  // "executionId#attempt"
    var armedWakeup: Instant?
    var pendingNodeWork: Set<String> = []
    var faultsDone: Set<LifecycleStage> = []
    var crashesDone: Set<LifecycleStage> = []
    var blueDamaged = false
    var approvedPauses: Set<String> = []
    var nodes: [NodeID: SimulatedNode] = [:]
    for node in scenario.nodes {
      var state = SimulatedNode(node: node)
      let share = share(of: blue.desiredCount, node: node, among: scenario.nodes)
      state.tasks[blue.revision] = (share, share)
      nodes[node] = state
    }

    func schedule(_ due: Instant, _ event: Event) {
      queue.append((due, sequence, event))
      sequence += 1
    }
    func propose(_ command: DeploymentCommand) { schedule(now, .input(command)) }
    func commit(_ command: DeploymentCommand) {
      let input = DeploymentInput(deploymentId: deploymentId, now: now, command: command)
      log.append(input)
      service.apply(input)
    }
    func report(_ node: NodeID) {
      guard let state = nodes[node] else { return }
      for revision in [blue.revision, green.id] {
        propose(.taskHealth(node: node, revision: revision, healthy: state.healthy(revision)))
      }
      propose(.routesApplied(node: node, generation: state.routesGeneration))
      for revision in state.drained.sorted() { propose(.revisionDrained(node: node, revision: revision)) }
      for revision in state.stopped.sorted() { propose(.taskSetStopped(node: node, revision: revision)) }
    }

    /// The nodes turn the desired state into work; the leader derives its effects.
    func react() {
      guard let deployment = service.current else { return }
      let desired = deployment.desired
      for node in scenario.nodes {
        guard let state = nodes[node] else { continue }
        if state.routesGeneration < desired.routes.generation, pendingNodeWork.insert("routes \(node)").inserted {
          schedule(now + scenario.routesApplyAfter, .applyRoutes(node))
        }
        for target in desired.taskSets {
          let share = share(of: target.count, node: node, among: scenario.nodes)
          switch target.phase {
          case .serving, .draining:
            if state.running(target.revision) < share || state.healthy(target.revision) < share,
              !(target.revision == blue.revision && scenario.blueCondition == .dead && blueDamaged),
              pendingNodeWork.insert("start \(node) \(target.revision)").inserted
            {
              let isGreen = target.revision == green.id
              let healthy = isGreen ? !scenario.greenNeverHealthy : true
              let delay = isGreen || !blueDamaged ? scenario.taskHealthyAfter : scenario.blueRecovery
              schedule(now + delay, .tasksStarted(node, target.revision, count: share, healthy: healthy))
            }
            if target.phase == .draining, state.routesGeneration >= desired.routes.generation,
              !state.drained.contains(target.revision),
              pendingNodeWork.insert("drain \(node) \(target.revision)").inserted
            {
              schedule(now + scenario.drainAfter, .drained(node, target.revision))
            }
          case .stopped:
            if !state.stopped.contains(target.revision),
              pendingNodeWork.insert("stop \(node) \(target.revision)").inserted
            {
              schedule(now + scenario.stopAfter, .stopped(node, target.revision))
            }
          }
        }
      }
      if let call = service.pendingHookCall {
        let key = "\(call.context.executionId)#\(call.context.attempt)"
        if inFlightHook != key {
          inFlightHook = key
          let at = max(now, call.notBefore)
          hookCalls.append(
            SimulatedHookCall(
              at: at, executionId: call.context.executionId, attempt: call.context.attempt,
              stage: call.context.lifecycleStage))
          schedule(at + scenario.hookLatency, .hookAnswer(call))
        }
      }
      if let wake = service.nextWakeup, armedWakeup != wake {
        armedWakeup = wake
        schedule(max(now, wake), .wakeUp(wake))
      }
      if let hook = deployment.hook, hook.isPause, deployment.status == .IN_PROGRESS,
        let after = scenario.pauseApprovedAfter, approvedPauses.insert(hook.executionId).inserted
      {
        schedule(now + after, .input(.continue(requestedBy: "simulated operator")))
      }
      if let id = service.startable, id == deploymentId, deployment.status == .PENDING {
        propose(.start)
      }
    }

    func crash() {
      crashes.append(now)
      queue.removeAll()
      inFlightHook = nil
      armedWakeup = nil
      pendingNodeWork.removeAll()
      approvedPauses.removeAll()  // an operator's request not yet committed is lost; they ask again
      now = now + scenario.outage
      // A new leader: every node sends its reports again; nodes reconcile what they have not done.
      if scenario.nodesReportAgainAfterCrash {
        for node in scenario.nodes { report(node) }
      }
    }

    /// Faults and crashes keyed by stage, once each.
    func strike() {
      guard let deployment = service.current, deployment.status == .IN_PROGRESS, let stage = deployment.stage
      else { return }
      if let fault = scenario.faults[stage], faultsDone.insert(stage).inserted {
        if scenario.blueCondition != .healthy {
          blueDamaged = true
          for node in scenario.nodes {
            let keep = scenario.blueCondition == .belowCount && node == scenario.nodes.sorted().first ? 1 : 0
            nodes[node]?.tasks[blue.revision] = (keep, keep)
            propose(.taskHealth(node: node, revision: blue.revision, healthy: keep))
          }
        }
        switch fault {
        case .failHook: break  // answered when the hook is called
        case .alarm:
          propose(
            .metricSample(MetricSample(at: now, requestCount: 1000, http5xxCount: 1000, latencyP99Milliseconds: 60_000))
          )
        case .rollback: propose(.rollback(requestedBy: "simulation"))
        case .stop: propose(.stop(requestedBy: "simulation"))
        }
      }
      if scenario.killLeaderAt.contains(stage), crashesDone.insert(stage).inserted { crash() }
    }

    commit(
      .submit(
        DeploymentSubmission(
          green: green, blue: blue, nodes: scenario.nodes, activeRevisions: scenario.activeRevisions ?? [blue.revision])
      ))
    for node in scenario.nodes { report(node) }
    react()
    var applied = 0
    var checkedInputs = 0
    while applied < scenario.maximumInputs,
      let index = queue.indices.min(by: {
        (queue[$0].due, queue[$0].sequence) < (queue[$1].due, queue[$1].sequence)
      })
    {
      let (due, _, event) = queue.remove(at: index)
      if due > now { now = due }
      switch event {
      case .input(let command):
        commit(command)
        applied += 1
      case .hookAnswer(let call):
        let key = "\(call.context.executionId)#\(call.context.attempt)"
        if inFlightHook == key { inFlightHook = nil }
        let script = scenario.hookOutcomes[call.context.lifecycleStage] ?? []
        let scripted = script.isEmpty ? HookOutcome.succeeded : script[min(script.count, call.context.attempt) - 1]
        let outcome: HookOutcome =
          scenario.faults[call.context.lifecycleStage] == .failHook ? .failed(reason: "simulated failure") : scripted
        commit(.hookAnswered(HookResult(answering: call, outcome: outcome)))
        applied += 1
      case .wakeUp(let at):
        if armedWakeup == at { armedWakeup = nil }
        commit(.wakeUp)
        applied += 1
      case .applyRoutes(let node):
        pendingNodeWork.remove("routes \(node)")
        let generation = service.current?.desired.routes.generation ?? 0
        nodes[node]?.routesGeneration = generation
        propose(.routesApplied(node: node, generation: generation))
      case .tasksStarted(let node, let revision, let count, let healthy):
        pendingNodeWork.remove("start \(node) \(revision)")
        nodes[node]?.tasks[revision] = (count, healthy ? count : 0)
        propose(.taskHealth(node: node, revision: revision, healthy: healthy ? count : 0))
      case .drained(let node, let revision):
        pendingNodeWork.remove("drain \(node) \(revision)")
        nodes[node]?.drained.insert(revision)
        propose(.revisionDrained(node: node, revision: revision))
      case .stopped(let node, let revision):
        pendingNodeWork.remove("stop \(node) \(revision)")
        nodes[node]?.tasks[revision] = (0, 0)
        nodes[node]?.stopped.insert(revision)
        propose(.taskHealth(node: node, revision: revision, healthy: 0))
        propose(.taskSetStopped(node: node, revision: revision))
      }
      while checkedInputs < log.count {
        if scenario.crashAfterInputs.contains(checkedInputs) { crash() }
        checkedInputs += 1
      }
      if service.current?.status.isTerminal == true
        && queue.allSatisfy({
          if case .input = $0.event { return false }
          return true
        })
      {
        // Let the nodes finish reconciling to the final desired state, then stop.
        react()
        if queue.isEmpty { break }
        continue
      }
      strike()
      react()
    }
    guard let deployment = service.current else { preconditionFailure("the simulation lost its deployment") }
    return SimulationResult(
      deployment: deployment, log: log, hookCalls: hookCalls, world: scenario.nodes.compactMap { nodes[$0] },
      crashes: crashes, start: start)
  }
}
