// Recovery: rebuilds a DurableLog's state from its directory, cutting off a torn tail and refusing anything
// else that does not check out.

import Logging

/// The state `DurableLog.init` starts from.
struct RecoveredLog {
  var lockFile: any StorageFile
  var memory: LogMemory
  var snapshot: StoredSnapshot?
  var segmentSequences: [UInt64]
  var activeFile: any StorageFile
  var activeSize: Int64
  var activeInitialSize: Int64
  var report: RecoveryReport
}

/// One recovery of a data directory. Steps, in order:
/// 1. create the directory if needed and take its `LOCK` (`flock`);
/// 2. load the newest snapshot file, verifying its checksum (a bad one is refused, not skipped);
/// 3. replay the segments in sequence order (a missing sequence number is refused); in the last segment, a
///    record that fails to parse with no valid record anywhere after it is a torn tail; every other bad
///    record is refused with its file and offset;
/// 4. reconcile the log with the snapshot (entries up to the snapshot are dropped; a log that does not hold
///    the snapshot's term at its index is dropped whole);
/// 5. only then repair: delete leftover `*.tmp` files (interrupted snapshot or segment creations, never
///    acknowledged), cut the torn tail off, and write a rebase record if step 4 changed the end of the log,
///    so that the WAL replays to exactly this state next time. A refusal therefore changes no file.
struct Recovery {
  let directory: String
  let options: StorageOptions
  private var fileSystem: any StorageFileSystem { options.fileSystem }
  private var logger: Logger { options.logger }

  init(directory: String, options: StorageOptions) {
    self.directory = directory
    self.options = options
  }

  private func path(_ name: String) -> String {
    directory.hasSuffix("/") ? directory + name : directory + "/" + name
  }

  func run() throws(StorageError) -> RecoveredLog {
    try fileSystem.createDirectory(directory)
    let lockFile = try fileSystem.openFile(path(StorageFileNames.lock), create: true)
    do {
      try lockFile.lockExclusively()
      return try recover(lockFile: lockFile)
    } catch {
      lockFile.close()
      throw error
    }
  }

