import TealWire

/// A message between two Raft nodes. `term` is the sender's term, except in a pre-vote request
/// (the term the sender would campaign in) and a granted pre-vote response (the request's term).
public struct RaftMessage: Sendable, Hashable, WireCodable, CustomStringConvertible {
  public var from: NodeID
  public var to: NodeID
  public var term: UInt64
  public var body: Body

  public init(from: NodeID, to: NodeID, term: UInt64, body: Body) {
    self.from = from
    self.to = to
    self.term = term
    self.body = body
  }

  /// What the message says. Cases follow the RPCs of the Raft paper and thesis.
  public enum Body: Sendable, Hashable {
    /// Pre-vote (thesis §9.6): would you vote for me in `term` if I campaigned?
    case preVote(lastIndex: UInt64, lastTerm: UInt64)
    case preVoteResponse(granted: Bool)
    /// RequestVote. `transfer` marks a campaign started by a leadership transfer, which voters
    /// honour even while they still hear from a leader.
    case vote(lastIndex: UInt64, lastTerm: UInt64, transfer: Bool)
    case voteResponse(granted: Bool)
    /// AppendEntries with entries following (`prevIndex`, `prevTerm`).
    case append(prevIndex: UInt64, prevTerm: UInt64, entries: [RaftEntry], commit: UInt64)
    /// Success: the follower's log matches the leader's up to `index`. Rejection of the append
    /// at `index` (its prevIndex): the follower's log has term `hintTerm` at `hintIndex`, the
    /// leader may skip back to there (fast back-off).
    case appendResponse(index: UInt64, reject: Bool, hintIndex: UInt64, hintTerm: UInt64)
    /// Heartbeat: commit is capped at what the follower is known to hold. `readSequence`
    /// identifies the ReadIndex round it confirms.
    case heartbeat(commit: UInt64, readSequence: UInt64)
    case heartbeatResponse(readSequence: UInt64)
    /// One chunk of InstallSnapshot. `offset` is the position of `data` in the snapshot bytes;
    /// `totalLength` and `checksum` (CRC-32C, ``SnapshotChecksum``) describe the whole snapshot, which the
    /// follower verifies before installing it.
    case snapshotChunk(
      metadata: SnapshotMetadata, offset: UInt64, data: [UInt8], done: Bool, totalLength: UInt64, checksum: UInt32)
    /// The follower holds the bytes of snapshot `index` up to `nextOffset`.
    case snapshotChunkResponse(index: UInt64, nextOffset: UInt64)
    /// Leadership transfer: campaign now.
    case timeoutNow
    /// A follower forwards a ReadIndex request to the leader.
    case readIndex(context: [UInt8])
    case readIndexResponse(index: UInt64, context: [UInt8])
  }

  public var description: String { "\(from)->\(to) t\(term) \(body)" }

  // MARK: Wire format

