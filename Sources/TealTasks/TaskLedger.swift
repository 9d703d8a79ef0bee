// The ledger of live task process groups, so a runner that restarts after a crash can kill what
// its previous incarnation left behind.

import Foundation

#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

/// One line of the ledger: a task's process group and when its leader started.
public struct TaskLedgerEntry: Sendable, Hashable {
  public var taskID: String
  /// The process group id (= the task's main pid).
  public var processGroup: Int32
  /// Field 22 of `/proc/<pid>/stat` (clock ticks since boot): tells a reused pid from ours.
  public var startTime: UInt64

  public init(taskID: String, processGroup: Int32, startTime: UInt64) {
    self.taskID = taskID
    self.processGroup = processGroup
    self.startTime = startTime
  }
}

/// Reads and writes the ledger file: one `<pgid> <starttime> <taskID>` line per live task.
///
/// Invariant: the file is replaced atomically (write to a temporary file, then `rename`), so a crash
/// leaves either the old or the new list, never half a line.
enum TaskLedger {
  static func write(_ entries: [TaskLedgerEntry], to path: String) {
    let text = entries.map { "\($0.processGroup) \($0.startTime) \($0.taskID)\n" }.joined()
    let temporary = "\(path).tmp"
    let directory = (path as NSString).deletingLastPathComponent
    if !directory.isEmpty {
      try? FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    }
    guard FileManager.default.createFile(atPath: temporary, contents: Data(text.utf8)) else { return }
    _ = rename(temporary, path)
  }

  static func read(_ path: String) -> [TaskLedgerEntry] {
    guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return [] }
    return text.split(separator: "\n").compactMap { line in
      let fields = line.split(separator: " ", maxSplits: 2, omittingEmptySubsequences: false)
      guard fields.count == 3, let group = Int32(fields[0]), group > 1, let start = UInt64(fields[1]) else {
        return nil
      }
      return TaskLedgerEntry(taskID: String(fields[2]), processGroup: group, startTime: start)
    }
  }

  /// The start time (field 22 of `/proc/<pid>/stat`), or nil when the process does not exist.
  static func startTime(of pid: Int32) -> UInt64? {
    guard let text = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
      let closing = text.lastIndex(of: ")")
    else { return nil }
    // After "pid (comm)" come fields 3...; the start time is field 22, i.e. index 19 here.
    let fields = text[text.index(after: closing)...].split(separator: " ")
    guard fields.count > 19 else { return nil }
    return UInt64(fields[19])
  }

  /// Whether the group recorded in `entry` may still hold the previous run's processes:
  /// - its leader exists with the recorded start time: ours;
  /// - its leader is gone: only our processes can still be in group `pgid` (the kernel does not
  ///   hand out a pid that is in use as a process group id), so signalling the group is safe;
  /// - a process with that pid exists but started at another time: the pid was reused, which
  ///   implies our group is empty; never signal it.
  static func mayBeOurs(_ entry: TaskLedgerEntry) -> Bool {
    guard let start = startTime(of: entry.processGroup) else { return true }
    return start == entry.startTime
  }
}
