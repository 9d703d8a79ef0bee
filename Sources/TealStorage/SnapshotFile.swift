// The snapshot file format: one file per snapshot, written whole to a temporary name, synced, then renamed.

/// Encodes and decodes snapshot files.
///
/// Layout: magic `TEALSNP\n` (8) | version u32 | reserved u32 (= 0) | index u64 | term u64 |
/// configuration length u32 | reserved u32 (= 0) | data length u64 | configuration | data |
/// CRC-32C u32 of every byte before it. The header is 48 bytes.
enum SnapshotFile {
  static let magic: [UInt8] = Array("TEALSNP\n".utf8)
  static let version: UInt32 = 1
  static let headerSize = 48

  static func encode(_ snapshot: StoredSnapshot) -> [UInt8] {
    var writer = ByteWriter(capacity: headerSize + snapshot.metadata.configuration.count + snapshot.data.count + 4)
    writer.raw(magic)
    writer.u32(version)
    writer.u32(0)
    writer.u64(snapshot.metadata.index)
    writer.u64(snapshot.metadata.term)
    writer.u32(UInt32(snapshot.metadata.configuration.count))
    writer.u32(0)
    writer.u64(UInt64(snapshot.data.count))
    writer.raw(snapshot.metadata.configuration)
    writer.raw(snapshot.data)
    writer.u32(CRC32C.checksum(writer.bytes))
    return writer.bytes
  }

  static func decode(_ bytes: [UInt8]) throws(DecodeFailure) -> StoredSnapshot {
    guard bytes.count >= headerSize + 4 else {
      throw DecodeFailure(reason: "the file has \(bytes.count) bytes, shorter than a snapshot header")
    }
    guard Array(bytes[0..<8]) == magic else { throw DecodeFailure(reason: "bad magic (not a Teal snapshot)") }
    let stored = bytes[(bytes.count - 4)...].reversed().reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
    let computed = CRC32C.checksum(bytes[0..<(bytes.count - 4)])
    guard stored == computed else {
      throw DecodeFailure(reason: "checksum mismatch (stored \(hex(stored)), computed \(hex(computed)))")
    }
    var reader = ByteReader(bytes[8..<(bytes.count - 4)])
    let version = try reader.u32("version")
    guard version == Self.version else {
      throw DecodeFailure(reason: "unsupported format version \(version) (this build reads version \(Self.version))")
    }
    _ = try reader.u32("reserved")
    let index = try reader.u64("index")
    let term = try reader.u64("term")
    let configurationLength = Int(try reader.u32("configuration length"))
    _ = try reader.u32("reserved")
    let dataLength = try reader.u64("data length")
    guard dataLength <= UInt64(reader.remaining) else {
      throw DecodeFailure(reason: "data length \(dataLength) exceeds the file")
    }
    let configuration = try reader.raw(configurationLength, "configuration")
    let data = try reader.raw(Int(dataLength), "data")
    guard reader.remaining == 0 else { throw DecodeFailure(reason: "\(reader.remaining) trailing bytes") }
    return StoredSnapshot(
      metadata: SnapshotMetadata(index: index, term: term, configuration: configuration), data: data)
  }
}
