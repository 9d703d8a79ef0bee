import COpenSSL

/// An ECDSA P-256 private key. Owns one `EVP_PKEY`.
///
/// Invariant: `pointer` is a valid key with a private part; it is freed exactly once, in deinit.
/// Immutable after creation, so it may be shared between threads.
public final class TLSPrivateKey: @unchecked Sendable {
  let pointer: OpaquePointer

  private init(owning pointer: OpaquePointer) {
    self.pointer = pointer
  }

  deinit { EVP_PKEY_free(pointer) }

  /// Generates a new ECDSA key on the NIST P-256 curve from OpenSSL's CSPRNG.
  public static func generateP256() throws(OpenSSLError) -> TLSPrivateKey {
    OpenSSLError.clearQueue()
    let ctx = try check("create EC key context", EVP_PKEY_CTX_new_from_name(nil, "EC", nil))
    defer { EVP_PKEY_CTX_free(ctx) }
    try check("initialise EC key generation", EVP_PKEY_keygen_init(ctx))
    try check("select curve P-256", EVP_PKEY_CTX_set_group_name(ctx, "P-256"))
    var key: OpaquePointer?
    try check("generate P-256 key", EVP_PKEY_generate(ctx, &key))
    return TLSPrivateKey(owning: try check("generate P-256 key", key))
  }

  /// Parses a PEM private key (PKCS#8 or traditional), as written by ``pemBytes()``.
  public convenience init(pem: [UInt8], source: String = "private key") throws(OpenSSLError) {
    OpenSSLError.clearQueue()
    let key = try MemoryBIO.withReadable(pem, "read \(source)") { (bio) throws(OpenSSLError) in
      try check("parse PEM \(source)", PEM_read_bio_PrivateKey(bio, nil, nil, nil))
    }
    self.init(owning: key)
  }

  /// The key as unencrypted PKCS#8 PEM. Store it with mode 0600.
  public func pemBytes() throws(OpenSSLError) -> [UInt8] {
    OpenSSLError.clearQueue()
    return try MemoryBIO.collect("encode private key as PEM") { bio in
      PEM_write_bio_PrivateKey(bio, pointer, nil, nil, 0, nil, nil)
    }
  }

  /// The DER encoding of the public half, to compare keys.
  public func publicKeyDER() throws(OpenSSLError) -> [UInt8] {
    var out: UnsafeMutablePointer<UInt8>?
    let length = i2d_PUBKEY(pointer, &out)
    guard length > 0, let out else { throw OpenSSLError.drain("encode public key") }
    defer { teal_OPENSSL_free(out) }
    return Array(UnsafeBufferPointer(start: out, count: Int(length)))
  }
}
