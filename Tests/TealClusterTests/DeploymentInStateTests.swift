import Foundation
import TealCluster
import TealDeploy
import TealWire
import Testing

/// A cluster whose nodes carry out the desired state at once: every placed task runs and is healthy,
/// every stopping task stops, every up node applies the current routes, and the leader wakes each
/// deployment at its `nextWakeup` and answers its hooks. Time moves one second per round.
struct PerfectWorld {
  var log = Log()
  var port = 20_000
  /// What the hook answers per execution id (default: SUCCEEDED).
  var hookAnswer: (HookInvocation) -> HookOutcome = { _ in .succeeded }
  var hookCalls: [String] = []

  init(nodes: Int = 3, spec: ServiceSpec = makeSpec()) {
    log.announce(nodes)
    log.ok(.createService(spec))
    settle()
  }

  /// One round of every node's reconcilers and the leader's controllers.
  mutating func round() {
    log.executePlan()
    for task in log.state.tasks.values.sorted(by: { $0.sequence < $1.sequence }) {
      switch task.desired {
      case .running where task.state == .pending:
        port += 1
        log.runHealthy(task.id, port: port)
      case .stopping:
        log.ok(.taskStopped(node: task.node, taskID: task.id))
      default: break
      }
    }
    log.allNodesApplyRoutes()
    let now = Instant(millisecondsSinceEpoch: log.now)
    for deployment in log.state.allDeployments() where deployment.isActive {
      if let call = deployment.pendingHookCall, call.notBefore <= now {
        hookCalls.append(call.context.executionId)
        let result = HookResult(
          executionId: call.context.executionId, attempt: call.context.attempt, outcome: hookAnswer(call))
        log.ok(.hookAnswered(service: deployment.service, deploymentID: deployment.id, result: result))
      }
      if let wake = deployment.nextWakeup, wake <= now {
        log.ok(.deploymentWakeUp(service: deployment.service, deploymentID: deployment.id))
      }
    }
    log.advance(milliseconds: 1000)
  }

  mutating func settle(rounds: Int = 5) { for _ in 0..<rounds { round() } }

  /// Rounds until `id` is terminal, at most `limit`.
  mutating func finish(_ id: String, limit: Int = 2000) -> Deployment? {
    for _ in 0..<limit {
      if let deployment = log.state.deployment(id: id), !deployment.isActive { return deployment }
      round()
    }
    return log.state.deployment(id: id)
  }

  mutating func submit(_ spec: ServiceSpec, supersede: Bool = false) -> String {
    guard
      case .deploymentSubmitted(_, let id, _) = log.ok(
        .submitDeployment(service: spec.name, spec: spec, supersede: supersede))
    else { preconditionFailure("submitDeployment did not answer deploymentSubmitted") }
    return id
  }
}

func greenSpec(
  _ version: String = "v2", strategy: String = "BLUE_GREEN", bakeSeconds: Int = 10,
  hooks: [LifecycleHookConfiguration] = []
) -> ServiceSpec {
  var spec = makeSpec(env: ["MODE": "demo", "VERSION": version])
  let json = """
    {"strategy": "\(strategy)", "bakeTime": \(bakeSeconds * 1000), "lifecycleHooks": [], "alarms": [],
     "canary": {"canaryPercent": 10, "canaryBakeTime": 5000}, "linear": {"stepPercent": 25, "stepBakeTime": 3000},
     "circuitBreaker": {"enable": true, "rollback": true, "failureThreshold": 3, "scaleUpTimeout": 600000}}
    """
  spec.deployment = try! JSONDecoder().decode(DeploymentConfiguration.self, from: Data(json.utf8))
  spec.deployment.lifecycleHooks = hooks
  return spec
}

@Suite("Deployments in ClusterState")
struct DeploymentInStateTests {
  @Test func aBlueGreenDeploymentEndsWithGreenServingAndBlueGone() {
    var world = PerfectWorld()
    #expect(world.log.state.tasks.count == 3)
    let id = world.submit(greenSpec())
    let done = world.finish(id)
    #expect(done?.status == .SUCCESSFUL)
    let service = world.log.state.services["web"]!
    #expect(service.currentRevision == 2)
    #expect(service.desiredCount == 3)
    #expect(service.deploymentRoutes == nil)
    #expect(service.routes.production == [RevisionID(service: "web", number: 2): ServiceRoutes.fullWeight])
    world.settle()
    let revisions = Set(world.log.state.tasks.values.map(\.revision.number))
    #expect(revisions == [2])
    #expect(world.log.state.tasks.values.filter { $0.desired == .running }.count == 3)
    let stages = done?.stageTimeline.map(\.stage) ?? []
    #expect(stages == LifecycleStage.allCases)
    // The engine's history reaches the cluster's events, with its times in UTC.
    let notes = world.log.state.history.events.filter { $0.kind == .deploymentNote }.map(\.message)
    #expect(notes.contains { $0.hasPrefix("deployment \(id): baking until 2025-12-01T") }, "\(notes)")
    #expect(!notes.contains { $0.contains("ms") && $0.contains("@") })
  }

