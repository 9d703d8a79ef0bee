import NIOCore
import NIOEmbedded
import TealWire

@testable import TealTLS

/// A cluster CA with node certificates, plus the bad certificates the refusal tests need.
struct TestPKI: Sendable {
  let ca: TLSCertificate
  let caKey: TLSPrivateKey
  let otherCA: TLSCertificate
  let otherCAKey: TLSPrivateKey

  static let shared: TestPKI = {
    do { return try TestPKI() } catch { fatalError("test PKI: \(error)") }
  }()

  init() throws {
    (ca, caKey) = try CertificateIssuer.makeCertificateAuthority(commonName: "Test CA")
    (otherCA, otherCAKey) = try CertificateIssuer.makeCertificateAuthority(commonName: "Intruder CA")
  }

  func node(
    _ id: String, signedByOther: Bool = false, validity: CertificateIssuer.Validity = .node
  ) throws -> (TLSCertificate, TLSPrivateKey) {
    try CertificateIssuer.makeNodeCertificate(
      .init(id: NodeID(id)), authority: signedByOther ? otherCA : ca, authorityKey: signedByOther ? otherCAKey : caKey,
      validity: validity)
  }

  /// A context whose certificate names `id` but says CA:TRUE.
  func caLeafContext(_ id: String) throws -> TLSContext {
    let (certificate, key) = try CertificateIssuer.makeNodeCertificate(
      .init(id: NodeID(id)), authority: ca, authorityKey: caKey, validity: .node, basicConstraints: "critical,CA:TRUE")
    return try TLSContext(configuration: .init(trustRoots: [ca], certificateChain: [certificate], privateKey: key))
  }

  func context(_ id: String, signedByOther: Bool = false, validity: CertificateIssuer.Validity = .node) throws
    -> TLSContext
  {
    let (certificate, key) = try node(id, signedByOther: signedByOther, validity: validity)
    return try TLSContext(configuration: .init(trustRoots: [ca], certificateChain: [certificate], privateKey: key))
  }
}

/// Moves bytes between two embedded channels until neither has anything more to say.
func pump(_ a: EmbeddedChannel, _ b: EmbeddedChannel, chunkSize: Int? = nil) {
  var progressed = true
  while progressed {
    progressed = false
    for (from, to) in [(a, b), (b, a)] {
      while let buffer = try? from.readOutbound(as: ByteBuffer.self) {
        progressed = true
        guard to.isActive else { continue }
        if let chunkSize {
          var rest = buffer
          while let piece = rest.readSlice(length: min(chunkSize, rest.readableBytes)), piece.readableBytes > 0 {
            _ = try? to.writeInbound(piece)
          }
        } else {
          _ = try? to.writeInbound(buffer)
        }
      }
    }
  }
}

/// The result of a future on an embedded event loop, if it has completed.
func outcome<T: Sendable>(_ future: EventLoopFuture<T>) -> Result<T, Error>? {
  var result: Result<T, Error>?
  future.assumeIsolated().whenComplete { result = $0 }
  return result
}

/// A connected client/server pair of embedded channels with TLS handlers.
struct TLSPair {
  let client: EmbeddedChannel
  let server: EmbeddedChannel
  let clientHandler: TLSHandler
  let serverHandler: TLSHandler

  init(
    client clientContext: TLSContext, expecting: String, server serverContext: TLSContext,
    accept: @escaping @Sendable (NodeID) -> Bool = { _ in true }
  ) throws {
    clientHandler = TLSHandler(context: clientContext, role: .client(expecting: NodeID(expecting)))
    serverHandler = TLSHandler(context: serverContext, role: .server(accept: accept))
    client = EmbeddedChannel(handler: clientHandler)
    server = EmbeddedChannel(handler: serverHandler)
    try server.connect(to: .init(ipAddress: "127.0.0.1", port: 1)).wait()
    try client.connect(to: .init(ipAddress: "127.0.0.1", port: 2)).wait()
  }

  var clientOutcome: Result<PeerIdentity, Error>? { outcome(clientHandler.handshakeFuture) }
  var serverOutcome: Result<PeerIdentity, Error>? { outcome(serverHandler.handshakeFuture) }
}

extension Result {
  var failure: Failure? {
    if case .failure(let error) = self { return error }
    return nil
  }
}
