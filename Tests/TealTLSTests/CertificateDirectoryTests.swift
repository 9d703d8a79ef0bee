import Foundation
import TealTestSupport
import TealWire
import Testing

@testable import TealTLS

@Suite("Certificate directory (teal certs)")
struct CertificateDirectoryTests {
  @Test func initWritesACAAndNodeCertificatesThatOpenSSLVerifies() throws {
    let dir = temporaryDirectory("certs")
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let written = try CertificateDirectory.initialize(at: dir, nodes: ["n1", "n2", "n3"].map { NodeID($0) })
    #expect(written.count == 8)
    for node in ["n1", "n2", "n3"] {
      let result = try run(opensslPath, ["verify", "-CAfile", "\(dir)/ca.pem", "\(dir)/\(node).pem"])
      #expect(result.status == 0, "openssl verify \(node).pem: \(result.output)")
      #expect(result.output.contains("\(node).pem: OK"))
    }
  }

  @Test func privateKeysAreMode0600AndCertificatesCarryTheNodeIdentity() throws {
    let dir = temporaryDirectory("certs")
    defer { try? FileManager.default.removeItem(atPath: dir) }
    try CertificateDirectory.initialize(
      at: dir, nodes: [NodeID("n1"), NodeID("n2")], addresses: [NodeID("n2"): ["127.0.0.2"]])
    for file in ["ca.key", "n1.key", "n2.key"] {
      let attributes = try FileManager.default.attributesOfItem(atPath: "\(dir)/\(file)")
      #expect((attributes[.posixPermissions] as? Int) == 0o600, "\(file)")
    }
    let n2 = try TLSCertificate(pem: Array(try Data(contentsOf: URL(fileURLWithPath: "\(dir)/n2.pem"))))
    #expect(n2.nodeID == NodeID("n2"))
    #expect(
      n2.subjectAlternativeNames == ["URI:spiffe://teal/node/n2", "DNS:n2", "DNS:localhost", "IP:127.0.0.2"])
    #expect(!n2.isCertificateAuthority)
    let text = try run(opensslPath, ["x509", "-in", "\(dir)/n2.pem", "-noout", "-text"]).output
    #expect(text.contains("ASN1 OID: prime256v1"))
    #expect(text.contains("TLS Web Server Authentication, TLS Web Client Authentication"))
    let ca = try run(opensslPath, ["x509", "-in", "\(dir)/ca.pem", "-noout", "-text"]).output
    #expect(ca.contains("CA:TRUE"))
  }

  @Test func initOverAnExistingCARefusesAndChangesNothing() throws {
    let dir = temporaryDirectory("certs")
    defer { try? FileManager.default.removeItem(atPath: dir) }
    try CertificateDirectory.initialize(at: dir, nodes: [NodeID("n1")])
    let before = try Data(contentsOf: URL(fileURLWithPath: "\(dir)/ca.key"))
    #expect(throws: CertificateDirectoryError.alreadyInitialized("\(dir)/ca.pem")) {
      try CertificateDirectory.initialize(at: dir, nodes: [NodeID("n1"), NodeID("n2")])
    }
    #expect(try Data(contentsOf: URL(fileURLWithPath: "\(dir)/ca.key")) == before)
    #expect(!FileManager.default.fileExists(atPath: "\(dir)/n2.pem"))
  }

  @Test func addIssuesAnotherNodeWithTheSameCAAndRefusesDuplicates() throws {
    let dir = temporaryDirectory("certs")
    defer { try? FileManager.default.removeItem(atPath: dir) }
    try CertificateDirectory.initialize(at: dir, nodes: [NodeID("n1")])
    let directory = CertificateDirectory(path: dir)
    try directory.addNode(NodeID("n4"), addresses: ["127.0.0.4"])
    #expect(try run(opensslPath, ["verify", "-CAfile", "\(dir)/ca.pem", "\(dir)/n4.pem"]).status == 0)
    #expect(throws: CertificateDirectoryError.nodeExists(NodeID("n4"), "\(dir)/n4.pem")) {
      try directory.addNode(NodeID("n4"))
    }
    // The added node's credentials load into a working TLS context.
    _ = try TLSContext(configuration: directory.configuration(for: NodeID("n4")))
  }

  @Test func addWithoutACAExplainsWhatIsMissing() throws {
    let dir = temporaryDirectory("certs")
    #expect {
      try CertificateDirectory(path: dir).addNode(NodeID("n4"))
    } throws: { error in
      "\(error)".contains("\(dir)/ca.pem") && "\(error)".contains("No such file")
    }
  }

  @Test func credentialsOfAnotherNodeAreRejectedOnLoad() throws {
    let dir = temporaryDirectory("certs")
    defer { try? FileManager.default.removeItem(atPath: dir) }
    try CertificateDirectory.initialize(at: dir, nodes: [NodeID("n1"), NodeID("n2")])
    try FileManager.default.removeItem(atPath: "\(dir)/n1.pem")
    try FileManager.default.copyItem(atPath: "\(dir)/n2.pem", toPath: "\(dir)/n1.pem")
    #expect {
      _ = try CertificateDirectory(path: dir).configuration(for: NodeID("n1"))
    } throws: { error in
      "\(error)".contains("names node 'n2', not 'n1'")
    }
  }

  @Test func invalidAddressIsRefusedWithItsValue() throws {
    let (ca, key) = try CertificateIssuer.makeCertificateAuthority()
    #expect {
      _ = try CertificateIssuer.makeNodeCertificate(
        .init(id: NodeID("n1"), ipAddresses: ["300.1.1.1"]), authority: ca, authorityKey: key)
    } throws: { error in
      "\(error)".contains("'300.1.1.1' is not an IP address")
    }
  }
}
