// The state the data path of one service reads and writes per request, as one pure value so a single
// lock covers routing, health, metrics and in-flight counts and they can never disagree.

/// Routing, health, metrics and in-flight counts of one service.
///
/// Invariants:
/// - `inFlight[r]` is the number of requests routed to revision `r` (on either listener) that have
///   neither completed nor been aborted; it never goes below 0.
/// - A revision removed from the routes keeps its `inFlight` entry until it reaches 0: that is what
///   draining waits for.
/// - Every `begin` that returns a choice is matched by exactly one `finish` (possibly after one
///   `retry` that moved it to another target).
public struct ServiceTraffic: Sendable {
  public private(set) var router: WeightedRouter
  public private(set) var health: TargetHealth
  public private(set) var metrics = ServiceMetrics()
  public private(set) var inFlight: [String: Int] = [:]

  public init(routes: ServiceRoutes, healthyThreshold: Int, unhealthyThreshold: Int) {
    self.router = WeightedRouter(routes: routes)
    self.health = TargetHealth(healthyThreshold: healthyThreshold, unhealthyThreshold: unhealthyThreshold)
  }

  /// Every target of every installed group.
  public var allTargets: Set<TargetAddress> { Set(self.router.routes.targetGroups.flatMap(\.targets)) }

  /// Installs new routes atomically: the next `begin` follows them; requests already routed keep
  /// their target.
  public mutating func install(_ routes: ServiceRoutes) {
    self.router.install(routes)
    let targets = self.allTargets
    self.health.retain(only: targets)
    // Targets that stay keep their verdict (install only drops health of removed targets).
    for target in targets where self.health.isHealthy(target) == true {
      self.router.setHealthy(target, true)
    }
  }

  /// Applies one active probe result. Returns the new verdict when it changed.
  @discardableResult
  public mutating func recordProbe(_ target: TargetAddress, passed: Bool) -> Bool? {
    guard let verdict = self.health.record(target, passed: passed) else { return nil }
    self.router.setHealthy(target, verdict)
    return verdict
  }

  /// Routes one new request on `role`'s listener; nil means answer 503.
  public mutating func begin(_ role: ListenerRole) -> RouteChoice? {
    guard let choice = self.router.pick(role) else {
      self.metrics.noHealthyTarget[role, default: 0] += 1
      return nil
    }
    self.count(choice, role, delta: 1)
    return choice
  }

  /// A connect to `failed.target` failed before anything was sent: marks it unhealthy and routes the
  /// request again, to another target. Nil means no other target is available (answer 502).
  public mutating func retry(_ role: ListenerRole, failed: RouteChoice) -> RouteChoice? {
    if self.health.recordPassiveFailure(failed.target) != nil {
      self.router.setHealthy(failed.target, false)
    }
    guard let choice = self.router.pick(role, excluding: failed.target) else { return nil }
    self.count(failed, role, delta: -1)
    self.count(choice, role, delta: 1)
    return choice
  }

  /// Marks a target unhealthy after a connect failure with no retry left.
  public mutating func recordConnectFailure(_ target: TargetAddress) {
    if self.health.recordPassiveFailure(target) != nil {
      self.router.setHealthy(target, false)
    }
  }

  /// Ends a request begun with `begin`. `status` is what the client received, nil when the client
  /// went away first. Returns true when this was the last in-flight request of its revision.
  public mutating func finish(_ role: ListenerRole, _ choice: RouteChoice, status: Int?, nanoseconds: Int64) -> Bool {
    let key = TargetGroupKey(listener: role, revision: choice.revision)
    // Mutate in place (no copy of the histogram's storage on the hot path).
    self.metrics.targetGroups[key, default: TargetGroupMetrics()].recordFinish(status: status, nanoseconds: nanoseconds)
    let remaining = max(0, (self.inFlight[choice.revision] ?? 0) - 1)
    self.inFlight[choice.revision] = remaining == 0 ? nil : remaining
    return remaining == 0
  }

  /// Counts a request answered 400/431 before it could be routed.
  public mutating func recordBadRequest() {
    self.metrics.badRequests += 1
  }

  private mutating func count(_ choice: RouteChoice, _ role: ListenerRole, delta: Int) {
    let key = TargetGroupKey(listener: role, revision: choice.revision)
    self.metrics.targetGroups[key, default: TargetGroupMetrics()].recordRouted(delta: delta)
    let value = max(0, (self.inFlight[choice.revision] ?? 0) + delta)
    self.inFlight[choice.revision] = value == 0 ? nil : value
  }
}
