// DurableLog: the durable Raft log of one node — segmented WAL, hard state and snapshots in one directory.

import Logging

/// The durable log of one Raft node: entries, hard state and the latest snapshot, kept in a data directory.
///
/// Ownership: a `DurableLog` is a non-`Sendable` final class meant to be owned by exactly one actor (the
/// consensus shell), which calls it synchronously. Every method blocks the calling thread for its disk I/O;
/// a write method returns only once its data is durable (`fdatasync`), so the shell may send the messages
/// that depend on it as soon as the call returns.
///
/// Guarantees:
/// - `append`, `truncateSuffix` and `saveSnapshot` are atomic across crashes: after a crash and `init`, the
///   log shows either all of a call's effect or none of it, and all of it once the call has returned.
/// - A truncated suffix never reappears, also not after a crash and recovery.
/// - Recovery cuts off a torn tail (a crash in the middle of the last write) and refuses to start, with a
///   `StorageError` naming the file and byte offset, on any other damage. It never skips data.
/// - After any I/O failure the log accepts no more writes (`StorageError.unusableAfterFailure`); its
///   in-memory state stays the last durable one. Reopen the directory to recover.
///
/// The entries after the snapshot are also kept in memory, so reads never touch the disk; the application
/// bounds the memory by taking snapshots.
public final class DurableLog {
  /// The data directory.
  public let directory: String
  /// What recovery found and repaired when the log was opened.
  public let recoveryReport: RecoveryReport

  private let options: StorageOptions
  private var logger: Logger { options.logger }
  private var fileSystem: any StorageFileSystem { options.fileSystem }
  private var lockFile: (any StorageFile)?

  private var memory: LogMemory
  /// The latest durable snapshot; `memory` continues the log after it.
  public private(set) var snapshot: StoredSnapshot?

  /// Retained segment sequence numbers, ascending; the last one is the active segment.
  private var segmentSequences: [UInt64]
  private var activeFile: any StorageFile
  private var activeSize: Int64
  /// The size of the active segment right after its header and first hard state record.
  private var activeInitialSize: Int64
  /// Set by the first failed write or sync; from then on writes are refused.
  private var failure: StorageError?
  private var isClosed = false
  /// WAL bytes written by this instance (records, and segment files it started), for measurements.
  public private(set) var walBytesWritten: Int64 = 0

  // MARK: - Opening and recovery

  /// Opens the data directory `directory`, creating it and an empty log if needed, and recovers its state.
  ///
  /// Throws a corruption error (see `StorageError`) if the directory's contents cannot be trusted, and
  /// `directoryLocked` if another `DurableLog` has it open.
  public init(directory: String, options: StorageOptions = StorageOptions()) throws(StorageError) {
    self.directory = directory
    self.options = options
    let recovered = try Recovery(directory: directory, options: options).run()
    self.lockFile = recovered.lockFile
    self.memory = recovered.memory
    self.snapshot = recovered.snapshot
    self.segmentSequences = recovered.segmentSequences
    self.activeFile = recovered.activeFile
    self.activeSize = recovered.activeSize
    self.activeInitialSize = recovered.activeInitialSize
    self.recoveryReport = recovered.report
    maintainSpaceReserve()
  }

  deinit {
    activeFile.close()
    lockFile?.close()
  }

  /// Closes the files and releases the directory lock. Later calls throw `StorageError.closed`.
  public func close() {
    guard !isClosed else { return }
    isClosed = true
    activeFile.close()
    lockFile?.close()
    lockFile = nil
  }

  // MARK: - Reading

  /// The hard state last written (`StoredHardState.initial` for a new log).
  public var hardState: StoredHardState { memory.hardState ?? .initial }

  /// The index of the snapshot (0 if there is none); entries up to it are compacted.
  public var snapshotIndex: UInt64 { snapshot?.metadata.index ?? 0 }

  /// The index of the first entry held in the log: `snapshotIndex + 1` (the log may be empty).
  public var firstIndex: UInt64 { memory.baseIndex + 1 }

