import Foundation
import TealConsensus
import TealRaft
import TealStorage
import TealStorageTesting
import TealTestSupport
import Testing

/// Issue 10, item 2: the disk cost of a commit.
@Suite struct NodeCostTests {
  /// A committed proposal costs one `fdatasync` per node: the entries' write. Moving the commit index
  /// (on the leader when the acknowledgements arrive, on a follower when the leader announces it) costs none.
  @Test func eachCommittedProposalCostsOneFdatasyncPerNode() async throws {
    let disk = FaultInjectingFileSystem(wrapping: SimulatedFileSystem())
    let cluster = try LocalCluster {
      $0.storage.fileSystem = disk
      // Long timeouts: an election during the measurement would add syncs (a new term and vote).
      $0.raft.electionTicks = 100
      $0.raft.heartbeatTicks = 5
    }
    try await cluster.startAll()
    let proposals = 20
    var measured: Int?
    for _ in 0..<3 where measured == nil {
      let leader = try await cluster.waitForLeader(within: 20)
      do {
        _ = try await leader.propose([0])
        let term = await leader.status.term
        try await allApplied(cluster, upTo: await leader.status.appliedIndex)
        let before = disk.count(of: "syncData")
        for i in 0..<proposals { _ = try await leader.propose([UInt8(i)]) }
        try await allApplied(cluster, upTo: await leader.status.appliedIndex)
        let syncs = disk.count(of: "syncData") - before
        let status = await leader.status
        if status.role == .leader && status.term == term { measured = syncs }
      } catch {
        continue  // leadership changed during the measurement: measure again
      }
    }
    let syncs = try #require(measured, "no measurement without a leader change")
    #expect(syncs == 3 * proposals, "\(syncs) fdatasyncs for \(proposals) proposals on 3 nodes")
    await cluster.stopAll()
  }

  private func allApplied(_ cluster: LocalCluster, upTo index: UInt64) async throws {
    try await eventually("every node applied \(index)", within: 10) {
      for node in await cluster.runningNodes where await node.status.appliedIndex < index { return false }
      return true
    }
  }
}
