// What a DurableLog stores comes back after close and reopen; reads and argument checks behave as documented.

import Foundation
import Testing

@testable import TealStorage

@Suite("DurableLog round trips and API rules")
struct RoundTripTests {
  @Test("a new directory opens as an empty log with the initial hard state")
  func newDirectoryIsEmpty() throws {
    try withTemporaryDirectory { directory in
      let log = try DurableLog(directory: directory + "/node", options: quietOptions())
      defer { log.close() }
      #expect(log.entries.isEmpty)
      #expect(log.hardState == .initial)
      #expect(log.snapshot == nil)
      #expect(log.firstIndex == 1)
      #expect(log.lastIndex == 0)
      #expect(log.lastTerm == 0)
      #expect(try segmentPaths(in: directory + "/node").count == 1)
    }
  }

  @Test("entries, hard state and snapshot survive close and reopen")
  func roundTrip() throws {
    try withTemporaryDirectory { directory in
      let written: ExpectedLogState
      let snapshot = StoredSnapshot(
        metadata: SnapshotMetadata(index: 3, term: 1, configuration: Array("n1,n2,n3".utf8)),
        data: Array("state at 3".utf8))
      do {
        let log = try DurableLog(directory: directory, options: quietOptions())
        try log.append(entries: makeEntries(1...4, term: 1), hardState: StoredHardState(term: 1, vote: "n2", commit: 0))
        try log.append(entries: makeEntries(5...9, term: 2, payloadSize: 300), hardState: nil)
        try log.append(entries: [], hardState: StoredHardState(term: 2, vote: nil, commit: 7))
        try log.saveSnapshot(metadata: snapshot.metadata, data: snapshot.data)
        try log.append(entries: [StoredEntry(index: 10, term: 2, kind: 9, payload: [])], hardState: nil)
        written = ExpectedLogState(log)
        log.close()
      }
      let reopened = try DurableLog(directory: directory, options: quietOptions())
      defer { reopened.close() }
      #expect(ExpectedLogState(reopened) == written)
      #expect(reopened.entries.map(\.index) == Array(4...10))
      #expect(reopened.entries.last == StoredEntry(index: 10, term: 2, kind: 9, payload: []))
      #expect(reopened.hardState == StoredHardState(term: 2, vote: nil, commit: 7))
      #expect(reopened.snapshot == snapshot)
      #expect(reopened.firstIndex == 4)
      #expect(reopened.lastIndex == 10)
      #expect(reopened.lastTerm == 2)
      #expect(reopened.recoveryReport.tornSegmentPath == nil)
    }
  }

  @Test("a vote of an empty string is kept apart from no vote")
  func emptyVoteIsNotNoVote() throws {
    try withTemporaryDirectory { directory in
      do {
        let log = try DurableLog(directory: directory, options: quietOptions())
        try log.append(entries: [], hardState: StoredHardState(term: 5, vote: "", commit: 0))
        log.close()
      }
      let log = try DurableLog(directory: directory, options: quietOptions())
      defer { log.close() }
      #expect(log.hardState == StoredHardState(term: 5, vote: "", commit: 0))
    }
  }

  @Test("appending at or below the last index replaces the conflicting suffix, also after reopen")
  func conflictingSuffixIsReplaced() throws {
    try withTemporaryDirectory { directory in
      do {
        let log = try DurableLog(directory: directory, options: quietOptions())
        try log.append(entries: makeEntries(1...6, term: 1))
        try log.append(entries: makeEntries(4...5, term: 3))
        #expect(log.entries == makeEntries(1...3, term: 1) + makeEntries(4...5, term: 3))
        log.close()
      }
      let log = try DurableLog(directory: directory, options: quietOptions())
      defer { log.close() }
      #expect(log.entries == makeEntries(1...3, term: 1) + makeEntries(4...5, term: 3))
      #expect(log.lastIndex == 5)
    }
  }

  @Test("term(at:) and entries(in:) answer compacted below the snapshot and unavailable past the end")
  func readBoundaries() throws {
    try withTemporaryDirectory { directory in
      let log = try DurableLog(directory: directory, options: quietOptions())
      defer { log.close() }
      try log.append(entries: makeEntries(1...10, term: 1) + makeEntries(11...12, term: 2))
      try log.saveSnapshot(metadata: SnapshotMetadata(index: 5, term: 1, configuration: []), data: [1])
      #expect(try log.term(at: 5) == 1)
      #expect(try log.term(at: 12) == 2)
      #expect(throws: StorageError.compacted(index: 4, snapshotIndex: 5)) { try log.term(at: 4) }
      #expect(throws: StorageError.unavailable(index: 13, lastIndex: 12)) { try log.term(at: 13) }
      #expect(try log.entries(in: 6..<13) == Array(log.entries))
      #expect(try log.entries(in: 7..<7).isEmpty)
      #expect(throws: StorageError.compacted(index: 5, snapshotIndex: 5)) { try log.entries(in: 5..<7) }
      #expect(throws: StorageError.unavailable(index: 13, lastIndex: 12)) { try log.entries(in: 6..<14) }
    }
  }

