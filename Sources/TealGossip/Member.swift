import TealWire

// MARK: - Status

/// How one member sees another. The order of the raw values is the order of precedence at equal
/// incarnation: a later status wins over an earlier one, and only a higher incarnation can bring
/// a member back to `alive`.
public enum MemberStatus: UInt8, Sendable, Hashable, CaseIterable, CustomStringConvertible {
  /// Answers probes (directly or through others).
  case alive = 0
  /// Failed a probe; it has until the suspicion timeout to refute by raising its incarnation.
  case suspect = 1
  /// The suspicion timed out and the settings hold the member here until `confirmDead` is called
  /// (only when `SWIMSettings.holdUnreachableUntilConfirmed` is set).
  case unreachable = 2
  /// Declared failed, or left gracefully. Gossip only reports this; it never changes the Raft
  /// configuration.
  case dead = 3

  public var description: String {
    switch self {
    case .alive: "alive"
    case .suspect: "suspect"
    case .unreachable: "unreachable"
    case .dead: "dead"
    }
  }
}

/// The Raft role a member last announced about itself. Advisory: Raft decides who leads, gossip
/// only repeats what each node said.
public enum RaftRoleHint: UInt8, Sendable, Hashable, CaseIterable, CustomStringConvertible {
  case unknown = 0
  case follower = 1
  case candidate = 2
  case leader = 3
  case learner = 4

  public var description: String {
    switch self {
    case .unknown: "unknown"
    case .follower: "follower"
    case .candidate: "candidate"
    case .leader: "leader"
    case .learner: "learner"
    }
  }
}

// MARK: - Metadata

/// A host name or IP address and a TCP port.
public struct HostPort: Sendable, Hashable, CustomStringConvertible {
  public var host: String
  public var port: UInt16

  public init(host: String, port: UInt16) {
    self.host = host
    self.port = port
  }

  public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
}

/// What a member advertises about itself. Only the member itself changes it, and every change
/// raises its incarnation so that the newest metadata wins everywhere.
public struct MemberMetadata: Sendable, Hashable {
  /// Where the peer transport (Raft, gossip) listens.
  public var peerAddress: HostPort
  /// The port of the HTTP API, on the peer address's host.
  public var apiPort: UInt16
  /// The load balancer's listener ports on this node.
  public var listenerPorts: [UInt16]
  /// The software version the node runs.
  public var version: String
  /// The Raft role the node last reported, with the term in which it held it.
  public var raftRole: RaftRoleHint
  public var raftTerm: UInt64

  public init(
    peerAddress: HostPort, apiPort: UInt16, listenerPorts: [UInt16] = [], version: String,
    raftRole: RaftRoleHint = .unknown, raftTerm: UInt64 = 0
  ) {
    self.peerAddress = peerAddress
    self.apiPort = apiPort
    self.listenerPorts = listenerPorts
    self.version = version
    self.raftRole = raftRole
    self.raftTerm = raftTerm
  }
}

// MARK: - Member

/// One member as some node sees it.
public struct Member: Sendable, Hashable, CustomStringConvertible {
  public let id: NodeID
  public var status: MemberStatus
  /// Raised only by the member itself (to refute a suspicion or announce new metadata).
  public var incarnation: UInt64
  public var metadata: MemberMetadata
  /// True when the member is dead because it announced its departure.
  public var leftGracefully: Bool

  public init(
    id: NodeID, status: MemberStatus, incarnation: UInt64, metadata: MemberMetadata, leftGracefully: Bool = false
  ) {
    self.id = id
    self.status = status
    self.incarnation = incarnation
    self.metadata = metadata
    self.leftGracefully = leftGracefully
  }

  public var description: String { "\(id)(\(status)#\(incarnation))" }

  /// Whether a record `(status, incarnation)` carries newer news than this one: a higher
  /// incarnation, or the same incarnation with a status of higher precedence.
  public func isSuperseded(byStatus newStatus: MemberStatus, incarnation newIncarnation: UInt64) -> Bool {
    if newIncarnation != incarnation { return newIncarnation > incarnation }
    return newStatus.rawValue > status.rawValue
  }
}

/// One piece of gossip: a member's record, with who suspects it when the record is a suspicion
/// raised independently by that node (Lifeguard counts distinct suspecters as confirmations).
///
/// `signature` is the member's own signature over `signedContent` (self-made records only, and
/// only when the cluster signs records; empty otherwise). `credential` is the member's
/// certificate, carried only in push-pulls (empty otherwise).
public struct MemberUpdate: Sendable, Hashable, CustomStringConvertible {
  public var member: Member
  public var suspectedBy: NodeID?
  public var signature: [UInt8]
  public var credential: [UInt8]

  public init(member: Member, suspectedBy: NodeID? = nil, signature: [UInt8] = [], credential: [UInt8] = []) {
    self.member = member
    self.suspectedBy = suspectedBy
    self.signature = signature
    self.credential = credential
  }

  public var description: String {
    suspectedBy.map { "\(member) by \($0)" } ?? member.description
  }
}
