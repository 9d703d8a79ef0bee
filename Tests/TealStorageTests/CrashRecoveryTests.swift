// Crash tests on real WAL files: torn tails at every byte offset, damage in the middle, broken segment
// sequences and logs that do not add up.

import Foundation
import Testing

@testable import TealStorage

/// The state of a single-segment log after one operation, and the segment's size at that moment.
struct Checkpoint {
  var segmentSize: Int
  var state: ExpectedLogState
}

/// Runs `operations` on a fresh log in `directory` (one segment), recording a checkpoint after each.
func recordCheckpoints(in directory: String, _ operations: [(DurableLog) throws -> Void]) throws -> [Checkpoint] {
  let log = try DurableLog(directory: directory, options: quietOptions())
  defer { log.close() }
  let segment = try #require(try segmentPaths(in: directory).first)
  var checkpoints = [Checkpoint(segmentSize: try fileSize(segment), state: ExpectedLogState(log))]
  for operation in operations {
    try operation(log)
    checkpoints.append(Checkpoint(segmentSize: try fileSize(segment), state: ExpectedLogState(log)))
  }
  #expect(try segmentPaths(in: directory).count == 1, "the cut tests expect a single segment")
  return checkpoints
}

/// Cuts a copy of the segment at every byte offset from `checkpoints[first]` to its full length and checks
/// that recovery shows exactly the state of the last operation that was complete before the cut.
func expectEveryCutRecoversAPrefix(
  segment original: [UInt8], checkpoints: [Checkpoint], from first: Int,
  extraCheck: (Int, DurableLog) -> Void = { _, _ in }
) throws {
  try withTemporaryDirectory { directory in
    let segment = directory + "/" + StorageFileNames.segment(1)
    let start = checkpoints[first].segmentSize
    #expect(original.count == checkpoints.last?.segmentSize)
    for cut in start...original.count {
      try? FileManager.default.removeItem(atPath: directory + "/LOCK")
      try writeBytes(Array(original[..<cut]), to: segment)
      let complete = try #require(checkpoints.last { $0.segmentSize <= cut })
      let log = try DurableLog(directory: directory, options: quietOptions())
      defer { log.close() }
      #expect(ExpectedLogState(log) == complete.state, "cut at \(cut)")
      #expect(log.recoveryReport.tornBytesRemoved == Int64(cut - complete.segmentSize), "cut at \(cut)")
      #expect(try fileSize(segment) == complete.segmentSize, "cut at \(cut): the torn tail is removed from disk")
      extraCheck(cut, log)
    }
  }
}

/// The error of opening `directory`, which must fail.
func openingError(_ directory: String, segmentSizeLimit: Int64 = StorageOptions.defaultSegmentSizeLimit)
  -> StorageError?
{
  do {
    let log = try DurableLog(directory: directory, options: quietOptions(segmentSizeLimit: segmentSizeLimit))
    log.close()
    return nil
  } catch {
    return error
  }
}

@Suite("Crash recovery of the WAL")
struct CrashRecoveryTests {
  @Test("a WAL cut at every byte offset of its last records recovers every complete record and nothing after")
  func tornTailAtEveryOffset() throws {
    try withTemporaryDirectory { directory in
      let checkpoints = try recordCheckpoints(
        in: directory,
        [
          {
            try $0.append(
              entries: makeEntries(1...3, term: 1), hardState: StoredHardState(term: 1, vote: "a", commit: 0))
          },
          { try $0.append(entries: makeEntries(4...5, term: 1, payloadSize: 40), hardState: nil) },
          { try $0.append(entries: [], hardState: StoredHardState(term: 2, vote: "node-b", commit: 3)) },
          { try $0.append(entries: makeEntries(5...6, term: 2), hardState: nil) },
          {
            try $0.append(
              entries: makeEntries(7...7, term: 2), hardState: StoredHardState(term: 2, vote: "b", commit: 6))
          },
        ])
      let original = try readBytes(try segmentPaths(in: directory)[0])
      try expectEveryCutRecoversAPrefix(segment: original, checkpoints: checkpoints, from: 1)
    }
  }

