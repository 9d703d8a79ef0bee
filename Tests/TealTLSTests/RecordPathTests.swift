import NIOCore
import NIOEmbedded
import TealWire
import Testing

@testable import TealTLS

/// The record path: ciphertext in NIO buffers (the ByteBuffer BIO), small writes coalesced into
/// full records, read-ahead, and what happens to writes not flushed yet when the connection
/// closes or fails.
@Suite("TLS record path: coalesced writes, split records, bounded ciphertext, pending writes")
struct RecordPathTests {
  let pki = TestPKI.shared

  func connectedPair() throws -> TLSPair {
    let pair = try TLSPair(client: pki.context("n1"), expecting: "n2", server: pki.context("n2"))
    pump(pair.client, pair.server)
    _ = try #require(try pair.serverOutcome?.get())
    _ = try #require(try pair.clientOutcome?.get())
    return pair
  }

  /// Everything a channel has sent (flushed), concatenated.
  func sent(_ channel: EmbeddedChannel) throws -> ByteBuffer {
    var all = ByteBuffer()
    while var buffer = try channel.readOutbound(as: ByteBuffer.self) { all.writeBuffer(&buffer) }
    return all
  }

  /// Everything a channel passed on inbound, concatenated, and in how many reads.
  func received(_ channel: EmbeddedChannel) throws -> (bytes: ByteBuffer, reads: Int) {
    var all = ByteBuffer()
    var reads = 0
    while var buffer = try channel.readInbound(as: ByteBuffer.self) {
      reads += 1
      all.writeBuffer(&buffer)
    }
    return (all, reads)
  }

  /// The TLS records in `ciphertext`: (content type, length of the body).
  func records(_ ciphertext: ByteBuffer) -> [(type: UInt8, length: Int)] {
    var rest = ciphertext
    var found: [(type: UInt8, length: Int)] = []
    while rest.readableBytes >= 5, let type = rest.readInteger(as: UInt8.self) {
      rest.moveReaderIndex(forwardBy: 2)  // legacy version
      let length = Int(rest.readInteger(as: UInt16.self)!)
      found.append((type, length))
      rest.moveReaderIndex(forwardBy: min(length, rest.readableBytes))
    }
    return found
  }

  func succeeded(_ future: EventLoopFuture<Void>) -> Bool {
    if case .success = outcome(future) { return true }
    return false
  }

  func pattern(_ count: Int, seed: Int) -> ByteBuffer {
    ByteBuffer(bytes: (0..<count).map { UInt8(truncatingIfNeeded: ($0 &* 31) &+ seed) })
  }

  @Test func manySmallWritesBecomeFullRecordsAndArriveIntactInOrder() throws {
    let pair = try connectedPair()
    var expected = ByteBuffer()
    for index in 0..<2000 {
      let frame = pattern(index % 97 + 1, seed: index)
      expected.writeImmutableBuffer(frame)
      pair.client.write(frame, promise: nil)
    }
    pair.client.flush()
    let ciphertext = try sent(pair.client)
    // One record per 16 KiB of plaintext, not one per write.
    let found = records(ciphertext)
    let full = TLSConnection.maximumRecordPlaintext
    #expect(found.count == (expected.readableBytes + full - 1) / full)
    #expect(found.dropLast().allSatisfy { $0.type == 23 && $0.length == full + 17 })
    try pair.server.writeInbound(ciphertext)
    #expect(try received(pair.server).bytes == expected)
  }

  @Test func promisesOfCoalescedWritesCompleteOnceTheirRecordIsWritten() throws {
    let pair = try connectedPair()
    let loop = pair.client.eventLoop
    let first = loop.makePromise(of: Void.self)
    let empty = loop.makePromise(of: Void.self)
    let second = loop.makePromise(of: Void.self)
    pair.client.write(ByteBuffer(string: "one"), promise: first)
    pair.client.write(ByteBuffer(), promise: empty)
    pair.client.write(ByteBuffer(string: "two"), promise: second)
    // Nothing was encrypted or sent before the flush.
    #expect(outcome(first.futureResult) == nil)
    #expect(try pair.client.readOutbound(as: ByteBuffer.self) == nil)
    pair.client.flush()
    #expect([first, empty, second].allSatisfy { succeeded($0.futureResult) })
    pump(pair.client, pair.server)
    #expect(try received(pair.server).bytes == ByteBuffer(string: "onetwo"))
  }

