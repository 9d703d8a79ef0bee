import TealWire

// MARK: - Log entries

/// What a log entry carries.
public enum RaftEntryKind: UInt8, Sendable, Hashable {
  /// An application command (opaque bytes for the state machine).
  case command = 0
  /// The empty entry a new leader appends at the start of its term (Raft §8); the application
  /// ignores it.
  case noop = 1
  /// A membership change; `data` is the complete new ``RaftConfiguration``. It takes effect as
  /// soon as it is appended (thesis §4.1), not when it commits; the application ignores it.
  case configuration = 2
}

/// One entry of the replicated log.
///
/// Invariant: within one log, indexes are consecutive; two logs holding an entry with the same
/// `index` and `term` hold the same entries up to that index (Log Matching, §5.3).
public struct RaftEntry: Sendable, Hashable, WireCodable, CustomStringConvertible {
  public var term: UInt64
  public var index: UInt64
  public var kind: RaftEntryKind
  public var data: [UInt8]

  public init(term: UInt64, index: UInt64, kind: RaftEntryKind = .command, data: [UInt8] = []) {
    self.term = term
    self.index = index
    self.kind = kind
    self.data = data
  }

  public var description: String { "\(index)@\(term)\(kind == .command ? "" : "[\(kind)]")" }

  public func encode(to writer: inout WireWriter) {
    writer.writeVarint(term)
    writer.writeVarint(index)
    writer.write(kind.rawValue)
    writer.write(data)
  }

  public init(from reader: inout WireReader) throws(WireError) {
    term = try reader.readVarint("entry.term")
    index = try reader.readVarint("entry.index")
    let tag = try reader.readByte("entry.kind")
    guard let kind = RaftEntryKind(rawValue: tag) else { throw .unknownTag(field: "entry.kind", tag: UInt64(tag)) }
    self.kind = kind
    data = try reader.readBytes("entry.data")
    if kind == .configuration {
      do {
        _ = try RaftConfiguration(wireBytes: data)
      } catch {
        throw .invalidValue(field: "entry.data", reason: "configuration entry \(index): \(error)")
      }
    }
  }
}

// MARK: - Hard state

/// The state that must be durable before any message that depends on it is sent (Figure 2's
/// "persistent state on all servers", plus the commit index so a restart can apply at once).
public struct HardState: Sendable, Hashable, WireCodable, CustomStringConvertible {
  public var term: UInt64
  /// The candidate this node voted for in `term`, if any. At most one vote per term.
  public var vote: NodeID?
  public var commit: UInt64

  public init(term: UInt64 = 0, vote: NodeID? = nil, commit: UInt64 = 0) {
    self.term = term
    self.vote = vote
    self.commit = commit
  }

  public var description: String { "term=\(term) vote=\(vote?.rawValue ?? "-") commit=\(commit)" }

  public func encode(to writer: inout WireWriter) {
    writer.writeVarint(term)
    writer.write(vote?.rawValue)
    writer.writeVarint(commit)
  }

  public init(from reader: inout WireReader) throws(WireError) {
    term = try reader.readVarint("hardState.term")
    if try reader.readBool("hardState.vote") {
      vote = try NodeID(from: &reader)
    } else {
      vote = nil
    }
    commit = try reader.readVarint("hardState.commit")
  }
}

// MARK: - Membership

/// The members of the cluster: voters form quorums; learners receive the log but never vote or
/// count towards a quorum.
///
/// Invariant: `voters` and `learners` are disjoint.
public struct RaftConfiguration: Sendable, Hashable, WireCodable, CustomStringConvertible {
  public private(set) var voters: Set<NodeID>
  public private(set) var learners: Set<NodeID>

  public init(voters: Set<NodeID>, learners: Set<NodeID> = []) {
    self.voters = voters
    self.learners = learners.subtracting(voters)
  }

  /// Every member, voter or learner.
  public var members: Set<NodeID> { voters.union(learners) }

  /// The number of voters that form a majority.
  public var quorum: Int { voters.count / 2 + 1 }

  public var description: String {
    let v = voters.sorted().map(\.rawValue).joined(separator: ",")
    let l = learners.sorted().map(\.rawValue).joined(separator: ",")
    return l.isEmpty ? "voters(\(v))" : "voters(\(v)) learners(\(l))"
  }

  /// The configuration after `change`, or the reason the change is not allowed.
  public func applying(_ change: ConfigChange) -> Result<RaftConfiguration, RaftError> {
    var next = self
    switch change {
    case .addLearner(let node):
      if voters.contains(node) || learners.contains(node) {
        return .failure(.invalidConfigChange("\(node) is already a member"))
      }
      next.learners.insert(node)
    case .promote(let node):
      guard learners.contains(node) else {
        return .failure(.invalidConfigChange("\(node) is not a learner; add it as a learner first"))
      }
      next.learners.remove(node)
      next.voters.insert(node)
    case .remove(let node):
      if voters.contains(node) {
        if voters.count == 1 { return .failure(.invalidConfigChange("cannot remove the last voter \(node)")) }
        next.voters.remove(node)
      } else if learners.contains(node) {
        next.learners.remove(node)
      } else {
        return .failure(.invalidConfigChange("\(node) is not a member"))
      }
    }
    return .success(next)
  }

  public func encode(to writer: inout WireWriter) {
    writer.write(voters.sorted())
    writer.write(learners.sorted())
  }

  public init(from reader: inout WireReader) throws(WireError) {
    let voters = try reader.readArray(NodeID.self, "configuration.voters")
    let learners = try reader.readArray(NodeID.self, "configuration.learners")
    if voters.isEmpty { throw .invalidValue(field: "configuration.voters", reason: "must not be empty") }
    self.voters = Set(voters)
    self.learners = Set(learners).subtracting(self.voters)
  }
}

