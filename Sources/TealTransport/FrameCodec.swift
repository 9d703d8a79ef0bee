import NIOCore
import TealWire

/// One peer message as it travels in a frame.
public struct PeerFrame: Sendable, Equatable {
  public var channel: PeerChannel
  public var payload: ByteBuffer

  public init(channel: PeerChannel, payload: ByteBuffer) {
    self.channel = channel
    self.payload = payload
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
    return PeerFrame(channel: header.channel, payload: payload)
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
    var buffer = allocator.buffer(capacity: Frame.headerSize + payload.count)
    buffer.writeBytes(FrameHeader(channel: channel, length: payload.count).bytes)
    buffer.writeBytes(payload)
    return buffer
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
    out.writeBytes(FrameHeader(channel: data.channel, length: length).bytes)
    var payload = data.payload
    out.writeBuffer(&payload)
  }
}
