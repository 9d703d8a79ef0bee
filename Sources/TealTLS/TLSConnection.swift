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
    /// OpenSSL wants what it produced sent before it goes on: drain the outgoing BIO, then retry.
    case wantWrite
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
    guard let incoming = BIO_new(BIO_s_mem()) else {
      SSL_free(ssl)
      throw OpenSSLError.drain("create memory BIO")
    }
    guard let outgoing = BIO_new(BIO_s_mem()) else {
      BIO_free(incoming)  // not yet owned by ssl
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

  /// Encrypts all of `bytes` into the outgoing BIO; `onWantWrite` must move the outgoing bytes
  /// on when OpenSSL asks to.
  func write(_ bytes: ByteBuffer, onWantWrite: () -> Void = {}) throws(TLSError) {
    OpenSSLError.clearQueue()
    var retries = 0
    var offset = bytes.readerIndex
    let end = bytes.writerIndex
    while offset < end {
      let chunk = min(end - offset, 1 << 20)
      let result = bytes.withVeryUnsafeBytes { raw in SSL_write(ssl, raw.baseAddress! + offset, Int32(chunk)) }
      if result > 0 {
        offset += Int(result)
        continue
      }
      switch try progress(after: result, operation: "TLS write") {
      case .wantWrite:
        // Retry after the caller drained; with a growing memory BIO this cannot repeat forever,
        // but bound it anyway.
        retries += 1
        if retries > 16 { throw .writeFailed(reason: "OpenSSL kept asking to retry a write") }
        onWantWrite()
      case .wantRead:
        // TLS 1.3 has no renegotiation: a write never needs the peer's bytes.
        throw .writeFailed(reason: "OpenSSL asked for peer data to complete a write")
      case .closed:
        throw .writeFailed(reason: "the peer closed the TLS session")
      case .done:
        break
      }
    }
  }

  /// Sends a KeyUpdate OpenSSL owes the peer (it answers an update_requested only when it next
  /// writes or handshakes; a node that only reads would never answer). Call after reading.
  func answerPendingKeyUpdate() {
    guard SSL_get_key_update_type(ssl) != SSL_KEY_UPDATE_NONE else { return }
    OpenSSLError.clearQueue()
    // Re-arming the update puts the state machine in the write phase, which the handshake call
    // then runs: our KeyUpdate (update_not_requested) goes to the outgoing BIO.
    _ = SSL_key_update(ssl, SSL_KEY_UPDATE_NOT_REQUESTED)
    _ = SSL_do_handshake(ssl)
    OpenSSLError.clearQueue()
  }

  /// Asks the peer to update its keys too (TLS 1.3 KeyUpdate); sent with the next write.
  func requestKeyUpdate() -> Bool { SSL_key_update(ssl, SSL_KEY_UPDATE_REQUESTED) == 1 }

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
      // A memory BIO grows as needed, so this should not happen; if it does, the outgoing bytes
      // must leave before OpenSSL can go on, and the caller drains them and retries.
      return .wantWrite
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
