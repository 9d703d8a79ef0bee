// The scale simulation (issue 18, item 4): many services and concurrent deployments on a
// SimulatedCluster, with seeded faults, the deployment invariants checked at every committed entry.

import Foundation
import Logging
import TealCluster
import TealDeploy
import TealNode
import TealWire

/// What one scale run found.
public struct ScaleReport: Sendable, CustomStringConvertible {
  public var scenario: ScaleScenario
  /// Invariant violations (empty: the run passed).
  public var violations: [String]
  /// Final statuses of the deployments, by status.
  public var outcomes: [String: Int]
  /// Deployments set up to succeed that rolled back anyway, with the reason (not violations: a
  /// fault can legitimately trip the circuit breaker).
  public var surprises: [String]
  /// The faults as they happened, with their simulated times.
  public var faults: [String]
  /// Committed entries checked (each log index once).
  public var entries: Int
  public var hookCalls: Int
  /// Terms in which a controller acted.
  public var terms: Int
  /// Simulated time of the whole run, and from the heal until every deployment was terminal.
  public var simulatedSeconds: Double
  public var settleSeconds: Double
  /// Machine time of the run.
  public var wallSeconds: Double

  public var passed: Bool { violations.isEmpty }

  public var description: String {
    let statuses = outcomes.keys.sorted().map { "\($0) \(outcomes[$0] ?? 0)" }.joined(separator: ", ")
    var lines = [
      "\(scenario): \(passed ? "passed" : "\(violations.count) violation(s)")",
      "  outcomes: \(statuses)",
      "  \(entries) entries checked, \(hookCalls) hook calls, controllers in \(terms) terms",
      String(
        format: "  simulated %.1f s (settled %.1f s after the heal), wall %.1f s", simulatedSeconds, settleSeconds,
        wallSeconds),
    ]
    lines += faults.map { "  fault: \($0)" }
    lines += surprises.map { "  rolled back although set up to succeed: \($0)" }
    lines += violations.map { "  VIOLATION: \($0)" }
    return lines.joined(separator: "\n")
  }
}

/// Runs one ``ScaleScenario`` on a ``SimulatedCluster`` (see Docs/BENCHMARKS.md, "Scale in
/// simulation").
///
/// 1. Boot the nodes; create every service through random nodes (clients retry with an
///    idempotency key until answered); wait until each runs its tasks healthy.
/// 2. Submit every deployment at once; while they run, play the fault episodes one after the other
///    (leader crashes, also while a deployment waits in a production step or in bake, follower
///    crashes committed down, two nodes down at once, an isolated leader or follower declared dead by
///    gossip, message loss), and stop the `operatorStop` deployments when they reach their stage.
/// 3. Heal everything and restart every crashed node; within the scenario's `settleBound` every
///    deployment must be terminal on every node and every node must hold the same state hash.
/// 4. End checks: every acknowledged write is in every node's state, outcomes match their setup,
///    hook calls came from one node per term and never from an isolated node (past the fence).
///
/// Not deterministic: inside one simulated step the runtime orders the actors, so a seed gives the
/// same plan and fault schedule but not the same interleaving. A failing seed is rerun with its
/// number; it may or may not fail again.
public final class ScaleSimulation: @unchecked Sendable {
  public let plan: ScalePlan
  public let invariants = ScaleInvariants()
  public let hooks = ScriptedHooks()
  public let cluster: SimulatedCluster
  private let progress: (@Sendable (String) -> Void)?

  private let lock = NSLock()
  /// Guarded by `lock`: answers of acknowledged writes, by key.
  private var acknowledged: [String: ClusterResult] = [:]
  private var unanswered: Set<String> = []
  /// Deployment id of each service's planned deployment, once its submit was answered.
  private var deploymentIDs: [String: String] = [:]
  private var clientTasks: [Task<Void, Never>] = []

  /// Isolation windows (node, from, until) in simulated time, for the fence check.
  private var isolations: [(node: NodeID, from: Duration, until: Duration)] = []
  private var faultLog: [String] = []
  private var random: SplitMix64

