// Issue 17 (#15 in its text), item 2: the balancer's series through swift-metrics into a node's
// Prometheus registry, parsed by the strict parser of TealTestSupport.

import CoreMetrics
import NIOCore
import TealMetrics
import TealTestSupport
import Testing

@testable import TealLoadBalancer

@Suite("Prometheus exposition of the balancer", .serialized)
struct MetricsExpositionTests {
  private let blueGroup = ["service": "web", "listener": "production", "revision": "blue"]

  /// Requests over real sockets through a real balancer move the counters, the status classes by
  /// origin and the latency histogram; every value equals the pure snapshot the alarms read.
  @Test func countersMoveWhenTrafficFlowsThroughARealBalancer() async throws {
    let metrics = NodeMetricsRegistry()
    let backend = try await LBTestBackend.start(revision: "blue")
    let balancer = LoadBalancer(metricsFactory: metrics.factory)
    metrics.addCollector { balancer.collectMetrics() }
    let listeners = try await balancer.addService(
      lbTestService(),
      routes: ServiceRoutes(
        generation: 1, targetGroups: [TargetGroup(revision: "blue", targets: [backend.address])],
        productionWeights: ["blue": 1], testWeights: ["blue": 1]))
    let before = try PrometheusExposition(parsing: await metrics.exposition())
    #expect(before.value("teal_lb_requests_total", blueGroup) == nil, "no series before the first request")
    #expect(before.value("teal_lb_target_healthy", ["service": "web", "target": backend.address.description]) == 1)

    var client = try await LBTestHTTPClient.connect(port: listeners.productionPort)
    for _ in 0..<7 { #expect(try await client.request(.GET, "/").status == .ok) }
    for _ in 0..<3 { #expect(try await client.request(.GET, "/fail").status == .internalServerError) }
    await client.close()
    let test = try await LBTestHTTPClient.connect(port: listeners.testPort)
    #expect(try await test.request(.GET, "/").status == .ok)
    await test.close()

    let after = try PrometheusExposition(parsing: await metrics.exposition())
    #expect(after.value("teal_lb_requests_total", blueGroup) == 10)
    #expect(after.value("teal_lb_requests_total", blueGroup.merging(["listener": "test"]) { $1 }) == 1)
    #expect(after.value("teal_lb_responses_total", blueGroup.merging(["code": "2xx", "origin": "target"]) { $1 }) == 7)
    #expect(after.value("teal_lb_responses_total", blueGroup.merging(["code": "5xx", "origin": "target"]) { $1 }) == 3)
    #expect(
      after.value("teal_lb_responses_total", blueGroup.merging(["code": "5xx", "origin": "balancer"]) { $1 }) == 0)
    #expect(after.value("teal_lb_request_duration_seconds_count", blueGroup) == 10)
    #expect(after.value("teal_lb_request_duration_seconds_bucket", blueGroup.merging(["le": "+Inf"]) { $1 }) == 10)
    #expect((after.value("teal_lb_request_duration_seconds_sum", blueGroup) ?? 0) > 0)
    #expect(after.value("teal_lb_in_flight_requests", blueGroup) == 0)
    #expect(after.families["teal_lb_request_duration_seconds"]?.type == "histogram")
    #expect(after.families["teal_lb_requests_total"]?.help?.isEmpty == false)
    for (name, family) in after.families {
      #expect(TealMetricCatalogue.byName[name]?.kind.rawValue == family.type, "\(name) is not in the catalogue")
      #expect(family.help == TealMetricCatalogue.byName[name]?.help, "\(name) has no HELP from the catalogue")
    }

    // The same numbers as the snapshot the alarms use.
    let snapshot = try #require(balancer.metrics().targetGroup(service: "web", revision: "blue"))
    #expect(snapshot.requests == 10)
    #expect(snapshot.responses2xx == 7)
    #expect(snapshot.responses5xx == 3)
    #expect(snapshot.latency.count == 10)

    // A target that is gone: the balancer answers 502 itself (origin balancer) after its retries.
    await backend.kill()
    client = try await LBTestHTTPClient.connect(port: listeners.productionPort)
    let status = try await client.request(.GET, "/").status
    await client.close()
    let failed = try PrometheusExposition(parsing: await metrics.exposition())
    #expect(status == .badGateway || status == .serviceUnavailable, "got \(status)")
    if status == .badGateway {
      #expect(
        failed.value("teal_lb_responses_total", blueGroup.merging(["code": "5xx", "origin": "balancer"]) { $1 }) == 1)
      #expect((failed.value("teal_lb_connect_failures_total", blueGroup) ?? 0) >= 1)
    } else {
      #expect(failed.value("teal_lb_no_healthy_target_total", ["service": "web", "listener": "production"]) == 1)
    }
    await balancer.shutdown()
    // A removed service leaves no series behind.
    let gone = try PrometheusExposition(parsing: await metrics.exposition())
    #expect(gone.samples("teal_lb_requests_total").isEmpty)
    #expect(gone.samples("teal_lb_target_healthy").isEmpty)
  }

