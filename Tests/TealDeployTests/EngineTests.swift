import Foundation
import TealDeploy
import TealWire
import Testing

@Suite("Inputs in, desired state out")
struct EngineTests {
  @Test(arguments: exampleFiles) func everyExampleSucceedsThroughEveryStageInOrder(_ file: String) throws {
    let (green, blue) = try example(file)
    let result = SimulatedWorld.run(green: green, blue: blue, scenario: SimulationScenario())
    let deployment = result.deployment
    #expect(deployment.status == .SUCCESSFUL, "\(deployment.reason ?? "")")
    #expect(stages(deployment) == LifecycleStage.allCases)
    // The world really is where the desired state says: blue stopped on every node, routes applied.
    #expect(result.worldMatchesDesiredState)
    #expect(deployment.desired.taskSet(blue.revision)?.phase == .stopped)
    #expect(result.world.allSatisfy { $0.running(blue.revision) == 0 && $0.stopped.contains(blue.revision) })
    #expect(deployment.desired.routes.weights == TrafficWeights(production: .allGreen, test: .allGreen))
    let bake = try #require(entered(deployment, .CLEAN_UP)) - (try #require(entered(deployment, .BAKE_TIME)))
    #expect(bake == green.spec.deployment.bakeTime)
  }

  @Test func theCanaryExampleRunsAsDocumented() throws {
    // Tasks healthy after 2 s, routes applied after 100 ms, hooks answering after 1 s, drains 1 s.
    let (green, blue) = try example("web-canary.yaml")
    let result = SimulatedWorld.run(green: green, blue: blue, scenario: SimulationScenario())
    let offsets = result.deployment.stageTimeline.map { ($0.stage, ($0.enteredAt - result.start).milliseconds) }
    #expect(
      offsets.map { "\($0.0.rawValue)@\($0.1)" } == [
        "RECONCILE_SERVICE@0", "PRE_SCALE_UP@0", "SCALE_UP@0", "POST_SCALE_UP@2000", "TEST_TRAFFIC_SHIFT@2000",
        "POST_TEST_TRAFFIC_SHIFT@2100", "PRODUCTION_TRAFFIC_SHIFT@2100", "POST_PRODUCTION_TRAFFIC_SHIFT@303300",
        "BAKE_TIME@303300", "CLEAN_UP@1203300",
      ])
    #expect(result.hookCalls.map(\.executionId) == ["d-1:PRODUCTION_TRAFFIC_SHIFT:0:0:FORWARD"])
    #expect(result.hookCalls.first.map { ($0.at - result.start).milliseconds } == 2200)
  }

  @Test func aHookIsCalledOnlyAfterEveryLiveNodeAppliedTheWeightsItSees() throws {
    let (green, blue) = try example("web-blue-green.yaml")
    let result = SimulatedWorld.run(green: green, blue: blue, scenario: SimulationScenario())
    let states = replay(result.log)
    var checked = 0
    for state in states {
      guard let call = state.pendingHookCall, call.context.attempt == 1 else { continue }
      #expect(state.isConverged(.routes(generation: state.desired.routes.generation)), "\(call.context.executionId)")
      checked += 1
    }
    #expect(checked > 0)
  }

  @Test func aWeightChangeWaitsForEveryLiveNodeAndADownNodeDoesNotHoldItBack() {
    var driver = Driver(makeSpec(DeploymentConfiguration(strategy: .BLUE_GREEN, bakeTime: .minutes(1))))
    driver.run(until: .TEST_TRAFFIC_SHIFT)
    #expect(driver.deployment.stage == .TEST_TRAFFIC_SHIFT)
    #expect(driver.deployment.desired.routes.weights.test == .allGreen)
    driver.reportRoutes([nodeNames[0], nodeNames[1]])
    driver.wait(.minutes(5))
    #expect(driver.deployment.stage == .TEST_TRAFFIC_SHIFT, "n3 has not applied the test weights")
    driver.send(.nodeDown(nodeNames[2]))
    #expect(driver.deployment.stage == .PRODUCTION_TRAFFIC_SHIFT, "a node marked down does not hold it back")
    // A node back up must report before the next move.
    driver.send(.nodeUp(nodeNames[2]))
    driver.reportRoutes([nodeNames[0], nodeNames[1]])
    #expect(driver.deployment.stage == .PRODUCTION_TRAFFIC_SHIFT)
    driver.reportRoutes([nodeNames[2]])
    #expect(driver.deployment.stage == .BAKE_TIME)
  }

  @Test func blueStopsOnlyAfterEveryLiveNodeDrainedItAndSucceedsOnlyOnceStopped() {
    var driver = Driver(makeSpec(DeploymentConfiguration(strategy: .BLUE_GREEN, bakeTime: .minutes(1))))
    driver.run(until: .CLEAN_UP)
    let blue = driver.blue
    #expect(driver.deployment.desired.taskSet(blue)?.phase == .draining)
    driver.reportRoutes()
    driver.send(.revisionDrained(node: nodeNames[0], revision: blue))
    driver.send(.revisionDrained(node: nodeNames[1], revision: blue))
    #expect(driver.deployment.desired.taskSet(blue)?.phase == .draining)
    driver.send(.revisionDrained(node: nodeNames[2], revision: blue))
    #expect(driver.deployment.desired.taskSet(blue)?.phase == .stopped)
    #expect(driver.deployment.status == .IN_PROGRESS)
    for node in nodeNames { driver.send(.taskSetStopped(node: node, revision: blue)) }
    #expect(driver.deployment.status == .SUCCESSFUL)
  }

  @Test func scaleUpWaitsForHealthyGreenTasksOnLiveNodes() {
    var driver = Driver(makeSpec(DeploymentConfiguration(strategy: .BLUE_GREEN, bakeTime: .zero)))
    #expect(driver.deployment.stage == .SCALE_UP)
    #expect(
      driver.deployment.desired.taskSet(driver.green)
        == TaskSetTarget(revision: driver.green, count: 3, phase: .serving))
    driver.send(.taskHealth(node: nodeNames[0], revision: driver.green, healthy: 2))
    #expect(driver.deployment.stage == .SCALE_UP)
    driver.send(.taskHealth(node: nodeNames[1], revision: driver.green, healthy: 1))
    #expect(driver.deployment.stage == .TEST_TRAFFIC_SHIFT)
  }

  // MARK: Log-ready inputs

  @Test func inputsNamingAnotherDeploymentAreIgnored() {
    var driver = Driver(makeSpec(DeploymentConfiguration(strategy: .BLUE_GREEN, bakeTime: .zero)))
    let before = driver.deployment
    let reply = driver.send(.rollback(requestedBy: "late"), id: "d-0")
    #expect(reply == .ignored(reason: "deployment d-0 is not a deployment of web in progress"))
    #expect(driver.deployment == before)
  }

  @Test func timeNeverRunsBackwards() {
    var driver = Driver(makeSpec(DeploymentConfiguration(strategy: .BLUE_GREEN, bakeTime: .minutes(10))))
    driver.run(until: .BAKE_TIME)
    let clock = driver.deployment.clock
    guard case .waiting(let until) = driver.deployment.gate else {
      Issue.record("not baking: \(String(describing: driver.deployment.gate))")
      return
    }
    driver.now = Instant(millisecondsSinceEpoch: 0)  // a proposer whose clock is far behind
    driver.send(.wakeUp)
    #expect(driver.deployment.clock == clock)
    #expect(driver.deployment.gate == .waiting(until: until))
    #expect(driver.deployment.history.last?.at ?? clock >= clock)
  }

  @Test func aLateHookAnswerIsIgnored() throws {
    let hook = LifecycleHookConfiguration(
      stages: [.PRE_SCALE_UP], action: .http(url: "http://127.0.0.1:1/h", timeout: .seconds(5)))
    var driver = Driver(
      makeSpec(DeploymentConfiguration(strategy: .BLUE_GREEN, bakeTime: .zero, lifecycleHooks: [hook])))
    let call = try #require(driver.deployment.pendingHookCall)
    driver.answerHook(.inProgress)
    // The answer to attempt 1 arrives again (a deposed leader's call): ignored.
    let reply = driver.send(.hookAnswered(HookResult(answering: call, outcome: .failed(reason: "late"))))
    guard case .ignored = reply else {
      Issue.record("expected ignored, got \(reply)")
      return
    }
    #expect(driver.deployment.status == .IN_PROGRESS)
    #expect(driver.deployment.pendingHookCall?.context.attempt == 2)
  }

  @Test func afterASupersedeALateAlarmForTheOldDeploymentDoesNotTouchTheNewOne() throws {
    var driver = Driver(makeSpec(DeploymentConfiguration(strategy: .BLUE_GREEN, bakeTime: .zero)))
    driver.run(until: .POST_SCALE_UP)
    let (green, blue) = revisions(makeSpec(DeploymentConfiguration(strategy: .BLUE_GREEN, bakeTime: .minutes(1))))
    var newer = green
    newer = Revision(id: RevisionID(service: "web", number: 3), spec: green.spec)
    let reply = driver.send(
      .submit(DeploymentSubmission(green: newer, blue: blue, nodes: nodeNames, supersede: true)), id: "d-2")
    #expect(reply == .accepted)
    #expect(driver.service.queued?.id == "d-2")
    // The old one rolls back; the new one waits.
    driver.send(.wakeUp)
    for _ in 0..<50 where driver.deployment.isActive {
      driver.now = driver.now + .minutes(1)
      driver.reportRoutes()
      for node in nodeNames { driver.send(.revisionDrained(node: node, revision: driver.green)) }
      for node in nodeNames { driver.send(.taskSetStopped(node: node, revision: driver.green)) }
      driver.send(.wakeUp)
    }
    #expect(driver.deployment.status == .ROLLBACK_SUCCESSFUL)
    #expect(driver.service.startable == "d-2")
    driver.send(.start, id: "d-2")
    #expect(driver.service.current?.id == "d-2")
    #expect(driver.service.current?.status == .IN_PROGRESS)
    let before = driver.service.current
    let late = driver.send(
      .metricSample(MetricSample(at: driver.now, requestCount: 9, http5xxCount: 9, latencyP99Milliseconds: 1)))
    guard case .ignored = late else {
      Issue.record("a late input for d-1 was applied: \(late)")
      return
    }
    #expect(driver.service.current == before)
    // The new deployment continues from the old one's routes generation.
    #expect((driver.service.current?.desired.routes.generation ?? 0) >= 2)
  }

  @Test(arguments: [DeploymentCommand.stop(requestedBy: "op"), .rollback(requestedBy: "op")])
  func stoppingAQueuedDeploymentDropsItAndNothingStartsIt(request: DeploymentCommand) throws {
    var driver = Driver(makeSpec(DeploymentConfiguration(strategy: .BLUE_GREEN, bakeTime: .zero)))
    driver.run(until: .POST_SCALE_UP)
    let (green, blue) = revisions(makeSpec(DeploymentConfiguration(strategy: .BLUE_GREEN, bakeTime: .minutes(1))))
    let newer = Revision(id: RevisionID(service: "web", number: 3), spec: green.spec)
    driver.send(.submit(DeploymentSubmission(green: newer, blue: blue, nodes: nodeNames, supersede: true)), id: "d-2")
    #expect(driver.service.queued?.id == "d-2")
    #expect(driver.send(request, id: "d-2") == .accepted)
    #expect(driver.service.queued == nil)
    #expect(driver.service.startable == nil)
    // Starting it anyway (a stale `start` in the log) is ignored, not a crash.
    guard case .ignored = driver.send(.start, id: "d-2") else {
      Issue.record("a start for the dropped deployment was applied")
      return
    }
  }

  @Test func aSecondDeploymentIsRefusedWithoutSupersede() {
    var driver = Driver(makeSpec(DeploymentConfiguration(strategy: .BLUE_GREEN, bakeTime: .zero)))
    let (green, blue) = revisions(makeSpec(DeploymentConfiguration(strategy: .BLUE_GREEN, bakeTime: .zero)))
    let reply = driver.send(.submit(DeploymentSubmission(green: green, blue: blue, nodes: nodeNames)), id: "d-2")
    guard case .refused(let reason) = reply else {
      Issue.record("expected refused, got \(reply)")
      return
    }
    #expect(reason.contains("has deployment d-1 in progress"))
  }
}
