import Foundation
import TealDeploy
import TealWire
import Testing

@testable import TealCluster

/// Random, seeded command sequences: two replicas agree, a snapshot restores the same state, and the
/// invariants hold after every entry. `TEAL_CLUSTER_SEEDS=N` runs more seeds; a failure names its seed.
@Suite struct DeterminismTests {
  static var seedCount: Int { ProcessInfo.processInfo.environment["TEAL_CLUSTER_SEEDS"].flatMap(Int.init) ?? 16 }

  static let serviceNames = ["web", "api", "db"]
  static let nodeNames = ["n1", "n2", "n3", "n4"]
  static let variablePaths = ["a", "hooks/web/token", "hooks/api/token", "cfg/x.y", "bad//path"]

  /// A random entry against `state` (valid, stale, bogus and leader-only commands all occur).
  static func randomEntry(
    _ state: ClusterState, _ random: inout SplitMix64, now: inout Int64, term: inout UInt64
  ) -> ClusterEntry {
    func pick<T>(_ items: [T]) -> T { items[random.below(items.count)] }
    let service = pick(serviceNames)
    let serviceIndex = serviceNames.firstIndex(of: service)!
    let node = NodeID(pick(nodeNames))
    let taskIDs = state.tasks.keys.sorted()
    let taskID = taskIDs.isEmpty || random.below(10) == 0 ? "\(service).1.999" : pick(taskIDs)
    let command: ClusterCommand
    let held = state.allDeployments()
    switch random.below(22) {
    case 0:
      command = .createService(
        makeSpec(
          service, desiredCount: random.below(5), productionPort: 8000 + serviceIndex * 2,
          testPort: 8001 + serviceIndex * 2))
    case 1: command = .registerRevision(service: service, spec: makeSpec(service, command: "/bin/v\(random.below(3))"))
    case 2: command = .scaleService(service: service, desiredCount: random.below(6))
    case 3:
      command =
        random.below(4) == 0 ? .deleteService(service: service) : .scaleService(service: service, desiredCount: 2)
    case 4:
      let number = nodeNames.firstIndex(of: node.rawValue)! + 1
      command = .announceNode(nodeInfo(node.rawValue, number))
    case 5, 6:
      let task = state.tasks[taskID]
      let states: [TaskRunState] = [.starting, .running, .running, .exited(code: Int32(random.below(3)))]
      command = .taskReports(
        node: task?.node ?? node,
        reports: [
          TaskReport(
            taskID: taskID, state: pick(states), healthy: random.below(4) != 0, address: task.map { _ in "10.0.0.1" },
            port: 20_000 + random.below(3))
        ])
    case 7, 8:
      let generations = Dictionary(
        uniqueKeysWithValues: state.services.keys.sorted().map { ($0, state.services[$0]!.routes.generation) })
      command = .routesApplied(node: state.upNodes.isEmpty ? node : pick(state.upNodes), generations: generations)
    case 9:
      let task = state.tasks[taskID]
      command = .taskStopped(node: task?.node ?? node, taskID: taskID)
    case 10, 11:
      let plan = Placement.plan(state, now: state.logTime)
      command = plan.isEmpty ? .placeTask(service: service, revision: 1, node: node) : pick(plan)
    case 12: command = random.below(3) == 0 ? .registerSession : .retireTask(taskID: taskID, reason: "random")
    case 13: command = .nodeDown(node: node, incarnation: UInt64(random.below(5)))
    case 14: command = .nodeUp(node: node, incarnation: UInt64(random.below(5)))
    case 15: command = .drainNode(node: node)
    case 16:
      var spec = makeSpec(
        service, productionPort: 8000 + serviceIndex * 2, testPort: 8001 + serviceIndex * 2,
        env: ["VERSION": "v\(random.below(4))"])
      spec.desiredCount = random.below(4)
      command = .submitDeployment(service: service, spec: spec, supersede: random.below(2) == 0)
    case 17:
      let id = held.isEmpty || random.below(6) == 0 ? "\(service)-999" : pick(held).id
      command = .deploymentAction(
        service: service, deploymentID: id, action: pick(DeploymentAction.allCases))
    case 18:
      let id = held.isEmpty ? "\(service)-1" : pick(held).id
      command = .deploymentWakeUp(service: String(id.prefix { $0 != "-" }), deploymentID: id)
    case 19, 20:
      // Variables: valid and bad paths, compare-and-set against the current, a stale or no version.
      let path = pick(variablePaths)
      let current = state.variable(path)?.version ?? 0
      let cas: UInt64? = pick([nil, 0, current, current, UInt64(random.below(50))])
      command =
        random.below(3) == 0
        ? .deleteVariable(path: path, cas: cas)
        : .putVariable(path: path, value: String(repeating: "v", count: random.below(40)), cas: cas)
    default:
      if let deployment = held.first(where: { $0.pendingHookCall != nil }), let call = deployment.pendingHookCall {
        let outcome = pick([HookOutcome.succeeded, .failed(reason: "no"), .inProgress, .timedOut])
        command = .hookAnswered(
          service: deployment.service, deploymentID: deployment.id,
          result: HookResult(executionId: call.context.executionId, attempt: call.context.attempt, outcome: outcome))
      } else {
        command = .deploymentMetrics(
          service: service, deploymentID: held.first?.id ?? "\(service)-1",
          sample: MetricSample(
            at: Instant(millisecondsSinceEpoch: now), requestCount: random.below(100), http5xxCount: random.below(10),
            latencyP99Milliseconds: Double(random.below(500))))
      }
    }
    now += Int64(random.below(2_000_000)) - 200_000  // sometimes backwards
    if random.below(20) == 0 { term += 1 }
    let stampTerm = random.below(8) == 0 ? term - 1 : term
    let key =
      random.below(3) == 0 ? IdempotencyRecordKey(key: "k\(random.below(6))", bodyDigest: "\(random.below(2))") : nil
    let sessionIDs = state.sessions.sessions.keys.compactMap(UInt64.init).sorted()
    let session =
      sessionIDs.isEmpty || random.below(3) != 0
      ? nil
      : ClientSessionStamp(
        clientID: random.below(8) == 0 ? 999_999 : pick(sessionIDs),
        sequence: UInt64(random.below(4)) + (state.sessions.sessions.values.map(\.lastSequence).max() ?? 0))
    return ClusterEntry(
      stamp: CommandStamp(now: LogTime(millisecondsSinceEpoch: now), node: node, term: stampTerm), idempotency: key,
      session: session, command: command)
  }

