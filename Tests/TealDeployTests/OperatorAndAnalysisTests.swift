import Foundation
import TealDeploy
import TealWire
import Testing

@Suite("Operator controls and analysis")
struct OperatorAndAnalysisTests {
  static func canary(bake: TimeSpan = .minutes(10)) -> ServiceSpec {
    makeSpec(
      DeploymentConfiguration(
        strategy: .CANARY, bakeTime: bake, canary: CanaryConfiguration(canaryPercent: 10, canaryBakeTime: .minutes(5))))
  }

  @Test func pauseHoldsTheStepWaitAndContinueExtendsItByThePause() throws {
    var driver = Driver(Self.canary())
    driver.run(until: .PRODUCTION_TRAFFIC_SHIFT)
    driver.reportRoutes()
    guard case .waiting(let until) = driver.deployment.gate else {
      Issue.record("not holding the canary step")
      return
    }
    driver.send(.pause(requestedBy: "alice"))
    driver.wait(.minutes(20))
    #expect(driver.deployment.productionStep == 0, "paused: the step does not move")
    driver.send(.continue(requestedBy: "alice"))
    #expect(driver.deployment.gate == .waiting(until: until + .minutes(20)))
  }

  @Test func promoteSkipsTheRemainingStepsAndBake() {
    var driver = Driver(Self.canary(bake: .hours(10)))
    driver.run(until: .PRODUCTION_TRAFFIC_SHIFT)
    driver.reportRoutes()
    #expect(driver.send(.promote(requestedBy: "alice")) == .accepted)
    #expect(driver.deployment.desired.routes.weights == TrafficWeights(production: .allGreen, test: .allGreen))
    driver.reportRoutes()
    #expect(driver.deployment.stage == .CLEAN_UP)
    driver.step()
    driver.step()
    #expect(driver.deployment.status == .SUCCESSFUL)
    #expect(entered(driver.deployment, .BAKE_TIME) == nil)
  }

  @Test func promoteIsRefusedBeforeGreenIsHealthy() {
    var driver = Driver(Self.canary())
    guard case .refused = driver.send(.promote(requestedBy: "alice")) else {
      Issue.record("promote accepted during SCALE_UP")
      return
    }
  }

  @Test func theProgressDeadlineRollsBack() {
    var spec = Self.canary(bake: .hours(2))
    spec.deployment.progressDeadline = .hours(1)
    var driver = Driver(spec)
    driver.run(until: .BAKE_TIME)
    #expect(driver.deployment.nextWakeup == t0 + .hours(1))
    driver.wait(.hours(1))
    #expect(driver.deployment.status == .ROLLBACK_IN_PROGRESS)
    #expect(driver.deployment.reason?.hasPrefix("progressDeadline") == true)
  }

  @Test func customStepsShiftByTheListWithAWaitEach() throws {
    let spec = makeSpec(
      DeploymentConfiguration(
        strategy: .STEPS, bakeTime: .zero,
        steps: StepsConfiguration(percents: [5, 25, 50, 100], stepBakeTime: .minutes(2))))
    let (green, blue) = revisions(spec)
    let result = SimulatedWorld.run(green: green, blue: blue, scenario: SimulationScenario())
    #expect(result.deployment.status == .SUCCESSFUL)
    let weights = replay(result.log).map(\.desired.routes.weights.production.greenBasisPoints)
    var distinct: [Int] = []
    for weight in weights where distinct.last != weight { distinct.append(weight) }
    #expect(distinct == [0, 500, 2500, 5000, 10_000])
    let shift = try #require(entered(result.deployment, .PRODUCTION_TRAFFIC_SHIFT))
    let after = try #require(entered(result.deployment, .POST_PRODUCTION_TRAFFIC_SHIFT))
    #expect(after - shift >= .minutes(6))
  }

  // MARK: Analysis

