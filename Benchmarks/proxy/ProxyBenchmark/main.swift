// ProxyBenchmark: runs Teal's load balancer for Benchmarks/proxy/run.sh.
// usage: ProxyBenchmark <listen-port> <seconds> <host:port> [<host:port> ...]

import Foundation
import TealLoadBalancer

do {
  try await LoadBalancerBenchmarkHarness.run(arguments: Array(CommandLine.arguments.dropFirst()))
} catch {
  print("ProxyBenchmark: \(error)")
  exit(2)
}
