import NIOConcurrencyHelpers
import NIOCore
import TealTLS
import TealWire

/// Closes a connection on which nothing arrived for `timeout` while a read was wanted and no
/// write was waiting for the socket.
///
/// It sits next to the socket and sees raw bytes. Time spent with reads withheld (this side
/// applying back-pressure: a slow handler, a full receive budget) does not count, so a busy node
/// is never mistaken for a dead one by its own listener. Time with a write waiting for the socket
/// does not count either: then the peer is applying back-pressure (it is alive: each completed
/// write means it acknowledged bytes) or it is black-holed with data outstanding, which the
/// kernel's `TCP_USER_TIMEOUT` (``PeerTransportConfiguration/unacknowledgedDataTimeout``) detects. The dialler always reads, and the
/// listener answers its heartbeats, so on either side an idle black-holed or crashed peer is
/// noticed within `timeout` plus one check interval.
final class LivenessHandler: ChannelDuplexHandler, RemovableChannelHandler {
  typealias InboundIn = ByteBuffer
  typealias InboundOut = ByteBuffer
  typealias OutboundIn = ByteBuffer
  typealias OutboundOut = ByteBuffer

  private let timeout: TimeAmount
  private var lastActivity = NIODeadline.now()
  private var readPending = false
  private var pendingWrites = 0
  private var check: RepeatedTask?

  init(timeout: TimeAmount) { self.timeout = timeout }

  func handlerAdded(context: ChannelHandlerContext) {
    lastActivity = .now()
    let interval = TimeAmount.nanoseconds(max(timeout.nanoseconds / 4, 1_000_000))
    let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
    check = context.eventLoop.scheduleRepeatedTask(initialDelay: interval, delay: interval) { _ in
      let (handler, context) = loopBound.value
      handler.checkActivity(context: context)
    }
  }

  func handlerRemoved(context: ChannelHandlerContext) { check?.cancel() }

  func channelInactive(context: ChannelHandlerContext) {
    check?.cancel()
    context.fireChannelInactive()
  }

  private func checkActivity(context: ChannelHandlerContext) {
    guard readPending, pendingWrites == 0, NIODeadline.now() - lastActivity > timeout else { return }
    check?.cancel()
    context.fireErrorCaught(PeerConnectionError.deadLink(milliseconds: timeout.nanoseconds / 1_000_000))
    context.close(promise: nil)
  }

  func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    lastActivity = .now()
    context.fireChannelRead(data)
  }

  func channelReadComplete(context: ChannelHandlerContext) {
    readPending = false
    context.fireChannelReadComplete()
  }

  func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
    pendingWrites += 1
    let promise = promise ?? context.eventLoop.makePromise()
    let loopBound = NIOLoopBound(self, eventLoop: context.eventLoop)
    promise.futureResult.whenComplete { result in
      let handler = loopBound.value
      handler.pendingWrites -= 1
      if case .success = result { handler.lastActivity = .now() }
    }
    context.write(data, promise: promise)
  }

  func read(context: ChannelHandlerContext) {
    if !readPending {
      readPending = true
      lastActivity = .now()
    }
    context.read()
  }
}

/// Handles the transport's own frames in the pipeline, on the event loop, so that they never
/// wait behind application frames.
///
/// - Dialler: swallows everything the listener sends. The acceptance or refusal completes
///   ``acceptance``; after acceptance it sends a ping every `heartbeatInterval` (answered by a
///   pong, which keeps ``LivenessHandler`` content on both sides).
/// - Listener: answers pings with pongs; passes the hello and application frames on.
/// - Both: the hello (listener) or the acceptance (dialler) must come within `helloTimeout` of
///   the TLS handshake's end (of the connection's start without TLS), or the connection closes.
final class TransportControlHandler: ChannelDuplexHandler, RemovableChannelHandler {
  typealias InboundIn = PeerFrame
  typealias InboundOut = PeerFrame
  typealias OutboundIn = ByteBuffer
  typealias OutboundOut = ByteBuffer

  enum Role {
    case dialler
    case listener
  }

  private let role: Role
  private let helloTimeout: TimeAmount
  private let heartbeatInterval: TimeAmount
  private let startsWithTLS: Bool
  private var acceptancePromise: EventLoopPromise<Acceptance>?
  private var helloTimer: Scheduled<Void>?
  private var heartbeat: RepeatedTask?
  private var sawFirstFrame = false