  @Test("a log recovered from a torn tail accepts new appends that survive the next recovery")
  func appendAfterTornTail() throws {
    try withTemporaryDirectory { directory in
      do {
        let log = try DurableLog(directory: directory, options: quietOptions())
        try log.append(entries: makeEntries(1...4, term: 1))
        try log.append(entries: makeEntries(5...8, term: 1))
        log.close()
      }
      let segment = try segmentPaths(in: directory)[0]
      let bytes = try readBytes(segment)
      try writeBytes(Array(bytes.dropLast(7)), to: segment)
      do {
        let log = try DurableLog(directory: directory, options: quietOptions())
        #expect(log.lastIndex == 4)
        try log.append(entries: makeEntries(5...6, term: 2))
        log.close()
      }
      let log = try DurableLog(directory: directory, options: quietOptions())
      defer { log.close() }
      #expect(log.entries == makeEntries(1...4, term: 1) + makeEntries(5...6, term: 2))
      #expect(log.recoveryReport.tornBytesRemoved == 0)
    }
  }

  @Test("a zero-filled tail (a file extended but never written) is treated as torn")
  func zeroFilledTail() throws {
    try withTemporaryDirectory { directory in
      let state: ExpectedLogState
      do {
        let log = try DurableLog(directory: directory, options: quietOptions())
        try log.append(entries: makeEntries(1...3, term: 1), hardState: StoredHardState(term: 1, vote: nil, commit: 1))
        state = ExpectedLogState(log)
        log.close()
      }
      let segment = try segmentPaths(in: directory)[0]
      let size = try fileSize(segment)
      try writeBytes(try readBytes(segment) + [UInt8](repeating: 0, count: 4096), to: segment)
      let log = try DurableLog(directory: directory, options: quietOptions())
      defer { log.close() }
      #expect(ExpectedLogState(log) == state)
      #expect(log.recoveryReport.tornBytesRemoved == 4096)
      #expect(log.recoveryReport.tornTailOffset == Int64(size))
    }
  }

  @Test("flipping any byte of a record followed by valid records makes open fail naming the file and offset")
  func corruptionInTheMiddleIsRefused() throws {
    try withTemporaryDirectory { directory in
      let checkpoints = try recordCheckpoints(
        in: directory,
        [
          {
            try $0.append(
              entries: makeEntries(1...2, term: 1), hardState: StoredHardState(term: 1, vote: "a", commit: 0))
          },
          {
            try $0.append(
              entries: makeEntries(3...4, term: 1), hardState: StoredHardState(term: 1, vote: "a", commit: 2))
          },
          { try $0.append(entries: makeEntries(5...5, term: 1), hardState: nil) },
        ])
      let segment = try segmentPaths(in: directory)[0]
      let original = try readBytes(segment)
      let recordStart = checkpoints[1].segmentSize
      let recordEnd = checkpoints[2].segmentSize
      for position in recordStart..<recordEnd {
        var damaged = original
        damaged[position] ^= 0x5A
        try writeBytes(damaged, to: segment)
        let error = openingError(directory)
        guard case .corruptRecord(let path, let offset, let reason) = error else {
          Issue.record("flipping byte \(position): expected corruptRecord, got \(String(describing: error))")
          continue
        }
        #expect(path == segment)
        #expect(offset == Int64(recordStart), "flipping byte \(position)")
        #expect(reason.contains("valid record follows"))
        #expect(error?.description.contains("\(segment) at byte offset \(recordStart)") == true)
      }
      // The file is left as it was found: nothing is cut off on refusal.
      #expect(try fileSize(segment) == original.count)
    }
  }

  @Test("damage inside the last record is indistinguishable from a torn write and is cut off")
  func damagedLastRecordIsCutOff() throws {
    try withTemporaryDirectory { directory in
      let checkpoints = try recordCheckpoints(
        in: directory,
        [
          { try $0.append(entries: makeEntries(1...2, term: 1)) },
          { try $0.append(entries: makeEntries(3...4, term: 1)) },
        ])
      let segment = try segmentPaths(in: directory)[0]
      var bytes = try readBytes(segment)
      bytes[checkpoints[1].segmentSize + 20] ^= 0x01
      try writeBytes(bytes, to: segment)
      let log = try DurableLog(directory: directory, options: quietOptions())
      defer { log.close() }
      #expect(ExpectedLogState(log) == checkpoints[1].state)
      #expect(log.recoveryReport.tornTailOffset == Int64(checkpoints[1].segmentSize))
    }
  }

