// Issue 11, items 11 and 14: client-side timeouts and limits, and HTTP details, on raw sockets.

import CoreMetrics
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import TealMetrics
import TealTestSupport
import Testing

@testable import TealLoadBalancer

/// One blue backend behind a balancer with short client timeouts.
private func startBalancer(
  _ configuration: LoadBalancerConfiguration, metricsFactory: any MetricsFactory = NOOPMetricsHandler.instance
) async throws -> (LoadBalancer, LBTestBackend, ServiceListeners) {
  let backend = try await LBTestBackend.start(revision: "blue")
  let balancer = LoadBalancer(configuration: configuration, metricsFactory: metricsFactory)
  let listeners = try await balancer.addService(
    lbTestService(),
    routes: ServiceRoutes(
      generation: 1, targetGroups: [TargetGroup(revision: "blue", targets: [backend.address])],
      productionWeights: ["blue": 1]))
  return (balancer, backend, listeners)
}

private let shortTimeouts = LoadBalancerConfiguration(
  responseTimeout: .seconds(1), headerReadTimeout: .milliseconds(300), clientIdleTimeout: .milliseconds(300),
  bodyIdleTimeout: .milliseconds(300), responseBodyIdleTimeout: .milliseconds(300))

@Suite("Client timeouts, limits and HTTP details", .serialized)
struct ClientLimitsTests {
  /// Before: a slowloris client stayed connected for 30 s and more.
  @Test func aRequestHeadThatNeverCompletesGets408() async throws {
    let (balancer, backend, listeners) = try await startBalancer(shortTimeouts)
    let client = try await RawClient.connect(port: listeners.productionPort)
    try await client.send("GET / HTTP/1.1\r\nhost: teal.test\r\nx-slow: ")
    let closed = await client.closedByServer(within: .seconds(5))
    await client.close()
    await balancer.shutdown()
    await backend.kill()
    #expect(closed)
    #expect(client.text.hasPrefix("HTTP/1.1 408 Request Timeout\r\n"), "\(client.text)")
    #expect(backend.served == 0)
  }

  @Test func anIdleKeepAliveConnectionIsClosed() async throws {
    let (balancer, backend, listeners) = try await startBalancer(shortTimeouts)
    let client = try await RawClient.connect(port: listeners.productionPort)
    try await client.send("GET / HTTP/1.1\r\nhost: teal.test\r\n\r\n")
    let answered = await lbEventually { client.text.contains("blue\n") }
    let closed = await client.closedByServer(within: .seconds(5))
    await client.close()
    await balancer.shutdown()
    await backend.kill()
    #expect(answered)
    #expect(closed)
  }

  @Test func aStalledRequestBodyGets408() async throws {
    let (balancer, backend, listeners) = try await startBalancer(shortTimeouts)
    let client = try await RawClient.connect(port: listeners.productionPort)
    try await client.send("POST /echo HTTP/1.1\r\nhost: teal.test\r\ncontent-length: 100\r\n\r\n0123456789")
    let closed = await client.closedByServer(within: .seconds(5))
    await client.close()
    await balancer.shutdown()
    await backend.kill()
    #expect(closed)
    #expect(client.text.hasPrefix("HTTP/1.1 408"), "\(client.text)")
  }

  @Test func aResponseStalledMidBodyIsCut() async throws {
    let (balancer, backend, listeners) = try await startBalancer(shortTimeouts)
    let client = try await RawClient.connect(port: listeners.productionPort)
    try await client.send("GET /stall HTTP/1.1\r\nhost: teal.test\r\n\r\n")
    let closed = await client.closedByServer(within: .seconds(5))
    await client.close()
    await balancer.shutdown()
    await backend.kill()
    #expect(closed)
    #expect(client.text.hasPrefix("HTTP/1.1 200"))
    #expect(client.text.hasSuffix("xxxxxxxxxx"), "only the 10 bytes the target sent")
  }

