// Keep-alive connections from the load balancer to its targets, pooled per event loop so a client
// connection and its upstream connection always share one thread and never hop.

import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix

// MARK: - Upstream connection

/// The last handler of an upstream (load balancer → target) channel. It forwards response parts to
/// the client-side handler that currently leases it and lets that handler hold reads (backpressure
/// towards the target when the client cannot keep up).
///
/// Invariant: used only on its channel's event loop; `owner` is set exactly while leased.
final class UpstreamConnection: ChannelDuplexHandler, RemovableChannelHandler {
  typealias InboundIn = HTTPClientResponsePart
  typealias OutboundIn = HTTPClientRequestPart
  typealias OutboundOut = HTTPClientRequestPart

  let target: TargetAddress
  private(set) var context: ChannelHandlerContext?
  /// The client-side handler this connection serves right now; nil while idle in the pool.
  var owner: ProxyServerHandler?
  /// The pool to leave when the connection closes.
  var pool: UpstreamPool?
  private var readsPaused = false
  private var readPending = false
  /// When the connection opened, and when it last went back to the pool.
  let openedAt = NIODeadline.now()
  var idleSince = NIODeadline.now()

  init(target: TargetAddress) {
    self.target = target
  }

  var isActive: Bool { self.context?.channel.isActive ?? false }

  /// Whether the kernel still has the connection established (Linux: `TCP_INFO`; elsewhere
  /// `isActive`). A target that closed or reset it a moment ago, because it was killed or closed an
  /// idle connection, shows here before this loop has read the FIN or the RST, while `isActive` is
  /// still true.
  var isEstablished: Bool {
    guard let channel = self.context?.channel, channel.isActive else { return false }
    #if os(Linux)
      guard let provider = channel as? any SocketOptionProvider else { return true }
      var state: UInt8?
      // On the channel's event loop the option is read at once and the future is already
      // complete, so this callback runs before `whenSuccess` returns.
      provider.getTCPInfo().assumeIsolated().whenSuccess { state = $0.tcpi_state }
      return state.map { $0 == Self.tcpEstablished } ?? true
    #else
      return true
    #endif
  }

  /// `TCP_ESTABLISHED` of Linux's `tcp_states.h`.
  static let tcpEstablished: UInt8 = 1
  var isWritable: Bool { self.context?.channel.isWritable ?? false }

  func handlerAdded(context: ChannelHandlerContext) {
    self.context = context
  }

  func handlerRemoved(context: ChannelHandlerContext) {
    self.context = nil
  }

  func write(_ part: HTTPClientRequestPart) {
    self.context?.write(self.wrapOutboundOut(part), promise: nil)
  }

  func flush() {
    self.context?.flush()
  }

  func close() {
    self.owner = nil
    self.context?.close(promise: nil)
  }

  /// Stops or restarts reading from the target.
  func setReadsPaused(_ paused: Bool) {
    self.readsPaused = paused
    if !paused, self.readPending, let context = self.context {
      self.readPending = false
      context.read()
    }
  }

  func read(context: ChannelHandlerContext) {
    if self.readsPaused {
      self.readPending = true
    } else {
      context.read()
    }
  }

  func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    let part = self.unwrapInboundIn(data)
    guard let owner = self.owner else {
      // A target must not talk while no request is outstanding; such a connection is not reusable.
      context.close(promise: nil)
      return
    }
    owner.upstreamRead(part, from: self)
  }

  func channelReadComplete(context: ChannelHandlerContext) {
    self.owner?.upstreamReadComplete()
  }

  func channelWritabilityChanged(context: ChannelHandlerContext) {
    self.owner?.upstreamWritabilityChanged(from: self)
    context.fireChannelWritabilityChanged()
  }

  func channelInactive(context: ChannelHandlerContext) {
    self.pool?.remove(self)
    let owner = self.owner
    self.owner = nil
    owner?.upstreamClosed(self)
  }

  func errorCaught(context: ChannelHandlerContext, error: Error) {
    context.close(promise: nil)
  }
}

// MARK: - Connecting

extension ClientBootstrap {
  /// Connects to `target`. A host that is an IP literal (the usual case: task addresses) is connected
  /// to directly; only a host name goes through NIO's resolver, which runs `getaddrinfo` on a
  /// dispatch thread and hops back, adding two thread hand-offs to every new connection.
  func connect(to target: TargetAddress) -> EventLoopFuture<any Channel> {
    if let address = try? SocketAddress(ipAddress: target.host, port: target.port) {
      return self.connect(to: address)
    }
    return self.connect(host: target.host, port: target.port)
  }
}

// MARK: - Pool

/// Idle keep-alive connections to targets, for one event loop.
///
/// Invariants: used only on `eventLoop`; every pooled connection has no owner; a connection that
/// is closed, half-closed by the target (NIO closes the channel on the target's FIN), idle longer
/// than `idleTimeout` or older than `maxAge` is never handed out. A sweep every `idleTimeout` closes
/// expired idle connections, so the balancer, not the target, ends idle connections.
final class UpstreamPool {
  let eventLoop: any EventLoop
  private let maxIdlePerTarget: Int
  private let connectTimeout: TimeAmount
  private let idleTimeout: TimeAmount
  private let maxAge: TimeAmount
  private var idle: [TargetAddress: [UpstreamConnection]] = [:]
  private var sweep: Scheduled<Void>?

  init(
    eventLoop: any EventLoop, maxIdlePerTarget: Int, connectTimeout: TimeAmount, idleTimeout: TimeAmount,
    maxAge: TimeAmount
  ) {
    self.eventLoop = eventLoop
    self.maxIdlePerTarget = maxIdlePerTarget
    self.connectTimeout = connectTimeout
    self.idleTimeout = idleTimeout
    self.maxAge = maxAge
  }

