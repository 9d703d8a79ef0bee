// The time source of the task runner, injectable for tests.

/// The runner's view of time: a monotonic "now" and a cancellable sleep.
///
/// The runner uses it for health-check intervals, the health-check start period and the stop grace
/// period. Probe timeouts and the one-second output drain after an exit use the event loop's and
/// the watcher thread's own real-time timers (they bound I/O, not policy).
public struct TaskClock: Sendable {
  /// Monotonic time since an arbitrary origin; never goes backwards.
  public let now: @Sendable () -> Duration
  /// Suspends for the given duration; throws `CancellationError` when the calling task is cancelled.
  public let sleep: @Sendable (Duration) async throws -> Void

  public init(now: @escaping @Sendable () -> Duration, sleep: @escaping @Sendable (Duration) async throws -> Void) {
    self.now = now
    self.sleep = sleep
  }

  /// Wraps any standard-library clock measured in `Duration` (e.g. `ContinuousClock`, a test clock).
  public init<C: Clock>(_ clock: C) where C.Duration == Duration {
    let origin = clock.now
    self.now = { origin.duration(to: clock.now) }
    self.sleep = { duration in try await clock.sleep(for: duration) }
  }

  /// Real monotonic time.
  public static var continuous: TaskClock { TaskClock(ContinuousClock()) }
}
