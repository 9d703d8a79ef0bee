// The state the data path of one service reads and writes per request, as one pure value so a single
// lock covers routing, health, metrics and in-flight counts and they can never disagree.

/// What a `finish` or a `retry` left idle: the revision and the target the request left, when no
/// other request of theirs is in flight any more (drain and deregistration waiters wake on them).
public struct BecameIdle: Hashable, Sendable {
  public var revision: String?
  public var target: TargetAddress?

  public init(revision: String? = nil, target: TargetAddress? = nil) {
    self.revision = revision
    self.target = target
  }
}

/// Routing, health, metrics and in-flight counts of one service.
///
/// Invariants:
/// - `inFlight[r]` is the number of requests routed to revision `r` (on either listener) that have
///   neither completed nor been aborted; it never goes below 0. `inFlightByTarget[t]` is the same
///   per target.
/// - A revision removed from the routes, or a deregistered target, keeps its in-flight entry until
///   it reaches 0: that is what draining and deregistration wait for.
/// - Every `begin` that returns a choice is matched by exactly one `finish` (possibly after
///   `retry` calls that moved it to other targets).
/// - A deregistered target gets no new request, whatever its health, until it leaves the routes.
/// - Metrics counters only grow (a retry never takes a request back).
public struct ServiceTraffic: Sendable {
  public private(set) var router: WeightedRouter
  public private(set) var health: TargetHealth
  public private(set) var metrics = ServiceMetrics()
  public private(set) var inFlight: [String: Int] = [:]
  public private(set) var inFlightByTarget: [TargetAddress: Int] = [:]
  /// Targets taken out of routing by ``deregister(_:)``; forgotten when they leave the routes.
  public private(set) var deregistered: Set<TargetAddress> = []

  /// - Parameter roundRobinSeed: where the router's sequences start (see ``WeightedRouter/init(routes:healthyTargets:seed:)``).
  public init(routes: ServiceRoutes, healthyThreshold: Int, unhealthyThreshold: Int, roundRobinSeed: UInt64 = 0) {
    self.router = WeightedRouter(routes: routes, seed: roundRobinSeed)
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
    self.deregistered.formIntersection(targets)
    // Targets that stay keep their verdict (install only drops health of removed targets).
    for target in targets where self.health.isHealthy(target) == true && !self.deregistered.contains(target) {
      self.router.setHealthy(target, true)
    }
  }

  /// Applies one active probe result. Returns the new verdict when it changed.
  @discardableResult
  public mutating func recordProbe(_ target: TargetAddress, passed: Bool) -> Bool? {
    guard let verdict = self.health.record(target, passed: passed) else { return nil }
    if !verdict || !self.deregistered.contains(target) { self.router.setHealthy(target, verdict) }
    return verdict
  }

  /// Takes `target` out of routing (no new request) while its in-flight requests go on. Returns
  /// false when the target is in none of the routes.
  @discardableResult
  public mutating func deregister(_ target: TargetAddress) -> Bool {
    guard self.allTargets.contains(target) else { return false }
    self.deregistered.insert(target)
    self.router.setHealthy(target, false)
    return true
  }

  /// Routes one new request on `role`'s listener; nil means answer 503.
  public mutating func begin(_ role: ListenerRole) -> RouteChoice? {
    guard let choice = self.router.pick(role) else {
      self.metrics.noHealthyTarget[role, default: 0] += 1
      return nil
    }
    self.metrics.targetGroups[TargetGroupKey(listener: role, revision: choice.revision), default: TargetGroupMetrics()]
      .requests += 1
    self.count(choice, role, delta: 1)
    return choice
  }

