import TealGossip
import TealGossipSim
import TealWire
import Testing

@Suite struct SWIMWireCodingTests {
  static func sampleMessages() -> [SWIMMessage] {
    var metadata = Fixture.metadata(3)
    metadata.listenerPorts = [80, 443, 65535]
    metadata.raftRole = .leader
    metadata.raftTerm = 1 << 40
    metadata.peerAddress = HostPort(host: "fe80::1", port: 7400)
    let updates = [
      Fixture.update(2),
      Fixture.update(3, .suspect, incarnation: 9, by: 4),
      MemberUpdate(
        member: Member(id: Fixture.id(3), status: .dead, incarnation: .max, metadata: metadata, leftGracefully: true)),
      Fixture.update(5, .unreachable, incarnation: 1),
    ]
    return [
      .ping(sequence: 1, updates: []),
      .ping(sequence: .max, updates: updates),
      .pingRequest(sequence: 42, target: Fixture.id(9), updates: updates),
      .ack(sequence: 300, target: Fixture.id(2), updates: [updates[0]]),
      .nack(sequence: 7, target: Fixture.id(2), updates: []),
      .gossip(updates: updates),
      .pushPull(isResponse: true, isJoin: false, members: updates),
      .pushPull(isResponse: false, isJoin: true, members: []),
    ]
  }

  @Test func everyMessageKindRoundTripsThroughTheWireEncoding() throws {
    for message in Self.sampleMessages() {
      let decoded = try SWIMMessage(wireBytes: message.wireBytes())
      #expect(decoded == message)
    }
  }

  @Test func everyTruncationOfAValidMessageThrowsInsteadOfCrashing() {
    for message in Self.sampleMessages() {
      let bytes = message.wireBytes()
      for length in 0..<bytes.count {
        #expect(throws: WireError.self) { try SWIMMessage(wireBytes: Array(bytes[0..<length])) }
      }
    }
  }

  @Test func randomGarbageAndBitFlipsNeverCrashTheDecoder() {
    var random = SplitMix64(seed: 99)
    var rejected = 0
    for _ in 0..<5000 {
      let length = Int(random.next() % 200)
      let garbage = (0..<length).map { _ in UInt8(truncatingIfNeeded: random.next()) }
      if (try? SWIMMessage(wireBytes: garbage)) == nil { rejected += 1 }
    }
    #expect(rejected > 4900)
    for message in Self.sampleMessages() {
      let bytes = message.wireBytes()
      for _ in 0..<200 {
        var corrupted = bytes
        let index = Int(random.next() % UInt64(bytes.count))
        corrupted[index] ^= UInt8(truncatingIfNeeded: random.next() | 1)
        // Decoding may succeed (a flipped incarnation is still a valid message) or throw; it
        // must not trap.
        _ = try? SWIMMessage(wireBytes: corrupted)
      }
    }
  }

  @Test func unknownVersionTagStatusAndPortAreRejectedWithTheFieldNamed() {
    let valid = SWIMMessage.gossip(updates: [Fixture.update(2)]).wireBytes()
    var badVersion = valid
    badVersion[0] = 9
    #expect(throws: WireError.invalidValue(field: "swim.version", reason: "version 9 is not supported (expected 2)")) {
      try SWIMMessage(wireBytes: badVersion)
    }
    var badTag = valid
    badTag[1] = 77
    #expect(throws: WireError.unknownTag(field: "swim.tag", tag: 77)) { try SWIMMessage(wireBytes: badTag) }

    var writer = WireWriter()
    writer.write(SWIMMessage.wireVersion)
    writer.write(UInt8(5))  // gossip
    writer.writeVarint(1)
    writer.write(Fixture.id(2))
    writer.write(UInt8(8))  // no such status
    #expect(throws: WireError.unknownTag(field: "update.status", tag: 8)) { try SWIMMessage(wireBytes: writer.bytes) }

    var portWriter = WireWriter()
    portWriter.write("10.0.0.1")
    portWriter.writeVarint(UInt64(70_000))
    #expect(throws: WireError.self) { try MemberMetadata(wireBytes: portWriter.bytes) }
  }

  @Test func trailingBytesAfterAMessageAreRejected() {
    let bytes = SWIMMessage.ping(sequence: 3, updates: []).wireBytes() + [0]
    #expect(throws: WireError.trailingBytes(count: 1)) { try SWIMMessage(wireBytes: bytes) }
  }
}
