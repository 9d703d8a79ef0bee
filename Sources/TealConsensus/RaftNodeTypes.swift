// Configuration, status and errors of RaftNode.

import Logging
import TealRaft
import TealStorage
import TealWire

// MARK: - Configuration

/// How one ``RaftNode`` runs.
public struct RaftNodeConfiguration: Sendable {
  /// This node's id; must be a member of the log's configuration (or of `bootstrap`) to vote.
  public var id: NodeID
  /// The founding configuration, used only when the data directory holds neither a snapshot nor a
  /// configuration entry. Every founding member must be given the same one.
  public var bootstrap: RaftConfiguration
  /// The data directory of the durable log (created if missing).
  public var dataDirectory: String
  /// RaftCore tunables; time is counted in ticks.
  public var raft: RaftOptions
  /// The real tick interval. `nil`: no internal ticker; the owner calls ``RaftNode/tick()`` (tests).
  /// The default, 5 ms, is the interval `RaftOptions`' default tick counts are meant for (50 ms heartbeat,
  /// 300-600 ms election timeout); change both together.
  public var tickInterval: Duration?
  /// A proposal that has not been applied after this many ticks fails with ``RaftNodeError/timedOut``.
  public var proposalTimeoutTicks: Int
  /// A linearizable read that has not completed after this many ticks fails with ``RaftNodeError/timedOut``.
  public var readTimeoutTicks: Int
  /// An unanswered ReadIndex request is sent again after this many ticks (requests may be lost).
  public var readRetryTicks: Int
  /// Once this many entries have been applied since the last snapshot, the node snapshots the state machine
  /// and compacts its log (keeping a tail, see `RaftOptions.compactionTailEntries`). `0` disables this
  /// trigger.
  public var snapshotThreshold: UInt64
  /// The same trigger in bytes: once the commands applied since the last snapshot carry this many bytes, the
  /// node snapshots. `0` disables this trigger. Default 64 MiB.
  public var snapshotThresholdBytes: Int
  /// Log positions with a proposal waiting to be applied beyond which ``RaftNode/propose(_:)`` and
  /// ``RaftNode/proposeConfigChange(_:)`` fail at once with ``RaftNodeError/retryLater(_:)`` (nothing is
  /// proposed). Default 8,192.
  public var maxPendingProposals: Int
  /// Largest command ``RaftNode/propose(_:)`` accepts, in bytes. Keep it below the transport's frame limit
  /// (16 MiB by default) so that an entry always fits in one AppendEntries message.
  public var maxCommandBytes: Int
  /// Outbound messages queued per peer beyond which new ones are dropped (Raft retransmits).
  public var outboundQueueLimit: Int
  /// Seeds the election-timeout generator; `nil` draws a seed from the system generator.
  public var randomSeed: UInt64?
  /// Storage options (tests inject a `FaultInjectingFileSystem`).
  public var storage: StorageOptions
  public var logger: Logger
  /// The id of the cluster this node belongs to. When set, the data directory records it (file
  /// `cluster-id`, written at the first start) and a directory of another cluster is refused with
  /// ``RaftNodeError/invalidPersistentState(_:)``. 1 to 128 printable ASCII characters. `nil`: not checked.
  public var clusterID: String?
  /// Join an existing cluster instead of founding one. With an empty data directory (new, or wiped) the
  /// node neither votes nor campaigns until it has received entries or a snapshot from a leader, so a
  /// voter whose disk was wiped cannot vote twice in one term. `bootstrap` still names the founding
  /// members (the configuration at index 0; give an empty one to a node added later, which learns its
  /// membership from the log). A directory that holds state starts normally. Default `false`: found the
  /// cluster with `bootstrap` when the directory is empty.
  public var join: Bool

  public init(
    id: NodeID, bootstrap: RaftConfiguration, dataDirectory: String, raft: RaftOptions = RaftOptions(),
    tickInterval: Duration? = .milliseconds(5), logger: Logger = Logger(label: "teal.consensus")
  ) {
    self.id = id
    self.bootstrap = bootstrap
    self.dataDirectory = dataDirectory
    self.raft = raft
    self.tickInterval = tickInterval
    self.proposalTimeoutTicks = 1_000
    self.readTimeoutTicks = 1_000
    self.readRetryTicks = max(raft.electionTicks, 1)
    self.snapshotThreshold = 10_000
    self.snapshotThresholdBytes = 64 << 20
    self.maxPendingProposals = 8_192
    self.maxCommandBytes = 4 << 20
    self.outboundQueueLimit = 8_192
    self.randomSeed = nil
    self.storage = StorageOptions(logger: logger)
    self.logger = logger
    self.clusterID = nil
    self.join = false
  }
}

// MARK: - Status

