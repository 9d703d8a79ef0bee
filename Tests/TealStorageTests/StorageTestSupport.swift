// Helpers shared by the storage tests: temporary directories, entry builders and raw file access.

import Foundation
import Testing

@testable import TealStorage

/// Runs `body` with a fresh empty directory that is removed afterwards.
func withTemporaryDirectory<T>(_ body: (String) throws -> T) throws -> T {
  let path = FileManager.default.temporaryDirectory
    .appendingPathComponent("teal-storage-tests-\(UUID().uuidString)").path
  try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
  defer { try? FileManager.default.removeItem(atPath: path) }
  return try body(path)
}

/// Entries `indexes` in `term`, each with a payload naming its index and term (so rewritten entries differ).
func makeEntries(_ indexes: ClosedRange<UInt64>, term: UInt64, payloadSize: Int = 8) -> [StoredEntry] {
  indexes.map { index in
    var payload = Array("e\(index)t\(term)".utf8)
    while payload.count < payloadSize { payload.append(UInt8(truncatingIfNeeded: index &+ term)) }
    return StoredEntry(index: index, term: term, kind: UInt8(index % 3), payload: payload)
  }
}

func readBytes(_ path: String) throws -> [UInt8] {
  [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
}

func writeBytes(_ bytes: [UInt8], to path: String) throws {
  try Data(bytes).write(to: URL(fileURLWithPath: path))
}

func fileSize(_ path: String) throws -> Int {
  try readBytes(path).count
}

/// The WAL segment paths in `directory`, oldest first.
func segmentPaths(in directory: String) throws -> [String] {
  try FileManager.default.contentsOfDirectory(atPath: directory)
    .filter { $0.hasPrefix("wal-") && $0.hasSuffix(".log") }
    .sorted()
    .map { directory + "/" + $0 }
}

/// The snapshot file paths in `directory`, oldest first.
func snapshotPaths(in directory: String) throws -> [String] {
  try FileManager.default.contentsOfDirectory(atPath: directory)
    .filter { $0.hasSuffix(".snap") }
    .sorted()
    .map { directory + "/" + $0 }
}

/// What a reopened log must show.
struct ExpectedLogState: Equatable, CustomStringConvertible {
  var entries: [StoredEntry]
  var hardState: StoredHardState
  var snapshotIndex: UInt64

  init(entries: [StoredEntry], hardState: StoredHardState, snapshotIndex: UInt64) {
    self.entries = entries
    self.hardState = hardState
    self.snapshotIndex = snapshotIndex
  }

  init(_ log: DurableLog) {
    entries = log.entries
    hardState = log.hardState
    snapshotIndex = log.snapshotIndex
  }

  var description: String {
    let indexes = entries.map { "\($0.index)@\($0.term)" }.joined(separator: ",")
    return "entries [\(indexes)] hard state \(hardState) snapshot \(snapshotIndex)"
  }
}

/// Options with a logger that discards everything, so tests stay quiet.
func quietOptions(
  segmentSizeLimit: Int64 = StorageOptions.defaultSegmentSizeLimit,
  fileSystem: any StorageFileSystem = PosixFileSystem()
) -> StorageOptions {
  var options = StorageOptions(segmentSizeLimit: segmentSizeLimit, fileSystem: fileSystem)
  options.logger.logLevel = .critical
  return options
}
