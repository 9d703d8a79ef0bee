import COpenSSL
import TealWire

/// An X.509 certificate. Owns one `X509`.
///
/// Invariant: `pointer` is a valid certificate, freed exactly once, in deinit. Certificates are
/// immutable once built, so an instance may be shared between threads.
public final class TLSCertificate: @unchecked Sendable {
  let pointer: OpaquePointer

  /// Takes ownership of `pointer` (one reference).
  init(owning pointer: OpaquePointer) {
    self.pointer = pointer
  }

  deinit { X509_free(pointer) }

  /// Parses every certificate in a PEM file's contents (a node file holds one; a bundle may hold
  /// several). Throws if there is none.
  public static func parseAll(pem: [UInt8], source: String = "certificate") throws(OpenSSLError) -> [TLSCertificate] {
    OpenSSLError.clearQueue()
    return try MemoryBIO.withReadable(pem, "read \(source)") { (bio) throws(OpenSSLError) in
      var certificates: [TLSCertificate] = []
      while let x509 = PEM_read_bio_X509(bio, nil, nil, nil) {
        certificates.append(TLSCertificate(owning: x509))
      }
      // Reading stops with a "no start line" error at the end of the input; that one is expected.
      let reasons = OpenSSLError.drainReasons()
      if certificates.isEmpty {
        throw OpenSSLError(
          operation: "parse PEM \(source)", reasons: reasons.isEmpty ? ["no certificate found"] : reasons)
      }
      return certificates
    }
  }

  /// Parses exactly one PEM certificate.
  public convenience init(pem: [UInt8], source: String = "certificate") throws(OpenSSLError) {
    let all = try TLSCertificate.parseAll(pem: pem, source: source)
    guard all.count == 1 else {
      throw OpenSSLError(operation: "parse PEM \(source)", reasons: ["expected one certificate, found \(all.count)"])
    }
    X509_up_ref(all[0].pointer)
    self.init(owning: all[0].pointer)
  }

  /// The certificate as PEM text.
  public func pemBytes() throws(OpenSSLError) -> [UInt8] {
    OpenSSLError.clearQueue()
    return try MemoryBIO.collect("encode certificate as PEM") { bio in PEM_write_bio_X509(bio, pointer) }
  }

  /// The subject's common name, if it has one.
  public var commonName: String? {
    guard let name = X509_get_subject_name(pointer) else { return nil }
    var buffer = [CChar](repeating: 0, count: 256)
    let length = X509_NAME_get_text_by_NID(name, NID_commonName, &buffer, Int32(buffer.count))
    guard length >= 0 else { return nil }
    return String(decoding: buffer.prefix(Int(length)).map { UInt8(bitPattern: $0) }, as: UTF8.self)
  }

  /// The subject alternative names, e.g. `DNS:n1`, `IP:127.0.0.1`, `URI:spiffe://teal/node/n1`.
  public var subjectAlternativeNames: [String] {
    guard let raw = X509_get_ext_d2i(pointer, NID_subject_alt_name, nil, nil) else { return [] }
    let names = OpaquePointer(raw)
    defer { teal_GENERAL_NAMES_free(names) }
    var result: [String] = []
    for i in 0..<teal_sk_GENERAL_NAME_num(names) {
      guard let name = teal_sk_GENERAL_NAME_value(names, i) else { continue }
      var type: Int32 = 0
      guard let value = GENERAL_NAME_get0_value(name, &type) else { continue }
      let string = UnsafePointer(value.assumingMemoryBound(to: ASN1_STRING.self))
      switch type {
      case GEN_DNS: result.append("DNS:" + TLSCertificate.text(of: string))
      case GEN_URI: result.append("URI:" + TLSCertificate.text(of: string))
      case GEN_IPADD: result.append("IP:" + TLSCertificate.ipText(of: string))
      default: continue
      }
    }
    return result
  }

