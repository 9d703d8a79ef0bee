import NIOCore
import NIOEmbedded
import TealWire
import Testing

@testable import TealTLS

@Suite("Mutual TLS handshakes, back to back in memory")
struct HandshakeTests {
  let pki = TestPKI.shared

  @Test func nodesWithCertificatesFromTheClusterCAAuthenticateEachOther() throws {
    let pair = try TLSPair(client: pki.context("n1"), expecting: "n2", server: pki.context("n2"))
    pump(pair.client, pair.server)
    let client = try #require(try pair.clientOutcome?.get())
    let server = try #require(try pair.serverOutcome?.get())
    #expect(client.nodeID == NodeID("n2"))
    #expect(server.nodeID == NodeID("n1"))
    #expect(client.protocolVersion == "TLSv1.3")

    // Application data flows both ways after the handshake.
    try pair.client.writeOutbound(ByteBuffer(string: "ping from n1"))
    pump(pair.client, pair.server)
    #expect(try pair.server.readInbound(as: ByteBuffer.self) == ByteBuffer(string: "ping from n1"))
    try pair.server.writeOutbound(ByteBuffer(string: "pong from n2"))
    pump(pair.client, pair.server)
    #expect(try pair.client.readInbound(as: ByteBuffer.self) == ByteBuffer(string: "pong from n2"))
  }

  @Test func handshakeSurvivesOneByteAtATimeDelivery() throws {
    let pair = try TLSPair(client: pki.context("n1"), expecting: "n2", server: pki.context("n2"))
    pump(pair.client, pair.server, chunkSize: 1)
    #expect(try pair.serverOutcome?.get().nodeID == NodeID("n1"))
    var payload = ByteBuffer()
    payload.writeBytes((0..<100_000).map { UInt8(truncatingIfNeeded: $0 &* 31) })
    try pair.client.writeOutbound(payload)
    pump(pair.client, pair.server, chunkSize: 7)
    var received = ByteBuffer()
    while var chunk = try pair.server.readInbound(as: ByteBuffer.self) { received.writeBuffer(&chunk) }
    #expect(received == payload)
  }

  @Test func writesBeforeTheHandshakeAreHeldThenDelivered() throws {
    let pair = try TLSPair(client: pki.context("n1"), expecting: "n2", server: pki.context("n2"))
    pair.client.writeAndFlush(ByteBuffer(string: "early"), promise: nil)
    pump(pair.client, pair.server)
    #expect(try pair.server.readInbound(as: ByteBuffer.self) == ByteBuffer(string: "early"))
  }

  @Test func clientWithoutACertificateIsRefused() throws {
    let anonymous = try TLSContext(configuration: .init(trustRootsOnly: [pki.ca]))
    let pair = try TLSPair(client: anonymous, expecting: "n2", server: pki.context("n2"))
    pump(pair.client, pair.server)
    let error = try #require(pair.serverOutcome?.failure as? TLSError)
    guard case .handshakeFailed(let reason) = error else {
      Issue.record("unexpected \(error)")
      return
    }
    #expect(reason.description.contains("peer did not return a certificate"))
    #expect(!pair.server.isActive)
    #expect(try pair.server.readInbound(as: ByteBuffer.self) == nil)
  }

  @Test func certificateFromAnotherCAIsRefused() throws {
    let pair = try TLSPair(client: pki.context("n1", signedByOther: true), expecting: "n2", server: pki.context("n2"))
    pump(pair.client, pair.server)
    let error = try #require(pair.serverOutcome?.failure as? TLSError)
    #expect(error.description.contains("certificate verify failed"))
    #expect(error.description.contains("unable to get local issuer certificate"))
    #expect(!pair.server.isActive)
  }

  @Test func serverCertificateFromAnotherCAIsRefusedByTheClient() throws {
    let pair = try TLSPair(client: pki.context("n1"), expecting: "n2", server: pki.context("n2", signedByOther: true))
    pump(pair.client, pair.server)
    let error = try #require(pair.clientOutcome?.failure as? TLSError)
    #expect(error.description.contains("certificate verify failed"))
  }

  @Test func expiredCertificateIsRefused() throws {
    let expired = CertificateIssuer.Validity(notBeforeOffset: -2 * 86400, notAfterOffset: -86400)
    let pair = try TLSPair(client: pki.context("n1", validity: expired), expecting: "n2", server: pki.context("n2"))
    pump(pair.client, pair.server)
    let error = try #require(pair.serverOutcome?.failure as? TLSError)
    #expect(error.description.contains("certificate has expired"))
  }

