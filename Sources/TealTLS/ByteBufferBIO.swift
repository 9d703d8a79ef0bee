import COpenSSL
import NIOCore

/// The ciphertext on both sides of OpenSSL, held in NIO `ByteBuffer`s: the state behind one
/// OpenSSL BIO of our own method (``ByteBufferBIO/method``).
///
/// OpenSSL reads the records it decrypts straight out of the buffer the socket filled
/// (``feed(_:)`` keeps that buffer, it copies nothing) and writes the records it produces straight
/// into a buffer the channel sends as is (``takeOutbound()``). A memory BIO would copy each byte
/// once more in each direction, and grow (and clear) its own storage as it goes.
///
/// The callbacks touch nothing but this object's two buffers: OpenSSL never reaches the channel
/// or the handler through them, so no callback can re-enter a handler mid-operation. The BIO
/// holds a strong reference to this object and releases it when OpenSSL frees the BIO (with the
/// `SSL` that owns it). Used from one event loop only, like the `SSL` it serves.
///
/// Bounds: `inbound` holds at most what the last ``feed(_:)`` brought plus what an earlier one
/// left unread (OpenSSL reads until it has taken everything, so a leftover exists only when a
/// session stops reading, e.g. after close_notify); `outbound` holds what OpenSSL produced since
/// the last ``takeOutbound()``, which `TLSHandler` takes at least every
/// ``TLSHandler/outboundCiphertextLimit`` bytes; `spare` is one buffer taken earlier.
final class ByteBufferBIO {
  /// Ciphertext from the network that OpenSSL has not read yet.
  private var inbound: ByteBuffer?
  /// Ciphertext OpenSSL produced that has not been taken yet.
  private var outbound: ByteBuffer?
  /// The last buffer taken, kept to be cleared and reused: once the channel has written it, its
  /// storage is ours alone and the next records go into memory that is already mapped (a fresh
  /// 64 KiB allocation costs more in page faults than its copy). At most one such buffer.
  private var spare: ByteBuffer?
  /// The capacity the next outbound buffer starts with (set before each `SSL_write`, so a frame's
  /// records go into one allocation without regrowth).
  private var outboundReservation = 0
  private let allocator: ByteBufferAllocator

  init(allocator: ByteBufferAllocator) { self.allocator = allocator }

  // MARK: Used by TLSConnection

  /// Queues ciphertext from the network for OpenSSL. Keeps `buffer` itself when nothing is left
  /// from before (the common case); otherwise appends it to the leftover.
  func feed(_ buffer: ByteBuffer) {
    guard buffer.readableBytes > 0 else { return }
    if inbound == nil {
      inbound = buffer
    } else {
      inbound!.writeImmutableBuffer(buffer)
    }
  }

  var inboundCount: Int { inbound?.readableBytes ?? 0 }
  var outboundCount: Int { outbound?.readableBytes ?? 0 }

  /// Makes room for `bytes` more outbound ciphertext in one allocation.
  func reserveOutbound(_ bytes: Int) {
    if outbound == nil {
      outboundReservation = bytes
    } else {
      outbound!.reserveCapacity(minimumWritableBytes: bytes)
    }
  }

  /// Everything OpenSSL produced for the network since the last call, or nil if nothing.
  func takeOutbound() -> ByteBuffer? {
    defer {
      spare = outbound
      outbound = nil
    }
    return outbound
  }

  // MARK: Called by OpenSSL (through the C callbacks)

  fileprivate func read(into destination: UnsafeMutableRawBufferPointer) -> Int {
    guard inbound != nil else { return 0 }
    let count = min(destination.count, inbound!.readableBytes)
    inbound!.readWithUnsafeReadableBytes { source in
      destination.copyMemory(from: UnsafeRawBufferPointer(rebasing: source.prefix(count)))
      return count
    }
    // Hand the socket's buffer back as soon as it is read, so that NIO can reuse it.
    if inbound!.readableBytes == 0 { inbound = nil }
    return count
  }

  fileprivate func write(_ source: UnsafeRawBufferPointer) {
    if outbound == nil {
      let capacity = max(outboundReservation, source.count)
      outboundReservation = 0
      if var reused = spare, reused.capacity >= capacity {
        spare = nil
        // Keeps the storage if the channel is done with it; otherwise allocates a fresh one.
        reused.clear()
        outbound = reused
      } else {
        outbound = allocator.buffer(capacity: capacity)
      }
    }
    outbound!.writeBytes(source)
  }

  // MARK: The BIO method

  /// Creates a BIO over a fresh `ByteBufferBIO`; the BIO owns it (released when the BIO is freed).
  static func makeBIO(allocator: ByteBufferAllocator) throws(OpenSSLError) -> (OpaquePointer, ByteBufferBIO) {
    let state = ByteBufferBIO(allocator: allocator)
    let bio = try check("create ByteBuffer BIO", BIO_new(method.pointer))
    BIO_set_data(bio, Unmanaged.passRetained(state).toOpaque())
    return (bio, state)
  }

  fileprivate static func state(of bio: OpaquePointer?) -> ByteBufferBIO? {
    guard let bio, let data = BIO_get_data(bio) else { return nil }
    return Unmanaged<ByteBufferBIO>.fromOpaque(data).takeUnretainedValue()
  }

  /// One `BIO_METHOD` for every connection of the process (OpenSSL only reads it).
  static let method: BIOMethod = BIOMethod()
}

/// The process's `BIO_METHOD` for ``ByteBufferBIO``; immutable once made.
final class BIOMethod: @unchecked Sendable {
  let pointer: OpaquePointer

  fileprivate init() {
    let type = BIO_get_new_index() | BIO_TYPE_SOURCE_SINK
    guard let method = BIO_meth_new(type, "teal ByteBuffer") else {
      preconditionFailure("OpenSSL could not allocate a BIO_METHOD (out of memory)")
    }
    _ = BIO_meth_set_create(method) { bio in
      BIO_set_init(bio, 1)
      return 1
    }
    _ = BIO_meth_set_destroy(method) { bio in
      guard let bio else { return 0 }
      if let data = BIO_get_data(bio) {
        Unmanaged<ByteBufferBIO>.fromOpaque(data).release()
        BIO_set_data(bio, nil)
      }
      return 1
    }
    _ = BIO_meth_set_read_ex(method) { bio, buffer, length, readBytes in
      teal_BIO_clear_retry_flags(bio)
      guard let state = ByteBufferBIO.state(of: bio), let buffer else { return 0 }
      let count = state.read(into: UnsafeMutableRawBufferPointer(start: buffer, count: length))
      readBytes?.pointee = count
      if count == 0 {
        // Nothing yet: "try again later", never end of file (the channel reports the end).
        teal_BIO_set_retry_read(bio)
        return 0
      }
      return 1
    }
    _ = BIO_meth_set_write_ex(method) { bio, buffer, length, written in
      teal_BIO_clear_retry_flags(bio)
      guard let state = ByteBufferBIO.state(of: bio), let buffer else { return 0 }
      // Always accepts everything: the handler bounds what accumulates by taking it.
      state.write(UnsafeRawBufferPointer(start: buffer, count: length))
      written?.pointee = length
      return 1
    }
    _ = BIO_meth_set_ctrl(method) { bio, command, _, _ in
      switch command {
      case BIO_CTRL_FLUSH: return 1
      case BIO_CTRL_PENDING: return ByteBufferBIO.state(of: bio).map { Int($0.inboundCount) } ?? 0
      case BIO_CTRL_WPENDING: return ByteBufferBIO.state(of: bio).map { Int($0.outboundCount) } ?? 0
      default: return 0
      }
    }
    pointer = method
  }
}
