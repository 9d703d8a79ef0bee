import NIOCore
import TealWire

/// TLS on a SwiftNIO channel, on OpenSSL, with the ciphertext in NIO buffers (``ByteBufferBIO``).
///
/// Inbound it turns ciphertext into plaintext; outbound, plaintext into ciphertext. Writes smaller
/// than ``coalescingLimit`` are gathered into one record of up to 16 KiB and encrypted on the next
/// flush (or when the record is full): many small frames cost one `SSL_write`, one record and one
/// buffer, not one each. Larger writes are encrypted straight from the caller's buffer. Ciphertext
/// goes to the channel on flush, or on its own once ``outboundCiphertextLimit`` bytes are waiting. Writes made
/// before the handshake completes are held and sent once the peer is authenticated. After the
/// handshake the peer's node id is checked against ``Role`` and published through
/// ``handshakeFuture`` and a ``PeerIdentity`` user event; a mismatch closes the connection before a
/// single byte of application data passes in either direction.
///
/// Closing sends close_notify; receiving close_notify answers with ours and closes. A connection
/// that ends without close_notify after the handshake reports ``TLSError/uncleanShutdown``.
public final class TLSHandler: ChannelDuplexHandler, RemovableChannelHandler {
  public typealias InboundIn = ByteBuffer
  public typealias InboundOut = ByteBuffer
  public typealias OutboundIn = ByteBuffer
  public typealias OutboundOut = ByteBuffer

  /// Which side this is and whom it expects at the other end.
  public enum Role: Sendable {
    /// We dialled `expected`; its certificate must name exactly that node.
    case client(expecting: NodeID)
    /// We accepted a connection; `accept` decides whether the named node may talk to us.
    case server(accept: @Sendable (NodeID) -> Bool)
    /// We dialled a node's API at `host`: its certificate must chain to our trust roots, be a node
    /// certificate (not a CA) and carry `host` as an `IP:` or `DNS:` subject alternative name. We
    /// present no certificate (the API authenticates clients by bearer token).
    case apiClient(host: String)
    /// We serve the API: we present our certificate and ask for none; any client that completes the
    /// handshake passes (use a context whose configuration has `requestsPeerCertificate` false).
    /// ``handshakeFuture`` then fails with ``TLSError/anonymousPeer`` once the handshake is done,
    /// since there is no peer identity to report.
    case apiServer
  }

  private enum State {
    case idle
    case handshaking
    case active(PeerIdentity?)
    case closing
    case closed
  }

  private let tlsContext: TLSContext
  private let role: Role
  private let handshakeTimeout: TimeAmount
  private let maximumReadChunk: Int
  private var connection: TLSConnection?
  private var state: State = .idle
  private var handshakePromise: EventLoopPromise<PeerIdentity>?
  private var timeoutTask: Scheduled<Void>?
  private var heldWrites: [(ByteBuffer, EventLoopPromise<Void>?)] = []
  private var flushHeld = false
  private var closePromise: EventLoopPromise<Void>?
  private var handshakeRetries = 0

  /// Writes smaller than this many bytes (16 KiB, one TLS record's plaintext) are gathered into
  /// one pending record; larger writes are encrypted from the caller's buffer as they come.
  static let coalescingLimit = TLSConnection.maximumRecordPlaintext
  /// Ciphertext waiting for a flush is handed to the channel (without a flush) once it reaches
  /// this many bytes (256 KiB), so that a writer that never flushes cannot make it grow unbounded.
  static let outboundCiphertextLimit = 256 * 1024

  /// Plaintext of small writes not encrypted yet: at most ``coalescingLimit`` bytes.
  private var pendingPlaintext: ByteBuffer?
  /// Promises of the writes whose (last) bytes are in `pendingPlaintext`.
  private var plaintextPromises: [EventLoopPromise<Void>] = []
  /// Promises of the writes whose ciphertext waits in the connection's outgoing buffer.
  private var sealedPromises: [EventLoopPromise<Void>] = []

  /// - Parameters:
  ///   - handshakeTimeout: the connection fails with ``TLSError/handshakeTimeout(milliseconds:)``
  ///     and closes if the handshake has not completed by then.
  ///   - maximumReadChunk: the most plaintext passed on in one `channelRead`.
  public init(
    context: TLSContext, role: Role, handshakeTimeout: TimeAmount = .seconds(10), maximumReadChunk: Int = 256 * 1024
  ) {
    self.tlsContext = context
    self.role = role
    self.handshakeTimeout = handshakeTimeout
    self.maximumReadChunk = maximumReadChunk
  }

  /// Asks the peer to update its keys (TLS 1.3 KeyUpdate with update_requested); tests and, later,
  /// long-lived links. Call on the event loop after the handshake.
  func requestKeyUpdate() -> Bool { connection?.requestKeyUpdate() ?? false }

