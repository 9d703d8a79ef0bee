import Foundation
import NIOCore
import NIOPosix
import TealTLS
import TealTestSupport
import TealWire
import Testing

@testable import TealTransport

@Suite("Peer transport over mutual TLS on loopback", .serialized)
struct PeerTransportTests {
  /// Sizes from 1 B to 1 MiB: mostly small like Raft heartbeats, some large like log batches and
  /// snapshot chunks.
  static func size(of sequence: Int, _ generator: inout SplitMix64) -> Int {
    switch generator.next() % 1000 {
    case 0..<2: return 1 << 20  // the largest
    case 2..<10: return Int(generator.next() % (1 << 20)) + 1
    case 10..<60: return Int(generator.next() % (64 << 10)) + 1
    default: return Int(generator.next() % 1024) + 1
    }
  }

  /// Message `sequence`: its number in the first 8 bytes, then a pattern derived from it.
  static func message(_ sequence: Int, size: Int) -> [UInt8] {
    var bytes = [UInt8](repeating: UInt8(truncatingIfNeeded: sequence &* 7), count: size)
    for i in 0..<min(8, size) { bytes[i] = UInt8(truncatingIfNeeded: sequence >> (8 * i)) }
    return bytes
  }

  /// Every message arrived, undamaged and in order within its lane (small messages among
  /// themselves, large ones among themselves: a small one may overtake a large one).
  static func check(_ payloads: [[UInt8]], count: Int, seed: UInt64) {
    #expect(payloads.count == count)
    var generator = SplitMix64(seed: seed)
    var expectedSizes: [Int] = []
    for sequence in 0..<count { expectedSizes.append(size(of: sequence, &generator)) }
    for urgent in [true, false] {
      let isUrgent = { (size: Int) in size <= OutboundLink.urgentMaximumPayload }
      let lane = payloads.filter { isUrgent($0.count) == urgent }
      let sequences = (0..<count).filter { isUrgent(expectedSizes[$0]) == urgent }
      guard lane.count == sequences.count else {
        Issue.record("\(lane.count) messages in the \(urgent ? "urgent" : "bulk") lane, expected \(sequences.count)")
        return
      }
      checkLane(zip(sequences, lane).map { ($0, $1) }, sizes: expectedSizes)
    }
  }

  static func checkLane(_ messages: [(Int, [UInt8])], sizes: [Int]) {
    for (sequence, payload) in messages {
      let expected = sizes[sequence]
      guard payload.count == expected, payload.count < 8 || payload.prefix(8) == message(sequence, size: 8)[...],
        payload.last == message(sequence, size: expected).last
      else {
        Issue.record(
          "message \(sequence) arrived out of order or damaged (\(payload.count) bytes, expected \(expected))")
        return
      }
    }
  }

  @Test func twoTransportsExchange100000MessagesInOrderWithNoneLost() async throws {
    let cluster = try TestCluster()
    let count = 100_000
    let aInbox = Inbox()
    let bInbox = Inbox()
    let (a, b) = try await connectedPair(
      cluster, a: { await aInbox.append($0, $1, $2) }, b: { await bInbox.append($0, $1, $2) })
    async let aSends: Void = Self.sendAll(count, from: a, to: NodeID("n2"), seed: 1)
    async let bSends: Void = Self.sendAll(count, from: b, to: NodeID("n1"), seed: 2)
    _ = try await (aSends, bSends)
    try await eventually("all messages to arrive", within: 120) {
      let aCount = await aInbox.count
      let bCount = await bInbox.count
      return aCount == count && bCount == count
    }
    Self.check(await bInbox.payloads(from: NodeID("n1")), count: count, seed: 1)
    Self.check(await aInbox.payloads(from: NodeID("n2")), count: count, seed: 2)
    await a.shutdown()
    await b.shutdown()
  }

  static func sendAll(_ count: Int, from transport: PeerTransport, to peer: NodeID, seed: UInt64) async throws {
    var generator = SplitMix64(seed: seed)
    for sequence in 0..<count {
      let payload = message(sequence, size: size(of: sequence, &generator))
      try await transport.sendWhenQueueHasRoom(payload, on: sequence % 2 == 0 ? .raft : .gossip, to: peer)
    }
  }