  @Test(arguments: ["CANARY", "LINEAR"])
  func productionWeightsMoveInTheStrategysSteps(strategy: String) {
    var world = PerfectWorld()
    let id = world.submit(greenSpec(strategy: strategy))
    var seen: [Int] = []
    for _ in 0..<400 {
      let green = world.log.state.services["web"]!.routes.production[RevisionID(service: "web", number: 2)] ?? 0
      if seen.last != green { seen.append(green) }
      if world.log.state.deployment(id: id)?.isActive == false { break }
      world.round()
    }
    #expect(world.log.state.deployment(id: id)?.status == .SUCCESSFUL)
    let expected = strategy == "CANARY" ? [0, 1000, 10_000] : [0, 2500, 5000, 7500, 10_000]
    #expect(seen == expected)
  }

  @Test func aFailedHookRollsBackWithProductionNeverLeavingBlue() {
    let hooks = [
      LifecycleHookConfiguration(
        stages: [.POST_TEST_TRAFFIC_SHIFT], action: .http(url: "http://127.0.0.1:9/hook", timeout: .seconds(5)))
    ]
    var world = PerfectWorld()
    world.hookAnswer = { _ in .failed(reason: "smoke test failed") }
    let id = world.submit(greenSpec(hooks: hooks))
    var greenEver = 0
    for _ in 0..<400 {
      let weight = world.log.state.services["web"]!.routes.production[RevisionID(service: "web", number: 2)] ?? 0
      greenEver = max(greenEver, weight)
      if world.log.state.deployment(id: id)?.isActive == false { break }
      world.round()
    }
    #expect(world.log.state.deployment(id: id)?.status == .ROLLBACK_SUCCESSFUL)
    #expect(greenEver == 0)
    #expect(world.hookCalls.count == 1)
    world.settle()
    #expect(world.log.state.services["web"]!.currentRevision == 1)
    #expect(Set(world.log.state.tasks.values.map(\.revision.number)) == [1])
  }

  @Test func greenTasksLostWithTheirNodeDoNotTripTheCircuitBreakerButCrashesDo() {
    for (code, failures) in [(TaskRunState.lostExitCode, 0), (Int32(1), 3)] {
      var world = PerfectWorld()
      let id = world.submit(greenSpec())
      world.log.executePlan()
      let green = world.log.state.tasks.values.filter { $0.revision.number == 2 }.sorted { $0.id < $1.id }
      #expect(green.count == 3)
      for task in green {
        world.log.ok(
          .taskReports(
            node: task.node, reports: [TaskReport(taskID: task.id, state: .exited(code: code), healthy: false)]))
      }
      #expect(world.log.state.deployment(id: id)?.greenFailures == failures, "exit code \(code)")
    }
  }

  /// Below the floor in bake because two green tasks went with their node, or because their
  /// restarted node drains them as its previous run's: the deployment holds and goes on once the
  /// replacements are healthy. Below it because they went unhealthy: it rolls back.
  @Test(arguments: ["lost", "previousRun", "unhealthy"])
  func greenBelowTheFloorHoldsForLostOrDrainedTasksAndRollsBackForUnhealthyOnes(_ why: String) {
    let unhealthy = why == "unhealthy"
    var world = PerfectWorld()
    let id = world.submit(greenSpec(bakeSeconds: 60))
    while world.log.state.deployment(id: id)?.stage != .BAKE_TIME { world.round() }
    let green = world.log.state.tasks.values.filter { $0.revision.number == 2 }.sorted { $0.id < $1.id }
    #expect(green.count == 3)
    for task in green.prefix(2) {
      let report =
        switch why {
        case "unhealthy": TaskReport(taskID: task.id, state: .running, healthy: false)
        case "previousRun": TaskReport(taskID: task.id, state: .running, healthy: false, previousRun: true)
        default: TaskReport(taskID: task.id, state: .exited(code: TaskRunState.lostExitCode), healthy: false)
        }
      world.log.ok(.taskReports(node: task.node, reports: [report]))
    }
    let deployment = world.log.state.deployment(id: id)
    if unhealthy {
      #expect(deployment?.status == .ROLLBACK_IN_PROGRESS)
      #expect(deployment?.reason?.contains("2 of them unhealthy") == true, "\(deployment?.reason ?? "-")")
    } else {
      #expect(deployment?.status == .IN_PROGRESS)
      #expect(deployment?.belowFloorSince != nil)
      let finished = world.finish(id)
      #expect(finished?.status == .SUCCESSFUL, "\(finished?.reason ?? "-")")
      #expect(finished?.history.contains { $0.message.contains("is back at") } == true)
    }
  }

