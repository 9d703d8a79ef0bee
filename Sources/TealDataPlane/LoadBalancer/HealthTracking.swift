// Health of targets as the load balancer's own checks see it. Pure: the shell runs the probes and
// feeds the results in.

/// How the load balancer checks its targets.
public struct HealthCheckConfiguration: Hashable, Sendable {
  /// What one probe does.
  public enum Probe: Hashable, Sendable {
    /// `GET path` over HTTP/1.1; any 2xx or 3xx status passes.
    case http(path: String)
    /// A TCP connect that succeeds passes.
    case tcp
  }

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

/// Consecutive probe results per target, turned into healthy/unhealthy transitions.
///
/// Invariants:
/// - A target never seen before is decided by its first result (one pass → healthy), so a new
///   revision can take traffic as soon as it answers once.
/// - After that, a healthy target turns unhealthy only after `unhealthyThreshold` consecutive
///   failures, and an unhealthy one turns healthy only after `healthyThreshold` consecutive passes.
/// - A passive failure (a connect to the target failed while proxying) makes it unhealthy at once.
public struct HealthTracker: Sendable, Hashable {
  private struct Record: Sendable, Hashable {
    var healthy: Bool?
    var passes = 0
    var failures = 0
  }

  public let healthyThreshold: Int
  public let unhealthyThreshold: Int
  private var records: [TargetAddress: Record] = [:]

  public init(healthyThreshold: Int, unhealthyThreshold: Int) {
    self.healthyThreshold = max(1, healthyThreshold)
    self.unhealthyThreshold = max(1, unhealthyThreshold)
  }

  /// The current verdict, nil while the target has no result yet.
  public func isHealthy(_ target: TargetAddress) -> Bool? { self.records[target]?.healthy }

  /// Records one probe result. Returns the new verdict when it changed, nil otherwise.
  public mutating func record(_ target: TargetAddress, passed: Bool) -> Bool? {
    var record = self.records[target] ?? Record()
    defer { self.records[target] = record }
    if passed {
      record.passes += 1
      record.failures = 0
    } else {
      record.failures += 1
      record.passes = 0
    }
    switch record.healthy {
    case nil:
      record.healthy = passed
      return passed
    case true? where !passed && record.failures >= self.unhealthyThreshold:
      record.healthy = false
      return false
    case false? where passed && record.passes >= self.healthyThreshold:
      record.healthy = true
      return true
    default:
      return nil
    }
  }

  /// Records a failed connect seen on the data path. Returns false when the target just turned
  /// unhealthy, nil when it already was.
  public mutating func recordPassiveFailure(_ target: TargetAddress) -> Bool? {
    var record = self.records[target] ?? Record()
    defer { self.records[target] = record }
    record.passes = 0
    record.failures = max(record.failures, self.unhealthyThreshold)
    guard record.healthy != false else { return nil }
    record.healthy = false
    return false
  }

  /// Forgets every target not in `targets`.
  public mutating func retain(only targets: Set<TargetAddress>) {
    self.records = self.records.filter { targets.contains($0.key) }
  }
}
