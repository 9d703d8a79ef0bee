import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import TealMetrics
import TealTestSupport
import Testing

@testable import TealLoadBalancer

/// Two revisions, one backend each, on a fresh load balancer.
private struct BlueGreen {
  let balancer: LoadBalancer
  let metrics: NodeMetricsRegistry
  let blue: LBTestBackend
  let green: LBTestBackend
  let listeners: ServiceListeners

  static func start(
    blue: Int, green: Int, configuration: LoadBalancerConfiguration = LoadBalancerConfiguration(),
    healthCheck: HealthCheckConfiguration = lbFastHealthCheck
  ) async throws -> BlueGreen {
    let blueBackend = try await LBTestBackend.start(revision: "blue")
    let greenBackend = try await LBTestBackend.start(revision: "green")
    let metrics = NodeMetricsRegistry()
    let balancer = LoadBalancer(configuration: configuration, metricsFactory: metrics.factory)
    let listeners = try await balancer.addService(
      lbTestService(healthCheck: healthCheck),
      routes: ServiceRoutes(
        generation: 1,
        targetGroups: [
          TargetGroup(revision: "blue", targets: [blueBackend.address]),
          TargetGroup(revision: "green", targets: [greenBackend.address]),
        ],
        productionWeights: ["blue": blue, "green": green], testWeights: ["green": 1]))
    return BlueGreen(
      balancer: balancer, metrics: metrics, blue: blueBackend, green: greenBackend, listeners: listeners)
  }

  func stop() async {
    await self.balancer.shutdown()
    await self.blue.kill()
    await self.green.kill()
  }
}

/// One observed request: when it started and ended (continuous clock) and what came back.
private struct Observation: Sendable {
  var start: ContinuousClock.Instant
  var end: ContinuousClock.Instant
  var revision: String?
  var failure: String?
}

/// Runs `clients` keep-alive clients in a loop until `stop` is set; returns every observation.
private func runLoad(
  port: Int, clients: Int, path: String = "/", stop: NIOLockedValueBox<Bool>
) async throws -> [Observation] {
  try await withThrowingTaskGroup(of: [Observation].self) { group in
    for _ in 0..<clients {
      group.addTask {
        var observations: [Observation] = []
        var client = try await LBTestHTTPClient.connect(port: port)
        while !stop.withLockedValue({ $0 }) {
          let start = ContinuousClock.now
          do {
            let response = try await client.request(.GET, path)
            let failure = response.status == .ok ? nil : "status \(response.status.code)"
            observations.append(Observation(start: start, end: .now, revision: response.revision, failure: failure))
          } catch {
            observations.append(Observation(start: start, end: .now, revision: nil, failure: "\(error)"))
            await client.close()
            client = try await LBTestHTTPClient.connect(port: port)
          }
        }
        await client.close()
        return observations
      }
    }
    var all: [Observation] = []
    for try await observations in group { all += observations }
    return all
  }
}

/// Writes `bytes` on a fresh connection and returns everything read until the server closes it.
private func rawExchange(port: Int, bytes: String) async throws -> String {
  let received = NIOLockedValueBox("")
  let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
    .channelInitializer { channel in
      channel.eventLoop.makeCompletedFuture {
        try channel.pipeline.syncOperations.addHandler(RawCollector(received: received))
      }
    }
    .connect(host: "127.0.0.1", port: port)
    .get()
  try await channel.writeAndFlush(ByteBuffer(string: bytes))
  try await channel.closeFuture.get()
  return received.withLockedValue { $0 }
}

private final class RawCollector: ChannelInboundHandler {
  typealias InboundIn = ByteBuffer
  let received: NIOLockedValueBox<String>

  init(received: NIOLockedValueBox<String>) {
    self.received = received
  }

  func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    let buffer = self.unwrapInboundIn(data)
    self.received.withLockedValue { $0 += String(buffer: buffer) }
  }
}

