import TealWire
import Testing

@testable import TealNode

@Suite("Control channel messages")
struct ControlMessageTests {
  static let messages: [ControlMessage] = [
    .proposeRequest(id: 1, entry: [1, 2, 3]),
    .proposeRequest(id: .max, entry: []),
    .proposeResponse(id: 7, outcome: .applied(index: 42, result: Array("ok".utf8))),
    .proposeResponse(id: 8, outcome: .notLeader(leader: NodeID("n3"))),
    .proposeResponse(id: 9, outcome: .notLeader(leader: nil)),
    .proposeResponse(id: 10, outcome: .retryLater("not ready")),
    .proposeResponse(id: 11, outcome: .outcomeUnknown("leader lost")),
    .proposeResponse(id: 12, outcome: .refused("too large")),
    .trafficReport(samples: Array("[]".utf8)),
  ]

  @Test("every message survives a round trip")
  func roundTrip() throws {
    for message in Self.messages {
      #expect(try ControlMessage(decoding: message.encoded()) == message)
    }
  }

  @Test("an unknown version or kind, a truncation and trailing bytes are refused, never a crash")
  func badInput() {
    let good = ControlMessage.proposeRequest(id: 5, entry: [9, 9]).encoded()
    var wrongVersion = good
    wrongVersion[0] = 99
    var wrongKind = good
    wrongKind[1] = 77
    for bytes in [[], wrongVersion, wrongKind, Array(good.dropLast()), good + [0]] {
      #expect(throws: WireError.self) { _ = try ControlMessage(decoding: bytes) }
    }
  }

  @Test("random bytes never crash the decoder")
  func fuzz() {
    var random = SplitMix64(seed: 14)
    for _ in 0..<20_000 {
      let count = Int(random.next() % 64)
      var bytes = (0..<count).map { _ in UInt8(truncatingIfNeeded: random.next()) }
      if !bytes.isEmpty, random.next() % 2 == 0 { bytes[0] = ControlMessage.version }
      _ = try? ControlMessage(decoding: bytes)
    }
  }
}