  /// - Parameter progress: told of each phase (for a long run's log); nil for none.
  public init(_ scenario: ScaleScenario, progress: (@Sendable (String) -> Void)? = nil) {
    plan = ScalePlan(scenario)
    random = SplitMix64(seed: scenario.seed ^ 0xFA17_5EED)
    self.progress = progress
    let invariants = invariants
    // The nodes' own warnings (a write not committed during a fault, listeners closing at shutdown)
    // are expected here by the hundred; the report says what matters.
    var logger = Logger(label: "teal.scale-sim")
    logger.logLevel = .critical
    cluster = SimulatedCluster(
      nodes: scenario.nodes, seed: scenario.seed, hooks: hooks, logger: logger,
      onApplied: { node, entry, state in invariants.observe(node, entry, state) })
  }

  /// Runs the scenario and reports; throws only when the harness itself fails (a node's log cannot
  /// open).
  public func run() async throws -> ScaleReport {
    let started = ContinuousClock.now
    for deployment in plan.deployments where deployment.outcome == .hookFails {
      await hooks.setOutcome(.failed(reason: "scripted failure (scale run)"), forService: deployment.service)
    }
    try await cluster.start()
    defer { for task in lock.withLock({ clientTasks }) { task.cancel() } }
    var settle = 0.0
    do {
      try await cluster.run(until: "a ready leader", within: .seconds(30)) { await self.cluster.leader() != nil }
      try await createServices()
      try await runDeploymentsWithFaults()
      settle = try await settleAfterHeal()
      await endChecks()
    } catch let timeout as SimulationTimeout {
      invariants.record("\(timeout.what): not reached within \(timeout.after) of simulated time\n\(timeout.summary)")
    }
    let report = await makeReport(settleSeconds: settle, wall: started.duration(to: .now))
    await cluster.shutdown()
    return report
  }

  // MARK: - Phases

  private func createServices() async throws {
    say("creating \(plan.services.count) services")
    for service in plan.services {
      write(.createService(service.spec), key: "create-\(service.name)")
    }
    try await cluster.run(until: "every createService answered", within: .seconds(180)) {
      self.lock.withLock { self.plan.services.allSatisfy { self.acknowledged["create-\($0.name)"] != nil } }
    }
    try await cluster.run(until: "every service runs its tasks, healthy", within: .seconds(180)) {
      guard let state = await self.latestState() else { return false }
      return self.plan.services.allSatisfy { planned in
        state.tasks(service: planned.name).filter { $0.isRoutable && $0.revision.number == 1 }.count
          >= planned.spec.desiredCount
      }
    }
  }

  private func runDeploymentsWithFaults() async throws {
    for deployment in plan.deployments where deployment.outcome == .circuitBreaker {
      await cluster.holdStarting(revision: "\(deployment.service):2")
    }
    say("submitting \(plan.deployments.count) deployments")
    for deployment in plan.deployments {
      write(
        .submitDeployment(service: deployment.service, spec: deployment.spec, supersede: false),
        key: "deploy-\(deployment.service)")
    }
    var stopped: Set<String> = []
    for fault in plan.faults {
      try await runFor(fault.gap, stopping: &stopped)
      try await play(fault, stopping: &stopped)
    }
    // Operator stops still due once the faults are over are made in the settle phase.
    await heal()
    for node in cluster.ids where !cluster.isRunning(node) { try await restart(node) }
    stoppedBeforeHeal = stopped
  }

  private var stoppedBeforeHeal: Set<String> = []

  /// From the heal: every deployment terminal on every node, and every node converged.
  private func settleAfterHeal() async throws -> Double {
    let healedAt = cluster.clock.elapsed
    say("healed at \(healedAt); settling")
    var stopped = stoppedBeforeHeal
    let deadline = healedAt + plan.scenario.settleBound
    while cluster.clock.elapsed <= deadline {
      await stepAndStop(&stopped)
      if await allDeploymentsTerminal() { break }
    }
    guard await allDeploymentsTerminal() else {
      let pending = await pendingDeployments()
      throw SimulationTimeout(
        what: "every deployment terminal on every node after the heal (still active: \(pending))",
        after: plan.scenario.settleBound, summary: await cluster.summary())
    }
    let settled = cluster.clock.elapsed - healedAt
    try await cluster.run(until: "every node holds the same state", within: .seconds(60)) {
      await self.converged()
    }
    return Self.seconds(settled)
  }

