import Foundation
import TealGossip
import TealMembership
import TealTLS
import TealTransportTesting
import TealWire
import Testing

// Issue 13, defect 2: records signed with the node key, verified against the node's certificate
// from the cluster CA.

private func directory(_ nodes: [String]) throws -> (CertificateDirectory, () -> Void) {
  let path = FileManager.default.temporaryDirectory.appendingPathComponent("teal-signing-\(UUID())").path
  try CertificateDirectory.initialize(at: path, nodes: nodes.map { NodeID($0) })
  return (CertificateDirectory(path: path), { try? FileManager.default.removeItem(atPath: path) })
}

@Suite struct RecordSigningTests {
  @Test func aRecordSignedByANodeVerifiesOnlyAgainstThatNodesCertificateFromTheClusterCA() throws {
    let (certificates, cleanup) = try directory(["n1", "n2", "n3"])
    defer { cleanup() }
    let (foreign, foreignCleanup) = try directory(["n1"])
    defer { foreignCleanup() }
    let n1 = try NodeRecordSigner(configuration: certificates.configuration(for: NodeID("n1")))
    let n2 = try NodeRecordSigner(configuration: certificates.configuration(for: NodeID("n2")))
    let impostor = try NodeRecordSigner(configuration: foreign.configuration(for: NodeID("n1")))
    let content = Array("alive#3".utf8)
    let signature = try n1.sign(content)
    #expect(signature.count <= 72)

    #expect(!n2.verify(signature: signature, over: content, by: NodeID("n1")), "no certificate of n1 yet")
    #expect(!n2.accept(certificateDER: n1.certificateDER, of: NodeID("n3")), "the certificate names n1")
    #expect(!n2.accept(certificateDER: impostor.certificateDER, of: NodeID("n1")), "another CA")
    #expect(!n2.accept(certificateDER: [0x30, 0x03, 1, 2, 3], of: NodeID("n1")), "not a certificate")
    #expect(n2.accept(certificateDER: n1.certificateDER, of: NodeID("n1")))
    #expect(n2.verify(signature: signature, over: content, by: NodeID("n1")))
    #expect(!n2.verify(signature: signature, over: Array("alive#4".utf8), by: NodeID("n1")))
    #expect(!n2.verify(signature: try impostor.sign(content), over: content, by: NodeID("n1")))
    #expect(!n2.verify(signature: [], over: content, by: NodeID("n1")))
  }

  @Test func servicesThatSignTheirRecordsJoinAndRejectAForgedRecord() async throws {
    let (certificates, cleanup) = try directory(["n1", "n2", "n3"])
    defer { cleanup() }
    var settings = SWIMSettings()
    settings.probeInterval = .milliseconds(50)
    settings.probeTimeout = .milliseconds(20)
    settings.pushPullInterval = .milliseconds(500)
    settings.joinRetryInterval = .milliseconds(100)
    let network = InMemoryPeerNetwork()
    var services: [MembershipService] = []
    for index in 1...3 {
      let id = NodeID("n\(index)")
      let authenticator = try CertificateRecordAuthenticator(configuration: certificates.configuration(for: id))
      let service = try MembershipService(
        id: id,
        metadata: MemberMetadata(
          peerAddress: HostPort(host: "127.0.0.\(index)", port: 7400), apiPort: 8080, version: "test"),
        settings: settings, sender: network.sender(for: id), authenticator: authenticator,
        authorizedMembers: [NodeID("n1"), NodeID("n2"), NodeID("n3")])
      await network.register(id, handler: service.messageHandler)
      services.append(service)
    }
    for (index, service) in services.enumerated() { await service.start(seeds: index == 0 ? [] : [NodeID("n1")]) }
    let deadline = ContinuousClock.now + .seconds(20)
    var converged = false
    while !converged && ContinuousClock.now < deadline {
      converged = true
      for service in services {
        let members = await service.snapshot().members
        if members.count != 2 || members.contains(where: { $0.status != .alive }) { converged = false }
      }
      if !converged { try await Task.sleep(for: .milliseconds(20)) }
    }
    #expect(converged)

    // n3 claims n2 is the leader of term 2^60 at a higher incarnation, unsigned: n1 ignores it.
    let n2 = try #require(await services[0].snapshot().members.first { $0.id == NodeID("n2") })
    var forged = n2
    forged.incarnation += 1
    forged.metadata.raftRole = .leader
    forged.metadata.raftTerm = 1 << 60
    await services[0].receive(
      from: NodeID("n3"), payload: SWIMMessage.gossip(updates: [MemberUpdate(member: forged)]).wireBytes())
    #expect(await services[0].snapshot().announcedLeader == nil)
    #expect(await services[0].statistics.updatesRejected > 0)
    for service in services { await service.stop() }
  }
}
