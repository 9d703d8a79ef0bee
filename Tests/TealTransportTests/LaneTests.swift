import NIOCore
import NIOEmbedded
import TealTestSupport
import TealWire
import Testing

@testable import TealTransport

/// A socket model for the writer: writes join a FIFO that drains `rate` bytes per turn; a write
/// completes when its last byte has drained (as a NIO write promise completes once the bytes are
/// in the kernel). For every urgent frame it records how many bulk bytes were queued ahead of it.
actor ModelSocket {
  private var fifo: [(bytes: Int, isBulk: Bool, done: CheckedContinuation<Void, Never>?)] = []
  private(set) var worstBulkAheadOfUrgent = 0
  private(set) var urgentFrames = 0
  private(set) var bulkBytes = 0
  private let rate: Int

  init(rate: Int) { self.rate = rate }

  func write(_ batch: [ByteBuffer]) async {
    if isClosed { return }
    for (index, buffer) in batch.enumerated() {
      // A fragment, or a whole frame too large for the urgent lane, is bulk.
      let isBulk =
        buffer.getInteger(at: buffer.readerIndex + 1, as: UInt8.self)! & 0x80 != 0
        || buffer.readableBytes > OutboundLink.urgentMaximumPayload + Frame.headerSize
      if !isBulk {
        urgentFrames += 1
        worstBulkAheadOfUrgent = max(worstBulkAheadOfUrgent, fifo.filter(\.isBulk).map(\.bytes).reduce(0, +))
      } else {
        bulkBytes += buffer.readableBytes - Frame.headerSize
      }
      if index < batch.count - 1 {
        fifo.append((buffer.readableBytes, isBulk, nil))
      } else {
        await withCheckedContinuation { fifo.append((buffer.readableBytes, isBulk, $0)) }
      }
    }
  }

  /// Completes every waiting write and every later one (the connection closed).
  func close() {
    isClosed = true
    for entry in fifo { entry.done?.resume() }
    fifo = []
  }

  private var isClosed = false

  /// Drains `rate` bytes; returns false when nothing was queued.
  func drain() -> Bool {
    var budget = rate
    var progressed = false
    while budget > 0, !fifo.isEmpty {
      progressed = true
      let take = min(budget, fifo[0].bytes)
      fifo[0].bytes -= take
      budget -= take
      if fifo[0].bytes == 0 { fifo.removeFirst().done?.resume() }
    }
    return progressed
  }
}

/// Owns an ``OutboundLink`` the way the transport actor does.
actor LinkDriver {
  let link = OutboundLink(id: 1, peer: NodeID("n2"), address: PeerAddress(host: "127.0.0.1", port: 1))

  init() { link.connectionStarted(EmbeddedChannelStub.channel) }

  func send(_ payload: [UInt8], on channel: PeerChannel) throws(PeerSendError) {
    try link.enqueue(payload, on: channel, limit: 4096, byteLimit: 64 << 20)
  }

  func runWriter(_ lane: Lane, socket: ModelSocket) async throws {
    try await link.runWriter(lane) { batch in await socket.write(batch) }
  }

  func stop() { link.stop(failing: .shutDown) }
}

enum EmbeddedChannelStub {
  static let channel = EmbeddedChannel()
}

@Suite("Urgent lane ahead of bulk", .serialized)
struct LaneTests {
  @Test func whileA16MiBSnapshotStreamsAtMost64KiBOfBulkIsEverAheadOfAnUrgentFrame() async throws {
    let driver = LinkDriver()
    let socket = ModelSocket(rate: 16 << 10)
    let urgent = Task { try await driver.runWriter(.urgent, socket: socket) }
    let bulk = Task { try await driver.runWriter(.bulk, socket: socket) }
    try await driver.send([UInt8](repeating: 0x5a, count: 16 << 20), on: .raft)  // the snapshot
    var heartbeats = 0
    var turns = 0
    while await socket.bulkBytes < 16 << 20 {
      turns += 1
      if turns % 3 == 0 {
        // A heartbeat, a gossip probe and a control message, between the snapshot's fragments.
        try await driver.send([1], on: .raft)
        try await driver.send([2], on: .gossip)
        try await driver.send([3], on: .control)
        heartbeats += 3
      }
      _ = await socket.drain()
      await Task.yield()
    }
    while await socket.drain() { await Task.yield() }
    let sent = heartbeats
    try await eventually("every urgent frame to be written") { await socket.urgentFrames == sent }
    #expect(heartbeats > 100)
    #expect(await socket.worstBulkAheadOfUrgent <= OutboundLink.fragmentPayload + Frame.headerSize)
    await driver.stop()
    await socket.close()  // a write that came after the last drain must not wait forever
    _ = await (try? urgent.value, try? bulk.value)
  }

  @Test func heartbeatSentAfterASnapshotOvertakesItOverRealTLS() async throws {
    let cluster = try TestCluster()
    let inbox = Inbox()
    let (a, b) = try await connectedPair(cluster, a: { _, _, _ in }, b: { await inbox.append($0, $1, $2) })
    try await a.send([UInt8](repeating: 0x5a, count: 16 << 20), on: .raft, to: NodeID("n2"))
    try await a.send(Array("heartbeat".utf8), on: .raft, to: NodeID("n2"))
    try await a.send(Array("probe".utf8), on: .gossip, to: NodeID("n2"))
    try await eventually("all three messages", within: 60) { await inbox.count == 3 }
    let sizes = await inbox.messages.map(\.payload.count)
    #expect(sizes == ["heartbeat".utf8.count, "probe".utf8.count, 16 << 20])
    #expect(await inbox.messages[2].payload.allSatisfy { $0 == 0x5a })
    await a.shutdown()
    await b.shutdown()
  }
}