  /// Writes 30 single-entry appends with a 512-byte segment limit and returns the segment paths.
  private func writeSeveralSegments(in directory: String) throws -> [String] {
    let log = try DurableLog(directory: directory, options: quietOptions(segmentSizeLimit: 512))
    defer { log.close() }
    for index in UInt64(1)...30 { try log.append(entries: makeEntries(index...index, term: 1, payloadSize: 60)) }
    let paths = try segmentPaths(in: directory)
    #expect(paths.count >= 4)
    return paths
  }

  @Test("a damaged last record of a segment that is not the last one makes open fail")
  func corruptionInAnEarlierSegmentIsRefused() throws {
    try withTemporaryDirectory { directory in
      let paths = try writeSeveralSegments(in: directory)
      var bytes = try readBytes(paths[1])
      bytes[bytes.count - 3] ^= 0x10
      try writeBytes(bytes, to: paths[1])
      let error = openingError(directory, segmentSizeLimit: 512)
      guard case .corruptRecord(let path, let offset, let reason) = error else {
        Issue.record("expected corruptRecord, got \(String(describing: error))")
        return
      }
      #expect(path == paths[1])
      #expect(offset > 0 && offset < Int64(bytes.count))
      #expect(reason.contains("not the last"))
    }
  }

  @Test("a segment that is not the last one and ends short makes open fail")
  func shortEarlierSegmentIsRefused() throws {
    try withTemporaryDirectory { directory in
      let paths = try writeSeveralSegments(in: directory)
      let bytes = try readBytes(paths[0])
      try writeBytes(Array(bytes.dropLast(1)), to: paths[0])
      guard case .corruptRecord(let path, _, _) = openingError(directory) else {
        Issue.record("expected corruptRecord")
        return
      }
      #expect(path == paths[0])
    }
  }

  @Test("a missing segment in the sequence makes open fail naming it")
  func missingSegmentIsRefused() throws {
    try withTemporaryDirectory { directory in
      let paths = try writeSeveralSegments(in: directory)
      try FileManager.default.removeItem(atPath: paths[2])
      let temporary = directory + "/" + StorageFileNames.snapshot(index: 9, term: 1) + ".tmp"
      try writeBytes([1, 2, 3], to: temporary)
      #expect(openingError(directory) == .missingSegment(path: paths[2], sequence: 3))
      #expect(FileManager.default.fileExists(atPath: temporary), "a refusal changes no file")
    }
  }

  @Test("a damaged segment header makes open fail naming the file")
  func corruptHeaderIsRefused() throws {
    try withTemporaryDirectory { directory in
      let paths = try writeSeveralSegments(in: directory)
      var bytes = try readBytes(paths[3])
      bytes[30] ^= 0x01
      try writeBytes(bytes, to: paths[3])
      guard case .corruptSegmentHeader(let path, let reason) = openingError(directory) else {
        Issue.record("expected corruptSegmentHeader")
        return
      }
      #expect(path == paths[3])
      #expect(reason.contains("checksum"))
    }
  }

  @Test("the WAL with only snapshots and no segment is refused (the vote would be lost)")
  func snapshotsWithoutWALAreRefused() throws {
    try withTemporaryDirectory { directory in
      do {
        let log = try DurableLog(directory: directory, options: quietOptions())
        try log.append(entries: makeEntries(1...3, term: 1))
        try log.saveSnapshot(metadata: SnapshotMetadata(index: 3, term: 1, configuration: []), data: [])
        log.close()
      }
      for path in try segmentPaths(in: directory) { try FileManager.default.removeItem(atPath: path) }
      #expect(openingError(directory) == .missingWAL(directory: directory))
    }
  }

  /// Writes a hand-made segment 1 holding `updates`, each as its own record; returns the record offsets.
  @discardableResult
  private func writeHandMadeSegment(_ updates: [LogUpdate], in directory: String) throws -> [Int] {
    let header = SegmentHeader(sequence: 1, previousIndex: 0, previousTerm: 0)
    var bytes = header.encoded()
    var offsets: [Int] = []
    for update in updates {
      offsets.append(bytes.count)
      bytes += RecordFraming.frame(type: .update, payload: update.encoded(), format: header.format, offset: bytes.count)
    }
    try writeBytes(bytes, to: directory + "/" + StorageFileNames.segment(1))
    return offsets
  }

