import Foundation
import TealDeploy
import TealWire
import Testing

/// The outcome of a run that must not depend on when the leader crashed.
struct Outcome: Equatable, CustomStringConvertible {
  var status: DeploymentStatus
  var stages: [LifecycleStage]
  var executionIds: [String]
  var worldConverged: Bool

  init(_ result: SimulationResult) {
    status = result.deployment.status
    stages = result.deployment.stageTimeline.map(\.stage)
    var seen: [String] = []
    for call in result.hookCalls where !seen.contains(call.executionId) { seen.append(call.executionId) }
    executionIds = seen
    worldConverged = result.worldMatchesDesiredState
  }

  var description: String { "\(status) \(stages.map(\.rawValue)) hooks \(executionIds) converged \(worldConverged)" }
}

@Suite("Crash at every effect boundary; log replay")
struct CrashAndReplayTests {
  static let cases: [(String, [LifecycleStage: SimulationScenario.Fault])] = [
    ("web-blue-green.yaml", [:]), ("web-canary.yaml", [:]), ("web-linear.yaml", [:]),
    ("web-blue-green.yaml", [.POST_TEST_TRAFFIC_SHIFT: .failHook]),
    ("web-canary.yaml", [.BAKE_TIME: .alarm]),
  ]

  @Test(arguments: 0..<cases.count) func aCrashAfterAnyInputConvergesToTheSameOutcome(_ index: Int) throws {
    let (file, faults) = Self.cases[index]
    let (green, blue) = try example(file)
    var scenario = SimulationScenario()
    scenario.faults = faults
    let baseline = SimulatedWorld.run(green: green, blue: blue, scenario: scenario)
    let expected = Outcome(baseline)
    #expect(expected.worldConverged)
    let bake = green.spec.deployment.bakeTime
    // Crash after every input of the baseline's log (the log of a crashed run is longer; every
    // boundary of the baseline is a boundary of the crashed run up to the crash).
    for crashAt in 0..<baseline.log.count {
      var crashed = scenario
      crashed.crashAfterInputs = [crashAt]
      let result = SimulatedWorld.run(green: green, blue: blue, scenario: crashed)
      let outcome = Outcome(result)
      #expect(outcome == expected, "\(file) crash after input \(crashAt): \(outcome)")
      #expect(result.crashes.count == 1)
      if expected.status == .SUCCESSFUL, let baked = entered(result.deployment, .BAKE_TIME),
        let cleaned = entered(result.deployment, .CLEAN_UP)
      {
        let measured = cleaned - baked
        #expect(measured >= bake && measured <= bake + crashed.outage, "bake \(measured) after crash \(crashAt)")
      }
    }
  }

  @Test func theCrashTestDetectsALostReport() throws {
    // Negative control: if nodes did not report again to a new leader, the reports in flight at
    // the crash would be lost, and the comparison above must see it.
    let (green, blue) = try example("web-canary.yaml")
    let baseline = SimulatedWorld.run(green: green, blue: blue, scenario: SimulationScenario())
    var lossy = SimulationScenario()
    lossy.nodesReportAgainAfterCrash = false
    var detected = 0
    for crashAt in 0..<baseline.log.count {
      lossy.crashAfterInputs = [crashAt]
      if Outcome(SimulatedWorld.run(green: green, blue: blue, scenario: lossy)) != Outcome(baseline) { detected += 1 }
    }
    #expect(detected > 0, "no crash point lost a report: the crash test could not detect a lost effect")
  }

  @Test func repeatedCrashesAtEveryStageStillSucceed() throws {
    let (green, blue) = try example("web-canary.yaml")
    var scenario = SimulationScenario()
    scenario.killLeaderAt = Set(LifecycleStage.allCases)
    let result = SimulatedWorld.run(green: green, blue: blue, scenario: scenario)
    #expect(result.deployment.status == .SUCCESSFUL)
    #expect(result.crashes.count >= 5, "a crash at every stage the deployment dwells in")
    #expect(result.worldMatchesDesiredState)
  }

  @Test(arguments: exampleFiles) func aFollowerReplayingTheLogReachesByteIdenticalState(_ file: String) throws {
    let (green, blue) = try example(file)
    var scenario = SimulationScenario()
    scenario.crashAfterInputs = [5, 40]
    let result = SimulatedWorld.run(green: green, blue: blue, scenario: scenario)
    let leader = result.deployment.canonicalEncoding()
    let follower = try #require(replay(result.log).last)
    #expect(follower.canonicalEncoding() == leader)
    // Through a JSON round trip of the log (as Raft carries it) and of the state, half way.
    let encodedLog = try JSONEncoder().encode(result.log)
    let decodedLog = try JSONDecoder().decode([DeploymentInput].self, from: encodedLog)
    var service = ServiceDeployments(service: "web")
    for (index, input) in decodedLog.enumerated() {
      service.apply(input)
      if index == decodedLog.count / 2 {
        let snapshot = try JSONEncoder().encode(service)
        service = try JSONDecoder().decode(ServiceDeployments.self, from: snapshot)
      }
    }
    #expect(service.current?.canonicalEncoding() == leader)
    // Canonical: the encoding holds no dictionary, so two encodings of equal states are equal bytes.
    #expect(service.current == result.deployment)
  }
}