  private func recover(lockFile: any StorageFile) throws(StorageError) -> RecoveredLog {
    var report = RecoveryReport()
    let names = try fileSystem.listDirectory(directory).sorted()

    let snapshot = try loadNewestSnapshot(names: names, report: &report)
    let snapshotIndex = snapshot?.metadata.index ?? 0
    let snapshotTerm = snapshot?.metadata.term ?? 0

    let allSequences = names.compactMap(StorageFileNames.segmentSequence).sorted()
    guard let lastSequence = allSequences.last else {
      if snapshot != nil { throw .missingWAL(directory: directory) }
      try removeTemporaryFiles(names: names, report: &report)
      return try startEmptyLog(lockFile: lockFile, report: report)
    }
    // Only the run of consecutive segments after the last hole is replayed. A hole is what a power loss
    // leaves when it keeps only some of compaction's unlinks: the segments below it are obsolete, which the
    // snapshot check after replay proves (the run must start at or below the snapshot), or else the hole is
    // a lost segment and recovery refuses.
    var runStart = allSequences.count - 1
    while runStart > 0 && allSequences[runStart - 1] + 1 == allSequences[runStart] { runStart -= 1 }
    let sequences = Array(allSequences[runStart...])
    let staleSequences = Array(allSequences[..<runStart])
    let firstSequence = sequences[0]

    // Replay every segment.
    var memory: LogMemory?
    var tornTail: (offset: Int64, removed: Int64)?
    var lastFormat = RecordFormat(version: SegmentHeader.version, sequence: lastSequence)
    var lastRecordOffset = Int64(SegmentHeader.size)
    for sequence in sequences {
      let segmentPath = path(StorageFileNames.segment(sequence))
      report.segmentPaths.append(segmentPath)
      let outcome = try replaySegment(
        path: segmentPath, sequence: sequence, isLast: sequence == lastSequence, memory: &memory)
      report.recordCount += outcome.records
      if let torn = outcome.tornTail { tornTail = torn }
      lastFormat = outcome.format
      lastRecordOffset = outcome.lastRecordOffset
    }
    guard var log = memory else { throw .missingWAL(directory: directory) }
    let replayedEnd = (log.lastIndex, log.lastTerm)

    // Reconcile with the snapshot.
    let firstPath = path(StorageFileNames.segment(firstSequence))
    if snapshotIndex < log.baseIndex {
      if !staleSequences.isEmpty {
        throw .missingSegment(path: path(StorageFileNames.segment(firstSequence - 1)), sequence: firstSequence - 1)
      }
      throw .inconsistentLog(
        path: firstPath, offset: 0,
        reason: "the WAL continues the log after index \(log.baseIndex), but entries \(snapshotIndex + 1)..."
          + "\(log.baseIndex) are in no snapshot (the latest snapshot is at index \(snapshotIndex))")
    }
    log.compact(through: snapshotIndex, term: snapshotTerm)

    // Everything checked out: from here on recovery repairs.
    try removeTemporaryFiles(names: names, report: &report)
    try removeStaleSegments(staleSequences, report: &report)

    // Open the last segment for appending, cutting a torn tail off first.
    let lastPath = path(StorageFileNames.segment(lastSequence))
    let activeFile = try fileSystem.openFile(lastPath, create: false)
    do {
      var activeSize = try activeFile.size()
      if let tornTail {
        logger.warning(
          "cutting off a torn WAL tail (a write interrupted by a crash)",
          metadata: ["path": "\(lastPath)", "offset": "\(tornTail.offset)", "bytes": "\(tornTail.removed)"])
        try activeFile.truncate(to: tornTail.offset)
        try activeFile.syncData()
        activeSize = tornTail.offset
        report.tornSegmentPath = lastPath
        report.tornTailOffset = tornTail.offset
        report.tornBytesRemoved = tornTail.removed
      }
      if replayedEnd != (log.lastIndex, log.lastTerm) {
        // The snapshot is ahead of, or conflicts with, the replayed log (a crash between writing a snapshot
        // and its rebase record): record the rebase now so the WAL alone replays to this state.
        let record = RecordFraming.frame(
          type: .update,
          payload: LogUpdate(rebase: (snapshotIndex, snapshotTerm), entries: [], hardState: nil).encoded(),
          format: lastFormat, offset: Int(activeSize))
        try activeFile.write(record, at: activeSize)
        try activeFile.syncData()
        activeSize += Int64(record.count)
      }
      try rewriteTail(of: activeFile, from: lastRecordOffset, to: activeSize, report: &report)
      // Directory entries this recovery saw (a renamed segment or snapshot whose directory fsync failed
      // before the restart) are made durable too.
      try fileSystem.syncDirectory(directory)
      guard lastFormat.version < SegmentHeader.version else {
        return RecoveredLog(
          lockFile: lockFile, memory: log, snapshot: snapshot, segmentSequences: sequences, activeFile: activeFile,
          activeSize: activeSize, activeInitialSize: Int64(SegmentHeader.size), report: report)
      }
      // The last segment is of an older format: new records go to a new segment of the current one, and the
      // old segments are read as they are until compaction deletes them.
      let created = try SegmentCreation.create(
        directory: directory, sequence: lastSequence + 1, previousIndex: log.lastIndex, previousTerm: log.lastTerm,
        hardState: log.hardState ?? .initial, fileSystem: fileSystem)
      activeFile.close()
      report.upgradeSegmentPath = created.file.path
      logger.notice(
        "WAL format upgrade: the last segment has an older format version; new records go to a new segment",
        metadata: [
          "path": "\(created.file.path)", "old version": "\(lastFormat.version)",
          "new version": "\(SegmentHeader.version)",
        ])
      return RecoveredLog(
        lockFile: lockFile, memory: log, snapshot: snapshot, segmentSequences: sequences + [lastSequence + 1],
        activeFile: created.file, activeSize: created.size, activeInitialSize: created.size, report: report)
    } catch {
      activeFile.close()
      throw error
    }
  }

  /// Writes the last segment's bytes from the page holding its last record to `end` again and `fdatasync`s
  /// them. After a failed `fdatasync` Linux may have marked the record's pages clean without writing them
  /// ("fsyncgate"), so what recovery just read from the page cache need not be on disk, and a later sync
  /// would not write it: rewriting dirties the pages again. The WAL stops writing at its first failure, so
  /// only the last record can have been caught by one; the whole 4 KiB page it starts in is rewritten, in
  /// case the failed writeback damaged the end of the record before it. Costs one small write and one
  /// `fdatasync` per start; if the disk still fails, the start fails with the I/O error.
  private func rewriteTail(
    of file: any StorageFile, from lastRecord: Int64, to end: Int64, report: inout RecoveryReport
  )
    throws(StorageError)
  {
    let start = lastRecord - lastRecord % 4096
    guard end > start else { return }
    let bytes = try file.read(at: start, count: Int(end - start))
    try file.write(bytes, at: start)
    try file.syncData()
    report.rewrittenTailBytes = Int64(bytes.count)
  }

  /// Deletes `*.tmp` files: interrupted snapshot or segment creations, never acknowledged.
  private func removeTemporaryFiles(names: [String], report: inout RecoveryReport) throws(StorageError) {
    for name in names where name.hasSuffix(StorageFileNames.temporarySuffix) {
      try fileSystem.removeFile(path(name))
      report.removedTemporaryFiles.append(path(name))
      logger.notice("removed an interrupted temporary file", metadata: ["path": "\(path(name))"])
    }
  }

  /// Deletes the segments below a hole (compacted ones whose unlinks a power loss partly undid), then syncs the
  /// directory. Whatever subset of them a crash in between keeps is still below the replayed run.
  private func removeStaleSegments(_ sequences: [UInt64], report: inout RecoveryReport) throws(StorageError) {
    guard !sequences.isEmpty else { return }
    for sequence in sequences {
      let stalePath = path(StorageFileNames.segment(sequence))
      try fileSystem.removeFile(stalePath)
      report.removedStaleSegments.append(stalePath)
    }
    try fileSystem.syncDirectory(directory)
    logger.notice(
      "deleted compacted WAL segments left below a hole by a crash during compaction",
      metadata: ["segments": "\(report.removedStaleSegments)"])
  }

