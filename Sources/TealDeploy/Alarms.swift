// Alarms: rules over the load balancer's metrics for green's target group, evaluated purely from
// metric samples the shell feeds in. A breach becomes an `Event.alarmFired` for the engine.

/// One metrics snapshot of green's target group, covering the interval that ends at `at`.
public struct MetricSample: Codable, Hashable, Sendable {
  public var at: Instant
  public var requestCount: Int
  public var http5xxCount: Int
  /// 99th percentile latency over the interval, in milliseconds.
  public var latencyP99Milliseconds: Double

  public init(at: Instant, requestCount: Int, http5xxCount: Int, latencyP99Milliseconds: Double) {
    self.at = at
    self.requestCount = requestCount
    self.http5xxCount = http5xxCount
    self.latencyP99Milliseconds = latencyP99Milliseconds
  }
}

/// An alarm whose metric exceeded its threshold over its window.
public struct AlarmBreach: Hashable, Sendable {
  public var alarm: String
  public var value: Double
  public var threshold: Double
  public var reason: String

  /// The engine event this breach becomes.
  public var event: DeploymentEngine.Event { .alarmFired(alarm: alarm, reason: reason) }
}

/// Evaluates a deployment's alarms over recent samples.
///
/// Rules: `http5xxRate` is the sum of 5xx responses over the sum of requests of the samples in
/// `(now - window, now]` (no requests: no breach); `latencyP99` is the largest p99 among those
/// samples. An alarm breaches when the value is strictly above its threshold and the current stage
/// is one of its `evaluateDuring` stages. Samples older than the longest window are dropped.
public struct AlarmEvaluator: Sendable, Hashable {
  public let alarms: [AlarmSpec]
  public private(set) var samples: [MetricSample] = []

  public init(alarms: [AlarmSpec]) { self.alarms = alarms }

  /// Adds a sample and drops samples no alarm can see any more.
  public mutating func record(_ sample: MetricSample) {
    samples.append(sample)
    let longest = alarms.map(\.window).max() ?? .zero
    let cutoff = Instant(millisecondsSinceEpoch: sample.at.millisecondsSinceEpoch - longest.milliseconds)
    samples.removeAll { $0.at <= cutoff }
  }

  /// The alarms breached at `now` during `stage`.
  public func breaches(stage: LifecycleStage, now: Instant) -> [AlarmBreach] {
    var found: [AlarmBreach] = []
    for alarm in alarms where alarm.evaluateDuring.contains(stage) {
      let from = Instant(millisecondsSinceEpoch: now.millisecondsSinceEpoch - alarm.window.milliseconds)
      let window = samples.filter { $0.at > from && $0.at <= now }
      guard !window.isEmpty else { continue }
      switch alarm.metric {
      case .http5xxRate:
        let requests = window.reduce(0) { $0 + $1.requestCount }
        guard requests > 0 else { continue }
        let rate = Double(window.reduce(0) { $0 + $1.http5xxCount }) / Double(requests)
        if rate > alarm.threshold {
          found.append(
            AlarmBreach(
              alarm: alarm.name, value: rate, threshold: alarm.threshold,
              reason: "http5xxRate \(rate) over \(alarm.window) > threshold \(alarm.threshold) (\(requests) requests)"))
        }
      case .latencyP99:
        let worst = window.map(\.latencyP99Milliseconds).max() ?? 0
        if worst > alarm.threshold {
          found.append(
            AlarmBreach(
              alarm: alarm.name, value: worst, threshold: alarm.threshold,
              reason: "latencyP99 \(worst)ms over \(alarm.window) > threshold \(alarm.threshold)ms"))
        }
      }
    }
    return found
  }
}