  /// The index of the last entry, or `snapshotIndex` if the log after the snapshot is empty.
  public var lastIndex: UInt64 { memory.lastIndex }

  /// The term of the last entry, or of the snapshot if the log after it is empty (0 for a new log).
  public var lastTerm: UInt64 { memory.lastTerm }

  /// The entries after the snapshot, oldest first.
  public var entries: [StoredEntry] { memory.entries }

  /// The term of the entry at `index`; `snapshotIndex` answers the snapshot's term.
  ///
  /// Throws `compacted` below `snapshotIndex` and `unavailable` beyond `lastIndex`.
  public func term(at index: UInt64) throws(StorageError) -> UInt64 {
    if let term = memory.term(at: index) { return term }
    if index < memory.baseIndex { throw .compacted(index: index, snapshotIndex: memory.baseIndex) }
    throw .unavailable(index: index, lastIndex: memory.lastIndex)
  }

  /// The entries with indexes in `range`, in order, for a leader to send.
  ///
  /// With `maxBytes`, stops before the entry whose payload would take the total past it, but always returns
  /// at least one entry if `range` is not empty. Throws `compacted` if `range` starts at or below the snapshot
  /// index and `unavailable` if it ends beyond `lastIndex + 1`.
  public func entries(in range: Range<UInt64>, maxBytes: Int? = nil) throws(StorageError) -> [StoredEntry] {
    guard range.lowerBound > memory.baseIndex else {
      throw .compacted(index: range.lowerBound, snapshotIndex: memory.baseIndex)
    }
    guard range.upperBound <= memory.lastIndex + 1 else {
      throw .unavailable(index: range.upperBound - 1, lastIndex: memory.lastIndex)
    }
    let start = Int(range.lowerBound - memory.baseIndex - 1)
    let end = Int(range.upperBound - memory.baseIndex - 1)
    guard let maxBytes else { return Array(memory.entries[start..<end]) }
    var result: [StoredEntry] = []
    var total = 0
    for entry in memory.entries[start..<end] {
      total += entry.payload.count
      if !result.isEmpty && total > maxBytes { break }
      result.append(entry)
    }
    return result
  }

  // MARK: - Writing

  /// Appends `entries` and records `hardState` (if given), durably, with one `fdatasync`.
  ///
  /// `entries` must have consecutive indexes and non-decreasing terms, the first index in
  /// `firstIndex...lastIndex + 1`. If it is at or below `lastIndex`, the existing entries from that index on
  /// are replaced (Raft's conflicting suffix), in the same atomic record. An empty `entries` with a hard
  /// state writes just the hard state; both empty does nothing.
  public func append(entries: [StoredEntry], hardState: StoredHardState? = nil) throws(StorageError) {
    try checkWritable()
    if entries.isEmpty && hardState == nil { return }
    if let vote = hardState?.vote, vote.utf8.count > Int(UInt16.max) {
      throw .invalidArgument("the vote \"\(vote.prefix(40))...\" is longer than \(UInt16.max) UTF-8 bytes")
    }
    var rebase: (index: UInt64, term: UInt64)?
    if let first = entries.first {
      guard first.index > memory.baseIndex else {
        throw .invalidArgument(
          "entry index \(first.index) is at or below the snapshot index \(memory.baseIndex) and cannot be rewritten")
      }
      guard first.index <= memory.lastIndex + 1 else {
        throw .invalidArgument("entry index \(first.index) would leave a gap after the last index \(memory.lastIndex)")
      }
      var previousIndex = first.index - 1
      var previousTerm = memory.term(at: previousIndex) ?? 0
      if first.index <= memory.lastIndex { rebase = (previousIndex, previousTerm) }
      for entry in entries {
        if let problem = memory.problemAppending(entry, after: previousTerm, previousIndex: previousIndex) {
          throw .invalidArgument(problem)
        }
        guard entry.payload.count <= Int(UInt32.max) else {
          throw .invalidArgument("entry \(entry.index) has a payload of \(entry.payload.count) bytes, over 4 GiB")
        }
        previousIndex = entry.index
        previousTerm = entry.term
      }
    }
    let update = LogUpdate(rebase: rebase, entries: entries, hardState: hardState)
    try writeDurably(update)
    _ = memory.apply(update, segment: activeSequence)
  }

