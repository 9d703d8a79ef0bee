// Conversions between RaftCore's types and TealStorage's (which know nothing of Raft).

import TealRaft
import TealStorage
import TealWire

enum StorageMapping {
  static func stored(_ entry: RaftEntry) -> StoredEntry {
    StoredEntry(index: entry.index, term: entry.term, kind: entry.kind.rawValue, payload: entry.data)
  }

  static func stored(_ hardState: HardState) -> StoredHardState {
    StoredHardState(term: hardState.term, vote: hardState.vote?.rawValue, commit: hardState.commit)
  }

  static func storedMetadata(_ metadata: TealRaft.SnapshotMetadata) -> TealStorage.SnapshotMetadata {
    TealStorage.SnapshotMetadata(
      index: metadata.index, term: metadata.term, configuration: metadata.configuration.wireBytes())
  }

  /// Writes `ready`'s snapshot, entries and hard state to `log`; returns once they are durable.
  ///
  /// A snapshot from a leader of a newer term arrives in the same Ready as that term. Its term and vote are
  /// made durable first (with the commit index already durable), so that a crash at any point never
  /// leaves a snapshot whose term is above the durable hard state's, which RaftCore refuses at start.
  static func persist(_ ready: RaftReady, to log: DurableLog) throws(StorageError) {
    if let snapshot = ready.snapshot, snapshot.metadata.index > log.snapshotIndex {
      if let hardState = ready.hardState,
        hardState.term != log.hardState.term || hardState.vote?.rawValue != log.hardState.vote
      {
        try log.append(
          entries: [],
          hardState: StoredHardState(
            term: hardState.term, vote: hardState.vote?.rawValue, commit: log.hardState.commit))
      }
      try log.saveSnapshot(metadata: storedMetadata(snapshot.metadata), data: snapshot.data)
    }
    if !ready.entries.isEmpty || ready.hardState != nil {
      try log.append(entries: ready.entries.map(stored(_:)), hardState: ready.hardState.map(stored(_:)))
    }
  }

  /// What RaftCore needs to restart from `log`. Throws, naming the directory and field, if a stored value is
  /// not a valid Raft value (an unknown entry kind, a vote that is not a node id, an undecodable configuration).
  static func persistentState(of log: DurableLog) throws(RaftNodeError) -> RaftPersistentState {
    let stored = log.hardState
    var vote: NodeID?
    if let raw = stored.vote {
      do {
        vote = try NodeID(validating: raw)
      } catch {
        throw .invalidPersistentState("\(log.directory): hard state vote: \(error)")
      }
    }
    var snapshot: RaftSnapshot?
    if let s = log.snapshot {
      let configuration: RaftConfiguration
      do {
        configuration = try RaftConfiguration(wireBytes: s.metadata.configuration)
      } catch {
        throw .invalidPersistentState(
          "\(log.directory): configuration of the snapshot at index \(s.metadata.index): \(error)")
      }
      snapshot = RaftSnapshot(
        metadata: TealRaft.SnapshotMetadata(
          index: s.metadata.index, term: s.metadata.term, configuration: configuration),
        data: s.data)
    }
    var entries: [RaftEntry] = []
    entries.reserveCapacity(log.entries.count)
    for e in log.entries {
      guard let kind = RaftEntryKind(rawValue: e.kind) else {
        throw .invalidPersistentState("\(log.directory): entry \(e.index) has unknown kind \(e.kind)")
      }
      entries.append(RaftEntry(term: e.term, index: e.index, kind: kind, data: e.payload))
    }
    return RaftPersistentState(
      hardState: HardState(term: stored.term, vote: vote, commit: stored.commit), snapshot: snapshot, entries: entries)
  }
}
