// The API over TLS (`apiTLS: true`): Hummingbird's HTTP/1.1 child channel behind TealTLS, on
// OpenSSL like every other TLS connection of the node. The server presents the node's certificate
// (from the cluster CA, carrying the node's address); it asks clients for none, since they prove
// themselves with the bearer token. Clients pin the cluster CA (TealClient's `APITLSSecurity`).

import HummingbirdCore
import Logging
import NIOConcurrencyHelpers
import NIOCore
import TealTLS

/// The API server's TLS context, swapped on SIGHUP (``CredentialReloader``): each new connection
/// handshakes with the context current when it arrives; open connections keep theirs.
final class ReloadableTLSContext: Sendable {
  private let box: NIOLockedValueBox<TLSContext>

  init(_ context: TLSContext) { box = NIOLockedValueBox(context) }

  var current: TLSContext { box.withLockedValue { $0 } }

  func replace(with context: TLSContext) { box.withLockedValue { $0 = context } }
}

/// A Hummingbird child channel whose connections first complete a TLS handshake (TealTLS's
/// `apiServer` role), then speak `Base`'s protocol over the plaintext.
struct TLSServerChildChannel<Base: ServerChildChannel>: ServerChildChannel {
  typealias Value = Base.Value

  let base: Base
  let context: ReloadableTLSContext
  /// A client that has not finished its handshake by then is disconnected.
  let handshakeTimeout: TimeAmount

  func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
    channel.eventLoop.makeCompletedFuture {
      try channel.pipeline.syncOperations.addHandler(
        TLSHandler(context: context.current, role: .apiServer, handshakeTimeout: handshakeTimeout))
    }.flatMap { base.setup(channel: channel, logger: logger) }
  }

  func handle(value: Value, logger: Logger) async {
    await base.handle(value: value, logger: logger)
  }
}

extension NodeResources {
  /// The API server's TLS context: the node's certificate and the cluster CA, asking clients for
  /// no certificate.
  static func apiTLSContext(for configuration: NodeConfiguration) throws(NodeStartError) -> TLSContext {
    try apiTLSContext(from: try tlsContext(for: configuration), configuration: configuration)
  }

  /// The API server's context from the node's peer context (the same credentials, read once).
  static func apiTLSContext(
    from peerContext: TLSContext, configuration: NodeConfiguration
  ) throws(NodeStartError) -> TLSContext {
    do { return try TLSContext(configuration: peerContext.configuration.forAPIServer) } catch {
      throw .credentials(file: configuration.certificateDirectory, reason: "API TLS: \(error)")
    }
  }
}
