import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import TealTLS
import TealTestSupport
import TealWire
import Testing

@testable import TealTransport

/// A TCP relay between a dialler and a listener that can start swallowing every byte in both
/// directions while keeping both connections open: a black-holed peer, as a dead host or a
/// silently dropping firewall looks to TCP.
final class BlackHoleRelay: Sendable {
  let blackHole = NIOLockedValueBox(false)
  let openConnections = NIOLockedValueBox(0)
  private let server: any Channel

  var port: Int { server.localAddress!.port! }

  private final class Forwarder: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    let partner: NIOLockedValueBox<(any Channel)?> = NIOLockedValueBox(nil)
    let blackHole: NIOLockedValueBox<Bool>
    let open: NIOLockedValueBox<Int>
    init(blackHole: NIOLockedValueBox<Bool>, open: NIOLockedValueBox<Int>) {
      self.blackHole = blackHole
      self.open = open
    }
    func channelActive(context: ChannelHandlerContext) {
      open.withLockedValue { $0 += 1 }
      context.fireChannelActive()
    }
    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
      let buffer = unwrapInboundIn(data)
      guard !blackHole.withLockedValue({ $0 }) else { return }
      partner.withLockedValue { $0 }?.writeAndFlush(buffer, promise: nil)
    }
    func channelInactive(context: ChannelHandlerContext) {
      open.withLockedValue { $0 -= 1 }
      partner.withLockedValue { $0 }?.close(promise: nil)
    }
  }

  init(to target: Int) async throws {
    let blackHole = self.blackHole
    let open = self.openConnections
    server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
      .childChannelInitializer { inbound in
        let toTarget = Forwarder(blackHole: blackHole, open: open)
        let toDialler = Forwarder(blackHole: blackHole, open: open)
        return ClientBootstrap(group: inbound.eventLoop)
          .channelInitializer { outbound in outbound.pipeline.addHandler(toDialler) }
          .connect(host: "127.0.0.1", port: target)
          .flatMap { outbound in
            toTarget.partner.withLockedValue { $0 = outbound }
            toDialler.partner.withLockedValue { $0 = inbound }
            return inbound.pipeline.addHandler(toTarget)
          }
      }
      .bind(host: "127.0.0.1", port: 0).get()
  }

  func close() async throws { try await server.close() }
}

@Suite("Liveness: heartbeats, dead links, hello timeout", .serialized)
struct LivenessTests {
  static func fast(_ configuration: inout PeerTransportConfiguration) {
    configuration.heartbeatInterval = .milliseconds(100)
    configuration.deadLinkTimeout = .milliseconds(600)
  }

  @Test func blackHoledPeerIsNoticedOnBothSidesWithinSeconds() async throws {
    let cluster = try TestCluster()
    let b = transport("n2", security: try cluster.tls("n2"), tune: Self.fast, handler: { _, _, _ in })
    let bPort = try await b.start()
    await b.addPeer(NodeID("n1"), address: PeerAddress(host: "127.0.0.1", port: 1))
    let relay = try await BlackHoleRelay(to: bPort)
    let a = transport(
      "n1", security: try cluster.tls("n1"), peers: [NodeID("n2"): PeerAddress(host: "127.0.0.1", port: relay.port)],
      tune: Self.fast, handler: { _, _, _ in })
    try await a.start()
    try await eventually("n1 to connect through the relay") { await a.connectedPeers() == [NodeID("n2")] }
    try await eventually("n2 to accept n1") { await b.inboundPeers() == [NodeID("n1")] }

    relay.blackHole.withLockedValue { $0 = true }
    let clock = ContinuousClock()
    let start = clock.now
    try await eventually("n1 to drop its link and n2 the inbound connection", within: 5) {
      let aPeers = await a.connectedPeers()
      let bPeers = await b.inboundPeers()
      return aPeers.isEmpty && bPeers.isEmpty
    }
    #expect(clock.now - start < .seconds(3))
    await a.shutdown()
    await b.shutdown()
    try await relay.close()
  }

  @Test func idleLinkStaysUpOnHeartbeats() async throws {
    let cluster = try TestCluster()
    let (a, b) = try await connectedPair(cluster, tune: Self.fast, a: { _, _, _ in }, b: { _, _, _ in })
    let clock = ContinuousClock()
    let end = clock.now + .milliseconds(1500)
    while clock.now < end {
      #expect(await a.connectedPeers() == [NodeID("n2")])
      try await Task.sleep(for: .milliseconds(10))
    }
    #expect(await a.linkStatus(NodeID("n2"))?.consecutiveFailures == 0)
    await a.shutdown()
    await b.shutdown()
  }

  @Test func slowListenerIsNotMistakenForADeadOne() async throws {
    let cluster = try TestCluster()
    let gate = Gate()
    let inbox = Inbox()
    let (a, b) = try await connectedPair(
      cluster, tune: Self.fast, a: { _, _, _ in },
      b: {
        await gate.wait()
        await inbox.append($0, $1, $2)
      })
    // Far more than the listener's buffers and the kernel's hold: n1's writes stall while n2's
    // handler is stuck for several dead-link timeouts.
    let count = 1200
    let sender = Task {
      for i in 0..<count {
        try await a.sendWhenQueueHasRoom(
          [UInt8](repeating: UInt8(truncatingIfNeeded: i), count: 60 << 10), on: .raft, to: NodeID("n2"))
      }
    }
    let clock = ContinuousClock()
    let end = clock.now + .seconds(2)
    while clock.now < end {
      #expect(await a.connectedPeers() == [NodeID("n2")])
      try await Task.sleep(for: .milliseconds(20))
    }
    await gate.open()
    try await sender.value
    try await eventually("every message", within: 60) { await inbox.count == count }
    #expect(await a.linkStatus(NodeID("n2"))?.consecutiveFailures == 0)
    await a.shutdown()
    await b.shutdown()
  }

  @Test func authenticatedConnectionThatSendsNoHelloIsClosed() async throws {
    let cluster = try TestCluster()
    let b = transport(
      "n2", security: try cluster.tls("n2"),
      tune: {
        $0.helloTimeout = .milliseconds(300)
        $0.deadLinkTimeout = .seconds(30)
      }, handler: { _, _, _ in })
    let bPort = try await b.start()
    await b.addPeer(NodeID("n1"), address: PeerAddress(host: "127.0.0.1", port: 1))
    let silent = try await RawTLSClient.connect(port: bPort, security: try cluster.tls("n1"), expecting: NodeID("n2"))
    try await eventually("the silent connection to be closed", within: 5) { !silent.channel.isActive }
    await b.shutdown()
  }
}