  /// Removes the entries from `index` on, durably. Later reads, and every recovery after this returns, never
  /// see them. Does nothing if `index > lastIndex`; throws `compacted` if `index <= snapshotIndex`.
  public func truncateSuffix(from index: UInt64) throws(StorageError) {
    try checkWritable()
    guard index > memory.baseIndex else { throw .compacted(index: index, snapshotIndex: memory.baseIndex) }
    guard index <= memory.lastIndex else { return }
    let previousTerm = memory.term(at: index - 1) ?? 0
    let update = LogUpdate(rebase: (index - 1, previousTerm), entries: [], hardState: nil)
    try writeDurably(update)
    _ = memory.apply(update, segment: activeSequence)
  }

  /// Stores a snapshot durably and compacts the log behind it.
  ///
  /// Order: the snapshot is written to a temporary file, `fsync`ed, renamed into place and the directory
  /// `fsync`ed. Then, if the log holds `metadata.term` at `metadata.index`, the entries after it are kept;
  /// otherwise (a snapshot installed from a leader, ahead of or conflicting with this log) every entry is
  /// dropped and a rebase record is written and synced. Finally older snapshots and the WAL segments that hold
  /// no entry after the snapshot are deleted. `metadata.index` must be above the current snapshot index.
  public func saveSnapshot(metadata: SnapshotMetadata, data: [UInt8]) throws(StorageError) {
    try checkWritable()
    guard metadata.index > memory.baseIndex else {
      throw .invalidArgument(
        "a snapshot at index \(metadata.index) is not newer than the log's snapshot index \(memory.baseIndex)")
    }
    guard metadata.configuration.count <= Int(UInt32.max) else {
      throw .invalidArgument("the snapshot configuration is over 4 GiB")
    }
    let newSnapshot = StoredSnapshot(metadata: metadata, data: data)
    let name = StorageFileNames.snapshot(index: metadata.index, term: metadata.term)
    let path = pathInDirectory(name)
    let temporaryPath = path + StorageFileNames.temporarySuffix
    let encoded = SnapshotFile.encode(newSnapshot)
    do {
      try writeSnapshotFileReleasingReserve(encoded, to: temporaryPath)
    } catch {
      failure = error
      try? fileSystem.removeFile(temporaryPath)
      throw error
    }
    try poisoningOnFailure { () throws(StorageError) in
      try fileSystem.rename(temporaryPath, to: path)
      try fileSystem.syncDirectory(directory)
    }
    if memory.term(at: metadata.index) != metadata.term {
      try writeDurably(LogUpdate(rebase: (metadata.index, metadata.term), entries: [], hardState: nil))
    }
    memory.compact(through: metadata.index, term: metadata.term)
    snapshot = newSnapshot
    logger.debug(
      "saved snapshot",
      metadata: ["path": "\(path)", "index": "\(metadata.index)", "term": "\(metadata.term)"])
    removeObsoleteFiles()
    maintainSpaceReserve()
  }

  /// Writes the temporary snapshot file; on a full disk, deletes the space reserve and tries once more (the
  /// reserve exists for this: a node that cannot compact would never free space).
  private func writeSnapshotFileReleasingReserve(_ bytes: [UInt8], to temporaryPath: String) throws(StorageError) {
    do {
      try writeSnapshotFile(bytes, to: temporaryPath)
    } catch {
      guard error.isOutOfSpace else { throw error }
      try? fileSystem.removeFile(temporaryPath)
      guard releaseSpaceReserve(because: error) else { throw error }
      try writeSnapshotFile(bytes, to: temporaryPath)
    }
  }

  private func writeSnapshotFile(_ bytes: [UInt8], to temporaryPath: String) throws(StorageError) {
    let file = try fileSystem.openFile(temporaryPath, create: true)
    defer { file.close() }
    try file.truncate(to: 0)
    try file.write(bytes, at: 0)
    try file.syncAll()
  }

