// A node's own listeners close gracefully when it stops (`shutdown(gracePeriod:)`, `removeService`):
// requests in flight finish with `connection: close`, idle keep-alive connections are closed at a
// request boundary without a reset, new connections are refused (real sockets).

import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import Testing

@testable import TealLoadBalancer

/// A raw client connection that records what the server sent and whether the connection ended with
/// an error (a reset) rather than an orderly close.
private final class RecordingClient: Sendable {
  let channel: any Channel
  private let state: NIOLockedValueBox<(text: String, errors: [String], inputClosed: Bool)>

  var text: String { self.state.withLockedValue { $0.text } }
  var errors: [String] { self.state.withLockedValue { $0.errors } }
  var isOpen: Bool { self.channel.isActive }
  /// Whether the server closed its side (seen only with `halfClosure`).
  var inputClosed: Bool { self.state.withLockedValue { $0.inputClosed } }

  private init(channel: any Channel, state: NIOLockedValueBox<(text: String, errors: [String], inputClosed: Bool)>) {
    self.channel = channel
    self.state = state
  }

  /// With `halfClosure`, the connection stays open for writing after the server closed its side.
  static func connect(port: Int, halfClosure: Bool = false) async throws -> RecordingClient {
    let state = NIOLockedValueBox((text: "", errors: [String](), inputClosed: false))
    let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
      .channelOption(.socketOption(.tcp_nodelay), value: 1)
      .channelOption(.allowRemoteHalfClosure, value: halfClosure)
      .channelInitializer { channel in
        channel.eventLoop.makeCompletedFuture {
          try channel.pipeline.syncOperations.addHandler(Recorder(state: state))
        }
      }
      .connect(host: "127.0.0.1", port: port)
      .get()
    return RecordingClient(channel: channel, state: state)
  }

  func send(_ bytes: String) async throws {
    try await self.channel.writeAndFlush(ByteBuffer(string: bytes))
  }

  func close() async {
    try? await self.channel.close()
  }

  private final class Recorder: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    let state: NIOLockedValueBox<(text: String, errors: [String], inputClosed: Bool)>

    init(state: NIOLockedValueBox<(text: String, errors: [String], inputClosed: Bool)>) {
      self.state = state
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
      let buffer = self.unwrapInboundIn(data)
      self.state.withLockedValue { $0.text += String(buffer: buffer) }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
      if case ChannelEvent.inputClosed = event { self.state.withLockedValue { $0.inputClosed = true } }
      context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
      self.state.withLockedValue { $0.errors.append("\(error)") }
      context.close(promise: nil)
    }
  }
}

private extension String {
  func count(of needle: String) -> Int { self.components(separatedBy: needle).count - 1 }
}

/// Whether a connect to `port` on loopback is refused.
private func connectRefused(port: Int) async -> Bool {
  do {
    let client = try await RecordingClient.connect(port: port)
    await client.close()
    return false
  } catch {
    return true
  }
}

@Suite("Graceful listener close", .serialized)
struct GracefulShutdownTests {
  private static let slowRequests = 6