@Suite("Load balancer over real sockets", .serialized)
struct ProxySocketTests {
  @Test func weightSwitchesUnderLoadDropNothingAndFollowTheWeightsInForce() async throws {
    let setup = try await BlueGreen.start(blue: 100, green: 0)
    defer { Task { await setup.stop() } }
    // Each entry: the weights installed by one setWeights call and the instant the call began; a
    // table is in force from its call's start until the next call returned.
    let stop = NIOLockedValueBox(false)
    let load = Task { try await runLoad(port: setup.listeners.productionPort, clients: 8, stop: stop) }
    var tables: [(revision: String, callStart: ContinuousClock.Instant, callEnd: ContinuousClock.Instant)] = [
      ("blue", .now - .seconds(3600), .now - .seconds(3600))
    ]
    for index in 0..<20 {
      try await Task.sleep(for: .milliseconds(250))
      let revision = index % 2 == 0 ? "green" : "blue"
      let start = ContinuousClock.now
      try await setup.balancer.setWeights(
        forService: "web", production: revision == "green" ? ["blue": 0, "green": 100] : ["blue": 100, "green": 0])
      tables.append((revision, start, .now))
    }
    try await Task.sleep(for: .milliseconds(100))
    stop.withLockedValue { $0 = true }
    let observations = try await load.value

    #expect(observations.count > 200)
    #expect(observations.filter { $0.failure != nil }.isEmpty)
    for observation in observations {
      let allowed = Set(
        tables.indices.filter { index in
          let inForceFrom = tables[index].callStart
          let inForceUntil = index + 1 < tables.count ? tables[index + 1].callEnd : ContinuousClock.Instant.now
          return inForceFrom <= observation.end && observation.start <= inForceUntil
        }.map { tables[$0].revision })
      // A failed request has no revision either; say why, so this line is not mistaken for a 200
      // without its `x-teal-revision`.
      #expect(
        observation.revision.map(allowed.contains) == true,
        "revision \(observation.revision ?? "none"), failure: \(observation.failure ?? "none")")
    }
    let revisions = Set(observations.compactMap(\.revision))
    #expect(revisions == ["blue", "green"])
  }

  @Test func tenNinetySplitOverTenThousandRequestsIsWithinTwoPoints() async throws {
    let setup = try await BlueGreen.start(blue: 10, green: 90)
    defer { Task { await setup.stop() } }
    let counts = try await withThrowingTaskGroup(of: [String: Int].self) { group in
      for _ in 0..<8 {
        group.addTask {
          let client = try await LBTestHTTPClient.connect(port: setup.listeners.productionPort)
          let counts = try await client.repeatGET(count: 1250, depth: 1)
          await client.close()
          return counts
        }
      }
      var total: [String: Int] = [:]
      for try await counts in group { total.merge(counts, uniquingKeysWith: +) }
      return total
    }
    #expect(counts.values.reduce(0, +) == 10_000)
    let blueShare = Double(counts["blue"] ?? 0) / 10_000
    #expect(abs(blueShare - 0.10) <= 0.02, "blue got \(blueShare * 100)%")
    #expect(
      await lbEventually {
        setup.balancer.metrics().targetGroup(service: "web", revision: "green")?.responses2xx
          == UInt64(counts["green"] ?? 0)
      })
  }

  @Test func killedTargetOnlyFailsRequestsInFlightAndNothingAfterTheHealthCheckNotices() async throws {
    let blue1 = try await LBTestBackend.start(revision: "blue")
    let blue2 = try await LBTestBackend.start(revision: "blue")
    let balancer = LoadBalancer()
    let listeners = try await balancer.addService(
      lbTestService(),
      routes: ServiceRoutes(
        generation: 1, targetGroups: [TargetGroup(revision: "blue", targets: [blue1.address, blue2.address])],
        productionWeights: ["blue": 1]))
    defer {
      Task {
        await balancer.shutdown()
        await blue1.kill()
      }
    }
    let stop = NIOLockedValueBox(false)
    let load = Task { try await runLoad(port: listeners.productionPort, clients: 4, stop: stop) }
    try await Task.sleep(for: .milliseconds(500))
    let killedAt = ContinuousClock.now
    await blue2.kill()
    let noticed = try await lbEventually {
      try await !balancer.healthyTargets(ofService: "web").contains(blue2.address)
    }
    let noticedAt = ContinuousClock.now
    try await Task.sleep(for: .milliseconds(700))
    stop.withLockedValue { $0 = true }
    let observations = try await load.value

    #expect(noticed)
    let failures = observations.filter { $0.failure != nil }
    #expect(failures.count <= 4, "at most one in-flight request per client may fail: \(failures.map(\.failure))")
    for failure in failures { #expect(failure.start <= noticedAt && failure.end >= killedAt) }
    #expect(observations.filter { $0.start > noticedAt && $0.failure == nil }.count > 50)
  }

  @Test func failedConnectIsRetriedOnAnotherTarget() async throws {
    let alive = try await LBTestBackend.start(revision: "blue")
    let doomed = try await LBTestBackend.start(revision: "blue")
    // Slow active checks: only the data path can notice the dead target during this test.
    let slowChecks = HealthCheckConfiguration(interval: .seconds(60), healthyThreshold: 1)
    let balancer = LoadBalancer()
    let listeners = try await balancer.addService(
      lbTestService(healthCheck: slowChecks),
      routes: ServiceRoutes(
        generation: 1, targetGroups: [TargetGroup(revision: "blue", targets: [alive.address, doomed.address])],
        productionWeights: ["blue": 1]))
    defer {
      Task {
        await balancer.shutdown()
        await alive.kill()
      }
    }
    #expect(try await balancer.healthyTargets(ofService: "web") == [alive.address, doomed.address])
    await doomed.kill()
    for _ in 0..<10 {
      // A fresh connection each time, so no pooled connection hides the connect.
      let client = try await LBTestHTTPClient.connect(port: listeners.productionPort)
      let response = try await client.request(.GET, "/", headers: [("connection", "close")])
      #expect(response.status == .ok)
      await client.close()
    }
    #expect(alive.served == 10)
    #expect(try await balancer.healthyTargets(ofService: "web") == [alive.address])
  }

  @Test func deadOnlyTargetGets502UntilTheThresholdThenThe503OfNoHealthyTarget() async throws {
    let doomed = try await LBTestBackend.start(revision: "blue")
    let slowChecks = HealthCheckConfiguration(interval: .seconds(60), healthyThreshold: 1)
    let balancer = LoadBalancer()
    let listeners = try await balancer.addService(
      lbTestService(healthCheck: slowChecks),
      routes: ServiceRoutes(
        generation: 1, targetGroups: [TargetGroup(revision: "blue", targets: [doomed.address])],
        productionWeights: ["blue": 1]))
    defer { Task { await balancer.shutdown() } }
    await doomed.kill()
    // unhealthyThreshold (2) failures take the target out, not the first one. The health loop's
    // first round may count one of them, so the 503 comes after one or two 502s.
    let client = try await LBTestHTTPClient.connect(port: listeners.productionPort)
    let first = try await client.request()
    #expect(first.status == .badGateway)
    #expect(first.revision == "blue")
    var second = try await client.request()
    if second.status == .badGateway { second = try await client.request() }
    #expect(second.status == .serviceUnavailable)
    #expect(second.bodyString.contains("no healthy target for service 'web'"))
    await client.close()
  }

  @Test func drainingWaitsForASlowInFlightRequest() async throws {
    let setup = try await BlueGreen.start(blue: 100, green: 0)
    defer { Task { await setup.stop() } }
    let client = try await LBTestHTTPClient.connect(port: setup.listeners.productionPort)
    let slow = Task { try await client.request(.GET, "/slow?ms=800") }
    #expect(
      await lbEventually { setup.balancer.metrics().targetGroup(service: "web", revision: "blue")?.inFlight == 1 })
    try await setup.balancer.setWeights(forService: "web", production: ["blue": 100, "green": 100])
    let drainStart = ContinuousClock.now
    let drain = Task {
      try await setup.balancer.drain(revision: "blue", ofService: "web", deregistrationDelay: .seconds(10))
    }
    // While blue drains, new requests go to green only.
    let other = try await LBTestHTTPClient.connect(port: setup.listeners.productionPort)
    for _ in 0..<5 { #expect(try await other.request().revision == "green") }
    let outcome = try await drain.value
    let drainTook = ContinuousClock.now - drainStart
    #expect(outcome == .drained)
    #expect(setup.blue.completedSlow == 1)
    #expect(drainTook >= .milliseconds(300))
    let response = try await slow.value
    #expect(response.status == .ok && response.revision == "blue")
    await client.close()
    await other.close()
  }

  @Test func drainReportsTheDeregistrationDelayWhenRequestsOutlastIt() async throws {
    let setup = try await BlueGreen.start(blue: 100, green: 0)
    defer { Task { await setup.stop() } }
    let client = try await LBTestHTTPClient.connect(port: setup.listeners.productionPort)
    let slow = Task { try await client.request(.GET, "/slow?ms=1500") }
    #expect(
      await lbEventually { setup.balancer.metrics().targetGroup(service: "web", revision: "blue")?.inFlight == 1 })
    let outcome = try await setup.balancer.drain(
      revision: "blue", ofService: "web", deregistrationDelay: .milliseconds(200))
    #expect(outcome == .deregistrationDelayExpired(inFlight: 1))
    #expect(try await slow.value.status == .ok)
    await client.close()
  }

  @Test func chunkedRequestAndResponseBodiesPassThrough() async throws {
    let setup = try await BlueGreen.start(blue: 100, green: 0)
    defer { Task { await setup.stop() } }
    let client = try await LBTestHTTPClient.connect(port: setup.listeners.productionPort)
    let parts = (0..<5).map { ByteBuffer(string: String(repeating: "\($0)", count: 1000 + $0)) }
    let response = try await client.request(
      .POST, "/echo", headers: [("transfer-encoding", "chunked"), ("x-chunked-response", "1")], body: parts)
    #expect(response.status == .ok)
    #expect(response.headers["transfer-encoding"].contains("chunked"))
    #expect(response.bodyString == parts.map { String(buffer: $0) }.joined())
    #expect(response.revision == "blue")
    #expect(response.headers.first(name: "x-seen-forwarded-proto") == "http")
    #expect(response.headers.first(name: "x-seen-forwarded-for") == "127.0.0.1")
    await client.close()
  }

  @Test func largeBodiesStreamBothWays() async throws {
    let setup = try await BlueGreen.start(blue: 100, green: 0)
    defer { Task { await setup.stop() } }
    let client = try await LBTestHTTPClient.connect(port: setup.listeners.productionPort)
    var chunk = ByteBuffer()
    chunk.writeRepeatingByte(0x61, count: 64 * 1024)
    let parts = Array(repeating: chunk, count: 64)  // 4 MiB
    let response = try await client.request(.POST, "/echo", body: parts)
    #expect(response.status == .ok)
    #expect(response.body.readableBytes == 4 * 1024 * 1024)
    await client.close()
  }

  @Test func expectContinueIsAnsweredBeforeTheBodyIsSent() async throws {
    let setup = try await BlueGreen.start(blue: 100, green: 0)
    defer { Task { await setup.stop() } }
    let client = try await LBTestHTTPClient.connect(port: setup.listeners.productionPort)
    let response = try await client.request(
      .POST, "/echo", headers: [("expect", "100-continue")], body: [ByteBuffer(string: "payload")],
      waitForContinue: true)
    #expect(response.sawContinue)
    #expect(response.status == .ok)
    #expect(response.bodyString == "payload")
    #expect(response.headers.first(name: "x-seen-expect") == "")
    await client.close()
  }

  @Test func pipelinedRequestsAreEachProxiedAndCountedOnce() async throws {
    let setup = try await BlueGreen.start(blue: 100, green: 0)
    defer { Task { await setup.stop() } }
    let client = try await LBTestHTTPClient.connect(port: setup.listeners.productionPort)
    #expect(try await client.repeatGET(count: 50, depth: 8) == ["blue": 50])
    #expect(
      await lbEventually {
        let metrics = setup.balancer.metrics().targetGroup(service: "web", revision: "blue")
        return metrics?.responses2xx == 50 && metrics?.inFlight == 0
      })
    await client.close()
  }

  @Test func forwardingHeadersAreAppendedAndHopByHopHeadersDropped() async throws {
    // The client is a trusted proxy here, so its x-forwarded-for is kept (see ClientLimitsTests for
    // an untrusted client).
    let setup = try await BlueGreen.start(
      blue: 100, green: 0, configuration: LoadBalancerConfiguration(trustedProxies: ["127.0.0.1"]))
    defer { Task { await setup.stop() } }
    let client = try await LBTestHTTPClient.connect(port: setup.listeners.productionPort)
    let response = try await client.request(
      .GET, "/",
      headers: [
        ("x-forwarded-for", "203.0.113.9"), ("x-forwarded-proto", "https"), ("connection", "keep-alive, x-hop"),
        ("x-hop", "secret"),
      ])
    #expect(response.headers.first(name: "x-seen-forwarded-for") == "203.0.113.9, 127.0.0.1")
    #expect(response.headers.first(name: "x-seen-forwarded-proto") == "http")
    #expect(response.headers.first(name: "x-seen-hop") == "")
    #expect(response.revision == "blue")
    await client.close()
  }

  @Test func headResponsesKeepTheConnectionInSync() async throws {
    let setup = try await BlueGreen.start(blue: 100, green: 0)
    defer { Task { await setup.stop() } }
    let client = try await LBTestHTTPClient.connect(port: setup.listeners.productionPort)
    for _ in 0..<3 {
      let head = try await client.request(.HEAD, "/")
      #expect(head.status == .ok && head.body.readableBytes == 0)
      #expect(head.headers.first(name: "content-length") == "5")
      #expect(try await client.request(.GET, "/").bodyString == "blue\n")
    }
    await client.close()
  }

  @Test func connectionCloseIsHonouredAfterTheResponse() async throws {
    let setup = try await BlueGreen.start(blue: 100, green: 0)
    defer { Task { await setup.stop() } }
    let client = try await LBTestHTTPClient.connect(port: setup.listeners.productionPort)
    let response = try await client.request(.GET, "/", headers: [("connection", "close")])
    #expect(response.status == .ok)
    #expect(response.headers.first(name: "connection")?.lowercased() == "close")
    try await client.channel.closeFuture.get()
  }

  @Test func slowTargetGets504AndTheListenerKeepsServing() async throws {
    let setup = try await BlueGreen.start(
      blue: 100, green: 0, configuration: LoadBalancerConfiguration(responseTimeout: .milliseconds(300)))
    defer { Task { await setup.stop() } }
    let client = try await LBTestHTTPClient.connect(port: setup.listeners.productionPort)
    let timedOut = try await client.request(.GET, "/hang")
    #expect(timedOut.status == .gatewayTimeout)
    #expect(timedOut.revision == "blue")
    let next = try await client.request(.GET, "/")
    #expect(next.status == .ok)
    // The load balancer records a response right after writing its end, so poll briefly.
    #expect(
      await lbEventually {
        let metrics = setup.balancer.metrics().targetGroup(service: "web", revision: "blue")
        // The 504 is the balancer's own, counted apart from the targets' 5xx.
        return metrics?.balancerResponses5xx == 1 && metrics?.responses5xx == 0 && metrics?.responses2xx == 1
      })
    await client.close()
  }

  @Test func malformedAndOversizedRequestsAreRejectedWhileOtherClientsAreServed() async throws {
    let setup = try await BlueGreen.start(
      blue: 100, green: 0, configuration: LoadBalancerConfiguration(maxRequestHeaderBytes: 4096))
    defer { Task { await setup.stop() } }
    let healthy = try await LBTestHTTPClient.connect(port: setup.listeners.productionPort)
    #expect(try await healthy.request().status == .ok)
    let big = String(repeating: "b", count: 8192)
    for (bytes, expected) in [
      ("GET / HTTP/1.1\r\nHost: a\r\nNo Colon Here\r\n\r\n", "HTTP/1.1 400"),
      ("GET / HTTP/1.1\r\nHost: a\r\nX-Big: \(big)\r\n\r\n", "HTTP/1.1 431"),
    ] {
      let answer = try await rawExchange(port: setup.listeners.productionPort, bytes: bytes)
      #expect(answer.hasPrefix(expected), "got \(answer.prefix(40))")
      #expect(try await healthy.request().status == .ok)
    }
    #expect(setup.balancer.metrics().services["web"]?.badRequests == 2)
    await healthy.close()
  }

  @Test func testListenerFollowsItsOwnWeights() async throws {
    let setup = try await BlueGreen.start(blue: 100, green: 0)
    defer { Task { await setup.stop() } }
    let production = try await LBTestHTTPClient.connect(port: setup.listeners.productionPort)
    let test = try await LBTestHTTPClient.connect(port: setup.listeners.testPort)
    for _ in 0..<5 {
      #expect(try await production.request().revision == "blue")
      #expect(try await test.request().revision == "green")
    }
    let green = ["service": "web", "listener": "test", "revision": "green"]
    #expect(
      try await lbEventually {
        try PrometheusExposition(parsing: await setup.metrics.exposition()).value("teal_lb_requests_total", green) == 5
      })
    await production.close()
    await test.close()
  }

  @Test func unhealthyRevisionStopsReceivingTrafficAndComesBack() async throws {
    let setup = try await BlueGreen.start(blue: 50, green: 50)
    defer { Task { await setup.stop() } }
    setup.green.setHealthy(false)
    #expect(
      try await lbEventually {
        try await !setup.balancer.healthyTargets(ofService: "web").contains(setup.green.address)
      })
    let client = try await LBTestHTTPClient.connect(port: setup.listeners.productionPort)
    for _ in 0..<10 { #expect(try await client.request().revision == "blue") }
    setup.green.setHealthy(true)
    #expect(
      try await lbEventually { try await setup.balancer.healthyTargets(ofService: "web").contains(setup.green.address) }
    )
    var seen = Set<String>()
    for _ in 0..<10 { seen.insert(try await client.request().revision ?? "none") }
    #expect(seen == ["blue", "green"])
    await client.close()
  }
}

@Suite("Round-robin seed on real sockets")
struct RoundRobinSeedSocketTests {
  /// Three balancers (three nodes) over the same three tasks, seeded 0, 1, 2: each one's first
  /// request goes to another task (before, all three went to the first).
  @Test func nodesSeededDifferentlyStartAtDifferentTasks() async throws {
    var backends: [LBTestBackend] = []
    for index in 1...3 { backends.append(try await LBTestBackend.start(revision: "demo.1.\(index)")) }
    let routes = ServiceRoutes(
      generation: 1, targetGroups: [TargetGroup(revision: "demo", targets: backends.map(\.address))],
      productionWeights: ["demo": 1])
    var firsts: [String] = []
    for seed: UInt64 in 0..<3 {
      let balancer = LoadBalancer(configuration: LoadBalancerConfiguration(roundRobinSeed: seed))
      let listeners = try await balancer.addService(lbTestService(), routes: routes)
      let client = try await LBTestHTTPClient.connect(port: listeners.productionPort)
      firsts.append(try await client.request(.GET, "/").bodyString)
      await client.close()
      await balancer.shutdown()
    }
    for backend in backends { await backend.kill() }
    #expect(Set(firsts).count == 3, "\(firsts)")
  }
}