/// One membership change. Voters change one at a time (thesis §4.1); a new voter first joins as
/// a learner and is promoted once it has caught up (thesis §4.2.1).
public enum ConfigChange: Sendable, Hashable, CustomStringConvertible {
  case addLearner(NodeID)
  case promote(NodeID)
  case remove(NodeID)

  public var description: String {
    switch self {
    case .addLearner(let n): "add-learner \(n)"
    case .promote(let n): "promote \(n)"
    case .remove(let n): "remove \(n)"
    }
  }
}

// MARK: - Snapshots

/// Where a snapshot sits in the log and the membership at that point.
public struct SnapshotMetadata: Sendable, Hashable, WireCodable, CustomStringConvertible {
  /// The last index the snapshot covers.
  public var index: UInt64
  /// The term of the entry at `index`.
  public var term: UInt64
  /// The configuration in effect at `index`.
  public var configuration: RaftConfiguration

  public init(index: UInt64, term: UInt64, configuration: RaftConfiguration) {
    self.index = index
    self.term = term
    self.configuration = configuration
  }

  public var description: String { "snapshot \(index)@\(term) \(configuration)" }

  public func encode(to writer: inout WireWriter) {
    writer.writeVarint(index)
    writer.writeVarint(term)
    configuration.encode(to: &writer)
  }

  public init(from reader: inout WireReader) throws(WireError) {
    index = try reader.readVarint("snapshot.index")
    term = try reader.readVarint("snapshot.term")
    configuration = try RaftConfiguration(from: &reader)
  }
}

/// A state machine snapshot: the application's bytes plus where they sit in the log.
public struct RaftSnapshot: Sendable, Hashable, WireCodable {
  public var metadata: SnapshotMetadata
  /// The application's serialized state after applying every entry up to `metadata.index`.
  public var data: [UInt8]

  public init(metadata: SnapshotMetadata, data: [UInt8]) {
    self.metadata = metadata
    self.data = data
  }

  public func encode(to writer: inout WireWriter) {
    metadata.encode(to: &writer)
    writer.write(data)
  }

  public init(from reader: inout WireReader) throws(WireError) {
    metadata = try SnapshotMetadata(from: &reader)
    data = try reader.readBytes("snapshot.data")
  }
}

// MARK: - Reads and roles

/// A linearizable read point: once the application has applied `index`, reading its state
/// answers the read identified by `context` linearizably.
public struct ReadState: Sendable, Hashable {
  public var index: UInt64
  public var context: [UInt8]

  public init(index: UInt64, context: [UInt8]) {
    self.index = index
    self.context = context
  }
}

public enum RaftRole: UInt8, Sendable, Hashable, CustomStringConvertible {
  case follower, preCandidate, candidate, leader

  public var description: String {
    switch self {
    case .follower: "follower"
    case .preCandidate: "pre-candidate"
    case .candidate: "candidate"
    case .leader: "leader"
    }
  }
}

/// Where an accepted proposal sits. It took effect if and only if the entry the application
/// applies at `index` has this `term`; otherwise it was lost in a leader change and may be retried.
public struct ProposalPosition: Sendable, Hashable {
  public var index: UInt64
  public var term: UInt64
}

// MARK: - Errors

/// Why an input was refused. Nothing was changed when one of these is thrown.
public enum RaftError: Error, Sendable, Hashable, CustomStringConvertible {
  /// Only the leader accepts this input; `leader` is the node believed to lead, if known.
  case notLeader(leader: NodeID?)
  /// The leader has not yet committed an entry of its term (it cannot serve reads or change
  /// membership before that; thesis §6.4 and the fix of §4.1).
  case leaderNotReady
  /// A leadership transfer is in progress; proposals resume when it ends.
  case transferInProgress
  /// A previous membership change has not committed yet.
  case configChangePending
  /// The leader holds `bytes` bytes of uncommitted command data; one more would exceed
  /// `maxUncommittedBytes` (`limit`). Nothing was proposed; retry once entries commit.
  case uncommittedLimit(bytes: Int, limit: Int)
  /// A learner must catch up before promotion.
  case learnerNotCaughtUp(NodeID, match: UInt64, lastIndex: UInt64)
  case invalidConfigChange(String)
  case invalidTransferTarget(NodeID, reason: String)
  /// A snapshot handed to ``RaftCore/compact(snapshot:)`` is not at an applied index.
  case invalidSnapshot(String)
  /// The restored state is inconsistent (e.g. a gap in the entries or a commit beyond the log).
  case invalidPersistentState(field: String, reason: String)

  public var description: String {
    switch self {
    case .notLeader(let leader): "not the leader" + (leader.map { "; the leader is \($0)" } ?? "; no leader known")
    case .leaderNotReady: "the leader has not committed an entry of its term yet; retry shortly"
    case .transferInProgress: "leadership transfer in progress; retry on the new leader"
    case .configChangePending: "a membership change is still uncommitted; retry after it commits"
    case .uncommittedLimit(let bytes, let limit):
      "the leader holds \(bytes) bytes of uncommitted commands, at its limit maxUncommittedBytes (\(limit)); "
        + "retry once they commit"
    case .learnerNotCaughtUp(let node, let match, let last):
      "learner \(node) has replicated up to \(match) of \(last); promote it once it holds the commit index "
        + "and is within learnerCatchUpLag of the last index"
    case .invalidConfigChange(let reason): "invalid membership change: \(reason)"
    case .invalidTransferTarget(let node, let reason): "cannot transfer leadership to \(node): \(reason)"
    case .invalidSnapshot(let reason): "invalid snapshot: \(reason)"
    case .invalidPersistentState(let field, let reason): "invalid persistent state \(field): \(reason)"
    }
  }
}