  @Test func alarmsNeedNOfMDatapointsWithEnoughRequests() {
    let alarm = AlarmConfiguration(
      name: "errors", metric: .http5xxRate, threshold: 0.1, window: .minutes(3),
      evaluateDuring: [.BAKE_TIME], minimumRequests: 10, evaluationPeriods: 3, datapointsToAlarm: 2)
    let now = Instant(millisecondsSinceEpoch: 600_000)
    func sample(_ minutesAgo: Int64, requests: Int, errors: Int) -> MetricSample {
      MetricSample(
        at: Instant(millisecondsSinceEpoch: now.millisecondsSinceEpoch - minutesAgo * 60_000 - 1000),
        requestCount: requests, http5xxCount: errors, latencyP99Milliseconds: 1)
    }
    let one = AlarmEvaluator(alarms: [alarm], samples: [sample(0, requests: 100, errors: 50)])
    #expect(one.breaches(stage: .BAKE_TIME, now: now).isEmpty, "1 of 3 datapoints")
    let few = AlarmEvaluator(
      alarms: [alarm], samples: [sample(0, requests: 5, errors: 5), sample(1, requests: 5, errors: 5)])
    #expect(few.breaches(stage: .BAKE_TIME, now: now).isEmpty, "below minimumRequests")
    let two = AlarmEvaluator(
      alarms: [alarm], samples: [sample(0, requests: 100, errors: 50), sample(2, requests: 100, errors: 20)])
    #expect(two.breaches(stage: .BAKE_TIME, now: now).map(\.alarm) == ["errors"])
    #expect(two.breaches(stage: .PRODUCTION_TRAFFIC_SHIFT, now: now).isEmpty)
  }

  @Test func anAlarmWithRollbackFalseIsOnlyRecorded() {
    var spec = Self.canary()
    spec.deployment.alarms = [
      AlarmConfiguration(
        name: "watch", metric: .latencyP99, threshold: 100, window: .minutes(1), evaluateDuring: [.BAKE_TIME],
        rollback: false)
    ]
    var driver = Driver(spec)
    driver.run(until: .BAKE_TIME)
    driver.send(
      .metricSample(MetricSample(at: driver.now, requestCount: 10, http5xxCount: 0, latencyP99Milliseconds: 900)))
    #expect(driver.deployment.status == .IN_PROGRESS)
    #expect(driver.deployment.history.contains { $0.message.hasPrefix("alarm watch:") })
    #expect(driver.deployment.samples.count == 1, "the window is in the replicated state")
  }

  @Test func theCircuitBreakerTripsWhenGreenNeverBecomesHealthy() throws {
    let (green, blue) = try example("web-blue-green.yaml")
    var scenario = SimulationScenario()
    scenario.greenNeverHealthy = true
    let result = SimulatedWorld.run(green: green, blue: blue, scenario: scenario)
    #expect(result.deployment.status == .ROLLBACK_SUCCESSFUL)
    #expect(result.deployment.reason?.hasPrefix("circuit breaker: green web:2 has 0/3 healthy tasks") == true)
  }

  @Test func greenTaskFailuresTripTheBreaker() {
    var driver = Driver(Self.canary())
    for index in 0..<3 {
      driver.send(.taskFailed(node: nodeNames[index], revision: driver.green, reason: "exit 1"))
    }
    #expect(driver.deployment.status == .ROLLBACK_IN_PROGRESS)
  }
}

@Suite("Retry")
struct RetryTests {
  @Test func aRolledBackDeploymentCanBeRetriedAsANewDeployment() throws {
    var driver = Driver(makeSpec(DeploymentConfiguration(strategy: .BLUE_GREEN, bakeTime: .minutes(5))))
    driver.run(until: .BAKE_TIME)
    #expect(
      driver.send(.retry(of: "d-1", requestedBy: "alice"), id: "d-2")
        == .refused(reason: "deployment d-1 is IN_PROGRESS; only a rolled-back or stopped one can be retried"))
    driver.send(.rollback(requestedBy: "alice"))
    for _ in 0..<20 where driver.deployment.isActive { driver.step() }
    #expect(driver.deployment.status == .ROLLBACK_SUCCESSFUL)
    let generation = driver.deployment.desired.routes.generation
    #expect(driver.send(.retry(of: "d-1", requestedBy: "alice"), id: "d-2") == .accepted)
    #expect(driver.service.startable == "d-2")
    driver.send(.start, id: "d-2")
    let retried = try #require(driver.service.deployment("d-2"))
    #expect(retried.status == .IN_PROGRESS)
    #expect(retried.desired.routes.generation == generation)
    #expect(retried.desired.taskSet(retried.green)?.phase == .serving)
  }
}
