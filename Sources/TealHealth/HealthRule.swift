// The health rule shared by the task runner and the load balancer: what a probe is, when one passes,
// and how consecutive results turn into a verdict. See Docs/TASKS.md and Docs/DATAPLANE.md.

/// What one health probe does.
public enum HealthProbe: Hashable, Sendable {
  /// `GET path` over HTTP/1.1 on a fresh connection with `Connection: close`; passes when
  /// ``HealthRule/passes(httpStatus:)`` accepts the status.
  case http(path: String)
  /// A TCP connect; passes when the connection is accepted.
  case tcp
}

/// The single rule for an HTTP health-check answer, used by the task runner and the load balancer
/// alike (a task the runner calls healthy is never refused by the balancer for its status, and the
/// other way round).
public enum HealthRule {
  /// Only a 2xx status passes.
  ///
  /// Why not 3xx as well: probes never follow redirects, so a 3xx only says where an answer might
  /// be. The usual 3xx on a health path are an HTTP→HTTPS redirect or a redirect to a login page,
  /// which a front controller keeps sending while the application behind it is broken. Counting
  /// them as passes would route traffic to such a target; refusing them makes the misconfigured
  /// health path visible at once (the task stays `starting`, then `unhealthy` with
  /// "GET /health answered 302"). 1xx, 4xx and 5xx fail for the obvious reasons.
  public static func passes(httpStatus: Int) -> Bool { (200..<300).contains(httpStatus) }
}

/// Consecutive probe results of one target, turned into healthy/unhealthy transitions. Pure: the
/// caller runs the probes and feeds the results in.
///
/// Invariants:
/// - `status` becomes `.healthy` only after `healthyThreshold` consecutive passes and `.unhealthy`
///   only after `unhealthyThreshold` consecutive counted failures; a pass resets the failure count
///   and a failure resets the pass count;
/// - with `firstResultDecides`, the very first result (pass or counted failure) decides an
///   `.unknown` status at once (the load balancer: a target the task runner already found healthy
///   takes traffic after one pass of the balancer's own probe);
/// - an excused failure (the task runner's start period) resets the pass count and counts nothing,
///   unless a probe has passed before (ECS: the start period ends at the first pass).
public struct HealthTracker: Hashable, Sendable {
  public enum Status: Hashable, Sendable {
    /// No verdict yet.
    case unknown
    case healthy
    case unhealthy
  }

  public let healthyThreshold: Int
  public let unhealthyThreshold: Int
  public let firstResultDecides: Bool
  public private(set) var status: Status = .unknown
  public private(set) var consecutivePasses = 0
  public private(set) var consecutiveFailures = 0
  /// True once any probe passed; from then on failures are never excused.
  public private(set) var hasPassed = false

  /// Thresholds below 1 are treated as 1.
  public init(healthyThreshold: Int, unhealthyThreshold: Int, firstResultDecides: Bool = false) {
    self.healthyThreshold = max(1, healthyThreshold)
    self.unhealthyThreshold = max(1, unhealthyThreshold)
    self.firstResultDecides = firstResultDecides
  }

  /// Records one result. `excusable` failures (start period) do not count while no probe has passed.
  /// Returns the new status when it changed, nil otherwise.
  public mutating func record(passed: Bool, excusable: Bool = false) -> Status? {
    if passed {
      self.hasPassed = true
      self.consecutiveFailures = 0
      self.consecutivePasses += 1
      let needed = self.status == .unknown && self.firstResultDecides ? 1 : self.healthyThreshold
      if self.status != .healthy, self.consecutivePasses >= needed { return self.change(to: .healthy) }
    } else {
      self.consecutivePasses = 0
      if excusable && !self.hasPassed { return nil }
      self.consecutiveFailures += 1
      let needed = self.status == .unknown && self.firstResultDecides ? 1 : self.unhealthyThreshold
      if self.status != .unhealthy, self.consecutiveFailures >= needed { return self.change(to: .unhealthy) }
    }
    return nil
  }

  /// Makes the status `.unhealthy` at once, as if `unhealthyThreshold` failures had been seen.
  /// Returns `.unhealthy` when the status changed, nil when it already was.
  public mutating func markUnhealthy() -> Status? {
    self.consecutivePasses = 0
    self.consecutiveFailures = max(self.consecutiveFailures, self.unhealthyThreshold)
    return self.status == .unhealthy ? nil : self.change(to: .unhealthy)
  }

  private mutating func change(to status: Status) -> Status {
    self.status = status
    return status
  }
}
