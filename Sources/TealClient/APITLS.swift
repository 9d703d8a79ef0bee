import Foundation
import NIOCore
import TealTLS

/// TLS to the API with TealTLS (OpenSSL), pinning the cluster CA: a node is trusted only if its
/// certificate chains to `ca.pem` of the cluster, is a node certificate (not a CA) and names the
/// endpoint's host as an `IP:` or `DNS:` subject alternative name. The client presents no
/// certificate; it authenticates with the bearer token.
public struct APITLSSecurity: ClientConnectionSecurity {
  let context: TLSContext
  /// A node that has not finished the handshake by then is given up on (the attempt was not sent).
  public var handshakeTimeout: TimeAmount

  /// Trusts the certificates of `caPEM` (the cluster CA) and nothing else.
  public init(caPEM: [UInt8], source: String = "CA certificate", handshakeTimeout: TimeAmount = .seconds(5)) throws {
    let roots = try TLSCertificate.parseAll(pem: caPEM, source: source)
    context = try TLSContext(configuration: TLSConfiguration(trustRootsOnly: roots))
    self.handshakeTimeout = handshakeTimeout
  }

  /// Trusts the CA certificate file at `path` (e.g. `<cluster dir>/certs/ca.pem`).
  public init(caFile path: String, handshakeTimeout: TimeAmount = .seconds(5)) throws {
    guard let data = FileManager.default.contents(atPath: path) else {
      throw TealClientError.invalidEndpoint("https", reason: "cannot read the cluster CA certificate \(path)")
    }
    try self.init(caPEM: Array(data), source: path, handshakeTimeout: handshakeTimeout)
  }

  public var scheme: Endpoint.Scheme { .https }

  public func secure(_ channel: any Channel, endpoint: Endpoint) throws {
    let tls = TLSHandler(context: context, role: .apiClient(host: endpoint.host), handshakeTimeout: handshakeTimeout)
    try channel.pipeline.syncOperations.addHandler(tls)
    try channel.pipeline.syncOperations.addHandler(HandshakeReader(handshake: tls.handshakeFuture))
  }

  public func established(_ channel: any Channel) -> EventLoopFuture<Void> {
    channel.pipeline.handler(type: TLSHandler.self).flatMap { handler in
      handler.handshakeFuture.map { _ in () }
    }
  }
}

/// The client's connections read only when asked (`autoRead` off); during the handshake this asks
/// for every read the handshake needs, then leaves the pipeline.
final class HandshakeReader: ChannelInboundHandler, RemovableChannelHandler {
  typealias InboundIn = ByteBuffer

  private let handshake: EventLoopFuture<PeerIdentity>
  private var done = false

  init(handshake: EventLoopFuture<PeerIdentity>) { self.handshake = handshake }

  func handlerAdded(context: ChannelHandlerContext) {
    let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
    handshake.whenComplete { _ in
      let (reader, context) = bound.value
      reader.done = true
      context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }
    if context.channel.isActive { context.read() }
  }

  func channelActive(context: ChannelHandlerContext) {
    context.read()
    context.fireChannelActive()
  }

  func channelReadComplete(context: ChannelHandlerContext) {
    if !done { context.read() }
    context.fireChannelReadComplete()
  }
}

@available(*, unavailable)
extension HandshakeReader: Sendable {}
