/// Which subsystem a peer message belongs to. The transport routes by channel and never looks
/// inside the payload.
public enum PeerChannel: UInt8, Sendable, CaseIterable, CustomStringConvertible {
  /// The transport's own messages (the hello that opens every connection). Reserved: callers
  /// cannot send on it.
  case transport = 0
  /// Raft consensus messages.
  case raft = 1
  /// SWIM gossip messages.
  case gossip = 2
  /// Request forwarding and other node-to-node control traffic.
  case control = 3
  /// Test and benchmark traffic.
  case test = 4

  public var description: String {
    switch self {
    case .transport: "transport"
    case .raft: "raft"
    case .gossip: "gossip"
    case .control: "control"
    case .test: "test"
    }
  }
}

/// Why a message could not be handed to the network.
public enum PeerSendError: Error, Equatable, Sendable, CustomStringConvertible {
  /// No connection to the peer and none could be made recently (it is backing off).
  case peerUnavailable(NodeID)
  /// The bounded queue of messages waiting for the peer is full.
  case queueFull(NodeID, limit: Int)
  /// The peer is not part of the configured cluster.
  case unknownPeer(NodeID)
  /// The message is larger than the maximum frame size.
  case messageTooLarge(size: Int, limit: Int)
  /// The transport has been shut down.
  case shutDown
  /// The channel is reserved for the transport itself.
  case reservedChannel(PeerChannel)

  public var description: String {
    switch self {
    case .peerUnavailable(let peer): "peer \(peer) is unavailable"
    case .queueFull(let peer, let limit): "send queue to \(peer) is full (\(limit) messages)"
    case .unknownPeer(let peer): "peer \(peer) is not a configured member"
    case .messageTooLarge(let size, let limit): "message of \(size) bytes exceeds the \(limit)-byte frame limit"
    case .shutDown: "transport is shut down"
    case .reservedChannel(let channel): "channel \(channel) is reserved for the transport"
    }
  }
}

/// What a Raft or gossip shell needs from the network: send a message to a peer. The real
/// implementation is `PeerTransport` (mutually authenticated TLS); tests use an in-memory fake.
///
/// Delivery is at most once and in order per (sender, receiver) connection; a send that returns
/// without throwing has been queued, not necessarily delivered.
public protocol PeerMessageSender: Sendable {
  func send(_ payload: [UInt8], on channel: PeerChannel, to peer: NodeID) async throws(PeerSendError)
}

/// Receives each message with the sender's id as proven by its certificate.
public typealias PeerMessageHandler =
  @Sendable (_ from: NodeID, _ channel: PeerChannel, _ payload: [UInt8]) async -> Void
