// Alarms from every node: each node's balancer counters of the green revisions that deployments
// watch go to the leader every period; the leader's controller turns the deltas of all nodes into
// one datapoint per deployment and period, committed to the log, so the alarm window survives a
// failover.

import Logging
import TealCluster
import TealDeploy
import TealLoadBalancer
import TealWire

/// One node's cumulative counters of one revision's production target group (they only grow,
/// until the node restarts).
struct TrafficSample: Codable, Hashable, Sendable {
  var service: String
  /// `web:2`.
  var revision: String
  /// Responses completed (any status, including the 5xx the balancer made).
  var completed: UInt64
  /// 5xx from targets plus 5xx made by the balancer.
  var http5xx: UInt64
  /// Non-cumulative counts per `LatencyHistogram.upperBoundsNanoseconds` bucket (+Inf last).
  var latencyBuckets: [UInt64]

  init(service: String, revision: String, metrics: TargetGroupMetrics) {
    self.service = service
    self.revision = revision
    completed = metrics.completed
    http5xx = metrics.responses5xx + metrics.balancerResponses5xx
    latencyBuckets = metrics.latency.bucketCounts
  }

  init(service: String, revision: String, completed: UInt64, http5xx: UInt64, latencyBuckets: [UInt64]) {
    self.service = service
    self.revision = revision
    self.completed = completed
    self.http5xx = http5xx
    self.latencyBuckets = latencyBuckets
  }

  /// What was counted after `earlier`; all of this sample when the counters went backwards (the
  /// node restarted).
  func subtracting(_ earlier: TrafficSample?) -> TrafficSample {
    guard let earlier, earlier.completed <= completed, earlier.latencyBuckets.count == latencyBuckets.count,
      zip(earlier.latencyBuckets, latencyBuckets).allSatisfy({ $0 <= $1 }), earlier.http5xx <= http5xx
    else { return self }
    return TrafficSample(
      service: service, revision: revision, completed: completed - earlier.completed,
      http5xx: http5xx - earlier.http5xx, latencyBuckets: zip(latencyBuckets, earlier.latencyBuckets).map { $0 - $1 })
  }
}

/// Every node: every ``period``, while a deployment with alarms is active, sends the counters of its
/// green revision to the leader.
actor TrafficReporter {
  private let log: any ProposalSink
  private let balancer: any NodeRouteBalancing
  private let clock: any ControlClock

  /// How often counters are sent, and the length of one committed datapoint.
  static let period: Duration = .seconds(1)

  init(log: any ProposalSink, balancer: any NodeRouteBalancing, clock: any ControlClock) {
    self.log = log
    self.balancer = balancer
    self.clock = clock
  }

  func run() async {
    while !Task.isCancelled {
      try? await clock.sleep(for: Self.period)
      let samples = Self.samples(state: await log.localState(), metrics: balancer.metrics())
      if !samples.isEmpty { await log.reportTraffic(samples) }
    }
  }

  /// The green revisions' counters of every active deployment that has alarms.
  static func samples(state: ClusterState, metrics: LoadBalancerMetrics) -> [TrafficSample] {
    state.allDeployments().filter { $0.isActive && !$0.configuration.alarms.isEmpty }.map { deployment in
      let revision = deployment.green.description
      return TrafficSample(
        service: deployment.service, revision: revision,
        metrics: metrics.targetGroup(service: deployment.service, listener: .production, revision: revision)
          ?? TargetGroupMetrics())
    }
  }
}

/// The leader's side: the latest counters per node, and per deployment the counters at its last
/// datapoint. Pure, so its arithmetic is tested alone.
struct TrafficAggregator: Sendable {
  /// Latest counters by node, then by `service revision`.
  private(set) var latest: [NodeID: [String: TrafficSample]] = [:]
  /// Per deployment id: the counters (by node, then key) its last datapoint was computed from.
  private(set) var baselines: [String: [NodeID: [String: TrafficSample]]] = [:]

  static func key(_ service: String, _ revision: String) -> String { "\(service) \(revision)" }

  /// Keeps the latest counters of `node`; a sample whose histogram has another bucket layout (a node
  /// of another build) is dropped.
  mutating func receive(_ samples: [TrafficSample], from node: NodeID) {
    let buckets = LatencyHistogram.upperBoundsNanoseconds.count + 1
    for sample in samples where sample.latencyBuckets.count == buckets {
      latest[node, default: [:]][Self.key(sample.service, sample.revision)] = sample
    }
  }

  /// The datapoint of `deployment` since its last one, or nil the first time (which only records
  /// the baseline: this leader cannot know what happened before it started counting).
  mutating func datapoint(for deployment: Deployment, at now: Instant) -> MetricSample? {
    let key = Self.key(deployment.service, deployment.green.description)
    var current: [NodeID: [String: TrafficSample]] = [:]
    for (node, samples) in latest { if let sample = samples[key] { current[node] = [key: sample] } }
    defer { baselines[deployment.id] = current }
    guard let previous = baselines[deployment.id] else { return nil }
    var completed: UInt64 = 0
    var errors: UInt64 = 0
    var buckets = [UInt64](repeating: 0, count: LatencyHistogram.upperBoundsNanoseconds.count + 1)
    for (node, samples) in current {
      guard let sample = samples[key] else { continue }
      let delta = sample.subtracting(previous[node]?[key])
      completed += delta.completed
      errors += delta.http5xx
      for (index, count) in delta.latencyBuckets.enumerated() where index < buckets.count { buckets[index] += count }
    }
    return MetricSample(
      at: now, requestCount: Int(clamping: completed), http5xxCount: Int(clamping: errors),
      latencyP99Milliseconds: Self.p99Milliseconds(buckets))
  }

  /// Drops what belongs to deployments no longer active.
  mutating func forget(except active: Set<String>) { baselines = baselines.filter { active.contains($0.key) } }

  /// The upper bound of the bucket holding the 99th percentile, in milliseconds (0 when empty).
  static func p99Milliseconds(_ buckets: [UInt64]) -> Double {
    LatencyHistogram(bucketCounts: buckets).quantileUpperBound(0.99).map { Double($0) / 1e6 } ?? 0
  }
}
