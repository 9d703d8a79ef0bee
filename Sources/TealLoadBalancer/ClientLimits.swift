// Client-side timeouts of one client connection (issue 11, item 11): a slowloris client, an idle
// keep-alive connection and a stalled request body no longer hold a connection open indefinitely.

import NIOCore

/// Client-side timeouts, per listener (immutable while a listener runs).
struct ClientTimeoutSettings: Sendable {
  var headerRead: TimeAmount
  var idle: TimeAmount
  var bodyIdle: TimeAmount
}

/// Sits first in a client connection's pipeline (raw bytes) and enforces:
/// - **idle**: no byte of a new request for `idle` after the connection opened or the previous
///   response ended → the connection is closed (HTTP allows closing an idle keep-alive connection);
/// - **header read**: a request head not complete `headerRead` after its first byte → `408 Request
///   Timeout` with `connection: close` (written raw: the head never reached the HTTP decoder);
/// - **body idle**: no byte of a request body for `bodyIdle` → `onBodyIdle` (the proxy answers 408
///   when no response started, else closes).
///
/// Invariant: used only on its channel's event loop; at most one timer is scheduled, and it acts
/// only when `deadline` has passed.
final class ClientTimeoutHandler: ChannelDuplexHandler, RemovableChannelHandler {
  typealias InboundIn = ByteBuffer
  typealias InboundOut = ByteBuffer
  typealias OutboundIn = ByteBuffer
  typealias OutboundOut = ByteBuffer

  private enum Phase {
    /// Between requests: waiting for the first byte of the next one.
    case awaitingRequest
    /// Bytes of a request head arrived; the head is not complete.
    case readingHead
    /// The head was parsed and the body is still coming.
    case readingBody
    /// The request was read; the response is the proxy's business (response timeout).
    case waitingForResponse
  }

  private let settings: ClientTimeoutSettings
  private var phase = Phase.awaitingRequest
  private var timer: Scheduled<Void>?
  /// When the current phase times out; nil while no client timeout applies.
  private var deadline: NIODeadline?
  private var scheduledAt: NIODeadline?
  private var context: ChannelHandlerContext?
  /// Set by the proxy handler: what to do when a request body stalls.
  var onBodyIdle: (() -> Void)?
  /// Set once the connection's output is closed (a graceful close): every byte read is dropped
  /// until the client closes its side, so the socket never holds unread bytes that would turn the
  /// final close into a reset.
  private var discardingInput = false
  private var lingerTimer: Scheduled<Void>?

  init(settings: ClientTimeoutSettings) {
    self.settings = settings
  }

  func handlerAdded(context: ChannelHandlerContext) {
    self.context = context
    if context.channel.isActive { self.arm(self.settings.idle) }
  }

  func handlerRemoved(context: ChannelHandlerContext) {
    self.lingerTimer?.cancel()
    self.lingerTimer = nil
    self.timer?.cancel()
    self.timer = nil
    self.deadline = nil
    self.context = nil
  }

  func channelActive(context: ChannelHandlerContext) {
    self.arm(self.settings.idle)
    context.fireChannelActive()
  }

  func channelInactive(context: ChannelHandlerContext) {
    self.timer?.cancel()
    self.timer = nil
    self.deadline = nil
    self.lingerTimer?.cancel()
    self.lingerTimer = nil
    context.fireChannelInactive()
  }

  func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    if self.discardingInput { return }
    switch self.phase {
    case .awaitingRequest:
      self.phase = .readingHead
      self.arm(self.settings.headerRead)
    case .readingHead:
      break  // the header-read timeout runs from the first byte, however slowly the rest comes
    case .readingBody:
      self.arm(self.settings.bodyIdle)
    case .waitingForResponse:
      break
    }
    context.fireChannelRead(data)
  }

  // MARK: Phases (called by the proxy handler on the same loop)

  /// Whether the connection is between requests: no byte of a next request has arrived.
  var isBetweenRequests: Bool { self.phase == .awaitingRequest }

  /// Closes the connection without a reset (RFC 9112 §9.6): the output is closed at once (after the
  /// writes already queued), so the client reads an orderly end; bytes the client still sends are
  /// read and dropped until it closes its side (NIO then closes the channel), or until `linger`
  /// passed, when the connection is closed outright.
  func closeGracefully(linger: TimeAmount) {
    guard let context = self.context, !self.discardingInput else { return }
    self.discardingInput = true
    self.cancel()
    context.close(mode: .output, promise: nil)
    // Keep reading (the proxy may have paused reads): the client's close must be seen.
    context.read()
    self.lingerTimer = context.eventLoop.assumeIsolated().scheduleTask(in: linger) {
      self.lingerTimer = nil
      self.context?.close(promise: nil)
    }
  }

  func requestHeadReceived(hasBody: Bool) {
    self.phase = hasBody ? .readingBody : .waitingForResponse
    if hasBody { self.arm(self.settings.bodyIdle) } else { self.cancel() }
  }

  func requestEnded() {
    guard self.phase == .readingBody || self.phase == .readingHead else { return }
    self.phase = .waitingForResponse
    self.cancel()
  }

  /// The response ended and the connection stays open: the idle timeout starts, unless bytes of a
  /// pipelined request are already being read.
  func responseEnded() {
    guard self.phase == .waitingForResponse || self.phase == .readingBody else { return }
    self.phase = .awaitingRequest
    self.arm(self.settings.idle)
  }

  /// Writes a complete `HTTP/1.1 <status>` response with `connection: close` straight to the socket
  /// (no request reached the HTTP handlers), then closes the connection.
  func respondRawAndClose(status: String, body: String) {
    guard let context = self.context else { return }
    self.cancel()
    let response =
      "HTTP/1.1 \(status)\r\ncontent-type: text/plain; charset=utf-8\r\n"
      + "content-length: \(body.utf8.count)\r\nconnection: close\r\n\r\n\(body)"
    context.writeAndFlush(self.wrapOutboundOut(context.channel.allocator.buffer(string: response)))
      .assumeIsolated().whenComplete { _ in context.close(promise: nil) }
  }

  private func cancel() {
    self.deadline = nil
  }

  /// Sets the deadline of the current phase. One scheduled task per connection, not per request:
  /// when it fires early (the deadline moved) it re-arms for the rest, like the response timer.
  private func arm(_ delay: TimeAmount) {
    let deadline = NIODeadline.now() + delay
    self.deadline = deadline
    if let timer = self.timer, let scheduledAt = self.scheduledAt, scheduledAt > deadline {
      timer.cancel()  // a shorter deadline than the one scheduled (idle → header read)
      self.timer = nil
    }
    if self.timer == nil { self.schedule(at: deadline) }
  }

  private func schedule(at deadline: NIODeadline) {
    guard let context = self.context else { return }
    self.scheduledAt = deadline
    self.timer = context.eventLoop.assumeIsolated().scheduleTask(deadline: deadline) {
      self.timer = nil
      guard let context = self.context, let deadline = self.deadline else { return }
      guard NIODeadline.now() >= deadline else {
        self.schedule(at: deadline)
        return
      }
      self.deadline = nil
      switch self.phase {
      case .awaitingRequest:
        context.close(promise: nil)
      case .readingHead:
        self.respondRawAndClose(status: "408 Request Timeout", body: "teal: the request head did not arrive in time\n")
      case .readingBody:
        self.onBodyIdle?()
      case .waitingForResponse:
        break
      }
    }
  }
}
