// Snapshots: atomic replacement, compaction of segments, snapshots installed ahead of the log, and crashes
// at each step of saving one.

import Foundation
import TealStorageTesting
import Testing

@testable import TealStorage

@Suite("Snapshots and compaction")
struct SnapshotTests {
  @Test("a snapshot deletes the segments wholly before it and older snapshots, and recovery still works")
  func compactionDeletesOldSegments() throws {
    try withTemporaryDirectory { directory in
      let options = quietOptions(segmentSizeLimit: 600)
      let written: ExpectedLogState
      do {
        let log = try DurableLog(directory: directory, options: options)
        for index in UInt64(1)...40 {
          try log.append(
            entries: makeEntries(index...index, term: 1, payloadSize: 50),
            hardState: StoredHardState(term: 1, vote: "n3", commit: index))
        }
        let before = try segmentPaths(in: directory)
        #expect(before.count >= 5)
        try log.saveSnapshot(metadata: SnapshotMetadata(index: 10, term: 1, configuration: [1, 2]), data: [10])
        try log.saveSnapshot(metadata: SnapshotMetadata(index: 30, term: 1, configuration: [1, 2, 3]), data: [30])
        let after = try segmentPaths(in: directory)
        #expect(after.count < before.count)
        #expect(after == Array(before.suffix(after.count)), "the retained segments are the newest ones")
        #expect(try snapshotPaths(in: directory).count == 1)
        #expect(log.firstIndex == 31)
        try log.append(
          entries: makeEntries(41...42, term: 2), hardState: StoredHardState(term: 2, vote: nil, commit: 40))
        written = ExpectedLogState(log)
        log.close()
      }
      let log = try DurableLog(directory: directory, options: options)
      defer { log.close() }
      #expect(ExpectedLogState(log) == written)
      #expect(log.entries.map(\.index) == Array(31...42))
      #expect(log.snapshot?.metadata == SnapshotMetadata(index: 30, term: 1, configuration: [1, 2, 3]))
      #expect(log.snapshot?.data == [30])
      #expect(log.recoveryReport.segmentPaths.first != directory + "/" + StorageFileNames.segment(1))
    }
  }

  @Test("a snapshot past the end of the log (installed from a leader) empties the log, durably")
  func snapshotAheadOfTheLog() throws {
    try withTemporaryDirectory { directory in
      do {
        let log = try DurableLog(directory: directory, options: quietOptions())
        try log.append(entries: makeEntries(1...5, term: 1))
        try log.saveSnapshot(metadata: SnapshotMetadata(index: 50, term: 4, configuration: []), data: [50])
        #expect(log.entries.isEmpty)
        #expect(log.lastIndex == 50)
        #expect(log.lastTerm == 4)
        try log.append(entries: makeEntries(51...52, term: 4))
        log.close()
      }
      let log = try DurableLog(directory: directory, options: quietOptions())
      defer { log.close() }
      #expect(log.entries == makeEntries(51...52, term: 4))
      #expect(log.snapshotIndex == 50)
    }
  }

  @Test("a snapshot whose term conflicts with the log's entry at its index discards the whole log")
  func snapshotConflictingWithTheLog() throws {
    try withTemporaryDirectory { directory in
      do {
        let log = try DurableLog(directory: directory, options: quietOptions())
        try log.append(entries: makeEntries(1...8, term: 1))
        try log.saveSnapshot(metadata: SnapshotMetadata(index: 6, term: 3, configuration: []), data: [])
        #expect(log.entries.isEmpty)
        #expect(log.lastIndex == 6)
        log.close()
      }
      let log = try DurableLog(directory: directory, options: quietOptions())
      defer { log.close() }
      #expect(log.entries.isEmpty)
      #expect(log.lastIndex == 6)
      #expect(log.lastTerm == 3)
    }
  }

