/// Compact binary encoding for peer messages.
///
/// Integers are little-endian fixed width or LEB128 varints; strings and byte arrays carry a
/// varint length prefix. Decoding never traps: every read checks the bytes that remain and throws
/// ``WireError`` naming what was being read, so arbitrary input from the network is safe to decode.

// MARK: - Errors

/// Why a byte sequence could not be decoded.
public enum WireError: Error, Equatable, Sendable, CustomStringConvertible {
  /// The input ended while `field` still needed `needed` more bytes.
  case truncated(field: String, needed: Int)
  /// A varint ran longer than 10 bytes or overflowed 64 bits.
  case malformedVarint(field: String)
  /// A length prefix exceeded the limit for `field`.
  case lengthTooLarge(field: String, length: UInt64, limit: Int)
  /// A string was not valid UTF-8.
  case invalidUTF8(field: String)
  /// An enum tag or discriminator had no known meaning.
  case unknownTag(field: String, tag: UInt64)
  /// Bytes were left over after a complete message was decoded.
  case trailingBytes(count: Int)
  /// A value decoded but broke a rule of its type.
  case invalidValue(field: String, reason: String)

  public var description: String {
    switch self {
    case .truncated(let field, let needed): "truncated input: \(field) needs \(needed) more bytes"
    case .malformedVarint(let field): "malformed varint in \(field)"
    case .lengthTooLarge(let field, let length, let limit):
      "length \(length) of \(field) exceeds the limit \(limit)"
    case .invalidUTF8(let field): "\(field) is not valid UTF-8"
    case .unknownTag(let field, let tag): "unknown tag \(tag) for \(field)"
    case .trailingBytes(let count): "\(count) unexpected bytes after the message"
    case .invalidValue(let field, let reason): "invalid \(field): \(reason)"
    }
  }
}

// MARK: - Writer

/// Appends encoded values to a byte array.
public struct WireWriter: Sendable {
  public private(set) var bytes: [UInt8]

  public init(capacity: Int = 64) {
    bytes = []
    bytes.reserveCapacity(capacity)
  }

  public mutating func write(_ value: UInt8) { bytes.append(value) }

  public mutating func write(_ value: Bool) { bytes.append(value ? 1 : 0) }

  /// Writes `value` as 8 little-endian bytes.
  public mutating func writeFixed(_ value: UInt64) {
    var v = value.littleEndian
    withUnsafeBytes(of: &v) { bytes.append(contentsOf: $0) }
  }

  /// Writes `value` as 4 little-endian bytes.
  public mutating func writeFixed(_ value: UInt32) {
    var v = value.littleEndian
    withUnsafeBytes(of: &v) { bytes.append(contentsOf: $0) }
  }

  /// Writes `value` as an unsigned LEB128 varint (1 to 10 bytes).
  public mutating func writeVarint(_ value: UInt64) {
    var v = value
    while v >= 0x80 {
      bytes.append(UInt8(truncatingIfNeeded: v) | 0x80)
      v >>= 7
    }
    bytes.append(UInt8(v))
  }

  public mutating func writeVarint(_ value: Int) { writeVarint(UInt64(value)) }

  /// Writes a signed value with zig-zag encoding, so small negative numbers stay short.
  public mutating func writeSignedVarint(_ value: Int64) {
    writeVarint(UInt64(bitPattern: (value << 1) ^ (value >> 63)))
  }

  public mutating func write(_ value: [UInt8]) {
    writeVarint(UInt64(value.count))
    bytes.append(contentsOf: value)
  }

  public mutating func write(_ value: String) {
    write(Array(value.utf8))
  }

  public mutating func write(_ value: String?) {
    write(value != nil)
    if let value { write(value) }
  }

  public mutating func write<T: WireEncodable>(_ value: T) { value.encode(to: &self) }

  public mutating func write<T: WireEncodable>(_ values: [T]) {
    writeVarint(UInt64(values.count))
    for value in values { value.encode(to: &self) }
  }
}

// MARK: - Reader

/// Reads encoded values from a byte array, checking every bound.
public struct WireReader: Sendable {
  /// The largest length prefix accepted for one string, byte array or array count.
  public static let defaultLengthLimit = 64 << 20

  public let bytes: [UInt8]
  public private(set) var offset: Int
  public let lengthLimit: Int

  public init(_ bytes: [UInt8], lengthLimit: Int = WireReader.defaultLengthLimit) {
    self.bytes = bytes
    self.offset = 0
    self.lengthLimit = lengthLimit
  }