  // MARK: - Space reserve

  /// The size the space reserve should have: room for the next snapshot, at least `spaceReserveBytes`.
  private var spaceReserveTarget: Int64 {
    guard options.spaceReserveBytes > 0 else { return 0 }
    let snapshotBytes = Int64(
      snapshot.map { SnapshotFile.headerSize + $0.metadata.configuration.count + $0.data.count + 4 } ?? 0)
    return max(options.spaceReserveBytes, snapshotBytes + snapshotBytes / 4 + 64 * 1024)
  }

  /// Creates the space reserve or grows it to `spaceReserveTarget` with zeros, `fsync`ed so its blocks are
  /// allocated. If that does not fit (the disk is already nearly full) the attempt is undone, so the reserve
  /// never takes the last free bytes away from the WAL, and only logged.
  private func maintainSpaceReserve() {
    let target = spaceReserveTarget
    guard target > 0 else { return }
    let path = pathInDirectory(StorageFileNames.spaceReserve)
    var file: (any StorageFile)?
    var originalSize: Int64 = 0
    do {
      let opened = try fileSystem.openFile(path, create: true)
      file = opened
      originalSize = try opened.size()
      guard originalSize < target else {
        opened.close()
        return
      }
      let chunk = [UInt8](repeating: 0, count: 64 * 1024)
      var size = originalSize
      while size < target {
        let count = Int(min(Int64(chunk.count), target - size))
        try opened.write(count == chunk.count ? chunk : Array(chunk.prefix(count)), at: size)
        size += Int64(count)
      }
      try opened.syncAll()
      opened.close()
    } catch {
      if let file {
        if originalSize == 0 {
          try? fileSystem.removeFile(path)
        } else {
          try? file.truncate(to: originalSize)
        }
        file.close()
      }
      logger.warning(
        "could not set aside the disk space reserve; a full disk may then keep the node from compacting its log",
        metadata: ["path": "\(path)", "bytes": "\(target)", "error": "\(error)"])
    }
  }

  /// Deletes the space reserve so that a snapshot fits on a full disk; false if there was none.
  private func releaseSpaceReserve(because error: StorageError) -> Bool {
    let path = pathInDirectory(StorageFileNames.spaceReserve)
    guard (try? fileSystem.listDirectory(directory))?.contains(StorageFileNames.spaceReserve) == true,
      (try? fileSystem.removeFile(path)) != nil
    else { return false }
    logger.warning(
      "the disk is full; deleted the space reserve to write a snapshot and compact the log",
      metadata: ["path": "\(path)", "error": "\(error)"])
    return true
  }

  // MARK: - Internals

  private var activeSequence: UInt64 { segmentSequences.last ?? 0 }

  private func pathInDirectory(_ name: String) -> String {
    directory.hasSuffix("/") ? directory + name : directory + "/" + name
  }

  private func checkWritable() throws(StorageError) {
    if isClosed { throw .closed }
    if let failure { throw .unusableAfterFailure(cause: failure.description) }
  }

  /// Runs `body`; if it throws, remembers the failure so that no further writes are accepted.
  private func poisoningOnFailure(_ body: () throws(StorageError) -> Void) throws(StorageError) {
    do {
      try body()
    } catch {
      failure = error
      logger.error("storage write failed; refusing further writes", metadata: ["error": "\(error)"])
      throw error
    }
  }

  /// Writes `update` as one record at the end of the active segment (rolling over first if the segment is
  /// full) and `fdatasync`s it.
  private func writeDurably(_ update: LogUpdate) throws(StorageError) {
    let payload = update.encoded()
    guard payload.count <= RecordFraming.maximumPayload else {
      throw .invalidArgument(
        "the write needs a \(payload.count)-byte record, over the \(RecordFraming.maximumPayload)-byte maximum; "
          + "split it into several appends")
    }
    let recordSize = Int64(RecordFraming.headerSize + payload.count)
    try poisoningOnFailure { () throws(StorageError) in
      if activeSize + recordSize > options.segmentSizeLimit && activeSize > activeInitialSize {
        try rollOver()
      }
      let record = RecordFraming.frame(
        type: .update, payload: payload, format: RecordFormat(version: SegmentHeader.version, sequence: activeSequence),
        offset: Int(activeSize))
      try activeFile.write(record, at: activeSize)
      try activeFile.syncData()
      activeSize += Int64(record.count)
      walBytesWritten += Int64(record.count)
    }
  }

