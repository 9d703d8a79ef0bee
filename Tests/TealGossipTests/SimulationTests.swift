import Foundation
import TealGossip
import TealGossipSim
import TealWire
import Testing

/// Seeds for the simulation tests: `TEAL_GOSSIP_SEED=S` replays one seed, `TEAL_GOSSIP_SEEDS=N`
/// runs seeds 1...N instead of the small CI volume.
enum SimulationSeeds {
  static func seeds(ciDefault: Int) -> [UInt64] {
    let environment = ProcessInfo.processInfo.environment
    if let single = environment["TEAL_GOSSIP_SEED"].flatMap(UInt64.init) { return [single] }
    let count = environment["TEAL_GOSSIP_SEEDS"].flatMap(Int.init) ?? ciDefault
    return (1...max(1, count)).map(UInt64.init)
  }

  static func replay(_ seed: UInt64, _ test: String) -> Comment {
    "replay: TEAL_GOSSIP_SEED=\(seed) swift test --filter \(test)"
  }
}

/// Runs CPU-bound simulation work on its own thread, so that it does not occupy the (two-thread)
/// cooperative pool that real-time tests running in parallel, such as the membership shell
/// tests, depend on. Expectations are checked by the caller on the result.
func offCooperativePool<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
  try await withCheckedThrowingContinuation { continuation in
    let thread = Thread { continuation.resume(with: Result { try work() }) }
    thread.start()
  }
}

@Suite struct GossipSimulationTests {
  @Test(arguments: [3, 5, 20, 50])
  func aCrashedMemberIsDeclaredDeadByEveryLiveMemberWithinTheBound(members: Int) async throws {
    let seeds = SimulationSeeds.seeds(ciDefault: members >= 20 ? 1 : 4)
    // The 3 s suspicion floor (above one transport reconnect) plus about a period to notice;
    // larger clusters need more rounds to reach the crashed member and to spread the verdict.
    let bound: Duration = members <= 5 ? .milliseconds(3800) : .seconds(5)
    var samples: [Duration] = []
    for seed in seeds {
      let result = try await offCooperativePool {
        try GossipExperiments.crashDetection(memberCount: members, settings: SWIMSettings(), seed: seed)
      }
      let replay = SimulationSeeds.replay(seed, "aCrashedMemberIsDeclaredDeadByEveryLiveMemberWithinTheBound")
      let all = try #require(result.allDetected, replay)
      #expect(all <= bound, replay)
      #expect(result.falsePositives == 0, replay)
      #expect(result.invariantViolations.isEmpty, replay)
      samples.append(all)
    }
    if let summary = DurationSummary(samples) { print("crash detection, \(members) members: \(summary)") }
  }

  @Test(arguments: [(3, 60), (5, 40), (20, 15), (50, 8)])
  func tenPercentLossWithoutCrashesNeverDeclaresALiveMemberDead(members: Int, seconds: Int) async throws {
    for seed in SimulationSeeds.seeds(ciDefault: 1) {
      let outcome = try await offCooperativePool {
        try GossipExperiments.falsePositives(
          memberCount: members, settings: SWIMSettings(), lossRate: 0.1, duration: .seconds(seconds), seed: seed)
      }
      print(
        "10% loss, \(members) members, \(seconds) s: \(outcome.falsePositives.count) false positives, "
          + "\(outcome.suspicions) suspicions, \(outcome.refutations) refutations")
      let replay = SimulationSeeds.replay(seed, "tenPercentLossWithoutCrashes")
      #expect(outcome.falsePositives.isEmpty, replay)
      #expect(outcome.invariantViolations.isEmpty, replay)
      #expect(outcome.suspicions > 0, "the run must be long enough to raise suspicions that get refuted")
    }
  }

  @Test(arguments: [10, 50])
  func anUpdateReachesEveryMemberWithinLogarithmicProtocolPeriods(members: Int) async throws {
    let settings = SWIMSettings()
    // 2 · ceil(log2 n) periods: O(log n), with room for the piggyback's least-sent-first order.
    let periods = 2 * Int(log2(Double(members)).rounded(.up))
    for seed in SimulationSeeds.seeds(ciDefault: members >= 50 ? 1 : 2) {
      let replay = SimulationSeeds.replay(seed, "anUpdateReachesEveryMember")
      let (converged, elapsed) = try await offCooperativePool { () throws -> (Bool, Duration?) in
        var sim = try GossipSimulation(memberCount: members, settings: settings, seed: seed)
        let converged = sim.runUntilConverged(timeout: .seconds(60))
        sim.run(for: .seconds(3))
        var metadata = GossipSimulation.metadata(for: 1)
        metadata.raftRole = .leader
        metadata.raftTerm = 7
        let origin = GossipSimulation.nodeID(1)
        sim.updateMetadata(origin, metadata)
        let start = sim.now
        let reached = sim.run(timeout: settings.probeInterval * (periods * 4), checkEvery: .milliseconds(5)) { sim in
          sim.nodes.allSatisfy { $0 == origin || sim.core($0)?.member(origin)?.metadata.raftTerm == 7 }
        }
        return (converged, reached.map { $0 - start })
      }
      #expect(converged, replay)
      let time = try #require(elapsed, replay)
      print("update to \(members) members: \(DurationSummary.milliseconds(time)) ms (bound \(periods) periods)")
      #expect(time <= settings.probeInterval * periods, replay)
    }
  }