  /// The series mirror the pure counters event by event, including retries and in-flight requests,
  /// and the histogram's buckets are LatencyHistogram's.
  @Test func seriesMirrorThePureCounters() throws {
    let registry = NodeMetricsRegistry()
    let blue1 = TargetAddress(host: "10.0.0.1", port: 80)
    let blue2 = TargetAddress(host: "10.0.0.2", port: 80)
    var traffic = ServiceTraffic(
      routes: ServiceRoutes(
        generation: 1, targetGroups: [TargetGroup(revision: "blue", targets: [blue1, blue2])],
        productionWeights: ["blue": 1]),
      healthyThreshold: 1, unhealthyThreshold: 3)
    traffic.recordProbe(blue1, passed: true)
    traffic.recordProbe(blue2, passed: true)
    let runtime = ServiceRuntime(name: "web", traffic: traffic, metricsFactory: registry.factory)
    let first = try #require(runtime.begin(.production))
    let moved = try #require(runtime.retry(.production, failed: first, excluding: []))
    runtime.finish(.production, moved, status: 502, byBalancer: true, nanoseconds: 1_500_000)
    _ = try #require(runtime.begin(.production))
    runtime.recordBadRequest()
    runtime.refreshSeries()
    let exposition = try PrometheusExposition(parsing: registry.registry.emitToString())
    let pure = try #require(
      runtime.traffic.metrics.targetGroups[TargetGroupKey(listener: .production, revision: "blue")])
    #expect(exposition.value("teal_lb_requests_total", blueGroup) == Double(pure.requests))
    #expect(exposition.value("teal_lb_retries_total", blueGroup) == Double(pure.retries))
    #expect(exposition.value("teal_lb_connect_failures_total", blueGroup) == Double(pure.connectFailures))
    #expect(
      exposition.value("teal_lb_responses_total", blueGroup.merging(["code": "5xx", "origin": "balancer"]) { $1 })
        == Double(pure.balancerResponses5xx))
    #expect(exposition.value("teal_lb_in_flight_requests", blueGroup) == Double(pure.inFlight))
    #expect(pure.inFlight == 1)
    #expect(exposition.value("teal_lb_bad_requests_total", ["service": "web"]) == 1)
    let buckets = exposition.samples("teal_lb_request_duration_seconds_bucket", matching: blueGroup)
    let bounds = buckets.compactMap { $0.labels["le"] }.filter { $0 != "+Inf" }.compactMap(Double.init)
    #expect(bounds == LatencyHistogram.upperBoundsNanoseconds.map { Double($0) / 1e9 })
    #expect(exposition.value("teal_lb_request_duration_seconds_bucket", blueGroup.merging(["le": "0.001"]) { $1 }) == 0)
    #expect(
      exposition.value("teal_lb_request_duration_seconds_bucket", blueGroup.merging(["le": "0.0025"]) { $1 }) == 1)
    #expect(exposition.value("teal_lb_request_duration_seconds_sum", blueGroup) == 0.0015)
  }

  /// A revision that left the routes and drained loses its series (bounded cardinality).
  @Test func seriesOfARevisionThatLeftTheRoutesAreDropped() throws {
    let registry = NodeMetricsRegistry()
    let blue = TargetAddress(host: "10.0.0.1", port: 80)
    let green = TargetAddress(host: "10.0.0.2", port: 80)
    var traffic = ServiceTraffic(
      routes: ServiceRoutes(
        generation: 1, targetGroups: [TargetGroup(revision: "blue", targets: [blue])], productionWeights: ["blue": 1]),
      healthyThreshold: 1, unhealthyThreshold: 1)
    traffic.recordProbe(blue, passed: true)
    let runtime = ServiceRuntime(name: "web", traffic: traffic, metricsFactory: registry.factory)
    let choice = try #require(runtime.begin(.production))
    runtime.withTraffic { traffic in
      traffic.install(
        ServiceRoutes(
          generation: 2, targetGroups: [TargetGroup(revision: "green", targets: [green])],
          productionWeights: ["green": 1]))
    }
    runtime.refreshSeries()
    var exposition = try PrometheusExposition(parsing: registry.registry.emitToString())
    #expect(exposition.value("teal_lb_requests_total", blueGroup) == 1, "kept while a request is in flight")
    #expect(exposition.samples("teal_lb_target_healthy", matching: ["target": blue.description]).isEmpty)
    runtime.finish(.production, choice, status: 200, byBalancer: false, nanoseconds: 1000)
    runtime.refreshSeries()
    exposition = try PrometheusExposition(parsing: registry.registry.emitToString())
    #expect(exposition.samples("teal_lb_requests_total", matching: ["revision": "blue"]).isEmpty)
    #expect(exposition.value("teal_lb_target_healthy", ["service": "web", "target": green.description]) == 0)

    // Removed: a late event of a connection still closing registers nothing again.
    _ = runtime.withTraffic { $0.recordProbe(green, passed: true) }
    let late = try #require(runtime.begin(.production))
    runtime.destroySeries()
    runtime.finish(.production, late, status: 200, byBalancer: false, nanoseconds: 1000)
    runtime.recordBadRequest()
    _ = runtime.begin(.test)
    runtime.refreshSeries()
    #expect(registry.registry.emitToString().contains("service=\"web\"") == false)
  }
}

