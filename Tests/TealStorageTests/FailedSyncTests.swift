// After a failed fdatasync Linux may mark the dirty pages clean ("fsyncgate"): the record stays readable
// from the page cache but never reaches the disk. A restarted node must not trust what it reads there.

import Foundation
import TealStorageTesting
import TealWire
import Testing

@testable import TealStorage

@Suite("Restart after a failed fdatasync")
struct FailedSyncTests {
  private let directory = "/data/node"

  /// A log whose last append's fdatasync failed as a writeback error; closed, as the node stops.
  private func logWithFailedSync(_ fileSystem: SimulatedFileSystem) throws {
    let log = try DurableLog(directory: directory, options: quietOptions(fileSystem: fileSystem))
    try log.append(entries: makeEntries(1...3, term: 1), hardState: StoredHardState(term: 1, vote: "n1", commit: 0))
    fileSystem.failNextFileSyncs()
    #expect(throws: StorageError.self) {
      try log.append(entries: makeEntries(4...4, term: 2), hardState: StoredHardState(term: 2, vote: "n2", commit: 3))
    }
    #expect(throws: StorageError.self, "the log poisons itself") { try log.append(entries: [], hardState: .initial) }
    log.close()
  }

  @Test("what a restart reads from the page cache after a failed fdatasync is durable before the log opens")
  func tailIsRewrittenAndSynced() throws {
    for seed in UInt64(0)..<8 {
      var generator = SplitMix64(seed: seed)
      let fileSystem = SimulatedFileSystem()
      try logWithFailedSync(fileSystem)
      // The process restarts, the machine does not: recovery reads the unsynced record from the cache.
      let restarted = try DurableLog(directory: directory, options: quietOptions(fileSystem: fileSystem))
      let seen = ExpectedLogState(restarted)
      restarted.close()
      // The restarted node may act on what it saw (here a vote for n2 in term 2): it must survive a power loss.
      fileSystem.crash(using: &generator)
      let afterPowerLoss = try DurableLog(directory: directory, options: quietOptions(fileSystem: fileSystem))
      #expect(ExpectedLogState(afterPowerLoss) == seen, "seed \(seed)")
      afterPowerLoss.close()
    }
  }

  @Test("if the rewritten tail cannot be synced either, the log refuses to open with the I/O error")
  func stillFailingDiskRefusesToOpen() throws {
    let fileSystem = SimulatedFileSystem()
    try logWithFailedSync(fileSystem)
    fileSystem.failNextFileSyncs()
    let failure = #expect(throws: StorageError.self) {
      try DurableLog(directory: directory, options: quietOptions(fileSystem: fileSystem))
    }
    guard case .io(_, _, let errno) = failure else {
      Issue.record("expected an I/O error, got \(String(describing: failure))")
      return
    }
    #expect(errno == EIO)
  }
}
