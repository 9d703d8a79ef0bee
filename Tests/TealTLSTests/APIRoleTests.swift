import NIOCore
import NIOEmbedded
import TealWire
import Testing

@testable import TealTLS

/// The API's TLS roles: the server presents its node certificate and asks for none; the client
/// trusts the cluster CA only and requires a node certificate naming the host it dialled.
@Suite("TLS for the API (apiServer / apiClient roles)")
struct APIRoleTests {
  let pki = TestPKI.shared

  func pair(host: String, trusting roots: [TLSCertificate]? = nil) throws -> (
    client: EmbeddedChannel, server: EmbeddedChannel, clientHandler: TLSHandler, serverHandler: TLSHandler
  ) {
    let (certificate, key) = try pki.node("n1")
    let serverContext = try TLSContext(
      configuration: TLSConfiguration(trustRoots: [pki.ca], certificateChain: [certificate], privateKey: key)
        .forAPIServer)
    let clientContext = try TLSContext(configuration: TLSConfiguration(trustRootsOnly: roots ?? [pki.ca]))
    let clientHandler = TLSHandler(context: clientContext, role: .apiClient(host: host))
    let serverHandler = TLSHandler(context: serverContext, role: .apiServer)
    let client = EmbeddedChannel(handler: clientHandler)
    let server = EmbeddedChannel(handler: serverHandler)
    try server.connect(to: .init(ipAddress: "127.0.0.1", port: 1)).wait()
    try client.connect(to: .init(ipAddress: "127.0.0.1", port: 2)).wait()
    pump(client, server)
    return (client, server, clientHandler, serverHandler)
  }

  @Test func anAnonymousClientTrustingTheCAReachesTheNodeAndDataFlowsBothWays() throws {
    let (client, server, clientHandler, serverHandler) = try pair(host: "127.0.0.1")
    #expect(try outcome(clientHandler.handshakeFuture)?.get().nodeID == NodeID("n1"))
    #expect(outcome(serverHandler.handshakeFuture)?.failure as? TLSError == .anonymousPeer)
    try client.writeOutbound(ByteBuffer(string: "GET /health"))
    pump(client, server)
    #expect(try server.readInbound(as: ByteBuffer.self).map { String(buffer: $0) } == "GET /health")
    try server.writeOutbound(ByteBuffer(string: "200 OK"))
    pump(client, server)
    #expect(try client.readInbound(as: ByteBuffer.self).map { String(buffer: $0) } == "200 OK")
  }

  @Test func aCertificateThatDoesNotNameTheDialledHostIsRefused() throws {
    let (_, _, clientHandler, _) = try pair(host: "127.0.0.9")
    guard case .peerNotAccepted(let presented)? = outcome(clientHandler.handshakeFuture)?.failure as? TLSError else {
      Issue.record("expected peerNotAccepted, got \(String(describing: outcome(clientHandler.handshakeFuture)))")
      return
    }
    #expect(presented.contains("not a node certificate for 127.0.0.9"), "\(presented)")
  }

  @Test func aClientTrustingAnotherCAFailsTheHandshake() throws {
    let (_, _, clientHandler, _) = try pair(host: "127.0.0.1", trusting: [pki.otherCA])
    guard case .handshakeFailed(let error)? = outcome(clientHandler.handshakeFuture)?.failure as? TLSError else {
      Issue.record("expected handshakeFailed, got \(String(describing: outcome(clientHandler.handshakeFuture)))")
      return
    }
    #expect("\(error)".contains("certificate verify failed"), "\(error)")
  }

  @Test func betweenNodesAClientWithoutACertificateIsStillRefused() throws {
    // The node-to-node context keeps asking for (and requiring) the peer's certificate.
    let pairing = try TLSPair(
      client: TLSContext(configuration: TLSConfiguration(trustRootsOnly: [pki.ca])), expecting: "n1",
      server: pki.context("n1"))
    pump(pairing.client, pairing.server)
    // (In TLS 1.3 the client finishes its side first; the server's refusal is what counts.)
    guard case .handshakeFailed(let error)? = pairing.serverOutcome?.failure as? TLSError else {
      Issue.record("expected the server to refuse, got \(String(describing: pairing.serverOutcome))")
      return
    }
    #expect("\(error)".contains("certificate"), "\(error)")
  }
}
