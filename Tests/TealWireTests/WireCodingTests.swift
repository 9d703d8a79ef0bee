import Testing

@testable import TealWire

@Suite("Wire encoding")
struct WireCodingTests {
  struct Sample: WireCodable, Equatable {
    var a: UInt64
    var b: Int64
    var name: String
    var maybe: String?
    var data: [UInt8]
    var nodes: [NodeID]
    var flag: Bool

    func encode(to writer: inout WireWriter) {
      writer.writeVarint(a)
      writer.writeSignedVarint(b)
      writer.write(name)
      writer.write(maybe)
      writer.write(data)
      writer.write(nodes)
      writer.write(flag)
    }

    init(a: UInt64, b: Int64, name: String, maybe: String?, data: [UInt8], nodes: [NodeID], flag: Bool) {
      (self.a, self.b, self.name, self.maybe, self.data, self.nodes, self.flag) = (a, b, name, maybe, data, nodes, flag)
    }

    init(from reader: inout WireReader) throws(WireError) {
      a = try reader.readVarint("a")
      b = try reader.readSignedVarint("b")
      name = try reader.readString("name")
      maybe = try reader.readOptionalString("maybe")
      data = try reader.readBytes("data")
      nodes = try reader.readArray(NodeID.self, "nodes")
      flag = try reader.readBool("flag")
    }
  }

  @Test func valuesRoundTrip() throws {
    for a: UInt64 in [0, 1, 127, 128, 300, UInt64.max] {
      for b: Int64 in [0, -1, 1, Int64.min, Int64.max] {
        let sample = Sample(
          a: a, b: b, name: "wéb", maybe: a % 2 == 0 ? nil : "x", data: [1, 2, 3], nodes: [NodeID("n1"), NodeID("n2")],
          flag: true)
        #expect(try Sample(wireBytes: sample.wireBytes()) == sample)
      }
    }
  }

  @Test func fixedWidthIntegersAreLittleEndian() throws {
    var writer = WireWriter()
    writer.writeFixed(UInt32(0x0102_0304))
    writer.writeFixed(UInt64(0x0102_0304_0506_0708))
    #expect(writer.bytes == [4, 3, 2, 1, 8, 7, 6, 5, 4, 3, 2, 1])
    var reader = WireReader(writer.bytes)
    #expect(try reader.readFixed32("x") == 0x0102_0304)
    #expect(try reader.readFixed64("y") == 0x0102_0304_0506_0708)
  }

  @Test func truncatedInputNamesTheField() {
    let bytes = Sample(a: 5, b: 1, name: "hello", maybe: nil, data: [], nodes: [], flag: false).wireBytes()
    #expect(throws: WireError.truncated(field: "name", needed: 3)) { try Sample(wireBytes: Array(bytes.prefix(5))) }
  }

  @Test func overlongVarintIsRefused() {
    var reader = WireReader([UInt8](repeating: 0xff, count: 11))
    #expect(throws: WireError.malformedVarint(field: "v")) { try reader.readVarint("v") }
  }

  @Test func hugeLengthPrefixIsRefusedBeforeAllocating() {
    var writer = WireWriter()
    writer.writeVarint(UInt64(1) << 40)
    var reader = WireReader(writer.bytes)
    #expect(throws: WireError.lengthTooLarge(field: "data", length: 1 << 40, limit: WireReader.defaultLengthLimit)) {
      try reader.readBytes("data")
    }
  }

  @Test func invalidNodeIDIsRefused() {
    var writer = WireWriter()
    writer.write("Bad Node")
    #expect(throws: WireError.self) { try NodeID(wireBytes: writer.bytes) }
  }

  @Test func trailingBytesAreRefused() {
    #expect(throws: WireError.trailingBytes(count: 1)) { try NodeID(wireBytes: NodeID("n1").wireBytes() + [0]) }
  }

  @Test func nodeIDRules() {
    #expect((try? NodeID(validating: "n1")) != nil)
    #expect((try? NodeID(validating: "node-7")) != nil)
    for bad in ["", "-n1", "N1", "n_1", "n.1", String(repeating: "a", count: 64)] {
      #expect(throws: NodeIDError.self) { try NodeID(validating: bad) }
    }
  }

  @Test func frameHeaderRoundTripsAndChecksEveryField() throws {
    let header = FrameHeader(channel: .gossip, length: 70_000)
    #expect(try FrameHeader.parse(header.bytes, maximumPayload: 1 << 20) == header)
    #expect(try FrameHeader.parse(Array(header.bytes.prefix(5)), maximumPayload: 1 << 20) == nil)
    #expect(throws: FrameError.payloadTooLarge(length: 70_000, limit: 65_536)) {
      try FrameHeader.parse(header.bytes, maximumPayload: 65_536)
    }
  }

  /// Random bytes decoded as a message must throw, never trap.
  @Test func seededGarbageNeverCrashesTheDecoder() {
    var state: UInt64 = 42
    func next() -> UInt64 {
      state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
      return state >> 11
    }
    var failures = 0
    for _ in 0..<20_000 {
      let bytes = (0..<Int(next() % 48)).map { _ in UInt8(truncatingIfNeeded: next()) }
      do { _ = try Sample(wireBytes: bytes) } catch { failures += 1 }
    }
    #expect(failures > 19_000)
  }
}
