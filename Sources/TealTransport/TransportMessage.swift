import TealWire

/// The peer protocol versions this build speaks. Two nodes use the highest version both support,
/// so a rolling upgrade that widens the range never partitions old and new nodes.
public enum PeerProtocol {
  /// Version 2: hello with a version range and a cluster id, the listener's acceptance or
  /// refusal, heartbeats, and fragmented bulk messages.
  public static let supportedVersions: ClosedRange<UInt64> = 2...2

  /// The highest version in both ranges, or nil when they do not overlap.
  public static func negotiate(_ ours: ClosedRange<UInt64>, _ theirs: ClosedRange<UInt64>) -> UInt64? {
    ours.overlaps(theirs) ? min(ours.upperBound, theirs.upperBound) : nil
  }
}

/// Why a listener refused a dialler after its hello.
public enum PeerRefusalReason: Sendable, Equatable, CustomStringConvertible {
  /// The dialler is not a member of the listener's configuration (or was removed).
  case notMember
  /// The dialler belongs to another cluster.
  case clusterMismatch
  /// The two version ranges do not overlap.
  case noCommonProtocolVersion
  /// The hello names another node than the dialler's certificate.
  case identityMismatch
  /// The hello could not be decoded.
  case malformedHello
  /// The dialler already has the maximum number of connections open to the listener.
  case tooManyConnections
  /// The dialler's certificate serial is on the deny list.
  case certificateRevoked
  /// A reason this build does not know (sent by a newer node).
  case other(UInt64)

  var code: UInt64 {
    switch self {
    case .notMember: 1
    case .clusterMismatch: 2
    case .noCommonProtocolVersion: 3
    case .identityMismatch: 4
    case .malformedHello: 5
    case .tooManyConnections: 6
    case .certificateRevoked: 7
    case .other(let code): code
    }
  }

  init(code: UInt64) {
    switch code {
    case 1: self = .notMember
    case 2: self = .clusterMismatch
    case 3: self = .noCommonProtocolVersion
    case 4: self = .identityMismatch
    case 5: self = .malformedHello
    case 6: self = .tooManyConnections
    case 7: self = .certificateRevoked
    default: self = .other(code)
    }
  }

  public var description: String {
    switch self {
    case .notMember: "not a member"
    case .clusterMismatch: "another cluster"
    case .noCommonProtocolVersion: "no common protocol version"
    case .identityMismatch: "hello does not match the certificate"
    case .malformedHello: "malformed hello"
    case .tooManyConnections: "too many connections"
    case .certificateRevoked: "certificate revoked"
    case .other(let code): "reason \(code)"
    }
  }
}

/// A listener's refusal, as the dialler receives it: why, in words, and what the listener speaks.
public struct PeerRefusal: Error, Sendable, Equatable, CustomStringConvertible {
  public var reason: PeerRefusalReason
  /// A sentence naming what was wrong, e.g. "cluster 'b' is not this node's cluster 'a'".
  public var detail: String
  /// The protocol versions the listener speaks.
  public var supportedVersions: ClosedRange<UInt64>
  /// The listener's cluster id.
  public var clusterID: String

  public init(
    reason: PeerRefusalReason, detail: String, supportedVersions: ClosedRange<UInt64>, clusterID: String
  ) {
    self.reason = reason
    self.detail = detail
    self.supportedVersions = supportedVersions
    self.clusterID = clusterID
  }

  public var description: String {
    "refused (\(reason)): \(detail) [listener speaks protocol \(supportedVersions.lowerBound)-\(supportedVersions.upperBound), cluster '\(clusterID)']"
  }
}

/// The dialler's first frame.
struct Hello: Equatable {
  var versions: ClosedRange<UInt64>
  var nodeID: NodeID
  var clusterID: String
  var softwareVersion: String
}

/// The listener's answer to a hello it accepts.
struct Acceptance: Equatable {
  var protocolVersion: UInt64
  var nodeID: NodeID
  var clusterID: String
}

/// Every message on ``PeerChannel/transport``: a varint tag, then the body.
///
/// ```
/// 1 hello     varint minVersion, varint maxVersion, string nodeID, string clusterID, string softwareVersion
/// 2 accepted  varint protocolVersion, string nodeID, string clusterID
/// 3 refused   varint reason, string detail, varint minVersion, varint maxVersion, string clusterID
/// 4 ping      (empty)    dialler -> listener, on an idle link
/// 5 pong      (empty)    listener -> dialler, the answer
/// ```
enum TransportMessage: Equatable, WireCodable {
  case hello(Hello)
  case accepted(Acceptance)
  case refused(PeerRefusal)
  case ping
  case pong

  func encode(to writer: inout WireWriter) {
    switch self {
    case .hello(let hello):
      writer.writeVarint(UInt64(1))
      writer.writeVarint(hello.versions.lowerBound)
      writer.writeVarint(hello.versions.upperBound)
      writer.write(hello.nodeID)
      writer.write(hello.clusterID)
      writer.write(hello.softwareVersion)
    case .accepted(let acceptance):
      writer.writeVarint(UInt64(2))
      writer.writeVarint(acceptance.protocolVersion)
      writer.write(acceptance.nodeID)
      writer.write(acceptance.clusterID)
    case .refused(let refusal):
      writer.writeVarint(UInt64(3))
      writer.writeVarint(refusal.reason.code)
      writer.write(refusal.detail)
      writer.writeVarint(refusal.supportedVersions.lowerBound)
      writer.writeVarint(refusal.supportedVersions.upperBound)
      writer.write(refusal.clusterID)
    case .ping:
      writer.writeVarint(UInt64(4))
    case .pong:
      writer.writeVarint(UInt64(5))
    }
  }

  init(from reader: inout WireReader) throws(WireError) {
    let tag = try reader.readVarint("transport.tag")
    switch tag {
    case 1:
      let versions = try Self.readRange(&reader, "hello.versions")
      self = .hello(
        Hello(
          versions: versions, nodeID: try reader.read(NodeID.self), clusterID: try reader.readString("hello.clusterID"),
          softwareVersion: try reader.readString("hello.softwareVersion")))
    case 2:
      self = .accepted(
        Acceptance(
          protocolVersion: try reader.readVarint("accepted.protocolVersion"), nodeID: try reader.read(NodeID.self),
          clusterID: try reader.readString("accepted.clusterID")))
    case 3:
      let reason = PeerRefusalReason(code: try reader.readVarint("refused.reason"))
      let detail = try reader.readString("refused.detail")
      let versions = try Self.readRange(&reader, "refused.versions")
      self = .refused(
        PeerRefusal(
          reason: reason, detail: detail, supportedVersions: versions,
          clusterID: try reader.readString("refused.clusterID")))
    case 4: self = .ping
    case 5: self = .pong
    default: throw WireError.unknownTag(field: "transport.tag", tag: tag)
    }
  }

  private static func readRange(_ reader: inout WireReader, _ field: String) throws(WireError) -> ClosedRange<UInt64> {
    let lower = try reader.readVarint(field + ".min")
    let upper = try reader.readVarint(field + ".max")
    guard lower <= upper else {
      throw WireError.invalidValue(field: field, reason: "minimum \(lower) above maximum \(upper)")
    }
    return lower...upper
  }
}
