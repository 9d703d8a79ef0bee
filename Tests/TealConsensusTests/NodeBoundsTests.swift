import Foundation
import TealConsensus
import TealRaft
import TealStorage
import TealTestSupport
import Testing

/// Issue 10, items 5 and 6: RaftNode's bounds and its reads around elections.
@Suite struct NodeBoundsTests {
  /// Proposals waiting to be applied are bounded by `maxPendingProposals`: beyond it a proposal fails at once
  /// with a retryable error naming the limit, and nothing is proposed.
  @Test func pendingProposalsAreBounded() async throws {
    let cluster = try LocalCluster {
      $0.maxPendingProposals = 2
      $0.raft.checkQuorum = false  // the leader keeps leading once its followers are gone
    }
    try await cluster.startAll()
    let leader = try await cluster.waitForLeader()
    _ = try await leader.propose([0])
    for id in cluster.ids where id != leader.id { await cluster.kill(id) }
    let waiting = (1...2).map { i in Task { try? await leader.propose([UInt8(i)]) } }
    try await eventually("two proposals waiting") { await leader.status.pendingProposals == 2 }
    let lastIndex = await leader.status.lastIndex
    do {
      _ = try await leader.propose([3])
      Issue.record("a third proposal was accepted")
    } catch {
      guard case .retryLater(let reason) = error else {
        Issue.record("unexpected error \(error)")
        return
      }
      #expect(reason.contains("maxPendingProposals (2)"))
    }
    #expect(await leader.status.lastIndex == lastIndex, "the refused proposal was appended")
    await cluster.stopAll()
    for task in waiting { _ = await task.value }
  }

  /// Snapshots are triggered by the bytes applied as well as by the entry count.
  @Test func snapshotsAreTriggeredByBytes() async throws {
    let cluster = try LocalCluster {
      $0.snapshotThreshold = 1_000_000
      $0.snapshotThresholdBytes = 4_096
    }
    try await cluster.startAll()
    let leader = try await cluster.waitForLeader()
    for i in 0..<3 { _ = try await leader.propose([UInt8](repeating: UInt8(i), count: 1_024)) }
    #expect(await leader.status.snapshotIndex == 0)
    for i in 3..<6 { _ = try await leader.propose([UInt8](repeating: UInt8(i), count: 1_024)) }
    #expect(await leader.status.snapshotIndex > 0, "6 KiB applied, threshold 4 KiB, no snapshot")
    await cluster.stopAll()
  }

  /// Issue 10, item 5: a read issued while no leader is known is asked again as soon as a leader is known,
  /// not after `readRetryTicks`.
  @Test func aReadIssuedBeforeAnyLeaderCompletesSoonAfterTheElection() async throws {
    let cluster = try LocalCluster {
      $0.readRetryTicks = 1_000_000
      $0.readTimeoutTicks = 2_000
    }
    let first = try await cluster.start(cluster.ids[0])
    let read = Task { () -> String? in
      do {
        try await first.linearizableRead()
        return nil
      } catch {
        return "\(error)"
      }
    }
    try await eventually("the read to wait") { await first.status.pendingReads == 1 }
    for id in cluster.ids.dropFirst() { try await cluster.start(id) }
    try await eventually("the read to complete", within: 15) { await first.status.pendingReads == 0 }
    let failure = await read.value
    #expect(failure == nil, "the read failed: \(failure ?? "")")
    await cluster.stopAll()
  }
}
