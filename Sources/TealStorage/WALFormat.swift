// The on-disk encoding of WAL segments and records. Docs/STORAGE.md describes it byte by byte;
// everything is little-endian.

// MARK: - Byte encoding

/// Appends little-endian integers and byte strings to a buffer.
struct ByteWriter {
  var bytes: [UInt8] = []

  init(capacity: Int = 0) { bytes.reserveCapacity(capacity) }

  mutating func u8(_ value: UInt8) { bytes.append(value) }

  mutating func u16(_ value: UInt16) { withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) } }

  mutating func u32(_ value: UInt32) { withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) } }

  mutating func u64(_ value: UInt64) { withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) } }

  mutating func raw(_ value: [UInt8]) { bytes.append(contentsOf: value) }
}

/// Why a byte string could not be decoded; callers turn it into a `StorageError` naming the file and offset.
struct DecodeFailure: Error {
  var reason: String
}

/// Reads little-endian integers from a byte slice, failing (never trapping) on short input.
struct ByteReader {
  private let bytes: ArraySlice<UInt8>
  private(set) var position: Int

  init(_ bytes: ArraySlice<UInt8>) {
    self.bytes = bytes
    self.position = bytes.startIndex
  }

  var remaining: Int { bytes.endIndex - position }

  private mutating func take(_ count: Int, _ what: String) throws(DecodeFailure) -> ArraySlice<UInt8> {
    guard count >= 0, remaining >= count else {
      throw DecodeFailure(reason: "\(what) needs \(count) bytes but only \(remaining) remain")
    }
    defer { position += count }
    return bytes[position..<position + count]
  }

  private mutating func integer<T: FixedWidthInteger>(_ type: T.Type, _ what: String) throws(DecodeFailure) -> T {
    let slice = try take(MemoryLayout<T>.size, what)
    var value: T = 0
    for (shift, byte) in slice.enumerated() { value |= T(byte) << (8 * shift) }
    return value
  }

  mutating func u8(_ what: String) throws(DecodeFailure) -> UInt8 { try integer(UInt8.self, what) }
  mutating func u16(_ what: String) throws(DecodeFailure) -> UInt16 { try integer(UInt16.self, what) }
  mutating func u32(_ what: String) throws(DecodeFailure) -> UInt32 { try integer(UInt32.self, what) }
  mutating func u64(_ what: String) throws(DecodeFailure) -> UInt64 { try integer(UInt64.self, what) }
  mutating func raw(_ count: Int, _ what: String) throws(DecodeFailure) -> [UInt8] { Array(try take(count, what)) }
}

// MARK: - Segment file header

/// The 48-byte header at the start of every WAL segment file.
///
/// Layout: magic `TEALWAL\n` (8) | version u32 | header length u32 (= 48) | sequence u64 |
/// previous index u64 | previous term u64 | reserved u32 (= 0) | CRC-32C u32 of bytes 0..<44.
/// `previousIndex`/`previousTerm` are the log's last index and term when the segment was started, so a
/// segment can be replayed without the (possibly compacted) segments before it. The version decides how
/// the segment's records are checksummed (`RecordFormat`).
struct SegmentHeader: Equatable {
  static let magic: [UInt8] = Array("TEALWAL\n".utf8)
  /// The version this build writes: 2, record checksums seeded with the record's segment and offset.
  static let version: UInt32 = 2
  /// The versions this build reads: 1 (record checksums not seeded) and 2.
  static let readableVersions: ClosedRange<UInt32> = 1...2
  static let size = 48

  var version: UInt32 = SegmentHeader.version
  var sequence: UInt64
  var previousIndex: UInt64
  var previousTerm: UInt64

  /// How this segment's records are checksummed.
  var format: RecordFormat { RecordFormat(version: version, sequence: sequence) }

  func encoded() -> [UInt8] {
    var writer = ByteWriter(capacity: Self.size)
    writer.raw(Self.magic)
    writer.u32(version)
    writer.u32(UInt32(Self.size))
    writer.u64(sequence)
    writer.u64(previousIndex)
    writer.u64(previousTerm)
    writer.u32(0)
    writer.u32(CRC32C.checksum(writer.bytes))
    return writer.bytes
  }