  /// The node id this certificate names, from its `URI:spiffe://teal/node/<id>` subject
  /// alternative name. Nil when there is none, more than one, or it is not a valid ``NodeID``.
  public var nodeID: NodeID? {
    let ids = subjectAlternativeNames.compactMap { san -> String? in
      san.hasPrefix(TLSCertificate.nodeURIPrefix) ? String(san.dropFirst(TLSCertificate.nodeURIPrefix.count)) : nil
    }
    guard ids.count == 1 else { return nil }
    return try? NodeID(validating: ids[0])
  }

  /// The serial number in lowercase hex without leading zeros ("0" for zero).
  public var serialNumber: String {
    guard let serial = X509_get0_serialNumber(pointer), let bignum = ASN1_INTEGER_to_BN(serial, nil) else {
      return "0"
    }
    defer { BN_free(bignum) }
    guard let hex = BN_bn2hex(bignum) else { return "0" }
    defer { CRYPTO_free(hex, #fileID, #line) }
    let text = String(cString: hex).lowercased()
    let trimmed = text.drop { $0 == "0" }
    return trimmed.isEmpty ? "0" : String(trimmed)
  }

  /// When the certificate stops being valid, in seconds since 1970.
  public var notAfter: Int64? { Self.seconds(X509_get0_notAfter(pointer)) }
  /// When the certificate starts being valid, in seconds since 1970.
  public var notBefore: Int64? { Self.seconds(X509_get0_notBefore(pointer)) }
  /// `notAfter` as OpenSSL prints it, e.g. "Jan  2 03:04:05 2026 GMT".
  public var notAfterText: String { Self.text(X509_get0_notAfter(pointer)) }
  /// `notBefore` as OpenSSL prints it.
  public var notBeforeText: String { Self.text(X509_get0_notBefore(pointer)) }

  private static func seconds(_ time: UnsafePointer<ASN1_TIME>?) -> Int64? {
    guard let time else { return nil }
    var tm = tm()
    guard ASN1_TIME_to_tm(time, &tm) == 1 else { return nil }
    return Int64(timegm(&tm))
  }

  private static func text(_ time: UnsafePointer<ASN1_TIME>?) -> String {
    guard let time, let bytes = try? MemoryBIO.collect("print time", { ASN1_TIME_print($0, time) }) else {
      return "?"
    }
    return String(decoding: bytes, as: UTF8.self)
  }

  /// Whether the basic constraints say CA:TRUE, whatever the key usage: such a certificate is
  /// never accepted as a node's (``isCertificateAuthority`` also needs keyCertSign).
  public var hasCABasicConstraint: Bool { X509_get_extension_flags(pointer) & UInt32(EXFLAG_CA) != 0 }

  /// Whether the certificate's basic constraints make it a certificate authority.
  public var isCertificateAuthority: Bool { X509_check_ca(pointer) >= 1 }

  /// The SAN URI form of a node id, `spiffe://teal/node/<id>`: the one place a node's identity lives.
  public static func nodeURI(_ id: NodeID) -> String { "spiffe://teal/node/\(id.rawValue)" }
  static let nodeURIPrefix = "URI:spiffe://teal/node/"

  private static func text(of asn1: UnsafePointer<ASN1_STRING>) -> String {
    let length = Int(ASN1_STRING_length(asn1))
    guard length > 0, let data = ASN1_STRING_get0_data(asn1) else { return "" }
    return String(decoding: UnsafeBufferPointer(start: data, count: length), as: UTF8.self)
  }

  private static func ipText(of asn1: UnsafePointer<ASN1_STRING>) -> String {
    let length = Int(ASN1_STRING_length(asn1))
    guard let data = ASN1_STRING_get0_data(asn1) else { return "" }
    let bytes = Array(UnsafeBufferPointer(start: data, count: length))
    if bytes.count == 4 { return bytes.map(String.init).joined(separator: ".") }
    if bytes.count == 16 {
      return stride(from: 0, to: 16, by: 2).map { String(UInt16(bytes[$0]) << 8 | UInt16(bytes[$0 + 1]), radix: 16) }
        .joined(separator: ":")
    }
    return bytes.map { String($0, radix: 16) }.joined()
  }
}
