import COpenSSL
import Foundation
import TealWire

/// A failure to set up record signing, naming what is wrong.
public struct RecordSigningError: Error, Hashable, Sendable, CustomStringConvertible {
  public let reason: String

  public init(_ reason: String) { self.reason = reason }

  public var description: String { "record signing: \(reason)" }
}

/// Signs small records (gossip's alive, leave and metadata records) with this node's ECDSA
/// P-256 key, and verifies other nodes' records against their certificates, each accepted only if
/// it chains to the cluster CA and names the node (`spiffe://teal/node/<id>`).
///
/// Signatures are ECDSA with SHA-256, DER-encoded (at most 72 bytes for P-256). Accepted
/// certificates are kept by node id, at most `maximumCertificates` of them; a newer valid
/// certificate for a node replaces the older one. Thread-safe.
public final class NodeRecordSigner: @unchecked Sendable {
  /// How many nodes' certificates are kept at most.
  public static let maximumCertificates = 4096

  public let node: NodeID
  /// This node's certificate, DER.
  public let certificateDER: [UInt8]
  private let key: TLSPrivateKey
  private let trustRoots: [TLSCertificate]
  private let lock = NSLock()
  /// Accepted certificates by node, with their DER to recognise a repeat cheaply.
  private var certificates: [NodeID: (der: [UInt8], certificate: TLSCertificate)] = [:]

  /// - Parameter configuration: the node's TLS configuration (its key, its certificate first in
  ///   the chain, and the cluster CA as trust roots), as `CertificateDirectory.configuration(for:)`
  ///   returns it.
  public init(configuration: TLSConfiguration) throws(RecordSigningError) {
    guard let key = configuration.privateKey else { throw RecordSigningError("the configuration has no private key") }
    guard let leaf = configuration.certificateChain.first else {
      throw RecordSigningError("the configuration has no certificate")
    }
    guard let node = leaf.nodeID else { throw RecordSigningError("the certificate names no node id") }
    guard !configuration.trustRoots.isEmpty else { throw RecordSigningError("the configuration has no trust roots") }
    guard let der = Self.der(of: leaf) else { throw RecordSigningError("the certificate of \(node) cannot be encoded") }
    self.node = node
    self.key = key
    self.trustRoots = configuration.trustRoots
    self.certificateDER = der
    guard Self.chainsToRoots(leaf, trustRoots) else {
      throw RecordSigningError("the certificate of \(node) does not chain to the configured CA")
    }
    certificates[node] = (der, leaf)
  }

  /// An ECDSA P-256 / SHA-256 signature over `content` with this node's key.
  public func sign(_ content: [UInt8]) throws(OpenSSLError) -> [UInt8] {
    OpenSSLError.clearQueue()
    let context = try check("create signing context", EVP_MD_CTX_new())
    defer { EVP_MD_CTX_free(context) }
    try check("initialise signing", EVP_DigestSignInit(context, nil, EVP_sha256(), nil, key.pointer))
    var length = 0
    try check(
      "size signature",
      content.withUnsafeBufferPointer { EVP_DigestSign(context, nil, &length, $0.baseAddress, $0.count) })
    var signature = [UInt8](repeating: 0, count: length)
    try check(
      "sign record",
      content.withUnsafeBufferPointer { input in
        signature.withUnsafeMutableBufferPointer {
          EVP_DigestSign(context, $0.baseAddress, &length, input.baseAddress, input.count)
        }
      })
    signature.removeLast(signature.count - length)
    return signature
  }

  /// Checks `der` as `node`'s certificate (it must parse, name `node` and chain to the cluster
  /// CA) and keeps it for `verify`. Returns whether it was accepted.
  public func accept(certificateDER der: [UInt8], of node: NodeID) -> Bool {
    lock.lock()
    let known = certificates[node]?.der
    let full = certificates.count >= Self.maximumCertificates
    lock.unlock()
    if known == der { return true }
    if known == nil && full { return false }
    guard let certificate = Self.parse(der: der), certificate.nodeID == node,
      Self.chainsToRoots(certificate, trustRoots)
    else { return false }
    lock.lock()
    certificates[node] = (der, certificate)
    lock.unlock()
    return true
  }

  /// Whether a certificate of `node` was accepted.
  public func hasCertificate(of node: NodeID) -> Bool {
    lock.lock()
    defer { lock.unlock() }
    return certificates[node] != nil
  }

  /// Whether `signature` over `content` was made with the key of `node`'s accepted certificate.
  public func verify(signature: [UInt8], over content: [UInt8], by node: NodeID) -> Bool {
    lock.lock()
    let certificate = certificates[node]?.certificate
    lock.unlock()
    guard let certificate, let publicKey = X509_get0_pubkey(certificate.pointer) else { return false }
    OpenSSLError.clearQueue()
    guard let context = EVP_MD_CTX_new() else { return false }
    defer { EVP_MD_CTX_free(context) }
    guard EVP_DigestVerifyInit(context, nil, EVP_sha256(), nil, publicKey) == 1 else {
      OpenSSLError.clearQueue()
      return false
    }
    let result = signature.withUnsafeBufferPointer { signatureBytes in
      content.withUnsafeBufferPointer {
        EVP_DigestVerify(context, signatureBytes.baseAddress, signatureBytes.count, $0.baseAddress, $0.count)
      }
    }
    OpenSSLError.clearQueue()
    return result == 1
  }

  // MARK: OpenSSL helpers

  private static func der(of certificate: TLSCertificate) -> [UInt8]? {
    var out: UnsafeMutablePointer<UInt8>?
    let length = i2d_X509(certificate.pointer, &out)
    guard length > 0, let out else { return nil }
    defer { teal_OPENSSL_free(out) }
    return Array(UnsafeBufferPointer(start: out, count: Int(length)))
  }

  private static func parse(der: [UInt8]) -> TLSCertificate? {
    let parsed: OpaquePointer? = der.withUnsafeBufferPointer { buffer in
      var cursor: UnsafePointer<UInt8>? = buffer.baseAddress
      return d2i_X509(nil, &cursor, buffer.count)
    }
    OpenSSLError.clearQueue()
    return parsed.map { TLSCertificate(owning: $0) }
  }

  /// Whether `certificate` verifies against `roots` (signature chain, validity period).
  private static func chainsToRoots(_ certificate: TLSCertificate, _ roots: [TLSCertificate]) -> Bool {
    guard let store = X509_STORE_new() else { return false }
    defer { X509_STORE_free(store) }
    for root in roots { X509_STORE_add_cert(store, root.pointer) }
    guard let context = X509_STORE_CTX_new() else { return false }
    defer { X509_STORE_CTX_free(context) }
    guard X509_STORE_CTX_init(context, store, certificate.pointer, nil) == 1 else { return false }
    let verified = X509_verify_cert(context) == 1
    OpenSSLError.clearQueue()
    return verified
  }
}
