import Foundation
import Logging
import NIOPosix
import TealGossip
import TealMembership
import TealTLS
import TealTransport
import TealWire
import Testing

/// Gossip over the real peer transport: mutual TLS on loopback, real sockets, default SWIM timing.
@Suite("Membership over the TLS peer transport", .serialized)
struct MembershipOverTransportTests {
  struct Node {
    let id: NodeID
    let transport: PeerTransport
    let service: MembershipService
    let port: Int
  }

  @Test func threeNodesJoinOverTLSAndDetectACrashedNode() async throws {
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("teal-gossip-\(UUID())").path
    defer { try? FileManager.default.removeItem(atPath: directory) }
    let ids = ["n1", "n2", "n3"].map { NodeID($0) }
    try CertificateDirectory.initialize(at: directory, nodes: ids)
    let certificates = CertificateDirectory(path: directory)
    var logger = Logger(label: "test.gossip")
    logger.logLevel = .critical

    var nodes: [Node] = []
    for id in ids {
      var configuration = PeerTransportConfiguration(nodeID: id, listenHost: "127.0.0.1", listenPort: 0, peers: [:])
      configuration.backoff = Backoff(initialMilliseconds: 20, maximumMilliseconds: 200)
      let transport = PeerTransport(
        configuration: configuration,
        security: .mutualTLS(try TLSContext(configuration: certificates.configuration(for: id))),
        group: MultiThreadedEventLoopGroup.singleton, logger: logger)
      let port = try await transport.start()
      let service = try MembershipService(
        id: id,
        metadata: MemberMetadata(
          peerAddress: HostPort(host: "127.0.0.1", port: UInt16(port)), apiPort: 8080, version: "test"),
        settings: SWIMSettings(), sender: transport, logger: logger)
      // The service needs the transport (as its sender) and the transport's port (in its
      // metadata): it registers for the gossip channel once it exists, before any peer is known.
      transport.setHandler(service.messageHandler, for: .gossip)
      nodes.append(Node(id: id, transport: transport, service: service, port: port))
    }
    for node in nodes {
      for other in nodes where other.id != node.id {
        await node.transport.addPeer(other.id, address: PeerAddress(host: "127.0.0.1", port: other.port))
      }
    }
    for (index, node) in nodes.enumerated() { await node.service.start(seeds: index == 0 ? [] : [ids[0]]) }

    // Everyone learns of everyone, with the metadata each advertised (its real transport port).
    try await pollUntil("all three to see each other alive", within: .seconds(20)) {
      for node in nodes {
        let members = await node.service.snapshot().members
        guard members.count == 2, members.allSatisfy({ $0.status == .alive }) else { return false }
        for member in members {
          guard let peer = nodes.first(where: { $0.id == member.id }),
            member.metadata.peerAddress.port == UInt16(peer.port)
          else { return false }
        }
      }
      return true
    }

    // n3 crashes: its connections drop and it stops answering probes.
    let crashed = ContinuousClock.now
    await nodes[2].service.stop()
    await nodes[2].transport.shutdown()
    try await pollUntil("n1 and n2 to declare n3 dead", within: .seconds(20)) {
      for node in nodes.prefix(2) {
        guard await node.service.snapshot().members.first(where: { $0.id == ids[2] })?.status == .dead else {
          return false
        }
      }
      return true
    }
    // With default settings (probe 200 ms, suspicion ≥ 800 ms) this is seconds, not tens of them.
    #expect(ContinuousClock.now - crashed < .seconds(10))
    // The survivors still see each other alive.
    #expect(await nodes[0].service.snapshot().members.first { $0.id == ids[1] }?.status == .alive)

    for node in nodes.prefix(2) {
      await node.service.stop()
      await node.transport.shutdown()
    }
  }
}

private struct ConditionTimedOut: Error, CustomStringConvertible {
  let what: String
  var description: String { "timed out waiting for \(what)" }
}

private func pollUntil(_ what: String, within timeout: Duration, _ condition: () async -> Bool) async throws {
  let deadline = ContinuousClock.now + timeout
  while ContinuousClock.now < deadline {
    if await condition() { return }
    try await Task.sleep(for: .milliseconds(20))
  }
  if await condition() { return }
  throw ConditionTimedOut(what: what)
}
