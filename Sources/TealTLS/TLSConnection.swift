import COpenSSL
import NIOCore

/// One TLS session over memory BIOs. Owns one `SSL` (which owns its two BIOs).
///
/// Ciphertext from the network goes in with ``feed(_:)``; ciphertext for the network comes out of
/// ``drainOutgoing(into:)``. Nothing here touches a socket, so the same type serves the NIO handler
/// and in-memory tests. Not thread-safe: used from one event loop only.
final class TLSConnection {
  enum Role: Sendable { case client, server }

  enum Progress: Equatable {
    /// The operation finished.
    case done
    /// It needs more bytes from the peer.
    case wantRead
    /// The peer sent close_notify.
    case closed
  }

  private let ssl: OpaquePointer
  private let incoming: OpaquePointer  // network -> OpenSSL
  private let outgoing: OpaquePointer  // OpenSSL -> network
  let context: TLSContext
  let role: Role

  init(context: TLSContext, role: Role) throws(OpenSSLError) {
    OpenSSLError.clearQueue()
    self.context = context
    self.role = role
    let ssl = try check("create TLS session", SSL_new(context.pointer))
    guard let incoming = BIO_new(BIO_s_mem()), let outgoing = BIO_new(BIO_s_mem()) else {
      SSL_free(ssl)
      throw OpenSSLError.drain("create memory BIO")
    }
    // An empty memory BIO must mean "retry later", never end of file.
    _ = teal_BIO_set_mem_eof_return(incoming, -1)
    _ = teal_BIO_set_mem_eof_return(outgoing, -1)
    SSL_set_bio(ssl, incoming, outgoing)  // ssl now owns both
    switch role {
    case .client: SSL_set_connect_state(ssl)
    case .server: SSL_set_accept_state(ssl)
    }
    self.ssl = ssl
    self.incoming = incoming
    self.outgoing = outgoing
  }

  deinit { SSL_free(ssl) }

  // MARK: Ciphertext in and out

  /// Hands ciphertext received from the network to OpenSSL.
  func feed(_ buffer: ByteBuffer) {
    buffer.withUnsafeReadableBytes { raw in
      var offset = 0
      while offset < raw.count {
        // A memory BIO grows as needed; BIO_write only fails on allocation failure.
        let written = BIO_write(incoming, raw.baseAddress! + offset, Int32(min(raw.count - offset, Int(Int32.max))))
        if written <= 0 { break }
        offset += Int(written)
      }
    }
  }

  /// Bytes OpenSSL has produced for the network and not yet handed out.
  var outgoingCount: Int { Int(BIO_ctrl_pending(outgoing)) }

  /// Moves every byte OpenSSL produced for the network into `buffer`.
  func drainOutgoing(into buffer: inout ByteBuffer) {
    let pending = outgoingCount
    guard pending > 0 else { return }
    buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: pending) { raw in
      Int(max(0, BIO_read(outgoing, raw.baseAddress, Int32(pending))))
    }
  }

  // MARK: Handshake, read, write, shutdown

  func handshake() throws(TLSError) -> Progress {
    OpenSSLError.clearQueue()
    let result = SSL_do_handshake(ssl)
    if result == 1 { return .done }
    return try progress(after: result, operation: "TLS handshake")
  }

  var isHandshakeComplete: Bool { SSL_is_init_finished(ssl) == 1 }

  /// Decrypts as much as is available into `buffer`, at most `limit` bytes.
  func read(into buffer: inout ByteBuffer, limit: Int) throws(TLSError) -> Progress {
    OpenSSLError.clearQueue()
    var result: Int32 = 0
    buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: 1) { raw in
      result = SSL_read(ssl, raw.baseAddress, Int32(min(raw.count, limit)))
      return result > 0 ? Int(result) : 0
    }
    if result > 0 { return .done }
    return try progress(after: result, operation: "TLS read")
  }

  /// Encrypts all of `bytes` into the outgoing BIO.
  func write(_ bytes: ByteBuffer) throws(TLSError) {
    OpenSSLError.clearQueue()
    var offset = bytes.readerIndex
    let end = bytes.writerIndex
    while offset < end {
      let chunk = min(end - offset, 1 << 20)
      let result = bytes.withVeryUnsafeBytes { raw in SSL_write(ssl, raw.baseAddress! + offset, Int32(chunk)) }
      if result > 0 {
        offset += Int(result)
        continue
      }
      _ = try progress(after: result, operation: "TLS write")
      // A memory BIO never blocks, so a request to retry means the session is unusable.
      throw .writeFailed(reason: "OpenSSL asked to retry a write on a memory BIO")
    }
  }

  /// Queues close_notify in the outgoing BIO. Safe to call more than once.
  func shutdown() {
    OpenSSLError.clearQueue()
    if SSL_get_shutdown(ssl) & SSL_SENT_SHUTDOWN == 0 { _ = SSL_shutdown(ssl) }
    OpenSSLError.clearQueue()
  }

  /// Whether the peer sent close_notify.
  var receivedShutdown: Bool { SSL_get_shutdown(ssl) & SSL_RECEIVED_SHUTDOWN != 0 }

  // MARK: Peer

  /// The certificate the peer presented, already verified against the CA by OpenSSL.
  var peerCertificate: TLSCertificate? {
    guard let x509 = SSL_get1_peer_certificate(ssl) else { return nil }
    return TLSCertificate(owning: x509)
  }

  var negotiatedProtocol: String {
    guard let name = SSL_get_version(ssl) else { return "unknown" }
    return String(cString: name)
  }

  // MARK: Errors

  private func progress(after result: Int32, operation: String) throws(TLSError) -> Progress {
    let code = SSL_get_error(ssl, result)
    switch code {
    case SSL_ERROR_WANT_READ: return .wantRead
    case SSL_ERROR_ZERO_RETURN: return .closed
    case SSL_ERROR_WANT_WRITE:
      // Memory BIOs never refuse a write; treat it as needing input.
      return .wantRead
    default:
      var reasons = OpenSSLError.drainReasons()
      let verify = SSL_get_verify_result(ssl)
      if verify != X509_V_OK, let text = X509_verify_cert_error_string(verify) {
        reasons.append("certificate verification: \(String(cString: text))")
      }
      if reasons.isEmpty { reasons = ["SSL error \(code)"] }
      let error = OpenSSLError(operation: operation, reasons: reasons)
      throw isHandshakeComplete ? .protocolError(error) : .handshakeFailed(error)
    }
  }
}
