import COpenSSL

/// Helpers for OpenSSL memory BIOs used to move PEM text in and out of OpenSSL.
enum MemoryBIO {
  /// Runs `body` with a read-only memory BIO over `bytes`; the BIO is freed afterwards.
  static func withReadable<R>(
    _ bytes: [UInt8], _ operation: String, _ body: (OpaquePointer) throws(OpenSSLError) -> R
  ) throws(OpenSSLError) -> R {
    // BIO_new_mem_buf does not copy, so the bytes go through a writable memory BIO instead.
    let bio = try check(operation, BIO_new(BIO_s_mem()))
    defer { BIO_free(bio) }
    let written = bytes.withUnsafeBytes { raw in raw.isEmpty ? 0 : BIO_write(bio, raw.baseAddress, Int32(raw.count)) }
    if written != Int32(bytes.count) { throw OpenSSLError.drain(operation) }
    return try body(bio)
  }

  /// Runs `body` with an empty writable memory BIO and returns everything written to it.
  static func collect(
    _ operation: String, _ body: (OpaquePointer) -> Int32
  ) throws(OpenSSLError) -> [UInt8] {
    let bio = try check(operation, BIO_new(BIO_s_mem()))
    defer { BIO_free(bio) }
    try check(operation, body(bio))
    return drain(bio)
  }

  /// Reads every pending byte out of a memory BIO.
  static func drain(_ bio: OpaquePointer) -> [UInt8] {
    let pending = Int(BIO_ctrl_pending(bio))
    if pending == 0 { return [] }
    return [UInt8](unsafeUninitializedCapacity: pending) { buffer, count in
      let read = BIO_read(bio, buffer.baseAddress, Int32(pending))
      count = max(0, Int(read))
    }
  }
}
