import TealGossip
import TealTLS
import TealWire

/// Gossip record signing with the node's TLS identity: records are signed with the node's ECDSA
/// P-256 key and verified against each member's certificate, accepted only if it chains to the
/// cluster CA and names the member. Certificates travel in push-pulls (`credential`).
///
/// ```swift
/// let tls = try CertificateDirectory(path: dir).configuration(for: nodeID)
/// let membership = try MembershipService(
///   id: nodeID, metadata: metadata, sender: transport,
///   authenticator: try CertificateRecordAuthenticator(configuration: tls))
/// ```
public struct CertificateRecordAuthenticator: SWIMRecordAuthenticator {
  public let signer: NodeRecordSigner

  public init(configuration: TLSConfiguration) throws(RecordSigningError) {
    signer = try NodeRecordSigner(configuration: configuration)
  }

  public init(signer: NodeRecordSigner) { self.signer = signer }

  public var credential: [UInt8] { signer.certificateDER }

  public func sign(_ content: [UInt8]) -> [UInt8]? { try? signer.sign(content) }

  public func accept(credential: [UInt8], of node: NodeID) -> Bool {
    signer.accept(certificateDER: credential, of: node)
  }

  public func verify(signature: [UInt8], over content: [UInt8], by node: NodeID) -> Bool {
    signer.verify(signature: signature, over: content, by: node)
  }
}
