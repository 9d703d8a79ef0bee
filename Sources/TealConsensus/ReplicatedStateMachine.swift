// The application side of consensus: what RaftNode applies committed commands to.

/// The application state that Raft replicates. ``RaftNode`` owns one value of it and calls it only from
/// its own executor, in log order.
///
/// Rules an implementation must follow so that every replica stays identical:
/// - ``apply(_:index:term:)`` is deterministic: the same command on the same state gives the same new state and
///   the same result, on every node, every time (no clocks, no randomness, no I/O whose outcome differs).
/// - ``snapshot()`` captures everything ``apply(_:index:term:)`` depends on, including client session tables
///   (see `ClientSessions` in TealRaft) if the application deduplicates retried commands.
/// - ``restore(from:)`` replaces the whole state with a snapshot's; afterwards the state equals the one
///   that produced the snapshot.
///
/// Only `.command` entries reach the state machine; no-op and membership entries advance the applied index
/// without calling it (committed membership changes are announced by ``RaftNode/membershipChanges()``).
///
/// ``restore(from:)`` is called at start (from the directory's latest snapshot) and whenever the node
/// installs a snapshot received from the leader; the latter is also announced on
/// ``RaftNode/snapshotInstalls()``.
public protocol ReplicatedStateMachine: Sendable {
  /// Applies the committed command at log index `index`, proposed by the leader of `term`, and returns the
  /// result handed to the proposer (empty if there is nothing to say). Called exactly once per index per
  /// incarnation, in index order. `term` lets the application refuse a command derived from leader-only
  /// state of an older leader (it is the same on every replica, so refusing is deterministic).
  mutating func apply(_ command: [UInt8], index: UInt64, term: UInt64) -> [UInt8]

  /// The serialized state after the last applied command.
  func snapshot() -> [UInt8]

  /// Replaces the state with the one serialized in `snapshot`. Throws if the bytes cannot be decoded; the
  /// node then stops, because it cannot continue without the replicated state.
  mutating func restore(from snapshot: [UInt8]) throws
}