  @Test func sixteenMebibyteMessagePassesAndOneByteMoreIsRefused() async throws {
    let cluster = try TestCluster()
    let inbox = Inbox()
    let (a, b) = try await connectedPair(cluster, a: { _, _, _ in }, b: { await inbox.append($0, $1, $2) })
    let limit = Frame.defaultMaximumPayload
    try await a.send([UInt8](repeating: 0xab, count: limit), on: .raft, to: NodeID("n2"))
    await #expect(throws: PeerSendError.messageTooLarge(size: limit + 1, limit: limit)) {
      try await a.send([UInt8](repeating: 0xab, count: limit + 1), on: .raft, to: NodeID("n2"))
    }
    try await eventually("the 16 MiB message", within: 60) { await inbox.count == 1 }
    let received = await inbox.messages[0]
    #expect(received.payload.count == limit)
    #expect(received.payload.allSatisfy { $0 == 0xab })
    await a.shutdown()
    await b.shutdown()
  }

  @Test func oversizedFrameFromAPeerClosesOnlyThatConnection() async throws {
    let cluster = try TestCluster()
    let inbox = Inbox()
    let (a, b) = try await connectedPair(cluster, a: { _, _, _ in }, b: { await inbox.append($0, $1, $2) })
    // n3 is a member with a valid certificate that sends a hello, then a header announcing 16 MiB + 1.
    await b.addPeer(NodeID("n3"), address: PeerAddress(host: "127.0.0.1", port: 1))
    let bPort = try #require(await b.listeningPort)
    let rogue = try await RawTLSClient.connect(
      port: bPort, security: try cluster.tls("n3"), expecting: NodeID("n2"))
    try await rogue.sendHello("n3")
    try await rogue.send(raw: FrameHeader(channel: .raft, length: Frame.defaultMaximumPayload + 1).bytes + [1, 2, 3])
    try await eventually("the rogue connection to be closed") { !rogue.channel.isActive }
    // n1's connection is unaffected.
    try await a.send(Array("still here".utf8), on: .raft, to: NodeID("n2"))
    try await eventually("n1's message") { await inbox.count == 1 }
    #expect(await inbox.messages.map(\.from) == [NodeID("n1")])
    await a.shutdown()
    await b.shutdown()
  }

  @Test func nodeWithCertificateFromAnotherCAIsNeverDelivered() async throws {
    let cluster = try TestCluster()
    let intruderCluster = try TestCluster()
    let inbox = Inbox()
    let b = transport("n2", security: try cluster.tls("n2"), handler: { await inbox.append($0, $1, $2) })
    let bPort = try await b.start()
    await b.addPeer(NodeID("n1"), address: PeerAddress(host: "127.0.0.1", port: 1))
    // Same node id, certificate from another CA.
    let intruder = transport(
      "n1", security: try intruderCluster.tls("n1"), peers: [NodeID("n2"): PeerAddress(host: "127.0.0.1", port: bPort)],
      handler: { _, _, _ in })
    try await intruder.start()
    try await Task.sleep(for: .milliseconds(300))  // give it time to try, and fail, to connect
    #expect(await intruder.connectedPeers().isEmpty)
    await #expect(throws: TLSError.self) {
      _ = try await RawTLSClient.connect(port: bPort, security: try intruderCluster.tls("n1"), expecting: NodeID("n2"))
    }
    #expect(await inbox.count == 0)
    await intruder.shutdown()
    await b.shutdown()
  }

  @Test func nonMemberWithAValidCertificateIsRefused() async throws {
    let cluster = try TestCluster()
    let inbox = Inbox()
    let (a, b) = try await connectedPair(cluster, a: { _, _, _ in }, b: { await inbox.append($0, $1, $2) })
    let bPort = try #require(await b.listeningPort)
    // n3 holds a certificate from the cluster CA but is not a member of b's configuration.
    let outsider = transport(
      "n3", security: try cluster.tls("n3"), peers: [NodeID("n2"): PeerAddress(host: "127.0.0.1", port: bPort)],
      handler: { _, _, _ in })
    try await outsider.start()
    _ = try? await outsider.send([1], on: .raft, to: NodeID("n2"))
    try await a.send([2], on: .raft, to: NodeID("n2"))
    try await eventually("n1's message") { await inbox.count == 1 }
    #expect(await inbox.messages.map(\.from) == [NodeID("n1")])
    // In TLS 1.3 the dialler finishes its handshake before the listener decides, so the outsider
    // may briefly believe it is connected; the listener then closes the connection.
    try await eventually("the outsider's connection to be closed") { await outsider.connectedPeers().isEmpty }
    #expect(await inbox.messages.map(\.from) == [NodeID("n1")])
    await outsider.shutdown()
    await a.shutdown()
    await b.shutdown()
  }

  @Test func sendsFailFastWhilePeerIsDownAndResumeAfterItRestarts() async throws {
    let cluster = try TestCluster()
    let inbox = Inbox()
    let (a, b) = try await connectedPair(cluster, a: { _, _, _ in }, b: { await inbox.append($0, $1, $2) })
    let bPort = try #require(await b.listeningPort)
    await b.shutdown()
    try await eventually("n1 to notice n2 is down") {
      do {
        try await a.send([0], on: .raft, to: NodeID("n2"))
        return false
      } catch {
        return (error as? PeerSendError) == .peerUnavailable(NodeID("n2"))
      }
    }
    // n2 comes back on the same port; n1 reconnects by itself and delivers again.
    let restarted = transport(
      "n2", security: try cluster.tls("n2"), port: bPort, handler: { await inbox.append($0, $1, $2) })
    try await restarted.start()
    await restarted.addPeer(NodeID("n1"), address: PeerAddress(host: "127.0.0.1", port: 1))
    try await eventually("n1 to reconnect") { await a.connectedPeers() == [NodeID("n2")] }
    try await a.send(Array("after restart".utf8), on: .raft, to: NodeID("n2"))
    try await eventually("the message after restart") {
      await inbox.messages.contains { $0.payload == Array("after restart".utf8) }
    }
    await a.shutdown()
    await restarted.shutdown()
  }

  @Test func queueToASlowPeerIsBoundedAndDeliversWhatItAccepted() async throws {
    let cluster = try TestCluster()
    let gate = Gate()
    let inbox = Inbox()
    let (a, b) = try await connectedPair(
      cluster, tune: { $0.queueLimit = 64 }, a: { _, _, _ in },
      b: {
        await gate.wait()
        await inbox.append($0, $1, $2)
      })
    var accepted = 0
    var refusedWithQueueFull = false
    for sequence in 0..<20_000 {
      do {
        try await a.send(Self.message(sequence, size: 64 << 10), on: .raft, to: NodeID("n2"))
        accepted += 1
      } catch {
        #expect(error == .queueFull(NodeID("n2"), limit: 64))
        refusedWithQueueFull = true
        break
      }
    }
    #expect(refusedWithQueueFull)
    #expect(accepted < 20_000)
    await gate.open()
    let acceptedCount = accepted
    try await eventually("the accepted messages", within: 30) { await inbox.count == acceptedCount }
    let sequences = await inbox.payloads(from: NodeID("n1")).map { payload in
      (0..<8).reduce(0) { $0 | Int(payload[$1]) << (8 * $1) }
    }
    #expect(sequences == Array(0..<accepted))
    await a.shutdown()
    await b.shutdown()
  }

  @Test func reservedTransportChannelCannotBeUsed() async throws {
    let cluster = try TestCluster()
    let a = transport("n1", security: try cluster.tls("n1"), handler: { _, _, _ in })
    await #expect(throws: PeerSendError.reservedChannel(.transport)) {
      try await a.send([1], on: .transport, to: NodeID("n2"))
    }
    await #expect(throws: PeerSendError.unknownPeer(NodeID("n9"))) {
      try await a.send([1], on: .raft, to: NodeID("n9"))
    }
  }
}

/// Holds handlers until opened.
actor Gate {
  private var isOpen = false
  private var waiters: [CheckedContinuation<Void, Never>] = []
  func wait() async {
    if isOpen { return }
    await withCheckedContinuation { waiters.append($0) }
  }
  func open() {
    isOpen = true
    for waiter in waiters { waiter.resume() }
    waiters = []
  }
}
