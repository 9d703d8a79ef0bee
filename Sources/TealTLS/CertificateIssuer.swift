import COpenSSL
import TealWire

/// Builds certificates through the OpenSSL API: a self-signed cluster CA and node certificates
/// that it signs. Never shells out to the `openssl` command.
public enum CertificateIssuer {
  /// How long a certificate is valid, relative to the moment it is issued.
  public struct Validity: Sendable, Equatable {
    /// Seconds before now at which the certificate starts being valid (allows for clock skew).
    public var notBeforeOffset: Int
    /// Seconds after now at which it expires (negative for an already-expired certificate).
    public var notAfterOffset: Int

    public init(notBeforeOffset: Int, notAfterOffset: Int) {
      self.notBeforeOffset = notBeforeOffset
      self.notAfterOffset = notAfterOffset
    }

    /// Ten years, for the cluster CA.
    public static let certificateAuthority = Validity(notBeforeOffset: -3600, notAfterOffset: 10 * 365 * 86400)
    /// Two years, for node certificates.
    public static let node = Validity(notBeforeOffset: -3600, notAfterOffset: 2 * 365 * 86400)
  }

  /// The subject of a node certificate and the names it answers to.
  public struct NodeNames: Sendable, Equatable {
    public var id: NodeID
    /// Extra DNS names beyond the node id and `localhost`.
    public var dnsNames: [String]
    /// IPv4 or IPv6 addresses, e.g. the node's own loopback address in a local cluster.
    public var ipAddresses: [String]

    public init(id: NodeID, dnsNames: [String] = [], ipAddresses: [String] = ["127.0.0.1"]) {
      self.id = id
      self.dnsNames = dnsNames
      self.ipAddresses = ipAddresses
    }
  }

  /// Creates a self-signed ECDSA P-256 certificate authority for one cluster.
  public static func makeCertificateAuthority(
    commonName: String = "Teal cluster CA", validity: Validity = .certificateAuthority
  ) throws(OpenSSLError) -> (certificate: TLSCertificate, key: TLSPrivateKey) {
    let key = try TLSPrivateKey.generateP256()
    let certificate = try build(
      subjectCN: commonName, subjectKey: key, issuer: nil, issuerKey: key, validity: validity,
      extensions: [
        (NID_basic_constraints, "critical,CA:TRUE,pathlen:0"),
        (NID_key_usage, "critical,keyCertSign,cRLSign"),
        (NID_subject_key_identifier, "hash"),
      ])
    return (certificate, key)
  }

  /// Creates a node key and certificate signed by the CA. The certificate names the node by a
  /// `URI:spiffe://teal/node/<id>` SAN (its identity), plus `DNS:<id>`, `DNS:localhost` and the
  /// given addresses, and is valid for both TLS server and client authentication.
  public static func makeNodeCertificate(
    _ names: NodeNames, authority: TLSCertificate, authorityKey: TLSPrivateKey, validity: Validity = .node
  ) throws(OpenSSLError) -> (certificate: TLSCertificate, key: TLSPrivateKey) {
    try makeNodeCertificate(
      names, authority: authority, authorityKey: authorityKey, validity: validity, basicConstraints: "critical,CA:FALSE"
    )
  }

  /// The same with other basic constraints: only tests pass `CA:TRUE`, to prove such a "node" is
  /// refused.
  static func makeNodeCertificate(
    _ names: NodeNames, authority: TLSCertificate, authorityKey: TLSPrivateKey, validity: Validity,
    basicConstraints: String
  ) throws(OpenSSLError) -> (certificate: TLSCertificate, key: TLSPrivateKey) {
    for address in names.ipAddresses where !isIPAddress(address) {
      throw OpenSSLError(operation: "issue certificate for \(names.id)", reasons: ["'\(address)' is not an IP address"])
    }
    for name in names.dnsNames where !isDNSName(name) {
      throw OpenSSLError(operation: "issue certificate for \(names.id)", reasons: ["'\(name)' is not a DNS name"])
    }
    var sans = ["URI:\(TLSCertificate.nodeURI(names.id))", "DNS:\(names.id.rawValue)", "DNS:localhost"]
    sans += names.dnsNames.map { "DNS:\($0)" }
    sans += names.ipAddresses.map { "IP:\($0)" }
    let key = try TLSPrivateKey.generateP256()
    let certificate = try build(
      subjectCN: names.id.rawValue, subjectKey: key, issuer: authority, issuerKey: authorityKey, validity: validity,
      extensions: [
        (NID_basic_constraints, basicConstraints),
        (NID_key_usage, "critical,digitalSignature,keyAgreement"),
        (NID_ext_key_usage, "serverAuth,clientAuth"),
        (NID_subject_key_identifier, "hash"),
        (NID_authority_key_identifier, "keyid:always"),
        (NID_subject_alt_name, sans.joined(separator: ",")),
      ])
    return (certificate, key)
  }

