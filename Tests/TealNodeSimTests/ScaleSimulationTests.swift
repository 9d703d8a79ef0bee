// Scale in simulation (issue 18, item 4): many services and concurrent deployments on the simulated
// cluster with seeded faults, the deployment invariants checked at every committed entry; and the
// checker itself, shown to catch what it looks for.

import Foundation
import TealCluster
import TealDeploy
import TealLoadBalancer
import TealNodeTesting
import TealWire
import Testing

@Suite("Scale in simulation (issue 18, item 4)")
struct ScaleSimulationTests {
  static func environment(_ name: String) -> String? { ProcessInfo.processInfo.environment[name] }

  /// CI: 2 seeds of the small shape (5 nodes, 24 services, 8 deployments, 4 fault episodes).
  /// `TEAL_SCALE_SIM_SEEDS=N` runs N seeds, `TEAL_SCALE_SIM_FULL=1` the full shape (5 nodes, 200
  /// services, 50 deployments, 6 episodes), `TEAL_SCALE_SIM_SEED=S` seed S alone.
  static let defaultSeeds = 2

  @Test("services, concurrent deployments and seeded faults keep the deployment invariants")
  func seeds() async throws {
    let full = Self.environment("TEAL_SCALE_SIM_FULL") == "1"
    let seeds: [UInt64]
    if let one = Self.environment("TEAL_SCALE_SIM_SEED").flatMap(UInt64.init) {
      seeds = [one]
    } else {
      let count = Self.environment("TEAL_SCALE_SIM_SEEDS").flatMap(Int.init) ?? Self.defaultSeeds
      seeds = (0..<UInt64(max(count, 1))).map { $0 + 1 }
    }
    for seed in seeds {
      let scenario = full ? ScaleScenario.full(seed: seed) : ScaleScenario.small(seed: seed)
      let report = try await ScaleSimulation(scenario).run()
      let replay =
        "replay: TEAL_SCALE_SIM_SEED=\(seed)\(full ? " TEAL_SCALE_SIM_FULL=1" : "") swift test --filter ScaleSimulationTests"
        + " (same plan and faults; the interleaving inside a step is the runtime's, so it may pass)"
      #expect(report.passed, "\(report)\n\(replay)")
      // Every deployment was submitted and ended: the run got through its deployment phase.
      let ended = report.outcomes.filter { DeploymentStatus(rawValue: $0.key)?.isTerminal == true }.values
      #expect(ended.reduce(0, +) == scenario.deployments, "\(report)")
      #expect(report.entries > 0 && report.terms > 0, "\(report)")
    }
  }
}

@Suite("The simulated cluster under restarts (found by the scale run)")
struct SimulatedRestartTests {
  @Test("a restarted node gets a fresh balancer: it opens the listeners again and reports the new routes")
  func restartedNodeReportsRoutes() async throws {
    let cluster = SimulatedCluster(nodes: 3, seed: 21)
    try await cluster.start()
    try await cluster.run(until: "a leader") { await cluster.leader() != nil }
    let leader = try #require(await cluster.leader())
    _ = try await cluster.submit(.createService(simSpec()), through: leader)
    let follower = try #require(cluster.ids.first { $0 != leader })
    try await cluster.run(until: "web routed on \(follower)") { cluster.balancer(follower).routes(of: "web") != nil }
    await cluster.crash(follower)
    try await cluster.run(until: "\(follower) committed down") {
      await cluster.state(leader)?.nodes[follower.rawValue]?.isUp == false
    }
    try await cluster.restart(follower)
    // Its tasks were replaced while it was down (a new routes generation): it must install and report it.
    try await cluster.run(until: "\(follower) reports web's committed routes generation", within: .seconds(60)) {
      guard let state = await cluster.state(leader), let generation = state.services["web"]?.routes.generation,
        state.nodes[follower.rawValue]?.isUp == true
      else { return false }
      return cluster.balancer(follower).routes(of: "web")?.generation == generation
        && state.nodes[follower.rawValue]?.routesApplied["web"] == generation
    }
    await cluster.shutdown()
  }
}

/// A ClusterState driven entry by entry, each entry also handed to a checker.
private struct CheckedState {
  var state = ClusterState()
  var index: UInt64 = 0
  var now: Int64 = 1_767_225_600_000
  let checker = ScaleInvariants()

  @discardableResult
  mutating func apply(
    _ command: ClusterCommand, by node: NodeID = NodeID("n1"), stampTerm: UInt64 = 1, term: UInt64 = 1
  )
    -> ClusterResult
  {
    index += 1
    now += 10
    let entry = ClusterEntry(
      stamp: CommandStamp(now: LogTime(millisecondsSinceEpoch: now), node: node, term: stampTerm), command: command)
    let result = state.apply(entry, index: index, term: term)
    var accepted = false
    if case .ok = result { accepted = true }
    checker.check(entry, index: index, term: term, accepted: accepted, state: state, on: NodeID("n1"))
    return result
  }

