import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import TealTLS
import TealTestSupport
import TealWire
import Testing

@testable import TealTransport

@Suite("Admission: eviction, acceptance, cluster id, versions, routing, source address", .serialized)
struct AdmissionTests {
  @Test func evictedNodeCanNoLongerDeliverOverItsOpenConnection() async throws {
    let cluster = try TestCluster()
    let inbox = Inbox()
    let (a, b) = try await connectedPair(cluster, a: { _, _, _ in }, b: { await inbox.append($0, $1, $2) })
    try await a.send(Array("before".utf8), on: .raft, to: NodeID("n2"))
    try await eventually("the message before eviction") { await inbox.count == 1 }
    #expect(await b.inboundPeers() == [NodeID("n1")])

    await b.removePeer(NodeID("n1"))
    // n1's connection to n2 was opened while n1 was a member; eviction closes it, and n1's
    // re-dials are refused with the reason.
    #expect(await b.inboundPeers().isEmpty)
    try await eventually("n1's link to be refused as a non-member") {
      await a.linkStatus(NodeID("n2"))?.lastRefusal?.reason == .notMember
    }
    #expect(await a.connectedPeers().isEmpty)
    for _ in 0..<20 { try? await a.send(Array("after".utf8), on: .raft, to: NodeID("n2")) }
    #expect(await inbox.messages.map(\.payload) == [Array("before".utf8)])
    await a.shutdown()
    await b.shutdown()
  }