  /// Small bounds, so that eviction and expiry happen within a run.
  static func emptyState() -> ClusterState {
    ClusterState(
      eventCapacity: 50, idempotencyCapacity: 4, idempotencyRetentionMilliseconds: 3_600_000, sessionCapacity: 3,
      sessionIdleMilliseconds: 7_200_000)
  }

  /// The entries of one seeded run, each with the Raft term of the entry carrying it.
  static func run(seed: UInt64, steps: Int) -> (
    entries: [(ClusterEntry, UInt64)], state: ClusterState, failure: String?
  ) {
    var random = SplitMix64(seed: seed)
    var state = Self.emptyState()
    var now: Int64 = 1_000_000
    var term: UInt64 = 1
    var entries: [(ClusterEntry, UInt64)] = []
    var generations: [String: UInt64] = [:]
    for step in 0..<steps {
      let entry = randomEntry(state, &random, now: &now, term: &term)
      let before = state
      _ = state.apply(entry, index: UInt64(step + 1), term: term)
      entries.append((entry, term))
      if let problem = state.invariantViolation() { return (entries, state, "step \(step): \(problem)") }
      if state.logTime < before.logTime { return (entries, state, "step \(step): log time went backwards") }
      for (name, service) in state.services {
        if service.routes.generation < generations[name] ?? 0, before.services[name] != nil {
          return (entries, state, "step \(step): \(name) generation went backwards")
        }
        generations[name] = service.routes.generation
        for target in service.routes.targets {
          guard let task = state.tasks[target.taskID], task.isRoutable, state.nodes[task.node.rawValue]?.isUp == true
          else { return (entries, state, "step \(step): \(target.taskID) is routed but not routable") }
        }
        let targets = Set(service.routes.targets.map(\.taskID))
        // A deployment in control routes nothing to the task sets it drains or stopped.
        let hidden = Set(
          state.deploymentInControl(of: name)?.desired.taskSets.filter { $0.phase != .serving }.map(\.revision) ?? [])
        for task in state.tasks.values
        where task.service == name && task.isRoutable && !targets.contains(task.id) && !hidden.contains(task.revision)
          && state.nodes[task.node.rawValue]?.isUp == true
        {
          return (entries, state, "step \(step): \(task.id) is routable but not routed")
        }
      }
      for name in generations.keys where state.services[name] == nil { generations[name] = nil }
      for (path, variable) in state.variables.entries where variable.version > UInt64(step + 1) {
        return (entries, state, "step \(step): variable \(path) has version \(variable.version) from the future")
      }
      for task in state.tasks.values where before.tasks[task.id]?.desired == .draining && task.desired == .stopping {
        let lagging = state.nodes.values.filter {
          $0.isUp && ($0.routesApplied[task.service] ?? 0) < task.drainGeneration!
        }
        if !lagging.isEmpty { return (entries, state, "step \(step): \(task.id) stopping while nodes lag") }
      }
    }
    return (entries, state, nil)
  }