  init(role: Role, helloTimeout: TimeAmount, heartbeatInterval: TimeAmount, startsWithTLS: Bool) {
    self.role = role
    self.helloTimeout = helloTimeout
    self.heartbeatInterval = heartbeatInterval
    self.startsWithTLS = startsWithTLS
  }

  /// The listener's answer to our hello (dialler only). Fails with ``PeerRefusal``, or with
  /// ``PeerConnectionError`` when the connection closes or times out first.
  var acceptance: EventLoopFuture<Acceptance> {
    guard let acceptancePromise else { preconditionFailure("acceptance read before handlerAdded") }
    return acceptancePromise.futureResult
  }

  func handlerAdded(context: ChannelHandlerContext) {
    acceptancePromise = context.eventLoop.makePromise(of: Acceptance.self)
    if !startsWithTLS, context.channel.isActive { armHelloTimer(context: context) }
  }

  func handlerRemoved(context: ChannelHandlerContext) {
    stopTimers()
    acceptancePromise?.fail(PeerConnectionError.closedBeforeAcceptance)
  }

  func channelActive(context: ChannelHandlerContext) {
    if !startsWithTLS { armHelloTimer(context: context) }
    context.fireChannelActive()
  }

  func channelInactive(context: ChannelHandlerContext) {
    stopTimers()
    acceptancePromise?.fail(PeerConnectionError.closedBeforeAcceptance)
    context.fireChannelInactive()
  }

  func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
    if event is PeerIdentity { armHelloTimer(context: context) }
    context.fireUserInboundEventTriggered(event)
  }

  private func armHelloTimer(context: ChannelHandlerContext) {
    guard helloTimer == nil, !sawFirstFrame else { return }
    let timeout = helloTimeout
    let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
    helloTimer = context.eventLoop.scheduleTask(in: timeout) {
      let (handler, context) = loopBound.value
      guard !handler.sawFirstFrame else { return }
      let error = PeerConnectionError.helloTimeout(milliseconds: timeout.nanoseconds / 1_000_000)
      handler.acceptancePromise?.fail(error)
      context.fireErrorCaught(error)
      context.close(promise: nil)
    }
  }

  private func stopTimers() {
    helloTimer?.cancel()
    heartbeat?.cancel()
  }

  func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    let frame = unwrapInboundIn(data)
    if !sawFirstFrame {
      sawFirstFrame = true
      helloTimer?.cancel()
    }
    switch role {
    case .listener:
      if frame.channel == .transport, frame.payload.readableBytes == 1,
        case .ping? = try? TransportMessage(wireBytes: Array(frame.payload.readableBytesView))
      {
        let pong = Frame.encode(channel: .transport, payload: TransportMessage.pong.wireBytes())
        context.writeAndFlush(wrapOutboundOut(pong), promise: nil)
        return
      }
      context.fireChannelRead(data)
    case .dialler:
      guard frame.channel == .transport else {
        fail(context: context, PeerConnectionError.unexpectedFrame(frame.channel))
        return
      }
      switch try? TransportMessage(wireBytes: Array(frame.payload.readableBytesView)) {
      case .accepted(let acceptance):
        acceptancePromise?.succeed(acceptance)
        startHeartbeat(context: context)
      case .refused(let refusal):
        acceptancePromise?.fail(refusal)
        context.close(promise: nil)
      case .pong:
        break
      default:
        fail(context: context, PeerConnectionError.unexpectedFrame(frame.channel))
      }
    }
  }

  private func startHeartbeat(context: ChannelHandlerContext) {
    guard heartbeat == nil else { return }
    let loopBound = NIOLoopBound(context, eventLoop: context.eventLoop)
    let ping = Frame.encode(channel: .transport, payload: TransportMessage.ping.wireBytes())
    heartbeat = context.eventLoop.scheduleRepeatedTask(initialDelay: heartbeatInterval, delay: heartbeatInterval) {
      _ in
      let context = loopBound.value
      context.writeAndFlush(NIOAny(ping), promise: nil)
    }
  }

  private func fail(context: ChannelHandlerContext, _ error: PeerConnectionError) {
    acceptancePromise?.fail(error)
    context.fireErrorCaught(error)
    context.close(promise: nil)
  }
}

