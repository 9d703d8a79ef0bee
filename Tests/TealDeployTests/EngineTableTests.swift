import Foundation
import Testing

@testable import TealDeploy

/// Exact sequences of stages, weights, hook calls and wake-ups, with a fake clock. Times are
/// seconds since the deployment started; tasks get healthy 2 s after a scale-up, hooks answer in 1 s.
@Suite struct EngineTableTests {
  static let hooks = [httpHook([.POST_TEST_TRAFFIC_SHIFT]), httpHook([.POST_PRODUCTION_TRAFFIC_SHIFT])]

  static func run(_ spec: ServiceSpec, _ injection: Injection? = nil) -> Simulation {
    var sim = Simulation(engine: makeEngine(spec), injection: injection)
    sim.start()
    sim.run()
    return sim
  }

  static let prefixThroughTestShift = [
    "0s status IN_PROGRESS",
    "0s stage RECONCILE_SERVICE",
    "0s stage PRE_SCALE_UP",
    "0s stage SCALE_UP",
    "0s scale web:2 to 2",
    "0s wake at 120.0s",
    "2s stage POST_SCALE_UP",
    "2s stage TEST_TRAFFIC_SHIFT",
    "2s weights production blue 100/green 0, test blue 0/green 100",
    "2s stage POST_TEST_TRAFFIC_SHIFT",
    "2s hook 0 POST_TEST_TRAFFIC_SHIFT attempt 1",
    "2s wake at 17.0s",
  ]