  public func encode(to writer: inout WireWriter) {
    from.encode(to: &writer)
    to.encode(to: &writer)
    writer.writeVarint(term)
    switch body {
    case .preVote(let lastIndex, let lastTerm):
      writer.write(UInt8(1))
      writer.writeVarint(lastIndex)
      writer.writeVarint(lastTerm)
    case .preVoteResponse(let granted):
      writer.write(UInt8(2))
      writer.write(granted)
    case .vote(let lastIndex, let lastTerm, let transfer):
      writer.write(UInt8(3))
      writer.writeVarint(lastIndex)
      writer.writeVarint(lastTerm)
      writer.write(transfer)
    case .voteResponse(let granted):
      writer.write(UInt8(4))
      writer.write(granted)
    case .append(let prevIndex, let prevTerm, let entries, let commit):
      writer.write(UInt8(5))
      writer.writeVarint(prevIndex)
      writer.writeVarint(prevTerm)
      writer.write(entries)
      writer.writeVarint(commit)
    case .appendResponse(let index, let reject, let hintIndex, let hintTerm):
      writer.write(UInt8(6))
      writer.writeVarint(index)
      writer.write(reject)
      writer.writeVarint(hintIndex)
      writer.writeVarint(hintTerm)
    case .heartbeat(let commit, let readSequence):
      writer.write(UInt8(7))
      writer.writeVarint(commit)
      writer.writeVarint(readSequence)
    case .heartbeatResponse(let readSequence):
      writer.write(UInt8(8))
      writer.writeVarint(readSequence)
    case .snapshotChunk(let metadata, let offset, let data, let done, let totalLength, let checksum):
      writer.write(UInt8(9))
      metadata.encode(to: &writer)
      writer.writeVarint(offset)
      writer.write(data)
      writer.write(done)
      writer.writeVarint(totalLength)
      writer.writeFixed(checksum)
    case .snapshotChunkResponse(let index, let nextOffset):
      writer.write(UInt8(10))
      writer.writeVarint(index)
      writer.writeVarint(nextOffset)
    case .timeoutNow:
      writer.write(UInt8(11))
    case .readIndex(let context):
      writer.write(UInt8(12))
      writer.write(context)
    case .readIndexResponse(let index, let context):
      writer.write(UInt8(13))
      writer.writeVarint(index)
      writer.write(context)
    }
  }

  public init(from reader: inout WireReader) throws(WireError) {
    from = try NodeID(from: &reader)
    to = try NodeID(from: &reader)
    term = try reader.readVarint("raft.term")
    let tag = try reader.readByte("raft.kind")
    switch tag {
    case 1:
      body = .preVote(
        lastIndex: try reader.readVarint("preVote.lastIndex"), lastTerm: try reader.readVarint("preVote.lastTerm"))
    case 2:
      body = .preVoteResponse(granted: try reader.readBool("preVoteResponse.granted"))
    case 3:
      body = .vote(
        lastIndex: try reader.readVarint("vote.lastIndex"), lastTerm: try reader.readVarint("vote.lastTerm"),
        transfer: try reader.readBool("vote.transfer"))
    case 4:
      body = .voteResponse(granted: try reader.readBool("voteResponse.granted"))
    case 5:
      body = .append(
        prevIndex: try reader.readVarint("append.prevIndex"), prevTerm: try reader.readVarint("append.prevTerm"),
        entries: try reader.readArray(RaftEntry.self, "append.entries"), commit: try reader.readVarint("append.commit"))
    case 6:
      body = .appendResponse(
        index: try reader.readVarint("appendResponse.index"), reject: try reader.readBool("appendResponse.reject"),
        hintIndex: try reader.readVarint("appendResponse.hintIndex"),
        hintTerm: try reader.readVarint("appendResponse.hintTerm"))
    case 7:
      body = .heartbeat(
        commit: try reader.readVarint("heartbeat.commit"), readSequence: try reader.readVarint("heartbeat.readSequence")
      )
    case 8:
      body = .heartbeatResponse(readSequence: try reader.readVarint("heartbeatResponse.readSequence"))
    case 9:
      body = .snapshotChunk(
        metadata: try SnapshotMetadata(from: &reader), offset: try reader.readVarint("snapshotChunk.offset"),
        data: try reader.readBytes("snapshotChunk.data"), done: try reader.readBool("snapshotChunk.done"),
        totalLength: try reader.readVarint("snapshotChunk.totalLength"),
        checksum: try reader.readFixed32("snapshotChunk.checksum"))
    case 10:
      body = .snapshotChunkResponse(
        index: try reader.readVarint("snapshotChunkResponse.index"),
        nextOffset: try reader.readVarint("snapshotChunkResponse.nextOffset"))
    case 11:
      body = .timeoutNow
    case 12:
      body = .readIndex(context: try reader.readBytes("readIndex.context"))
    case 13:
      body = .readIndexResponse(
        index: try reader.readVarint("readIndexResponse.index"),
        context: try reader.readBytes("readIndexResponse.context"))
    default:
      throw .unknownTag(field: "raft.kind", tag: UInt64(tag))
    }
  }
}
