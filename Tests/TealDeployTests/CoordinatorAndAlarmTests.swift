import Testing

@testable import TealDeploy

@Suite struct ServiceDeploymentsTests {
  @Test func secondDeploymentIsRefusedWhileOneIsInProgress() throws {
    var service = ServiceDeployments(service: "web")
    _ = try service.submit(
      makeEngine(makeSpec(.BLUE_GREEN, hooks: [httpHook([.PRE_SCALE_UP])]), id: "d-1"), supersede: false,
      now: startInstant)
    #expect(service.current?.status == .IN_PROGRESS)
    #expect(throws: DeploymentRefusal.self) {
      try service.submit(makeEngine(makeSpec(.BLUE_GREEN), id: "d-2"), supersede: false, now: startInstant)
    }
    do {
      _ = try service.submit(makeEngine(makeSpec(.BLUE_GREEN), id: "d-2"), supersede: false, now: startInstant)
    } catch {
      #expect(
        error.description
          == "service web has deployment d-1 in progress (IN_PROGRESS at PRE_SCALE_UP); wait for it, stop it, or deploy with --supersede"
      )
    }
    #expect(service.current?.deploymentId == "d-1")
  }

  @Test func supersedeRollsTheCurrentDeploymentBackThenStartsTheNewOne() throws {
    var service = ServiceDeployments(service: "web")
    _ = try service.submit(
      makeEngine(makeSpec(.BLUE_GREEN, hooks: [httpHook([.PRE_SCALE_UP])]), id: "d-1"), supersede: false,
      now: startInstant)
    let effects = try service.submit(
      makeEngine(makeSpec(.CANARY), id: "d-2"), supersede: true, now: startInstant + .seconds(1))
    #expect(service.current?.deploymentId == "d-2")
    #expect(service.current?.status == .IN_PROGRESS)
    // The rollback of d-1 (weights to blue in one effect, green stopped) comes before d-2's first step.
    let rollback = try #require(effects.firstIndex(of: .setWeights(.allBlue)))
    let stopGreen = try #require(effects.firstIndex(of: .stopTaskSet(revision: RevisionID(service: "web", number: 2))))
    let scaleUp = try #require(
      effects.firstIndex(of: .scaleTaskSet(revision: RevisionID(service: "web", number: 2), count: 2)))
    #expect(rollback < scaleUp && stopGreen < scaleUp)
  }

  @Test func supersedeWaitsForARollbackThatNeedsBlueToRecover() throws {
    var service = ServiceDeployments(service: "web")
    _ = try service.submit(
      makeEngine(makeSpec(.BLUE_GREEN, hooks: [httpHook([.PRE_SCALE_UP])]), id: "d-1"), supersede: false,
      now: startInstant)
    _ = service.handle(.taskSetHealth(revision: blueID, healthy: 1), now: startInstant)
    _ = try service.submit(makeEngine(makeSpec(.BLUE_GREEN), id: "d-2"), supersede: true, now: startInstant)
    #expect(service.current?.deploymentId == "d-1")
    #expect(service.current?.status == .ROLLBACK_IN_PROGRESS)
    #expect(service.queued?.deploymentId == "d-2")
    _ = service.handle(.taskSetHealth(revision: blueID, healthy: 2), now: startInstant + .seconds(3))
    #expect(service.current?.deploymentId == "d-2")
    #expect(service.current?.status == .IN_PROGRESS)
    #expect(service.queued == nil)
  }

  @Test func aFinishedDeploymentDoesNotBlockTheNext() throws {
    var service = ServiceDeployments(service: "web")
    _ = try service.submit(makeEngine(makeSpec(.BLUE_GREEN), id: "d-1"), supersede: false, now: startInstant)
    _ = service.handle(.stopRequested(rollback: true, requestedBy: "bob"), now: startInstant)
    #expect(service.current?.status == .ROLLBACK_SUCCESSFUL)
    _ = try service.submit(makeEngine(makeSpec(.BLUE_GREEN), id: "d-2"), supersede: false, now: startInstant)
    #expect(service.current?.deploymentId == "d-2")
  }
}

@Suite struct AlarmEvaluatorTests {
  static let alarms = [
    AlarmSpec(name: "errors", metric: .http5xxRate, threshold: 0.05, window: .seconds(60)),
    AlarmSpec(name: "slow", metric: .latencyP99, threshold: 500, window: .seconds(30), evaluateDuring: [.BAKE_TIME]),
  ]