  @Test func blueGreenShiftsProductionFromZeroToHundredInOneStep() {
    let sim = Self.run(makeSpec(.BLUE_GREEN, hooks: Self.hooks))
    #expect(
      sim.trace == Self.prefixThroughTestShift + [
        "3s stage PRODUCTION_TRAFFIC_SHIFT",
        "3s weights production blue 0/green 100, test blue 0/green 100",
        "3s stage POST_PRODUCTION_TRAFFIC_SHIFT",
        "3s hook 1 POST_PRODUCTION_TRAFFIC_SHIFT attempt 1",
        "3s wake at 18.0s",
        "4s stage BAKE_TIME",
        "4s wake at 304.0s",
        "304s stage CLEAN_UP",
        "304s stop web:1",
        "304s status SUCCESSFUL",
      ])
  }

  @Test func canaryShiftsCanaryPercentThenTheRestAfterCanaryBakeTime() {
    let sim = Self.run(makeSpec(.CANARY, hooks: Self.hooks))
    #expect(
      sim.trace == Self.prefixThroughTestShift + [
        "3s stage PRODUCTION_TRAFFIC_SHIFT",
        "3s weights production blue 90/green 10, test blue 0/green 100",
        "3s wake at 123.0s",
        "123s weights production blue 0/green 100, test blue 0/green 100",
        "123s stage POST_PRODUCTION_TRAFFIC_SHIFT",
        "123s hook 1 POST_PRODUCTION_TRAFFIC_SHIFT attempt 1",
        "123s wake at 138.0s",
        "124s stage BAKE_TIME",
        "124s wake at 424.0s",
        "424s stage CLEAN_UP",
        "424s stop web:1",
        "424s status SUCCESSFUL",
      ])
  }

  @Test func linearShiftsStepPercentEveryStepBakeTimeUntilHundred() {
    let sim = Self.run(makeSpec(.LINEAR, hooks: Self.hooks))
    #expect(
      sim.trace == Self.prefixThroughTestShift + [
        "3s stage PRODUCTION_TRAFFIC_SHIFT",
        "3s weights production blue 75/green 25, test blue 0/green 100",
        "3s wake at 63.0s",
        "63s weights production blue 50/green 50, test blue 0/green 100",
        "63s wake at 123.0s",
        "123s weights production blue 25/green 75, test blue 0/green 100",
        "123s wake at 183.0s",
        "183s weights production blue 0/green 100, test blue 0/green 100",
        "183s stage POST_PRODUCTION_TRAFFIC_SHIFT",
        "183s hook 1 POST_PRODUCTION_TRAFFIC_SHIFT attempt 1",
        "183s wake at 198.0s",
        "184s stage BAKE_TIME",
        "184s wake at 484.0s",
        "484s stage CLEAN_UP",
        "484s stop web:1",
        "484s status SUCCESSFUL",
      ])
  }

  @Test func canaryHookFailureRollsBothListenersBackToBlueInOneEffect() {
    let sim = Self.run(
      makeSpec(.CANARY, hooks: [httpHook([.PRODUCTION_TRAFFIC_SHIFT])]), .hookFails(.PRODUCTION_TRAFFIC_SHIFT))
    #expect(
      sim.trace == Array(Self.prefixThroughTestShift.prefix(10)) + [
        "2s stage PRODUCTION_TRAFFIC_SHIFT",
        "2s weights production blue 90/green 10, test blue 0/green 100",
        "2s hook 0 PRODUCTION_TRAFFIC_SHIFT attempt 1",
        "2s wake at 17.0s",
        "3s status ROLLBACK_IN_PROGRESS",
        "3s weights production blue 100/green 0, test blue 100/green 0",
        "3s stop web:2",
        "3s status ROLLBACK_SUCCESSFUL",
      ])
    #expect(sim.engine.reason == "hook 0 at PRODUCTION_TRAFFIC_SHIFT attempt 1 FAILED: smoke test failed")
  }

  @Test func inProgressHookIsCalledAgainAfterCallBackDelayWithTheSameExecutionId() {
    let sim = Self.run(makeSpec(.BLUE_GREEN, hooks: [httpHook([.PRE_SCALE_UP])]), .hookInProgressTwice(.PRE_SCALE_UP))
    #expect(
      Array(sim.trace.prefix(13)) == [
        "0s status IN_PROGRESS",
        "0s stage RECONCILE_SERVICE",
        "0s stage PRE_SCALE_UP",
        "0s hook 0 PRE_SCALE_UP attempt 1",
        "0s wake at 15.0s",
        "1s wake at 31.0s",
        "31s hook 0 PRE_SCALE_UP attempt 2",
        "31s wake at 46.0s",
        "32s wake at 62.0s",
        "62s hook 0 PRE_SCALE_UP attempt 3",
        "62s wake at 77.0s",
        "63s stage SCALE_UP",
        "63s scale web:2 to 2",
      ])
    #expect(sim.engine.status == .SUCCESSFUL)
    let ids = sim.effects.compactMap { effect -> String? in
      if case .invokeHook(let invocation) = effect { return invocation.context.executionId }
      return nil
    }
    #expect(ids == Array(repeating: "d-1-PRE_SCALE_UP", count: 3))
  }

  @Test func greenNeverHealthyTripsTheCircuitBreakerAtScaleUpTimeout() {
    let sim = Self.run(makeSpec(.BLUE_GREEN, hooks: Self.hooks), .greenNeverHealthy)
    #expect(
      Array(sim.trace.suffix(5)) == [
        "0s wake at 120.0s",
        "120s status ROLLBACK_IN_PROGRESS",
        "120s weights production blue 100/green 0, test blue 100/green 0",
        "120s stop web:2",
        "120s status ROLLBACK_SUCCESSFUL",
      ])
    #expect(
      sim.engine.reason?.hasPrefix("circuit breaker: green web:2 has 0/2 healthy tasks after scaleUpTimeout 2m") == true
    )
  }

  @Test func rollbackFailsWithAReasonWhenBlueIsNotHealthyWithinTheTimeout() {
    let sim = Self.run(makeSpec(.BLUE_GREEN, hooks: Self.hooks), .blueUnhealthyThenHookFails(.POST_TEST_TRAFFIC_SHIFT))
    #expect(
      Array(sim.trace.suffix(6)) == [
        "3s status ROLLBACK_IN_PROGRESS",
        "3s weights production blue 100/green 0, test blue 100/green 0",
        "3s stop web:2",
        "3s scale web:1 to 2",
        "3s wake at 123.0s",
        "123s status ROLLBACK_FAILED",
      ])
    #expect(sim.engine.reason?.contains("blue web:1 has 0/2 healthy tasks 2m after rollback began") == true)
  }

  @Test func circuitBreakerWithoutRollbackStopsTheDeploymentWhereItIs() {
    let spec = makeSpec(
      .BLUE_GREEN,
      breaker: CircuitBreakerSpec(enable: true, rollback: false, failureThreshold: 2, scaleUpTimeout: .minutes(2)))
    let sim = Self.run(spec, .greenTasksFail)
    #expect(sim.engine.status == .STOPPED)
    #expect(sim.engine.reason == "circuit breaker: 2 green task failures reached failureThreshold 2")
    #expect(!sim.trace.contains { $0.contains("stop web:") })
  }

  @Test func disabledCircuitBreakerNeverTrips() {
    let spec = makeSpec(
      .BLUE_GREEN,
      breaker: CircuitBreakerSpec(enable: false, rollback: true, failureThreshold: 1, scaleUpTimeout: .seconds(10)))
    let sim = Self.run(spec, .greenTasksFail)
    #expect(sim.engine.status == .IN_PROGRESS)
    #expect(sim.engine.stage == .SCALE_UP)
  }

  @Test func hookTimeoutWithContinueGoesOn() {
    let sim = Self.run(
      makeSpec(.BLUE_GREEN, hooks: [httpHook([.POST_SCALE_UP], timeoutAction: .CONTINUE)]),
      .hookTimesOut(.POST_SCALE_UP))
    #expect(sim.engine.status == .SUCCESSFUL)
    #expect(sim.engine.history.contains { $0.message.contains("timed out after 10s; timeoutAction CONTINUE") })
  }

  // MARK: Failure injected at each stage

  struct FailureCase: CustomTestStringConvertible, Sendable {
    var strategy: DeploymentStrategy
    var injection: Injection
    var stage: LifecycleStage
    var testDescription: String { "\(strategy): \(injection)" }
  }

  static let failureCases: [FailureCase] = DeploymentStrategy.allCases.flatMap { strategy in
    var cases: [FailureCase] = []
    for stage in LifecycleStage.allCases where stage != .CLEAN_UP {
      if stage.isHookable {
        cases.append(FailureCase(strategy: strategy, injection: .hookFails(stage), stage: stage))
        cases.append(FailureCase(strategy: strategy, injection: .hookTimesOut(stage), stage: stage))
      }
      cases.append(FailureCase(strategy: strategy, injection: .alarm(stage), stage: stage))
      cases.append(FailureCase(strategy: strategy, injection: .stopWithRollback(stage), stage: stage))
    }
    cases.append(FailureCase(strategy: strategy, injection: .greenTasksFail, stage: .SCALE_UP))
    cases.append(FailureCase(strategy: strategy, injection: .greenNeverHealthy, stage: .SCALE_UP))
    return cases
  }

  /// A hook at every hookable stage and an alarm watching every stage, so each stage waits.
  static func everyStageSpec(_ strategy: DeploymentStrategy) -> ServiceSpec {
    makeSpec(
      strategy, hooks: [httpHook(hookableStages)],
      alarms: [
        AlarmSpec(
          name: "errors", metric: .http5xxRate, threshold: 0.05, window: .minutes(1),
          evaluateDuring: LifecycleStage.allCases)
      ])
  }

  @Test(arguments: failureCases) func failureAtAStageRollsBackToBlueFromThatStage(_ failure: FailureCase) {
    let sim = Self.run(Self.everyStageSpec(failure.strategy), failure.injection)
    let engine = sim.engine
    #expect(engine.status == .ROLLBACK_SUCCESSFUL)
    #expect(engine.stage == failure.stage)
    #expect(engine.stageTimeline.map(\.stage) == LifecycleStage.allCases.filter { $0 <= failure.stage })
    #expect(engine.weights == .allBlue)
    let weightEffects = sim.effects.compactMap { effect -> TrafficWeights? in
      if case .setWeights(let weights) = effect { return weights }
      return nil
    }
    #expect(weightEffects.last == .allBlue)
    #expect(sim.effects.contains(.stopTaskSet(revision: engine.green)))
    #expect(!sim.effects.contains(.stopTaskSet(revision: blueID)))
    // One effect moved both listeners back: nothing after it changed weights.
    let rollbackIndex = sim.effects.lastIndex { if case .setWeights = $0 { return true } else { return false } }
    #expect(
      rollbackIndex.map { index in
        !sim.effects[(index + 1)...].contains { if case .setWeights = $0 { return true } else { return false } }
      } == true)
  }

  @Test(arguments: DeploymentStrategy.allCases, LifecycleStage.allCases.filter { $0 != .CLEAN_UP })
  func stopWithoutRollbackFreezesTheDeploymentAtThatStage(_ strategy: DeploymentStrategy, _ stage: LifecycleStage) {
    let sim = Self.run(Self.everyStageSpec(strategy), .stopWithoutRollback(stage))
    #expect(sim.engine.status == .STOPPED)
    #expect(sim.engine.stage == stage)
    #expect(sim.engine.reason == "stop requested by alice")
    #expect(!sim.effects.contains { if case .stopTaskSet = $0 { return true } else { return false } })
  }

  @Test(arguments: DeploymentStrategy.allCases) func stopAfterCleanUpBeganIsRefusedWithAReason(
    _ strategy: DeploymentStrategy
  ) {
    var sim = Self.run(Self.everyStageSpec(strategy))
    #expect(sim.engine.status == .SUCCESSFUL)
    let before = sim.engine
    let effects = sim.engine.handle(.stopRequested(rollback: true, requestedBy: "alice"), now: sim.now)
    let reason = "deployment d-1 reached CLEAN_UP: blue web:1 is stopped and cannot be rolled back to"
    #expect(effects.first == .requestRefused(reason: reason))
    #expect(sim.engine.status == before.status)
    #expect(sim.engine.weights == before.weights)
    #expect(sim.engine.stopRefusal == reason)
  }

  @Test func staleAndForeignHookResultsAreIgnored() {
    var engine = makeEngine(makeSpec(.BLUE_GREEN, hooks: [httpHook([.PRE_SCALE_UP])]))
    let effects = engine.start(now: startInstant)
    guard
      case .invokeHook(let invocation)? = effects.first(where: {
        if case .invokeHook = $0 { return true } else { return false }
      })
    else {
      Issue.record("no hook invoked")
      return
    }
    let wrongAttempt = HookResult(
      executionId: invocation.context.executionId, hookIndex: 0, attempt: 2, outcome: .failed(reason: "x"))
    let wrongId = HookResult(executionId: "other-PRE_SCALE_UP", hookIndex: 0, attempt: 1, outcome: .failed(reason: "x"))
    _ = engine.handle(.hookResult(wrongAttempt), now: startInstant + .seconds(1))
    _ = engine.handle(.hookResult(wrongId), now: startInstant + .seconds(1))
    #expect(engine.status == .IN_PROGRESS)
    _ = engine.handle(
      .hookResult(HookResult(answering: invocation, outcome: .succeeded)), now: startInstant + .seconds(1))
    #expect(engine.stage == .SCALE_UP)
  }

  @Test func alarmOutsideItsEvaluateDuringStagesIsIgnored() {
    let spec = makeSpec(
      .BLUE_GREEN, hooks: [httpHook([.PRE_SCALE_UP])],
      alarms: [
        AlarmSpec(
          name: "errors", metric: .http5xxRate, threshold: 0.05, window: .minutes(1), evaluateDuring: [.BAKE_TIME])
      ])
    let sim = Self.run(spec, .alarm(.PRE_SCALE_UP))
    #expect(sim.engine.status == .SUCCESSFUL)
    #expect(sim.engine.history.contains { $0.message.hasPrefix("ignored alarm errors") })
  }

  @Test func historyRecordsEveryStageWithItsTime() {
    let sim = Self.run(makeSpec(.CANARY, hooks: Self.hooks))
    let entered = sim.engine.history.filter { $0.message.hasPrefix("entered ") }
    #expect(entered.map(\.stage) == LifecycleStage.allCases.map { Optional($0) })
    #expect(entered.last?.at == startInstant + .seconds(424))
    #expect(sim.engine.history.last?.message == "deployment successful: web:2 serves all traffic; blue web:1 stopped")
  }
}
