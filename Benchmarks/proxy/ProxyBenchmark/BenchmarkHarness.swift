// A runnable load balancer for the proxy benchmark (Benchmarks/proxy): one service, one target group,
// listening for a fixed time while wrk drives it.

import Foundation
import NIOPosix
import TealLoadBalancer
import TealMetrics

/// Runs a load balancer for benchmarks. Called by `Benchmarks/proxy/ProxyBenchmark/main.swift`.
enum LoadBalancerBenchmarkHarness {
  /// Why the arguments were rejected.
  struct UsageError: Error, CustomStringConvertible {
    public var description: String
  }

  static let usage =
    "usage: ProxyBenchmark <listen-port> <seconds> <host:port> [<host:port> ...]\n"
    + "  serves one service on 127.0.0.1:<listen-port> for <seconds>, round-robin over the targets"

  /// Parses `<listen-port> <seconds> <host:port>...` (program name excluded).
  static func parse(_ arguments: [String]) throws -> (port: Int, seconds: Int, targets: [TargetAddress]) {
    guard arguments.count >= 3, let port = Int(arguments[0]), let seconds = Int(arguments[1]), seconds > 0 else {
      throw UsageError(description: usage)
    }
    var targets: [TargetAddress] = []
    for argument in arguments.dropFirst(2) {
      let parts = argument.split(separator: ":")
      guard parts.count == 2, let targetPort = Int(parts[1]) else {
        throw UsageError(description: "target '\(argument)' is not host:port\n" + usage)
      }
      targets.append(TargetAddress(host: String(parts[0]), port: targetPort))
    }
    return (port, seconds, targets)
  }

  /// Serves until `seconds` have passed, then prints the per-revision metrics and shuts down.
  static func run(arguments: [String]) async throws {
    let (port, seconds, targets) = try parse(arguments)
    // TEAL_BENCH_METRICS=1: record the Prometheus series into a node registry, as a node does.
    let registry = ProcessInfo.processInfo.environment["TEAL_BENCH_METRICS"] == "1" ? NodeMetricsRegistry() : nil
    let balancer = LoadBalancer(
      configuration: LoadBalancerConfiguration(maxIdleConnectionsPerTarget: 256),
      eventLoopGroup: MultiThreadedEventLoopGroup.singleton,
      metricsFactory: registry?.factory ?? LoadBalancer.noMetrics)
    let routes = ServiceRoutes(
      generation: 1, targetGroups: [TargetGroup(revision: "bench", targets: targets)], productionWeights: ["bench": 1])
    let listeners = try await balancer.addService(
      ServiceConfiguration(
        name: "bench", listenHost: "127.0.0.1", productionPort: port, testPort: 0,
        healthCheck: HealthCheckConfiguration(probe: .tcp, interval: .seconds(1))),
      routes: routes)
    print("teal proxy benchmark: listening on 127.0.0.1:\(listeners.productionPort) for \(seconds) s")
    try await Task.sleep(for: .seconds(seconds))
    if let metrics = balancer.metrics().targetGroup(service: "bench", revision: "bench") {
      print(
        "teal proxy benchmark: requests=\(metrics.requests) 2xx=\(metrics.responses2xx) 5xx=\(metrics.responses5xx) "
          + "p99<=\(metrics.p99Seconds.map { "\($0 * 1000) ms" } ?? "n/a")")
    }
    if let registry {
      balancer.collectMetrics()
      let started = ContinuousClock.now
      let text = await registry.exposition()
      print("teal proxy benchmark: exposition of \(text.utf8.count) bytes in \(ContinuousClock.now - started)")
    }
    await balancer.shutdown()
  }
}