  /// Succeeds with the authenticated peer once the handshake and identity check pass; fails with
  /// a ``TLSError`` otherwise. Available once the handler is in a pipeline.
  public var handshakeFuture: EventLoopFuture<PeerIdentity> {
    guard let handshakePromise else { preconditionFailure("TLSHandler.handshakeFuture read before handlerAdded") }
    return handshakePromise.futureResult
  }

  // MARK: Lifecycle

  public func handlerAdded(context: ChannelHandlerContext) {
    handshakePromise = context.eventLoop.makePromise(of: PeerIdentity.self)
    do {
      connection = try TLSConnection(
        context: tlsContext, role: role.connectionRole, allocator: context.channel.allocator)
    } catch {
      fail(context: context, with: .handshakeFailed(error))
      return
    }
    if context.channel.isActive { startHandshake(context: context) }
  }

  public func handlerRemoved(context: ChannelHandlerContext) {
    timeoutTask?.cancel()
    handshakePromise?.fail(TLSError.connectionClosed)
    failHeldWrites(TLSError.connectionClosed)
    failPendingWrites(TLSError.connectionClosed)
  }

  public func channelActive(context: ChannelHandlerContext) {
    startHandshake(context: context)
    context.fireChannelActive()
  }

  public func channelInactive(context: ChannelHandlerContext) {
    timeoutTask?.cancel()
    switch state {
    case .active:
      if connection?.receivedShutdown != true { context.fireErrorCaught(TLSError.uncleanShutdown) }
    case .handshaking, .idle:
      handshakePromise?.fail(TLSError.connectionClosed)
    case .closing, .closed:
      break
    }
    state = .closed
    failHeldWrites(TLSError.connectionClosed)
    failPendingWrites(TLSError.connectionClosed)
    context.fireChannelInactive()
  }

  private func startHandshake(context: ChannelHandlerContext) {
    guard case .idle = state else { return }
    state = .handshaking
    let timeout = handshakeTimeout
    timeoutTask = context.eventLoop.assumeIsolated().scheduleTask(in: timeout) { [weak self] in
      guard let self, case .handshaking = self.state else { return }
      self.fail(context: context, with: .handshakeTimeout(milliseconds: timeout.nanoseconds / 1_000_000))
    }
    advanceHandshake(context: context)
  }

  // MARK: Inbound