  public var remaining: Int { bytes.count - offset }
  public var isAtEnd: Bool { offset >= bytes.count }

  private mutating func need(_ count: Int, _ field: String) throws(WireError) {
    if remaining < count { throw .truncated(field: field, needed: count - remaining) }
  }

  public mutating func readByte(_ field: String) throws(WireError) -> UInt8 {
    try need(1, field)
    defer { offset += 1 }
    return bytes[offset]
  }

  public mutating func readBool(_ field: String) throws(WireError) -> Bool {
    switch try readByte(field) {
    case 0: return false
    case 1: return true
    case let other: throw .unknownTag(field: field, tag: UInt64(other))
    }
  }

  public mutating func readFixed64(_ field: String) throws(WireError) -> UInt64 {
    try need(8, field)
    var v: UInt64 = 0
    for i in 0..<8 { v |= UInt64(bytes[offset + i]) << (8 * UInt64(i)) }
    offset += 8
    return v
  }

  public mutating func readFixed32(_ field: String) throws(WireError) -> UInt32 {
    try need(4, field)
    var v: UInt32 = 0
    for i in 0..<4 { v |= UInt32(bytes[offset + i]) << (8 * UInt32(i)) }
    offset += 4
    return v
  }

  public mutating func readVarint(_ field: String) throws(WireError) -> UInt64 {
    var result: UInt64 = 0
    var shift: UInt64 = 0
    while true {
      let byte = try readByte(field)
      if shift == 63 && byte > 1 { throw .malformedVarint(field: field) }
      result |= UInt64(byte & 0x7f) << shift
      if byte & 0x80 == 0 { return result }
      shift += 7
      if shift > 63 { throw .malformedVarint(field: field) }
    }
  }

  /// Reads a varint that must fit in `Int` and be at most `limit`.
  public mutating func readCount(_ field: String, limit: Int? = nil) throws(WireError) -> Int {
    let value = try readVarint(field)
    let max = limit ?? lengthLimit
    if value > UInt64(max) { throw .lengthTooLarge(field: field, length: value, limit: max) }
    return Int(value)
  }

  public mutating func readSignedVarint(_ field: String) throws(WireError) -> Int64 {
    let raw = try readVarint(field)
    return Int64(bitPattern: raw >> 1) ^ -Int64(bitPattern: raw & 1)
  }

  public mutating func readBytes(_ field: String) throws(WireError) -> [UInt8] {
    let count = try readCount(field)
    try need(count, field)
    defer { offset += count }
    return Array(bytes[offset..<offset + count])
  }

  public mutating func readString(_ field: String) throws(WireError) -> String {
    let raw = try readBytes(field)
    guard let string = String(validating: raw, as: UTF8.self) else { throw .invalidUTF8(field: field) }
    return string
  }

  public mutating func readOptionalString(_ field: String) throws(WireError) -> String? {
    try readBool(field) ? try readString(field) : nil
  }

  public mutating func read<T: WireDecodable>(_ type: T.Type) throws(WireError) -> T {
    try T(from: &self)
  }

  public mutating func readArray<T: WireDecodable>(
    _ type: T.Type, _ field: String
  ) throws(WireError) -> [T] {
    let count = try readCount(field)
    var values: [T] = []
    // Never trust a count for preallocation beyond what the remaining bytes could hold.
    values.reserveCapacity(min(count, remaining))
    for _ in 0..<count { values.append(try T(from: &self)) }
    return values
  }

  /// Throws if any bytes remain: a complete message must use its whole frame.
  public func expectEnd() throws(WireError) {
    if remaining > 0 { throw .trailingBytes(count: remaining) }
  }
}

// MARK: - Protocols

public protocol WireEncodable: Sendable {
  func encode(to writer: inout WireWriter)
}

public protocol WireDecodable: Sendable {
  init(from reader: inout WireReader) throws(WireError)
}

public typealias WireCodable = WireEncodable & WireDecodable

extension WireEncodable {
  /// The value encoded on its own.
  public func wireBytes() -> [UInt8] {
    var writer = WireWriter()
    encode(to: &writer)
    return writer.bytes
  }
}

extension WireDecodable {
  /// Decodes one value that must use all of `bytes`.
  public init(wireBytes bytes: [UInt8]) throws(WireError) {
    var reader = WireReader(bytes)
    self = try Self(from: &reader)
    try reader.expectEnd()
  }
}
