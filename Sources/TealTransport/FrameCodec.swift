import NIOCore
import TealWire

/// One peer message, or one fragment of a large one, as it travels in a frame.
public struct PeerFrame: Sendable, Equatable {
  public var channel: PeerChannel
  public var payload: ByteBuffer
  public var fragment: FrameFragment

  public init(channel: PeerChannel, payload: ByteBuffer, fragment: FrameFragment = .whole) {
    self.channel = channel
    self.payload = payload
    self.fragment = fragment
  }
}

/// Splits a byte stream into ``PeerFrame``s. A malformed header throws ``FrameError``, which
/// closes the connection (see ``PeerConnectionHandler``); partial frames wait for more bytes.
public struct FrameDecoder: NIOSingleStepByteToMessageDecoder {
  public typealias InboundOut = PeerFrame

  public let maximumPayload: Int

  public init(maximumPayload: Int = Frame.defaultMaximumPayload) {
    self.maximumPayload = maximumPayload
  }

  public mutating func decode(buffer: inout ByteBuffer) throws -> PeerFrame? {
    guard
      let header = try buffer.withUnsafeReadableBytes({ raw throws(FrameError) in
        try FrameHeader.parse(
          UnsafeBufferPointer(start: raw.bindMemory(to: UInt8.self).baseAddress, count: raw.count),
          maximumPayload: maximumPayload)
      })
    else { return nil }
    guard buffer.readableBytes >= Frame.headerSize + header.length else { return nil }
    buffer.moveReaderIndex(forwardBy: Frame.headerSize)
    guard let payload = buffer.readSlice(length: header.length) else { return nil }
    return PeerFrame(channel: header.channel, payload: payload, fragment: header.fragment)
  }

  public mutating func decodeLast(buffer: inout ByteBuffer, seenEOF: Bool) throws -> PeerFrame? {
    try decode(buffer: &buffer)
  }
}

extension Frame {
  /// Encodes one frame, header and payload, into a single buffer: the one copy of the payload a
  /// send makes before TLS.
  public static func encode(
    channel: PeerChannel, payload: [UInt8], allocator: ByteBufferAllocator = ByteBufferAllocator()
  ) -> ByteBuffer {
    encode(channel: channel, payload: payload[...], fragment: .whole, allocator: allocator)
  }

  static func encode(
    channel: PeerChannel, payload: ArraySlice<UInt8>, fragment: FrameFragment, allocator: ByteBufferAllocator
  ) -> ByteBuffer {
    var buffer = allocator.buffer(capacity: Frame.headerSize + payload.count)
    buffer.writeBytes(FrameHeader(channel: channel, length: payload.count, fragment: fragment).bytes)
    buffer.writeBytes(payload)
    return buffer
  }

  /// Encodes a large message as fragments of at most `fragmentPayload` bytes each (one copy of
  /// the payload, as for a whole frame).
  static func encodeFragments(
    channel: PeerChannel, payload: [UInt8], fragmentPayload: Int,
    allocator: ByteBufferAllocator = ByteBufferAllocator()
  ) -> [ByteBuffer] {
    precondition(fragmentPayload > 0, "fragment payload size must be positive")
    var fragments: [ByteBuffer] = []
    fragments.reserveCapacity(payload.count / fragmentPayload + 1)
    var start = 0
    repeat {
      let end = min(payload.count, start + fragmentPayload)
      fragments.append(
        encode(
          channel: channel, payload: payload[start..<end], fragment: end == payload.count ? .last : .more,
          allocator: allocator))
      start = end
    } while start < payload.count
    return fragments
  }
}

/// Writes ``PeerFrame``s as header plus payload, refusing payloads over the maximum.
public struct FrameEncoder: MessageToByteEncoder {
  public typealias OutboundIn = PeerFrame

  public let maximumPayload: Int

  public init(maximumPayload: Int = Frame.defaultMaximumPayload) {
    self.maximumPayload = maximumPayload
  }

  public func encode(data: PeerFrame, out: inout ByteBuffer) throws {
    let length = data.payload.readableBytes
    guard length <= maximumPayload else { throw FrameError.payloadTooLarge(length: length, limit: maximumPayload) }
    out.reserveCapacity(minimumWritableBytes: Frame.headerSize + length)
    out.writeBytes(FrameHeader(channel: data.channel, length: length, fragment: data.fragment).bytes)
    var payload = data.payload
    out.writeBuffer(&payload)
  }
}