  // MARK: - Faults

  private func play(_ fault: ScalePlan.Fault, stopping stopped: inout Set<String>) async throws {
    switch fault.kind {
    case .crashLeader(let down, let stage):
      if let stage {
        let limit = cluster.clock.elapsed + .seconds(15)
        while cluster.clock.elapsed < limit, !(await someDeploymentWaits(in: stage)) {
          await stepAndStop(&stopped)
        }
      }
      guard let leader = await cluster.leader() else { return note("no leader to crash (\(fault))") }
      let stages = await stageCounts()
      await cluster.crash(leader)
      note("crashed leader \(leader) (active deployments: \(stages))")
      try await runFor(down, stopping: &stopped)
      try await restart(leader)
    case .crashFollower(let down):
      let leader = await cluster.leader()
      guard let victim = pick(cluster.running.filter { $0 != leader }) else { return }
      await cluster.crash(victim)
      note("crashed follower \(victim)")
      try await runFor(down, stopping: &stopped)
      try await restart(victim)
    case .crashLeaderAndFollower(let down):
      guard let leader = await cluster.leader() else { return note("no leader to crash (\(fault))") }
      let follower = pick(cluster.running.filter { $0 != leader })
      await cluster.crash(leader)
      if let follower { await cluster.crash(follower) }
      note("crashed leader \(leader) and follower \(follower.map { "\($0)" } ?? "none")")
      try await runFor(down, stopping: &stopped)
      try await restart(leader)
      if let follower { try await restart(follower) }
    case .isolate(let isolateLeader, let duration, let markDeadAfter):
      let leader = await cluster.leader()
      let victim = isolateLeader ? leader : pick(cluster.running.filter { $0 != leader })
      guard let victim else { return note("nobody to isolate (\(fault))") }
      let from = cluster.clock.elapsed
      await cluster.network.isolate(victim)
      note("isolated \(victim)\(victim == leader ? " (the leader)" : "")")
      try await runFor(markDeadAfter, stopping: &stopped)
      cluster.gossip.markDead(victim)
      try await runFor(duration - markDeadAfter, stopping: &stopped)
      await cluster.network.heal()
      cluster.gossip.markAlive(victim, address: cluster.configuration(victim).address)
      lock.withLock { isolations.append((victim, from, cluster.clock.elapsed)) }
      note("healed \(victim)")
    case .messageLoss(let probability, let duration):
      await cluster.network.setDropProbability(probability)
      note("losing \(Int(probability * 100)) % of messages")
      try await runFor(duration, stopping: &stopped)
      await cluster.network.setDropProbability(0)
      note("message loss over")
    }
  }

  private func heal() async {
    await cluster.network.heal()
    await cluster.network.setDropProbability(0)
  }

  private func restart(_ node: NodeID) async throws {
    guard !cluster.isRunning(node) else { return }
    try await cluster.restart(node)
    note("restarted \(node)")
  }

  private func pick(_ nodes: [NodeID]) -> NodeID? {
    nodes.isEmpty ? nil : nodes[random.below(nodes.count)]
  }

  private func note(_ what: String) {
    let line = "\(cluster.clock.elapsed): \(what)"
    lock.withLock { faultLog.append(line) }
    say(line)
  }

  private func say(_ line: String) { progress?("seed \(plan.scenario.seed): \(line)") }

  // MARK: - Stepping

  private func runFor(_ duration: Duration, stopping stopped: inout Set<String>) async throws {
    let until = cluster.clock.elapsed + duration
    while cluster.clock.elapsed < until { await stepAndStop(&stopped) }
  }

  private var steps = 0

