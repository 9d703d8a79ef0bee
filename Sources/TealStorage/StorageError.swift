// Every failure TealStorage reports, with a message that names the file, offset or argument at fault.

#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

/// Errors of `DurableLog` and the file systems under it.
///
/// Corruption errors (`corruptRecord`, `corruptSegmentHeader`, `corruptSnapshot`, `inconsistentLog`,
/// `missingSegment`, `missingWAL`) mean the node must not start: its durable state cannot be trusted, and
/// starting anyway could break Raft's safety (a forgotten vote, a lost acknowledged entry). An operator has
/// to restore the directory or wipe the node and let it rejoin.
public enum StorageError: Error, Sendable, Hashable, CustomStringConvertible {
  /// A system call failed. `errno` is the C error number.
  case io(operation: String, path: String, errno: Int32)
  /// A WAL record failed its checksum or could not be decoded, and valid data follows it (or it is not in the
  /// last segment), so it is not a torn tail.
  case corruptRecord(path: String, offset: Int64, reason: String)
  /// A WAL segment's file header is missing, short, of an unknown version, or fails its checksum.
  case corruptSegmentHeader(path: String, reason: String)
  /// A snapshot file is short or fails its checksum.
  case corruptSnapshot(path: String, reason: String)
  /// Records decode, but do not form one Raft log: an index gap, an index going backwards without a
  /// truncation record, a term going backwards, or segments that do not continue each other.
  case inconsistentLog(path: String, offset: Int64, reason: String)
  /// The segment sequence has a hole: `path` (sequence `sequence`) should exist but does not.
  case missingSegment(path: String, sequence: UInt64)
  /// The directory holds snapshots but no WAL segment, so the hard state (the vote) is lost.
  case missingWAL(directory: String)
  /// Another process or another `DurableLog` has the directory open.
  case directoryLocked(path: String)
  /// An earlier write or sync failed; the on-disk state is unknown, so this log accepts no more writes.
  /// Close it and reopen the directory (recovery repairs a torn tail).
  case unusableAfterFailure(cause: String)
  /// The requested index lies in the compacted prefix (at or below the snapshot index).
  case compacted(index: UInt64, snapshotIndex: UInt64)
  /// The requested index lies beyond the last entry.
  case unavailable(index: UInt64, lastIndex: UInt64)
  /// The caller passed something the log cannot accept (the message says what and why).
  case invalidArgument(String)
  /// The log was closed.
  case closed

  /// Whether this is a full disk or an exhausted quota (`ENOSPC`, `EDQUOT`).
  public var isOutOfSpace: Bool {
    guard case .io(_, _, let errno) = self else { return false }
    return errno == ENOSPC || errno == EDQUOT
  }

  public var description: String {
    switch self {
    case .io(let operation, let path, let errno):
      let failure =
        "storage I/O error: \(operation) \(path) failed: \(String(cString: strerror(errno))) (errno \(errno))"
      guard isOutOfSpace else { return failure }
      return failure
        + "; the disk holding the data directory is full: free space on it (or move the data directory to a "
        + "larger disk) and restart the node. On restart the node can still compact its log: it deletes its "
        + "space reserve (the file space-reserve) to make room for the snapshot"

    case .corruptRecord(let path, let offset, let reason):
      return "corrupt WAL record in \(path) at byte offset \(offset): \(reason); refusing to start "
        + "(restore the data directory from a backup, or remove it to rejoin the cluster as a new member)"
    case .corruptSegmentHeader(let path, let reason):
      return "corrupt WAL segment header in \(path): \(reason); refusing to start"
    case .corruptSnapshot(let path, let reason):
      return "corrupt snapshot file \(path): \(reason); refusing to start"
    case .inconsistentLog(let path, let offset, let reason):
      return "inconsistent WAL in \(path) at byte offset \(offset): \(reason); refusing to start"
    case .missingSegment(let path, let sequence):
      return "WAL segment \(sequence) is missing (expected \(path)); refusing to start"
    case .missingWAL(let directory):
      return "\(directory) holds snapshots but no WAL segment (the hard state is lost); refusing to start"
    case .directoryLocked(let path):
      return "the data directory is in use by another process (lock file \(path) is held)"
    case .unusableAfterFailure(let cause):
      return "the WAL accepts no more writes after an earlier failure (\(cause)); reopen the directory to recover"
    case .compacted(let index, let snapshotIndex):
      return "log index \(index) is compacted into the snapshot at index \(snapshotIndex)"
    case .unavailable(let index, let lastIndex):
      return "log index \(index) is beyond the last index \(lastIndex)"
    case .invalidArgument(let message):
      return "invalid storage request: \(message)"
    case .closed:
      return "the WAL is closed"
    }
  }
}
