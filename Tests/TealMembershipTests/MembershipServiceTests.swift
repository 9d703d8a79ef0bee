import TealGossip
import TealMembership
import TealTransportTesting
import TealWire
import Testing

/// Starts `count` services `n1...` on a new network; all but `n1` join through `n1`.
private func startCluster(
  _ count: Int, settings: SWIMSettings = fastSettings()
) async throws -> (InMemoryPeerNetwork, [MembershipService]) {
  let network = InMemoryPeerNetwork()
  return (network, try await membershipCluster(count, network: network, settings: settings))
}

@Suite struct MembershipServiceTests {
  @Test func shellsJoiningThroughASeedSeeEachOtherAlive() async throws {
    let (_, services) = try await startCluster(4)
    let converged = await eventually { await allSeeAllAlive(services) }
    #expect(converged)
    let snapshot = await services[3].snapshot()
    #expect(snapshot.members.map(\.id) == [NodeID("n1"), NodeID("n2"), NodeID("n3")])
    #expect(snapshot.members.first?.metadata.peerAddress == HostPort(host: "127.0.0.1", port: 7400))
    for service in services { await service.stop() }
  }

  @Test func aCrashedShellIsReportedDeadOnEveryOtherShellsEventStream() async throws {
    let (network, services) = try await startCluster(3)
    let converged = await eventually { await allSeeAllAlive(services) }
    try #require(converged)
    let victim = NodeID("n3")
    let subscription = await services[0].subscribe()
    await network.isolate(victim)
    await services[2].stop()
    let detected = await eventually {
      for service in services.prefix(2)
      where await service.snapshot().members.first(where: { $0.id == victim })?.status != .dead {
        return false
      }
      return true
    }
    #expect(detected)
    for service in services.prefix(2) {
      await service.stop()  // finishes the event stream
      var sawDeath = false
      for await event in service.events {
        if case .statusChanged(let member, _) = event, member.id == victim, member.status == .dead { sawDeath = true }
      }
      #expect(sawDeath)
    }
    var subscriberSawDeath = false
    for await event in subscription where event.member.id == victim && event.member.status == .dead {
      subscriberSawDeath = true
    }
    #expect(subscriberSawDeath, "a second subscriber sees the same events")
  }

  @Test func aGracefulLeaveIsSeenAsALeaveNotAsAFailure() async throws {
    // A long suspicion (20 · 50 ms = 1 s at least) shows that the leave is not learned by timeout.
    let (_, services) = try await startCluster(3, settings: fastSettings(suspicionMultiplier: 20))
    let converged = await eventually { await allSeeAllAlive(services) }
    try #require(converged)
    await services[1].leave()
    let learned = await eventually {
      for index in [0, 2] {
        guard let member = await services[index].snapshot().members.first(where: { $0.id == NodeID("n2") }),
          member.status == .dead, member.leftGracefully
        else { return false }
      }
      return true
    }
    // leftGracefully is only set by the leave itself; a suspicion timeout would leave it false.
    #expect(learned)
    for service in services { await service.stop() }
  }

  @Test func aMetadataChangeReachesTheOtherShells() async throws {
    let (_, services) = try await startCluster(3)
    let converged = await eventually { await allSeeAllAlive(services) }
    try #require(converged)
    var leaderMetadata = metadata(2)
    leaderMetadata.raftRole = .leader
    leaderMetadata.raftTerm = 4
    await services[1].updateMetadata(leaderMetadata)
    let spread = await eventually {
      for index in [0, 2] where await services[index].snapshot().announcedLeader?.id != NodeID("n2") { return false }
      return true
    }
    #expect(spread)
    for service in services { await service.stop() }
  }

  @Test func anUndecodablePayloadIsDroppedAndTheShellKeepsWorking() async throws {
    let (_, services) = try await startCluster(2)
    await services[0].receive(from: NodeID("n2"), payload: [1, 99, 0xff, 0xff])
    await services[0].receive(from: NodeID("n2"), payload: [])
    let converged = await eventually { await allSeeAllAlive(services) }
    #expect(converged)
    for service in services { await service.stop() }
  }
}
