// Metrics of the load balancer per service, listener and target group. Pure values: the shell
// records into them under the service lock and hands out copies (the alarms' windows). The
// Prometheus exposition is made by swift-metrics handles recorded at the same events
// (MetricsExport.swift).

// MARK: - Latency histogram

/// Request latency in fixed buckets (Prometheus-style cumulative rendering, non-cumulative storage).
///
/// Invariant: `bucketCounts.count == Self.upperBoundsNanoseconds.count + 1` (the last bucket is +Inf),
/// and `count` is the sum of `bucketCounts`.
public struct LatencyHistogram: Hashable, Sendable {
  /// Upper bounds of the finite buckets, in nanoseconds: 0.25 ms ... 10 s.
  public static let upperBoundsNanoseconds: [Int64] = [
    250_000, 500_000, 1_000_000, 2_500_000, 5_000_000, 10_000_000, 25_000_000, 50_000_000, 100_000_000,
    250_000_000, 500_000_000, 1_000_000_000, 2_500_000_000, 5_000_000_000, 10_000_000_000,
  ]

  public private(set) var bucketCounts: [UInt64]
  public private(set) var count: UInt64 = 0
  public private(set) var sumNanoseconds: Int64 = 0

  public init() {
    self.bucketCounts = Array(repeating: 0, count: Self.upperBoundsNanoseconds.count + 1)
  }

  /// A histogram of these non-cumulative bucket counts (e.g. summed over several nodes); the sum
  /// of observations is unknown and left 0.
  public init(bucketCounts: [UInt64]) {
    precondition(
      bucketCounts.count == Self.upperBoundsNanoseconds.count + 1,
      "a latency histogram has \(Self.upperBoundsNanoseconds.count + 1) buckets, not \(bucketCounts.count)")
    self.bucketCounts = bucketCounts
    self.count = bucketCounts.reduce(0, +)
  }

  public mutating func record(nanoseconds: Int64) {
    let value = max(0, nanoseconds)
    var index = 0
    let bounds = Self.upperBoundsNanoseconds
    while index < bounds.count, value > bounds[index] { index += 1 }
    self.bucketCounts[index] += 1
    self.count += 1
    self.sumNanoseconds &+= value
  }

  /// The upper bound (ns) of the bucket holding the `q`-quantile, nil when empty. Observations above
  /// the last finite bound report that bound (the estimate is then a lower bound).
  public func quantileUpperBound(_ q: Double) -> Int64? {
    guard self.count > 0 else { return nil }
    let rank = UInt64((min(max(q, 0), 1) * Double(self.count)).rounded(.up))
    var seen: UInt64 = 0
    for (index, bucket) in self.bucketCounts.enumerated() {
      seen += bucket
      if seen >= max(rank, 1) {
        return Self.upperBoundsNanoseconds[min(index, Self.upperBoundsNanoseconds.count - 1)]
      }
    }
    return Self.upperBoundsNanoseconds.last
  }

  /// What was recorded after `earlier` (a snapshot of the same histogram taken before).
  public func subtracting(_ earlier: LatencyHistogram) -> LatencyHistogram {
    var delta = LatencyHistogram()
    for index in delta.bucketCounts.indices {
      delta.bucketCounts[index] = self.bucketCounts[index] &- min(self.bucketCounts[index], earlier.bucketCounts[index])
    }
    delta.count = delta.bucketCounts.reduce(0, +)
    delta.sumNanoseconds = max(0, self.sumNanoseconds - earlier.sumNanoseconds)
    return delta
  }
}

// MARK: - Per target group

/// Counters of one target group on one listener. Every counter only grows.
///
/// `requests` counts requests routed to the group (when first routed, or when a retry moved them
/// here from another group). Each of them ends in exactly one of: a status class (`responses*`, plus
/// `balancerResponses5xx` for the 5xx the balancer made itself), `aborted` (the client went away
/// first) or `retriedElsewhere` (a retry moved it to another group).
/// `inFlight` = `requests` − completed − `aborted` − `retriedElsewhere`.
public struct TargetGroupMetrics: Hashable, Sendable {
  public var requests: UInt64 = 0
  public var responses1xx3xx: UInt64 = 0
  public var responses2xx: UInt64 = 0
  public var responses4xx: UInt64 = 0
  /// 5xx answered by a target.
  public var responses5xx: UInt64 = 0
  /// 5xx made by the balancer (502 no target reachable, 504 target too slow) for a request routed here.
  public var balancerResponses5xx: UInt64 = 0
  /// Requests whose client connection closed before the response ended.
  public var aborted: UInt64 = 0
  /// Times a request routed here was sent again (after a failed connect or a reset before a
  /// response byte), to another target of this or another group.
  public var retries: UInt64 = 0
  /// Requests that a retry moved to another group.
  public var retriedElsewhere: UInt64 = 0
  /// Failures of this group's targets seen on the data path (connect failed, reset before a response).
  public var connectFailures: UInt64 = 0
  /// Responses cut because the target's body sent nothing for `responseBodyIdleTimeout` (each one
  /// is also counted in `aborted`: the client saw the connection end mid-body).
  public var stalledResponses: UInt64 = 0
  public var inFlight: Int = 0
  public var latency = LatencyHistogram()