  static func decode(_ bytes: [UInt8]) throws(DecodeFailure) -> SegmentHeader {
    guard bytes.count >= size else {
      throw DecodeFailure(reason: "the file has \(bytes.count) bytes, shorter than the \(size)-byte header")
    }
    guard Array(bytes[0..<8]) == magic else { throw DecodeFailure(reason: "bad magic (not a Teal WAL segment)") }
    var reader = ByteReader(bytes[8..<size])
    let version = try reader.u32("version")
    guard readableVersions.contains(version) else {
      throw DecodeFailure(
        reason: "unsupported format version \(version) (this build reads versions \(readableVersions.lowerBound) to "
          + "\(readableVersions.upperBound)); a newer Teal wrote it: run that version or a newer one on this "
          + "data directory")
    }
    let headerSize = try reader.u32("header length")
    let sequence = try reader.u64("sequence")
    let previousIndex = try reader.u64("previous index")
    let previousTerm = try reader.u64("previous term")
    _ = try reader.u32("reserved")
    let storedChecksum = try reader.u32("checksum")
    let computed = CRC32C.checksum(bytes[0..<size - 4])
    guard storedChecksum == computed else {
      throw DecodeFailure(reason: "header checksum mismatch (stored \(hex(storedChecksum)), computed \(hex(computed)))")
    }
    guard headerSize == UInt32(size) else { throw DecodeFailure(reason: "unexpected header length \(headerSize)") }
    return SegmentHeader(
      version: version, sequence: sequence, previousIndex: previousIndex, previousTerm: previousTerm)
  }
}

// MARK: - Records

/// How the records of one segment are checksummed.
///
/// In version 2 a record's CRC-32C starts from the CRC-32C of its segment's sequence number and its byte
/// offset in the segment (two little-endian u64), so a record image is valid only where it was written: a
/// stale image left in a reused block, or copied to another offset or segment, fails its checksum. In
/// version 1 the checksum starts from 0.
struct RecordFormat: Equatable {
  var version: UInt32
  var sequence: UInt64

  /// The CRC a record's checksum at `offset` starts from.
  func seed(at offset: Int) -> UInt32 {
    guard version >= 2 else { return 0 }
    var writer = ByteWriter(capacity: 16)
    writer.u64(sequence)
    writer.u64(UInt64(offset))
    return CRC32C.checksum(writer.bytes)
  }
}

/// The kinds of WAL record. Only `update` exists in format versions 1 and 2; any other value is corruption.
enum RecordType: UInt8 {
  /// An atomic log update: an optional rebase (truncation), then entries, then an optional hard state.
  case update = 1
}

/// The 12-byte header in front of every record's payload.
///
/// Layout: payload length u32 | type u8 | reserved 3 bytes (= 0) | CRC-32C u32 of the first 8 header bytes
/// followed by the payload, started from the seed of `RecordFormat` (version 2: segment and offset).
enum RecordFraming {
  static let headerSize = 12
  /// The largest payload a record may have; a larger length field is treated as damage.
  static let maximumPayload = 1 << 30

  /// The record of `payload` to be written at byte `offset` of a segment of `format`.
  static func frame(type: RecordType, payload: [UInt8], format: RecordFormat, offset: Int) -> [UInt8] {
    var writer = ByteWriter(capacity: headerSize + payload.count)
    writer.u32(UInt32(payload.count))
    writer.u8(type.rawValue)
    writer.u8(0)
    writer.u16(0)
    var checksum = writer.bytes.withUnsafeBytes { CRC32C.update(format.seed(at: offset), $0) }
    checksum = payload.withUnsafeBytes { CRC32C.update(checksum, $0) }
    writer.u32(checksum)
    writer.raw(payload)
    return writer.bytes
  }

  /// The outcome of trying to read one record at an offset of a segment's bytes.
  enum Parse {
    /// A complete record with a valid checksum; `end` is the offset just past it.
    case valid(type: UInt8, payload: ArraySlice<UInt8>, end: Int)
    /// Not a valid record (short, or a bad length, type, padding or checksum), for the stated reason.
    case invalid(reason: String)
  }

