// A full disk (ENOSPC) stops the log, and a restarted node can still compact: the space reserve it keeps
// in its data directory is released to make room for the snapshot.

import Foundation
import TealStorageTesting
import Testing

@testable import TealStorage

@Suite("A full disk")
struct FullDiskTests {
  private let directory = "/data/node"

  private func fillLog(_ disk: FaultInjectingFileSystem) throws -> DurableLog {
    let log = try DurableLog(directory: directory, options: quietOptions(segmentSizeLimit: 4096, fileSystem: disk))
    for index in UInt64(1)...60 {
      try log.append(
        entries: makeEntries(index...index, term: 1, payloadSize: 100),
        hardState: StoredHardState(term: 1, vote: "n1", commit: index))
    }
    return log
  }

  @Test("after the disk fills up, a restarted node can still take a snapshot and compact, and then append")
  func fullDiskStillCompacts() throws {
    let disk = FaultInjectingFileSystem(wrapping: SimulatedFileSystem())
    let log = try fillLog(disk)
    disk.faults.freeSpace = 0
    let failure = #expect(throws: StorageError.self) {
      try log.append(entries: makeEntries(61...61, term: 1, payloadSize: 100))
    }
    let message = failure?.description ?? ""
    #expect(message.contains("No space left on device"), "\(message)")
    #expect(message.contains("the disk holding the data directory is full"), "\(message)")
    #expect(message.contains("free space"), "the error says what to do: \(message)")
    #expect(throws: StorageError.self, "the log stops") { try log.append(entries: [], hardState: .initial) }
    log.close()

    // The node restarts on the same full disk and compacts, as RaftNode does once it has applied.
    let restarted = try DurableLog(
      directory: directory, options: quietOptions(segmentSizeLimit: 4096, fileSystem: disk))
    #expect(restarted.lastIndex == 60)
    try restarted.saveSnapshot(
      metadata: SnapshotMetadata(index: 50, term: 1, configuration: [1]), data: [UInt8](repeating: 7, count: 3000))
    #expect(restarted.firstIndex == 51)
    #expect((disk.faults.freeSpace ?? 0) > 0, "compaction gave space back")
    try restarted.append(entries: makeEntries(61...61, term: 1, payloadSize: 100))
    restarted.close()
    let reopened = try DurableLog(directory: directory, options: quietOptions(segmentSizeLimit: 4096, fileSystem: disk))
    defer { reopened.close() }
    #expect(reopened.snapshotIndex == 50)
    #expect(reopened.entries.map(\.index) == Array(51...61))
  }
}
