import Foundation
import Testing

@testable import TealDeploy

/// At every step of every table scenario: the leader dies (state through JSON, timers and in-flight
/// hook answers lost), the clock moves 0 to 10 s, a new leader resumes. The deployment must reach
/// the same outcome with the same bake and shift times, give or take the clock move.
@Suite struct ResumeTests {
  struct Scenario: CustomTestStringConvertible, Sendable {
    var strategy: DeploymentStrategy
    var injection: Injection?
    var testDescription: String { "\(strategy) \(injection.map { "\($0)" } ?? "happy path")" }
  }

  static let scenarios: [Scenario] = DeploymentStrategy.allCases.flatMap { strategy in
    [
      Scenario(strategy: strategy, injection: nil),
      Scenario(strategy: strategy, injection: .hookInProgressTwice(.POST_TEST_TRAFFIC_SHIFT)),
      Scenario(strategy: strategy, injection: .hookFails(.POST_PRODUCTION_TRAFFIC_SHIFT)),
      Scenario(strategy: strategy, injection: .hookTimesOut(.POST_TEST_TRAFFIC_SHIFT)),
      Scenario(strategy: strategy, injection: .alarm(.BAKE_TIME)),
      Scenario(strategy: strategy, injection: .stopWithRollback(.PRODUCTION_TRAFFIC_SHIFT)),
      Scenario(strategy: strategy, injection: .greenTasksFail),
      Scenario(strategy: strategy, injection: .greenNeverHealthy),
      Scenario(strategy: strategy, injection: .blueUnhealthyThenHookFails(.POST_TEST_TRAFFIC_SHIFT)),
    ]
  }

  static func spec(_ strategy: DeploymentStrategy) -> ServiceSpec {
    makeSpec(
      strategy, hooks: [httpHook([.PRE_SCALE_UP, .POST_TEST_TRAFFIC_SHIFT, .POST_PRODUCTION_TRAFFIC_SHIFT])],
      alarms: [
        AlarmSpec(
          name: "errors", metric: .http5xxRate, threshold: 0.05, window: .minutes(1), evaluateDuring: [.BAKE_TIME])
      ])
  }

  struct Outcome: Equatable {
    var status: DeploymentStatus
    var stage: LifecycleStage?
    var weights: TrafficWeights
    var blueStopped: Bool
    var greenStopped: Bool
  }

  static func outcome(_ sim: Simulation) -> Outcome {
    Outcome(
      status: sim.engine.status, stage: sim.engine.stage, weights: sim.engine.weights,
      blueStopped: sim.effects.contains(.stopTaskSet(revision: blueID)),
      greenStopped: sim.effects.contains(.stopTaskSet(revision: sim.engine.green)))
  }

  @Test(arguments: scenarios) func resumeAtEveryStepReachesTheSameOutcomeAndBakeTime(_ scenario: Scenario) throws {
    var reference = Simulation(engine: makeEngine(Self.spec(scenario.strategy)), injection: scenario.injection)
    reference.start()
    reference.run()
    let expected = Self.outcome(reference)
    #expect(expected.status.isTerminal)
    let totalSteps = reference.steps
    var random = SeededGenerator(seed: 0x7ea1 &+ UInt64(totalSteps))
    for crashStep in 0...totalSteps {
      let clockMove = TimeSpan.milliseconds(Int64.random(in: 0...10_000, using: &random))
      var sim = Simulation(engine: makeEngine(Self.spec(scenario.strategy)), injection: scenario.injection)
      sim.start()
      while sim.steps < crashStep, sim.step() {}
      try sim.crashAndResume(clockMove: clockMove)
      sim.run()
      let context = "crash after step \(crashStep), clock +\(clockMove)"
      #expect(Self.outcome(sim) == expected, "\(context)")
      if let referenceBake = reference.bakeTime {
        let bake = try #require(sim.bakeTime, "\(context)")
        #expect(
          bake >= referenceBake && bake <= referenceBake + clockMove, "\(context): bake \(bake) vs \(referenceBake)")
      }
      if expected.status == .SUCCESSFUL {
        #expect(
          sim.shiftTime >= reference.shiftTime && sim.shiftTime <= reference.shiftTime + clockMove,
          "\(context): shift \(sim.shiftTime) vs \(reference.shiftTime)")
      }
    }
  }

  @Test func resumeReinvokesAnUnansweredHookWithTheSameExecutionIdAndTheNextAttempt() throws {
    var engine = makeEngine(makeSpec(.BLUE_GREEN, hooks: [httpHook([.PRE_SCALE_UP])]))
    let first = engine.start(now: startInstant)
    let invocations = first.compactMap { effect -> HookInvocation? in
      if case .invokeHook(let invocation) = effect { return invocation }
      return nil
    }
    let original = try #require(invocations.first)
    let decoded = try JSONDecoder().decode(DeploymentEngine.self, from: JSONEncoder().encode(engine))
    var resumed = decoded
    let effects = resumed.resume(now: startInstant + .seconds(4))
    let again = try #require(
      effects.compactMap { effect -> HookInvocation? in
        if case .invokeHook(let invocation) = effect { return invocation }
        return nil
      }.first)
    #expect(again.context.executionId == original.context.executionId)
    #expect(again.context.attempt == original.context.attempt + 1)
    // The old attempt's late answer is ignored; the new one counts.
    _ = resumed.handle(
      .hookResult(HookResult(answering: original, outcome: .failed(reason: "late"))), now: startInstant + .seconds(5))
    #expect(resumed.status == .IN_PROGRESS)
    _ = resumed.handle(.hookResult(HookResult(answering: again, outcome: .succeeded)), now: startInstant + .seconds(5))
    #expect(resumed.stage == .SCALE_UP)
  }

  @Test func resumeDuringBakeKeepsTheAbsoluteDeadline() throws {
    var sim = Simulation(engine: makeEngine(makeSpec(.BLUE_GREEN)))
    sim.start()
    while sim.engine.stage != .BAKE_TIME, sim.step() {}
    let deadline = try #require(sim.engine.bakeDeadline)
    var engine = try JSONDecoder().decode(DeploymentEngine.self, from: JSONEncoder().encode(sim.engine))
    let effects = engine.resume(now: sim.now + .seconds(7))
    #expect(effects.contains(.scheduleWakeUp(at: deadline)))
    #expect(engine.bakeDeadline == deadline)
    _ = engine.handle(.wakeUp, now: deadline + .milliseconds(-1))
    #expect(engine.stage == .BAKE_TIME)
    _ = engine.handle(.wakeUp, now: deadline)
    #expect(engine.status == .SUCCESSFUL)
  }
}
