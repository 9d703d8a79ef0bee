// Compaction unlinks several segments under one directory fsync; a power loss may keep any subset of the
// unlinks, so the segments left on disk can have a hole below the first one still needed.

import Foundation
import TealStorageTesting
import TealWire
import Testing

@testable import TealStorage

@Suite("Holes left by compaction")
struct CompactionHoleTests {
  private let directory = "/data/node"

  /// Forty one-entry appends in 600-byte segments (several segments), on `fileSystem`.
  private func writeLog(_ fileSystem: SimulatedFileSystem) throws -> DurableLog {
    let log = try DurableLog(directory: directory, options: quietOptions(segmentSizeLimit: 600, fileSystem: fileSystem))
    for index in UInt64(1)...40 {
      try log.append(
        entries: makeEntries(index...index, term: 1, payloadSize: 50),
        hardState: StoredHardState(term: 1, vote: "n3", commit: index))
    }
    return log
  }

  private func segmentSequences(_ fileSystem: SimulatedFileSystem) throws -> [UInt64] {
    try fileSystem.listDirectory(directory).compactMap(StorageFileNames.segmentSequence).sorted()
  }

  @Test("a power loss that keeps only some of compaction's unlinks leaves a hole that recovery accepts and cleans")
  func holeBelowTheFirstNeededSegment() throws {
    let snapshot = SnapshotMetadata(index: 30, term: 1, configuration: [1])
    // A dry run counts the segments one snapshot at index 30 deletes.
    let dryRun = SimulatedFileSystem()
    let dryLog = try writeLog(dryRun)
    let before = try segmentSequences(dryRun)
    try dryLog.saveSnapshot(metadata: snapshot, data: [30])
    let deleted = before.count - (try segmentSequences(dryRun)).count
    dryLog.close()
    #expect(deleted >= 3, "the scenario needs several unlinks under one directory fsync")

    var holes = 0
    for seed in UInt64(0)..<32 {
      var generator = SplitMix64(seed: seed)
      let fileSystem = SimulatedFileSystem()
      let log = try writeLog(fileSystem)
      // Snapshot: create, truncate, write, fsync, rename, directory fsync; then the unlinks. The power goes
      // right after the unlinks, before the directory fsync that would have made them durable together.
      fileSystem.crashAfter(operations: 6 + deleted)
      try log.saveSnapshot(metadata: snapshot, data: [30])
      log.close()
      fileSystem.crash(using: &generator, directoryChanges: .randomSubset)
      let left = try segmentSequences(fileSystem)
      if left != Array(left.first!...left.last!) { holes += 1 }

      let context = "seed \(seed), segments left \(left)"
      let recovered = try DurableLog(
        directory: directory, options: quietOptions(segmentSizeLimit: 600, fileSystem: fileSystem))
      #expect(recovered.snapshotIndex == 30, "\(context)")
      #expect(recovered.entries == (31...40).flatMap { makeEntries($0...$0, term: 1, payloadSize: 50) }, "\(context)")
      #expect(recovered.hardState == StoredHardState(term: 1, vote: "n3", commit: 40), "\(context)")
      let cleaned = try segmentSequences(fileSystem)
      #expect(cleaned == Array(cleaned.first!...cleaned.last!), "\(context): recovery deletes what is below the hole")
      try recovered.append(entries: makeEntries(41...41, term: 2), hardState: nil)
      recovered.close()
      // The cleanup itself must be durable enough: another power loss, another recovery.
      fileSystem.crash(using: &generator, directoryChanges: .randomSubset)
      let again = try DurableLog(
        directory: directory, options: quietOptions(segmentSizeLimit: 600, fileSystem: fileSystem))
      #expect(again.lastIndex == 41, "\(context)")
      again.close()
    }
    #expect(holes > 0, "some seed must leave a hole, or the test tests nothing")
  }

  @Test("a hole above a segment still needed is refused, naming the missing segment")
  func holeInTheNeededSegmentsIsRefused() throws {
    let fileSystem = SimulatedFileSystem()
    let log = try writeLog(fileSystem)
    try log.saveSnapshot(metadata: SnapshotMetadata(index: 10, term: 1, configuration: []), data: [])
    log.close()
    let sequences = try segmentSequences(fileSystem)
    #expect(sequences.count >= 3)
    let missing = sequences[1]
    let missingPath = directory + "/" + StorageFileNames.segment(missing)
    try fileSystem.removeFile(missingPath)
    #expect(throws: StorageError.missingSegment(path: missingPath, sequence: missing)) {
      try DurableLog(directory: directory, options: quietOptions(segmentSizeLimit: 600, fileSystem: fileSystem))
    }
    #expect(try segmentSequences(fileSystem).count == sequences.count - 1, "a refusal deletes nothing")
  }
}
