import NIOCore
import NIOPosix
import TealHealth
import Testing

@testable import TealLoadBalancer

@Suite("Connecting to targets")
struct TargetConnectTests {
  /// Targets given as an IP literal are connected to directly; a host name still goes through the
  /// resolver. Both must work for probes and for proxied requests.
  @Test func probesAndProxiedRequestsReachTargetsNamedByAddressOrByHostName() async throws {
    let backend = try await LBTestBackend.start(revision: "blue")
    let byName = TargetAddress(host: "localhost", port: backend.port)
    for target in [backend.address, byName] {
      let failure = await HealthProber(group: MultiThreadedEventLoopGroup.singleton).probe(
        .http(path: "/health"), host: target.host, port: target.port, timeout: .seconds(2))
      #expect(failure == nil, "probe of \(target.host):\(target.port)")
    }
    let balancer = LoadBalancer()
    let listeners = try await balancer.addService(
      lbTestService(),
      routes: ServiceRoutes(
        generation: 1, targetGroups: [TargetGroup(revision: "blue", targets: [byName])], productionWeights: ["blue": 1])
    )
    let client = try await LBTestHTTPClient.connect(port: listeners.productionPort)
    let response = try await client.request()
    await client.close()
    await balancer.shutdown()
    await backend.kill()
    #expect(response.status == .ok)
    #expect(response.revision == "blue")
    #expect(backend.served == 1)
  }
}
