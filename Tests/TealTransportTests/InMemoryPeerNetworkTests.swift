import TealTestSupport
import TealTransportTesting
import TealWire
import Testing

@Suite("In-memory peer network")
struct InMemoryPeerNetworkTests {
  let a = NodeID("a")
  let b = NodeID("b")
  let c = NodeID("c")

  func network(seed: UInt64 = 1, queueLimit: Int = 8) async -> (InMemoryPeerNetwork, [NodeID: Inbox]) {
    let network = InMemoryPeerNetwork(seed: seed, queueLimit: queueLimit)
    var inboxes: [NodeID: Inbox] = [:]
    for node in [a, b, c] {
      let inbox = Inbox()
      inboxes[node] = inbox
      await network.register(node) { await inbox.append($0, $1, $2) }
    }
    return (network, inboxes)
  }

  @Test func deliversInOrderPerPairWithTheSenderId() async throws {
    // The queue holds all 100 messages: how fast the delivery task drains it depends on the
    // machine's load, and the bound itself is `queuePerPairIsBounded`'s subject.
    let (network, inboxes) = await network(queueLimit: 128)
    for i in 0..<100 { try await network.sender(for: a).send([UInt8(i)], on: .raft, to: b) }
    await network.waitUntilIdle()
    let messages = await inboxes[b]!.messages
    #expect(messages.map(\.payload) == (0..<100).map { [UInt8($0)] })
    #expect(messages.allSatisfy { $0.from == a && $0.channel == .raft })
    await #expect(throws: PeerSendError.unknownPeer(NodeID("z"))) {
      try await network.sender(for: a).send([1], on: .raft, to: NodeID("z"))
    }
  }

  @Test func partitionCutsBothDirectionsUntilHealed() async throws {
    let (network, inboxes) = await network()
    await network.partition([a], from: [b, c])
    await #expect(throws: PeerSendError.peerUnavailable(b)) {
      try await network.sender(for: a).send([1], on: .raft, to: b)
    }
    await #expect(throws: PeerSendError.peerUnavailable(a)) {
      try await network.sender(for: c).send([1], on: .raft, to: a)
    }
    try await network.sender(for: b).send([2], on: .gossip, to: c)
    await network.heal()
    try await network.sender(for: a).send([3], on: .raft, to: b)
    await network.waitUntilIdle()
    #expect(await inboxes[c]!.messages.map(\.payload) == [[2]])
    #expect(await inboxes[b]!.messages.map(\.payload) == [[3]])
  }

  @Test func oneWayCutAndIsolation() async throws {
    let (network, inboxes) = await network()
    await network.cutLink(from: a, to: b)
    await #expect(throws: PeerSendError.peerUnavailable(b)) {
      try await network.sender(for: a).send([1], on: .raft, to: b)
    }
    try await network.sender(for: b).send([2], on: .raft, to: a)
    await network.isolate(c)
    await #expect(throws: PeerSendError.peerUnavailable(c)) {
      try await network.sender(for: b).send([3], on: .raft, to: c)
    }
    await network.waitUntilIdle()
    #expect(await inboxes[a]!.messages.map(\.payload) == [[2]])
  }

  @Test func dropsAreSeededAndSilent() async throws {
    func run(seed: UInt64) async throws -> [[UInt8]] {
      let (network, inboxes) = await network(seed: seed)
      await network.setDropProbability(0.5)
      for i in 0..<200 {
        try await network.sender(for: a).send([UInt8(i)], on: .raft, to: b)
        if i % 8 == 7 { await network.waitUntilIdle() }
      }
      await network.waitUntilIdle()
      #expect(await network.deliveredCount + network.droppedCount == 200)
      return await inboxes[b]!.messages.map(\.payload)
    }
    let first = try await run(seed: 7)
    #expect(first.count > 50 && first.count < 150)
    #expect(first == (try await run(seed: 7)))
  }

  @Test func delayHoldsMessagesBack() async throws {
    let (network, inboxes) = await network()
    await network.setDelay(.milliseconds(200))
    let clock = ContinuousClock()
    let start = clock.now
    try await network.sender(for: a).send([1], on: .raft, to: b)
    try await eventually("the delayed message") { await inboxes[b]!.count == 1 }
    #expect(clock.now - start >= .milliseconds(200))
  }

  @Test func anUnregisteredNodeLosesItsQueuedMessagesAndIsUnavailableUntilItRegistersAgain() async throws {
    let network = InMemoryPeerNetwork()
    let gate = Gate()
    let before = Inbox()
    let fromB = Inbox()
    await network.register(a) { await fromB.append($0, $1, $2) }
    await network.register(b) { from, channel, payload in
      await before.append(from, channel, payload)
      await gate.wait()
    }
    // The first message is held in b's handler; the next four wait in the a -> b queue.
    for i in 0..<5 { try await network.sender(for: a).send([UInt8(i)], on: .raft, to: b) }
    try await eventually("the first message in b's handler") { await network.deliveredCount == 1 }
    // One message from b waits behind a delay, then b goes away: it is lost too.
    await network.setDelay(.seconds(2))
    try await network.sender(for: b).send([7], on: .raft, to: a)
    await network.unregister(b)
    await network.setDelay(.zero)
    await #expect(throws: PeerSendError.peerUnavailable(b)) {
      try await network.sender(for: a).send([5], on: .raft, to: b)
    }
    await #expect(throws: PeerSendError.shutDown) {
      try await network.sender(for: b).send([6], on: .raft, to: a)
    }
    await #expect(throws: PeerSendError.unknownPeer(c)) {
      try await network.sender(for: a).send([5], on: .raft, to: c)
    }
    await gate.open()
    await network.waitUntilIdle()
    #expect(await before.messages.map(\.payload) == [[0]], "the queued messages were lost")
    #expect(await fromB.count == 0)
    #expect(await network.droppedCount == 5)

    let after = Inbox()
    await network.register(b) { await after.append($0, $1, $2) }
    try await network.sender(for: a).send([9], on: .raft, to: b)
    await network.waitUntilIdle()
    #expect(await after.messages.map(\.payload) == [[9]], "only what was sent after it registered again")
    #expect(await network.deliveredCount == 2)
  }

  @Test func queuePerPairIsBounded() async throws {
    let network = InMemoryPeerNetwork(queueLimit: 2)
    let gate = Gate()
    await network.register(b) { _, _, _ in await gate.wait() }
    await network.register(a) { _, _, _ in }
    var refused = false
    for i in 0..<10 {
      do { try await network.sender(for: a).send([UInt8(i)], on: .raft, to: b) } catch {
        #expect(error == .queueFull(b, limit: 2))
        refused = true
        break
      }
    }
    #expect(refused)
    await gate.open()
    await network.waitUntilIdle()
  }
}
