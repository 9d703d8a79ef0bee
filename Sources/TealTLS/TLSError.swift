import TealWire

/// Why a TLS connection between nodes failed.
public enum TLSError: Error, Equatable, Sendable, CustomStringConvertible {
  /// The handshake failed: bad or missing certificate, wrong CA, expired, protocol version, ...
  case handshakeFailed(OpenSSLError)
  /// The handshake did not finish within the configured time.
  case handshakeTimeout(milliseconds: Int64)
  /// The peer's certificate is valid but names another node than the one we dialled.
  case peerIdentityMismatch(expected: NodeID, presented: String)
  /// The peer's certificate names no node, or a node this side does not accept.
  case peerNotAccepted(presented: String)
  /// A record could not be decrypted or the session broke after the handshake.
  case protocolError(OpenSSLError)
  /// Encrypting application data failed.
  case writeFailed(reason: String)
  /// The connection closed without the peer's close_notify (possible truncation).
  case uncleanShutdown
  /// Data was written after the connection was closed or failed.
  case connectionClosed
  /// The handshake passed, but the peer presented no certificate, as API clients do (the
  /// `apiServer` role's ``TLSHandler/handshakeFuture`` fails with this: there is no identity).
  case anonymousPeer

  public var description: String {
    switch self {
    case .handshakeFailed(let error): "TLS handshake failed: \(error)"
    case .handshakeTimeout(let ms): "TLS handshake did not complete within \(ms) ms"
    case .peerIdentityMismatch(let expected, let presented):
      "peer certificate names node '\(presented)', expected '\(expected)'"
    case .peerNotAccepted(let presented): "peer certificate identity '\(presented)' is not accepted"
    case .protocolError(let error): "TLS protocol error: \(error)"
    case .writeFailed(let reason): "TLS write failed: \(reason)"
    case .uncleanShutdown: "connection closed without TLS close_notify"
    case .connectionClosed: "TLS connection is closed"
    case .anonymousPeer: "the TLS peer presented no certificate (an API client)"
    }
  }
}

/// The authenticated identity of the node at the other end of a TLS connection.
public struct PeerIdentity: Sendable, Equatable {
  /// The node id from the peer certificate's `URI:spiffe://teal/node/<id>` SAN.
  public let nodeID: NodeID
  /// The negotiated protocol, e.g. "TLSv1.3".
  public let protocolVersion: String
  /// The peer certificate's serial number, lowercase hex without leading zeros (for deny lists).
  public let serialNumber: String

  public init(nodeID: NodeID, protocolVersion: String, serialNumber: String) {
    self.nodeID = nodeID
    self.protocolVersion = protocolVersion
    self.serialNumber = serialNumber
  }
}
