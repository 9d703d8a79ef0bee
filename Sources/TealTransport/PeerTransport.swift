import CoreMetrics
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

/// How connections between nodes are secured: TLS 1.3 with mutual authentication, always.
///
/// (The benchmark's plain-TCP comparison mode is behind `@_spi(TransportBenchmarks)`; no
/// configuration reachable through the public API can start an unauthenticated cluster.)
public struct PeerSecurity: Sendable {
  enum Mode: Sendable {
    case mutualTLS(TLSContext)
    case plaintext
  }

  let mode: Mode

  /// TLS 1.3 with mutual authentication against the cluster CA.
  public static func mutualTLS(_ context: TLSContext) -> PeerSecurity { PeerSecurity(mode: .mutualTLS(context)) }

  /// No encryption and no authentication: a hello's node id is taken on trust. Only for the
  /// transport benchmark, to measure what TLS costs.
  @_spi(TransportBenchmarks)
  public static var plaintextForBenchmarks: PeerSecurity { PeerSecurity(mode: .plaintext) }

  /// The TLS context, when the mode is mutual TLS.
  public var tlsContext: TLSContext? {
    if case .mutualTLS(let context) = mode { return context }
    return nil
  }
}

public struct PeerTransportConfiguration: Sendable {
  /// This node's id: it must match the node id in this node's certificate.
  public var nodeID: NodeID
  /// The cluster this node belongs to; a peer whose hello or acceptance names another cluster is
  /// refused with ``PeerRefusalReason/clusterMismatch``. Empty only in tests.
  public var clusterID: String = ""
  public var listenHost: String
  /// 0 picks a free port (tests).
  public var listenPort: Int
  /// The local address outbound connections are dialled from. nil: `listenHost`, unless that is
  /// a wildcard (`0.0.0.0`, `::`), then the system's choice. So a firewall can cut one node off
  /// by its address.
  public var sourceHost: String?
  /// Every other member and where it listens (an entry for this node itself is ignored).
  public var peers: [NodeID: PeerAddress]
  /// The largest payload sent or accepted in one message.
  public var maximumPayload: Int = Frame.defaultMaximumPayload
  /// At most this many messages wait for one peer in each lane (urgent and bulk)...
  public var queueLimit: Int = 4096
  /// ...and at most this many bytes per lane (a single larger message is still accepted into an
  /// empty lane).
  public var queueByteLimit: Int = 64 << 20
  public var connectTimeout: TimeAmount = .seconds(2)
  public var handshakeTimeout: TimeAmount = .seconds(5)
  /// After the TLS handshake, the hello (listener) or the acceptance (dialler) must arrive within
  /// this time.
  public var helloTimeout: TimeAmount = .seconds(5)
  /// The dialler sends a heartbeat this often on an accepted link; the listener answers.
  public var heartbeatInterval: TimeAmount = .seconds(1)
  /// A connection on which nothing arrived for this long while it was being read is closed (a
  /// crashed or black-holed peer). At least twice `heartbeatInterval`.
  public var deadLinkTimeout: TimeAmount = .seconds(4)
  /// A connection whose peer acknowledges none of the data sent to it for this long is aborted
  /// by the kernel (`TCP_USER_TIMEOUT`, Linux): a peer black-holed in the middle of a transfer,
  /// or one that stopped reading with full buffers (a zero window counts too). Longer than
  /// `deadLinkTimeout` so a briefly stalled handler does not cost its connection.
  public var unacknowledgedDataTimeout: TimeAmount = .seconds(15)
  /// Bytes of received messages one inbound connection may hold waiting for the handler before
  /// the socket stops being read. At least `maximumPayload`.
  public var receiveBufferByteLimit: Int = 32 << 20
  /// Accepted inbound connections from one node at a time; more are refused with
  /// ``PeerRefusalReason/tooManyConnections``.
  public var maximumConnectionsPerPeer: Int = 4
  /// Inbound connections that have not yet been accepted (TLS handshake and hello), in total;
  /// more are closed at once, before the handshake (each costs a server signature).
  public var maximumUnauthenticatedConnections: Int = 64
  /// Serial numbers (lowercase hex, no leading zeros) of certificates to refuse, e.g. those of
  /// evicted nodes; change at run time with ``PeerTransport/setRevokedSerials(_:)``.
  public var revokedSerials: Set<String> = []
  public var backoff = Backoff()
  public var softwareVersion = "0.1.0"
  /// The protocol versions offered. Only tests change it.
  var protocolVersions = PeerProtocol.supportedVersions
  /// Where the transport's series go (bytes per peer, refusals; see TransportMetrics.swift); by
  /// default nowhere.
  public var metricsFactory: any MetricsFactory = NOOPMetricsHandler.instance

