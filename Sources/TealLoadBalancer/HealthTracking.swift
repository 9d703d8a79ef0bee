// Health of targets as the load balancer's own checks see it. Pure: the shell runs the probes and
// feeds the results in. The probe, its pass rule and the threshold tracker are TealHealth's.

import TealHealth

/// How the load balancer checks its targets.
public struct HealthCheckConfiguration: Hashable, Sendable {
  /// What one probe does (shared with the task runner; the pass rule is ``HealthRule``: 2xx only).
  public typealias Probe = HealthProbe

  public var probe: Probe
  /// Time between the starts of two probe rounds.
  public var interval: Duration
  /// A probe that has not passed within this time fails.
  public var timeout: Duration
  /// Consecutive passes that make an unhealthy target healthy again.
  public var healthyThreshold: Int
  /// Consecutive failures that make a healthy target unhealthy.
  public var unhealthyThreshold: Int

  public init(
    probe: Probe = .http(path: "/health"), interval: Duration = .seconds(5), timeout: Duration = .seconds(2),
    healthyThreshold: Int = 2, unhealthyThreshold: Int = 2
  ) {
    self.probe = probe
    self.interval = interval
    self.timeout = timeout
    self.healthyThreshold = healthyThreshold
    self.unhealthyThreshold = unhealthyThreshold
  }
}

/// The health of every target of one service, one ``HealthTracker`` (TealHealth) per target.
///
/// Invariants:
/// - A target never seen before is decided by its first result (one pass → healthy), so a new
///   revision can take traffic as soon as it answers once.
/// - After that, a healthy target turns unhealthy only after `unhealthyThreshold` consecutive
///   failures, and an unhealthy one turns healthy only after `healthyThreshold` consecutive passes.
/// - A passive failure (a connect to the target failed while proxying) makes it unhealthy at once.
public struct TargetHealth: Sendable, Hashable {
  public let healthyThreshold: Int
  public let unhealthyThreshold: Int
  private var trackers: [TargetAddress: HealthTracker] = [:]

  public init(healthyThreshold: Int, unhealthyThreshold: Int) {
    self.healthyThreshold = max(1, healthyThreshold)
    self.unhealthyThreshold = max(1, unhealthyThreshold)
  }

  /// The current verdict, nil while the target has no result yet.
  public func isHealthy(_ target: TargetAddress) -> Bool? {
    switch self.trackers[target]?.status {
    case .healthy?: return true
    case .unhealthy?: return false
    case .unknown?, nil: return nil
    }
  }

  /// Records one probe result. Returns the new verdict when it changed, nil otherwise.
  public mutating func record(_ target: TargetAddress, passed: Bool) -> Bool? {
    var tracker = self.tracker(target)
    defer { self.trackers[target] = tracker }
    return tracker.record(passed: passed).map { $0 == .healthy }
  }

  /// Records a failed connect seen on the data path. Returns false when the target just turned
  /// unhealthy, nil when it already was.
  public mutating func recordPassiveFailure(_ target: TargetAddress) -> Bool? {
    var tracker = self.tracker(target)
    defer { self.trackers[target] = tracker }
    return tracker.markUnhealthy().map { $0 == .healthy }
  }

  /// Forgets every target not in `targets`.
  public mutating func retain(only targets: Set<TargetAddress>) {
    self.trackers = self.trackers.filter { targets.contains($0.key) }
  }

  private func tracker(_ target: TargetAddress) -> HealthTracker {
    self.trackers[target]
      ?? HealthTracker(
        healthyThreshold: self.healthyThreshold, unhealthyThreshold: self.unhealthyThreshold, firstResultDecides: true)
  }
}