/// Joins the fragments of a bulk message into one frame (at most `maximumPayload` bytes) and
/// passes whole frames through, including those that arrive between two fragments.
struct FragmentAssembler {
  let maximumPayload: Int
  private var pending: (channel: PeerChannel, payload: ByteBuffer)?

  init(maximumPayload: Int) { self.maximumPayload = maximumPayload }

  /// The complete frame `frame` finishes, if any.
  mutating func receive(_ frame: PeerFrame) throws(PeerConnectionError) -> PeerFrame? {
    switch frame.fragment {
    case .whole:
      return frame
    case .more, .last:
      guard frame.channel != .transport else { throw .unexpectedFrame(.transport) }
      var payload = frame.payload
      if var current = pending {
        guard current.channel == frame.channel else { throw .unexpectedFrame(frame.channel) }
        guard current.payload.readableBytes + payload.readableBytes <= maximumPayload else {
          throw .fragmentedMessageTooLarge(limit: maximumPayload)
        }
        pending = nil  // keep the buffer uniquely referenced while appending
        current.payload.writeBuffer(&payload)
        if frame.fragment == .last { return PeerFrame(channel: current.channel, payload: current.payload) }
        pending = current
      } else {
        if frame.fragment == .last { return PeerFrame(channel: frame.channel, payload: payload) }
        var copy = ByteBufferAllocator().buffer(capacity: min(maximumPayload, payload.readableBytes * 4))
        copy.writeBuffer(&payload)
        pending = (frame.channel, copy)
      }
      return nil
    }
  }
}

/// The listener's receive side between the frame decoder and the async channel: joins fragments
/// and bounds, in bytes, what waits for the delivery loop.
///
/// Reads are withheld from the socket while more than `byteLimit` bytes of frames have been
/// passed on and not yet released by the delivery loop (``release(_:)``). So at most `byteLimit`
/// plus one frame waits for delivery, plus one partly received frame in the decoder and one
/// partly joined message here.
final class ReceiveBudgetHandler: ChannelDuplexHandler, RemovableChannelHandler {
  typealias InboundIn = PeerFrame
  typealias InboundOut = PeerFrame
  typealias OutboundIn = ByteBuffer
  typealias OutboundOut = ByteBuffer

  private let byteLimit: Int
  private var assembler: FragmentAssembler
  private var outstanding = 0
  private var readWithheld = false
  private var context: ChannelHandlerContext?
  /// The most bytes ever outstanding, for tests; shared with the transport.
  private let peak: NIOLockedValueBox<Int>

  init(byteLimit: Int, maximumPayload: Int, peak: NIOLockedValueBox<Int>) {
    self.byteLimit = byteLimit
    self.assembler = FragmentAssembler(maximumPayload: maximumPayload)
    self.peak = peak
  }

  func handlerAdded(context: ChannelHandlerContext) { self.context = context }
  func handlerRemoved(context: ChannelHandlerContext) { self.context = nil }

  func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    let complete: PeerFrame?
    do {
      complete = try assembler.receive(unwrapInboundIn(data))
    } catch {
      context.fireErrorCaught(error)
      context.close(promise: nil)
      return
    }
    guard let complete else { return }
    outstanding += complete.payload.readableBytes
    let now = outstanding
    peak.withLockedValue { $0 = max($0, now) }
    context.fireChannelRead(wrapInboundOut(complete))
  }

  func read(context: ChannelHandlerContext) {
    if outstanding >= byteLimit {
      readWithheld = true
    } else {
      context.read()
    }
  }

  /// The delivery loop handed `bytes` of payload to the application. Call on the event loop.
  func release(_ bytes: Int) {
    outstanding -= bytes
    precondition(outstanding >= 0, "receive budget released more bytes than it passed on")
    if readWithheld, outstanding < byteLimit, let context {
      readWithheld = false
      context.read()
    }
  }
}

@available(*, unavailable)
extension LivenessHandler: Sendable {}
@available(*, unavailable)
extension TransportControlHandler: Sendable {}
@available(*, unavailable)
extension ReceiveBudgetHandler: Sendable {}