  @Test("a record whose checksum is valid but whose contents do not decode makes open fail")
  func undecodableRecordIsRefused() throws {
    try withTemporaryDirectory { directory in
      var payload = ByteWriter()
      payload.u8(2)  // has hard state
      payload.u64(1)
      payload.u64(0)
      payload.u8(1)  // has vote
      payload.u16(2)
      payload.raw([0xFF, 0xFE])  // not UTF-8
      payload.u32(0)
      let header = SegmentHeader(sequence: 1, previousIndex: 0, previousTerm: 0)
      var bytes = header.encoded()
      bytes += RecordFraming.frame(type: .update, payload: payload.bytes, format: header.format, offset: bytes.count)
      try writeBytes(bytes, to: directory + "/" + StorageFileNames.segment(1))
      guard case .corruptRecord(_, let offset, let reason) = openingError(directory) else {
        Issue.record("expected corruptRecord")
        return
      }
      #expect(offset == Int64(SegmentHeader.size))
      #expect(reason.contains("UTF-8"))
    }
  }

  @Test("an index gap between records makes open fail naming the file and offset")
  func indexGapIsRefused() throws {
    try withTemporaryDirectory { directory in
      let offsets = try writeHandMadeSegment(
        [
          LogUpdate(rebase: nil, entries: makeEntries(1...2, term: 1), hardState: .initial),
          LogUpdate(rebase: nil, entries: makeEntries(4...4, term: 1), hardState: nil),
          LogUpdate(rebase: nil, entries: makeEntries(5...5, term: 1), hardState: nil),
        ], in: directory)
      let segment = directory + "/" + StorageFileNames.segment(1)
      guard case .inconsistentLog(let path, let offset, let reason) = openingError(directory) else {
        Issue.record("expected inconsistentLog")
        return
      }
      #expect(path == segment)
      #expect(offset == Int64(offsets[1]))
      #expect(reason.contains("gap"))
    }
  }

  @Test("an index going backwards without a truncation record makes open fail")
  func indexGoingBackwardsIsRefused() throws {
    try withTemporaryDirectory { directory in
      let offsets = try writeHandMadeSegment(
        [
          LogUpdate(rebase: nil, entries: makeEntries(1...3, term: 1), hardState: nil),
          LogUpdate(rebase: nil, entries: makeEntries(2...2, term: 2), hardState: nil),
        ], in: directory)
      guard case .inconsistentLog(_, let offset, let reason) = openingError(directory) else {
        Issue.record("expected inconsistentLog")
        return
      }
      #expect(offset == Int64(offsets[1]))
      #expect(reason.contains("backwards"))
    }
  }

  @Test("a term going backwards makes open fail")
  func termGoingBackwardsIsRefused() throws {
    try withTemporaryDirectory { directory in
      try writeHandMadeSegment(
        [LogUpdate(rebase: nil, entries: makeEntries(1...1, term: 3) + makeEntries(2...2, term: 2), hardState: nil)],
        in: directory)
      guard case .inconsistentLog(_, _, let reason) = openingError(directory) else {
        Issue.record("expected inconsistentLog")
        return
      }
      #expect(reason.contains("term"))
    }
  }

  @Test("after a suffix truncation returns, no crash point resurrects the old suffix")
  func truncatedSuffixNeverComesBack() throws {
    try withTemporaryDirectory { directory in
      let checkpoints = try recordCheckpoints(
        in: directory,
        [
          {
            try $0.append(
              entries: makeEntries(1...5, term: 1), hardState: StoredHardState(term: 1, vote: "a", commit: 3))
          },
          { try $0.append(entries: makeEntries(6...10, term: 1), hardState: nil) },
          { try $0.truncateSuffix(from: 6) },
          {
            try $0.append(
              entries: makeEntries(6...7, term: 2), hardState: StoredHardState(term: 2, vote: "b", commit: 3))
          },
          { try $0.append(entries: makeEntries(8...8, term: 2), hardState: nil) },
        ])
      #expect(checkpoints[3].state.entries == makeEntries(1...5, term: 1))
      let truncationDone = checkpoints[3].segmentSize
      let original = try readBytes(try segmentPaths(in: directory)[0])
      try expectEveryCutRecoversAPrefix(segment: original, checkpoints: checkpoints, from: 2) { cut, log in
        if cut >= truncationDone {
          #expect(!log.entries.contains { $0.index >= 6 && $0.term == 1 }, "cut at \(cut) resurrected the old suffix")
        }
      }
    }
  }
}
