import TealWire

// MARK: - Messages

/// A message between two SWIM members, sent on `PeerChannel.gossip`. The sender's identity is not
/// in the message: the transport proves it with the sender's certificate.
public enum SWIMMessage: Sendable, Hashable {
  /// A direct probe; the receiver answers `ack` with the same sequence number.
  case ping(sequence: UInt64, updates: [MemberUpdate])
  /// Ask the receiver to probe `target` on the sender's behalf (indirect probe). The receiver
  /// answers `ack` if the target answers it in time and `nack` otherwise.
  case pingRequest(sequence: UInt64, target: NodeID, updates: [MemberUpdate])
  /// `target` answered the probe with this sequence number.
  case ack(sequence: UInt64, target: NodeID, updates: [MemberUpdate])
  /// Lifeguard: the indirect prober is alive but `target` did not answer it in time.
  case nack(sequence: UInt64, target: NodeID, updates: [MemberUpdate])
  /// Updates pushed at once, without waiting for the next probe (refutations, deaths, leaves).
  case gossip(updates: [MemberUpdate])
  /// Anti-entropy: the sender's whole member list. A request (`isResponse == false`) is answered
  /// with the receiver's list. `isJoin` marks the first exchange of a joining node.
  case pushPull(isResponse: Bool, isJoin: Bool, members: [MemberUpdate])

  /// The updates the message carries, piggybacked or in full.
  public var updates: [MemberUpdate] {
    switch self {
    case .ping(_, let updates), .pingRequest(_, _, let updates), .ack(_, _, let updates),
      .nack(_, _, let updates), .gossip(let updates):
      updates
    case .pushPull(_, _, let members): members
    }
  }

  var isPushPull: Bool {
    if case .pushPull = self { return true }
    return false
  }

  /// The version byte at the start of every encoded message.
  /// Version 2 added the signature and credential of each update.
  public static let wireVersion: UInt8 = 2
}

// MARK: - Wire encoding

/// Limits that decoding enforces on data from the network.
enum SWIMWireLimits {
  static let hostLength = 255
  static let versionLength = 128
  static let listenerPorts = 1024
  static let updatesPerMessage = 16_384
  static let signatureLength = 256
  static let credentialLength = 16_384
}

extension MemberMetadata: WireCodable {
  public func encode(to writer: inout WireWriter) {
    writer.write(peerAddress.host)
    writer.writeVarint(UInt64(peerAddress.port))
    writer.writeVarint(UInt64(apiPort))
    writer.writeVarint(UInt64(listenerPorts.count))
    for port in listenerPorts { writer.writeVarint(UInt64(port)) }
    writer.write(version)
    writer.write(raftRole.rawValue)
    writer.writeVarint(raftTerm)
  }

  public init(from reader: inout WireReader) throws(WireError) {
    let host = try reader.readString("metadata.peerAddress.host")
    if host.utf8.count > SWIMWireLimits.hostLength {
      throw .lengthTooLarge(
        field: "metadata.peerAddress.host", length: UInt64(host.utf8.count), limit: SWIMWireLimits.hostLength)
    }
    let port = try Self.readPort(&reader, "metadata.peerAddress.port")
    let apiPort = try Self.readPort(&reader, "metadata.apiPort")
    let count = try reader.readCount("metadata.listenerPorts", limit: SWIMWireLimits.listenerPorts)
    var ports: [UInt16] = []
    ports.reserveCapacity(min(count, reader.remaining))
    for _ in 0..<count { ports.append(try Self.readPort(&reader, "metadata.listenerPorts")) }
    let version = try reader.readString("metadata.version")
    if version.utf8.count > SWIMWireLimits.versionLength {
      throw .lengthTooLarge(
        field: "metadata.version", length: UInt64(version.utf8.count), limit: SWIMWireLimits.versionLength)
    }
    let roleByte = try reader.readByte("metadata.raftRole")
    guard let role = RaftRoleHint(rawValue: roleByte) else {
      throw .unknownTag(field: "metadata.raftRole", tag: UInt64(roleByte))
    }
    let term = try reader.readVarint("metadata.raftTerm")
    self.init(
      peerAddress: HostPort(host: host, port: port), apiPort: apiPort, listenerPorts: ports, version: version,
      raftRole: role, raftTerm: term)
  }

  private static func readPort(_ reader: inout WireReader, _ field: String) throws(WireError) -> UInt16 {
    let value = try reader.readVarint(field)
    guard let port = UInt16(exactly: value) else {
      throw .invalidValue(field: field, reason: "port \(value) is above 65535")
    }
    return port
  }
}

extension MemberUpdate: WireCodable {
  public func encode(to writer: inout WireWriter) {
    writer.write(member.id)
    writer.write(member.status.rawValue)
    writer.writeVarint(member.incarnation)
    writer.write(member.leftGracefully)
    writer.write(member.metadata)
    writer.write(suspectedBy != nil)
    if let suspectedBy { writer.write(suspectedBy) }
    writer.write(signature)
    writer.write(credential)
  }

