// NodeClock: the one place a node reads a clock.

import Foundation
import TealCluster

/// The node's clocks. Everything else takes time from here (or is handed it), so tests and the
/// in-process cluster can drive time by hand.
///
/// - `now()` is wall-clock time, used only to stamp commands a node proposes; ClusterState clamps
///   it so log time never runs backwards, and every deadline is absolute log time.
/// - `monotonic` measures local waits and timeouts (it counts a SIGSTOP'd process's pause, so a
///   lease measured on it is conservative).
public struct NodeClock: Sendable {
  public var wallMilliseconds: @Sendable () -> Int64
  public var monotonic: ContinuousClock

  public init(wallMilliseconds: @escaping @Sendable () -> Int64, monotonic: ContinuousClock = ContinuousClock()) {
    self.wallMilliseconds = wallMilliseconds
    self.monotonic = monotonic
  }

  /// The system clocks.
  public static let system = NodeClock(wallMilliseconds: { Int64((Date().timeIntervalSince1970 * 1000).rounded()) })

  public func now() -> LogTime { LogTime(millisecondsSinceEpoch: wallMilliseconds()) }
}
