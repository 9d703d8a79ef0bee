import TealGossip
import TealGossipSim
import TealWire
import Testing

// Issue 13, defect 3: a restarted node refutes its old metadata. Failed before its fix.

@Suite struct StaleMetadataTests {
  @Test func anAliveRecordOfThisNodeWithOtherMetadataAtItsIncarnationIsRefuted() throws {
    var core = try Fixture.core(size: 3)
    var old = Fixture.member(1)
    old.metadata.version = "0.9.0"
    let out = core.receive(.gossip(updates: [MemberUpdate(member: old)]), from: Fixture.id(2), now: .zero)
    #expect(core.myself.incarnation == 1)
    #expect(core.myself.metadata == Fixture.metadata(1))
    #expect(
      Fixture.sends(out).contains {
        $0.to == Fixture.id(2)
          && $0.message.updates.contains { $0.member.id == Fixture.id(1) && $0.member.incarnation == 1 }
      })
    // The same record with the same metadata is no news.
    _ = core.receive(.gossip(updates: [Fixture.update(1, .alive, incarnation: 1)]), from: Fixture.id(2), now: .zero)
    #expect(core.myself.incarnation == 1)
  }

  @Test(arguments: SimulationSeeds.seeds(ciDefault: 6))
  func aNodeRestartedBeforeAnyoneSuspectsItEndsWithItsNewMetadataEverywhere(seed: UInt64) throws {
    var sim = try GossipSimulation(memberCount: 5, seed: seed)
    let converged1 = sim.runUntilConverged(timeout: .seconds(20))
    #expect(converged1)
    let victim = GossipSimulation.nodeID(5)
    sim.crash(victim)
    sim.run(for: .milliseconds(150))
    var metadata = GossipSimulation.metadata(for: 5)
    metadata.version = "2.0.0"
    try sim.restart(victim, metadata: metadata)
    let converged2 = sim.runUntilConverged(timeout: .seconds(20))
    #expect(converged2, "seed \(seed): stale metadata remained")
    for observer in sim.liveNodes where observer != victim {
      #expect(sim.core(observer)?.member(victim)?.metadata.version == "2.0.0")
    }
  }
}
