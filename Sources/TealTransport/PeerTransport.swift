import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import TealTLS
import TealWire

/// Where a peer listens.
public struct PeerAddress: Sendable, Hashable, CustomStringConvertible {
  public var host: String
  public var port: Int

  public init(host: String, port: Int) {
    self.host = host
    self.port = port
  }

  public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
}

/// How connections between nodes are secured.
public enum PeerSecurity: Sendable {
  /// TLS 1.3 with mutual authentication: the only mode a node uses.
  case mutualTLS(TLSContext)
  /// No encryption and no authentication: the sender's hello is taken at its word. Exists only so
  /// that benchmarks can measure what TLS costs; never offered by `teal node`.
  case plaintextForBenchmarks
}

public struct PeerTransportConfiguration: Sendable {
  /// This node's id: it must match the node id in this node's certificate.
  public var nodeID: NodeID
  public var listenHost: String
  /// 0 picks a free port (tests).
  public var listenPort: Int
  /// Every other member and where it listens.
  public var peers: [NodeID: PeerAddress]
  /// The largest payload sent or accepted in one frame.
  public var maximumPayload: Int = Frame.defaultMaximumPayload
  /// At most this many messages wait for one peer...
  public var queueLimit: Int = 4096
  /// ...and at most this many bytes (a single larger message is still accepted into an empty queue).
  public var queueByteLimit: Int = 64 << 20
  public var connectTimeout: TimeAmount = .seconds(2)
  public var handshakeTimeout: TimeAmount = .seconds(5)
  public var backoff = Backoff()
  public var softwareVersion = "0.1.0"

  public init(nodeID: NodeID, listenHost: String, listenPort: Int, peers: [NodeID: PeerAddress]) {
    self.nodeID = nodeID
    self.listenHost = listenHost
    self.listenPort = listenPort
    self.peers = peers
  }
}

/// Why a connection was closed by the transport.
public enum PeerConnectionError: Error, Equatable, Sendable, CustomStringConvertible {
  case missingHello
  case malformedHello(String)
  case protocolVersionMismatch(theirs: UInt64, ours: UInt64)
  case helloIdentityMismatch(certificate: NodeID, hello: NodeID)
  case unknownPeer(NodeID)

  public var description: String {
    switch self {
    case .missingHello: "connection did not start with a hello frame"
    case .malformedHello(let reason): "malformed hello: \(reason)"
    case .protocolVersionMismatch(let theirs, let ours): "peer speaks protocol \(theirs), this node \(ours)"
    case .helloIdentityMismatch(let certificate, let hello):
      "hello claims node \(hello) but the certificate names \(certificate)"
    case .unknownPeer(let id): "node \(id) is not a configured member"
    }
  }
}