  struct PartitionObservation: Sendable {
    var convergedBefore = false
    var sidesSawEachOtherDead = false
    var convergedAfterHeal: Duration?
    var invariantViolations: [String] = []
  }

  @Test func afterAPartitionHealsMembershipConverges() async throws {
    for seed in SimulationSeeds.seeds(ciDefault: 2) {
      let replay = SimulationSeeds.replay(seed, "afterAPartitionHealsMembershipConverges")
      let observed = try await offCooperativePool {
        var observation = PartitionObservation()
        var sim = try GossipSimulation(memberCount: 10, seed: seed)
        observation.convergedBefore = sim.runUntilConverged(timeout: .seconds(30))
        let left = (1...5).map(GossipSimulation.nodeID)
        let right = (6...10).map(GossipSimulation.nodeID)
        sim.partition([left, right])
        sim.run(for: .seconds(10))
        observation.sidesSawEachOtherDead = left.allSatisfy { observer in
          right.allSatisfy { sim.status(of: $0, seenBy: observer) == .dead }
            && right.allSatisfy { sim.status(of: observer, seenBy: $0) == .dead }
        }
        sim.heal()
        let healedAt = sim.now
        if sim.runUntilConverged(timeout: .seconds(30)) { observation.convergedAfterHeal = sim.now - healedAt }
        observation.invariantViolations = sim.invariantViolations
        return observation
      }
      #expect(observed.convergedBefore, replay)
      #expect(observed.sidesSawEachOtherDead, replay)
      let healed = try #require(observed.convergedAfterHeal, replay)
      #expect(observed.invariantViolations.isEmpty, replay)
      print("partition healed, converged after \(DurationSummary.milliseconds(healed)) ms")
    }
  }

  @Test func aRestartedMemberRefutesItsOldDeathAndRejoins() async throws {
    for seed in SimulationSeeds.seeds(ciDefault: 2) {
      let replay = SimulationSeeds.replay(seed, "aRestartedMemberRefutesItsOldDeathAndRejoins")
      let (declared, rejoined, incarnation, violations) = try await offCooperativePool {
        var sim = try GossipSimulation(memberCount: 5, seed: seed)
        _ = sim.runUntilConverged(timeout: .seconds(30))
        let victim = GossipSimulation.nodeID(4)
        sim.crash(victim)
        let declared = sim.run(timeout: .seconds(10)) { sim in
          sim.liveNodes.allSatisfy { sim.status(of: victim, seenBy: $0) == .dead }
        }
        try sim.restart(victim)
        let rejoined = sim.runUntilConverged(timeout: .seconds(10))
        return (declared != nil, rejoined, sim.core(victim)?.myself.incarnation ?? 0, sim.invariantViolations)
      }
      #expect(declared, replay)
      #expect(rejoined, replay)
      #expect(incarnation > 0, "the new process must outbid its old record")
      #expect(violations.isEmpty, replay)
    }
  }

  @Test func aGracefulLeaveIsKnownToEveryMemberWithinFiveMilliseconds() async throws {
    let (converged, views, falsePositives, violations) = try await offCooperativePool {
      var sim = try GossipSimulation(memberCount: 5, seed: 11)
      let converged = sim.runUntilConverged(timeout: .seconds(30))
      let leaver = GossipSimulation.nodeID(3)
      sim.leave(leaver)
      sim.run(for: .milliseconds(5))
      let views = sim.liveNodes.compactMap { sim.core($0)?.member(leaver) }
      return (converged, views, sim.falsePositives.count, sim.invariantViolations)
    }
    #expect(converged)
    #expect(views.count == 4)
    #expect(views.allSatisfy { $0.status == .dead && $0.leftGracefully })
    #expect(falsePositives == 0)
    #expect(violations.isEmpty)
  }

  @Test func theSameSeedReplaysTheSameRun() async throws {
    @Sendable func run() throws -> ([DeathRecord], Int, Int) {
      var sim = try GossipSimulation(memberCount: 8, network: NetworkConditions(lossRate: 0.2), seed: 42)
      sim.run(for: .seconds(5))
      sim.crash(GossipSimulation.nodeID(8))
      sim.run(for: .seconds(10))
      return (sim.deaths, sim.messagesDelivered, sim.messagesDropped)
    }
    let first = try await offCooperativePool(run)
    let second = try await offCooperativePool(run)
    #expect(first.0 == second.0)
    #expect(first.1 == second.1 && first.2 == second.2)
    #expect(first.0.contains { $0.subject == GossipSimulation.nodeID(8) })
  }
}