  public init() {}

  public var completed: UInt64 {
    self.responses1xx3xx + self.responses2xx + self.responses4xx + self.responses5xx + self.balancerResponses5xx
  }

  /// Share of completed responses that were 5xx (from targets or made by the balancer), nil when
  /// nothing completed.
  public var serverErrorRate: Double? {
    let completed = self.completed
    return completed == 0 ? nil : Double(self.responses5xx + self.balancerResponses5xx) / Double(completed)
  }

  /// p99 latency in seconds (bucket upper bound), nil when nothing completed.
  public var p99Seconds: Double? { self.latency.quantileUpperBound(0.99).map { Double($0) / 1e9 } }

  mutating func recordFinish(status: Int?, byBalancer: Bool, nanoseconds: Int64) {
    self.inFlight = max(0, self.inFlight - 1)
    guard let status else {
      self.aborted += 1
      return
    }
    if byBalancer, (500..<600).contains(status) {
      self.balancerResponses5xx += 1
      self.latency.record(nanoseconds: nanoseconds)
      return
    }
    switch status {
    case 200..<300: self.responses2xx += 1
    case 400..<500: self.responses4xx += 1
    case 500..<600: self.responses5xx += 1
    default: self.responses1xx3xx += 1
    }
    self.latency.record(nanoseconds: nanoseconds)
  }

  /// What happened after `earlier` (a snapshot of the same group): the window an alarm looks at.
  /// `inFlight` is the current value.
  public func subtracting(_ earlier: TargetGroupMetrics) -> TargetGroupMetrics {
    var delta = TargetGroupMetrics()
    delta.requests = self.requests &- min(self.requests, earlier.requests)
    delta.responses1xx3xx = self.responses1xx3xx &- min(self.responses1xx3xx, earlier.responses1xx3xx)
    delta.responses2xx = self.responses2xx &- min(self.responses2xx, earlier.responses2xx)
    delta.responses4xx = self.responses4xx &- min(self.responses4xx, earlier.responses4xx)
    delta.responses5xx = self.responses5xx &- min(self.responses5xx, earlier.responses5xx)
    delta.balancerResponses5xx =
      self.balancerResponses5xx &- min(self.balancerResponses5xx, earlier.balancerResponses5xx)
    delta.retries = self.retries &- min(self.retries, earlier.retries)
    delta.retriedElsewhere = self.retriedElsewhere &- min(self.retriedElsewhere, earlier.retriedElsewhere)
    delta.connectFailures = self.connectFailures &- min(self.connectFailures, earlier.connectFailures)
    delta.aborted = self.aborted &- min(self.aborted, earlier.aborted)
    delta.stalledResponses = self.stalledResponses &- min(self.stalledResponses, earlier.stalledResponses)
    delta.inFlight = self.inFlight
    delta.latency = self.latency.subtracting(earlier.latency)
    return delta
  }
}

/// Identifies one target group on one listener of a service.
public struct TargetGroupKey: Hashable, Sendable, Comparable {
  public var listener: ListenerRole
  public var revision: String

  public init(listener: ListenerRole, revision: String) {
    self.listener = listener
    self.revision = revision
  }

  public static func < (lhs: TargetGroupKey, rhs: TargetGroupKey) -> Bool {
    (lhs.listener.rawValue, lhs.revision) < (rhs.listener.rawValue, rhs.revision)
  }
}

/// Metrics of one service.
public struct ServiceMetrics: Hashable, Sendable {
  public var targetGroups: [TargetGroupKey: TargetGroupMetrics] = [:]
  /// Requests answered 503 because no weighted target group had a healthy target.
  public var noHealthyTarget: [ListenerRole: UInt64] = [:]
  /// Requests answered 400 or 431 before routing.
  public var badRequests: UInt64 = 0
  /// Every routed target and whether it receives traffic now (healthy and not deregistered); filled
  /// in by ``LoadBalancer/metrics()``.
  public var targetHealth: [TargetAddress: Bool] = [:]

  public init() {}
}

/// A snapshot of every service's metrics, readable by the node (alarms). The Prometheus series are
/// recorded separately through swift-metrics (see ``LoadBalancerSeries``).
public struct LoadBalancerMetrics: Hashable, Sendable {
  public var services: [String: ServiceMetrics]

  public init(services: [String: ServiceMetrics] = [:]) {
    self.services = services
  }

  /// The metrics of one target group, or nil when it never received traffic.
  public func targetGroup(service: String, listener: ListenerRole = .production, revision: String)
    -> TargetGroupMetrics?
  {
    self.services[service]?.targetGroups[TargetGroupKey(listener: listener, revision: revision)]
  }
}
