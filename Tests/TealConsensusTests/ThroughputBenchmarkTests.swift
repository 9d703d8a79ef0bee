import Foundation
import NIOPosix
import TealConsensus
import TealRaft
import TealStorage
import TealStorageTesting
import TealTLS
import TealTestSupport
import TealTransport
import TealWire
import Testing

/// Commit throughput of a 3-node cluster in one process. Opt-in (it takes tens of seconds):
/// `TEAL_CONSENSUS_BENCH=1 swift test --filter ThroughputBenchmark`. Results go to Docs/CONSENSUS.md.
@Suite(
  "RaftNode throughput (TEAL_CONSENSUS_BENCH=1)", .serialized,
  .enabled(if: ProcessInfo.processInfo.environment["TEAL_CONSENSUS_BENCH"] != nil))
struct ThroughputBenchmarkTests {
  static let proposers = 32
  static let proposals = 6_000
  static let payload = [UInt8](repeating: 0x61, count: 128)

  struct Figures: CustomStringConvertible {
    var label: String
    var seconds: Double
    var latencies: [Double]

    var description: String {
      let sorted = latencies.sorted()
      func percentile(_ p: Double) -> Double { sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))] * 1000 }
      return String(
        format: "%@: %d proposals in %.2f s = %.0f proposals/s; latency p50 %.2f ms, p99 %.2f ms, max %.2f ms",
        label, latencies.count, seconds, Double(latencies.count) / seconds, percentile(0.5), percentile(0.99),
        (sorted.last ?? 0) * 1000)
    }
  }

  /// Runs `proposals` proposals from `proposers` concurrent tasks against the leader among `nodes`.
  static func measure(_ label: String, nodes: [Node]) async throws -> Figures {
    var leader: Node?
    try await eventually("a leader", within: 10) {
      for node in nodes where await node.status.role == .leader { return true }
      return false
    }
    for node in nodes where await node.status.role == .leader { leader = node }
    let target = try #require(leader)
    // Warm up (the leader's first entry of its term must commit).
    for _ in 0..<50 { _ = try await target.propose(payload) }
    let start = ContinuousClock.now
    let latencies = try await withThrowingTaskGroup(of: [Double].self) { group in
      for _ in 0..<proposers {
        group.addTask {
          var mine: [Double] = []
          for _ in 0..<(proposals / proposers) {
            let begin = ContinuousClock.now
            _ = try await target.propose(payload)
            let elapsed = ContinuousClock.now - begin
            mine.append(Double(elapsed.components.attoseconds) / 1e18 + Double(elapsed.components.seconds))
          }
          return mine
        }
      }
      return try await group.reduce(into: []) { $0 += $1 }
    }
    let elapsed = ContinuousClock.now - start
    let figures = Figures(
      label: label, seconds: Double(elapsed.components.attoseconds) / 1e18 + Double(elapsed.components.seconds),
      latencies: latencies)
    print(figures)
    return figures
  }

  @Test func inProcessFakeNetworkRealFsync() async throws {
    // A fault injector with no faults armed counts the fdatasync calls of all three nodes.
    let disk = FaultInjectingFileSystem()
    let cluster = try LocalCluster {
      $0.snapshotThreshold = 20_000
      $0.storage.fileSystem = disk
    }
    try await cluster.startAll()
    let nodes = cluster.ids.compactMap { cluster.node($0) }
    try await eventually("a leader", within: 10) { await cluster.leader() != nil }
    let syncsBefore = disk.count(of: "syncData")
    let figures = try await Self.measure("fake network, real fdatasync (\(Self.proposers) proposers)", nodes: nodes)
    let syncs = disk.count(of: "syncData") - syncsBefore
    print(
      String(
        format: "  %d fdatasync calls on 3 nodes: %.1f proposals per sync per node", syncs,
        Double(figures.latencies.count + 50) * 3 / Double(max(syncs, 1))))
    await cluster.stopAll()
  }

  @Test func inProcessFakeNetworkNoFsync() async throws {
    let disk = SimulatedFileSystem()
    let cluster = try LocalCluster {
      $0.snapshotThreshold = 20_000
      $0.storage.fileSystem = disk
    }
    try await cluster.startAll()
    let nodes = cluster.ids.compactMap { cluster.node($0) }
    _ = try await Self.measure("fake network, in-memory disk (\(Self.proposers) proposers)", nodes: nodes)
    await cluster.stopAll()
  }

  @Test func singleProposerFakeNetworkRealFsync() async throws {
    let cluster = try LocalCluster { $0.snapshotThreshold = 20_000 }
    try await cluster.startAll()
    let nodes = cluster.ids.compactMap { cluster.node($0) }
    var leader: Node?
    try await eventually("a leader", within: 10) {
      for node in nodes where await node.status.role == .leader { return true }
      return false
    }
    for node in nodes where await node.status.role == .leader { leader = node }
    let target = try #require(leader)
    var latencies: [Double] = []
    let start = ContinuousClock.now
    for _ in 0..<500 {
      let begin = ContinuousClock.now
      _ = try await target.propose(Self.payload)
      let elapsed = ContinuousClock.now - begin
      latencies.append(Double(elapsed.components.attoseconds) / 1e18 + Double(elapsed.components.seconds))
    }
    let elapsed = ContinuousClock.now - start
    print(
      Figures(
        label: "fake network, real fdatasync (1 proposer)",
        seconds: Double(elapsed.components.attoseconds) / 1e18 + Double(elapsed.components.seconds),
        latencies: latencies))
    await cluster.stopAll()
  }

  @Test func tlsTransportRealFsync() async throws {
    let ids = [NodeID("n1"), NodeID("n2"), NodeID("n3")]
    let directory = try TemporaryDirectory("teal-consensus-bench")
    try CertificateDirectory.initialize(at: directory.child("certs"), nodes: ids)
    let pki = CertificateDirectory(path: directory.child("certs"))
    var transports: [NodeID: PeerTransport] = [:]
    var nodes: [Node] = []
    for id in ids {
      let transport = PeerTransport(
        configuration: PeerTransportConfiguration(nodeID: id, listenHost: "127.0.0.1", listenPort: 0, peers: [:]),
        security: .mutualTLS(try TLSContext(configuration: pki.configuration(for: id))),
        group: MultiThreadedEventLoopGroup.singleton, logger: quietLogger())
      var configuration = RaftNodeConfiguration(
        id: id, bootstrap: RaftConfiguration(voters: Set(ids)), dataDirectory: directory.child(id.rawValue),
        raft: testRaftOptions(), logger: quietLogger())
      configuration.snapshotThreshold = 20_000
      let node = try Node(configuration: configuration, stateMachine: CommandLog(), network: transport)
      transport.setHandler(node.messageHandler, for: .raft)
      transports[id] = transport
      nodes.append(node)
    }
    var ports: [NodeID: Int] = [:]
    for id in ids { ports[id] = try await transports[id]?.start() }
    for id in ids {
      for peer in ids where peer != id {
        await transports[id]?.addPeer(peer, address: PeerAddress(host: "127.0.0.1", port: ports[peer] ?? 0))
      }
    }
    for node in nodes { await node.start() }
    _ = try await Self.measure("TLS transport on loopback, real fdatasync (\(Self.proposers) proposers)", nodes: nodes)
    for node in nodes { await node.stop(transferringLeadership: false) }
    for transport in transports.values { await transport.shutdown() }
  }
}