  static func parse(_ bytes: [UInt8], at offset: Int, format: RecordFormat) -> Parse {
    let available = bytes.count - offset
    guard available >= headerSize else {
      return .invalid(reason: "only \(available) bytes remain, short of a \(headerSize)-byte record header")
    }
    let length =
      Int(bytes[offset]) | Int(bytes[offset + 1]) << 8 | Int(bytes[offset + 2]) << 16 | Int(bytes[offset + 3]) << 24
    let type = bytes[offset + 4]
    guard RecordType(rawValue: type) != nil else { return .invalid(reason: "unknown record type \(type)") }
    guard bytes[offset + 5] == 0 && bytes[offset + 6] == 0 && bytes[offset + 7] == 0 else {
      return .invalid(reason: "nonzero reserved header bytes")
    }
    guard length <= maximumPayload else { return .invalid(reason: "record length \(length) exceeds the maximum") }
    guard available - headerSize >= length else {
      return .invalid(reason: "record of \(length) payload bytes is cut short at end of file")
    }
    let stored =
      UInt32(bytes[offset + 8]) | UInt32(bytes[offset + 9]) << 8 | UInt32(bytes[offset + 10]) << 16
      | UInt32(bytes[offset + 11]) << 24
    let payloadRange = (offset + headerSize)..<(offset + headerSize + length)
    let computed = bytes.withUnsafeBytes { raw in
      let header = CRC32C.update(format.seed(at: offset), UnsafeRawBufferPointer(rebasing: raw[offset..<offset + 8]))
      return CRC32C.update(header, UnsafeRawBufferPointer(rebasing: raw[payloadRange]))
    }
    guard stored == computed else {
      return .invalid(reason: "checksum mismatch (stored \(hex(stored)), computed \(hex(computed)))")
    }
    return .valid(type: type, payload: bytes[payloadRange], end: payloadRange.upperBound)
  }

  /// The offset of the first valid record that starts anywhere in `bytes` after `offset`, if any. Used to tell
  /// a torn tail (nothing valid follows the bad record) from corruption in the middle (valid data follows).
  static func firstValidRecord(in bytes: [UInt8], after offset: Int, format: RecordFormat) -> Int? {
    var candidate = offset + 1
    while candidate + headerSize <= bytes.count {
      if case .valid = parse(bytes, at: candidate, format: format) { return candidate }
      candidate += 1
    }
    return nil
  }
}

/// The payload of an `update` record: applied in order rebase, entries, hard state.
///
/// Layout: flags u8 (bit 0: has rebase, bit 1: has hard state; other bits 0) |
/// [rebase: previous index u64, previous term u64] |
/// [hard state: term u64, commit u64, vote flag u8 (0 none, 1 present), vote length u16, vote UTF-8 bytes] |
/// entry count u32 | entries, each: index u64, term u64, kind u8, payload length u32, payload.
struct LogUpdate: Equatable {
  /// "The log continues after (index, term)": entries after `index` are discarded; if the log does not hold
  /// `term` at `index`, all entries are discarded and the log restarts after (index, term).
  var rebase: (index: UInt64, term: UInt64)?
  var entries: [StoredEntry]
  var hardState: StoredHardState?

  static func == (lhs: LogUpdate, rhs: LogUpdate) -> Bool {
    lhs.rebase?.index == rhs.rebase?.index && lhs.rebase?.term == rhs.rebase?.term && lhs.entries == rhs.entries
      && lhs.hardState == rhs.hardState
  }

  func encoded() -> [UInt8] {
    var size = 1 + 16 + 32 + 4
    for entry in entries { size += 21 + entry.payload.count }
    var writer = ByteWriter(capacity: size)
    writer.u8((rebase == nil ? 0 : 1) | (hardState == nil ? 0 : 2))
    if let rebase {
      writer.u64(rebase.index)
      writer.u64(rebase.term)
    }
    if let hardState {
      writer.u64(hardState.term)
      writer.u64(hardState.commit)
      if let vote = hardState.vote {
        let voteBytes = Array(vote.utf8)
        writer.u8(1)
        writer.u16(UInt16(voteBytes.count))
        writer.raw(voteBytes)
      } else {
        writer.u8(0)
        writer.u16(0)
      }
    }
    writer.u32(UInt32(entries.count))
    for entry in entries {
      writer.u64(entry.index)
      writer.u64(entry.term)
      writer.u8(entry.kind)
      writer.u32(UInt32(entry.payload.count))
      writer.raw(entry.payload)
    }
    return writer.bytes
  }