  public init(
    nodeID: NodeID, listenHost: String, listenPort: Int, peers: [NodeID: PeerAddress], clusterID: String = ""
  ) {
    self.nodeID = nodeID
    self.listenHost = listenHost
    self.listenPort = listenPort
    self.peers = peers
    self.clusterID = clusterID
  }

  /// The host outbound connections are bound to, if any.
  var effectiveSourceHost: String? {
    let host = sourceHost ?? listenHost
    return ["0.0.0.0", "::", "", "*"].contains(host) ? nil : host
  }
}

/// Why a connection was closed by the transport.
public enum PeerConnectionError: Error, Equatable, Sendable, CustomStringConvertible {
  case missingHello
  case malformedHello(String)
  case helloIdentityMismatch(certificate: NodeID, hello: NodeID)
  case unknownPeer(NodeID)
  /// The peer's certificate serial is on the deny list.
  case certificateRevoked(serial: String)
  /// No hello or acceptance within the hello timeout.
  case helloTimeout(milliseconds: Int64)
  /// Nothing arrived for the dead-link timeout.
  case deadLink(milliseconds: Int64)
  /// The connection closed before the listener accepted it.
  case closedBeforeAcceptance
  /// A frame the protocol does not allow here (e.g. an application frame from a listener).
  case unexpectedFrame(PeerChannel)
  /// A fragmented message grew beyond the maximum payload.
  case fragmentedMessageTooLarge(limit: Int)
  /// The acceptance names another node or cluster than the one dialled.
  case unexpectedAcceptance(String)

  public var description: String {
    switch self {
    case .missingHello: "connection did not start with a hello frame"
    case .malformedHello(let reason): "malformed hello: \(reason)"
    case .helloIdentityMismatch(let certificate, let hello):
      "hello claims node \(hello) but the certificate names \(certificate)"
    case .unknownPeer(let id): "node \(id) is not a configured member"
    case .certificateRevoked(let serial): "certificate serial \(serial) is revoked"
    case .helloTimeout(let ms): "no hello or acceptance within \(ms) ms of the TLS handshake"
    case .deadLink(let ms): "nothing received for \(ms) ms: peer presumed dead"
    case .closedBeforeAcceptance: "connection closed before the listener accepted it"
    case .unexpectedFrame(let channel): "unexpected frame on channel \(channel)"
    case .fragmentedMessageTooLarge(let limit): "fragmented message exceeds the \(limit)-byte limit"
    case .unexpectedAcceptance(let reason): "unexpected acceptance: \(reason)"
    }
  }
}

/// What the transport knows about its link to one peer (for status pages and tests).
public struct PeerLinkStatus: Sendable, Equatable {
  /// The listener accepted the current connection.
  public var isConnected: Bool
  /// The protocol version agreed on the current connection.
  public var protocolVersion: UInt64?
  /// Connection attempts that failed since the last accepted one.
  public var consecutiveFailures: Int
  /// The peer's last refusal, until a connection is accepted.
  public var lastRefusal: PeerRefusal?
}

/// One accepted inbound connection, tracked by the authenticated node id of its sender.
final class InboundConnection: Sendable {
  let nodeID: NodeID
  let serial: String?
  let channel: any Channel
  /// Set when the sender stops being a member (or its certificate is revoked): no frame is
  /// delivered after that, even one already read.
  let revoked = NIOLockedValueBox(false)

  init(nodeID: NodeID, serial: String?, channel: any Channel) {
    self.nodeID = nodeID
    self.serial = serial
    self.channel = channel
  }

  var isRevoked: Bool { revoked.withLockedValue { $0 } }

  func revoke() {
    revoked.withLockedValue { $0 = true }
    channel.close(promise: nil)
  }
}

