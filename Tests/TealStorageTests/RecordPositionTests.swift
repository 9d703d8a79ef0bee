// Record checksums are seeded with the record's segment and offset (format version 2), so a valid record
// image left in a reused block is never read as current; version 1 segments are still read, and upgraded.

import Foundation
import Testing

@testable import TealStorage

@Suite("Record positions and format versions")
struct RecordPositionTests {
  /// Writes a log whose hard state moves from term 2 (vote n2) to term 3 (vote n1); returns the bytes of the
  /// term-2 hard state record and the path of the segment holding it. With `rollOverAfterIt`, enough entries
  /// follow for the active segment to be a later one.
  private func writeLog(in directory: String, rollOverAfterIt: Bool) throws -> (record: [UInt8], segment: String) {
    let log = try DurableLog(directory: directory, options: quietOptions(segmentSizeLimit: 600))
    defer { log.close() }
    try log.append(entries: makeEntries(1...3, term: 1), hardState: StoredHardState(term: 1, vote: "n3", commit: 3))
    let segment = try #require(try segmentPaths(in: directory).last)
    let start = try fileSize(segment)
    try log.append(entries: [], hardState: StoredHardState(term: 2, vote: "n2", commit: 3))
    let record = Array(try readBytes(segment)[start...])
    try log.append(entries: [], hardState: StoredHardState(term: 3, vote: "n1", commit: 3))
    if rollOverAfterIt {
      var index: UInt64 = 4
      while try segmentPaths(in: directory).last == segment {
        try log.append(entries: makeEntries(index...index, term: 3, payloadSize: 60))
        index += 1
      }
    }
    return (record, segment)
  }

  @Test(
    "a valid record image copied to a later offset of its segment or into a later segment is cut off, not replayed",
    arguments: [false, true])
  func staleRecordImageIsNotCurrent(intoLaterSegment: Bool) throws {
    try withTemporaryDirectory { directory in
      let (record, segment) = try writeLog(in: directory, rollOverAfterIt: intoLaterSegment)
      let expected: ExpectedLogState
      do {
        let log = try DurableLog(directory: directory, options: quietOptions(segmentSizeLimit: 600))
        expected = ExpectedLogState(log)
        log.close()
      }
      #expect(expected.hardState == StoredHardState(term: 3, vote: "n1", commit: 3))
      // A reused block shows the old record image at the end of the active segment.
      let active = try #require(try segmentPaths(in: directory).last)
      #expect((active != segment) == intoLaterSegment)
      let activeSize = try fileSize(active)
      try writeBytes(try readBytes(active) + record, to: active)

      let log = try DurableLog(directory: directory, options: quietOptions(segmentSizeLimit: 600))
      defer { log.close() }
      #expect(ExpectedLogState(log) == expected, "the stale term-2 vote must not come back")
      #expect(log.recoveryReport.tornBytesRemoved == Int64(record.count))
      #expect(try fileSize(active) == activeSize)
    }
  }

  /// A version 1 segment (checksums not seeded) holding `updates`, as Teal wrote them before version 2.
  private func writeVersion1Segment(sequence: UInt64, _ updates: [LogUpdate], in directory: String) throws {
    let header = SegmentHeader(version: 1, sequence: sequence, previousIndex: 0, previousTerm: 0)
    var bytes = header.encoded()
    for update in updates {
      bytes += RecordFraming.frame(type: .update, payload: update.encoded(), format: header.format, offset: bytes.count)
    }
    try writeBytes(bytes, to: directory + "/" + StorageFileNames.segment(sequence))
  }

