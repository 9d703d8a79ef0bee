// Randomized crash testing on SimulatedFileSystem: random appends, truncations, hard states and snapshots,
// with power losses at random points inside them (and inside recovery); every recovery must show the state
// before or after the interrupted operation, and exactly the state after an operation that returned.

import Foundation
import TealStorageTesting
import TealTestSupport
import TealWire
import Testing

@testable import TealStorage

/// A reference model of what a DurableLog must hold, written as plainly as possible.
private struct ReferenceLog {
  var snapshotIndex: UInt64 = 0
  var snapshotTerm: UInt64 = 0
  var entries: [StoredEntry] = []
  var hardState = StoredHardState.initial

  var lastIndex: UInt64 { entries.last?.index ?? snapshotIndex }
  var lastTerm: UInt64 { entries.last?.term ?? snapshotTerm }

  func term(at index: UInt64) -> UInt64? {
    if index == snapshotIndex { return snapshotTerm }
    return entries.first { $0.index == index }?.term
  }

  mutating func append(_ new: [StoredEntry], hardState: StoredHardState?) {
    if let first = new.first { entries.removeAll { $0.index >= first.index } }
    entries += new
    if let hardState { self.hardState = hardState }
  }

  mutating func truncate(from index: UInt64) {
    entries.removeAll { $0.index >= index }
  }

  mutating func snapshot(index: UInt64, term: UInt64) {
    if self.term(at: index) == term {
      entries.removeAll { $0.index <= index }
    } else {
      entries.removeAll()
    }
    snapshotIndex = index
    snapshotTerm = term
  }

  var expected: ExpectedLogState {
    ExpectedLogState(entries: entries, hardState: hardState, snapshotIndex: snapshotIndex)
  }
}

/// One operation on the log, applied both to a DurableLog and to the reference.
private enum Operation: CustomStringConvertible {
  case append([StoredEntry], StoredHardState?)
  case truncate(UInt64)
  case snapshot(UInt64, UInt64)

  var description: String {
    switch self {
    case .append(let entries, let hardState):
      return "append \(entries.first?.index ?? 0)..+\(entries.count) hs \(String(describing: hardState))"
    case .truncate(let index): return "truncate from \(index)"
    case .snapshot(let index, let term): return "snapshot at \(index) term \(term)"
    }
  }

  func apply(to log: DurableLog) throws {
    switch self {
    case .append(let entries, let hardState): try log.append(entries: entries, hardState: hardState)
    case .truncate(let index): try log.truncateSuffix(from: index)
    case .snapshot(let index, let term):
      try log.saveSnapshot(
        metadata: SnapshotMetadata(index: index, term: term, configuration: [UInt8(index % 256)]),
        data: Array("state \(index)".utf8))
    }
  }

  func apply(to reference: inout ReferenceLog) {
    switch self {
    case .append(let entries, let hardState): reference.append(entries, hardState: hardState)
    case .truncate(let index): reference.truncate(from: index)
    case .snapshot(let index, let term): reference.snapshot(index: index, term: term)
    }
  }

  static func random(for reference: ReferenceLog, using generator: inout SplitMix64) -> Operation {
    let maxTerm = max(reference.lastTerm, reference.hardState.term)
    let roll = Int.random(in: 0..<100, using: &generator)
    if roll < 55 {
      let overwrite = reference.lastIndex > reference.snapshotIndex && Bool.random(using: &generator)
      let start =
        overwrite
        ? UInt64.random(in: (reference.snapshotIndex + 1)...reference.lastIndex, using: &generator)
        : reference.lastIndex + 1
      let previousTerm = reference.term(at: start - 1) ?? 0
      let term = max(previousTerm, maxTerm) + (Bool.random(using: &generator) ? 1 : 0)
      let count = UInt64.random(in: 0...4, using: &generator)
      let entries = (0..<count).map { offset in
        StoredEntry(
          index: start + offset, term: term, kind: UInt8.random(in: 0...3, using: &generator),
          payload: (0..<Int.random(in: 0...90, using: &generator)).map { _ in
            UInt8.random(in: 0...255, using: &generator)
          })
      }
      let hardState: StoredHardState? =
        entries.isEmpty || Bool.random(using: &generator)
        ? StoredHardState(
          term: term, vote: ["n1", "n2", nil].randomElement(using: &generator) ?? nil,
          commit: UInt64.random(in: 0...max(reference.snapshotIndex, reference.lastIndex), using: &generator))
        : nil
      return .append(entries, hardState)
    }
    if roll < 70 && reference.lastIndex > reference.snapshotIndex {
      return .truncate(UInt64.random(in: (reference.snapshotIndex + 1)...reference.lastIndex, using: &generator))
    }
    let index = UInt64.random(in: (reference.snapshotIndex + 1)...(reference.lastIndex + 3), using: &generator)
    let term =
      reference.term(at: index).flatMap { Int.random(in: 0..<5, using: &generator) > 0 ? $0 : nil } ?? maxTerm + 1
    return .snapshot(index, term)
  }
}

