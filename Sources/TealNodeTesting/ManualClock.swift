// ManualClock: the control plane's clock for simulation; time moves only when a test advances it.

import Foundation
import TealCluster
import TealNode

/// A ``ControlClock`` whose time stands still until ``advance(by:)``: a sleeper wakes once the clock
/// has been advanced past its deadline (in deadline order), or when its task is cancelled.
///
/// Wall time starts at `wallStart` and moves with the monotonic time. Monotonic instants are
/// `ContinuousClock` instants (a fixed origin taken at creation plus the time advanced), so they
/// mix with the control code's `ContinuousClock.Instant` arithmetic; they are not real time.
public final class ManualClock: ControlClock, @unchecked Sendable {
  private struct Sleeper {
    var deadline: Duration
    var continuation: CheckedContinuation<Void, any Error>
  }

  private let lock = NSLock()
  private let origin = ContinuousClock.now
  private let wallStart: Int64
  /// Guarded by `lock`.
  private var elapsedTime: Duration = .zero
  private var sleepers: [UInt64: Sleeper] = [:]
  private var nextSleeper: UInt64 = 0

  /// - Parameter wallStart: wall-clock milliseconds since the epoch at time zero (default
  ///   2026-01-01T00:00:00Z).
  public init(wallStart: Int64 = 1_767_225_600_000) { self.wallStart = wallStart }

  /// Time advanced so far.
  public var elapsed: Duration { lock.withLock { elapsedTime } }

  /// Tasks sleeping on this clock right now.
  public var sleeperCount: Int { lock.withLock { sleepers.count } }

  public func now() -> LogTime {
    let elapsed = self.elapsed
    let milliseconds = elapsed.components.seconds * 1000 + elapsed.components.attoseconds / 1_000_000_000_000_000
    return LogTime(millisecondsSinceEpoch: wallStart + milliseconds)
  }

  public var monotonicNow: ContinuousClock.Instant { origin.advanced(by: elapsed) }

  public func sleep(for duration: Duration) async throws {
    try Task.checkCancellation()
    let id: UInt64 = lock.withLock {
      nextSleeper += 1
      unstored.insert(nextSleeper)
      return nextSleeper
    }
    try await withTaskCancellationHandler {
      try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
        enum Now { case wait, wake, cancel }
        let now: Now = lock.withLock {
          unstored.remove(id)
          // Cancelled before the continuation was stored: the handler found nothing to resume.
          if cancelled.remove(id) != nil { return .cancel }
          let deadline = elapsedTime + max(duration, .zero)
          if deadline <= elapsedTime { return .wake }
          sleepers[id] = Sleeper(deadline: deadline, continuation: continuation)
          return .wait
        }
        switch now {
        case .wait: break
        case .wake: continuation.resume()
        case .cancel: continuation.resume(throwing: CancellationError())
        }
      }
    } onCancel: {
      let sleeper: Sleeper? = lock.withLock {
        if let sleeper = sleepers.removeValue(forKey: id) { return sleeper }
        if unstored.contains(id) { cancelled.insert(id) }
        return nil
      }
      sleeper?.continuation.resume(throwing: CancellationError())
    }
  }

  /// Sleeps whose continuation is not stored yet, and those of them cancelled meanwhile (guarded by
  /// `lock`); both bounded by the sleeps in flight.
  private var unstored: Set<UInt64> = []
  private var cancelled: Set<UInt64> = []

  /// Moves time forward by `duration` and wakes every sleeper whose deadline it reached, earliest first.
  public func advance(by duration: Duration) {
    precondition(duration >= .zero, "a manual clock only moves forward (asked to move by \(duration))")
    let due: [Sleeper] = lock.withLock {
      elapsedTime += duration
      let due = sleepers.filter { $0.value.deadline <= elapsedTime }
      for key in due.keys { sleepers[key] = nil }
      return due.values.sorted { $0.deadline < $1.deadline }
    }
    for sleeper in due { sleeper.continuation.resume() }
  }
}
