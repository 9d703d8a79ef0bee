import TealGossip
import TealMembership
import TealTransportTesting
import TealWire

// Shared by the membership shell tests: fast settings, member metadata, polling, and a cluster of
// shells on TealTransportTesting's in-memory network.

/// Small intervals so that real-time tests finish quickly.
func fastSettings(suspicionMultiplier: Double = 4) -> SWIMSettings {
  var settings = SWIMSettings()
  settings.probeInterval = .milliseconds(50)
  settings.probeTimeout = .milliseconds(20)
  settings.suspicionMultiplier = suspicionMultiplier
  settings.pushPullInterval = .milliseconds(500)
  settings.joinRetryInterval = .milliseconds(100)
  settings.reconnectInterval = .milliseconds(300)
  return settings
}

func metadata(_ index: Int) -> MemberMetadata {
  MemberMetadata(
    peerAddress: HostPort(host: "127.0.0.\(index)", port: 7400), apiPort: 8080, listenerPorts: [9000], version: "test")
}

/// Polls `condition` every 10 ms until it holds or `timeout` passes.
func eventually(timeout: Duration = .seconds(30), _ condition: () async -> Bool) async -> Bool {
  let deadline = ContinuousClock.now + timeout
  while ContinuousClock.now < deadline {
    if await condition() { return true }
    try? await Task.sleep(for: .milliseconds(10))
  }
  return await condition()
}

/// `count` shells `n1...` registered on `network`; with `start`, all but `n1` join through `n1`.
func membershipCluster(
  _ count: Int, network: InMemoryPeerNetwork, settings: SWIMSettings = fastSettings(), start: Bool = true
) async throws -> [MembershipService] {
  var services: [MembershipService] = []
  for index in 1...count {
    let id = NodeID("n\(index)")
    let service = try MembershipService(
      id: id, metadata: metadata(index), settings: settings, sender: network.sender(for: id))
    await network.register(id, handler: service.messageHandler)
    services.append(service)
  }
  if start {
    for (index, service) in services.enumerated() { await service.start(seeds: index == 0 ? [] : [NodeID("n1")]) }
  }
  return services
}

/// Whether every shell sees every other one alive.
func allSeeAllAlive(_ services: [MembershipService]) async -> Bool {
  for service in services {
    let snapshot = await service.snapshot()
    if snapshot.members.count != services.count - 1 || snapshot.members.contains(where: { $0.status != .alive }) {
      return false
    }
  }
  return true
}
