import TealGossip
import TealMembership
import TealTransportTesting
import TealWire
import Testing

// Issue 13, defects 6 and 7: a graceful leave is delivered, and no event or message is lost
// silently. Each test failed (or did not compile) before its fix.

/// A sender that never completes a send until released.
private actor StuckSender: PeerMessageSender {
  private var waiters: [CheckedContinuation<Void, Never>] = []
  private var released = false

  func send(_ payload: [UInt8], on channel: PeerChannel, to peer: NodeID) async throws(PeerSendError) {
    if released { return }
    await withCheckedContinuation { waiters.append($0) }
  }

  func release() {
    released = true
    for waiter in waiters { waiter.resume() }
    waiters = []
  }
}

@Suite struct MembershipShellHardeningTests {
  @Test func leaveWaitsUntilTheFarewellIsDeliveredBeforeTheTransportShutsDown() async throws {
    let network = InMemoryPeerNetwork()
    // A suspicion of 20 periods (1 s) or more shows that the leave is not learned by timeout.
    let services = try await membershipCluster(3, network: network, settings: fastSettings(suspicionMultiplier: 20))
    try #require(await eventually { await allSeeAllAlive(services) })
    await network.setDelay(.milliseconds(100))
    await services[1].leave()
    await network.unregister(NodeID("n2"))  // its transport shuts down: drops whatever is still in flight
    let learned = await eventually(timeout: .seconds(30)) {
      for index in [0, 2] {
        guard let member = await services[index].snapshot().members.first(where: { $0.id == NodeID("n2") }),
          member.status == .dead
        else { return false }
      }
      return true
    }
    #expect(learned)
    for index in [0, 2] {
      let member = await services[index].snapshot().members.first { $0.id == NodeID("n2") }
      #expect(member?.leftGracefully == true, "n\(index + 1) saw a failure, not a leave")
    }
    for service in services { await service.stop() }
  }

  @Test func aSnapshotComesWithAnAtomicSubscriptionAndASubscriberThatFallsBehindSeesTheGap() async throws {
    let network = InMemoryPeerNetwork()
    let services = try await membershipCluster(5, network: network, start: false)
    let (snapshot, stream) = await services[0].subscribeWithSnapshot(bufferLimit: 2)
    #expect(snapshot.version == 0 && snapshot.members.isEmpty)
    for (index, service) in services.enumerated() { await service.start(seeds: index == 0 ? [] : [NodeID("n1")]) }
    try #require(await eventually { await allSeeAllAlive(services) })
    let later = await services[0].subscribeWithSnapshot()
    #expect(later.snapshot.version >= 4, "four joins at least")
    #expect(later.snapshot.members.count == 4)
    await services[0].stop()
    var versions: [UInt64] = []
    for await event in stream { versions.append(event.version) }
    #expect(versions.count <= 2)
    #expect(versions.first.map { $0 > 1 } == true, "the first events were dropped: the gap shows")
    #expect(await services[0].counters.eventsDropped > 0)
    for service in services.dropFirst() { await service.stop() }
  }

  @Test func theOutboxIsBoundedAndDropsAreCounted() async throws {
    let stuck = StuckSender()
    let service = try MembershipService(
      id: NodeID("n1"), metadata: metadata(1), settings: fastSettings(), sender: stuck)
    await service.start(seeds: [])
    let ping = SWIMMessage.ping(sequence: 1, updates: []).wireBytes()
    for index in 0..<(MembershipService.outboxLimit * 2) {
      await service.receive(from: NodeID("p\(index)"), payload: ping)
    }
    #expect(await service.counters.outboxDropped >= MembershipService.outboxLimit - 1)
    await stuck.release()
    await service.stop()
  }

  @Test func sendFailuresAreCountedAndAnUnknownSeedIsReported() async throws {
    let network = InMemoryPeerNetwork()
    let services = try await membershipCluster(1, network: network, start: false)
    let service = services[0]
    #expect(await service.joinStatus == .notStarted)
    await service.start(seeds: [NodeID("nowhere")])
    let reported = await eventually(timeout: .seconds(30)) {
      await service.joinStatus == .joining(seeds: [NodeID("nowhere")], unknownSeeds: [NodeID("nowhere")])
    }
    #expect(reported)
    #expect(await service.counters.sendFailures > 0)
    await service.stop()
    #expect(await service.joinStatus == .stopped)
  }

  @Test func joinStatusTurnsJoinedOnceASeedAnswers() async throws {
    let network = InMemoryPeerNetwork()
    let services = try await membershipCluster(2, network: network)
    let joined = await eventually(timeout: .seconds(30)) { await services[1].joinStatus == .joined }
    #expect(joined)
    for service in services { await service.stop() }
  }
}