  public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    let ciphertext = unwrapInboundIn(data)
    guard let connection else { return }
    switch state {
    case .closed, .idle:
      return
    case .handshaking, .active, .closing:
      connection.feed(ciphertext)
    }
    if case .handshaking = state { advanceHandshake(context: context) }
    if case .active = state { readPlaintext(context: context, expected: ciphertext.readableBytes) }
    if case .closing = state { readPlaintext(context: context, expected: ciphertext.readableBytes) }
  }

  private func advanceHandshake(context: ChannelHandlerContext) {
    guard let connection else { return }
    let progress: TLSConnection.Progress
    do {
      progress = try connection.handshake()
    } catch {
      flushOutgoing(context: context)  // send OpenSSL's alert so the peer learns why
      fail(context: context, with: error)
      return
    }
    flushOutgoing(context: context)
    switch progress {
    case .wantRead:
      return
    case .wantWrite:
      // The outgoing bytes just left; go on (OpenSSL needs nothing else from us).
      handshakeRetries += 1
      if handshakeRetries > 16 {
        fail(context: context, with: .writeFailed(reason: "OpenSSL kept asking to flush during the handshake"))
        return
      }
      advanceHandshake(context: context)
    case .closed:
      fail(context: context, with: .connectionClosed)
    case .done:
      completeHandshake(context: context, connection: connection)
    }
  }

  private func completeHandshake(context: ChannelHandlerContext, connection: TLSConnection) {
    timeoutTask?.cancel()
    if case .apiServer = role {
      activate(context: context, identity: nil)
      return
    }
    guard let certificate = connection.peerCertificate else {
      fail(context: context, with: .peerNotAccepted(presented: "no certificate"))
      return
    }
    let presented = certificate.nodeID
    guard !certificate.hasCABasicConstraint else {
      // A CA certificate is never a node's identity, whatever names it carries.
      fail(context: context, with: .peerNotAccepted(presented: "a CA certificate (CA:TRUE)"))
      return
    }
    switch role {
    case .client(let expected):
      guard presented == expected else {
        fail(
          context: context, with: .peerIdentityMismatch(expected: expected, presented: presented?.rawValue ?? "none"))
        return
      }
    case .server(let accept):
      guard let presented, accept(presented) else {
        fail(context: context, with: .peerNotAccepted(presented: presented?.rawValue ?? "no node id"))
        return
      }
    case .apiClient(let host):
      let names = certificate.subjectAlternativeNames
      guard presented != nil, names.contains("IP:\(host)") || names.contains("DNS:\(host)") else {
        fail(
          context: context,
          with: .peerNotAccepted(
            presented: "a certificate for \(names.joined(separator: ", ")), not a node certificate for \(host)"))
        return
      }
    case .apiServer:
      preconditionFailure("the API server role is activated before its peer certificate is read")
    }
    guard let presented else { return }
    let identity = PeerIdentity(
      nodeID: presented, protocolVersion: connection.negotiatedProtocol, serialNumber: certificate.serialNumber)
    activate(context: context, identity: identity)
  }

  /// The handshake passed: report the peer (if it has an identity), then release held writes.
  private func activate(context: ChannelHandlerContext, identity: PeerIdentity?) {
    state = .active(identity)
    if let identity {
      handshakePromise?.succeed(identity)
      context.fireUserInboundEventTriggered(identity)
    } else {
      handshakePromise?.fail(TLSError.anonymousPeer)
    }
    // Release writes held during the handshake, then read any data that came with its last flight.
    let held = heldWrites
    heldWrites = []
    for (index, (buffer, promise)) in held.enumerated() {
      guard case .active = state else {
        // Encrypting an earlier one failed and closed the connection.
        for (_, promise) in held[index...] { promise?.fail(TLSError.connectionClosed) }
        return
      }
      encrypt(context: context, buffer, promise: promise)
    }
    if flushHeld {
      flushHeld = false
      passOn(context: context, flush: true)
    }
    readPlaintext(context: context)
  }

  private func readPlaintext(context: ChannelHandlerContext, expected: Int = 16 * 1024) {
    guard let connection else { return }
    // Plaintext is never longer than the ciphertext it came from: one allocation, no regrowth.
    let chunkCapacity = min(max(expected, 1024), maximumReadChunk)
    var plaintext = context.channel.allocator.buffer(capacity: chunkCapacity)
    while true {
      let progress: TLSConnection.Progress
      do {
        progress = try connection.read(into: &plaintext, limit: 64 * 1024)
      } catch {
        if plaintext.readableBytes > 0 { context.fireChannelRead(wrapInboundOut(plaintext)) }
        flushOutgoing(context: context)  // the alert OpenSSL queued tells the peer why
        fail(context: context, with: error)
        return
      }
      switch progress {
      case .done:
        if plaintext.writableBytes == 0 {
          context.fireChannelRead(wrapInboundOut(plaintext))
          plaintext = context.channel.allocator.buffer(capacity: chunkCapacity)
        }
      case .wantWrite:
        flushOutgoing(context: context)
      case .wantRead:
        if plaintext.readableBytes > 0 { context.fireChannelRead(wrapInboundOut(plaintext)) }
        // Reading can make OpenSSL owe the peer an answer (a KeyUpdate): send it now.
        connection.answerPendingKeyUpdate()
        flushOutgoing(context: context)
        return
      case .closed:
        if plaintext.readableBytes > 0 { context.fireChannelRead(wrapInboundOut(plaintext)) }
        peerClosed(context: context)
        return
      }
    }
  }

  /// The peer sent close_notify: answer with ours and close.
  private func peerClosed(context: ChannelHandlerContext) {
    guard let connection else { return }
    let wasClosing: Bool
    if case .closing = state { wasClosing = true } else { wasClosing = false }
    state = .closing
    // What was written before, and not flushed yet, still leaves ahead of our close_notify.
    guard wasClosing || seal(context: context) else { return }
    connection.shutdown()
    flushOutgoing(context: context)
    if !wasClosing { context.close(promise: nil) }
  }

  // MARK: Outbound

  public func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
    let plaintext = unwrapOutboundIn(data)
    switch state {
    case .idle, .handshaking:
      heldWrites.append((plaintext, promise))
    case .active:
      encrypt(context: context, plaintext, promise: promise)
    case .closing, .closed:
      promise?.fail(TLSError.connectionClosed)
    }
  }

  public func flush(context: ChannelHandlerContext) {
    switch state {
    case .idle, .handshaking: flushHeld = true
    case .active: passOn(context: context, flush: true)
    case .closing, .closed: context.flush()
    }
  }

  public func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
    guard mode == .all || mode == .output, case .active = state, let connection else {
      context.close(mode: mode, promise: promise)
      return
    }
    // What was written before, and not flushed yet, still leaves ahead of close_notify.
    guard seal(context: context) else {
      context.close(mode: mode, promise: promise)
      return
    }
    state = .closing
    connection.shutdown()
    flushOutgoing(context: context)
    context.close(mode: mode, promise: promise)
  }

  /// Takes one write: a small one joins the pending record (sealed when full), a large one is
  /// encrypted at once after the pending record (so the order of bytes is the order of writes).
  private func encrypt(context: ChannelHandlerContext, _ plaintext: ByteBuffer, promise: EventLoopPromise<Void>?) {
    guard let connection else {
      promise?.fail(TLSError.connectionClosed)
      return
    }
    if plaintext.readableBytes >= Self.coalescingLimit {
      guard seal(context: context) else {
        promise?.fail(TLSError.connectionClosed)
        return
      }
      do {
        try connection.write(plaintext)
      } catch {
        promise?.fail(error)
        fail(context: context, with: error)
        return
      }
      if let promise { sealedPromises.append(promise) }
    } else {
      var rest = plaintext
      while rest.readableBytes > 0 {
        if pendingPlaintext == nil {
          pendingPlaintext = context.channel.allocator.buffer(capacity: Self.coalescingLimit)
        }
        let room = Self.coalescingLimit - pendingPlaintext!.readableBytes
        var part = rest.readSlice(length: min(room, rest.readableBytes))!
        pendingPlaintext!.writeBuffer(&part)
        if pendingPlaintext!.readableBytes == Self.coalescingLimit, !seal(context: context) {
          promise?.fail(TLSError.connectionClosed)
          return
        }
      }
      if let promise { plaintextPromises.append(promise) }
    }
    if connection.outgoingCount >= Self.outboundCiphertextLimit { passOn(context: context, flush: false) }
  }

  /// Encrypts the pending record (one `SSL_write`); its writes' promises then wait for the
  /// ciphertext to be written. False if encryption failed (the connection is then closing).
  private func seal(context: ChannelHandlerContext) -> Bool {
    guard let connection else { return false }
    if let pending = pendingPlaintext, pending.readableBytes > 0 {
      do {
        try connection.write(pending)
      } catch {
        fail(context: context, with: error)
        return false
      }
      // Cleared in place: the same storage serves the next record.
      pendingPlaintext!.clear()
    }
    sealedPromises.append(contentsOf: plaintextPromises)
    plaintextPromises.removeAll(keepingCapacity: true)
    return true
  }

  /// Seals the pending record and hands all ciphertext to the channel.
  private func passOn(context: ChannelHandlerContext, flush: Bool) {
    guard seal(context: context) else { return }
    writeOutgoing(context: context, flush: flush)
  }

  /// Hands the ciphertext waiting in the connection to the channel, with the promises of the
  /// writes it carries.
  private func writeOutgoing(context: ChannelHandlerContext, flush: Bool) {
    guard let connection else { return }
    let promise: EventLoopPromise<Void>?
    switch sealedPromises.count {
    case 0: promise = nil
    case 1: promise = sealedPromises[0]
    default:
      let combined = context.eventLoop.makePromise(of: Void.self)
      let waiting = sealedPromises
      combined.futureResult.whenComplete { result in for promise in waiting { promise.completeWith(result) } }
      promise = combined
    }
    sealedPromises.removeAll(keepingCapacity: true)
    if let ciphertext = connection.takeOutgoing() {
      context.write(wrapOutboundOut(ciphertext), promise: promise)
    } else if let promise {
      // Only empty writes: they complete in order with the channel's writes.
      context.write(wrapOutboundOut(context.channel.allocator.buffer(capacity: 0)), promise: promise)
    }
    if flush { context.flush() }
  }

  /// Sends whatever OpenSSL has queued for the network (handshake flights, alerts, close_notify,
  /// a KeyUpdate), with any sealed application records ahead of it.
  private func flushOutgoing(context: ChannelHandlerContext) {
    guard let connection, connection.outgoingCount > 0 else { return }
    writeOutgoing(context: context, flush: true)
  }

  // MARK: Failure

  private func fail(context: ChannelHandlerContext, with error: TLSError) {
    switch state {
    case .closed: return
    default: break
    }
    state = .closed
    timeoutTask?.cancel()
    handshakePromise?.fail(error)
    failHeldWrites(error)
    failPendingWrites(error)
    context.fireErrorCaught(error)
    context.close(promise: nil)
  }

  private func failHeldWrites(_ error: Error) {
    let held = heldWrites
    heldWrites = []
    for (_, promise) in held { promise?.fail(error) }
  }

  /// Fails the writes taken but not yet handed to the channel, and drops their bytes.
  private func failPendingWrites(_ error: Error) {
    pendingPlaintext = nil
    let waiting = plaintextPromises + sealedPromises
    plaintextPromises = []
    sealedPromises = []
    _ = connection?.takeOutgoing()
    for promise in waiting { promise.fail(error) }
  }
}

@available(*, unavailable)
extension TLSHandler: Sendable {}

extension TLSHandler.Role {
  var connectionRole: TLSConnection.Role {
    switch self {
    case .client, .apiClient: .client
    case .server, .apiServer: .server
    }
  }
}
