import TealGossip
import TealGossipSim
import TealWire
import Testing

// Issue 13, defect 4: live nodes are never forgotten. Failed before its fix.

@Suite struct NeverForgetTests {
  @Test func aForgottenSeedIsStillOfferedPushPulls() throws {
    var settings = SWIMSettings()
    settings.deadMemberRetention = .seconds(1)
    var core = try SWIMCore(
      id: Fixture.id(1), metadata: Fixture.metadata(1), settings: settings, random: SplitMix64(seed: 3), now: .zero)
    _ = core.join(seeds: [Fixture.id(2)], now: .zero)
    _ = core.receive(
      .pushPull(isResponse: true, isJoin: true, members: [Fixture.update(2)]), from: Fixture.id(2), now: .zero)
    _ = core.confirmDead(Fixture.id(2), now: .zero)
    _ = Fixture.runTimers(&core, from: .zero, until: .seconds(2))
    #expect(core.member(Fixture.id(2)) == nil, "the tombstone expired")
    let out = Fixture.runTimers(&core, from: .seconds(2), until: .seconds(2) + settings.reconnectInterval * 2)
    #expect(
      Fixture.sends(out).contains {
        if case .pushPull(false, _, _) = $0.message { $0.to == Fixture.id(2) } else { false }
      })
  }

  @Test func aMemberThatLeftIsStillOfferedPushPullsWhenConfigured() throws {
    var core = try Fixture.core(size: 3)
    core.setConfiguredPeers([Fixture.id(2), Fixture.id(3)])
    var left = Fixture.member(2, .dead)
    left.leftGracefully = true
    _ = core.receive(.gossip(updates: [MemberUpdate(member: left)]), from: Fixture.id(2), now: .zero)
    let out = Fixture.runTimers(&core, from: .zero, until: core.settings.reconnectInterval * 3)
    #expect(
      Fixture.sends(out).contains {
        if case .pushPull(false, _, _) = $0.message { $0.to == Fixture.id(2) } else { false }
      })
  }

  @Test(arguments: SimulationSeeds.seeds(ciDefault: 2))
  func aPartitionLongerThanTheTombstoneRetentionStillMerges(seed: UInt64) throws {
    var settings = SWIMSettings()
    settings.deadMemberRetention = .seconds(5)
    var sim = try GossipSimulation(memberCount: 6, settings: settings, seed: seed)
    let converged1 = sim.runUntilConverged(timeout: .seconds(20))
    #expect(converged1)
    let ids = sim.nodes
    sim.partition([Array(ids[0..<3]), Array(ids[3...])])
    sim.run(for: .seconds(30))
    sim.heal()
    let converged2 = sim.runUntilConverged(timeout: .seconds(30))
    #expect(converged2, "seed \(seed): the two sides never merged")
  }

  @Test(arguments: SimulationSeeds.seeds(ciDefault: 2))
  func aSeedThatLeftAndRestartsWithoutSeedsIsFoundAgain(seed: UInt64) throws {
    var settings = SWIMSettings()
    settings.deadMemberRetention = .seconds(5)
    var sim = try GossipSimulation(memberCount: 4, settings: settings, seed: seed)
    let converged3 = sim.runUntilConverged(timeout: .seconds(20))
    #expect(converged3)
    let first = GossipSimulation.nodeID(1)
    sim.leave(first)
    sim.run(for: .seconds(20))
    try sim.restart(first)
    let converged4 = sim.runUntilConverged(timeout: .seconds(30))
    #expect(converged4, "seed \(seed): the restarted seed stayed alone")
  }
}