@Suite("Simulated power losses")
struct SimulatedCrashTests {
  private let directory = "/data/node"

  /// Opens the log, possibly crashing during recovery first (then recovering again).
  private func reopen(
    _ fileSystem: SimulatedFileSystem, options: StorageOptions, generator: inout SplitMix64
  ) throws -> DurableLog {
    if Int.random(in: 0..<4, using: &generator) == 0 {
      fileSystem.crashAfter(operations: Int.random(in: 0...3, using: &generator))
      if let log = try? DurableLog(directory: directory, options: options) {
        fileSystem.crashAfter(operations: nil)
        return log
      }
      fileSystem.crash(using: &generator)
    }
    return try DurableLog(directory: directory, options: options)
  }

  @Test("every recovery after a power loss shows the state before or after the interrupted operation")
  func randomizedPowerLosses() throws {
    let seeds = Int(ProcessInfo.processInfo.environment["TEAL_STORAGE_CRASH_SEEDS"] ?? "") ?? 100
    var crashes = 0
    var interrupted = 0
    for seed in 0..<UInt64(seeds) {
      var generator = SplitMix64(seed: seed)
      let fileSystem = SimulatedFileSystem()
      let options = quietOptions(
        segmentSizeLimit: Int64.random(in: 300...1500, using: &generator), fileSystem: fileSystem)
      var reference = ReferenceLog()
      var log = try DurableLog(directory: directory, options: options)
      for step in 0..<40 {
        let operation = Operation.random(for: reference, using: &generator)
        var after = reference
        operation.apply(to: &after)
        let crashHere = Int.random(in: 0..<4, using: &generator) == 0
        if crashHere { fileSystem.crashAfter(operations: Int.random(in: 0...6, using: &generator)) }
        let context = "seed \(seed) step \(step) \(operation)"
        do {
          try operation.apply(to: log)
          #expect(ExpectedLogState(log) == after.expected, "\(context): live state")
          reference = after
        } catch {
          #expect(crashHere, "\(context): unexpected \(error)")
          interrupted += 1
        }
        guard crashHere else { continue }
        crashes += 1
        log.close()
        // Half the power losses keep a random subset of the unsynced directory changes (renames, unlinks).
        let directoryChanges: SimulatedFileSystem.UnsyncedDirectoryChanges =
          Bool.random(using: &generator) ? .randomSubset : .lost
        fileSystem.crash(using: &generator, directoryChanges: directoryChanges)
        log = try reopen(fileSystem, options: options, generator: &generator)
        let recovered = ExpectedLogState(log)
        if recovered == after.expected {
          reference = after
        } else {
          #expect(recovered == reference.expected, "\(context): recovered \(recovered)")
          if recovered != reference.expected { return }
        }
        #expect(log.snapshot?.metadata.index ?? 0 == reference.snapshotIndex, "\(context)")
        #expect(log.lastTerm == reference.lastTerm, "\(context)")
      }
      log.close()
    }
    #expect(crashes > seeds * 5)
    #expect(interrupted > seeds * 2)
  }

  @Test("unsynced writes are lost in a crash and synced ones are kept")
  func simulatedFileSystemDurabilityModel() throws {
    let fileSystem = SimulatedFileSystem()
    var generator = SplitMix64(seed: 1)
    try fileSystem.createDirectory("/d")
    let synced = try fileSystem.openFile("/d/a", create: true)
    try synced.write([1, 2, 3], at: 0)
    try synced.syncData()
    try fileSystem.syncDirectory("/d")
    _ = try fileSystem.openFile("/d/unsynced-name", create: true)
    try synced.truncate(to: 1)
    fileSystem.crash(using: &generator)
    #expect(fileSystem.contents(of: "/d/a") == [1, 2, 3])
    #expect(fileSystem.contents(of: "/d/unsynced-name") == nil)
    #expect(throws: StorageError.self) { try synced.write([9], at: 0) }
  }
}
