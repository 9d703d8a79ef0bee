/// The frame that carries one peer message over a TLS connection.
///
/// ```
/// offset  size  field
/// 0       1     version   (1)
/// 1       1     channel   (PeerChannel raw value)
/// 2       4     length    (payload bytes, big-endian, at most the configured maximum)
/// 6       n     payload
/// ```
/// A frame with another version, an unknown channel or a length above the maximum is malformed:
/// the receiver closes that connection and nothing else.
public enum Frame {
  /// The only version this code speaks.
  public static let version: UInt8 = 1
  /// Bytes before the payload.
  public static let headerSize = 6
  /// 16 MiB, the default maximum payload.
  public static let defaultMaximumPayload = 16 << 20
}

/// A parsed frame header.
public struct FrameHeader: Equatable, Sendable {
  public var channel: PeerChannel
  public var length: Int

  public init(channel: PeerChannel, length: Int) {
    self.channel = channel
    self.length = length
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
    guard let channel = PeerChannel(rawValue: bytes[start + 1]) else { throw .unknownChannel(bytes[start + 1]) }
    var length = 0
    for i in 2..<6 { length = length << 8 | Int(bytes[start + i]) }
    guard length <= maximumPayload else { throw .payloadTooLarge(length: length, limit: maximumPayload) }
    return FrameHeader(channel: channel, length: length)
  }

  /// The header's six bytes.
  public var bytes: [UInt8] {
    let length = UInt32(truncatingIfNeeded: self.length)
    return [
      Frame.version, channel.rawValue, UInt8(length >> 24), UInt8(truncatingIfNeeded: length >> 16),
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
