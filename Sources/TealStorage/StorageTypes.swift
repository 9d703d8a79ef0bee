// The values TealStorage persists. They are independent of TealRaft; the consensus shell maps
// RaftCore's types to these.

import Logging

// MARK: - Log contents

/// One Raft log entry as stored on disk.
///
/// Invariant kept by `DurableLog`: entries of the log have consecutive indexes and non-decreasing terms.
public struct StoredEntry: Sendable, Hashable {
  /// The entry's position in the log, starting at 1.
  public var index: UInt64
  /// The leader's term when the entry was created.
  public var term: UInt64
  /// An opaque kind byte (normal command, configuration change, no-op, ...), chosen by the caller.
  public var kind: UInt8
  /// The entry's opaque payload.
  public var payload: [UInt8]

  public init(index: UInt64, term: UInt64, kind: UInt8, payload: [UInt8]) {
    self.index = index
    self.term = term
    self.kind = kind
    self.payload = payload
  }
}

/// The Raft hard state: what a node must remember across restarts to never vote twice in a term and to
/// never forget a commit index it has announced.
public struct StoredHardState: Sendable, Hashable {
  /// The latest term the node has seen.
  public var term: UInt64
  /// The candidate this node voted for in `term`, if any (a node id; at most 65,535 UTF-8 bytes).
  public var vote: String?
  /// The highest log index known to be committed.
  public var commit: UInt64

  public init(term: UInt64, vote: String?, commit: UInt64) {
    self.term = term
    self.vote = vote
    self.commit = commit
  }

  /// The hard state of a node that has never run: term 0, no vote, nothing committed.
  public static let initial = StoredHardState(term: 0, vote: nil, commit: 0)
}

// MARK: - Snapshots

/// Describes a snapshot: the log prefix it replaces and the cluster configuration at that point.
public struct SnapshotMetadata: Sendable, Hashable {
  /// The index of the last entry the snapshot includes.
  public var index: UInt64
  /// The term of the entry at `index`.
  public var term: UInt64
  /// The cluster configuration at `index`, opaque to storage (at most 4 GiB - 1).
  public var configuration: [UInt8]

  public init(index: UInt64, term: UInt64, configuration: [UInt8]) {
    self.index = index
    self.term = term
    self.configuration = configuration
  }
}

/// A snapshot with its state machine data.
public struct StoredSnapshot: Sendable, Hashable {
  public var metadata: SnapshotMetadata
  /// The application's serialized state at `metadata.index`, opaque to storage.
  public var data: [UInt8]

  public init(metadata: SnapshotMetadata, data: [UInt8]) {
    self.metadata = metadata
    self.data = data
  }
}

// MARK: - Options and recovery

/// How a `DurableLog` writes its directory.
public struct StorageOptions: Sendable {
  /// The default segment size: a segment is closed and a new one started once a record would grow it past this.
  public static let defaultSegmentSizeLimit: Int64 = 64 * 1024 * 1024

  /// Once the active segment holds this many bytes, the next write goes to a new segment. A single record
  /// larger than the limit still goes into one segment of its own.
  public var segmentSizeLimit: Int64
  /// The file system to use; tests inject `FaultInjectingFileSystem`.
  public var fileSystem: any StorageFileSystem
  /// Where recovery and compaction report what they did.
  public var logger: Logger
  /// The smallest size of the space reserve, a file of zeros (`space-reserve`) kept in the data directory and
  /// deleted when a snapshot finds the disk full, so that a node whose disk filled up can still compact its
  /// log. It grows to hold the latest snapshot (its size, a quarter more, and 64 KiB). 0: no reserve.
  public var spaceReserveBytes: Int64

  /// The default smallest space reserve: 1 MiB.
  public static let defaultSpaceReserveBytes: Int64 = 1 << 20

  public init(
    segmentSizeLimit: Int64 = StorageOptions.defaultSegmentSizeLimit,
    fileSystem: any StorageFileSystem = PosixFileSystem(),
    logger: Logger = Logger(label: "teal.storage"),
    spaceReserveBytes: Int64 = StorageOptions.defaultSpaceReserveBytes
  ) {
    self.segmentSizeLimit = segmentSizeLimit
    self.fileSystem = fileSystem
    self.logger = logger
    self.spaceReserveBytes = spaceReserveBytes
  }
}

/// What `DurableLog.open` found and repaired.
public struct RecoveryReport: Sendable, Hashable {
  /// The WAL segment files replayed, oldest first.
  public var segmentPaths: [String]
  /// The number of WAL records replayed (the segments' first hard state records included).
  public var recordCount: Int
  /// The segment whose torn tail was cut off, if any.
  public var tornSegmentPath: String?
  /// The offset in `tornSegmentPath` where the torn tail started (the file's new length).
  public var tornTailOffset: Int64?
  /// How many bytes of torn tail were cut off.
  public var tornBytesRemoved: Int64
  /// Leftover temporary files (an interrupted snapshot or segment creation) that were deleted.
  public var removedTemporaryFiles: [String]
  /// The snapshot file loaded, if any.
  public var snapshotPath: String?
  /// Compacted segments below a hole in the sequence (a crash kept only some of compaction's unlinks),
  /// deleted by recovery.
  public var removedStaleSegments: [String]
  /// The segment started because the last one had an older format version (its records stay readable).
  public var upgradeSegmentPath: String?
  /// How many bytes at the end of the last segment recovery wrote again and synced, so that nothing it read
  /// from the page cache after a failed `fdatasync` is missing from the disk.
  public var rewrittenTailBytes: Int64

  public init(
    segmentPaths: [String] = [], recordCount: Int = 0, tornSegmentPath: String? = nil, tornTailOffset: Int64? = nil,
    tornBytesRemoved: Int64 = 0, removedTemporaryFiles: [String] = [], snapshotPath: String? = nil,
    removedStaleSegments: [String] = [], upgradeSegmentPath: String? = nil, rewrittenTailBytes: Int64 = 0
  ) {
    self.segmentPaths = segmentPaths
    self.recordCount = recordCount
    self.tornSegmentPath = tornSegmentPath
    self.tornTailOffset = tornTailOffset
    self.tornBytesRemoved = tornBytesRemoved
    self.removedTemporaryFiles = removedTemporaryFiles
    self.snapshotPath = snapshotPath
    self.removedStaleSegments = removedStaleSegments
    self.upgradeSegmentPath = upgradeSegmentPath
    self.rewrittenTailBytes = rewrittenTailBytes
  }
}