  // MARK: - Building

  private static func build(
    subjectCN: String, subjectKey: TLSPrivateKey, issuer: TLSCertificate?, issuerKey: TLSPrivateKey,
    validity: Validity, extensions: [(Int32, String)]
  ) throws(OpenSSLError) -> TLSCertificate {
    OpenSSLError.clearQueue()
    let operation = "issue certificate for \(subjectCN)"
    let x509 = try check(operation, X509_new())
    let certificate = TLSCertificate(owning: x509)  // frees x509 on any throw below
    try check(operation, X509_set_version(x509, 2))  // v3

    // A random 127-bit positive serial number (RFC 5280 allows up to 20 octets).
    let serial = try check(operation, BN_new())
    defer { BN_free(serial) }
    try check(operation, BN_rand(serial, 127, -1, 0))
    _ = try check("\(operation): serial number", BN_to_ASN1_INTEGER(serial, X509_get_serialNumber(x509)))
    _ = try check("\(operation): not before", X509_gmtime_adj(X509_getm_notBefore(x509), validity.notBeforeOffset))
    _ = try check("\(operation): not after", X509_gmtime_adj(X509_getm_notAfter(x509), validity.notAfterOffset))

    let name = try check(operation, X509_NAME_new())
    defer { X509_NAME_free(name) }
    try check(operation, X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC, "Teal", -1, -1, 0))
    try check(operation, X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, subjectCN, -1, -1, 0))
    try check(operation, X509_set_subject_name(x509, name))
    let issuerName = issuer.map { X509_get_subject_name($0.pointer) } ?? name
    try check(operation, X509_set_issuer_name(x509, issuerName))
    try check(operation, X509_set_pubkey(x509, subjectKey.pointer))

    var context = X509V3_CTX()
    X509V3_set_ctx(&context, issuer?.pointer ?? x509, x509, nil, nil, 0)
    for (nid, value) in extensions {
      let ext = try check("\(operation): extension \(value)", X509V3_EXT_nconf_nid(nil, &context, nid, value))
      defer { X509_EXTENSION_free(ext) }
      try check("\(operation): add extension \(value)", X509_add_ext(x509, ext, -1))
    }
    if issuer == nil {
      // Self-signed: the authority key id is the subject key id, added once that exists.
      let ext = try check(operation, X509V3_EXT_nconf_nid(nil, &context, NID_authority_key_identifier, "keyid:always"))
      defer { X509_EXTENSION_free(ext) }
      try check(operation, X509_add_ext(x509, ext, -1))
    }
    let signed = X509_sign(x509, issuerKey.pointer, EVP_sha256())
    if signed <= 0 { throw OpenSSLError.drain("\(operation): sign") }
    return certificate
  }

  static func isIPAddress(_ text: String) -> Bool {
    let v4 = text.split(separator: ".", omittingEmptySubsequences: false)
    if v4.count == 4, v4.allSatisfy({ UInt8($0) != nil && !$0.isEmpty && ($0 == "0" || !$0.hasPrefix("0")) }) {
      return true
    }
    return text.contains(":") && text.allSatisfy { $0.isHexDigit || $0 == ":" } && text.count <= 39
  }

  static func isDNSName(_ text: String) -> Bool {
    guard !text.isEmpty, text.count <= 253 else { return false }
    return text.split(separator: ".", omittingEmptySubsequences: false).allSatisfy { label in
      !label.isEmpty && label.count <= 63 && !label.hasPrefix("-")
        && label.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-") }
    }
  }
}
