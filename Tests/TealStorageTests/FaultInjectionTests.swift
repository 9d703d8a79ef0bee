// Disk failures injected under a DurableLog: the log refuses further writes, keeps its last durable state in
// memory, and a reopen recovers.

import Foundation
import TealStorageTesting
import Testing

@testable import TealStorage

@Suite("Disk write failures")
struct FaultInjectionTests {
  @Test("a write that fails halfway leaves a torn record that the next open cuts off")
  func failedWriteIsATornTail() throws {
    try withTemporaryDirectory { directory in
      let faults = FaultInjectingFileSystem()
      let durable: ExpectedLogState
      do {
        let log = try DurableLog(directory: directory, options: quietOptions(fileSystem: faults))
        try log.append(entries: makeEntries(1...3, term: 1), hardState: StoredHardState(term: 1, vote: "x", commit: 1))
        durable = ExpectedLogState(log)
        faults.faults.writeBudget = 30
        #expect {
          try log.append(entries: makeEntries(4...9, term: 1, payloadSize: 64))
        } throws: { error in
          guard case .io(_, _, let errno) = error as? StorageError else { return false }
          return errno == EIO
        }
        #expect(ExpectedLogState(log) == durable, "memory keeps the last durable state")
        faults.faults = .none
        #expect {
          try log.append(entries: makeEntries(4...4, term: 1))
        } throws: { error in
          guard case .unusableAfterFailure = error as? StorageError else { return false }
          return true
        }
        log.close()
      }
      let log = try DurableLog(directory: directory, options: quietOptions())
      defer { log.close() }
      #expect(ExpectedLogState(log) == durable)
      #expect(log.recoveryReport.tornBytesRemoved == 30)
    }
  }

  @Test("a failed fdatasync makes the log refuse writes; after reopen the write is either all there or absent")
  func failedSync() throws {
    try withTemporaryDirectory { directory in
      let faults = FaultInjectingFileSystem()
      do {
        let log = try DurableLog(directory: directory, options: quietOptions(fileSystem: faults))
        try log.append(entries: makeEntries(1...2, term: 1))
        faults.faults.failFileSyncs = true
        #expect(throws: StorageError.self) { try log.append(entries: makeEntries(3...4, term: 1)) }
        #expect(log.lastIndex == 2)
        #expect(faults.count(of: "syncData") >= 2)
        log.close()
      }
      let log = try DurableLog(directory: directory, options: quietOptions())
      defer { log.close() }
      #expect([2, 4].contains(log.lastIndex))
    }
  }

  @Test("a failure while starting a new segment makes the log refuse writes and loses nothing durable")
  func failedRollover() throws {
    try withTemporaryDirectory { directory in
      let faults = FaultInjectingFileSystem()
      let options = quietOptions(segmentSizeLimit: 300, fileSystem: faults)
      let durable: ExpectedLogState
      do {
        let log = try DurableLog(directory: directory, options: options)
        try log.append(entries: makeEntries(1...2, term: 1, payloadSize: 100))
        durable = ExpectedLogState(log)
        faults.faults.failRenames = true
        #expect(throws: StorageError.self) { try log.append(entries: makeEntries(3...4, term: 1, payloadSize: 100)) }
        log.close()
      }
      let log = try DurableLog(directory: directory, options: quietOptions(segmentSizeLimit: 300))
      defer { log.close() }
      #expect(ExpectedLogState(log) == durable)
      #expect(log.recoveryReport.removedTemporaryFiles.count == 1)
      try log.append(entries: makeEntries(3...4, term: 1, payloadSize: 100))
      #expect(try segmentPaths(in: directory).count == 2)
    }
  }

  @Test("a segment file that cannot be created makes the append fail and the log refuse writes")
  func failedSegmentCreation() throws {
    try withTemporaryDirectory { directory in
      let faults = FaultInjectingFileSystem()
      let log = try DurableLog(directory: directory, options: quietOptions(segmentSizeLimit: 200, fileSystem: faults))
      defer { log.close() }
      try log.append(entries: makeEntries(1...2, term: 1, payloadSize: 100))
      faults.faults.failFileCreation = true
      #expect(throws: StorageError.self) { try log.append(entries: makeEntries(3...3, term: 1, payloadSize: 100)) }
      faults.faults = .none
      #expect(throws: StorageError.self) { try log.append(entries: makeEntries(3...3, term: 1)) }
      #expect(log.lastIndex == 2)
      #expect(try segmentPaths(in: directory).count == 1)
    }
  }

  @Test("one append call costs one fdatasync however many entries it carries")
  func oneSyncPerAppend() throws {
    try withTemporaryDirectory { directory in
      let faults = FaultInjectingFileSystem()
      let log = try DurableLog(directory: directory, options: quietOptions(fileSystem: faults))
      defer { log.close() }
      let before = faults.count(of: "syncData")
      let writesBefore = faults.count(of: "write")
      try log.append(entries: makeEntries(1...256, term: 1), hardState: StoredHardState(term: 1, vote: nil, commit: 0))
      #expect(faults.count(of: "syncData") == before + 1)
      #expect(faults.count(of: "write") == writesBefore + 1)
      try log.append(entries: [], hardState: nil)
      #expect(faults.count(of: "syncData") == before + 1, "an empty append writes nothing")
    }
  }
}