  /// Three nodes, service `web` with two tasks placed, running and healthy.
  static func withService() -> CheckedState {
    var checked = CheckedState()
    for number in 1...3 {
      checked.apply(
        .announceNode(
          NodeInfo(
            id: NodeID("n\(number)"), address: "127.0.0.\(number)", apiURL: "http://127.0.0.\(number):7070",
            peerPort: 7000)))
    }
    checked.apply(.createService(spec(version: "v1")))
    for command in Placement.plan(checked.state, now: checked.state.logTime) { checked.apply(command) }
    for task in checked.state.tasks(service: "web") {
      checked.apply(
        .taskReports(
          node: task.node,
          reports: [TaskReport(taskID: task.id, state: .running, healthy: true, address: "127.0.0.1", port: 20_000)]))
    }
    return checked
  }

  static func spec(version: String) -> ServiceSpec {
    ServiceSpec(
      name: "web", desiredCount: 2, productionPort: 8000, testPort: 8001,
      task: TaskSpec(
        command: "/usr/bin/teal-demo", args: [], env: ["VERSION": version], port: 9000,
        healthCheck: HealthCheckConfiguration(
          path: "/health", interval: .seconds(1), timeout: .milliseconds(500), healthyThreshold: 1,
          unhealthyThreshold: 3)),
      deployment: DeploymentConfiguration(strategy: .BLUE_GREEN, bakeTime: .minutes(5)))
  }
}

@Suite("The scale run's invariant checker")
struct ScaleInvariantsTests {
  @Test("a healthy history breaks nothing")
  func cleanHistory() {
    let checked = CheckedState.withService()
    #expect(checked.checker.violations.isEmpty, "\(checked.checker.violations)")
    #expect(checked.checker.entries == Int(checked.index))
    #expect(checked.checker.controllerOfTerm == [1: NodeID("n1")])
  }

  @Test("two nodes whose leader-only commands are accepted in one term are two controllers")
  func twoControllersInOneTerm() {
    var checked = CheckedState.withService()
    let task = checked.state.tasks(service: "web")[0]
    checked.apply(.retireTask(taskID: task.id, reason: "checker test"), by: NodeID("n2"))
    #expect(checked.checker.violations.contains { $0.contains("two controllers acted in term 1: n1 and n2") })
  }

  @Test("a leader-only command refused on apply (stale term) is no controller; one accepted would be")
  func staleTermIsFenced() {
    var checked = CheckedState.withService()
    let task = checked.state.tasks(service: "web")[0]
    // n2 led term 1 and proposes late: the entry lands in term 2, and apply refuses it.
    let result = checked.apply(.retireTask(taskID: task.id, reason: "late"), by: NodeID("n2"), stampTerm: 1, term: 2)
    guard case .rejected(let rejection) = result else {
      Issue.record("a stale-term retireTask was accepted: \(result)")
      return
    }
    #expect(rejection.code == .staleTerm)
    #expect(checked.checker.violations.isEmpty, "\(checked.checker.violations)")
    // Fed as if apply had accepted it, the checker names the broken fence.
    let entry = ClusterEntry(
      stamp: CommandStamp(now: LogTime(millisecondsSinceEpoch: checked.now), node: NodeID("n2"), term: 1),
      command: .retireTask(taskID: task.id, reason: "late"))
    checked.checker.check(
      entry, index: checked.index + 1, term: 2, accepted: true, state: checked.state, on: NodeID("n1"))
    #expect(
      checked.checker.violations.contains { $0.contains("stamped in term 1 by n2 was accepted in an entry of term 2") })
  }

  @Test("committed weights that do not sum to 100 % are a violation")
  func weightsOffBy10Percent() throws {
    let checked = CheckedState.withService()
    // The same state with production weights of 90 %, through a snapshot (restore does not check weights).
    let bytes = checked.state.snapshot()
    let json = try #require(String(bytes: bytes[4...], encoding: .utf8))
    let broken = json.replacingOccurrences(of: "\"basisPoints\":10000", with: "\"basisPoints\":9000")
    #expect(broken != json)
    let state = try ClusterState(snapshot: Array(bytes[0..<4]) + Array(broken.utf8))
    let entry = ClusterEntry(
      stamp: CommandStamp(now: LogTime(millisecondsSinceEpoch: checked.now), node: NodeID("n1"), term: 1),
      command: .scaleService(service: "web", desiredCount: 2))
    checked.checker.check(entry, index: checked.index + 1, term: 1, accepted: true, state: state, on: NodeID("n1"))
    #expect(checked.checker.violations.contains { $0.contains("web's committed production weights sum to 9000") })
  }

  @Test("a blue task retired while its deployment is before CLEAN_UP is recorded for that deployment")
  func blueRetiredBeforeCleanUp() throws {
    var checked = CheckedState.withService()
    let answer = checked.apply(
      .submitDeployment(service: "web", spec: CheckedState.spec(version: "v2"), supersede: false))
    guard case .ok(.deploymentSubmitted(_, let id, _)) = answer else {
      Issue.record("submitDeployment answered \(answer)")
      return
    }
    #expect(checked.checker.blueStopsBeforeCleanUp.isEmpty)
    let blue = try #require(checked.state.tasks(service: "web").first { $0.revision.number == 1 })
    checked.apply(.retireTask(taskID: blue.id, reason: "wrongly"))
    let stop = try #require(checked.checker.blueStopsBeforeCleanUp[id])
    #expect(stop.contains("blue task \(blue.id)") && stop.contains("wrongly"), "\(stop)")
  }
}
