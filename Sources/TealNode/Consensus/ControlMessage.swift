// The node-to-node control channel's messages: a follower asks the leader to propose an entry and
// hears how it ended.

import TealWire

/// One message on `PeerChannel.control`. Versioned by its first byte; a message of a version or
/// kind this node does not know is dropped (the sender times out and retries elsewhere).
enum ControlMessage: Sendable, Hashable {
  /// "Propose this encoded `ClusterEntry` and tell me the result." Sent by any node to the node it
  /// believes leads.
  case proposeRequest(id: UInt64, entry: [UInt8])
  /// The answer to a ``proposeRequest(id:entry:)``.
  case proposeResponse(id: UInt64, outcome: ForwardOutcome)
  /// A node's cumulative balancer counters of the green revisions whose deployments watch alarms,
  /// sent to the leader every ``TrafficReporter/period`` (JSON of `[TrafficSample]`).
  case trafficReport(samples: [UInt8])

  static let version: UInt8 = 1
  /// Largest control message accepted (an entry plus framing); RaftNode refuses larger commands anyway.
  static let maximumBytes = 8 << 20

  func encoded() -> [UInt8] {
    var writer = WireWriter()
    writer.write(Self.version)
    switch self {
    case .proposeRequest(let id, let entry):
      writer.write(UInt8(1))
      writer.writeVarint(id)
      writer.write(entry)
    case .proposeResponse(let id, let outcome):
      writer.write(UInt8(2))
      writer.writeVarint(id)
      outcome.encode(to: &writer)
    case .trafficReport(let samples):
      writer.write(UInt8(3))
      writer.write(samples)
    }
    return writer.bytes
  }

  init(decoding bytes: [UInt8]) throws(WireError) {
    var reader = WireReader(bytes, lengthLimit: Self.maximumBytes)
    let version = try reader.readByte("control.version")
    guard version == Self.version else { throw .unknownTag(field: "control.version", tag: UInt64(version)) }
    let kind = try reader.readByte("control.kind")
    switch kind {
    case 1:
      self = .proposeRequest(id: try reader.readVarint("control.id"), entry: try reader.readBytes("control.entry"))
    case 2:
      let id = try reader.readVarint("control.id")
      self = .proposeResponse(id: id, outcome: try ForwardOutcome(from: &reader))
    case 3:
      self = .trafficReport(samples: try reader.readBytes("control.samples"))
    default:
      throw .unknownTag(field: "control.kind", tag: UInt64(kind))
    }
    try reader.expectEnd()
  }
}

/// How a forwarded proposal ended, as the leader saw it.
enum ForwardOutcome: Sendable, Hashable {
  /// Committed and applied at `index` on the leader; `result` is the state machine's answer.
  case applied(index: UInt64, result: [UInt8])
  /// The receiver does not lead (nothing was proposed); `leader` is who it believes leads.
  case notLeader(leader: NodeID?)
  /// Nothing was proposed (the leader was not ready, or is overloaded); retry shortly.
  case retryLater(String)
  /// The proposal may or may not have taken effect (leader lost, timeout). Retry only with the same
  /// idempotency key.
  case outcomeUnknown(String)
  /// Refused for good (too large, the leader is stopping).
  case refused(String)

  func encode(to writer: inout WireWriter) {
    switch self {
    case .applied(let index, let result):
      writer.write(UInt8(1))
      writer.writeVarint(index)
      writer.write(result)
    case .notLeader(let leader):
      writer.write(UInt8(2))
      writer.write(leader?.rawValue)
    case .retryLater(let reason):
      writer.write(UInt8(3))
      writer.write(reason)
    case .outcomeUnknown(let reason):
      writer.write(UInt8(4))
      writer.write(reason)
    case .refused(let reason):
      writer.write(UInt8(5))
      writer.write(reason)
    }
  }

  init(from reader: inout WireReader) throws(WireError) {
    let kind = try reader.readByte("outcome.kind")
    switch kind {
    case 1:
      self = .applied(index: try reader.readVarint("outcome.index"), result: try reader.readBytes("outcome.result"))
    case 2:
      let text = try reader.readOptionalString("outcome.leader")
      self = .notLeader(leader: text.flatMap { try? NodeID(validating: $0) })
    case 3: self = .retryLater(try reader.readString("outcome.reason"))
    case 4: self = .outcomeUnknown(try reader.readString("outcome.reason"))
    case 5: self = .refused(try reader.readString("outcome.reason"))
    default: throw .unknownTag(field: "outcome.kind", tag: UInt64(kind))
    }
  }
}