  @Test("a version 1 log is read whole, new records go to a new version 2 segment, and it reopens")
  func version1LogIsUpgraded() throws {
    try withTemporaryDirectory { directory in
      let hardState = StoredHardState(term: 2, vote: "n1", commit: 4)
      try writeVersion1Segment(
        sequence: 1,
        [
          LogUpdate(rebase: nil, entries: [], hardState: .initial),
          LogUpdate(rebase: nil, entries: makeEntries(1...5, term: 1), hardState: nil),
          LogUpdate(rebase: nil, entries: makeEntries(6...6, term: 2), hardState: hardState),
        ], in: directory)
      // A torn tail in the old format is cut as before.
      let old = directory + "/" + StorageFileNames.segment(1)
      let oldSize = try fileSize(old)
      try writeBytes(try readBytes(old) + [7, 0, 0, 0, 1], to: old)
      do {
        let log = try DurableLog(directory: directory, options: quietOptions())
        #expect(log.entries == makeEntries(1...5, term: 1) + makeEntries(6...6, term: 2))
        #expect(log.hardState == hardState)
        #expect(log.recoveryReport.tornBytesRemoved == 5)
        #expect(try fileSize(old) == oldSize)
        #expect(try segmentPaths(in: directory).count == 2, "a version 2 segment takes the new records")
        try log.append(entries: makeEntries(7...8, term: 2), hardState: StoredHardState(term: 2, vote: "n1", commit: 8))
        log.close()
      }
      let newSegment = try readBytes(directory + "/" + StorageFileNames.segment(2))
      #expect(try SegmentHeader.decode(newSegment).version == 2)
      let log = try DurableLog(directory: directory, options: quietOptions())
      #expect(log.entries.map(\.index) == Array(1...8))
      #expect(log.hardState == StoredHardState(term: 2, vote: "n1", commit: 8))
      #expect(try segmentPaths(in: directory).count == 2, "no further segment once the active one is version 2")
      // Compaction past the old segment's entries deletes it.
      try log.saveSnapshot(metadata: SnapshotMetadata(index: 7, term: 2, configuration: []), data: [])
      #expect(try segmentPaths(in: directory) == [directory + "/" + StorageFileNames.segment(2)])
      log.close()
      let reopened = try DurableLog(directory: directory, options: quietOptions())
      #expect(reopened.entries.map(\.index) == [8])
      reopened.close()
    }
  }

  @Test("a segment of an unknown (newer) format version is refused with what to do")
  func newerVersionIsRefused() throws {
    try withTemporaryDirectory { directory in
      let header = SegmentHeader(version: 3, sequence: 1, previousIndex: 0, previousTerm: 0)
      let path = directory + "/" + StorageFileNames.segment(1)
      try writeBytes(header.encoded(), to: path)
      guard case .corruptSegmentHeader(let reported, let reason) = openingError(directory) else {
        Issue.record("expected corruptSegmentHeader")
        return
      }
      #expect(reported == path)
      #expect(reason.contains("version 3"))
      #expect(reason.contains("newer"))
      #expect(try fileSize(path) == SegmentHeader.size, "a refusal changes no file")
    }
  }

  @Test("a version 1 record image is not valid in a version 2 segment at the same place")
  func formatsDoNotMix() {
    let payload = LogUpdate(rebase: nil, entries: [], hardState: .initial).encoded()
    let version1 = RecordFormat(version: 1, sequence: 1)
    let version2 = RecordFormat(version: 2, sequence: 1)
    let image = RecordFraming.frame(type: .update, payload: payload, format: version1, offset: 48)
    let bytes = [UInt8](repeating: 0, count: 48) + image
    if case .valid = RecordFraming.parse(bytes, at: 48, format: version2) { Issue.record("v1 image valid in v2") }
    guard case .valid = RecordFraming.parse(bytes, at: 48, format: version1) else {
      Issue.record("v1 image invalid in v1")
      return
    }
    let moved =
      [UInt8](repeating: 0, count: 60)
      + RecordFraming.frame(
        type: .update, payload: payload, format: version2, offset: 48)
    if case .valid = RecordFraming.parse(moved, at: 60, format: version2) { Issue.record("moved image valid") }
    let otherSegment = RecordFormat(version: 2, sequence: 2)
    let placed = bytes.prefix(48) + RecordFraming.frame(type: .update, payload: payload, format: version2, offset: 48)
    if case .valid = RecordFraming.parse(Array(placed), at: 48, format: otherSegment) {
      Issue.record("image valid in another segment")
    }
  }
}