  /// Before: `shutdown()` closed every client connection at once, so the requests held by a slow
  /// target (800 ms) got no response and the idle keep-alive connections were reset.
  @Test(arguments: [false, true])
  func requestsInFlightFinishWhileTheListenersClose(viaRemoveService: Bool) async throws {
    let backend = try await LBTestBackend.start(revision: "blue")
    let balancer = LoadBalancer()
    let listeners = try await balancer.addService(
      lbTestService(),
      routes: ServiceRoutes(
        generation: 1, targetGroups: [TargetGroup(revision: "blue", targets: [backend.address])],
        productionWeights: ["blue": 1]))
    let port = listeners.productionPort

    // An idle keep-alive connection (one request served, then nothing).
    let idle = try await RecordingClient.connect(port: port)
    try await idle.send("GET / HTTP/1.1\r\nhost: teal.test\r\n\r\n")
    #expect(await lbEventually { idle.text.contains("blue\n") })
    // A request whose first bytes arrived before the close began; the rest comes after.
    let partial = try await RecordingClient.connect(port: port)
    try await partial.send("GET /slow?ms=300 HTTP/1.1\r\nhost: teal.test\r\n")
    // Requests held in flight by a slow target (connected first, then sent together, so that all
    // are in flight at once on a loaded machine too).
    var slow: [RecordingClient] = []
    for _ in 0..<Self.slowRequests { slow.append(try await RecordingClient.connect(port: port)) }
    for client in slow { try await client.send("GET /slow?ms=800 HTTP/1.1\r\nhost: teal.test\r\n\r\n") }
    let inFlight = await lbEventually {
      (balancer.metrics().services["web"]?.targetGroups.values.reduce(0) { $0 + $1.inFlight } ?? 0)
        == Self.slowRequests
    }
    #expect(inFlight)

    let started = ContinuousClock.now
    let stopping = Task {
      if viaRemoveService {
        await balancer.removeService("web", gracePeriod: .seconds(20))
      } else {
        await balancer.shutdown(gracePeriod: .seconds(20))
      }
      return ContinuousClock.now
    }
    #expect(await lbEventually { await connectRefused(port: port) }, "new connections are refused")
    try await partial.send("\r\n")
    let returned = await stopping.value
    let elapsed = returned - started

    // Every request in flight, and the one whose first bytes had arrived, got its 200 with
    // `connection: close`, and every connection then ended in an orderly close.
    for client in slow + [partial] {
      #expect(await lbEventually { !client.isOpen })
      #expect(client.text.hasPrefix("HTTP/1.1 200 OK\r\n"), "\(client.text)")
      #expect(client.text.lowercased().contains("connection: close\r\n"), "\(client.text)")
      #expect(client.text.hasSuffix("blue\n"), "\(client.text)")
      #expect(client.errors.isEmpty, "\(client.errors)")
    }
    #expect(backend.completedSlow == Self.slowRequests + 1)
    // The idle connection was closed, without a reset, and had only its one response.
    #expect(await lbEventually { !idle.isOpen })
    #expect(idle.errors.isEmpty, "\(idle.errors)")
    #expect(idle.text.count(of: "HTTP/1.1 ") == 1)
    // The stop returned once the connections were gone, long before the grace period.
    #expect(elapsed < .seconds(10), "took \(elapsed)")
    #expect(await connectRefused(port: port))

    for client in slow + [partial, idle] { await client.close() }
    await balancer.shutdown()
    await backend.kill()
  }

  /// A client that sends its next request on an idle keep-alive connection as the close begins
  /// (it has not read the end of the connection yet) gets no reset: the balancer closed its output
  /// only and reads and drops what still arrives, until the client closes too.
  @Test func aRequestSentAsTheIdleCloseBeginsIsNotReset() async throws {
    let backend = try await LBTestBackend.start(revision: "blue")
    let balancer = LoadBalancer()
    let listeners = try await balancer.addService(
      lbTestService(),
      routes: ServiceRoutes(
        generation: 1, targetGroups: [TargetGroup(revision: "blue", targets: [backend.address])],
        productionWeights: ["blue": 1]))
    let client = try await RecordingClient.connect(port: listeners.productionPort, halfClosure: true)
    try await client.send("GET / HTTP/1.1\r\nhost: teal.test\r\n\r\n")
    #expect(await lbEventually { client.text.contains("blue\n") })
    let stopping = Task { await balancer.shutdown(gracePeriod: .seconds(20)) }
    #expect(await lbEventually { client.inputClosed }, "an orderly end of the connection")
    // Keep writing for a while: with a full close, the kernel answers these bytes with a reset and
    // a later write fails.
    var writeError: String? = nil
    let deadline = ContinuousClock.now + .milliseconds(300)
    while ContinuousClock.now < deadline, writeError == nil {
      do { try await client.send("GET / HTTP/1.1\r\nhost: teal.test\r\n\r\n") } catch { writeError = "\(error)" }
      try? await Task.sleep(for: .milliseconds(20))  // the pace of the writes, not a wait for a condition
    }
    #expect(writeError == nil)
    #expect(client.errors.isEmpty, "\(client.errors)")
    #expect(client.text.count(of: "HTTP/1.1 ") == 1, "nothing answered after the close began")
    await client.close()
    await stopping.value
    await backend.kill()
  }

  /// A request that outlives the grace period is cut when it ends, and the stop returns then.
  @Test func theGracePeriodBoundsTheStop() async throws {
    let backend = try await LBTestBackend.start(revision: "blue")
    let balancer = LoadBalancer()
    let listeners = try await balancer.addService(
      lbTestService(),
      routes: ServiceRoutes(
        generation: 1, targetGroups: [TargetGroup(revision: "blue", targets: [backend.address])],
        productionWeights: ["blue": 1]))
    let client = try await RecordingClient.connect(port: listeners.productionPort)
    try await client.send("GET /hang HTTP/1.1\r\nhost: teal.test\r\n\r\n")
    #expect(await lbEventually { backend.served == 1 })
    let started = ContinuousClock.now
    await balancer.shutdown(gracePeriod: .milliseconds(300))
    let elapsed = ContinuousClock.now - started
    #expect(await lbEventually { !client.isOpen })
    #expect(elapsed >= .milliseconds(300))
    #expect(elapsed < .seconds(5), "took \(elapsed)")
    await client.close()
    await backend.kill()
  }
}
