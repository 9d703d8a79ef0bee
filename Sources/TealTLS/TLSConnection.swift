import COpenSSL
import NIOCore

/// One TLS session whose ciphertext lives in NIO `ByteBuffer`s (``ByteBufferBIO``). Owns one
/// `SSL`, which owns its BIO, which owns the buffers.
///
/// Ciphertext from the network goes in with ``feed(_:)``; ciphertext for the network comes out of
/// ``takeOutgoing()``. Nothing here touches a socket, so the same type serves the NIO handler
/// and in-memory tests. Read-ahead is on: OpenSSL pulls as much ciphertext as its record buffer
/// holds in one BIO read instead of a header and then a body. Not thread-safe: used from one
/// event loop only.
final class TLSConnection {
  enum Role: Sendable { case client, server }

  enum Progress: Equatable {
    /// The operation finished.
    case done
    /// It needs more bytes from the peer.
    case wantRead
    /// The peer sent close_notify.
    case closed
    /// OpenSSL wants what it produced sent before it goes on: take the outgoing bytes, then retry.
    case wantWrite
  }

  /// TLS 1.3 adds at most this much to each record: a 5-byte header, the content type byte and a
  /// 16-byte AEAD tag (no padding is configured).
  static let recordOverhead = 5 + 1 + 16
  /// The most plaintext one TLS record carries.
  static let maximumRecordPlaintext = 16 * 1024

  private let ssl: OpaquePointer
  private let buffers: ByteBufferBIO
  let context: TLSContext
  let role: Role

  init(context: TLSContext, role: Role, allocator: ByteBufferAllocator = ByteBufferAllocator()) throws(OpenSSLError) {
    OpenSSLError.clearQueue()
    self.context = context
    self.role = role
    let ssl = try check("create TLS session", SSL_new(context.pointer))
    let made: (bio: OpaquePointer, buffers: ByteBufferBIO)
    do {
      made = try ByteBufferBIO.makeBIO(allocator: allocator)
    } catch {
      SSL_free(ssl)
      throw error
    }
    let bio = made.bio
    self.buffers = made.buffers
    // One BIO for both directions: SSL_set_bio takes the single reference BIO_new gave us.
    SSL_set_bio(ssl, bio, bio)
    SSL_set_read_ahead(ssl, 1)
    switch role {
    case .client: SSL_set_connect_state(ssl)
    case .server: SSL_set_accept_state(ssl)
    }
    self.ssl = ssl
  }

  deinit { SSL_free(ssl) }

  // MARK: Ciphertext in and out

  /// Hands ciphertext received from the network to OpenSSL (the buffer itself, not a copy).
  func feed(_ buffer: ByteBuffer) { buffers.feed(buffer) }

  /// Ciphertext received and not yet read by OpenSSL.
  var incomingCount: Int { buffers.inboundCount }

  /// Bytes OpenSSL has produced for the network and not yet handed out.
  var outgoingCount: Int { buffers.outboundCount }

  /// Every byte OpenSSL produced for the network since the last call, or nil if none.
  func takeOutgoing() -> ByteBuffer? { buffers.takeOutbound() }

  // MARK: Handshake, read, write, shutdown

  func handshake() throws(TLSError) -> Progress {
    OpenSSLError.clearQueue()
    let result = SSL_do_handshake(ssl)
    if result == 1 {
      isHandshakeComplete = true
      return .done
    }
    return try progress(after: result, operation: "TLS handshake")
  }

  /// Whether the handshake has completed. Kept here rather than asked of OpenSSL: a fatal error
  /// puts OpenSSL's state machine back "in init", and an error after the handshake is a protocol
  /// error, not a failed handshake.
  private(set) var isHandshakeComplete = false

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

  /// Encrypts all of `bytes` into the outgoing buffer, in records of at most 16 KiB.
  func write(_ bytes: ByteBuffer) throws(TLSError) {
    OpenSSLError.clearQueue()
    let records = (bytes.readableBytes + Self.maximumRecordPlaintext - 1) / Self.maximumRecordPlaintext
    buffers.reserveOutbound(bytes.readableBytes + records * Self.recordOverhead)
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
        // The outgoing buffer accepts everything, so OpenSSL has no reason to ask.
        throw .writeFailed(reason: "OpenSSL asked to retry a write into a buffer that never refuses one")
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
    // then runs: our KeyUpdate (update_not_requested) goes to the outgoing buffer.
    _ = SSL_key_update(ssl, SSL_KEY_UPDATE_NOT_REQUESTED)
    _ = SSL_do_handshake(ssl)
    OpenSSLError.clearQueue()
  }

  /// Asks the peer to update its keys too (TLS 1.3 KeyUpdate); sent with the next write.
  func requestKeyUpdate() -> Bool { SSL_key_update(ssl, SSL_KEY_UPDATE_REQUESTED) == 1 }

  /// Queues close_notify in the outgoing buffer. Safe to call more than once.
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
      // The outgoing buffer never refuses bytes, so this should not happen; if it does, the
      // outgoing bytes must leave before OpenSSL can go on: the caller takes them and retries.
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