  @Test func aLargeWriteBetweenSmallOnesKeepsTheOrderOfBytes() throws {
    let pair = try connectedPair()
    var expected = ByteBuffer()
    for frame in [
      ByteBuffer(string: "head"), pattern(100_000, seed: 7), ByteBuffer(string: "tail"), pattern(16384, seed: 3),
    ] {
      expected.writeImmutableBuffer(frame)
      pair.client.write(frame, promise: nil)
    }
    pair.client.flush()
    pump(pair.client, pair.server, chunkSize: 1000)
    #expect(try received(pair.server).bytes == expected)
  }

  @Test func aRecordSplitAcrossReadsAtAnyPointIsReassembled() throws {
    // Two records (20,000 bytes of plaintext): split inside the first header, at its end, in the
    // body, at the boundary between the records and inside the second header.
    let payload = pattern(20_000, seed: 11)
    let firstRecord = 5 + TLSConnection.maximumRecordPlaintext + 17
    for split in [1, 3, 5, 6, 9_000, firstRecord - 1, firstRecord, firstRecord + 2] {
      let pair = try connectedPair()
      try pair.client.writeOutbound(payload)
      var ciphertext = try sent(pair.client)
      #expect(records(ciphertext).count == 2)
      let head = ciphertext.readSlice(length: split)!
      try pair.server.writeInbound(head)
      let early = try received(pair.server).bytes
      #expect(
        early.readableBytes <= (split >= firstRecord ? TLSConnection.maximumRecordPlaintext : 0), "split \(split)")
      try pair.server.writeInbound(ciphertext)
      var all = early
      var late = try received(pair.server).bytes
      all.writeBuffer(&late)
      #expect(all == payload, "split \(split)")
    }
  }

  @Test func aBurstOfRecordsInOneReadIsPassedOnAsOneBuffer() throws {
    let pair = try connectedPair()
    var expected = ByteBuffer()
    for index in 0..<50 {
      let frame = pattern(100, seed: index)
      expected.writeImmutableBuffer(frame)
      try pair.client.writeOutbound(frame)  // a flush each: 50 records
    }
    let ciphertext = try sent(pair.client)
    #expect(records(ciphertext).count == 50)
    try pair.server.writeInbound(ciphertext)
    let (bytes, reads) = try received(pair.server)
    #expect(bytes == expected)
    #expect(reads == 1)
  }

  @Test func ciphertextStillHeldElsewhereIsNeverOverwrittenAndFreedCiphertextIsReused() throws {
    let pair = try connectedPair()
    try pair.client.writeOutbound(pattern(64 * 1024, seed: 1))
    let first = try #require(try pair.client.readOutbound(as: ByteBuffer.self))
    let firstCopy = ByteBuffer(bytes: Array(first.readableBytesView))
    // `first` is still held (as a channel still writing it would): the next records go elsewhere.
    try pair.client.writeOutbound(pattern(64 * 1024, seed: 2))
    let second = try #require(try pair.client.readOutbound(as: ByteBuffer.self))
    #expect(first == firstCopy)
    try pair.server.writeInbound(first)
    try pair.server.writeInbound(second)
    var expected = pattern(64 * 1024, seed: 1)
    var next = pattern(64 * 1024, seed: 2)
    expected.writeBuffer(&next)
    #expect(try received(pair.server).bytes == expected)
    // Once nobody else holds the last buffer, its storage takes the next records.
    let address = second.withUnsafeReadableBytes { UInt(bitPattern: $0.baseAddress) }
    _ = consume second
    try pair.client.writeOutbound(pattern(64 * 1024, seed: 3))
    let third = try #require(try pair.client.readOutbound(as: ByteBuffer.self))
    #expect(third.withUnsafeReadableBytes { UInt(bitPattern: $0.baseAddress) } == address)
    try pair.server.writeInbound(third)
    #expect(try received(pair.server).bytes == pattern(64 * 1024, seed: 3))
  }

  @Test func closeSendsUnflushedWritesAheadOfCloseNotify() throws {
    let pair = try connectedPair()
    let written = pair.client.eventLoop.makePromise(of: Void.self)
    pair.client.write(ByteBuffer(string: "last words"), promise: written)
    // The server has a reply written but not flushed when the client's close_notify comes.
    let reply = pair.server.eventLoop.makePromise(of: Void.self)
    pair.server.write(ByteBuffer(string: "reply"), promise: reply)
    let closed = pair.client.close()
    let fromClient = try sent(pair.client)
    try closed.wait()
    #expect(succeeded(written.futureResult))
    #expect(records(fromClient).count == 2, "the data record, then close_notify")
    try pair.server.writeInbound(fromClient)
    #expect(try received(pair.server).bytes == ByteBuffer(string: "last words"))
    // The server answered with the reply, then its own close_notify, and closed cleanly.
    #expect(succeeded(reply.futureResult))
    #expect(records(try sent(pair.server)).count == 2)
    #expect(!pair.server.isActive)
    #expect(throws: Never.self) { try pair.server.throwIfErrorCaught() }
  }

  @Test func writesWithoutAFlushReachTheChannelInBoundedPieces() throws {
    let pair = try connectedPair()
    let recorder = WriteRecorder()
    try pair.client.pipeline.syncOperations.addHandler(recorder, position: .first)
    var expected = ByteBuffer()
    // 2 MiB of large frames, then 2 MiB of small ones, never flushed.
    for index in 0..<32 {
      let frame = pattern(64 * 1024, seed: index)
      expected.writeImmutableBuffer(frame)
      pair.client.write(frame, promise: nil)
    }
    for index in 0..<20_000 {
      let frame = pattern(105, seed: index)
      expected.writeImmutableBuffer(frame)
      pair.client.write(frame, promise: nil)
    }
    let bound = TLSHandler.outboundCiphertextLimit + 64 * 1024 + 4 * TLSConnection.recordOverhead
    #expect(recorder.sizes.count >= expected.readableBytes / bound)
    #expect(recorder.sizes.allSatisfy { $0 <= bound }, "largest piece \(recorder.sizes.max() ?? 0)")
    pair.client.flush()
    pump(pair.client, pair.server)
    #expect(try received(pair.server).bytes == expected)
  }

  @Test func unflushedWritesFailWithTheErrorThatClosesTheConnection() throws {
    let pair = try connectedPair()
    let pending = pair.client.eventLoop.makePromise(of: Void.self)
    pair.client.write(ByteBuffer(string: "never sent"), promise: pending)
    try pair.server.writeOutbound(ByteBuffer(string: "a record that will be damaged"))
    var record = try sent(pair.server)
    let last = record.writerIndex - 1
    record.setInteger(record.getInteger(at: last, as: UInt8.self)! ^ 0xff, at: last)
    #expect(throws: TLSError.self) { try pair.client.writeInbound(record) }
    guard case .protocolError = outcome(pending.futureResult)?.failure as? TLSError else {
      Issue.record(
        "the pending write did not fail with the protocol error: \(String(describing: outcome(pending.futureResult)))")
      return
    }
    #expect(!pair.client.isActive)
  }

  @Test func unflushedWritesFailWhenTheConnectionEnds() throws {
    let pair = try connectedPair()
    let small = pair.client.eventLoop.makePromise(of: Void.self)
    let large = pair.client.eventLoop.makePromise(of: Void.self)
    pair.client.write(ByteBuffer(string: "small"), promise: small)
    pair.client.write(pattern(40_000, seed: 1), promise: large)
    pair.client.pipeline.fireChannelInactive()
    #expect(outcome(small.futureResult)?.failure as? TLSError == .connectionClosed)
    #expect(outcome(large.futureResult)?.failure as? TLSError == .connectionClosed)
    // A write after the end fails at once.
    let late = pair.client.eventLoop.makePromise(of: Void.self)
    pair.client.write(ByteBuffer(string: "late"), promise: late)
    #expect(outcome(late.futureResult)?.failure as? TLSError == .connectionClosed)
  }
}

/// Records the size of every buffer written past it (it sits next to the channel's head).
final class WriteRecorder: ChannelOutboundHandler {
  typealias OutboundIn = ByteBuffer
  typealias OutboundOut = ByteBuffer
  var sizes: [Int] = []

  func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
    sizes.append(unwrapOutboundIn(data).readableBytes)
    context.write(data, promise: promise)
  }
}
