import Foundation
import NIOCore
import NIOEmbedded
import TealTestSupport
import TealWire
import Testing

@testable import TealTLS

@Suite("TLS layer details: key update, alerts, CA leaves, load checks")
struct TLSDetailTests {
  let pki = TestPKI.shared

  func connectedPair() throws -> TLSPair {
    let pair = try TLSPair(client: pki.context("n1"), expecting: "n2", server: pki.context("n2"))
    pump(pair.client, pair.server)
    _ = try #require(try pair.serverOutcome?.get())
    _ = try #require(try pair.clientOutcome?.get())
    return pair
  }

  @Test func keyUpdateRequestIsAnsweredWhileReading() throws {
    let pair = try connectedPair()
    #expect(pair.clientHandler.requestKeyUpdate())
    try pair.client.writeOutbound(ByteBuffer(string: "after key update"))
    // Only client -> server: the server must answer the KeyUpdate on its own while reading.
    while let buffer = try pair.client.readOutbound(as: ByteBuffer.self) {
      try pair.server.writeInbound(buffer)
    }
    #expect(try pair.server.readInbound(as: ByteBuffer.self) == ByteBuffer(string: "after key update"))
    let answer = try pair.server.readOutbound(as: ByteBuffer.self)
    #expect(answer != nil, "the server produced no KeyUpdate of its own")
    // Both directions still work with the new keys.
    if let answer { try pair.client.writeInbound(answer) }
    try pair.server.writeOutbound(ByteBuffer(string: "reply"))
    pump(pair.client, pair.server)
    #expect(try pair.client.readInbound(as: ByteBuffer.self) == ByteBuffer(string: "reply"))
  }

  @Test func corruptRecordIsAnsweredWithAnAlertBeforeClosing() throws {
    let pair = try connectedPair()
    try pair.client.writeOutbound(ByteBuffer(string: "a record that will be damaged in transit"))
    var record = try #require(try pair.client.readOutbound(as: ByteBuffer.self))
    let middle = record.readerIndex + record.readableBytes / 2
    record.setInteger(record.getInteger(at: middle, as: UInt8.self)! ^ 0xff, at: middle)
    #expect(throws: TLSError.self) { try pair.server.writeInbound(record) }
    #expect(try pair.server.readOutbound(as: ByteBuffer.self) != nil, "no alert was sent")
    #expect(!pair.server.isActive)
  }

  @Test func nodeCertificateWithCATrueIsRefusedAsAPeer() throws {
    let pair = try TLSPair(client: pki.caLeafContext("n1"), expecting: "n2", server: pki.context("n2"))
    pump(pair.client, pair.server)
    let error = try #require(pair.serverOutcome?.failure as? TLSError)
    #expect(error == .peerNotAccepted(presented: "a CA certificate (CA:TRUE)"))
    let serverSide = try TLSPair(client: pki.context("n1"), expecting: "n2", server: pki.caLeafContext("n2"))
    pump(serverSide.client, serverSide.server)
    #expect(serverSide.clientOutcome?.failure as? TLSError == .peerNotAccepted(presented: "a CA certificate (CA:TRUE)"))
  }

  @Test func peerIdentityCarriesTheCertificateSerial() throws {
    let (certificate, key) = try pki.node("n1")
    let context = try TLSContext(
      configuration: .init(trustRoots: [pki.ca], certificateChain: [certificate], privateKey: key))
    let pair = try TLSPair(client: context, expecting: "n2", server: pki.context("n2"))
    pump(pair.client, pair.server)
    let identity = try #require(try pair.serverOutcome?.get())
    #expect(identity.serialNumber == certificate.serialNumber)
    #expect(identity.serialNumber.allSatisfy(\.isHexDigit) && identity.serialNumber.count > 8)
    #expect(!identity.serialNumber.hasPrefix("0"))
  }

  @Test func loadingAnExpiredOrCANodeCertificateFailsWithAClearError() throws {
    let dir = temporaryDirectory("certs")
    defer { try? FileManager.default.removeItem(atPath: dir) }
    try CertificateDirectory.initialize(at: dir, nodes: [NodeID("n1")])
    let directory = CertificateDirectory(path: dir)
    let ca = try TLSCertificate(pem: Array(try Data(contentsOf: URL(fileURLWithPath: "\(dir)/ca.pem"))))
    let caKey = try TLSPrivateKey(pem: Array(try Data(contentsOf: URL(fileURLWithPath: "\(dir)/ca.key"))))
    func replace(validity: CertificateIssuer.Validity, constraints: String) throws {
      let (certificate, key) = try CertificateIssuer.makeNodeCertificate(
        .init(id: NodeID("n1")), authority: ca, authorityKey: caKey, validity: validity, basicConstraints: constraints)
      try Data(try certificate.pemBytes()).write(to: URL(fileURLWithPath: "\(dir)/n1.pem"))
      try Data(try key.pemBytes()).write(to: URL(fileURLWithPath: "\(dir)/n1.key"))
    }
    try replace(
      validity: .init(notBeforeOffset: -2 * 86400, notAfterOffset: -86400), constraints: "critical,CA:FALSE")
    do {
      _ = try directory.configuration(for: NodeID("n1"))
      Issue.record("an expired certificate was loaded")
    } catch {
      #expect(error.description.contains("\(dir)/n1.pem: the node certificate expired at"))
      #expect(error.description.contains("GMT"))
    }
    try replace(validity: .node, constraints: "critical,CA:TRUE")
    #expect(
      throws: CertificateDirectoryError.invalidArgument(
        "\(dir)/n1.pem is a CA certificate (CA:TRUE), not a node certificate")
    ) {
      _ = try directory.configuration(for: NodeID("n1"))
    }
  }
}