@Suite("The strict Prometheus text parser")
struct PrometheusTextParserTests {
  @Test func acceptsEscapedLabelValuesFromTheRegistry() throws {
    let registry = NodeMetricsRegistry()
    let counter = Counter(
      label: "teal_test_total", dimensions: [("path", "a\"b\\c\nd")], factory: registry.factory)
    counter.increment(by: 3)
    let exposition = try PrometheusExposition(parsing: registry.registry.emitToString())
    #expect(exposition.value("teal_test_total", ["path": "a\"b\\c\nd"]) == 3)
    #expect(exposition.families["teal_test_total"]?.type == "counter")
  }

  @Test(arguments: [
    ("a bad escape", "# TYPE x counter\nx{a=\"\\q\"} 1\n"),
    ("an unquoted label value", "x{a=b} 1\n"),
    ("the same series twice", "x{a=\"1\"} 1\nx{a=\"1\"} 2\n"),
    ("a TYPE after samples", "x 1\n# TYPE x counter\n"),
    ("interleaved families", "x 1\ny 1\nx{a=\"2\"} 1\n"),
    ("a negative counter", "# TYPE x counter\nx -1\n"),
    ("a bad name", "1x 1\n"),
    ("no final line feed", "x 1"),
    ("a bad value", "x one\n"),
    (
      "buckets that are not cumulative",
      "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n"
    ),
    ("a count that differs from +Inf", "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 3\n"),
    ("a histogram without +Inf", "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_sum 1\nh_count 2\n"),
    ("a bucket without le", "# TYPE h histogram\nh_bucket 2\nh_sum 1\nh_count 2\n"),
  ])
  func rejects(_ what: String, _ text: String) {
    #expect(throws: PrometheusTextError.self, "\(what)") { try PrometheusExposition(parsing: text) }
  }

  @Test func acceptsAWellFormedHistogramWithHelp() throws {
    let text = """
      # HELP h Time of \\\\ things.
      # TYPE h histogram
      h_bucket{a="x",le="0.5"} 1
      h_bucket{a="x",le="+Inf"} 2
      h_sum{a="x"} 1.25
      h_count{a="x"} 2

      """
    let exposition = try PrometheusExposition(parsing: text)
    #expect(exposition.families["h"]?.help == "Time of \\ things.")
    #expect(exposition.value("h_count", ["a": "x"]) == 2)
  }
}
