import Foundation
import TealDeploy
import TealWire
import Testing

@Suite("ECS hook parity")
struct HookTests {
  static func hook(
    _ stages: [LifecycleStage], overall: TimeSpan = .minutes(10), timeoutAction: HookTimeoutAction = .ROLLBACK,
    everyStep: Bool = false, action: HookAction = .http(url: "http://127.0.0.1:9/h", timeout: .seconds(5))
  ) -> LifecycleHookConfiguration {
    LifecycleHookConfiguration(
      stages: stages, action: action, callBackDelay: .seconds(30), timeoutAction: timeoutAction,
      overallTimeout: overall, everyStep: everyStep, hookDetails: .object(sorting: [("team", .string("web"))]))
  }

  @Test func theOverallTimeoutHoldsAcrossInProgressAnswersAndFailovers() throws {
    let spec = makeSpec(
      DeploymentConfiguration(
        strategy: .BLUE_GREEN, bakeTime: .minutes(1), lifecycleHooks: [Self.hook([.POST_SCALE_UP])]))
    let (green, blue) = revisions(spec)
    var scenario = SimulationScenario()
    scenario.hookOutcomes = [.POST_SCALE_UP: [.inProgress]]
    let plain = SimulatedWorld.run(green: green, blue: blue, scenario: scenario)
    scenario.killLeaderAt = [.POST_SCALE_UP]
    scenario.crashAfterInputs = Set(stride(from: 30, to: 200, by: 7))
    let crashed = SimulatedWorld.run(green: green, blue: blue, scenario: scenario)
    for result in [plain, crashed] {
      let deployment = result.deployment
      #expect(deployment.status == .ROLLBACK_SUCCESSFUL)
      let began = try #require(entered(deployment, .POST_SCALE_UP))
      let timedOut = try #require(deployment.history.first { $0.message.contains("reached its overall timeout") })
      #expect(
        timedOut.at - began == .minutes(10), "the deadline is absolute; failovers and IN_PROGRESS do not extend it")
      let attempts = result.hookCalls.map(\.executionId)
      #expect(Set(attempts) == ["d-1:POST_SCALE_UP:0:0:FORWARD"])
    }
    #expect(plain.hookCalls.count >= 19)  // every 30 s for 10 min
    #expect(!crashed.crashes.isEmpty)
  }

  @Test func callBackDelayReturnedByTheHookIsHonoured() throws {
    let spec = makeSpec(
      DeploymentConfiguration(strategy: .BLUE_GREEN, bakeTime: .zero, lifecycleHooks: [Self.hook([.PRE_SCALE_UP])]))
    var driver = Driver(spec)
    driver.answerHook(.inProgress, callBackDelay: .seconds(120))
    let call = try #require(driver.deployment.pendingHookCall)
    #expect(call.notBefore == driver.now + .seconds(120))
    #expect(call.context.attempt == 2)
    #expect(call.context.hookDetails == .object(sorting: [("team", .string("web"))]))
    #expect(call.context.executionId == "d-1:PRE_SCALE_UP:0:0:FORWARD")
  }

  @Test func anUnreachableHookIsRetriedWithBackoffNotFailedAtOnce() throws {
    let spec = makeSpec(
      DeploymentConfiguration(strategy: .BLUE_GREEN, bakeTime: .zero, lifecycleHooks: [Self.hook([.PRE_SCALE_UP])]))
    var driver = Driver(spec)
    var delays: [TimeSpan] = []
    for _ in 0..<8 {
      driver.answerHook(.unreachable(reason: "connection refused"))
      delays.append(try #require(driver.deployment.pendingHookCall).notBefore - driver.now)
    }
    #expect(delays.map(\.milliseconds) == [1000, 2000, 4000, 8000, 16_000, 32_000, 60_000, 60_000])
    #expect(driver.deployment.status == .IN_PROGRESS)
    driver.answerHook(.succeeded)
    #expect(driver.deployment.stage == .SCALE_UP)
  }

  @Test func aPauseHookWaitsForContinue() {
    let pause = Self.hook([.POST_TEST_TRAFFIC_SHIFT], overall: .hours(1), action: .pause)
    var driver = Driver(
      makeSpec(DeploymentConfiguration(strategy: .BLUE_GREEN, bakeTime: .zero, lifecycleHooks: [pause])))
    driver.run(until: .POST_TEST_TRAFFIC_SHIFT)
    driver.wait(.minutes(30))
    #expect(driver.deployment.stage == .POST_TEST_TRAFFIC_SHIFT)
    #expect(driver.deployment.pendingHookCall == nil, "a PAUSE hook calls nothing")
    #expect(driver.send(.continue(requestedBy: "alice")) == .accepted)
    #expect(driver.deployment.stage == .PRODUCTION_TRAFFIC_SHIFT)
  }

  @Test func aPauseHookRollsBackOnRequest() {
    let pause = Self.hook([.POST_TEST_TRAFFIC_SHIFT], overall: .hours(1), action: .pause)
    var driver = Driver(
      makeSpec(DeploymentConfiguration(strategy: .BLUE_GREEN, bakeTime: .zero, lifecycleHooks: [pause])))
    driver.run(until: .POST_TEST_TRAFFIC_SHIFT)
    driver.send(.rollback(requestedBy: "alice"))
    driver.send(.wakeUp)
    #expect(driver.deployment.status == .ROLLBACK_IN_PROGRESS)
  }

  @Test(arguments: [HookTimeoutAction.ROLLBACK, .CONTINUE]) func aPauseHookTimesOutWithItsAction(
    _ action: HookTimeoutAction
  ) {
    let pause = Self.hook([.POST_TEST_TRAFFIC_SHIFT], overall: .hours(1), timeoutAction: action, action: .pause)
    var driver = Driver(
      makeSpec(DeploymentConfiguration(strategy: .BLUE_GREEN, bakeTime: .zero, lifecycleHooks: [pause])))
    driver.run(until: .POST_TEST_TRAFFIC_SHIFT)
    #expect(driver.deployment.nextWakeup == driver.now + .hours(1))
    driver.wait(.hours(1))
    switch action {
    case .ROLLBACK: #expect(driver.deployment.status == .ROLLBACK_IN_PROGRESS)
    case .CONTINUE: #expect(driver.deployment.stage == .PRODUCTION_TRAFFIC_SHIFT)
    }
  }

  @Test func everyStepHooksRunAtEveryProductionStepWithTheirOwnExecutionId() {
    let spec = makeSpec(
      DeploymentConfiguration(
        strategy: .LINEAR, bakeTime: .zero, linear: LinearConfiguration(stepPercent: 50, stepBakeTime: .minutes(1)),
        lifecycleHooks: [Self.hook([.PRODUCTION_TRAFFIC_SHIFT], everyStep: true)]))
    let (green, blue) = revisions(spec)
    let result = SimulatedWorld.run(green: green, blue: blue, scenario: SimulationScenario())
    #expect(result.deployment.status == .SUCCESSFUL)
    #expect(
      result.hookCalls.map(\.executionId) == [
        "d-1:PRODUCTION_TRAFFIC_SHIFT:0:0:FORWARD", "d-1:PRODUCTION_TRAFFIC_SHIFT:0:1:FORWARD",
      ])
  }

  @Test func aFailedHookDuringACanaryStepRollsBackAtOnce() throws {
    let spec = makeSpec(
      DeploymentConfiguration(
        strategy: .CANARY, bakeTime: .zero, canary: CanaryConfiguration(canaryPercent: 10, canaryBakeTime: .hours(1)),
        lifecycleHooks: [Self.hook([.PRODUCTION_TRAFFIC_SHIFT])]))
    var driver = Driver(spec)
    driver.run(until: .PRODUCTION_TRAFFIC_SHIFT)
    driver.reportRoutes()
    driver.answerHook(.failed(reason: "canary errors"))
    #expect(driver.deployment.status == .ROLLBACK_IN_PROGRESS)
    #expect(driver.deployment.reason?.contains("canary errors") == true)
  }

  @Test func reconcileServiceHooksRunOnlyWhenMoreThanOneRevisionIsActive() {
    let spec = makeSpec(
      DeploymentConfiguration(strategy: .BLUE_GREEN, bakeTime: .zero, lifecycleHooks: [Self.hook([.RECONCILE_SERVICE])])
    )
    let single = Driver(spec)
    #expect(single.deployment.stage == .SCALE_UP)
    let several = Driver(
      spec, activeRevisions: [RevisionID(service: "web", number: 1), RevisionID(service: "web", number: 0)])
    #expect(several.deployment.stage == .RECONCILE_SERVICE)
    #expect(several.deployment.pendingHookCall?.context.lifecycleStage == .RECONCILE_SERVICE)
  }
}