  func sample(_ second: Int64, requests: Int, errors: Int, p99: Double) -> MetricSample {
    MetricSample(
      at: startInstant + .seconds(second), requestCount: requests, http5xxCount: errors, latencyP99Milliseconds: p99)
  }

  @Test func fiveXXRateIsSummedOverTheWindowAndMustExceedTheThreshold() {
    var evaluator = AlarmEvaluator(alarms: Self.alarms)
    evaluator.record(sample(10, requests: 100, errors: 5, p99: 10))
    evaluator.record(sample(20, requests: 100, errors: 5, p99: 10))
    #expect(evaluator.breaches(stage: .BAKE_TIME, now: startInstant + .seconds(20)).isEmpty)  // exactly 5 %
    evaluator.record(sample(30, requests: 100, errors: 6, p99: 10))
    let breaches = evaluator.breaches(stage: .BAKE_TIME, now: startInstant + .seconds(30))
    #expect(breaches.map(\.alarm) == ["errors"])
    #expect(breaches.first?.event == .alarmFired(alarm: "errors", reason: breaches.first?.reason ?? ""))
    // 80 s later the bad samples are outside the 60 s window.
    evaluator.record(sample(110, requests: 100, errors: 0, p99: 10))
    #expect(evaluator.breaches(stage: .BAKE_TIME, now: startInstant + .seconds(110)).isEmpty)
  }

  @Test func latencyAlarmOnlyFiresDuringItsStages() {
    var evaluator = AlarmEvaluator(alarms: Self.alarms)
    evaluator.record(sample(10, requests: 10, errors: 0, p99: 900))
    #expect(evaluator.breaches(stage: .PRODUCTION_TRAFFIC_SHIFT, now: startInstant + .seconds(10)).isEmpty)
    #expect(evaluator.breaches(stage: .BAKE_TIME, now: startInstant + .seconds(10)).map(\.alarm) == ["slow"])
  }

  @Test func noTrafficIsNoBreach() {
    var evaluator = AlarmEvaluator(alarms: Self.alarms)
    evaluator.record(sample(10, requests: 0, errors: 0, p99: 0))
    #expect(evaluator.breaches(stage: .BAKE_TIME, now: startInstant + .seconds(10)).isEmpty)
  }

  @Test func oldSamplesAreDropped() {
    var evaluator = AlarmEvaluator(alarms: Self.alarms)
    for second in stride(from: Int64(0), to: 600, by: 10) {
      evaluator.record(sample(second, requests: 1, errors: 0, p99: 1))
    }
    #expect(evaluator.samples.count <= 6)
  }
}

@Suite struct StrategyTests {
  @Test func weightSequencesPerStrategy() {
    #expect(makeSpec(.BLUE_GREEN).deployment.productionWeightSteps == [.allGreen])
    #expect(makeSpec(.CANARY).deployment.productionWeightSteps.map(\.greenBasisPoints) == [1000, 10_000])
    var config = makeSpec(.LINEAR).deployment
    config.linear = LinearConfig(stepPercent: 30, stepBakeTime: .minutes(1))
    #expect(config.productionWeightSteps.map(\.greenBasisPoints) == [3000, 6000, 9000, 10_000])
    config.linear = LinearConfig(stepPercent: 100, stepBakeTime: .minutes(1))
    #expect(config.productionWeightSteps == [.allGreen])
    var canary = makeSpec(.CANARY).deployment
    canary.canary = CanaryConfig(canaryPercent: 0.1, canaryBakeTime: .seconds(1))
    #expect(canary.productionWeightSteps.map(\.greenBasisPoints) == [10, 10_000])
    #expect(canary.productionWeightSteps.first?.blueBasisPoints == 9990)
  }
}

@Suite struct EngineFunctionTests {
  @Test func stepIsThePureFunctionFormOfHandle() {
    var engine = makeEngine(makeSpec(.BLUE_GREEN))
    _ = engine.start(now: startInstant)
    let before = engine
    let (after, effects) = DeploymentEngine.step(
      before, .taskSetHealth(revision: engine.green, healthy: 2), now: startInstant)
    #expect(before == engine)
    var mutated = engine
    #expect(effects == mutated.handle(.taskSetHealth(revision: engine.green, healthy: 2), now: startInstant))
    #expect(after == mutated)
    #expect(after.stage == .BAKE_TIME)
  }
}
