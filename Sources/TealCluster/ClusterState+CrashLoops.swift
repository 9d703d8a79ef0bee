// Crash-loop bookkeeping: which revisions' tasks keep exiting before they run healthy, so that
// placement waits before replacing them (see `Placement`). Derived only from applied task reports
// and log time: no clock.

import TealDeploy
import TealWire

/// Consecutive crashes of one revision's tasks. A **crash** is the exit of a task meant to run
/// (`desired == .running`) that never became healthy, or that exited less than
/// ``stableRunMilliseconds`` of log time after it became healthy. An exit after a longer healthy run
/// is not a crash and clears the record.
///
/// Placement holds new tasks of the revision until ``holdsUntil`` (`lastCrashAt` plus 1 s, doubling
/// with every further crash, at most ``maximumBackoffMilliseconds``, 5 min, from the 10th crash on),
/// unless the revision ``isSettled(in:by:)``: a task of it became healthy after the last crash and
/// has stayed healthy for ``stableRunMilliseconds``. A settled record is dropped at the next report of
/// the service's tasks, and the next crash counts from 1 again.
public struct CrashLoop: Codable, Hashable, Sendable {
  /// Consecutive crashes, 1 ... ``maximumCrashes``.
  public var crashes: Int
  /// Log time of the entry that reported the last crash.
  public var lastCrashAt: LogTime

  public init(crashes: Int, lastCrashAt: LogTime) {
    self.crashes = crashes
    self.lastCrashAt = lastCrashAt
  }

  /// The wait after the first crash.
  public static let firstBackoffMilliseconds: Int64 = 1_000
  /// The longest wait (reached at the 10th consecutive crash).
  public static let maximumBackoffMilliseconds: Int64 = 300_000
  /// How long a task must stay healthy for its exit not to be a crash, and for the revision to count
  /// as settled.
  public static let stableRunMilliseconds: Int64 = 10_000
  /// The count stops growing here (the wait stopped growing long before).
  public static let maximumCrashes = 1_000

  /// 1 s × 2^(crashes − 1), at most ``maximumBackoffMilliseconds``.
  public var backoffMilliseconds: Int64 {
    let doublings = min(max(crashes - 1, 0), 30)
    return min(Self.firstBackoffMilliseconds << Int64(doublings), Self.maximumBackoffMilliseconds)
  }

  /// Log time before which placement starts no new task of the revision.
  public var holdsUntil: LogTime { lastCrashAt.adding(milliseconds: backoffMilliseconds) }
}

extension ClusterService {
  /// The crash loop of revision `number`, if its tasks are crashing.
  public func crashLoop(of number: Int) -> CrashLoop? { crashLoops?[String(number)] }
}

extension ClusterState {
  /// Whether a task of `revision` meant to run became healthy after `loop`'s last crash and has been
  /// healthy for ``CrashLoop/stableRunMilliseconds`` at `time`.
  public func crashLoopIsSettled(_ loop: CrashLoop, of revision: RevisionID, by time: LogTime) -> Bool {
    taskIDs(of: revision.service).contains { id in
      guard let task = tasks[id], task.revision == revision, task.desired == .running, task.healthy,
        let healthyAt = task.healthyAt
      else { return false }
      return healthyAt > loop.lastCrashAt
        && healthyAt.adding(milliseconds: CrashLoop.stableRunMilliseconds) <= time
    }
  }

  /// Whether placement must wait before starting a new task of `revision` at `now` (the leader's
  /// clock): its tasks are crash-looping, the backoff has not passed and the revision has not settled.
  public func placementHeld(_ revision: RevisionID, now: LogTime) -> Bool {
    guard let loop = services[revision.service]?.crashLoop(of: revision.number) else { return false }
    return now < loop.holdsUntil && !crashLoopIsSettled(loop, of: revision, by: now)
  }

  /// Records the exit of `task` (its state already `exited`; it was meant to run). Returns the
  /// revision's crash loop after it, nil when the exit was not a crash.
  mutating func noteCrash(_ task: ClusterTask) -> CrashLoop? {
    guard var service = services[task.service] else { return nil }
    let key = String(task.revision.number)
    var loops = service.crashLoops ?? [:]
    var result: CrashLoop?
    if let healthyAt = task.healthyAt, healthyAt.adding(milliseconds: CrashLoop.stableRunMilliseconds) <= logTime {
      loops[key] = nil
    } else {
      var crashes = 1
      if let previous = loops[key], !crashLoopIsSettled(previous, of: task.revision, by: logTime) {
        crashes = min(previous.crashes + 1, CrashLoop.maximumCrashes)
      }
      result = CrashLoop(crashes: crashes, lastCrashAt: logTime)
      loops[key] = result
    }
    service.crashLoops = loops.isEmpty ? nil : loops
    services[task.service] = service
    return result
  }

  /// Drops the service's settled crash loops (called after its tasks reported).
  mutating func dropSettledCrashLoops(of name: String) {
    guard var service = services[name], let loops = service.crashLoops else { return }
    let kept = loops.filter { key, loop in
      guard let number = Int(key) else { return true }
      return !crashLoopIsSettled(loop, of: RevisionID(service: name, number: number), by: logTime)
    }
    guard kept.count != loops.count else { return }
    service.crashLoops = kept.isEmpty ? nil : kept
    services[name] = service
  }
}
