import Foundation
import TealTLS
import TealTestSupport
import TealWire
import Testing

@testable import TealTransport

@Suite("Certificate deny list and TLS reload", .serialized)
struct RevocationAndReloadTests {
  @Test func revokedCertificateIsCutOffAndRefused() async throws {
    let cluster = try TestCluster()
    let inbox = Inbox()
    let (a, b) = try await connectedPair(cluster, a: { _, _, _ in }, b: { await inbox.append($0, $1, $2) })
    let n1 = try cluster.certificates.configuration(for: NodeID("n1")).certificateChain[0]
    await b.setRevokedSerials([n1.serialNumber])
    #expect(await b.inboundPeers().isEmpty)
    try await eventually("n1 to be refused as revoked") {
      await a.linkStatus(NodeID("n2"))?.lastRefusal?.reason == .certificateRevoked
    }
    for _ in 0..<10 { try? await a.send([1], on: .raft, to: NodeID("n2")) }
    #expect(await inbox.count == 0)
    // n2 also refuses to talk to n1 when it dials: its link to n1 never comes up.
    #expect(await b.connectedPeers().isEmpty)
    await b.setRevokedSerials([])
    try await eventually("n1 to be accepted again") { await a.connectedPeers() == [NodeID("n2")] }
    await a.shutdown()
    await b.shutdown()
  }

  @Test func reloadedTrustRootsApplyToNewConnectionsWithoutARestart() async throws {
    let oldCluster = try TestCluster()
    let newCluster = try TestCluster()
    // n2 holds a certificate of the old CA and trusts only it; n1 was issued by the new CA and
    // trusts both (a CA rotation in progress).
    let b = transport("n2", security: try oldCluster.tls("n2"), handler: { _, _, _ in })
    let bPort = try await b.start()
    await b.addPeer(NodeID("n1"), address: PeerAddress(host: "127.0.0.1", port: 1))
    var aTLS = try newCluster.certificates.configuration(for: NodeID("n1"))
    aTLS.trustRoots += try oldCluster.certificates.configuration(for: NodeID("n1")).trustRoots
    let a = transport(
      "n1", security: .mutualTLS(try TLSContext(configuration: aTLS)),
      peers: [NodeID("n2"): PeerAddress(host: "127.0.0.1", port: bPort)], handler: { _, _, _ in })
    try await a.start()
    try await eventually("n1 to fail at least twice") {
      (await a.linkStatus(NodeID("n2"))?.consecutiveFailures ?? 0) >= 2
    }
    #expect(await a.connectedPeers().isEmpty)

    var bTLS = try oldCluster.certificates.configuration(for: NodeID("n2"))
    bTLS.trustRoots += aTLS.trustRoots
    await b.updateSecurity(.mutualTLS(try TLSContext(configuration: bTLS)))
    try await eventually("n1 to connect after n2 reloaded") { await a.connectedPeers() == [NodeID("n2")] }
    await a.shutdown()
    await b.shutdown()
  }
}