  private func startEmptyLog(lockFile: any StorageFile, report: RecoveryReport) throws(StorageError) -> RecoveredLog {
    let created = try SegmentCreation.create(
      directory: directory, sequence: 1, previousIndex: 0, previousTerm: 0, hardState: .initial,
      fileSystem: fileSystem)
    var memory = LogMemory(baseIndex: 0, baseTerm: 0)
    memory.hardState = .initial
    var report = report
    report.segmentPaths = [created.file.path]
    report.recordCount = 1
    return RecoveredLog(
      lockFile: lockFile, memory: memory, snapshot: nil, segmentSequences: [1], activeFile: created.file,
      activeSize: created.size, activeInitialSize: created.size, report: report)
  }

  // MARK: - Snapshot

  private func loadNewestSnapshot(names: [String], report: inout RecoveryReport) throws(StorageError)
    -> StoredSnapshot?
  {
    let candidates = names.compactMap { name in StorageFileNames.snapshotPosition(name).map { (name, $0) } }
    guard let (name, position) = candidates.max(by: { $0.1.index < $1.1.index }) else { return nil }
    let snapshotPath = path(name)
    let bytes = try readWholeFile(snapshotPath)
    let snapshot: StoredSnapshot
    do {
      snapshot = try SnapshotFile.decode(bytes)
    } catch {
      throw .corruptSnapshot(path: snapshotPath, reason: error.reason)
    }
    guard snapshot.metadata.index == position.index, snapshot.metadata.term == position.term else {
      throw .corruptSnapshot(
        path: snapshotPath,
        reason: "it holds index \(snapshot.metadata.index) term \(snapshot.metadata.term), not what its name says")
    }
    report.snapshotPath = snapshotPath
    return snapshot
  }

  private func readWholeFile(_ path: String) throws(StorageError) -> [UInt8] {
    let file = try fileSystem.openFile(path, create: false)
    defer { file.close() }
    let size = try file.size()
    return try file.read(at: 0, count: Int(size))
  }

  // MARK: - Segment replay

  private struct SegmentOutcome {
    var records = 0
    var tornTail: (offset: Int64, removed: Int64)?
    var format: RecordFormat
    /// Where the last valid record starts.
    var lastRecordOffset = Int64(SegmentHeader.size)
  }

  /// Replays one segment into `memory` (created from the header of the first segment).
  private func replaySegment(path: String, sequence: UInt64, isLast: Bool, memory: inout LogMemory?)
    throws(StorageError) -> SegmentOutcome
  {
    let bytes = try readWholeFile(path)
    let header: SegmentHeader
    do {
      header = try SegmentHeader.decode(bytes)
    } catch {
      throw .corruptSegmentHeader(path: path, reason: error.reason)
    }
    guard header.sequence == sequence else {
      throw .corruptSegmentHeader(path: path, reason: "its header says sequence \(header.sequence)")
    }
    var log = memory ?? LogMemory(baseIndex: header.previousIndex, baseTerm: header.previousTerm)
    guard header.previousIndex == log.lastIndex, header.previousTerm == log.lastTerm else {
      throw .inconsistentLog(
        path: path, offset: 0,
        reason: "the segment continues the log after index \(header.previousIndex) term \(header.previousTerm), "
          + "but the segments before it end at index \(log.lastIndex) term \(log.lastTerm)")
    }
    var outcome = SegmentOutcome(format: header.format)
    var offset = SegmentHeader.size
    while offset < bytes.count {
      switch RecordFraming.parse(bytes, at: offset, format: header.format) {
      case .valid(_, let payload, let end):
        let update: LogUpdate
        do {
          update = try LogUpdate.decode(payload)
        } catch {
          throw .corruptRecord(
            path: path, offset: Int64(offset), reason: "the record's checksum is valid but \(error.reason)")
        }
        if let problem = log.apply(update, segment: sequence) {
          throw .inconsistentLog(path: path, offset: Int64(offset), reason: problem)
        }
        outcome.records += 1
        outcome.lastRecordOffset = Int64(offset)
        offset = end
      case .invalid(let reason):
        guard isLast else {
          throw .corruptRecord(
            path: path, offset: Int64(offset), reason: "\(reason), in a segment that is not the last one")
        }
        if let valid = RecordFraming.firstValidRecord(in: bytes, after: offset, format: header.format) {
          throw .corruptRecord(
            path: path, offset: Int64(offset), reason: "\(reason), and a valid record follows at offset \(valid)")
        }
        outcome.tornTail = (Int64(offset), Int64(bytes.count - offset))
        memory = log
        return outcome
      }
    }
    memory = log
    return outcome
  }
}