  static func decode(_ payload: ArraySlice<UInt8>) throws(DecodeFailure) -> LogUpdate {
    var reader = ByteReader(payload)
    let flags = try reader.u8("flags")
    guard flags & ~3 == 0 else { throw DecodeFailure(reason: "unknown update flags \(flags)") }
    var update = LogUpdate(rebase: nil, entries: [], hardState: nil)
    if flags & 1 != 0 {
      update.rebase = (try reader.u64("rebase index"), try reader.u64("rebase term"))
    }
    if flags & 2 != 0 {
      let term = try reader.u64("hard state term")
      let commit = try reader.u64("hard state commit")
      let hasVote = try reader.u8("vote flag")
      let voteLength = Int(try reader.u16("vote length"))
      let voteBytes = try reader.raw(voteLength, "vote")
      let vote: String?
      switch hasVote {
      case 0:
        guard voteLength == 0 else { throw DecodeFailure(reason: "a vote length without a vote") }
        vote = nil
      case 1:
        // Decoding repairs invalid UTF-8 with U+FFFD, so a round trip that changes the bytes means invalid input.
        let decoded = String(decoding: voteBytes, as: UTF8.self)
        guard Array(decoded.utf8) == voteBytes else { throw DecodeFailure(reason: "the vote is not valid UTF-8") }
        vote = decoded
      default:
        throw DecodeFailure(reason: "unknown vote flag \(hasVote)")
      }
      update.hardState = StoredHardState(term: term, vote: vote, commit: commit)
    }
    let count = Int(try reader.u32("entry count"))
    guard count <= reader.remaining / 21 else {
      throw DecodeFailure(reason: "entry count \(count) does not fit in the record")
    }
    update.entries.reserveCapacity(count)
    for _ in 0..<count {
      let index = try reader.u64("entry index")
      let term = try reader.u64("entry term")
      let kind = try reader.u8("entry kind")
      let length = Int(try reader.u32("entry payload length"))
      let payload = try reader.raw(length, "entry payload")
      update.entries.append(StoredEntry(index: index, term: term, kind: kind, payload: payload))
    }
    guard reader.remaining == 0 else { throw DecodeFailure(reason: "\(reader.remaining) trailing bytes") }
    return update
  }
}

// MARK: - File names

/// File naming in the data directory.
enum StorageFileNames {
  static let lock = "LOCK"
  static let spaceReserve = "space-reserve"
  static let temporarySuffix = ".tmp"

  static func segment(_ sequence: UInt64) -> String { "wal-\(hex16(sequence)).log" }

  static func snapshot(index: UInt64, term: UInt64) -> String { "snapshot-\(hex16(index))-\(hex16(term)).snap" }

  /// The sequence number of a segment file name, or nil if `name` is not one.
  static func segmentSequence(_ name: String) -> UInt64? {
    guard name.hasPrefix("wal-"), name.hasSuffix(".log"), name.count == 4 + 16 + 4 else { return nil }
    return UInt64(name.dropFirst(4).prefix(16), radix: 16)
  }

  /// The (index, term) of a snapshot file name, or nil if `name` is not one.
  static func snapshotPosition(_ name: String) -> (index: UInt64, term: UInt64)? {
    guard name.hasPrefix("snapshot-"), name.hasSuffix(".snap"), name.count == 9 + 16 + 1 + 16 + 5 else { return nil }
    let body = name.dropFirst(9)
    guard let index = UInt64(body.prefix(16), radix: 16), body.dropFirst(16).first == "-",
      let term = UInt64(body.dropFirst(17).prefix(16), radix: 16)
    else { return nil }
    return (index, term)
  }
}

func hex16(_ value: UInt64) -> String {
  let digits = String(value, radix: 16)
  return String(repeating: "0", count: max(0, 16 - digits.count)) + digits
}

func hex(_ value: UInt32) -> String {
  let digits = String(value, radix: 16)
  return "0x" + String(repeating: "0", count: max(0, 8 - digits.count)) + digits
}