  /// Starts a new segment that continues the log after its current last entry and hard state.
  private func rollOver() throws(StorageError) {
    let sequence = activeSequence + 1
    let created = try SegmentCreation.create(
      directory: directory, sequence: sequence, previousIndex: memory.lastIndex, previousTerm: memory.lastTerm,
      hardState: hardState, fileSystem: fileSystem)
    activeFile.close()
    activeFile = created.file
    activeSize = created.size
    activeInitialSize = created.size
    walBytesWritten += created.size
    segmentSequences.append(sequence)
    logger.debug("started WAL segment", metadata: ["path": "\(created.file.path)"])
  }

  /// Deletes snapshots older than the current one and the segments before the first one still needed.
  /// Failures are logged, not thrown: leftover files are harmless and are retried at the next snapshot.
  private func removeObsoleteFiles() {
    if let names = try? fileSystem.listDirectory(directory) {
      for name in names {
        guard let position = StorageFileNames.snapshotPosition(name), position.index < snapshotIndex else { continue }
        do {
          try fileSystem.removeFile(pathInDirectory(name))
        } catch {
          logger.warning("could not delete an old snapshot", metadata: ["error": "\(error)"])
        }
      }
    }
    // A segment is needed if it holds an entry after the snapshot, or comes after one that does (or is active).
    let firstNeeded = memory.entrySegments.first ?? activeSequence
    while let oldest = segmentSequences.first, oldest < firstNeeded, segmentSequences.count > 1 {
      let path = pathInDirectory(StorageFileNames.segment(oldest))
      do {
        try fileSystem.removeFile(path)
      } catch {
        logger.warning("could not delete a compacted WAL segment", metadata: ["error": "\(error)"])
        break
      }
      segmentSequences.removeFirst()
      logger.debug("deleted compacted WAL segment", metadata: ["path": "\(path)"])
    }
    do {
      try fileSystem.syncDirectory(directory)
    } catch {
      logger.warning("could not sync the directory after deleting files", metadata: ["error": "\(error)"])
    }
  }
}

/// A `DurableLog` belongs to one actor; it must not be shared across concurrency domains.
@available(*, unavailable)
extension DurableLog: Sendable {}

// MARK: - Segment creation

/// Creates WAL segment files atomically: header and first hard state record go to a temporary file, which is
/// synced, renamed into place, and the directory synced. A crash leaves either no segment or a whole one.
enum SegmentCreation {
  static func create(
    directory: String, sequence: UInt64, previousIndex: UInt64, previousTerm: UInt64, hardState: StoredHardState,
    fileSystem: any StorageFileSystem
  ) throws(StorageError) -> (file: any StorageFile, size: Int64) {
    let separator = directory.hasSuffix("/") ? "" : "/"
    let path = directory + separator + StorageFileNames.segment(sequence)
    let temporaryPath = path + StorageFileNames.temporarySuffix
    let header = SegmentHeader(sequence: sequence, previousIndex: previousIndex, previousTerm: previousTerm)
    let first = RecordFraming.frame(
      type: .update, payload: LogUpdate(rebase: nil, entries: [], hardState: hardState).encoded(),
      format: header.format, offset: SegmentHeader.size)
    let contents = header.encoded() + first
    let temporary = try fileSystem.openFile(temporaryPath, create: true)
    do {
      defer { temporary.close() }
      try temporary.truncate(to: 0)
      try temporary.write(contents, at: 0)
      try temporary.syncData()
    }
    try fileSystem.rename(temporaryPath, to: path)
    try fileSystem.syncDirectory(directory)
    let file = try fileSystem.openFile(path, create: false)
    return (file, Int64(contents.count))
  }
}