  /// One step; every fifth, the operator stops of deployments that reached their stage.
  private func stepAndStop(_ stopped: inout Set<String>) async {
    await cluster.step()
    steps += 1
    guard steps % 5 == 0 else { return }
    let due = plan.deployments.filter { $0.outcome == .operatorStop && !stopped.contains($0.service) }
    guard !due.isEmpty, let state = await latestState() else { return }
    for planned in due {
      guard let stopAt = planned.stopAt, let id = lock.withLock({ deploymentIDs[planned.service] }),
        let deployment = state.deployment(id: id)
      else { continue }
      guard !deployment.isActive || (deployment.stage.map { $0 >= stopAt } ?? false) else { continue }
      stopped.insert(planned.service)
      if deployment.isActive {
        write(.deploymentAction(service: planned.service, deploymentID: id, action: .stop), key: "stop-\(id)")
      }
    }
  }

  // MARK: - Clients

  /// Submits `command` through a random running node until it is answered (the same idempotency
  /// key on every attempt, so it is applied once), for at most 5 minutes of simulated time.
  private func write(_ command: ClusterCommand, key: String) {
    var random = SplitMix64(seed: plan.scenario.seed ^ Self.stableHash(key))
    let idempotency = IdempotencyRecordKey(key: key, bodyDigest: "scale-\(key)")
    let cluster = cluster
    lock.withLock { _ = unanswered.insert(key) }
    let task = Task {
      let deadline = cluster.clock.elapsed + .seconds(300)
      while !Task.isCancelled && cluster.clock.elapsed < deadline {
        let nodes = cluster.running
        if !nodes.isEmpty, let plane = cluster.plane(nodes[random.below(nodes.count)]) {
          if let result = try? await plane.submit(command, idempotency: idempotency) {
            self.answered(key, command, result)
            return
          }
        }
        try? await cluster.clock.sleep(for: .milliseconds(250))
      }
    }
    lock.withLock { clientTasks.append(task) }
  }

  private func answered(_ key: String, _ command: ClusterCommand, _ result: ClusterResult) {
    lock.withLock {
      unanswered.remove(key)
      acknowledged[key] = result
      if case .submitDeployment(let service, _, _) = command, case .ok(.deploymentSubmitted(_, let id, _)) = result {
        deploymentIDs[service] = id
      }
    }
  }

  // MARK: - Views

  /// The state of the running node that applied the most.
  private func latestState() async -> ClusterState? {
    var best: ClusterState?
    for node in cluster.running {
      guard let state = await cluster.state(node) else { continue }
      if best.map({ state.appliedIndex > $0.appliedIndex }) ?? true { best = state }
    }
    return best
  }

  private func someDeploymentWaits(in stage: LifecycleStage) async -> Bool {
    guard let state = await latestState() else { return false }
    return state.allDeployments().contains { deployment in
      guard deployment.isActive, deployment.stage == stage, case .waiting = deployment.gate else { return false }
      return true
    }
  }

  private func stageCounts() async -> String {
    guard let state = await latestState() else { return "unknown" }
    var counts: [String: Int] = [:]
    for deployment in state.allDeployments() where deployment.isActive {
      counts[deployment.stage?.rawValue ?? "PENDING", default: 0] += 1
    }
    return counts.keys.sorted().map { "\($0) \(counts[$0] ?? 0)" }.joined(separator: ", ")
  }

  private func allDeploymentsTerminal() async -> Bool {
    let ids = lock.withLock { deploymentIDs }
    guard ids.count == plan.deployments.count, cluster.running.count == cluster.ids.count else { return false }
    for node in cluster.running {
      guard let state = await cluster.state(node) else { return false }
      for id in ids.values where Self.finalStatus(of: id, in: state).map({ !$0.isTerminal }) ?? true {
        return false
      }
    }
    return true
  }