/// Authenticated message transport between cluster nodes.
///
/// Each node dials one outbound connection to every peer and sends only on those; it receives on
/// the connections peers dial to it. Inbound connections must complete the TLS handshake with a
/// certificate from the cluster CA, then send a hello naming the same node, this cluster and an
/// overlapping protocol version range, from a configured member; the listener answers with an
/// acceptance (or a refusal with its reason), and only then are frames delivered, each with the
/// sender's authenticated id, to the handler registered for its channel (``setHandler(_:for:)``).
/// Inbound connections are tracked by that id: when a node stops being a member, or its
/// certificate is revoked, its connections close and nothing more from it is delivered.
///
/// Sending never blocks on the network: a message joins one of two bounded queues for its peer,
/// urgent (at most 64 KiB) or bulk, and writer tasks drain them, urgent first (see
/// ``OutboundLink``). A link counts as connected only once the listener has accepted it. While a
/// peer is backing off after a failed or refused connection, sends fail fast with
/// ``PeerSendError/peerUnavailable(_:)``. Delivery is at most once: messages queued or in flight
/// when a connection breaks are lost (Raft and SWIM retry).
public actor PeerTransport: PeerMessageSender {
  private let configuration: PeerTransportConfiguration
  private let security: NIOLockedValueBox<PeerSecurity>
  private let group: any EventLoopGroup
  /// Routes inbound messages to the handler of their channel.
  public nonisolated let router: PeerChannelRouter
  private let logger: Logger
  private let members: NIOLockedValueBox<Set<NodeID>>
  private let revokedSerials: NIOLockedValueBox<Set<String>>
  private let unauthenticated = NIOLockedValueBox(0)
  /// The most bytes one inbound connection ever held waiting for delivery (tests).
  nonisolated let receiveBufferPeak = NIOLockedValueBox(0)
  /// Inbound connections not yet accepted (tests).
  nonisolated var unauthenticatedCount: Int { unauthenticated.withLockedValue { $0 } }

  private var links: [NodeID: OutboundLink] = [:]
  private var linksByID: [UInt64: OutboundLink] = [:]
  private var nextLinkID: UInt64 = 0
  private var listenerChannel: (any Channel)?
  private var listenerTask: Task<Void, Never>?
  /// Every inbound channel not yet closed, accepted or not (closed on shutdown).
  private var inboundChannels: [ObjectIdentifier: any Channel] = [:]
  /// Accepted inbound connections by the authenticated id of their sender.
  private var inbound: [NodeID: [ObjectIdentifier: InboundConnection]] = [:]
  private var isShutDown = false
  /// The port the listener is bound to, once started.
  public private(set) var listeningPort: Int?

  /// A transport with no handlers yet: register one per channel with ``setHandler(_:for:)``
  /// before ``start()``.
  public init(
    configuration: PeerTransportConfiguration, security: PeerSecurity, group: any EventLoopGroup,
    logger: Logger = Logger(label: "teal.transport")
  ) {
    precondition(
      configuration.deadLinkTimeout >= configuration.heartbeatInterval * 2,
      "deadLinkTimeout must be at least twice heartbeatInterval")
    precondition(
      configuration.receiveBufferByteLimit >= configuration.maximumPayload,
      "receiveBufferByteLimit must be at least maximumPayload")
    self.configuration = configuration
    self.security = NIOLockedValueBox(security)
    self.group = group
    self.router = PeerChannelRouter()
    var logger = logger
    logger[metadataKey: "node"] = "\(configuration.nodeID)"
    self.logger = logger
    // The node's own id may be listed (a founding member list names every node): it is never a peer.
    self.members = NIOLockedValueBox(Set(configuration.peers.keys).subtracting([configuration.nodeID]))
    self.revokedSerials = NIOLockedValueBox(configuration.revokedSerials)
  }

  /// A transport whose every channel goes to `handler` (tests, benchmarks).
  public init(
    configuration: PeerTransportConfiguration, security: PeerSecurity, group: any EventLoopGroup,
    logger: Logger = Logger(label: "teal.transport"), handler: @escaping PeerMessageHandler
  ) {
    self.init(configuration: configuration, security: security, group: group, logger: logger)
    for channel in PeerChannel.allCases where channel != .transport { router.setHandler(handler, for: channel) }
  }

  /// Registers the handler for one channel (Raft, gossip, control), replacing any earlier one.
  public nonisolated func setHandler(_ handler: PeerMessageHandler?, for channel: PeerChannel) {
    router.setHandler(handler, for: channel)
  }

  // MARK: - Lifecycle

  /// Starts listening and dialling every peer. Returns the port it listens on.
  @discardableResult
  public func start() async throws -> Int {
    let unauthenticated = self.unauthenticated
    let limit = configuration.maximumUnauthenticatedConnections
    let metricsFactory = configuration.metricsFactory
    let server = try await ServerBootstrap(group: group)
      .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
      .childChannelOption(ChannelOptions.socketOption(.tcp_nodelay), value: 1)
      .childChannelOption(Self.userTimeoutOption, value: Self.userTimeout(configuration))
      .bind(host: configuration.listenHost, port: configuration.listenPort) { channel in
        channel.eventLoop.makeCompletedFuture {
          // Refuse before the handshake: each one costs this node a signature.
          let admitted = unauthenticated.withLockedValue { count in
            guard count < limit else { return false }
            count += 1
            return true
          }
          let slot = UnauthenticatedSlot(counter: admitted ? unauthenticated : nil)
          if !admitted {
            TransportMetrics.refused("too_many_unauthenticated", factory: metricsFactory)
            // Closed as soon as it is active, before the TLS handler sees it: no handshake.
            try channel.pipeline.syncOperations.addHandler(CloseOnActiveHandler())
          }
          channel.closeFuture.whenComplete { _ in slot.release() }
          let (connection, handshake, _, budget) = try self.configurePipeline(channel, role: .server)
          return InboundSetup(connection: connection, handshake: handshake, budget: budget, slot: slot)
        }
      }
    listenerChannel = server.channel
    let port = server.channel.localAddress?.port ?? configuration.listenPort
    listeningPort = port
    logger.info("listening", metadata: ["address": "\(configuration.listenHost):\(port)"])
    listenerTask = Task { await self.acceptLoop(server) }
    for (peer, address) in configuration.peers where peer != configuration.nodeID { startLink(peer, address: address) }
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
    recheckInbound()
  }

  /// Removes a member: its outbound link stops, its inbound connections close, and nothing more
  /// it sent is delivered.
  public func removePeer(_ id: NodeID) {
    members.withLockedValue { _ = $0.remove(id) }
    if let link = links.removeValue(forKey: id) {
      link.stop(failing: .unknownPeer(id))
      linksByID.removeValue(forKey: link.id)
    }
    recheckInbound()
  }

  /// Replaces the member set: starts links to new members, stops those to removed ones, and
  /// re-checks every open connection.
  public func setPeers(_ peers: [NodeID: PeerAddress]) {
    for id in links.keys where peers[id] == nil { removePeer(id) }
    members.withLockedValue { $0 = Set(peers.keys).subtracting([configuration.nodeID]) }
    for (id, address) in peers { addPeer(id, address: address) }
    recheckInbound()
  }

  /// Replaces the certificate deny list: connections of a revoked certificate close at once and
  /// it is refused from then on (both when it dials and when it is dialled).
  public func setRevokedSerials(_ serials: Set<String>) {
    revokedSerials.withLockedValue { $0 = serials }
    recheckInbound()
    for link in links.values where link.isConnected {
      // The simplest sound rule: re-dial, so the listener's certificate is checked again.
      link.dropConnection()
    }
  }

  /// New TLS material (a renewed certificate, a new CA): used by every connection made from now
  /// on; open connections keep theirs until they reconnect. Call it on SIGHUP.
  public func updateSecurity(_ security: PeerSecurity) {
    self.security.withLockedValue { $0 = security }
  }

  /// Peers with an outbound connection the peer has accepted.
  public func connectedPeers() -> Set<NodeID> {
    Set(links.filter { $0.value.isConnected }.keys)
  }

  /// The state of the outbound link to `peer`, or nil when it is not a member.
  public func linkStatus(_ peer: NodeID) -> PeerLinkStatus? {
    guard let link = links[peer] else { return nil }
    return PeerLinkStatus(
      isConnected: link.isConnected, protocolVersion: link.protocolVersion, consecutiveFailures: link.failures,
      lastRefusal: link.lastRefusal)
  }

  /// Nodes with at least one accepted inbound connection open.
  public func inboundPeers() -> Set<NodeID> { Set(inbound.filter { !$0.value.isEmpty }.keys) }

  private func recheckInbound() {
    let members = self.members.withLockedValue { $0 }
    let revoked = revokedSerials.withLockedValue { $0 }
    for (node, connections) in inbound {
      for (key, connection) in connections
      where !members.contains(node) || connection.serial.map(revoked.contains) == true {
        connection.revoke()
        inbound[node]?.removeValue(forKey: key)
      }
    }
    inbound = inbound.filter { !$0.value.isEmpty }
  }

  // MARK: - Sending

  /// Queues `payload` for `peer`. Fails fast when the peer is backing off or its queue is full.
  public func send(_ payload: [UInt8], on channel: PeerChannel, to peer: NodeID) throws(PeerSendError) {
    let link = try linkAccepting(payload.count, on: channel, to: peer)
    try link.enqueue(payload, on: channel, limit: configuration.queueLimit, byteLimit: configuration.queueByteLimit)
  }

  /// Like ``send(_:on:to:)``, but waits for room when the peer's queue is full instead of failing.
  public func sendWhenQueueHasRoom(_ payload: [UInt8], on channel: PeerChannel, to peer: NodeID)
    async throws(PeerSendError)
  {
    while true {
      let link = try linkAccepting(payload.count, on: channel, to: peer)
      do {
        try link.enqueue(
          payload, on: channel, limit: configuration.queueLimit, byteLimit: configuration.queueByteLimit)
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
    guard let link = links[peer] else {
      // Links start with the listener: a member is only unavailable until then, not unknown.
      if listeningPort == nil, members.withLockedValue({ $0.contains(peer) }) { throw .peerUnavailable(peer) }
      throw .unknownPeer(peer)
    }
    if link.isBackingOff { throw .peerUnavailable(peer) }
    return link
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

  /// Connects, waits for the listener's acceptance, writes the link's queues until the
  /// connection breaks, backs off, and again, until the link is stopped. A refusal backs off to
  /// the maximum and is logged once per distinct reason.
  private func runLink(_ peer: NodeID, _ linkID: UInt64) async {
    guard let link = linksByID[linkID] else { return }
    var generator = SystemRandomNumberGenerator()
    var log = logger
    log[metadataKey: "peer"] = "\(peer)"
    while !link.isStopped {
      link.state = .connecting
      var refused = false
      do {
        let (connection, identity, acceptance) = try await connect(to: link.address, expecting: peer)
        try await connection.executeThenClose { inbound, _ in
          if let serial = identity?.serialNumber, self.isRevoked(serial) {
            throw PeerConnectionError.certificateRevoked(serial: serial)
          }
          let accepted = try await acceptance.get()
          try self.check(accepted, from: peer)
          if link.isStopped { return }
          link.failures = 0
          link.lastRefusal = nil
          link.protocolVersion = accepted.protocolVersion
          link.connectionStarted(connection.channel)
          log.info(
            "connected to peer",
            metadata: [
              "address": "\(link.address)", "tls": "\(identity?.protocolVersion ?? "off")",
              "protocol": "\(accepted.protocolVersion)",
            ])
          try await self.pump(linkID, connection.channel, inbound: inbound)
        }
        log.info("connection to peer closed")
      } catch let refusal as PeerRefusal {
        refused = true
        if link.lastRefusal != refusal {
          log.warning("peer refused this node", metadata: ["reason": "\(refusal)"])
        } else {
          log.debug("peer refused this node again", metadata: ["reason": "\(refusal)"])
        }
        link.lastRefusal = refusal
      } catch {
        log.debug("connection to peer failed", metadata: ["error": "\(error)"])
      }
      link.connectionEnded()
      if link.isStopped { break }
      // A refusal will not change by retrying soon: wait the longest.
      link.failures += 1
      link.state = .backingOff
      link.failQueued(.peerUnavailable(peer))
      let delay = configuration.backoff.delayMilliseconds(
        afterFailures: refused ? Int.max : link.failures, using: &generator)
      try? await Task.sleep(for: .milliseconds(delay))
    }
  }

  private nonisolated func isRevoked(_ serial: String) -> Bool {
    revokedSerials.withLockedValue { $0.contains(serial) }
  }

  private nonisolated func check(_ acceptance: Acceptance, from peer: NodeID) throws {
    guard acceptance.nodeID == peer else {
      throw PeerConnectionError.unexpectedAcceptance("from node \(acceptance.nodeID), dialled \(peer)")
    }
    guard acceptance.clusterID == configuration.clusterID else {
      throw PeerConnectionError.unexpectedAcceptance(
        "cluster '\(acceptance.clusterID)' is not this node's cluster '\(configuration.clusterID)'")
    }
    guard configuration.protocolVersions.contains(acceptance.protocolVersion) else {
      throw PeerConnectionError.unexpectedAcceptance("protocol version \(acceptance.protocolVersion) not offered")
    }
  }

  /// Writes both lanes until the connection closes. The listener sends nothing on our outbound
  /// connection but its acceptance and heartbeat answers (taken by the pipeline); reading only
  /// tells us when it closes.
  private func pump(_ linkID: UInt64, _ channel: any Channel, inbound: NIOAsyncChannelInboundStream<PeerFrame>)
    async throws
  {
    guard let link = linksByID[linkID] else { return }
    let sent = TransportMetrics.sentBytes(to: link.peer, factory: configuration.metricsFactory)
    try await withThrowingTaskGroup(of: Void.self) { group in
      group.addTask {
        defer { channel.close(promise: nil) }
        for try await _ in inbound {}
      }
      for lane in Lane.allCases {
        group.addTask {
          try await self.runWriter(linkID, lane) { batch in
            try await Self.write(batch, to: channel)
            sent.increment(by: Int64(batch.reduce(0) { $0 + $1.readableBytes }))
          }
        }
      }
      // Whichever ends first (the connection closed, a write failed, the link stopped) ends all.
      defer {
        link.connectionEnded()
        group.cancelAll()
      }
      try await group.next()
    }
  }

  private func runWriter(_ linkID: UInt64, _ lane: Lane, write: ([ByteBuffer]) async throws -> Void) async throws {
    guard let link = linksByID[linkID] else { return }
    try await link.runWriter(lane, write: write)
  }

  /// Hands `batch` to the channel in one event-loop turn and returns once it has been written to
  /// the socket.
  private static func write(_ batch: [ByteBuffer], to channel: any Channel) async throws {
    let promise = channel.eventLoop.makePromise(of: Void.self)
    channel.eventLoop.execute {
      for (index, buffer) in batch.enumerated() {
        channel.write(buffer, promise: index == batch.count - 1 ? promise : nil)
      }
      channel.flush()
    }
    try await promise.futureResult.get()
  }

  private func connect(to address: PeerAddress, expecting peer: NodeID) async throws -> (
    NIOAsyncChannel<PeerFrame, ByteBuffer>, PeerIdentity?, EventLoopFuture<Acceptance>
  ) {
    var bootstrap = ClientBootstrap(group: group)
      .connectTimeout(configuration.connectTimeout)
      .channelOption(ChannelOptions.socketOption(.tcp_nodelay), value: 1)
      .channelOption(Self.userTimeoutOption, value: Self.userTimeout(configuration))
    if let source = configuration.effectiveSourceHost {
      bootstrap = bootstrap.bind(to: try SocketAddress.makeAddressResolvingHost(source, port: 0))
    }
    let (connection, handshake, acceptance) = try await bootstrap.connect(host: address.host, port: address.port) {
      channel in
      channel.eventLoop.makeCompletedFuture {
        let (connection, handshake, acceptance, _) = try self.configurePipeline(channel, role: .client(peer))
        return (connection, handshake, acceptance)
      }
    }
    do {
      let identity = try await handshake?.get()
      let hello = Hello(
        versions: configuration.protocolVersions, nodeID: configuration.nodeID, clusterID: configuration.clusterID,
        softwareVersion: configuration.softwareVersion)
      try await Self.write(
        [Frame.encode(channel: .transport, payload: TransportMessage.hello(hello).wireBytes())], to: connection.channel)
      return (connection, identity, acceptance)
    } catch {
      try? await connection.channel.close()
      throw error
    }
  }

  /// `TCP_USER_TIMEOUT` (Linux, 18): how long sent data may stay unacknowledged before the
  /// kernel aborts the connection, the black-hole detector while writes are outstanding (when
  /// ``LivenessHandler`` gives no verdict). It also ends a zero-window stall that long.
  /// Elsewhere there is no such option and this sets `TCP_NODELAY` again (harmless).
  #if os(Linux)
    private static let userTimeoutOption = ChannelOptions.Types.SocketOption(
      level: .tcp, name: NIOBSDSocket.Option(rawValue: 18))

    private static func userTimeout(_ configuration: PeerTransportConfiguration) -> SocketOptionValue {
      SocketOptionValue(clamping: configuration.unacknowledgedDataTimeout.nanoseconds / 1_000_000)
    }
  #else
    private static let userTimeoutOption = ChannelOptions.Types.SocketOption(level: .tcp, name: .tcp_nodelay)

    private static func userTimeout(_ configuration: PeerTransportConfiguration) -> SocketOptionValue { 1 }
  #endif

  // MARK: - Inbound connections

  private nonisolated func acceptLoop(_ server: NIOAsyncChannel<InboundSetup, Never>) async {
    do {
      try await server.executeThenClose { inbound in
        try await withThrowingDiscardingTaskGroup { group in
          for try await setup in inbound {
            group.addTask { await self.serve(setup) }
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
    let key = ObjectIdentifier(channel)
    inboundChannels.removeValue(forKey: key)
    for node in inbound.keys { inbound[node]?.removeValue(forKey: key) }
    inbound = inbound.filter { !$0.value.isEmpty }
  }

  private enum Admission {
    case accepted(InboundConnection, Acceptance)
    case refused(PeerRefusal)
  }

  /// Decides on a hello and, when accepting, registers the connection under its sender's id, in
  /// one step on the actor: a `removePeer` either comes before (refused) or after (closed).
  private func admit(_ hello: Hello, identity: PeerIdentity?, channel: any Channel) -> Admission {
    func refuse(_ reason: PeerRefusalReason, _ detail: String) -> Admission {
      .refused(
        PeerRefusal(
          reason: reason, detail: detail, supportedVersions: configuration.protocolVersions,
          clusterID: configuration.clusterID))
    }
    if let identity, identity.nodeID != hello.nodeID {
      return refuse(
        .identityMismatch, "hello claims node \(hello.nodeID) but the certificate names \(identity.nodeID)")
    }
    guard hello.clusterID == configuration.clusterID else {
      return refuse(
        .clusterMismatch, "cluster '\(hello.clusterID)' is not this node's cluster '\(configuration.clusterID)'")
    }
    guard let version = PeerProtocol.negotiate(configuration.protocolVersions, hello.versions) else {
      return refuse(
        .noCommonProtocolVersion,
        "dialler speaks \(hello.versions.lowerBound)-\(hello.versions.upperBound), this node "
          + "\(configuration.protocolVersions.lowerBound)-\(configuration.protocolVersions.upperBound)")
    }
    guard members.withLockedValue({ $0.contains(hello.nodeID) }) else {
      return refuse(.notMember, "node \(hello.nodeID) is not a member of this node's configuration")
    }
    if let serial = identity?.serialNumber, isRevoked(serial) {
      return refuse(.certificateRevoked, "certificate serial \(serial) is revoked")
    }
    let open = inbound[hello.nodeID]?.count ?? 0
    guard open < configuration.maximumConnectionsPerPeer else {
      return refuse(
        .tooManyConnections, "node \(hello.nodeID) already has \(open) connections open to this node")
    }
    guard !isShutDown else { return refuse(.notMember, "this node is shutting down") }
    let connection = InboundConnection(nodeID: hello.nodeID, serial: identity?.serialNumber, channel: channel)
    inbound[hello.nodeID, default: [:]][ObjectIdentifier(channel)] = connection
    return .accepted(
      connection, Acceptance(protocolVersion: version, nodeID: configuration.nodeID, clusterID: configuration.clusterID)
    )
  }

  /// Authenticates one inbound connection and delivers its frames in order.
  private nonisolated func serve(_ setup: InboundSetup) async {
    let connection = setup.connection
    let channel = connection.channel
    guard await register(channel) else {
      try? await channel.close()
      return
    }
    var log = logger
    log[metadataKey: "remote"] = "\(channel.remoteAddress.map { "\($0)" } ?? "?")"
    do {
      let identity = try await setup.handshake?.get()
      try await connection.executeThenClose { inbound, _ in
        var frames = inbound.makeAsyncIterator()
        let hello = try await Self.readHello(from: &frames)
        switch await self.admit(hello, identity: identity, channel: channel) {
        case .refused(let refusal):
          TransportMetrics.refused(refusal.reason, factory: configuration.metricsFactory)
          log.warning("refused peer connection", metadata: ["peer": "\(hello.nodeID)", "reason": "\(refusal)"])
          // Awaited until written: the connection closes right after.
          try await Self.write(
            [Frame.encode(channel: .transport, payload: TransportMessage.refused(refusal).wireBytes())], to: channel)
          return
        case .accepted(let accepted, let acceptance):
          setup.slot.release()
          log[metadataKey: "peer"] = "\(hello.nodeID)"
          try await Self.write(
            [Frame.encode(channel: .transport, payload: TransportMessage.accepted(acceptance).wireBytes())], to: channel
          )
          log.debug("accepted peer connection", metadata: ["protocol": "\(acceptance.protocolVersion)"])
          let received = TransportMetrics.receivedBytes(from: hello.nodeID, factory: configuration.metricsFactory)
          while let frame = try await frames.next() {
            if accepted.isRevoked { break }
            let size = frame.payload.readableBytes
            received.increment(by: Int64(size + Frame.headerSize))
            if frame.channel != .transport {
              await self.router.deliver(
                from: hello.nodeID, channel: frame.channel, payload: Array(frame.payload.readableBytesView))
            }
            setup.budget.release(size)
          }
        }
      }
      log.debug("peer connection closed")
    } catch let error as TLSError {
      TransportMetrics.refused("tls", factory: configuration.metricsFactory)
      log.warning("refused peer connection", metadata: ["error": "\(error)"])
    } catch {
      log.warning("closed peer connection", metadata: ["error": "\(error)"])
    }
    try? await channel.close()
    await unregister(channel)
  }

  private static func readHello(from frames: inout NIOAsyncChannelInboundStream<PeerFrame>.AsyncIterator)
    async throws -> Hello
  {
    guard let first = try await frames.next(), first.channel == .transport else {
      throw PeerConnectionError.missingHello
    }
    let message: TransportMessage
    do {
      message = try TransportMessage(wireBytes: Array(first.payload.readableBytesView))
    } catch {
      throw PeerConnectionError.malformedHello("\(error)")
    }
    guard case .hello(let hello) = message else { throw PeerConnectionError.missingHello }
    return hello
  }

  // MARK: - Pipeline

  private enum Role {
    case client(NodeID)
    case server
  }

  /// Listener pipeline: liveness, TLS, frame decoder, transport control, receive budget (joins
  /// fragments), async channel. Dialler pipeline: the same without the receive budget.
  private nonisolated func configurePipeline(_ channel: any Channel, role: Role) throws -> (
    NIOAsyncChannel<PeerFrame, ByteBuffer>, EventLoopFuture<PeerIdentity>?, EventLoopFuture<Acceptance>,
    ReceiveBudget
  ) {
    let pipeline = channel.pipeline.syncOperations
    try pipeline.addHandler(LivenessHandler(timeout: configuration.deadLinkTimeout))
    var handshake: EventLoopFuture<PeerIdentity>?
    let security = self.security.withLockedValue { $0 }
    if case .mutualTLS(let context) = security.mode {
      let tlsRole: TLSHandler.Role
      switch role {
      case .client(let expected): tlsRole = .client(expecting: expected)
      // Membership is decided after the hello, so that a non-member learns why it is refused.
      case .server: tlsRole = .server(accept: { _ in true })
      }
      let tls = TLSHandler(context: context, role: tlsRole, handshakeTimeout: configuration.handshakeTimeout)
      try pipeline.addHandler(tls)
      handshake = tls.handshakeFuture
    }
    try pipeline.addHandler(ByteToMessageHandler(FrameDecoder(maximumPayload: configuration.maximumPayload)))
    let control = TransportControlHandler(
      role: { if case .server = role { .listener } else { .dialler } }(), helloTimeout: configuration.helloTimeout,
      heartbeatInterval: configuration.heartbeatInterval, startsWithTLS: handshake != nil)
    try pipeline.addHandler(control)
    var budget = ReceiveBudget(handler: nil, eventLoop: channel.eventLoop)
    if case .server = role {
      let handler = ReceiveBudgetHandler(
        byteLimit: configuration.receiveBufferByteLimit, maximumPayload: configuration.maximumPayload,
        peak: receiveBufferPeak)
      try pipeline.addHandler(handler)
      budget = ReceiveBudget(handler: NIOLoopBound(handler, eventLoop: channel.eventLoop), eventLoop: channel.eventLoop)
    }
    // Outbound frames arrive already encoded (`Frame.encode`), checked against the maximum by `send`.
    let connection = try NIOAsyncChannel<PeerFrame, ByteBuffer>(
      wrappingChannelSynchronously: channel,
      configuration: .init(backPressureStrategy: .init(lowWatermark: 16, highWatermark: 256)))
    return (connection, handshake, control.acceptance, budget)
  }
}

/// Closes a connection the moment it becomes active, without passing the event on.
final class CloseOnActiveHandler: ChannelInboundHandler, Sendable {
  typealias InboundIn = ByteBuffer

  func channelActive(context: ChannelHandlerContext) { context.close(promise: nil) }

  func handlerAdded(context: ChannelHandlerContext) {
    if context.channel.isActive { context.close(promise: nil) }
  }
}

/// What the listener's channel initializer hands the accept loop.
struct InboundSetup: Sendable {
  let connection: NIOAsyncChannel<PeerFrame, ByteBuffer>
  let handshake: EventLoopFuture<PeerIdentity>?
  let budget: ReceiveBudget
  let slot: UnauthenticatedSlot
}

/// A place among the unauthenticated connections, given back once (on acceptance or close).
final class UnauthenticatedSlot: Sendable {
  private let counter: NIOLockedValueBox<Int>?
  private let held: NIOLockedValueBox<Bool>

  init(counter: NIOLockedValueBox<Int>?) {
    self.counter = counter
    self.held = NIOLockedValueBox(counter != nil)
  }

  func release() {
    let wasHeld = held.withLockedValue { held in
      defer { held = false }
      return held
    }
    if wasHeld { counter?.withLockedValue { $0 -= 1 } }
  }
}

/// The delivery loop's handle on a connection's ``ReceiveBudgetHandler``.
struct ReceiveBudget: Sendable {
  let handler: NIOLoopBound<ReceiveBudgetHandler>?
  let eventLoop: any EventLoop

  func release(_ bytes: Int) {
    guard let handler else { return }
    eventLoop.execute { handler.value.release(bytes) }
  }
}
