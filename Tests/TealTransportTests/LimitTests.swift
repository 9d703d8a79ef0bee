import Foundation
import NIOCore
import NIOPosix
import TealTLS
import TealTestSupport
import TealWire
import Testing

@testable import TealTransport

@Suite("Per-connection memory and connection limits", .serialized)
struct LimitTests {
  @Test func receiveBufferingIsBoundedInBytesPerConnection() async throws {
    let cluster = try TestCluster()
    let gate = Gate()
    let inbox = Inbox()
    let limit = 2 << 20
    let (a, b) = try await connectedPair(
      cluster,
      tune: {
        $0.maximumPayload = 1 << 20
        $0.receiveBufferByteLimit = limit
      }, a: { _, _, _ in },
      b: {
        await gate.wait()
        await inbox.append($0, $1, $2)
      })
    let count = 48
    let sender = Task {
      for i in 0..<count {
        try await a.sendWhenQueueHasRoom([UInt8](repeating: UInt8(i), count: 512 << 10), on: .raft, to: NodeID("n2"))
      }
    }
    try await eventually("n2 to fill its receive budget", within: 30) {
      b.receiveBufferPeak.withLockedValue { $0 } >= limit
    }
    // Keep sending for a while: with the handler stuck, n2 must stop reading, not buffer more.
    let clock = ContinuousClock()
    let end = clock.now + .milliseconds(700)
    while clock.now < end { try await Task.sleep(for: .milliseconds(20)) }
    let peak = b.receiveBufferPeak.withLockedValue { $0 }
    #expect(peak >= limit)
    #expect(peak <= limit + (1 << 20))
    await gate.open()
    try await sender.value
    try await eventually("every message", within: 60) { await inbox.count == count }
    await a.shutdown()
    await b.shutdown()
  }

  @Test func connectionsPerPeerAreCapped() async throws {
    let cluster = try TestCluster()
    let b = transport(
      "n2", security: try cluster.tls("n2"), tune: { $0.maximumConnectionsPerPeer = 2 }, handler: { _, _, _ in })
    let bPort = try await b.start()
    await b.addPeer(NodeID("n3"), address: PeerAddress(host: "127.0.0.1", port: 1))
    var clients: [RawTLSClient] = []
    for _ in 0..<2 {
      let client = try await RawTLSClient.connect(port: bPort, security: try cluster.tls("n3"), expecting: NodeID("n2"))
      try await client.sendHello("n3")
      guard case .accepted = try await client.answer() else {
        Issue.record("expected an acceptance")
        return
      }
      clients.append(client)
    }
    let third = try await RawTLSClient.connect(port: bPort, security: try cluster.tls("n3"), expecting: NodeID("n2"))
    try await third.sendHello("n3")
    guard case .refused(let refusal) = try await third.answer() else {
      Issue.record("expected a refusal")
      return
    }
    #expect(refusal.reason == .tooManyConnections)
    // Closing one makes room again.
    try await clients[0].channel.close()
    try await eventually("n2 to notice the closed connection") { await b.inboundPeers() == [NodeID("n3")] }
    let fourth = try await RawTLSClient.connect(port: bPort, security: try cluster.tls("n3"), expecting: NodeID("n2"))
    try await fourth.sendHello("n3")
    try await eventually("the fourth to be accepted") {
      guard let answer = try? await fourth.answer() else { return false }
      return answer == .accepted(Acceptance(protocolVersion: 2, nodeID: NodeID("n2"), clusterID: ""))
    }
    await b.shutdown()
  }

  @Test func unauthenticatedConnectionsAreCappedBeforeTheHandshake() async throws {
    let cluster = try TestCluster()
    let b = transport(
      "n2", security: try cluster.tls("n2"), tune: { $0.maximumUnauthenticatedConnections = 3 }, handler: { _, _, _ in }
    )
    let bPort = try await b.start()
    func connect() async throws -> any Channel {
      try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton).connect(host: "127.0.0.1", port: bPort)
        .get()
    }
    // Three idle TCP connections that never start TLS hold every unauthenticated slot...
    var idle: [any Channel] = []
    for held in 1...3 {
      idle.append(try await connect())
      // Accepted connections are set up on several event loops: wait for each, so the order holds.
      try await eventually("slot \(held) to be taken") { b.unauthenticatedCount == held }
    }
    // ...so the fourth is closed at once, before any handshake.
    let refused = try await connect()
    let clock = ContinuousClock()
    let start = clock.now
    try await eventually("the fourth connection to be closed") { !refused.isActive }
    // At once, not by a timeout (the idle ones close after the dead-link timeout, 4 s).
    #expect(clock.now - start < .seconds(2))
    #expect(idle.allSatisfy { $0.isActive })
    // A slot frees when one closes.
    try await idle[0].close()
    try await eventually("the slot to be released") { b.unauthenticatedCount == 2 }
    let next = try await connect()
    try await eventually("n2 to take the new connection") { b.unauthenticatedCount == 3 }
    #expect(next.isActive)
    for channel in idle.dropFirst() + [next] { try? await channel.close() }
    await b.shutdown()
  }
}