  public init(from reader: inout WireReader) throws(WireError) {
    let id = try reader.read(NodeID.self)
    let statusByte = try reader.readByte("update.status")
    guard let status = MemberStatus(rawValue: statusByte) else {
      throw .unknownTag(field: "update.status", tag: UInt64(statusByte))
    }
    let incarnation = try reader.readVarint("update.incarnation")
    let left = try reader.readBool("update.leftGracefully")
    let metadata = try reader.read(MemberMetadata.self)
    let suspectedBy = try reader.readBool("update.suspectedBy") ? try reader.read(NodeID.self) : nil
    let signature = try reader.readBytes("update.signature")
    if signature.count > SWIMWireLimits.signatureLength {
      throw .lengthTooLarge(
        field: "update.signature", length: UInt64(signature.count), limit: SWIMWireLimits.signatureLength)
    }
    let credential = try reader.readBytes("update.credential")
    if credential.count > SWIMWireLimits.credentialLength {
      throw .lengthTooLarge(
        field: "update.credential", length: UInt64(credential.count), limit: SWIMWireLimits.credentialLength)
    }
    self.init(
      member: Member(id: id, status: status, incarnation: incarnation, metadata: metadata, leftGracefully: left),
      suspectedBy: suspectedBy, signature: signature, credential: credential)
  }
}

extension SWIMMessage: WireCodable {
  private enum Tag: UInt8 {
    case ping = 1
    case pingRequest = 2
    case ack = 3
    case nack = 4
    case gossip = 5
    case pushPull = 6
  }

  public func encode(to writer: inout WireWriter) {
    writer.write(Self.wireVersion)
    switch self {
    case .ping(let sequence, let updates):
      writer.write(Tag.ping.rawValue)
      writer.writeVarint(sequence)
      writer.write(updates)
    case .pingRequest(let sequence, let target, let updates):
      writer.write(Tag.pingRequest.rawValue)
      writer.writeVarint(sequence)
      writer.write(target)
      writer.write(updates)
    case .ack(let sequence, let target, let updates):
      writer.write(Tag.ack.rawValue)
      writer.writeVarint(sequence)
      writer.write(target)
      writer.write(updates)
    case .nack(let sequence, let target, let updates):
      writer.write(Tag.nack.rawValue)
      writer.writeVarint(sequence)
      writer.write(target)
      writer.write(updates)
    case .gossip(let updates):
      writer.write(Tag.gossip.rawValue)
      writer.write(updates)
    case .pushPull(let isResponse, let isJoin, let members):
      writer.write(Tag.pushPull.rawValue)
      writer.write(isResponse)
      writer.write(isJoin)
      writer.write(members)
    }
  }

  public init(from reader: inout WireReader) throws(WireError) {
    let version = try reader.readByte("swim.version")
    guard version == Self.wireVersion else {
      throw .invalidValue(
        field: "swim.version", reason: "version \(version) is not supported (expected \(Self.wireVersion))")
    }
    let tagByte = try reader.readByte("swim.tag")
    guard let tag = Tag(rawValue: tagByte) else { throw .unknownTag(field: "swim.tag", tag: UInt64(tagByte)) }
    switch tag {
    case .ping:
      let sequence = try reader.readVarint("ping.sequence")
      self = .ping(sequence: sequence, updates: try Self.readUpdates(&reader))
    case .pingRequest:
      let sequence = try reader.readVarint("pingRequest.sequence")
      let target = try reader.read(NodeID.self)
      self = .pingRequest(sequence: sequence, target: target, updates: try Self.readUpdates(&reader))
    case .ack:
      let sequence = try reader.readVarint("ack.sequence")
      let target = try reader.read(NodeID.self)
      self = .ack(sequence: sequence, target: target, updates: try Self.readUpdates(&reader))
    case .nack:
      let sequence = try reader.readVarint("nack.sequence")
      let target = try reader.read(NodeID.self)
      self = .nack(sequence: sequence, target: target, updates: try Self.readUpdates(&reader))
    case .gossip:
      self = .gossip(updates: try Self.readUpdates(&reader))
    case .pushPull:
      let isResponse = try reader.readBool("pushPull.isResponse")
      let isJoin = try reader.readBool("pushPull.isJoin")
      self = .pushPull(isResponse: isResponse, isJoin: isJoin, members: try Self.readUpdates(&reader))
    }
  }

  private static func readUpdates(_ reader: inout WireReader) throws(WireError) -> [MemberUpdate] {
    let count = try reader.readCount("updates", limit: SWIMWireLimits.updatesPerMessage)
    var updates: [MemberUpdate] = []
    updates.reserveCapacity(min(count, reader.remaining))
    for _ in 0..<count { updates.append(try MemberUpdate(from: &reader)) }
    return updates
  }
}
