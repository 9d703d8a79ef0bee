// The balancer's Prometheus series, recorded through swift-metrics with the factory the balancer
// was given (the node's per-node registry; a no-op by default). The pure counters of Metrics.swift
// stay the source of the alarms' windows; these handles are updated under the same service lock, at
// the same events, so both count the same thing.
//
// Cardinality: one set of series per (service, listener, revision) routed by this node, and one
// gauge per target in the routes. Service and revision names and targets come from the routes the
// node installs from the committed cluster state; a revision's series are destroyed once it left
// the routes and has no request in flight, a target's gauge once it left the routes, and all of a
// service's series when the service is removed.

import CoreMetrics

extension LoadBalancer {
  /// The factory that records nothing (the default of ``LoadBalancer/init(configuration:eventLoopGroup:logger:metricsFactory:)``).
  public static var noMetrics: any MetricsFactory { NOOPMetricsHandler.instance }
}

/// Series names of the balancer (described in TealMetrics' catalogue and Docs/OPERATIONS.md).
public enum LoadBalancerSeries {
  public static let requests = "teal_lb_requests_total"
  public static let responses = "teal_lb_responses_total"
  public static let retries = "teal_lb_retries_total"
  public static let connectFailures = "teal_lb_connect_failures_total"
  public static let aborted = "teal_lb_aborted_total"
  public static let stalledResponses = "teal_lb_stalled_responses_total"
  public static let inFlight = "teal_lb_in_flight_requests"
  public static let requestDuration = "teal_lb_request_duration_seconds"
  public static let noHealthyTarget = "teal_lb_no_healthy_target_total"
  public static let badRequests = "teal_lb_bad_requests_total"
  public static let targetHealthy = "teal_lb_target_healthy"
}

/// The handles of one target group (service, listener, revision).
final class TargetGroupSeries: Sendable {
  let requests: Counter
  let retries: Counter
  let connectFailures: Counter
  let aborted: Counter
  let stalledResponses: Counter
  /// Responses answered by a target, by status class: 2xx, 4xx, 5xx, other (1xx, 3xx).
  let targetResponses: [String: Counter]
  /// 5xx made by the balancer (502, 504).
  let balancerResponses5xx: Counter
  let latency: Timer
  let inFlight: Gauge

  static let statusClasses = ["2xx", "4xx", "5xx", "other"]

  init(service: String, key: TargetGroupKey, factory: any MetricsFactory) {
    let labels = [("service", service), ("listener", key.listener.rawValue), ("revision", key.revision)]
    func counter(_ name: String) -> Counter { Counter(label: name, dimensions: labels, factory: factory) }
    self.requests = counter(LoadBalancerSeries.requests)
    self.retries = counter(LoadBalancerSeries.retries)
    self.connectFailures = counter(LoadBalancerSeries.connectFailures)
    self.aborted = counter(LoadBalancerSeries.aborted)
    self.stalledResponses = counter(LoadBalancerSeries.stalledResponses)
    var responses: [String: Counter] = [:]
    for code in Self.statusClasses {
      responses[code] = Counter(
        label: LoadBalancerSeries.responses, dimensions: labels + [("code", code), ("origin", "target")],
        factory: factory)
    }
    self.targetResponses = responses
    self.balancerResponses5xx = Counter(
      label: LoadBalancerSeries.responses, dimensions: labels + [("code", "5xx"), ("origin", "balancer")],
      factory: factory)
    self.latency = Timer(label: LoadBalancerSeries.requestDuration, dimensions: labels, factory: factory)
    self.inFlight = Gauge(label: LoadBalancerSeries.inFlight, dimensions: labels, factory: factory)
  }

  /// Mirrors `TargetGroupMetrics.recordFinish`.
  func recordFinish(status: Int?, byBalancer: Bool, nanoseconds: Int64) {
    guard let status else {
      self.aborted.increment()
      return
    }
    if byBalancer, (500..<600).contains(status) {
      self.balancerResponses5xx.increment()
    } else {
      let code: String
      switch status {
      case 200..<300: code = "2xx"
      case 400..<500: code = "4xx"
      case 500..<600: code = "5xx"
      default: code = "other"
      }
      self.targetResponses[code]?.increment()
    }
    self.latency.recordNanoseconds(max(0, nanoseconds))
  }