/// A consistent view of one node at one moment.
public struct RaftNodeStatus: Sendable, Hashable, CustomStringConvertible {
  public var id: NodeID
  public var role: RaftRole
  public var term: UInt64
  /// The leader this node knows of, if any.
  public var leader: NodeID?
  /// Highest log index known to be committed.
  public var commitIndex: UInt64
  /// Highest log index applied to the state machine (or covered by the restored snapshot).
  public var appliedIndex: UInt64
  /// Last index in the log (durable or about to be).
  public var lastIndex: UInt64
  /// Index of the latest durable snapshot (0: none).
  public var snapshotIndex: UInt64
  /// False once the node stopped (by ``RaftNode/stop(transferringLeadership:)`` or by a failure).
  public var isRunning: Bool
  /// Why the node stopped on its own (a disk failure, a state machine that cannot restore), if it did.
  public var failure: String?
  /// Log positions with a proposal waiting on this node (bounded by `maxPendingProposals`).
  public var pendingProposals: Int = 0
  /// Linearizable reads waiting on this node.
  public var pendingReads: Int = 0

  public var description: String {
    let state = isRunning ? "running" : "stopped" + (failure.map { " (\($0))" } ?? "")
    return
      "\(id) \(role) term=\(term) leader=\(leader?.rawValue ?? "-") commit=\(commitIndex) applied=\(appliedIndex) "
      + "last=\(lastIndex) snapshot=\(snapshotIndex) \(state)"
  }
}

/// Who leads, as seen by one node; delivered on ``RaftNode/leadershipChanges()`` whenever any field changes.
public struct LeadershipState: Sendable, Hashable, CustomStringConvertible {
  public var role: RaftRole
  public var leader: NodeID?
  public var term: UInt64
  /// True when this node leads `term` AND has applied its term's no-op entry: its state machine then
  /// holds every entry committed by earlier leaders, so decisions taken from ``RaftNode/currentState``
  /// act on current state. Always false when `role` is not `.leader`.
  public var isReady: Bool

  public init(role: RaftRole, leader: NodeID?, term: UInt64, isReady: Bool = false) {
    self.role = role
    self.leader = leader
    self.term = term
    self.isReady = role == .leader && isReady
  }

  public var description: String {
    "\(role)\(isReady ? " (ready)" : "") term=\(term) leader=\(leader?.rawValue ?? "-")"
  }
}

// MARK: - Errors

/// Why a ``RaftNode`` call failed. Each case says whether the command may have taken effect.
public enum RaftNodeError: Error, Sendable, Hashable, CustomStringConvertible {
  /// This node does not lead; `leader` is the node believed to lead, if known. Nothing was proposed.
  case notLeader(leader: NodeID?)
  /// The node cannot take the request right now (a new leader has not committed an entry of its term yet,
  /// or a leadership transfer is in progress). Nothing was proposed; retry shortly.
  case retryLater(String)
  /// The proposal's log position was taken by another leader's entry: the command did NOT take effect and
  /// may be retried safely.
  case proposalDropped(index: UInt64, term: UInt64)
  /// The node lost track of the proposal (it stepped down as leader while the proposal was pending, or it
  /// installed a snapshot that covers the position): the command may or may not have taken effect. Retry
  /// only if the command is idempotent or carries a client session.
  case outcomeUnknown(index: UInt64, reason: String)
  /// No answer within `ticks` ticks. For a proposal the outcome is unknown (as for ``outcomeUnknown``).
  case timedOut(operation: String, ticks: Int)
  /// The node is stopped; `reason` says why if it stopped on its own. An in-flight proposal's outcome is
  /// unknown.
  case stopped(reason: String?)
  /// The durable log could not be opened, or a write to it failed (the node then stops).
  case storage(StorageError)
  /// The data directory holds state RaftCore refuses (the message names the field).
  case invalidPersistentState(String)
  /// The state machine could not restore a snapshot (the message says from where).
  case stateMachine(String)
  /// The request is not valid (e.g. a leadership transfer to a node that is not a voter).
  case invalidRequest(String)

  public var description: String {
    switch self {
    case .notLeader(let leader):
      "this node is not the leader" + (leader.map { "; send the request to \($0)" } ?? "; no leader is known yet")
    case .retryLater(let reason): "\(reason); retry shortly"
    case .proposalDropped(let index, let term):
      "the proposal at index \(index) (term \(term)) was replaced by a new leader's entry and did not take effect; "
        + "it may be retried"
    case .outcomeUnknown(let index, let reason):
      "the outcome of the proposal at index \(index) is unknown: \(reason)"
    case .timedOut(let operation, let ticks):
      "\(operation) did not complete within \(ticks) ticks; its outcome is unknown"
    case .stopped(let reason): "the Raft node is stopped" + (reason.map { ": \($0)" } ?? "")
    case .storage(let error): "durable log failure: \(error)"
    case .invalidPersistentState(let message): "invalid persistent state: \(message)"
    case .stateMachine(let message): "state machine failure: \(message)"
    case .invalidRequest(let message): "invalid request: \(message)"
    }
  }

  /// Maps RaftCore's refusal of an input to the caller-facing error.
  static func refused(_ error: RaftError) -> RaftNodeError {
    switch error {
    case .notLeader(let leader): .notLeader(leader: leader)
    case .leaderNotReady, .transferInProgress, .configChangePending, .uncommittedLimit: .retryLater(error.description)
    case .learnerNotCaughtUp, .invalidConfigChange, .invalidTransferTarget, .invalidSnapshot:
      .invalidRequest(error.description)
    case .invalidPersistentState: .invalidPersistentState(error.description)
    }
  }
}