  /// An idle connection to `target` that is open and not expired, if there is one. The most
  /// recently used one is taken (it is the least likely to be closed by the target). For a request
  /// that cannot be sent again (`checkEstablished`: not idempotent, or with a body) the kernel must
  /// also still have it established, so that a connection its target closed or reset a moment ago
  /// is not used before this loop has read that.
  func take(_ target: TargetAddress, checkEstablished: Bool = false) -> UpstreamConnection? {
    let now = NIODeadline.now()
    while let connection = self.idle[target]?.popLast() {
      if connection.isActive, !self.isExpired(connection, now: now), !checkEstablished || connection.isEstablished {
        return connection
      }
      connection.close()
    }
    return nil
  }

  private func isExpired(_ connection: UpstreamConnection, now: NIODeadline) -> Bool {
    now - connection.idleSince >= self.idleTimeout || now - connection.openedAt >= self.maxAge
  }

  private func armSweep() {
    guard self.sweep == nil else { return }
    self.sweep = self.eventLoop.assumeIsolated().scheduleTask(in: self.idleTimeout) {
      self.sweep = nil
      let now = NIODeadline.now()
      for (target, connections) in self.idle {
        let (expired, kept) = (
          connections.filter { self.isExpired($0, now: now) }, connections.filter { !self.isExpired($0, now: now) }
        )
        self.idle[target] = kept.isEmpty ? nil : kept
        for connection in expired { connection.close() }
      }
      if !self.idle.isEmpty { self.armSweep() }
    }
  }

  /// Returns a connection after a complete exchange; closes it if the pool for its target is full.
  func release(_ connection: UpstreamConnection) {
    connection.owner = nil
    connection.setReadsPaused(false)
    let now = NIODeadline.now()
    guard connection.isActive, now - connection.openedAt < self.maxAge,
      self.idle[connection.target, default: []].count < self.maxIdlePerTarget
    else {
      connection.close()
      return
    }
    connection.idleSince = now
    self.idle[connection.target, default: []].append(connection)
    self.armSweep()
  }

  func remove(_ connection: UpstreamConnection) {
    self.idle[connection.target]?.removeAll { $0 === connection }
  }

  /// Opens a new connection to `target` on this pool's event loop; pass the channel to `adopt`.
  func connect(_ target: TargetAddress) -> EventLoopFuture<any Channel> {
    ClientBootstrap(group: self.eventLoop)
      .connectTimeout(self.connectTimeout)
      .channelOption(.socketOption(.tcp_nodelay), value: 1)
      .channelInitializer { channel in
        channel.eventLoop.makeCompletedFuture {
          // Forwarded heads come from llhttp plus validated values: no per-message validation.
          try channel.pipeline.syncOperations.addHTTPClientHandlers(enableOutboundHeaderValidation: false)
          try channel.pipeline.syncOperations.addHandler(UpstreamConnection(target: target))
        }
      }
      .connect(to: target)
  }

  /// The connection handler of a channel opened by `connect`. Must be called on the pool's loop.
  func adopt(_ channel: any Channel) throws -> UpstreamConnection {
    let connection = try channel.pipeline.syncOperations.handler(type: UpstreamConnection.self)
    connection.pool = self
    return connection
  }

  /// Closes every idle connection (shutdown).
  func closeAll() {
    self.sweep?.cancel()
    self.sweep = nil
    let all = self.idle.values.flatMap { $0 }
    self.idle = [:]
    for connection in all { connection.close() }
  }

  /// Closes the idle connections to `target` (deregistration).
  func closeIdle(to target: TargetAddress) {
    let connections = self.idle.removeValue(forKey: target) ?? []
    for connection in connections { connection.close() }
  }

  /// Closes idle connections to targets that are no longer routed.
  func closeIdle(except keep: Set<TargetAddress>) {
    for (target, connections) in self.idle where !keep.contains(target) {
      self.idle[target] = nil
      for connection in connections { connection.close() }
    }
  }
}

/// One ``UpstreamPool`` per event loop, created on first use on that loop.
final class UpstreamPools: Sendable {
  private let pools = NIOLockedValueBox<[ObjectIdentifier: NIOLoopBound<UpstreamPool>]>([:])
  private let maxIdlePerTarget: Int
  private let connectTimeout: TimeAmount
  private let idleTimeout: TimeAmount
  private let maxAge: TimeAmount

  init(maxIdlePerTarget: Int, connectTimeout: TimeAmount, idleTimeout: TimeAmount, maxAge: TimeAmount) {
    self.maxIdlePerTarget = maxIdlePerTarget
    self.connectTimeout = connectTimeout
    self.idleTimeout = idleTimeout
    self.maxAge = maxAge
  }

  /// The pool of `eventLoop`. Must be called on that loop.
  func pool(on eventLoop: any EventLoop) -> UpstreamPool {
    let key = ObjectIdentifier(eventLoop)
    return self.pools.withLockedValue { pools in
      if let bound = pools[key] { return bound.value }
      let pool = UpstreamPool(
        eventLoop: eventLoop, maxIdlePerTarget: self.maxIdlePerTarget, connectTimeout: self.connectTimeout,
        idleTimeout: self.idleTimeout, maxAge: self.maxAge)
      pools[key] = NIOLoopBound(pool, eventLoop: eventLoop)
      return pool
    }
  }

  /// Runs `body` on every pool, on its own loop.
  func forEach(_ body: @escaping @Sendable (UpstreamPool) -> Void) async {
    let bounds = self.pools.withLockedValue { Array($0.values) }
    for bound in bounds {
      try? await bound.eventLoop.submit { body(bound.value) }.get()
    }
  }
}
