import Foundation
import Logging
import NIOCore
import NIOPosix
import TealTLS
import TealTestSupport
import TealWire
import Testing

@testable import TealTransport

/// A temporary directory with a cluster CA and credentials for n1, n2, n3, removed on deinit.
final class TestCluster: Sendable {
  let directory: String
  let certificates: CertificateDirectory

  init(nodes: [String] = ["n1", "n2", "n3"]) throws {
    directory =
      FileManager.default.temporaryDirectory.appendingPathComponent("teal-transport-\(UUID().uuidString)").path
    try CertificateDirectory.initialize(at: directory, nodes: nodes.map { NodeID($0) })
    certificates = CertificateDirectory(path: directory)
  }

  deinit { try? FileManager.default.removeItem(atPath: directory) }

  func tls(_ node: String) throws -> PeerSecurity {
    .mutualTLS(try TLSContext(configuration: certificates.configuration(for: NodeID(node))))
  }
}

/// Collects delivered messages; tests poll it with a deadline.
actor Inbox {
  private(set) var messages: [(from: NodeID, channel: PeerChannel, payload: [UInt8])] = []
  var count: Int { messages.count }
  func append(_ from: NodeID, _ channel: PeerChannel, _ payload: [UInt8]) { messages.append((from, channel, payload)) }
  func payloads(from sender: NodeID) -> [[UInt8]] { messages.filter { $0.from == sender }.map(\.payload) }
}

func transport(
  _ node: String, security: PeerSecurity, peers: [NodeID: PeerAddress] = [:], port: Int = 0,
  tune: (inout PeerTransportConfiguration) -> Void = { _ in }, handler: @escaping PeerMessageHandler
) -> PeerTransport {
  var configuration = PeerTransportConfiguration(
    nodeID: NodeID(node), listenHost: "127.0.0.1", listenPort: port, peers: peers)
  configuration.backoff = Backoff(initialMilliseconds: 20, maximumMilliseconds: 200)
  tune(&configuration)
  return PeerTransport(
    configuration: configuration, security: security, group: MultiThreadedEventLoopGroup.singleton,
    logger: quietLogger(), handler: handler)
}

func quietLogger() -> Logger {
  var logger = Logger(label: "test.transport")
  logger.logLevel = ProcessInfo.processInfo.environment["TEAL_TEST_LOG"] == nil ? .critical : .debug
  return logger
}

/// Starts two transports that know each other and waits until both have connected.
func connectedPair(
  _ cluster: TestCluster, tune: (inout PeerTransportConfiguration) -> Void = { _ in },
  tuneA: (inout PeerTransportConfiguration) -> Void = { _ in },
  a aHandler: @escaping PeerMessageHandler, b bHandler: @escaping PeerMessageHandler
) async throws -> (PeerTransport, PeerTransport) {
  let a = transport(
    "n1", security: try cluster.tls("n1"),
    tune: {
      tune(&$0)
      tuneA(&$0)
    }, handler: aHandler)
  let b = transport("n2", security: try cluster.tls("n2"), tune: tune, handler: bHandler)
  let aPort = try await a.start()
  let bPort = try await b.start()
  await a.addPeer(NodeID("n2"), address: PeerAddress(host: "127.0.0.1", port: bPort))
  await b.addPeer(NodeID("n1"), address: PeerAddress(host: "127.0.0.1", port: aPort))
  try await eventually("both transports to connect") {
    let aPeers = await a.connectedPeers()
    let bPeers = await b.connectedPeers()
    return aPeers == [NodeID("n2")] && bPeers == [NodeID("n1")]
  }
  return (a, b)
}

/// A TLS client that writes raw bytes, to play a misbehaving peer.
struct RawTLSClient {
  let channel: any Channel
  /// Frames the listener sent, in order.
  let received: FrameCollector

  static func connect(port: Int, security: PeerSecurity, expecting: NodeID) async throws -> RawTLSClient {
    let collector = FrameCollector()
    guard let context = security.tlsContext else { throw TimedOut(what: "a TLS configuration") }
    // Take the handshake future while adding the handler: a refused handshake removes the
    // handler again, so looking it up afterwards would race with the failure.
    let (channel, handshake) = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
      .connect(host: "127.0.0.1", port: port) { channel in
        channel.eventLoop.makeCompletedFuture {
          let handler = TLSHandler(context: context, role: .client(expecting: expecting))
          try channel.pipeline.syncOperations.addHandler(handler)
          try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(FrameDecoder()))
          try channel.pipeline.syncOperations.addHandler(collector)
          return (channel, handler.handshakeFuture)
        }
      }
    _ = try await handshake.get()
    return RawTLSClient(channel: channel, received: collector)
  }

  /// Sends a well-formed hello for `node`.
  func sendHello(
    _ node: String, clusterID: String = "", versions: ClosedRange<UInt64> = PeerProtocol.supportedVersions
  ) async throws {
    let hello = Hello(versions: versions, nodeID: NodeID(node), clusterID: clusterID, softwareVersion: "test")
    try await send(frame: .transport, TransportMessage.hello(hello).wireBytes())
  }

  /// The listener's answer to the hello, waiting for it.
  func answer() async throws -> TransportMessage {
    try await eventually("the listener's answer") { received.frames.first != nil }
    return try TransportMessage(wireBytes: Array(received.frames[0].payload.readableBytesView))
  }

  func send(raw bytes: [UInt8]) async throws {
    try await channel.writeAndFlush(ByteBuffer(bytes: bytes))
  }

  func send(frame peerChannel: PeerChannel, _ payload: [UInt8]) async throws {
    try await send(raw: FrameHeader(channel: peerChannel, length: payload.count).bytes + payload)
  }
}

/// Records every frame a raw client receives.
final class FrameCollector: ChannelInboundHandler, @unchecked Sendable {
  typealias InboundIn = PeerFrame
  private let lock = NSLock()
  private var storage: [PeerFrame] = []
  var frames: [PeerFrame] { lock.withLock { storage } }
  func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    let frame = unwrapInboundIn(data)
    lock.withLock { storage.append(frame) }
  }
}