  @Test("a crash between writing the temporary snapshot and renaming it leaves the old snapshot in force")
  func crashBeforeRename() throws {
    try withTemporaryDirectory { directory in
      let faults = FaultInjectingFileSystem()
      let stateBefore: ExpectedLogState
      do {
        let log = try DurableLog(directory: directory, options: quietOptions(fileSystem: faults))
        try log.append(entries: makeEntries(1...6, term: 1))
        try log.saveSnapshot(metadata: SnapshotMetadata(index: 2, term: 1, configuration: []), data: [2])
        stateBefore = ExpectedLogState(log)
        faults.faults.failRenames = true
        #expect(throws: StorageError.self) {
          try log.saveSnapshot(metadata: SnapshotMetadata(index: 5, term: 1, configuration: []), data: [5])
        }
        // The temporary file is fully written and synced, as in a crash just before the rename.
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory).contains { $0.hasSuffix(".snap.tmp") })
        #expect(ExpectedLogState(log) == stateBefore)
        log.close()
      }
      let log = try DurableLog(directory: directory, options: quietOptions())
      defer { log.close() }
      #expect(ExpectedLogState(log) == stateBefore)
      #expect(log.snapshot?.data == [2])
      #expect(log.recoveryReport.removedTemporaryFiles.count == 1)
      #expect(try !FileManager.default.contentsOfDirectory(atPath: directory).contains { $0.hasSuffix(".tmp") })
    }
  }

  @Test("a half-written temporary snapshot file is ignored and removed")
  func garbageTemporarySnapshot() throws {
    try withTemporaryDirectory { directory in
      do {
        let log = try DurableLog(directory: directory, options: quietOptions())
        try log.append(entries: makeEntries(1...3, term: 1))
        log.close()
      }
      let temporary = directory + "/" + StorageFileNames.snapshot(index: 3, term: 1) + ".tmp"
      try writeBytes(Array("TEALSNP\n partial".utf8), to: temporary)
      let log = try DurableLog(directory: directory, options: quietOptions())
      defer { log.close() }
      #expect(log.snapshot == nil)
      #expect(log.entries == makeEntries(1...3, term: 1))
      #expect(log.recoveryReport.removedTemporaryFiles == [temporary])
    }
  }

  @Test("a crash after the snapshot rename but before its rebase record recovers to the snapshot's state")
  func crashBeforeRebaseRecord() throws {
    try withTemporaryDirectory { directory in
      let faults = FaultInjectingFileSystem()
      let snapshot = StoredSnapshot(metadata: SnapshotMetadata(index: 20, term: 3, configuration: [7]), data: [20])
      do {
        let log = try DurableLog(directory: directory, options: quietOptions(fileSystem: faults))
        try log.append(entries: makeEntries(1...5, term: 1))
        // Let exactly the snapshot file be written; the rebase record that follows gets no byte on disk.
        faults.faults.writeBudget = SnapshotFile.encode(snapshot).count
        #expect(throws: StorageError.self) {
          try log.saveSnapshot(metadata: snapshot.metadata, data: snapshot.data)
        }
        #expect(throws: StorageError.self) { try log.append(entries: makeEntries(6...6, term: 1)) }
        log.close()
      }
      do {
        let log = try DurableLog(directory: directory, options: quietOptions())
        #expect(log.snapshot == snapshot)
        #expect(log.entries.isEmpty)
        #expect(log.lastIndex == 20)
        try log.append(entries: makeEntries(21...22, term: 3))
        log.close()
      }
      let log = try DurableLog(directory: directory, options: quietOptions())
      defer { log.close() }
      #expect(log.entries == makeEntries(21...22, term: 3))
    }
  }

  @Test("a damaged snapshot file makes open fail naming it")
  func corruptSnapshotIsRefused() throws {
    try withTemporaryDirectory { directory in
      do {
        let log = try DurableLog(directory: directory, options: quietOptions())
        try log.append(entries: makeEntries(1...3, term: 1))
        try log.saveSnapshot(metadata: SnapshotMetadata(index: 3, term: 1, configuration: [1]), data: [9, 9, 9])
        log.close()
      }
      let path = try #require(try snapshotPaths(in: directory).first)
      var bytes = try readBytes(path)
      bytes[SnapshotFile.headerSize + 1] ^= 0x40
      try writeBytes(bytes, to: path)
      guard case .corruptSnapshot(let reported, let reason) = openingError(directory) else {
        Issue.record("expected corruptSnapshot")
        return
      }
      #expect(reported == path)
      #expect(reason.contains("checksum"))
    }
  }

  @Test("a snapshot not newer than the current one is refused")
  func staleSnapshotIsRefused() throws {
    try withTemporaryDirectory { directory in
      let log = try DurableLog(directory: directory, options: quietOptions())
      defer { log.close() }
      try log.append(entries: makeEntries(1...5, term: 1))
      try log.saveSnapshot(metadata: SnapshotMetadata(index: 4, term: 1, configuration: []), data: [])
      #expect {
        try log.saveSnapshot(metadata: SnapshotMetadata(index: 4, term: 1, configuration: []), data: [])
      } throws: { error in
        guard case .invalidArgument = error as? StorageError else { return false }
        return true
      }
      try log.append(entries: makeEntries(6...6, term: 1))
      #expect(log.lastIndex == 6)
    }
  }
}
