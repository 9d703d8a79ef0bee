// A pooled upstream connection whose target closed it a moment ago, before the balancer's event
// loop has read the FIN: a request that cannot be sent again (a POST) must not be written into it.

import Dispatch
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import TealTestSupport
import Testing

@testable import TealLoadBalancer

@Suite("Pooled upstream connections")
struct PooledConnectionTests {
  /// Accepts connections and keeps them, so that the test can close them from the target's side.
  final class Acceptor: ChannelInboundHandler, Sendable {
    typealias InboundIn = ByteBuffer
    let accepted: NIOLockedValueBox<[any Channel]>
    init(_ accepted: NIOLockedValueBox<[any Channel]>) { self.accepted = accepted }
    func channelActive(context: ChannelHandlerContext) {
      accepted.withLockedValue { $0.append(context.channel) }
    }
  }

  @Test func aConnectionItsTargetClosedIsNotEstablishedBeforeTheLoopReadsTheFIN() async throws {
    let targetGroup = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    let balancerGroup = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    let accepted = NIOLockedValueBox<[any Channel]>([])
    let server = try await ServerBootstrap(group: targetGroup)
      .childChannelInitializer { channel in
        channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(Acceptor(accepted)) }
      }
      .bind(host: "127.0.0.1", port: 0).get()
    let port = try #require(server.localAddress?.port)
    let target = TargetAddress(host: "127.0.0.1", port: port)
    let loop = balancerGroup.next()
    // The pool belongs to the loop; the bound wrapper lets the test's closures carry it there.
    let pool = try await loop.submit {
      NIOLoopBound(
        UpstreamPool(
          eventLoop: loop, maxIdlePerTarget: 4, connectTimeout: .seconds(2), idleTimeout: .seconds(60),
          maxAge: .seconds(60)), eventLoop: loop)
    }.get()
    let channel = try await loop.flatSubmit { pool.value.connect(target) }.get()
    try await loop.submit {
      let connection = try channel.pipeline.syncOperations.handler(type: UpstreamConnection.self)
      #expect(connection.isActive && connection.isEstablished, "a fresh connection is established")
      pool.value.release(connection)
    }.get()
    try await eventually("the target accepted the connection", within: 5) { accepted.withLockedValue { $0.count } == 1 }

    // Hold the balancer's loop, close the connection from the target's side, then look at the
    // pooled connection from that loop before it could read the FIN.
    let closed = DispatchSemaphore(value: 0)
    let seen = loop.submit {
      closed.wait()
      let connection = try channel.pipeline.syncOperations.handler(type: UpstreamConnection.self)
      // The kernel learns of the FIN on its own (loopback: at once); poll it, bounded, from the held loop.
      var established = connection.isEstablished
      for _ in 0..<100 where established {
        usleep(10_000)
        established = connection.isEstablished
      }
      let active = connection.isActive
      let taken = pool.value.take(target, checkEstablished: true)
      return (active, established, taken == nil)
    }
    let targetSide = try #require(accepted.withLockedValue { $0.first })
    try await targetSide.close()
    closed.signal()
    let (active, established, notTaken) = try await seen.get()
    #expect(active, "the loop has not read the FIN yet: NIO still sees the channel active")
    #expect(!established, "the kernel already knows the target closed it")
    #expect(notTaken, "a request that cannot be sent again does not get it")

    try await server.close()
    try await channel.closeFuture.get()
    try await targetGroup.shutdownGracefully()
    try await balancerGroup.shutdownGracefully()
  }
}
