import Foundation
import NIOPosix
import TealConsensus
import TealRaft
import TealTLS
import TealTestSupport
import TealTransport
import TealWire
import Testing

@Suite("RaftNode over PeerTransport with mutual TLS", .serialized)
struct TransportIntegrationTests {
  @Test(.timeLimit(.minutes(1)))
  func threeNodesOverTLSCommitSurviveTheLeadersDeathAndCommitMore() async throws {
    let ids = [NodeID("n1"), NodeID("n2"), NodeID("n3")]
    let directory = try TemporaryDirectory("teal-consensus-tls")
    let certificates = directory.child("certs")
    try CertificateDirectory.initialize(at: certificates, nodes: ids)
    let pki = CertificateDirectory(path: certificates)

    // The production order: the transport first, then the node with the transport as its network, which
    // registers its handler for the Raft channel; only then does the transport start.
    var transports: [NodeID: PeerTransport] = [:]
    var nodes: [NodeID: Node] = [:]
    for id in ids {
      var transportConfiguration = PeerTransportConfiguration(
        nodeID: id, listenHost: "127.0.0.1", listenPort: 0, peers: [:])
      transportConfiguration.backoff = Backoff(initialMilliseconds: 20, maximumMilliseconds: 200)
      let transport = PeerTransport(
        configuration: transportConfiguration,
        security: .mutualTLS(try TLSContext(configuration: pki.configuration(for: id))),
        group: MultiThreadedEventLoopGroup.singleton, logger: quietLogger())
      var configuration = RaftNodeConfiguration(
        id: id, bootstrap: RaftConfiguration(voters: Set(ids)), dataDirectory: directory.child(id.rawValue),
        raft: testRaftOptions(), tickInterval: .milliseconds(10), logger: quietLogger())
      configuration.snapshotThreshold = 64
      let node = try Node(configuration: configuration, stateMachine: CommandLog(), network: transport)
      transport.setHandler(node.messageHandler, for: .raft)
      transports[id] = transport
      nodes[id] = node
    }
    var ports: [NodeID: Int] = [:]
    for id in ids { ports[id] = try await transports[id]?.start() }
    for id in ids {
      for peer in ids where peer != id {
        await transports[id]?.addPeer(peer, address: PeerAddress(host: "127.0.0.1", port: ports[peer] ?? 0))
      }
    }
    for node in nodes.values { await node.start() }
    let allNodes = Array(nodes.values)

    @Sendable func currentLeader(among candidates: [Node]) async -> Node? {
      for node in candidates where await node.status.role == .leader { return node }
      return nil
    }
    func commit(_ commands: [String], among candidates: [Node]) async throws {
      for command in commands {
        let deadline = ContinuousClock.now + .seconds(5)
        while true {
          if let leader = await currentLeader(among: candidates),
            (try? await leader.propose(Array(command.utf8))) != nil
          {
            break
          }
          guard ContinuousClock.now < deadline else { throw TimedOut(what: "\(command) to commit over TLS") }
          try await Task.sleep(for: .milliseconds(10))
        }
      }
    }

    try await eventually("a leader over TLS", within: 10) { await currentLeader(among: allNodes) != nil }
    try await commit((0..<100).map { "tls-\($0)" }, among: allNodes)
    let firstLeader = try #require(await currentLeader(among: allNodes))

    // Kill the leader's node: its transport goes away and the node stops without handing over.
    await transports[firstLeader.id]?.shutdown()
    await firstLeader.stop(transferringLeadership: false)
    let survivors = allNodes.filter { $0.id != firstLeader.id }
    try await eventually("a new leader among the survivors", within: 10) {
      await currentLeader(among: survivors) != nil
    }
    try await commit((0..<20).map { "after-\($0)" }, among: survivors)
    try await eventually("the survivors to apply all 120 commands", within: 10) {
      var states: [CommandLog] = []
      for node in survivors { states.append(await node.currentState) }
      return states.allSatisfy { $0.commands.count == 120 } && states[0] == states[1]
    }
    let state = await survivors[0].currentState
    #expect(state.commandStrings == (0..<100).map { "tls-\($0)" } + (0..<20).map { "after-\($0)" })

    for node in survivors { await node.stop(transferringLeadership: false) }
    for transport in transports.values { await transport.shutdown() }
  }
}
