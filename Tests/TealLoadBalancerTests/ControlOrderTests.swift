// Control calls of one service run in order and routes carry the caller's generation (issue 11, item 9).

import NIOCore
import NIOPosix
import Testing

@testable import TealLoadBalancer

/// A TCP listener that accepts connections and never answers: a probe against it waits for its timeout.
private func startSilentListener() async throws -> (any Channel, TargetAddress) {
  let server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
    .childChannelInitializer { channel in channel.eventLoop.makeSucceededVoidFuture() }
    .bind(host: "127.0.0.1", port: 0)
    .get()
  return (server, TargetAddress(host: "127.0.0.1", port: server.localAddress?.port ?? 0))
}

@Suite("Load balancer control order and generations", .serialized)
struct ControlOrderTests {
  /// Before the fix, setRoutes awaited the probe of its new target inside the actor and then installed
  /// routes computed before the wait: a drain made meanwhile was undone and the drained revision came back.
  @Test func aDrainMadeWhileSetRoutesProbesIsNotUndone() async throws {
    let blue = try await LBTestBackend.start(revision: "blue")
    let green = try await LBTestBackend.start(revision: "green")
    let (silent, silentTarget) = try await startSilentListener()
    let balancer = LoadBalancer()
    let slowProbe = HealthCheckConfiguration(
      probe: .http(path: "/health"), interval: .seconds(30), timeout: .seconds(1), healthyThreshold: 1,
      unhealthyThreshold: 2)
    _ = try await balancer.addService(
      lbTestService(healthCheck: slowProbe),
      routes: ServiceRoutes(
        generation: 1,
        targetGroups: [
          TargetGroup(revision: "blue", targets: [blue.address]),
          TargetGroup(revision: "green", targets: [green.address]),
        ],
        productionWeights: ["blue": 1, "green": 1]))
    // Generation 2 adds a target that takes the whole probe timeout; generation 3 drains blue meanwhile.
    let slow = Task {
      try await balancer.setRoutes(
        ServiceRoutes(
          generation: 2,
          targetGroups: [
            TargetGroup(revision: "blue", targets: [blue.address]),
            TargetGroup(revision: "green", targets: [green.address, silentTarget]),
          ],
          productionWeights: ["blue": 1, "green": 1]),
        forService: "web")
    }
    try await Task.sleep(for: .milliseconds(100))  // let setRoutes start its probe (order of calls, not a condition)
    let outcome = try await balancer.drain(
      revision: "blue", ofService: "web", generation: 3, deregistrationDelay: .seconds(5))
    let appliedBySlow = try await slow.value
    let routes = try await balancer.routes(ofService: "web")
    let applied = try await balancer.appliedGeneration(ofService: "web")
    await balancer.shutdown()
    try? await silent.close()
    await blue.kill()
    await green.kill()
    #expect(outcome == .drained)
    #expect(appliedBySlow == 2)
    #expect(applied == 3)
    #expect(routes.generation == 3)
    #expect(!routes.targetGroups.contains { $0.revision == "blue" }, "the drained revision came back: \(routes)")
    #expect(routes.targetGroups.first { $0.revision == "green" }?.targets.contains(silentTarget) == true)
  }

  @Test func routesOfAnOlderGenerationAreNotInstalled() async throws {
    let blue = try await LBTestBackend.start(revision: "blue")
    let green = try await LBTestBackend.start(revision: "green")
    let balancer = LoadBalancer()
    let groups = [
      TargetGroup(revision: "blue", targets: [blue.address]), TargetGroup(revision: "green", targets: [green.address]),
    ]
    _ = try await balancer.addService(
      lbTestService(),
      routes: ServiceRoutes(generation: 5, targetGroups: groups, productionWeights: ["green": 1]))
    let older = try await balancer.setRoutes(
      ServiceRoutes(generation: 4, targetGroups: groups, productionWeights: ["blue": 1]), forService: "web")
    let weights = try await balancer.setWeights(forService: "web", production: ["blue": 1], generation: 3)
    let routes = try await balancer.routes(ofService: "web")
    let newer = try await balancer.setRoutes(
      ServiceRoutes(generation: 6, targetGroups: groups, productionWeights: ["blue": 1]), forService: "web")
    await balancer.shutdown()
    await blue.kill()
    await green.kill()
    #expect(older == 5)
    #expect(weights == 5)
    #expect(routes.productionWeights == ["green": 1])
    #expect(newer == 6)
  }

  @Test func everyResponseCarriesTheGenerationAndTheRevision() async throws {
    let blue = try await LBTestBackend.start(revision: "blue")
    let balancer = LoadBalancer()
    let listeners = try await balancer.addService(
      lbTestService(),
      routes: ServiceRoutes(
        generation: 7, targetGroups: [TargetGroup(revision: "blue", targets: [blue.address])],
        productionWeights: ["blue": 1]))
    let client = try await LBTestHTTPClient.connect(port: listeners.productionPort)
    let proxied = try await client.request()
    try await balancer.setRoutes(
      ServiceRoutes(generation: 8, targetGroups: [], productionWeights: [:]), forService: "web")
    let refused = try await client.request()
    await client.close()
    await balancer.shutdown()
    await blue.kill()
    #expect(proxied.status == .ok)
    #expect(proxied.generation == 7)
    #expect(proxied.revision == "blue")
    #expect(refused.status == .serviceUnavailable)
    #expect(refused.generation == 8)
    #expect(refused.headers.contains(name: "x-teal-revision"))
  }
}
