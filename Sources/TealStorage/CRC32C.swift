// CRC-32C (Castagnoli), the checksum of every WAL record and snapshot file.

/// CRC-32C (Castagnoli polynomial 0x1EDC6F41, reflected 0x82F63B78), computed with slicing-by-8 tables.
///
/// The checksum of `"123456789"` is `0xE3069283`, and of the empty input `0`. `update` can be chained:
/// `checksum(a + b) == update(checksum(a), b)`.
public enum CRC32C {
  /// The reflected form of the Castagnoli polynomial.
  public static let reflectedPolynomial: UInt32 = 0x82F6_3B78

  /// Eight 256-entry tables laid out back to back: `tables[k * 256 + b]` is the CRC contribution of byte `b`
  /// followed by `k` zero bytes.
  private static let tables: [UInt32] = {
    var tables = [UInt32](repeating: 0, count: 8 * 256)
    for byte in 0..<256 {
      var crc = UInt32(byte)
      for _ in 0..<8 {
        crc = (crc & 1) != 0 ? (crc >> 1) ^ reflectedPolynomial : crc >> 1
      }
      tables[byte] = crc
    }
    for slice in 1..<8 {
      for byte in 0..<256 {
        let previous = tables[(slice - 1) * 256 + byte]
        tables[slice * 256 + byte] = (previous >> 8) ^ tables[Int(previous & 0xFF)]
      }
    }
    return tables
  }()

  /// The CRC-32C of `bytes`.
  public static func checksum(_ bytes: [UInt8]) -> UInt32 {
    bytes.withUnsafeBytes { update(0, $0) }
  }

  /// The CRC-32C of `bytes`.
  public static func checksum(_ bytes: ArraySlice<UInt8>) -> UInt32 {
    bytes.withUnsafeBytes { update(0, $0) }
  }

  /// Continues a checksum: returns the CRC-32C of the data that produced `crc` followed by `bytes`.
  public static func update(_ crc: UInt32, _ bytes: UnsafeRawBufferPointer) -> UInt32 {
    tables.withUnsafeBufferPointer { table in
      var state = ~crc
      var position = 0
      let count = bytes.count
      while count - position >= 8 {
        let low =
          state
          ^ (UInt32(bytes[position]) | UInt32(bytes[position + 1]) << 8 | UInt32(bytes[position + 2]) << 16
            | UInt32(bytes[position + 3]) << 24)
        let high =
          UInt32(bytes[position + 4]) | UInt32(bytes[position + 5]) << 8 | UInt32(bytes[position + 6]) << 16
          | UInt32(bytes[position + 7]) << 24
        state =
          table[7 * 256 + Int(low & 0xFF)] ^ table[6 * 256 + Int((low >> 8) & 0xFF)]
          ^ table[5 * 256 + Int((low >> 16) & 0xFF)] ^ table[4 * 256 + Int(low >> 24)]
          ^ table[3 * 256 + Int(high & 0xFF)] ^ table[2 * 256 + Int((high >> 8) & 0xFF)]
          ^ table[1 * 256 + Int((high >> 16) & 0xFF)] ^ table[Int(high >> 24)]
        position += 8
      }
      while position < count {
        state = (state >> 8) ^ table[Int((state ^ UInt32(bytes[position])) & 0xFF)]
        position += 1
      }
      return ~state
    }
  }
}
