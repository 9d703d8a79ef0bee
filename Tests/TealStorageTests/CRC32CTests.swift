// CRC-32C against published vectors and against a bit-at-a-time reference.

import TealTestSupport
import TealWire
import Testing

@testable import TealStorage

@Suite("CRC-32C")
struct CRC32CTests {
  /// The bitwise definition, independent of the sliced tables.
  private func referenceCRC32C(_ bytes: [UInt8]) -> UInt32 {
    var crc: UInt32 = 0xFFFF_FFFF
    for byte in bytes {
      crc ^= UInt32(byte)
      for _ in 0..<8 { crc = (crc & 1) != 0 ? (crc >> 1) ^ 0x82F6_3B78 : crc >> 1 }
    }
    return ~crc
  }

  @Test("the check value of \"123456789\" is 0xE3069283")
  func checkValue() {
    #expect(CRC32C.checksum(Array("123456789".utf8)) == 0xE306_9283)
  }

  @Test("RFC 3720 (iSCSI) test vectors")
  func iscsiVectors() {
    #expect(CRC32C.checksum([]) == 0)
    #expect(CRC32C.checksum([UInt8](repeating: 0, count: 32)) == 0x8A91_36AA)
    #expect(CRC32C.checksum([UInt8](repeating: 0xFF, count: 32)) == 0x62A8_AB43)
    #expect(CRC32C.checksum((0..<32).map { UInt8($0) }) == 0x46DD_794E)
    #expect(CRC32C.checksum((0..<32).reversed().map { UInt8($0) }) == 0x113F_DB5C)
  }

  @Test("the sliced implementation equals the bitwise definition for every length up to 100")
  func matchesReference() {
    var generator = SplitMix64(seed: 7)
    for length in 0...100 {
      let bytes = (0..<length).map { _ in UInt8(truncatingIfNeeded: generator.next()) }
      #expect(CRC32C.checksum(bytes) == referenceCRC32C(bytes), "length \(length)")
    }
  }

  @Test("update chains: checksum(a + b) == update(checksum(a), b)")
  func chaining() {
    let bytes = (0..<77).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 5) }
    for split in 0...bytes.count {
      let head = CRC32C.checksum(Array(bytes[..<split]))
      let chained = bytes[split...].withUnsafeBytes { CRC32C.update(head, $0) }
      #expect(chained == CRC32C.checksum(bytes), "split at \(split)")
    }
  }
}
