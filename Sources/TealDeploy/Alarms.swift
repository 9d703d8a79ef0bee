// Alarms: rules over the load balancer's metrics for green's target group, evaluated purely from
// metric samples that the leader aggregates from node reports and commits (`metricSample`), so the
// evaluation window is part of the replicated state and a failover does not reset it.

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

/// An alarm whose datapoints breached.
public struct AlarmBreach: Hashable, Sendable {
  public var alarm: String
  public var breachingDatapoints: Int
  public var threshold: Double
  /// Whether this alarm rolls the deployment back (`rollback: true`) or is only recorded.
  public var rollback: Bool
  public var reason: String
}

/// Evaluates a deployment's alarms over recent samples.
///
/// Rules: an alarm's `window` before `now` is split into `evaluationPeriods` equal periods. In each
/// period, `http5xxRate` is the sum of 5xx responses over the sum of requests, `latencyP99` the
/// largest p99; a period with fewer than `minimumRequests` requests is no datapoint. A datapoint
/// breaches when strictly above `threshold`; the alarm fires when at least `datapointsToAlarm`
/// datapoints breach, and only during its `evaluateDuring` stages.
public struct AlarmEvaluator: Sendable, Hashable {
  public let alarms: [AlarmConfiguration]
  public let samples: [MetricSample]

  public init(alarms: [AlarmConfiguration], samples: [MetricSample]) {
    self.alarms = alarms
    self.samples = samples
  }

  /// The alarms breached at `now` during `stage`.
  public func breaches(stage: LifecycleStage, now: Instant) -> [AlarmBreach] {
    var found: [AlarmBreach] = []
    for alarm in alarms where alarm.evaluateDuring.contains(stage) {
      let periods = max(1, alarm.evaluationPeriods)
      let length = max(1, alarm.window.milliseconds / Int64(periods))
      var breaching = 0
      var values: [String] = []
      for period in 0..<periods {
        let end = now.millisecondsSinceEpoch - Int64(period) * length
        let start = end - length
        let inPeriod = samples.filter { $0.at.millisecondsSinceEpoch > start && $0.at.millisecondsSinceEpoch <= end }
        let requests = inPeriod.reduce(0) { $0 + $1.requestCount }
        guard !inPeriod.isEmpty, requests >= max(1, alarm.minimumRequests) else { continue }
        let value: Double
        switch alarm.metric {
        case .http5xxRate: value = Double(inPeriod.reduce(0) { $0 + $1.http5xxCount }) / Double(requests)
        case .latencyP99: value = inPeriod.map(\.latencyP99Milliseconds).max() ?? 0
        }
        if value > alarm.threshold {
          breaching += 1
          values.append(Self.format(value))
        }
      }
      if breaching >= max(1, alarm.datapointsToAlarm) {
        found.append(
          AlarmBreach(
            alarm: alarm.name, breachingDatapoints: breaching, threshold: alarm.threshold, rollback: alarm.rollback,
            reason:
              "\(alarm.metric.rawValue) above \(Self.format(alarm.threshold)) in \(breaching) of \(periods) "
              + "datapoints over \(alarm.window) (\(values.joined(separator: ", ")))"))
      }
    }
    return found
  }

  static func format(_ value: Double) -> String {
    value == value.rounded() && abs(value) < 1e15 ? String(Int64(value)) : String(value)
  }
}
