import Foundation
import NIOCore
import NIOEmbedded
import TealTestSupport
import TealWire
import Testing

@testable import TealTransport

@Suite("Frame decoding")
struct FrameDecoderTests {
  func channel(maximumPayload: Int = Frame.defaultMaximumPayload) -> EmbeddedChannel {
    EmbeddedChannel(handler: ByteToMessageHandler(FrameDecoder(maximumPayload: maximumPayload)))
  }

  func encoded(_ channel: PeerChannel, _ payload: [UInt8]) -> ByteBuffer {
    var buffer = ByteBuffer(bytes: FrameHeader(channel: channel, length: payload.count).bytes)
    buffer.writeBytes(payload)
    return buffer
  }

  @Test func framesSplitAtEveryByteBoundaryDecodeWhole() throws {
    var stream = encoded(.raft, Array("hello".utf8))
    var second = encoded(.gossip, [])
    stream.writeBuffer(&second)
    var third = encoded(.control, (0..<300).map { UInt8($0 & 0xff) })
    stream.writeBuffer(&third)
    for split in 1..<stream.readableBytes {
      let channel = channel()
      var copy = stream
      try channel.writeInbound(copy.readSlice(length: split)!)
      try channel.writeInbound(copy)
      let frames = try (0..<3).map { _ in try #require(try channel.readInbound(as: PeerFrame.self)) }
      #expect(frames.map(\.channel) == [.raft, .gossip, .control])
      #expect(frames[0].payload == ByteBuffer(string: "hello"))
      #expect(frames[2].payload.readableBytes == 300)
      #expect(try channel.readInbound(as: PeerFrame.self) == nil)
    }
  }

  @Test func frameOfExactlyTheMaximumPassesAndOneByteMoreIsRefused() throws {
    let limit = Frame.defaultMaximumPayload
    let ok = channel()
    try ok.writeInbound(encoded(.raft, [UInt8](repeating: 7, count: limit)))
    #expect(try ok.readInbound(as: PeerFrame.self)?.payload.readableBytes == limit)

    let refused = channel()
    // The header alone is enough to refuse: the payload is never buffered.
    let header = ByteBuffer(bytes: FrameHeader(channel: .raft, length: limit + 1).bytes)
    #expect(throws: FrameError.payloadTooLarge(length: limit + 1, limit: limit)) { try refused.writeInbound(header) }
  }

  @Test func unknownVersionAndChannelAreRefused() throws {
    #expect(throws: FrameError.unsupportedVersion(2)) {
      try channel().writeInbound(ByteBuffer(bytes: [2, 1, 0, 0, 0, 0]))
    }
    #expect(throws: FrameError.unknownChannel(99)) {
      try channel().writeInbound(ByteBuffer(bytes: [1, 99, 0, 0, 0, 0]))
    }
  }

  @Test func encoderRefusesAnOversizedPayload() throws {
    let channel = EmbeddedChannel(handler: MessageToByteHandler(FrameEncoder(maximumPayload: 10)))
    #expect(throws: FrameError.payloadTooLarge(length: 11, limit: 10)) {
      try channel.writeOutbound(PeerFrame(channel: .raft, payload: ByteBuffer(bytes: [UInt8](repeating: 0, count: 11))))
    }
  }

  /// Random bytes, random valid frames cut short, and valid frames with one corrupted header byte:
  /// the decoder must either produce frames, wait for more, or throw a FrameError — never crash,
  /// never produce a frame larger than the limit.
  @Test func seededFuzzNeverCrashesTheDecoder() throws {
    let iterations = Int(environment("TEAL_FUZZ_ITERATIONS") ?? "") ?? 100_000
    var generator = SplitMix64(seed: UInt64(environment("TEAL_FUZZ_SEED") ?? "") ?? 0x7ea1)
    let limit = 4096
    var decoded = 0
    var refused = 0
    for _ in 0..<iterations {
      var input: [UInt8]
      switch generator.next() % 3 {
      case 0:
        input = (0..<Int(generator.next() % 64)).map { _ in UInt8(truncatingIfNeeded: generator.next()) }
      case 1:
        let length = Int(generator.next() % UInt64(limit + 1))
        input = FrameHeader(channel: .raft, length: length).bytes + [UInt8](repeating: 1, count: length)
        input = Array(input.prefix(Int(generator.next() % UInt64(input.count + 1))))
      default:
        let length = Int(generator.next() % 32)
        input = FrameHeader(channel: .gossip, length: length).bytes + [UInt8](repeating: 2, count: length)
        input[Int(generator.next() % 6)] = UInt8(truncatingIfNeeded: generator.next())
      }
      var decoder = FrameDecoder(maximumPayload: limit)
      var buffer = ByteBuffer(bytes: input)
      do {
        while let frame = try decoder.decode(buffer: &buffer) {
          #expect(frame.payload.readableBytes <= limit)
          decoded += 1
        }
      } catch is FrameError {
        refused += 1
      }
    }
    // The generator must have exercised both outcomes, or the fuzz proves nothing.
    #expect(decoded > iterations / 200)
    #expect(refused > iterations / 10)
  }
}

func environment(_ name: String) -> String? {
  ProcessInfo.processInfo.environment[name]
}
