/// The frame that carries one peer message over a TLS connection.
///
/// ```
/// offset  size  field
/// 0       1     version   (1)
/// 1       1     channel   (PeerChannel raw value in bits 0-5; bit 7: a fragment; bit 6: the last one)
/// 2       4     length    (payload bytes, big-endian, at most the configured maximum)
/// 6       n     payload
/// ```
/// A frame with another version, an unknown channel or a length above the maximum is malformed:
/// the receiver closes that connection and nothing else.
///
/// A large (bulk) message may travel as consecutive fragments of one channel: bit 7 of the
/// channel byte marks a fragment, bit 6 the last fragment; the receiver joins them. Whole frames
/// (bits 6 and 7 clear) of other messages may come between two fragments: that is how small,
/// urgent messages overtake a large one. Fragments of two bulk messages never interleave.
public enum Frame {
  /// The only version this code speaks.
  public static let version: UInt8 = 1
  /// Bytes before the payload.
  public static let headerSize = 6
  /// 16 MiB, the default maximum payload.
  public static let defaultMaximumPayload = 16 << 20
  /// Bit 7 of the channel byte: the frame is a fragment of a larger message.
  static let fragmentFlag: UInt8 = 0x80
  /// Bit 6 of the channel byte: the fragment is the message's last.
  static let lastFragmentFlag: UInt8 = 0x40
}

/// Whether a frame is a whole message or a fragment of one.
public enum FrameFragment: Sendable, Equatable {
  /// A whole message.
  case whole
  /// A fragment; more of the same message follow.
  case more
  /// The last fragment of a message.
  case last
}

/// A parsed frame header.
public struct FrameHeader: Equatable, Sendable {
  public var channel: PeerChannel
  public var length: Int
  public var fragment: FrameFragment

  public init(channel: PeerChannel, length: Int, fragment: FrameFragment = .whole) {
    self.channel = channel
    self.length = length
    self.fragment = fragment
  }

  /// Parses the first ``Frame/headerSize`` bytes of `bytes`, checking every field.
  /// - Returns: nil when fewer than ``Frame/headerSize`` bytes are available.
  public static func parse<Bytes: RandomAccessCollection>(
    _ bytes: Bytes, maximumPayload: Int
  ) throws(FrameError) -> FrameHeader? where Bytes.Element == UInt8, Bytes.Index == Int {
    guard bytes.count >= Frame.headerSize else { return nil }
    let start = bytes.startIndex
    let version = bytes[start]
    guard version == Frame.version else { throw .unsupportedVersion(version) }
    let channelByte = bytes[start + 1]
    let fragment: FrameFragment
    switch (channelByte & Frame.fragmentFlag != 0, channelByte & Frame.lastFragmentFlag != 0) {
    case (false, false): fragment = .whole
    case (true, false): fragment = .more
    case (true, true): fragment = .last
    case (false, true): throw .unknownChannel(channelByte)
    }
    guard let channel = PeerChannel(rawValue: channelByte & ~(Frame.fragmentFlag | Frame.lastFragmentFlag)) else {
      throw .unknownChannel(channelByte)
    }
    var length = 0
    for i in 2..<6 { length = length << 8 | Int(bytes[start + i]) }
    guard length <= maximumPayload else { throw .payloadTooLarge(length: length, limit: maximumPayload) }
    return FrameHeader(channel: channel, length: length, fragment: fragment)
  }

  /// The header's six bytes.
  public var bytes: [UInt8] {
    let length = UInt32(truncatingIfNeeded: self.length)
    let flags: UInt8
    switch fragment {
    case .whole: flags = 0
    case .more: flags = Frame.fragmentFlag
    case .last: flags = Frame.fragmentFlag | Frame.lastFragmentFlag
    }
    return [
      Frame.version, channel.rawValue | flags, UInt8(length >> 24), UInt8(truncatingIfNeeded: length >> 16),
      UInt8(truncatingIfNeeded: length >> 8), UInt8(truncatingIfNeeded: length),
    ]
  }
}

/// Why a frame was refused. The connection that sent it is closed.
public enum FrameError: Error, Equatable, Sendable, CustomStringConvertible {
  case unsupportedVersion(UInt8)
  case unknownChannel(UInt8)
  case payloadTooLarge(length: Int, limit: Int)

  public var description: String {
    switch self {
    case .unsupportedVersion(let v): "unsupported frame version \(v) (this node speaks \(Frame.version))"
    case .unknownChannel(let c): "unknown frame channel \(c)"
    case .payloadTooLarge(let length, let limit): "frame payload of \(length) bytes exceeds the limit of \(limit)"
    }
  }
}