  /// Gossip and Raft start beside the transport: a send to a configured peer before the listener is
  /// up is "unavailable" (try later), not "unknown" (a configuration error, logged as one).
  @Test func aSendToAConfiguredPeerBeforeStartIsUnavailableNotUnknown() async throws {
    let cluster = try TestCluster()
    let a = transport(
      "n1", security: try cluster.tls("n1"), peers: [NodeID("n2"): PeerAddress(host: "127.0.0.1", port: 1)],
      handler: { _, _, _ in })
    await #expect(throws: PeerSendError.peerUnavailable(NodeID("n2"))) {
      try await a.send([1], on: .raft, to: NodeID("n2"))
    }
    await #expect(throws: PeerSendError.unknownPeer(NodeID("n9"))) {
      try await a.send([1], on: .raft, to: NodeID("n9"))
    }
    await a.shutdown()
  }

  @Test func ownIdInThePeerListIsIgnored() async throws {
    let cluster = try TestCluster()
    let a = transport(
      "n1", security: try cluster.tls("n1"), peers: [NodeID("n1"): PeerAddress(host: "127.0.0.1", port: 1)],
      handler: { _, _, _ in })
    try await a.start()
    #expect(await a.linkStatus(NodeID("n1")) == nil)
    await #expect(throws: PeerSendError.unknownPeer(NodeID("n1"))) {
      try await a.send([1], on: .raft, to: NodeID("n1"))
    }
    await a.shutdown()
  }

  @Test func memberSetChangeRechecksOpenConnections() async throws {
    let cluster = try TestCluster()
    let inbox = Inbox()
    let (a, b) = try await connectedPair(cluster, a: { _, _, _ in }, b: { await inbox.append($0, $1, $2) })
    await b.setPeers([:])
    #expect(await b.inboundPeers().isEmpty)
    try await eventually("n1 to see its link refused") { await a.connectedPeers().isEmpty }
    await a.shutdown()
    await b.shutdown()
  }

  @Test func refusedDiallerNeverCountsAsConnectedAndBacksOffToTheMaximum() async throws {
    let cluster = try TestCluster()
    let inbox = Inbox()
    let b = transport("n2", security: try cluster.tls("n2"), handler: { await inbox.append($0, $1, $2) })
    let bPort = try await b.start()
    // n3 holds a certificate from the cluster CA but is not a member of n2's configuration.
    let outsider = transport(
      "n3", security: try cluster.tls("n3"), peers: [NodeID("n2"): PeerAddress(host: "127.0.0.1", port: bPort)],
      tune: { $0.backoff = Backoff(initialMilliseconds: 1, maximumMilliseconds: 400) }, handler: { _, _, _ in })
    try await outsider.start()
    try await eventually("the refusal") { await outsider.linkStatus(NodeID("n2"))?.lastRefusal != nil }
    let refusal = try #require(await outsider.linkStatus(NodeID("n2"))?.lastRefusal)
    #expect(refusal.reason == .notMember)
    #expect(refusal.detail.contains("n3"))
    #expect(refusal.supportedVersions == PeerProtocol.supportedVersions)
    // Watch for a while: never connected, and attempts spaced by the maximum backoff (200-400
    // ms), not the 1 ms doubling a failed connection would restart from.
    let failuresBefore = try #require(await outsider.linkStatus(NodeID("n2"))?.consecutiveFailures)
    let clock = ContinuousClock()
    let end = clock.now + .milliseconds(800)
    while clock.now < end {
      #expect(await outsider.connectedPeers().isEmpty)
      try? await outsider.send([1], on: .raft, to: NodeID("n2"))
      try await Task.sleep(for: .milliseconds(5))
    }
    let failuresAfter = try #require(await outsider.linkStatus(NodeID("n2"))?.consecutiveFailures)
    #expect(failuresAfter - failuresBefore <= 5)
    #expect(await inbox.count == 0)
    await outsider.shutdown()
    await b.shutdown()
  }

  @Test func nodeOfAnotherClusterIsRefusedWithThatReason() async throws {
    let cluster = try TestCluster()
    let inbox = Inbox()
    let b = transport(
      "n2", security: try cluster.tls("n2"), tune: { $0.clusterID = "blue" },
      handler: { await inbox.append($0, $1, $2) }
    )
    let bPort = try await b.start()
    await b.addPeer(NodeID("n1"), address: PeerAddress(host: "127.0.0.1", port: 1))
    let a = transport(
      "n1", security: try cluster.tls("n1"), peers: [NodeID("n2"): PeerAddress(host: "127.0.0.1", port: bPort)],
      tune: { $0.clusterID = "green" }, handler: { _, _, _ in })
    try await a.start()
    try await eventually("the refusal") { await a.linkStatus(NodeID("n2"))?.lastRefusal != nil }
    let refusal = try #require(await a.linkStatus(NodeID("n2"))?.lastRefusal)
    #expect(refusal.reason == .clusterMismatch)
    #expect(refusal.clusterID == "blue")
    #expect(refusal.detail == "cluster 'green' is not this node's cluster 'blue'")
    #expect(await a.connectedPeers().isEmpty)
    #expect(await b.inboundPeers().isEmpty)
    await a.shutdown()
    await b.shutdown()
  }

  @Test func versionNegotiationPicksTheHighestCommonVersion() async throws {
    #expect(PeerProtocol.negotiate(2...3, 2...2) == 2)
    #expect(PeerProtocol.negotiate(2...5, 3...7) == 5)
    #expect(PeerProtocol.negotiate(3...3, 2...2) == nil)

    let cluster = try TestCluster()
    // A newer node (2-3) and an older one (2) talk version 2: a rolling upgrade does not partition.
    let (a, b) = try await connectedPair(
      cluster, tuneA: { $0.protocolVersions = 2...3 }, a: { _, _, _ in }, b: { _, _, _ in })
    #expect(await a.linkStatus(NodeID("n2"))?.protocolVersion == 2)
    #expect(await b.linkStatus(NodeID("n1"))?.protocolVersion == 2)
    await a.shutdown()
    await b.shutdown()

    // No overlap: refused, and the refusal says what the listener speaks.
    let old = transport("n2", security: try cluster.tls("n2"), handler: { _, _, _ in })
    let oldPort = try await old.start()
    await old.addPeer(NodeID("n1"), address: PeerAddress(host: "127.0.0.1", port: 1))
    let future = transport(
      "n1", security: try cluster.tls("n1"), peers: [NodeID("n2"): PeerAddress(host: "127.0.0.1", port: oldPort)],
      tune: { $0.protocolVersions = 3...4 }, handler: { _, _, _ in })
    try await future.start()
    try await eventually("the refusal") { await future.linkStatus(NodeID("n2"))?.lastRefusal != nil }
    let refusal = try #require(await future.linkStatus(NodeID("n2"))?.lastRefusal)
    #expect(refusal.reason == .noCommonProtocolVersion)
    #expect(refusal.supportedVersions == PeerProtocol.supportedVersions)
    await future.shutdown()
    await old.shutdown()
  }

  @Test func rawHelloWithAnotherNodesIdIsRefused() async throws {
    let cluster = try TestCluster()
    let b = transport("n2", security: try cluster.tls("n2"), handler: { _, _, _ in })
    let bPort = try await b.start()
    await b.addPeer(NodeID("n1"), address: PeerAddress(host: "127.0.0.1", port: 1))
    await b.addPeer(NodeID("n3"), address: PeerAddress(host: "127.0.0.1", port: 1))
    let client = try await RawTLSClient.connect(port: bPort, security: try cluster.tls("n3"), expecting: NodeID("n2"))
    try await client.sendHello("n1")
    guard case .refused(let refusal) = try await client.answer() else {
      Issue.record("expected a refusal")
      return
    }
    #expect(refusal.reason == .identityMismatch)
    try await eventually("the connection to close") { !client.channel.isActive }
    await b.shutdown()
  }

  @Test func handlersRegisteredAfterInitReceiveTheirChannels() async throws {
    let cluster = try TestCluster()
    let raft = Inbox()
    let gossip = Inbox()
    var configuration = PeerTransportConfiguration(
      nodeID: NodeID("n2"), listenHost: "127.0.0.1", listenPort: 0, peers: [:])
    configuration.backoff = Backoff(initialMilliseconds: 20, maximumMilliseconds: 200)
    let b = PeerTransport(
      configuration: configuration, security: try cluster.tls("n2"), group: MultiThreadedEventLoopGroup.singleton,
      logger: quietLogger())
    b.setHandler({ await raft.append($0, $1, $2) }, for: .raft)
    b.setHandler({ await gossip.append($0, $1, $2) }, for: .gossip)
    let bPort = try await b.start()
    await b.addPeer(NodeID("n1"), address: PeerAddress(host: "127.0.0.1", port: 1))
    let a = transport(
      "n1", security: try cluster.tls("n1"), peers: [NodeID("n2"): PeerAddress(host: "127.0.0.1", port: bPort)],
      handler: { _, _, _ in })
    try await a.start()
    try await eventually("n1 to connect") { await a.connectedPeers() == [NodeID("n2")] }
    try await a.send([1], on: .raft, to: NodeID("n2"))
    try await a.send([2], on: .gossip, to: NodeID("n2"))
    try await a.send([3], on: .control, to: NodeID("n2"))
    try await a.send([4], on: .raft, to: NodeID("n2"))
    try await eventually("raft and gossip messages") {
      let raftCount = await raft.count
      let gossipCount = await gossip.count
      return raftCount == 2 && gossipCount == 1
    }
    #expect(await raft.messages.map(\.payload) == [[1], [4]])
    #expect(await gossip.messages.map(\.payload) == [[2]])
    // Control has no handler: its message is dropped and counted.
    #expect(b.router.droppedCount(on: .control) == 1)
    await a.shutdown()
    await b.shutdown()
  }

  @Test func diallerBindsItsListenAddressAsTheSourceAddress() async throws {
    let cluster = try TestCluster()
    let seen = NIOLockedValueBox<[String]>([])
    let server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
      .childChannelInitializer { channel in
        seen.withLockedValue { $0.append(channel.remoteAddress?.ipAddress ?? "?") }
        return channel.close()
      }
      .bind(host: "127.0.0.1", port: 0).get()
    let port = try #require(server.localAddress?.port)
    var configuration = PeerTransportConfiguration(
      nodeID: NodeID("n1"), listenHost: "127.0.0.2", listenPort: 0,
      peers: [NodeID("n2"): PeerAddress(host: "127.0.0.1", port: port)])
    configuration.backoff = Backoff(initialMilliseconds: 20, maximumMilliseconds: 200)
    let a = PeerTransport(
      configuration: configuration, security: try cluster.tls("n1"), group: MultiThreadedEventLoopGroup.singleton,
      logger: quietLogger())
    try await a.start()
    try await eventually("a connection attempt") { !seen.withLockedValue { $0 }.isEmpty }
    #expect(seen.withLockedValue { $0 }.allSatisfy { $0 == "127.0.0.2" })
    await a.shutdown()
    try await server.close()
  }
}
