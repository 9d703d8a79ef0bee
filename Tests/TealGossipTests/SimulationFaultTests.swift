import TealGossip
import TealGossipSim
import TealWire
import Testing

// Issue 13: the simulation's new faults, and the liveness invariant, in CI.

@Suite struct SimulationFaultTests {
  @Test func anOutboundOutageShorterThanAReconnectIsNoDeath() async throws {
    // Before the suspicion floor, 40 of 40 seeds declared the member dead.
    for seed in SimulationSeeds.seeds(ciDefault: 20) {
      let result = try await offCooperativePool {
        try GossipExperiments.outboundOutage(memberCount: 5, duration: .milliseconds(1500), seed: seed)
      }
      let replay = SimulationSeeds.replay(seed, "anOutboundOutageShorterThanAReconnectIsNoDeath")
      #expect(result.falseDeaths == 0, replay)
      #expect(result.convergedAfter, replay)
      #expect(result.invariantViolations.isEmpty, replay)
    }
  }

  @Test(arguments: [3, 5])
  func afterAStormOfFaultsAndForgeriesEveryLiveMemberIsAliveEverywhere(members: Int) async throws {
    var slowest: Duration = .zero
    for seed in SimulationSeeds.seeds(ciDefault: members == 3 ? 120 : 80) {
      let result = try await offCooperativePool {
        try GossipExperiments.faultStorm(memberCount: members, seed: seed, duration: .seconds(6))
      }
      let replay = SimulationSeeds.replay(seed, "afterAStormOfFaultsAndForgeriesEveryLiveMemberIsAliveEverywhere")
      let converged = try #require(result.convergedAfterFaults, replay)
      slowest = max(slowest, converged)
      #expect(result.invariantViolations.isEmpty, replay)
      #expect(result.forgedRecords > 0, replay)
    }
    print(
      "fault storm, \(members) members: slowest convergence after the faults \(DurationSummary.milliseconds(slowest)) ms"
    )
  }

  @Test func aOneWayLinkMakesNoFalseDeath() async throws {
    for seed in SimulationSeeds.seeds(ciDefault: 2) {
      let outcome = try await offCooperativePool {
        try GossipExperiments.falsePositives(
          memberCount: 3, settings: SWIMSettings(), lossRate: 0, duration: .seconds(60), seed: seed, oneWayLink: true)
      }
      #expect(outcome.falsePositives.isEmpty, SimulationSeeds.replay(seed, "aOneWayLinkMakesNoFalseDeath"))
    }
  }

  @Test func aPausedMemberCatchesUpAndLateTimersAloneCauseNoDeath() throws {
    var sim = try GossipSimulation(memberCount: 5, seed: 3)
    let joined = sim.runUntilConverged(timeout: .seconds(20))
    #expect(joined)
    sim.lateTimerProbability = 0.2
    sim.maximumTimerLateness = .milliseconds(150)
    sim.pause(GossipSimulation.nodeID(3), for: .milliseconds(800))
    sim.stall(from: GossipSimulation.nodeID(4), to: GossipSimulation.nodeID(5), for: .seconds(1))
    sim.run(for: .seconds(60))
    #expect(sim.falsePositives.isEmpty)
    sim.endFaults()
    let recovered = sim.runUntilConverged(timeout: .seconds(10))
    #expect(recovered)
    #expect(sim.invariantViolations.isEmpty)
  }
}