  /// Before: with the default 60 s response timeout, a target that stalled mid-body held the
  /// client connection for 60 s (the stall was noticed only when the response timer fired).
  @Test func aStalledResponseBodyIsCutAfterTheBodyIdleTimeoutAndCounted() async throws {
    let registry = NodeMetricsRegistry()
    let (balancer, backend, listeners) = try await startBalancer(
      LoadBalancerConfiguration(responseBodyIdleTimeout: .milliseconds(300)), metricsFactory: registry.factory)
    let client = try await RawClient.connect(port: listeners.productionPort)
    let started = ContinuousClock.now
    try await client.send("GET /stall HTTP/1.1\r\nhost: teal.test\r\n\r\n")
    let closed = await client.closedByServer(within: .seconds(10))
    let elapsed = ContinuousClock.now - started
    let metrics = balancer.metrics().targetGroup(service: "web", revision: "blue")
    let exposition = try PrometheusExposition(parsing: await registry.exposition())
    await client.close()
    await balancer.shutdown()
    await backend.kill()
    #expect(closed)
    #expect(elapsed >= .milliseconds(300))
    #expect(elapsed < .seconds(10), "took \(elapsed)")
    #expect(client.text.hasPrefix("HTTP/1.1 200"))
    #expect(client.text.hasSuffix("xxxxxxxxxx"), "only the 10 bytes the target sent")
    #expect(metrics?.stalledResponses == 1)
    #expect(metrics?.aborted == 1)
    let group = ["service": "web", "listener": "production", "revision": "blue"]
    #expect(exposition.value("teal_lb_stalled_responses_total", group) == 1)
    #expect(exposition.value("teal_lb_aborted_total", group) == 1)
  }

  @Test func theResponseBodyIdleTimeoutDefaultsToTenSeconds() {
    #expect(LoadBalancerConfiguration().responseBodyIdleTimeout == .seconds(10))
  }

  @Test func connectionsOverTheLimitGet503() async throws {
    let (balancer, backend, listeners) = try await startBalancer(LoadBalancerConfiguration(maxClientConnections: 2))
    let first = try await RawClient.connect(port: listeners.productionPort)
    let second = try await RawClient.connect(port: listeners.productionPort)
    try await first.send("GET / HTTP/1.1\r\nhost: teal.test\r\n\r\n")
    try await second.send("GET / HTTP/1.1\r\nhost: teal.test\r\n\r\n")
    let served = await lbEventually { first.text.contains("blue\n") && second.text.contains("blue\n") }
    let third = try await RawClient.connect(port: listeners.productionPort)
    let refused = await third.closedByServer(within: .seconds(5))
    await first.close()
    await second.close()
    await third.close()
    await balancer.shutdown()
    await backend.kill()
    #expect(served)
    #expect(refused)
    #expect(third.text.hasPrefix("HTTP/1.1 503"), "\(third.text)")
  }

  /// Before: an HTTP/1.0 request without Host left as HTTP/1.1 without Host.
  @Test func anHTTP10RequestWithoutHostLeavesWithOne() async throws {
    let (balancer, backend, listeners) = try await startBalancer(LoadBalancerConfiguration())
    let client = try await RawClient.connect(port: listeners.productionPort)
    try await client.send("GET / HTTP/1.0\r\n\r\n")
    let closed = await client.closedByServer(within: .seconds(5))
    await client.close()
    await balancer.shutdown()
    await backend.kill()
    #expect(closed)
    #expect(client.text.contains("x-seen-version: 1.1\r\n"))
    #expect(client.text.contains("x-seen-host: \(backend.address)\r\n"), "\(client.text)")
  }

  /// Before: `Transfer-Encoding: gzip, chunked` was forwarded as plain chunked, losing the gzip coding.
  @Test func aTransferCodingOtherThanChunkedGets501() async throws {
    let (balancer, backend, listeners) = try await startBalancer(LoadBalancerConfiguration())
    let client = try await RawClient.connect(port: listeners.productionPort)
    try await client.send(
      "POST /echo HTTP/1.1\r\nhost: teal.test\r\ntransfer-encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
    let closed = await client.closedByServer(within: .seconds(5))
    await client.close()
    await balancer.shutdown()
    await backend.kill()
    #expect(closed)
    #expect(client.text.hasPrefix("HTTP/1.1 501"), "\(client.text)")
    #expect(client.text.contains("transfer-coding 'gzip'"))
    #expect(backend.served == 0)
  }

  /// Before: a client's own X-Forwarded-For was appended to, so any client could claim any address.
  @Test func anUntrustedClientsForwardedForIsReplaced() async throws {
    let (balancer, backend, listeners) = try await startBalancer(LoadBalancerConfiguration())
    let client = try await LBTestHTTPClient.connect(port: listeners.productionPort)
    let response = try await client.request(.GET, "/", headers: [("x-forwarded-for", "203.0.113.9")])
    await client.close()
    await balancer.shutdown()
    await backend.kill()
    #expect(response.headers.first(name: "x-seen-forwarded-for") == "127.0.0.1")
  }

  /// Before: the test listener bound every interface by default.
  @Test func theTestListenerBindsLoopbackByDefault() {
    let service = ServiceConfiguration(name: "web", productionPort: 80, testPort: 8080)
    #expect(service.testListenHost == "127.0.0.1")
  }
}
