import TealWire

// MARK: - Signed records

/// Signs this node's own records and checks the records other members made about themselves.
///
/// A member's `alive` and `leave` records, with their metadata, are signed by the member with its
/// node key; a relayed record whose signature does not verify is dropped, so no member can speak
/// for another. Accusations (`suspect`, `unreachable`, a `dead` that is not a leave) are made by
/// other members and are not signed; the core bounds what they can do instead (see `SWIMCore`).
///
/// Production: `CertificateRecordAuthenticator` (module TealMembership) signs with the node's
/// ECDSA P-256 key and verifies against each node's certificate from the cluster CA. The core
/// stays free of cryptography: it only calls these methods.
public protocol SWIMRecordAuthenticator: Sendable {
  /// This node's credential (its certificate, DER), carried in push-pulls so that others can
  /// verify its records.
  var credential: [UInt8] { get }
  /// A signature over `content` with this node's key, or nil when signing failed.
  func sign(_ content: [UInt8]) -> [UInt8]?
  /// Checks `credential` for `node` (it must name the node and chain to the cluster CA) and
  /// remembers it for `verify`. Returns whether it was accepted.
  func accept(credential: [UInt8], of node: NodeID) -> Bool
  /// Whether `signature` over `content` was made with the key of `node`'s accepted credential.
  func verify(signature: [UInt8], over content: [UInt8], by node: NodeID) -> Bool
}

extension MemberUpdate {
  /// The bytes a member signs for its own record: a domain tag, then id, status, incarnation,
  /// leftGracefully and metadata. Neither `suspectedBy`, the signature nor the credential is
  /// covered.
  public var signedContent: [UInt8] {
    var writer = WireWriter()
    writer.write("teal.gossip.record.v1")
    writer.write(member.id)
    writer.write(member.status.rawValue)
    writer.writeVarint(member.incarnation)
    writer.write(member.leftGracefully)
    writer.write(member.metadata)
    return writer.bytes
  }

  /// Whether the record is one only the member itself makes (and signs): alive, or its leave.
  public var isSelfMade: Bool { member.status == .alive || (member.status == .dead && member.leftGracefully) }
}