  /// The request routed to `failed` could not be served there and nothing reached the target's
  /// application (a failed connect), or it is safe to send again (an idempotent request without a
  /// body whose connection was reset before any response byte). Counts a failure of the target
  /// against its `unhealthyThreshold` (item 10: one hiccup does not take a target out) and routes
  /// the request again, to a healthy target of any weighted revision that is not in `excluding`
  /// (the targets this request already failed on). `choice` nil means no other target is available
  /// (answer 502).
  public mutating func retry(_ role: ListenerRole, failed: RouteChoice, excluding: Set<TargetAddress>)
    -> (choice: RouteChoice?, idle: BecameIdle)
  {
    if self.health.record(failed.target, passed: false) == false {
      self.router.setHealthy(failed.target, false)
    }
    let failedKey = TargetGroupKey(listener: role, revision: failed.revision)
    self.metrics.targetGroups[failedKey, default: TargetGroupMetrics()].connectFailures += 1
    guard let choice = self.router.pick(role, excluding: excluding.union([failed.target])) else {
      return (nil, BecameIdle())
    }
    self.metrics.targetGroups[failedKey, default: TargetGroupMetrics()].retries += 1
    if choice.revision != failed.revision {
      self.metrics.targetGroups[failedKey, default: TargetGroupMetrics()].retriedElsewhere += 1
      self.metrics.targetGroups[
        TargetGroupKey(listener: role, revision: choice.revision), default: TargetGroupMetrics()
      ]
      .requests += 1
    }
    let idle = self.count(failed, role, delta: -1)
    self.count(choice, role, delta: 1)
    return (choice, idle)
  }

  /// Counts a failure of `target` seen on the data path with no retry left.
  public mutating func recordConnectFailure(_ target: TargetAddress, _ role: ListenerRole, revision: String) {
    self.metrics.targetGroups[TargetGroupKey(listener: role, revision: revision), default: TargetGroupMetrics()]
      .connectFailures += 1
    if self.health.record(target, passed: false) == false {
      self.router.setHealthy(target, false)
    }
  }

  /// Ends a request begun with `begin`. `status` is what the client received, nil when the client
  /// went away first; `byBalancer` when the balancer made the response (502, 503, 504). Returns
  /// what became idle.
  public mutating func finish(
    _ role: ListenerRole, _ choice: RouteChoice, status: Int?, byBalancer: Bool = false, nanoseconds: Int64
  ) -> BecameIdle {
    let key = TargetGroupKey(listener: role, revision: choice.revision)
    // Mutate in place (no copy of the histogram's storage on the hot path).
    self.metrics.targetGroups[key, default: TargetGroupMetrics()].recordFinish(
      status: status, byBalancer: byBalancer, nanoseconds: nanoseconds)
    return self.count(choice, role, delta: -1, metrics: false)
  }

  /// Counts a response cut because the target's body went silent (the exchange then ends with
  /// `finish(status: nil)`, counted as aborted too).
  public mutating func recordStalledResponse(_ role: ListenerRole, revision: String) {
    self.metrics.targetGroups[TargetGroupKey(listener: role, revision: revision), default: TargetGroupMetrics()]
      .stalledResponses += 1
  }

  /// Counts a request answered 400/431 before it could be routed.
  public mutating func recordBadRequest() {
    self.metrics.badRequests += 1
  }

  @discardableResult
  private mutating func count(_ choice: RouteChoice, _ role: ListenerRole, delta: Int, metrics: Bool = true)
    -> BecameIdle
  {
    if metrics {
      let key = TargetGroupKey(listener: role, revision: choice.revision)
      self.metrics.targetGroups[key, default: TargetGroupMetrics()].inFlight += delta
    }
    var idle = BecameIdle()
    let value = max(0, (self.inFlight[choice.revision] ?? 0) + delta)
    self.inFlight[choice.revision] = value == 0 ? nil : value
    if value == 0 { idle.revision = choice.revision }
    let perTarget = max(0, (self.inFlightByTarget[choice.target] ?? 0) + delta)
    self.inFlightByTarget[choice.target] = perTarget == 0 ? nil : perTarget
    if perTarget == 0 { idle.target = choice.target }
    return idle
  }
}
