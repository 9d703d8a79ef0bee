import Foundation
import TealDeploy
import TealWire
import Testing

@Suite("Rollback in the safe order")
struct RollbackTests {
  static let stagesBeforeCleanUp = LifecycleStage.allCases.filter { $0 < .CLEAN_UP }
  static let conditions: [SimulationScenario.BlueCondition] = [.healthy, .belowCount, .dead]

  struct Case: CustomTestStringConvertible, Sendable {
    var stage: LifecycleStage
    var blue: SimulationScenario.BlueCondition
    var testDescription: String { "\(stage.rawValue) blue \(blue)" }
  }

  static let table: [Case] = stagesBeforeCleanUp.flatMap { stage in conditions.map { Case(stage: stage, blue: $0) } }

  @Test(arguments: table) func rollbackRestoresBlueThenShiftsThenDrainsThenStopsGreen(_ row: Case) throws {
    // The canary example with a hook at every hookable stage, so the deployment dwells in each.
    var spec = try example("web-canary.yaml").green.spec
    spec.deployment.lifecycleHooks = [
      LifecycleHookConfiguration(
        stages: LifecycleStage.allCases.filter(\.isHookable),
        action: .http(url: "http://127.0.0.1:9/h", timeout: .seconds(5)))
    ]
    let (green, blue) = revisions(spec)
    var scenario = SimulationScenario()
    scenario.activeRevisions = [blue.revision, RevisionID(service: "web", number: 0)]
    scenario.faults = [row.stage: .rollback]
    scenario.blueCondition = row.blue
    let result = SimulatedWorld.run(green: green, blue: blue, scenario: scenario)
    let final = result.deployment
    let states = replay(result.log)
    let requested = try #require(
      states.firstIndex { $0.status == .ROLLBACK_REQUESTED }, "no visible ROLLBACK_REQUESTED")
    let rolling = try #require(states.firstIndex { $0.status == .ROLLBACK_IN_PROGRESS })
    #expect(requested < rolling)
    #expect(states[rolling].stage == row.stage, "a rollback changes the status, not the stage")
    let routesAtRollback = states[requested].desired.routes
    let allBlue = states.indices.first {
      $0 >= rolling && states[$0].desired.routes.generation > routesAtRollback.generation
    }
    let greenDraining = states.firstIndex { $0.desired.taskSet(green.id)?.phase == .draining }
    let greenStopped = states.firstIndex { $0.desired.taskSet(green.id)?.phase == .stopped }
    switch row.blue {
    case .healthy, .belowCount:
      #expect(final.status == .ROLLBACK_SUCCESSFUL, "\(final.reason ?? "")")
      let shift = try #require(allBlue)
      // Traffic goes to blue only once blue has its own count healthy.
      #expect(states[shift].healthyCount(blue.revision) >= blue.desiredCount)
      #expect(states[shift].desired.routes.weights == .allBlue)
      #expect(states[requested..<shift].allSatisfy { $0.desired.routes == routesAtRollback })
      if states[rolling].desired.taskSet(green.id) != nil {
        let drain = try #require(greenDraining)
        let stop = try #require(greenStopped)
        #expect(shift <= drain && drain < stop)
        // Green stops only after every live node drained it, and after abortScaleDownDelay.
        #expect(states[stop - 1].isConverged(.drained(green.id)))
        let drainedAt = try #require(states.first { $0.isConverged(.drained(green.id)) }?.clock)
        #expect(states[stop].clock - drainedAt >= green.spec.deployment.abortScaleDownDelay)
        #expect(result.world.allSatisfy { $0.running(green.id) == 0 })
      }
      #expect(final.healthyCount(blue.revision) >= blue.desiredCount)
      #expect(result.worldMatchesDesiredState)
    case .dead:
      #expect(final.status == .ROLLBACK_FAILED)
      #expect(final.reason?.contains("healthy tasks") == true, "\(final.reason ?? "")")
      #expect(allBlue == nil, "traffic must not move to a dead blue")
      #expect(final.desired.routes == routesAtRollback)
      #expect(greenStopped == nil, "green must keep serving when blue is dead")
      let failedAt = try #require(states.first { $0.status == .ROLLBACK_FAILED }?.clock)
      #expect(failedAt - states[rolling].clock == green.spec.deployment.rollbackTimeout)
    }
    if row.blue == .belowCount {
      #expect(final.history.contains { $0.message.hasPrefix("blue web:1: 4/4 tasks healthy") })
    }
  }

  @Test func blueCountIsBluesOwnNotGreens() throws {
    let spec = makeSpec(DeploymentConfiguration(strategy: .BLUE_GREEN, bakeTime: .minutes(5)), desiredCount: 6)
    let green = Revision(id: RevisionID(service: "web", number: 2), spec: spec)
    let blue = BlueRevision(revision: RevisionID(service: "web", number: 1), desiredCount: 2)
    var scenario = SimulationScenario()
    scenario.faults = [.BAKE_TIME: .rollback]
    let result = SimulatedWorld.run(green: green, blue: blue, scenario: scenario)
    #expect(result.deployment.status == .ROLLBACK_SUCCESSFUL)
    #expect(result.deployment.desired.taskSet(blue.revision)?.count == 2)
  }

  @Test func stopMeansRollBackAndAStopDuringARollbackContinuesIt() {
    var driver = Driver(makeSpec(DeploymentConfiguration(strategy: .BLUE_GREEN, bakeTime: .minutes(5))))
    driver.run(until: .BAKE_TIME)
    #expect(driver.send(.stop(requestedBy: "alice")) == .accepted)
    #expect(driver.deployment.status == .STOP_REQUESTED)
    #expect(driver.deployment.nextWakeup == driver.now)
    driver.send(.wakeUp)
    #expect(driver.deployment.status == .ROLLBACK_IN_PROGRESS)
    #expect(driver.send(.stop(requestedBy: "bob")) == .accepted)
    #expect(driver.deployment.status == .ROLLBACK_IN_PROGRESS)
    #expect(driver.deployment.history.last?.message == "stop requested by bob: the rollback continues")
  }

  @Test func rollbackIsRefusedOnceBlueDrains() {
    var driver = Driver(makeSpec(DeploymentConfiguration(strategy: .BLUE_GREEN, bakeTime: .zero)))
    driver.run(until: .CLEAN_UP)
    #expect(driver.deployment.stage == .CLEAN_UP)
    guard case .refused(let reason) = driver.send(.rollback(requestedBy: "alice")) else {
      Issue.record("rollback accepted in CLEAN_UP")
      return
    }
    #expect(reason.contains("cannot be rolled back to"))
  }
}
