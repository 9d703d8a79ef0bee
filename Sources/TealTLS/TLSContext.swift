import COpenSSL

/// The TLS settings for one node's connections: the cluster CA it trusts and its own identity.
public struct TLSConfiguration: Sendable {
  /// Certificates of the cluster CA. A peer must present a chain to one of these.
  public var trustRoots: [TLSCertificate]
  /// This node's certificate, then any intermediates.
  public var certificateChain: [TLSCertificate]
  /// The key of `certificateChain[0]`.
  public var privateKey: TLSPrivateKey?

  /// Whether a server asks for (and requires) the peer's certificate: true between nodes, false
  /// for the API, whose clients present none (they prove themselves with the bearer token). A
  /// client always verifies the server's chain.
  public var requestsPeerCertificate = true

  /// Highest protocol version offered. Only tests lower it (to prove TLS 1.2 is refused).
  var maximumProtocolVersion: Int32 = TLS1_3_VERSION
  /// Lowest protocol version accepted. Only tests lower it.
  var minimumProtocolVersion: Int32 = TLS1_3_VERSION
  /// The TLS 1.2 version number, for tests that offer it.
  static let tls12: Int32 = TLS1_2_VERSION

  public init(trustRoots: [TLSCertificate], certificateChain: [TLSCertificate], privateKey: TLSPrivateKey) {
    self.trustRoots = trustRoots
    self.certificateChain = certificateChain
    self.privateKey = privateKey
  }

  /// A configuration with no identity of its own: an API client that trusts `trustRoots` (the
  /// cluster CA), and tests that prove such a peer is refused between nodes.
  public init(trustRootsOnly trustRoots: [TLSCertificate]) {
    self.trustRoots = trustRoots
    self.certificateChain = []
    self.privateKey = nil
  }

  /// The same identity and trust, asking clients for no certificate: the API server's.
  public var forAPIServer: TLSConfiguration {
    var configuration = self
    configuration.requestsPeerCertificate = false
    return configuration
  }
}

/// An OpenSSL `SSL_CTX` configured for Teal's node-to-node TLS: TLS 1.3 only, both sides present
/// a certificate chaining to the cluster CA, no session tickets, no renegotiation, no compression.
///
/// Invariant: immutable after `init`; OpenSSL allows `SSL_new` on a configured context from any
/// thread, so one context serves every connection of a node.
public final class TLSContext: @unchecked Sendable {
  let pointer: OpaquePointer
  /// Kept alive for as long as the context references them.
  public let configuration: TLSConfiguration

  public init(configuration: TLSConfiguration) throws(OpenSSLError) {
    OpenSSLError.clearQueue()
    let ctx = try check("create TLS context", SSL_CTX_new(TLS_method()))
    // From here on, `self` owns ctx: deinit frees it if a later step throws.
    self.pointer = ctx
    self.configuration = configuration

    try check("set minimum TLS version", teal_SSL_CTX_set_min_proto_version(ctx, configuration.minimumProtocolVersion))
    try check("set maximum TLS version", teal_SSL_CTX_set_max_proto_version(ctx, configuration.maximumProtocolVersion))
    _ = teal_SSL_CTX_set_options(
      ctx, teal_SSL_OP_NO_RENEGOTIATION() | teal_SSL_OP_NO_TICKET() | teal_SSL_OP_NO_COMPRESSION())
    _ = teal_SSL_CTX_set_mode(ctx, teal_SSL_MODE_ENABLE_PARTIAL_WRITE() | teal_SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER())
    _ = teal_SSL_CTX_set_session_cache_mode(ctx, 0)  // SSL_SESS_CACHE_OFF
    try check("disable session tickets", SSL_CTX_set_num_tickets(ctx, 0))
    try check("set key exchange groups", teal_SSL_CTX_set1_groups_list(ctx, "X25519:P-256"))
    try check(
      "set cipher suites",
      SSL_CTX_set_ciphersuites(ctx, "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"))

    guard !configuration.trustRoots.isEmpty else {
      throw OpenSSLError(operation: "configure TLS", reasons: ["no trusted CA certificate"])
    }
    let store = try check("get certificate store", SSL_CTX_get_cert_store(ctx))
    for root in configuration.trustRoots {
      try check("trust CA certificate", X509_STORE_add_cert(store, root.pointer))
    }
    // Verify the peer's chain and refuse a peer that presents no certificate, on both sides.
    // (A server context for the API asks for no client certificate; as a client, a context
    // always verifies the server's chain: SSL_VERIFY_PEER.)
    SSL_CTX_set_verify(
      ctx, configuration.requestsPeerCertificate ? SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT : SSL_VERIFY_NONE,
      nil)
    SSL_CTX_set_verify_depth(ctx, 4)

    if let key = configuration.privateKey, let leaf = configuration.certificateChain.first {
      try check("use node certificate", SSL_CTX_use_certificate(ctx, leaf.pointer))
      for intermediate in configuration.certificateChain.dropFirst() {
        X509_up_ref(intermediate.pointer)
        if SSL_CTX_ctrl(ctx, SSL_CTRL_EXTRA_CHAIN_CERT, 0, UnsafeMutableRawPointer(intermediate.pointer)) != 1 {
          X509_free(intermediate.pointer)
          throw OpenSSLError.drain("add intermediate certificate")
        }
      }
      try check("use node private key", SSL_CTX_use_PrivateKey(ctx, key.pointer))
      try check("check that the private key matches the certificate", SSL_CTX_check_private_key(ctx))
    }
  }

  deinit { SSL_CTX_free(pointer) }
}