  @Test("entries(in:maxBytes:) stops at the byte budget but returns at least one entry")
  func byteBudget() throws {
    try withTemporaryDirectory { directory in
      let log = try DurableLog(directory: directory, options: quietOptions())
      defer { log.close() }
      try log.append(entries: makeEntries(1...5, term: 1, payloadSize: 100))
      #expect(try log.entries(in: 1..<6, maxBytes: 250).map(\.index) == [1, 2])
      #expect(try log.entries(in: 1..<6, maxBytes: 10).map(\.index) == [1])
      #expect(try log.entries(in: 2..<6, maxBytes: 10_000).map(\.index) == [2, 3, 4, 5])
    }
  }

  @Test("appends that would leave a gap, rewrite the snapshot, or break index and term order are refused")
  func invalidAppendsAreRefused() throws {
    try withTemporaryDirectory { directory in
      let log = try DurableLog(directory: directory, options: quietOptions())
      defer { log.close() }
      try log.append(entries: makeEntries(1...5, term: 2))
      try log.saveSnapshot(metadata: SnapshotMetadata(index: 2, term: 2, configuration: []), data: [])
      func refused(_ entries: [StoredEntry]) -> Bool {
        do {
          try log.append(entries: entries)
          return false
        } catch {
          if case .invalidArgument = error { return true }
          return false
        }
      }
      #expect(refused(makeEntries(7...8, term: 2)), "gap after the last index")
      #expect(refused(makeEntries(2...3, term: 2)), "rewrites the snapshot")
      #expect(refused([makeEntries(6...6, term: 2)[0], makeEntries(8...8, term: 2)[0]]), "not consecutive")
      #expect(refused(makeEntries(6...6, term: 1)), "term lower than the entry before")
      #expect(refused(makeEntries(6...6, term: 3) + makeEntries(7...7, term: 2)), "term going down in the batch")
      #expect(log.lastIndex == 5)
      try log.append(entries: makeEntries(6...6, term: 3))
      #expect(log.lastIndex == 6)
    }
  }

  @Test("a directory can be open in only one DurableLog at a time")
  func directoryLock() throws {
    try withTemporaryDirectory { directory in
      let first = try DurableLog(directory: directory, options: quietOptions())
      #expect(throws: StorageError.directoryLocked(path: directory + "/LOCK")) {
        _ = try DurableLog(directory: directory, options: quietOptions())
      }
      first.close()
      let second = try DurableLog(directory: directory, options: quietOptions())
      second.close()
      #expect(throws: StorageError.closed) { try second.append(entries: makeEntries(1...1, term: 1)) }
    }
  }

  @Test("segments roll over at the size limit and the log replays across all of them")
  func segmentRollover() throws {
    try withTemporaryDirectory { directory in
      let limit: Int64 = 1024
      let written: ExpectedLogState
      do {
        let log = try DurableLog(directory: directory, options: quietOptions(segmentSizeLimit: limit))
        for index in UInt64(1)...40 {
          try log.append(
            entries: makeEntries(index...index, term: 1 + index / 10, payloadSize: 100),
            hardState: StoredHardState(term: 1 + index / 10, vote: "n1", commit: index - 1))
        }
        // A record larger than the limit goes into a segment of its own.
        try log.append(entries: makeEntries(41...41, term: 5, payloadSize: 3000))
        try log.append(entries: makeEntries(42...42, term: 5))
        written = ExpectedLogState(log)
        log.close()
      }
      let paths = try segmentPaths(in: directory)
      #expect(paths.count >= 6)
      for path in paths.dropLast(2) { #expect(try fileSize(path) <= Int(limit), "\(path)") }
      #expect(try paths.map(fileSize).contains { $0 > Int(limit) })
      let log = try DurableLog(directory: directory, options: quietOptions(segmentSizeLimit: limit))
      defer { log.close() }
      #expect(ExpectedLogState(log) == written)
      #expect(log.entries.map(\.index) == Array(1...42))
      #expect(log.recoveryReport.segmentPaths == paths)
    }
  }
}
