import Foundation
import TealDeploy
import TealWire
import Testing

/// Invariants checked on every state of many simulated deployments: faults at every stage, blue
/// in every condition, crashes, every example.
@Suite("Invariants over every state")
struct InvariantTests {
  static func scenarios() -> [SimulationScenario] {
    var all: [SimulationScenario] = [SimulationScenario()]
    let faults: [SimulationScenario.Fault] = [.failHook, .alarm, .rollback, .stop]
    for stage in LifecycleStage.allCases where stage < .CLEAN_UP {
      for (index, fault) in faults.enumerated() {
        var scenario = SimulationScenario()
        scenario.faults = [stage: fault]
        scenario.blueCondition = [.healthy, .belowCount, .dead][index % 3]
        if index % 2 == 0 { scenario.killLeaderAt = [stage] }
        all.append(scenario)
      }
    }
    var crashing = SimulationScenario()
    crashing.crashAfterInputs = Set(stride(from: 3, to: 400, by: 11))
    all.append(crashing)
    var sickGreen = SimulationScenario()
    sickGreen.greenNeverHealthy = true
    all.append(sickGreen)
    return all
  }

  @Test(arguments: exampleFiles) func everyStateKeepsTheInvariants(_ file: String) throws {
    var (green, blue) = try example(file)
    // Hooks at every hookable stage, so that faults strike everywhere.
    var spec = green.spec
    spec.deployment.lifecycleHooks.append(
      LifecycleHookConfiguration(
        stages: LifecycleStage.allCases.filter(\.isHookable),
        action: .http(url: "http://127.0.0.1:9/h", timeout: .seconds(5))))
    spec.deployment.alarms = [
      AlarmConfiguration(
        name: "all", metric: .http5xxRate, threshold: 0.5, window: .minutes(1),
        evaluateDuring: LifecycleStage.allCases.filter { $0 < .CLEAN_UP })
    ]
    green = Revision(id: green.id, spec: spec)
    for (index, scenario) in Self.scenarios().enumerated() {
      let result = SimulatedWorld.run(green: green, blue: blue, scenario: scenario)
      #expect(result.deployment.status.isTerminal, "\(file) scenario \(index): \(result.deployment.status)")
      check(replay(result.log), green: green.id, blue: blue, label: "\(file) scenario \(index)")
    }
  }

  func check(_ states: [Deployment], green: RevisionID, blue: BlueRevision, label: String) {
    for (previous, state) in zip(states, states.dropFirst()) {
      // The stage only moves forward; a terminal status is final.
      if let before = previous.stage { #expect(state.stage.map { $0 >= before } == true, "\(label)") }
      if previous.status.isTerminal { #expect(state.status == previous.status, "\(label)") }
      #expect(state.clock >= previous.clock, "\(label): time ran backwards")
      // Routes change only with a new generation.
      if state.desired.routes.weights != previous.desired.routes.weights {
        #expect(state.desired.routes.generation > previous.desired.routes.generation, "\(label)")
      }
      for target in state.desired.taskSets {
        let before = previous.desired.taskSet(target.revision)?.phase
        switch (before, target.phase) {
        case (.serving?, .stopped), (nil, .stopped), (nil, .draining):
          Issue.record("\(label): \(target.revision) went \(String(describing: before)) -> \(target.phase)")
        case (.draining?, .stopped):
          // Stopped only once every live node drained it (the report that completes the drain
          // and the stop are in the same state).
          #expect(state.isConverged(.drained(target.revision)), "\(label): stopped before drained")
        case (.stopped?, .serving), (.stopped?, .draining), (.draining?, .serving):
          Issue.record("\(label): \(target.revision) came back from \(String(describing: before))")
        default:
          break
        }
        if target.revision == blue.revision, target.phase != .serving {
          #expect(state.stage == .CLEAN_UP && state.rollback == nil, "\(label): blue drained outside CLEAN_UP")
        }
      }
      // A rollback moves traffic to blue only once blue is healthy at its own count.
      if state.rollback != nil, state.desired.routes.weights == .allBlue,
        state.desired.routes.generation > previous.desired.routes.generation
      {
        #expect(state.healthyCount(blue.revision) >= blue.desiredCount, "\(label): traffic to an unhealthy blue")
      }
      // The first call of a hook comes only after every live node applied the current routes.
      if let call = state.pendingHookCall, call.context.attempt == 1, previous.pendingHookCall == nil {
        #expect(state.isConverged(.routes(generation: state.desired.routes.generation)), "\(label)")
      }
      if state.status == .SUCCESSFUL && previous.status != .SUCCESSFUL {
        #expect(state.isConverged(.stopped(blue.revision)), "\(label): successful before blue stopped")
      }
      if state.status == .ROLLBACK_SUCCESSFUL && previous.status != .ROLLBACK_SUCCESSFUL {
        #expect(state.healthyCount(blue.revision) >= blue.desiredCount, "\(label): rollback successful without blue")
      }
    }
  }
}