/// Authenticated message transport between cluster nodes.
///
/// Each node dials one outbound connection to every peer and sends only on those; it receives on
/// the connections peers dial to it. So messages from A to B travel in order on A's connection to B.
/// Inbound connections must complete the TLS handshake with a certificate from the cluster CA
/// naming a configured member, then send a hello naming the same node; only then are frames
/// delivered, each with the sender's authenticated id.
///
/// Sending never blocks on the network: a message joins a bounded queue for its peer (bounded by
/// count and bytes) and a writer task drains it. While a peer is backing off after a failed
/// connection attempt, sends fail fast with ``PeerSendError/peerUnavailable(_:)``. Delivery is at
/// most once: messages queued or in flight when a connection breaks are lost (Raft and SWIM retry).
public actor PeerTransport: PeerMessageSender {
  private let configuration: PeerTransportConfiguration
  private let security: PeerSecurity
  private let group: any EventLoopGroup
  private let handler: PeerMessageHandler
  private let logger: Logger
  private let members: NIOLockedValueBox<Set<NodeID>>

  private var links: [NodeID: OutboundLink] = [:]
  private var linksByID: [UInt64: OutboundLink] = [:]
  private var nextLinkID: UInt64 = 0
  private var listenerChannel: (any Channel)?
  private var listenerTask: Task<Void, Never>?
  private var inboundChannels: [ObjectIdentifier: any Channel] = [:]
  private var isShutDown = false
  /// The port the listener is bound to, once started.
  public private(set) var listeningPort: Int?

  public init(
    configuration: PeerTransportConfiguration, security: PeerSecurity, group: any EventLoopGroup,
    logger: Logger = Logger(label: "teal.transport"), handler: @escaping PeerMessageHandler
  ) {
    self.configuration = configuration
    self.security = security
    self.group = group
    self.handler = handler
    var logger = logger
    logger[metadataKey: "node"] = "\(configuration.nodeID)"
    self.logger = logger
    self.members = NIOLockedValueBox(Set(configuration.peers.keys))
  }

  // MARK: - Lifecycle

  /// Starts listening and dialling every peer. Returns the port it listens on.
  @discardableResult
  public func start() async throws -> Int {
    let server = try await ServerBootstrap(group: group)
      .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
      .childChannelOption(ChannelOptions.socketOption(.tcp_nodelay), value: 1)
      .bind(host: configuration.listenHost, port: configuration.listenPort) { channel in
        channel.eventLoop.makeCompletedFuture { try self.configurePipeline(channel, role: .server) }
      }
    listenerChannel = server.channel
    let port = server.channel.localAddress?.port ?? configuration.listenPort
    listeningPort = port
    logger.info("listening", metadata: ["address": "\(configuration.listenHost):\(port)"])
    listenerTask = Task { await self.acceptLoop(server) }
    for (peer, address) in configuration.peers { startLink(peer, address: address) }
    return port
  }

  /// Closes every connection and the listener; pending sends fail with ``PeerSendError/shutDown``.
  public func shutdown() async {
    guard !isShutDown else { return }
    isShutDown = true
    let tasks = links.values.compactMap(\.task)
    for link in links.values { link.stop(failing: .shutDown) }
    try? await listenerChannel?.close()
    for channel in inboundChannels.values { channel.close(promise: nil) }
    for task in tasks { await task.value }
    await listenerTask?.value
  }

  /// Adds a member (e.g. a node joining with `teal certs add`) and starts dialling it.
  public func addPeer(_ id: NodeID, address: PeerAddress) {
    guard !isShutDown, id != configuration.nodeID else { return }
    members.withLockedValue { _ = $0.insert(id) }
    if let link = links[id], link.address == address { return }
    if let old = links[id] {
      old.stop(failing: .unknownPeer(id))
      linksByID.removeValue(forKey: old.id)
    }
    startLink(id, address: address)
  }

  /// Removes a member: its connections close and it can no longer connect to this node.
  public func removePeer(_ id: NodeID) {
    members.withLockedValue { _ = $0.remove(id) }
    if let link = links.removeValue(forKey: id) {
      link.stop(failing: .unknownPeer(id))
      linksByID.removeValue(forKey: link.id)
    }
  }

  /// Peers with an established, authenticated outbound connection.
  public func connectedPeers() -> Set<NodeID> {
    Set(links.filter { $0.value.isConnected }.keys)
  }

  // MARK: - Sending

  /// Queues `payload` for `peer`. Fails fast when the peer is backing off or its queue is full.
  public func send(_ payload: [UInt8], on channel: PeerChannel, to peer: NodeID) throws(PeerSendError) {
    let link = try linkAccepting(payload.count, on: channel, to: peer)
    try link.enqueue(frame(payload, channel), limit: configuration.queueLimit, byteLimit: configuration.queueByteLimit)
  }

  /// Like ``send(_:on:to:)``, but waits for room when the peer's queue is full instead of failing.
  public func sendWhenQueueHasRoom(_ payload: [UInt8], on channel: PeerChannel, to peer: NodeID)
    async throws(PeerSendError)
  {
    while true {
      let link = try linkAccepting(payload.count, on: channel, to: peer)
      do {
        try link.enqueue(
          frame(payload, channel), limit: configuration.queueLimit, byteLimit: configuration.queueByteLimit)
        return
      } catch .queueFull {
        try await link.waitForRoom()
      }
    }
  }

  private func linkAccepting(_ size: Int, on channel: PeerChannel, to peer: NodeID) throws(PeerSendError)
    -> OutboundLink
  {
    if isShutDown { throw .shutDown }
    if channel == .transport { throw .reservedChannel(channel) }
    if size > configuration.maximumPayload { throw .messageTooLarge(size: size, limit: configuration.maximumPayload) }
    guard let link = links[peer] else { throw .unknownPeer(peer) }
    if link.isBackingOff { throw .peerUnavailable(peer) }
    return link
  }

  private nonisolated func frame(_ payload: [UInt8], _ channel: PeerChannel) -> ByteBuffer {
    Frame.encode(channel: channel, payload: payload)
  }

  // MARK: - Outbound connections

  private func startLink(_ peer: NodeID, address: PeerAddress) {
    nextLinkID += 1
    let link = OutboundLink(id: nextLinkID, peer: peer, address: address)
    links[peer] = link
    linksByID[link.id] = link
    let id = link.id
    link.task = Task { await self.runLink(peer, id) }
  }

  /// Connects, writes the link's queue until the connection breaks, backs off, and again, until
  /// the link is stopped.
  private func runLink(_ peer: NodeID, _ linkID: UInt64) async {
    guard let link = linksByID[linkID] else { return }
    var generator = SystemRandomNumberGenerator()
    var log = logger
    log[metadataKey: "peer"] = "\(peer)"
    while !link.isStopped {
      link.state = .connecting
      do {
        let (connection, identity) = try await connect(to: link.address, expecting: peer)
        if link.isStopped {
          try? await connection.channel.close()
          break
        }
        link.failures = 0
        log.info(
          "connected to peer", metadata: ["address": "\(link.address)", "tls": "\(identity?.protocolVersion ?? "off")"])
        try await connection.executeThenClose { inbound, outbound in
          try await self.pump(linkID, connection.channel, inbound: inbound, outbound: outbound)
        }
        log.info("connection to peer closed")
      } catch {
        log.debug("connection to peer failed", metadata: ["error": "\(error)"])
      }
      link.connectionEnded()
      if link.isStopped { break }
      link.failures += 1
      link.state = .backingOff
      link.failQueued(.peerUnavailable(peer))
      let delay = configuration.backoff.delayMilliseconds(afterFailures: link.failures, using: &generator)
      try? await Task.sleep(for: .milliseconds(delay))
    }
  }

  private func pump(
    _ linkID: UInt64, _ channel: any Channel, inbound: NIOAsyncChannelInboundStream<PeerFrame>,
    outbound: NIOAsyncChannelOutboundWriter<ByteBuffer>
  ) async throws {
    guard let link = linksByID[linkID] else { return }
    let hello = Hello(nodeID: configuration.nodeID, softwareVersion: configuration.softwareVersion)
    try await outbound.write(Frame.encode(channel: .transport, payload: hello.wireBytes()))
    link.connectionStarted(channel)
    try await withThrowingTaskGroup(of: Void.self) { group in
      // The peer never sends on our outbound connection; reading only tells us when it closes.
      group.addTask {
        // However the stream ends (close, TLS alert, error), the writer must learn of it.
        do {
          for try await _ in inbound {}
        } catch {
          await self.connectionEnded(linkID)
          throw error
        }
        await self.connectionEnded(linkID)
      }
      while let batch = await self.nextBatch(linkID) {
        try await outbound.write(contentsOf: batch)
      }
      group.cancelAll()
    }
  }

  private func connectionEnded(_ linkID: UInt64) { linksByID[linkID]?.connectionEnded() }

  private func nextBatch(_ linkID: UInt64) async -> [ByteBuffer]? {
    guard let link = linksByID[linkID] else { return nil }
    return await link.nextBatch()
  }

  private func connect(to address: PeerAddress, expecting peer: NodeID) async throws -> (
    NIOAsyncChannel<PeerFrame, ByteBuffer>, PeerIdentity?
  ) {
    let (connection, handshake) = try await ClientBootstrap(group: group)
      .connectTimeout(configuration.connectTimeout)
      .channelOption(ChannelOptions.socketOption(.tcp_nodelay), value: 1)
      .connect(host: address.host, port: address.port) { channel in
        channel.eventLoop.makeCompletedFuture { try self.configurePipeline(channel, role: .client(peer)) }
      }
    do {
      return (connection, try await handshake?.get())
    } catch {
      try? await connection.channel.close()
      throw error
    }
  }

  // MARK: - Inbound connections

  private nonisolated func acceptLoop(
    _ server: NIOAsyncChannel<(NIOAsyncChannel<PeerFrame, ByteBuffer>, EventLoopFuture<PeerIdentity>?), Never>
  ) async {
    do {
      try await server.executeThenClose { inbound in
        try await withThrowingDiscardingTaskGroup { group in
          for try await (connection, handshake) in inbound {
            group.addTask { await self.serve(connection, handshake: handshake) }
          }
        }
      }
    } catch {
      logger.error("listener failed", metadata: ["error": "\(error)"])
    }
  }

  private func register(_ channel: any Channel) -> Bool {
    if isShutDown { return false }
    inboundChannels[ObjectIdentifier(channel)] = channel
    return true
  }

  private func unregister(_ channel: any Channel) {
    inboundChannels.removeValue(forKey: ObjectIdentifier(channel))
  }

  /// Authenticates one inbound connection and delivers its frames in order.
  private nonisolated func serve(
    _ connection: NIOAsyncChannel<PeerFrame, ByteBuffer>, handshake: EventLoopFuture<PeerIdentity>?
  ) async {
    let channel = connection.channel
    guard await register(channel) else {
      try? await channel.close()
      return
    }
    var log = logger
    log[metadataKey: "remote"] = "\(channel.remoteAddress.map { "\($0)" } ?? "?")"
    do {
      let identity = try await handshake?.get()
      try await connection.executeThenClose { inbound, _ in
        var frames = inbound.makeAsyncIterator()
        let sender = try await self.readHello(from: &frames, identity: identity)
        log[metadataKey: "peer"] = "\(sender)"
        log.debug("accepted peer connection")
        while let frame = try await frames.next() {
          guard frame.channel != .transport else { continue }
          await self.handler(sender, frame.channel, Array(frame.payload.readableBytesView))
        }
      }
      log.debug("peer connection closed")
    } catch let error as TLSError {
      log.warning("refused peer connection", metadata: ["error": "\(error)"])
    } catch {
      log.warning("closed peer connection", metadata: ["error": "\(error)"])
    }
    try? await channel.close()
    await unregister(channel)
  }

  private nonisolated func readHello(
    from frames: inout NIOAsyncChannelInboundStream<PeerFrame>.AsyncIterator, identity: PeerIdentity?
  ) async throws -> NodeID {
    guard let first = try await frames.next(), first.channel == .transport else {
      throw PeerConnectionError.missingHello
    }
    let hello: Hello
    do {
      hello = try Hello(wireBytes: Array(first.payload.readableBytesView))
    } catch {
      throw PeerConnectionError.malformedHello("\(error)")
    }
    guard hello.protocolVersion == Hello.protocolVersion else {
      throw PeerConnectionError.protocolVersionMismatch(theirs: hello.protocolVersion, ours: Hello.protocolVersion)
    }
    if let identity, identity.nodeID != hello.nodeID {
      throw PeerConnectionError.helloIdentityMismatch(certificate: identity.nodeID, hello: hello.nodeID)
    }
    guard members.withLockedValue({ $0.contains(hello.nodeID) }) else {
      throw PeerConnectionError.unknownPeer(hello.nodeID)
    }
    return hello.nodeID
  }

  // MARK: - Pipeline

  private enum Role {
    case client(NodeID)
    case server
  }

  private nonisolated func configurePipeline(_ channel: any Channel, role: Role) throws -> (
    NIOAsyncChannel<PeerFrame, ByteBuffer>, EventLoopFuture<PeerIdentity>?
  ) {
    let pipeline = channel.pipeline.syncOperations
    var handshake: EventLoopFuture<PeerIdentity>?
    if case .mutualTLS(let context) = security {
      let members = self.members
      let tlsRole: TLSHandler.Role
      switch role {
      case .client(let expected): tlsRole = .client(expecting: expected)
      case .server: tlsRole = .server(accept: { id in members.withLockedValue { $0.contains(id) } })
      }
      let tls = TLSHandler(context: context, role: tlsRole, handshakeTimeout: configuration.handshakeTimeout)
      try pipeline.addHandler(tls)
      handshake = tls.handshakeFuture
    }
    try pipeline.addHandler(ByteToMessageHandler(FrameDecoder(maximumPayload: configuration.maximumPayload)))
    // Outbound frames arrive already encoded (`Frame.encode`), checked against the maximum by `send`.
    let connection = try NIOAsyncChannel<PeerFrame, ByteBuffer>(
      wrappingChannelSynchronously: channel,
      configuration: .init(backPressureStrategy: .init(lowWatermark: 16, highWatermark: 256)))
    return (connection, handshake)
  }
}