  private func pendingDeployments() async -> String {
    let ids = lock.withLock { deploymentIDs }
    let missing = plan.deployments.filter { ids[$0.service] == nil }.map(\.service)
    guard let state = await latestState() else { return "no state" }
    var active: [String] = []
    for id in ids.values.sorted() {
      if let deployment = state.deployment(id: id), deployment.isActive {
        active.append(Self.diagnosis(of: deployment, in: state))
      }
    }
    return (missing.isEmpty ? "" : "submit unanswered for \(missing); ") + active.joined(separator: "; ")
  }

  /// One stuck deployment as the state sees it: its gate, what each node reported to it, the
  /// service's committed routes and marks, and what each node reported to the cluster.
  static func diagnosis(of deployment: Deployment, in state: ClusterState) -> String {
    let service = state.services[deployment.service]
    let observed = deployment.nodes.map { node in
      "\(node.node)(live \(node.live), routes \(node.routesGeneration), drained \(node.drained.map(\.description)), "
        + "stopped \(node.stopped.map(\.description)))"
    }
    let reported = state.nodes.keys.sorted().map { id in
      let node = state.nodes[id]
      return "\(id)(\(node?.liveness.rawValue ?? "?"), applied \(node?.routesApplied[deployment.service] ?? 0))"
    }
    let marks = service?.deploymentRoutes.map { marks in
      "engine generation \(marks.engineGeneration) since \(marks.since), draining "
        + marks.draining.map { "\($0.revision) since \($0.since)" }.joined(separator: ", ")
    }
    return "\(deployment.id) \(deployment.status) in \(deployment.stage?.rawValue ?? "-"), gate "
      + "\(deployment.gate.map { "\($0)" } ?? "none"), engine routes generation \(deployment.desired.routes.generation); "
      + "nodes seen by the deployment: \(observed.joined(separator: " ")); committed routes generation "
      + "\(service?.routes.generation ?? 0), marks \(marks ?? "none"); nodes' reports: \(reported.joined(separator: " "))"
  }

  private func converged() async -> Bool {
    guard cluster.running.count == cluster.ids.count else { return false }
    let hashes = await cluster.hashes()
    guard hashes.count == cluster.ids.count, let first = hashes.values.first else { return false }
    return hashes.values.allSatisfy { $0.applied == first.applied && $0.hash == first.hash }
  }

  /// The status of deployment `id` in `state`: held, or among the service's past deployments.
  static func finalStatus(of id: String, in state: ClusterState) -> DeploymentStatus? {
    if let deployment = state.deployment(id: id) { return deployment.status }
    guard let service = ClusterState.service(ofDeployment: id) else { return nil }
    return state.pastDeployments[service]?.last { $0.id == id }?.status
  }

  static func reason(of id: String, in state: ClusterState) -> String? {
    if let deployment = state.deployment(id: id) { return deployment.reason }
    guard let service = ClusterState.service(ofDeployment: id) else { return nil }
    return state.pastDeployments[service]?.last { $0.id == id }?.reason
  }

  // MARK: - End checks