  @Test func replicasApplyingTheSameEntriesAgree() throws {
    var kinds = Set<ClusterEventKind>()
    var variablesSeen = false
    for seed in 0..<UInt64(Self.seedCount) {
      let (entries, original, failure) = Self.run(seed: seed, steps: 400)
      #expect(failure == nil, "seed \(seed): \(failure ?? "")")
      var replica = Self.emptyState()
      // Another capacity gives the replica's dictionaries another iteration order, as another
      // process's hash seed would: any order that leaks into the state shows up as a different hash.
      replica.services.reserveCapacity(512)
      replica.tasks.reserveCapacity(2048)
      replica.nodes.reserveCapacity(512)
      replica.variables.reserveCapacity(64)
      var restored: ClusterState?
      for (offset, (entry, term)) in entries.enumerated() {
        // The replica reads every entry from its bytes, as from the log.
        let bytes = replica.apply(bytes: entry.encode(), index: UInt64(offset + 1), term: term)
        _ = try ClusterResult(decoding: bytes)
        kinds.formUnion(replica.history.events.suffix(3).map(\.kind))
        if offset == entries.count / 2 { restored = try ClusterState(snapshot: replica.snapshot()) }
        if offset > entries.count / 2 { _ = restored!.apply(entry, index: UInt64(offset + 1), term: term) }
      }
      let equal = replica == original  // (a Bool, so that a failure does not print both states)
      #expect(equal, "seed \(seed)")
      #expect(replica.stateHash == original.stateHash, "seed \(seed)")
      #expect(restored?.stateHash == original.stateHash, "seed \(seed): restored replica diverged")
      #expect(replica.variables == original.variables, "seed \(seed)")
      if original.variables.count > 0 { variablesSeen = true }
    }
    #expect(variablesSeen, "no run ended with a variable")
    // The runs reach the interesting transitions, so the checks above mean something.
    for kind in [ClusterEventKind.taskRunning, .taskDraining, .taskStopping, .taskStopped, .taskLost, .serviceDeleted] {
      #expect(kinds.contains(kind), "no run reached \(kind)")
    }
  }
}