  func destroy() {
    for counter in [self.requests, self.retries, self.connectFailures, self.aborted, self.stalledResponses] {
      counter.destroy()
    }
    for counter in self.targetResponses.values { counter.destroy() }
    self.balancerResponses5xx.destroy()
    self.latency.destroy()
    self.inFlight.destroy()
  }
}

/// The handles of one service, kept with its ServiceTraffic under the service lock.
struct ServiceSeries: Sendable {
  let service: String
  let factory: any MetricsFactory
  private(set) var groups: [TargetGroupKey: TargetGroupSeries] = [:]
  private var noHealthyTarget: [ListenerRole: Counter] = [:]
  private var targetHealthy: [TargetAddress: Gauge] = [:]
  private var badRequests: Counter?
  /// Set once the service was removed: a late event of a connection still closing records into
  /// no-op handles instead of registering its series again.
  private var isRetired = false

  init(service: String, factory: any MetricsFactory) {
    self.service = service
    self.factory = factory
  }

  private var liveFactory: any MetricsFactory { self.isRetired ? NOOPMetricsHandler.instance : self.factory }

  mutating func group(_ role: ListenerRole, _ revision: String) -> TargetGroupSeries {
    let key = TargetGroupKey(listener: role, revision: revision)
    if let series = self.groups[key] { return series }
    let series = TargetGroupSeries(service: self.service, key: key, factory: self.liveFactory)
    self.groups[key] = series
    return series
  }

  mutating func recordNoHealthyTarget(_ role: ListenerRole) {
    if let counter = self.noHealthyTarget[role] { return counter.increment() }
    let counter = Counter(
      label: LoadBalancerSeries.noHealthyTarget, dimensions: [("service", self.service), ("listener", role.rawValue)],
      factory: self.liveFactory)
    self.noHealthyTarget[role] = counter
    counter.increment()
  }

  mutating func recordBadRequest() {
    if let counter = self.badRequests { return counter.increment() }
    let counter = Counter(
      label: LoadBalancerSeries.badRequests, dimensions: [("service", self.service)], factory: self.liveFactory)
    self.badRequests = counter
    counter.increment()
  }

  /// Sets the gauges from `traffic` (in flight per group, health per target) and destroys the series
  /// of what left the routes: targets at once, revisions once nothing of theirs is in flight.
  mutating func refresh(from traffic: ServiceTraffic) {
    guard !self.isRetired else { return }
    let routed = Set(traffic.router.routes.targetGroups.map(\.revision))
    for (key, series) in self.groups {
      let inFlight = traffic.metrics.targetGroups[key]?.inFlight ?? 0
      if !routed.contains(key.revision), traffic.inFlight[key.revision] == nil {
        series.destroy()
        self.groups[key] = nil
      } else {
        series.inFlight.record(inFlight)
      }
    }
    let targets = traffic.allTargets
    for (target, gauge) in self.targetHealthy where !targets.contains(target) {
      gauge.destroy()
      self.targetHealthy[target] = nil
    }
    for target in targets {
      let gauge =
        self.targetHealthy[target]
        ?? Gauge(
          label: LoadBalancerSeries.targetHealthy,
          dimensions: [("service", self.service), ("target", target.description)],
          factory: self.factory)
      self.targetHealthy[target] = gauge
      gauge.record(traffic.router.healthyTargets.contains(target) ? 1 : 0)
    }
  }

  /// Destroys every series of the service (it was removed).
  mutating func destroyAll() {
    for series in self.groups.values { series.destroy() }
    for counter in self.noHealthyTarget.values { counter.destroy() }
    for gauge in self.targetHealthy.values { gauge.destroy() }
    self.badRequests?.destroy()
    self = ServiceSeries(service: self.service, factory: self.factory)
    self.isRetired = true
  }
}