  private func endChecks() async {
    let (acks, open, ids) = lock.withLock { (acknowledged, unanswered, deploymentIDs) }
    for key in open.sorted() { invariants.record("write \(key) was never answered") }
    var states: [NodeID: ClusterState] = [:]
    for node in cluster.ids { states[node] = await cluster.state(node) }
    // Every acknowledged write is in every node's state.
    for (key, result) in acks.sorted(by: { $0.key < $1.key }) {
      for (node, state) in states.sorted(by: { $0.key < $1.key }) {
        switch result {
        case .ok(.serviceCreated(let service, _)):
          if state.services[service] == nil { invariants.record("\(node) lost acknowledged service \(service)") }
        case .ok(.deploymentSubmitted(_, let id, _)):
          if Self.finalStatus(of: id, in: state) == nil {
            invariants.record("\(node) lost acknowledged deployment \(id)")
          }
        case .ok, .rejected:
          if key.hasPrefix("create-") || key.hasPrefix("deploy-") {
            invariants.record("write \(key) was answered \(result)")
          }
        }
      }
    }
    // Outcomes against their setup, and blue never stopped before CLEAN_UP of a successful one.
    let blueStops = invariants.blueStopsBeforeCleanUp
    guard let state = states.values.first else { return }
    for planned in plan.deployments {
      guard let id = ids[planned.service], let status = Self.finalStatus(of: id, in: state) else { continue }
      if status == .SUCCESSFUL, let stop = blueStops[id] {
        invariants.record("\(id) ended SUCCESSFUL but \(stop)")
      }
      let reason = Self.reason(of: id, in: state) ?? "no reason"
      switch planned.outcome {
      case .hookFails, .circuitBreaker:
        if status != .ROLLBACK_SUCCESSFUL {
          invariants.record("\(id) (\(planned.outcome.rawValue), \(planned.strategy)) ended \(status): \(reason)")
        }
      case .operatorStop:
        if status != .ROLLBACK_SUCCESSFUL && status != .SUCCESSFUL && status != .STOPPED {
          invariants.record("\(id) (operator stop at \(planned.stopAt?.rawValue ?? "-")) ended \(status): \(reason)")
        }
      case .succeed:
        if status != .SUCCESSFUL && status != .ROLLBACK_SUCCESSFUL {
          invariants.record("\(id) (\(planned.strategy), set up to succeed) ended \(status): \(reason)")
        }
      }
    }
    // One controller per term for the hook calls too, and none from an isolated node past the fence.
    let controllers = invariants.controllerOfTerm
    let calls = await hooks.callLog
    let windows = lock.withLock { isolations }
    var callers: [UInt64: Set<NodeID>] = [:]
    for call in calls {
      guard let node = call.node, let term = call.term else {
        invariants.record("hook call \(call.invocation.context.executionId) without node or term")
        continue
      }
      callers[term, default: []].insert(node)
      if let controller = controllers[term], controller != node {
        invariants.record("hook called by \(node) in term \(term), whose controller was \(controller)")
      }
      if let at = call.at,
        let window = windows.first(where: {
          $0.node == node && at > $0.from + Self.fenceMargin && at < $0.until
        })
      {
        invariants.record(
          "hook \(call.invocation.context.executionId) called by \(node) at \(at), isolated since \(window.from)")
      }
    }
    for (term, nodes) in callers where nodes.count > 1 {
      invariants.record("hooks called by \(nodes.sorted()) in the same term \(term)")
    }
  }

  /// A leader cut off at time t may still make a call whose fence (a ReadIndex round, at most
  /// 500 ms) completed before t; past this margin no call may come from it.
  static let fenceMargin: Duration = .seconds(1)

  private func makeReport(settleSeconds: Double, wall: Duration) async -> ScaleReport {
    let ids = lock.withLock { deploymentIDs }
    var outcomes: [String: Int] = [:]
    var surprises: [String] = []
    if let state = await latestState() {
      for planned in plan.deployments {
        guard let id = ids[planned.service] else {
          outcomes["unsubmitted", default: 0] += 1
          continue
        }
        let status = Self.finalStatus(of: id, in: state)
        outcomes[status?.rawValue ?? "missing", default: 0] += 1
        if planned.outcome == .succeed, let status, status != .SUCCESSFUL {
          surprises.append("\(id) (\(planned.strategy)) \(status): \(Self.reason(of: id, in: state) ?? "no reason")")
        }
      }
    }
    return ScaleReport(
      scenario: plan.scenario, violations: invariants.violations, outcomes: outcomes, surprises: surprises,
      faults: lock.withLock { faultLog }, entries: invariants.entries, hookCalls: await hooks.callLog.count,
      terms: invariants.controllerOfTerm.count, simulatedSeconds: Self.seconds(cluster.clock.elapsed),
      settleSeconds: settleSeconds, wallSeconds: Self.seconds(wall))
  }

  /// FNV-1a of the key's bytes: the same in every process (`hashValue` is seeded per process).
  static func stableHash(_ text: String) -> UInt64 {
    text.utf8.reduce(0xCBF2_9CE4_8422_2325 as UInt64) { ($0 ^ UInt64($1)) &* 0x0000_0100_0000_01B3 }
  }

  static func seconds(_ duration: Duration) -> Double {
    Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
  }
}