  @Test func operatorActionsReachTheDeploymentAndARetryIsANewDeploymentOfTheSameRevisions() {
    var world = PerfectWorld()
    let id = world.submit(greenSpec(bakeSeconds: 60))
    while world.log.state.deployment(id: id)?.stage != .BAKE_TIME { world.round() }
    world.log.ok(.deploymentAction(service: "web", deploymentID: id, action: .pause))
    #expect(world.log.state.deployment(id: id)?.pause?.requestedBy == "operator via n1")
    world.log.ok(.deploymentAction(service: "web", deploymentID: id, action: .continue))
    #expect(world.log.state.deployment(id: id)?.pause == nil)
    world.log.ok(.deploymentAction(service: "web", deploymentID: id, action: .stop))
    let stopped = world.finish(id)
    // Stop means roll back, as in ECS.
    #expect(stopped?.status == .ROLLBACK_SUCCESSFUL)
    #expect(stopped?.reason?.contains("stop requested by operator via n1") == true, "\(stopped?.reason ?? "-")")
    world.settle()
    guard
      case .deploymentSubmitted(_, let retry, let green) = world.log.ok(
        .deploymentAction(service: "web", deploymentID: id, action: .retry))
    else {
      Issue.record("retry did not submit a deployment")
      return
    }
    #expect(retry != id && retry.hasPrefix("web-"))
    #expect(green == RevisionID(service: "web", number: 2))
    #expect(world.finish(retry)?.status == .SUCCESSFUL)
    #expect(ClusterState.service(ofDeployment: "my-web-12") == "my-web")
  }

  @Test func scalingOrDeletingDuringADeploymentIsRefusedNamingIt() {
    var world = PerfectWorld()
    let id = world.submit(greenSpec())
    world.round()
    for command in [ClusterCommand.scaleService(service: "web", desiredCount: 1), .deleteService(service: "web")] {
      guard case .rejected(let rejection) = world.log.apply(command) else {
        Issue.record("\(command.name) accepted during deployment \(id)")
        continue
      }
      #expect(rejection.code == .conflict)
      #expect(rejection.message.contains(id))
    }
  }

  @Test func aSecondDeploymentIsRefusedUnlessItSupersedes() {
    var world = PerfectWorld()
    let first = world.submit(greenSpec("v2"))
    world.round()
    guard
      case .rejected(let rejection) = world.log.apply(
        .submitDeployment(service: "web", spec: greenSpec("v3"), supersede: false))
    else {
      Issue.record("a second deployment was accepted")
      return
    }
    #expect(rejection.message.contains(first))
    let second = world.submit(greenSpec("v3"), supersede: true)
    #expect(world.finish(second)?.status == .SUCCESSFUL)
    #expect(world.log.state.pastDeployments["web"]?.map(\.id) == [first])
    #expect(world.log.state.pastDeployments["web"]?.first?.status == .ROLLBACK_SUCCESSFUL)
    #expect(world.log.state.services["web"]!.currentRevision == 3)
  }

  @Test func theSpecOfTheServingRevisionIsRefusedAsNothingToDeploy() {
    var world = PerfectWorld()
    guard
      case .rejected(let rejection) = world.log.apply(
        .submitDeployment(service: "web", spec: makeSpec(), supersede: false))
    else {
      Issue.record("deploying the serving spec was accepted")
      return
    }
    #expect(rejection.code == .conflict)
  }

  @Test func aWakeUpFromAnOldTermIsRejectedOnApply() {
    var world = PerfectWorld()
    let id = world.submit(greenSpec())
    world.log.term = 5
    let result = world.log.apply(.deploymentWakeUp(service: "web", deploymentID: id), stampTerm: 4)
    guard case .rejected(let rejection) = result else {
      Issue.record("stale wake-up applied: \(result)")
      return
    }
    #expect(rejection.code == .staleTerm)
  }

  @Test func theBakeDeadlineIsInTheStateAndDoesNotMoveWhenTheLeaderChanges() {
    var world = PerfectWorld()
    let id = world.submit(greenSpec(bakeSeconds: 20))
    while world.log.state.deployment(id: id)?.stage != .BAKE_TIME { world.round() }
    guard case .waiting(let until) = world.log.state.deployment(id: id)?.gate else {
      Issue.record("bake has no deadline")
      return
    }
    // A new leader in a later term, 7 s later, changes nothing about the deadline.
    world.log.term += 1
    world.log.proposer = NodeID("n2")
    world.log.advance(milliseconds: 7000)
    world.round()
    guard case .waiting(let after) = world.log.state.deployment(id: id)?.gate else {
      Issue.record("bake lost its deadline")
      return
    }
    #expect(after == until)
    #expect(world.finish(id)?.status == .SUCCESSFUL)
  }

  @Test func replicasThatApplyTheSameDeploymentEntriesWriteTheSameSnapshot() throws {
    var world = PerfectWorld()
    let id = world.submit(greenSpec(strategy: "LINEAR"))
    for _ in 0..<12 { world.round() }
    #expect(world.log.state.deployment(id: id)?.isActive == true)
    let copy = try ClusterState(snapshot: world.log.state.snapshot())
    #expect(copy.snapshot() == world.log.state.snapshot())
    #expect(copy.deployment(id: id) == world.log.state.deployment(id: id))
  }
}