  @Test func certificateNotYetValidIsRefused() throws {
    let future = CertificateIssuer.Validity(notBeforeOffset: 86400, notAfterOffset: 2 * 86400)
    let pair = try TLSPair(client: pki.context("n1"), expecting: "n2", server: pki.context("n2", validity: future))
    pump(pair.client, pair.server)
    let error = try #require(pair.clientOutcome?.failure as? TLSError)
    #expect(error.description.contains("certificate is not yet valid"))
  }

  @Test func serverNamingAnotherNodeIsRefusedByTheClient() throws {
    let pair = try TLSPair(client: pki.context("n1"), expecting: "n3", server: pki.context("n2"))
    pump(pair.client, pair.server)
    #expect(pair.clientOutcome?.failure as? TLSError == .peerIdentityMismatch(expected: NodeID("n3"), presented: "n2"))
    #expect(!pair.client.isActive)
    // Nothing the client wrote may reach the impostor.
    #expect(try pair.server.readInbound(as: ByteBuffer.self) == nil)
  }

  @Test func serverRefusesANodeItDoesNotAccept() throws {
    let pair = try TLSPair(
      client: pki.context("n9"), expecting: "n2", server: pki.context("n2"), accept: { $0 != NodeID("n9") })
    pair.client.writeAndFlush(ByteBuffer(string: "should never arrive"), promise: nil)
    pump(pair.client, pair.server)
    #expect(pair.serverOutcome?.failure as? TLSError == .peerNotAccepted(presented: "n9"))
    #expect(try pair.server.readInbound(as: ByteBuffer.self) == nil)
  }

  @Test func tls12OfferedIsRefused() throws {
    let (certificate, key) = try pki.node("n1")
    var legacy = TLSConfiguration(trustRoots: [pki.ca], certificateChain: [certificate], privateKey: key)
    legacy.minimumProtocolVersion = TLSConfiguration.tls12
    legacy.maximumProtocolVersion = TLSConfiguration.tls12
    let pair = try TLSPair(client: TLSContext(configuration: legacy), expecting: "n2", server: pki.context("n2"))
    pump(pair.client, pair.server)
    let error = try #require(pair.serverOutcome?.failure as? TLSError)
    #expect(error.description.contains("unsupported protocol"))
    #expect(pair.clientOutcome?.failure != nil)
  }

  @Test func handshakeTimesOut() throws {
    let handler = TLSHandler(
      context: try pki.context("n2"), role: .server(accept: { _ in true }), handshakeTimeout: .milliseconds(500))
    let channel = EmbeddedChannel(handler: handler)
    try channel.connect(to: .init(ipAddress: "127.0.0.1", port: 1)).wait()
    channel.embeddedEventLoop.advanceTime(by: .milliseconds(499))
    #expect(outcome(handler.handshakeFuture) == nil)
    channel.embeddedEventLoop.advanceTime(by: .milliseconds(2))
    #expect(outcome(handler.handshakeFuture)?.failure as? TLSError == .handshakeTimeout(milliseconds: 500))
    #expect(!channel.isActive)
  }

  @Test func closeSendsCloseNotifyAndThePeerAnswers() throws {
    let pair = try TLSPair(client: pki.context("n1"), expecting: "n2", server: pki.context("n2"))
    pump(pair.client, pair.server)
    let closed = pair.client.close()
    pump(pair.client, pair.server)
    try closed.wait()
    #expect(!pair.server.isActive)
    // The server saw a clean close_notify, not a truncation.
    #expect(throws: Never.self) { try pair.server.throwIfErrorCaught() }
  }

  @Test func endOfStreamWithoutCloseNotifyIsReportedAsUnclean() throws {
    let pair = try TLSPair(client: pki.context("n1"), expecting: "n2", server: pki.context("n2"))
    pump(pair.client, pair.server)
    pair.server.pipeline.fireChannelInactive()
    #expect(throws: TLSError.uncleanShutdown) { try pair.server.throwIfErrorCaught() }
  }

  @Test func corruptedRecordIsAProtocolError() throws {
    let pair = try TLSPair(client: pki.context("n1"), expecting: "n2", server: pki.context("n2"))
    pump(pair.client, pair.server)
    try pair.client.writeOutbound(ByteBuffer(string: "some application data"))
    var record = try #require(try pair.client.readOutbound(as: ByteBuffer.self))
    let last = record.writerIndex - 1
    record.setInteger(record.getInteger(at: last, as: UInt8.self)! ^ 0xff, at: last)
    #expect(throws: TLSError.self) { try pair.server.writeInbound(record) }
    #expect(!pair.server.isActive)
  }
}
