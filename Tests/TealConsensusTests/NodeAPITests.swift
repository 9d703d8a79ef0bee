import Foundation
import TealConsensus
import TealRaft
import TealTestSupport
import TealWire
import Testing

/// What the node layer (TealNode, ClusterState) relies on: the entry's term in `apply`, readiness of a new
/// leader, committed membership changes, manual snapshots and snapshot installs, and proposals that fail at
/// once when their leader steps down.
@Suite("RaftNode API for the node layer")
struct RaftNodeAPITests {
  /// Ticks every node of `cluster` every 2 ms until cancelled.
  private func ticking(_ cluster: LocalCluster) -> Task<Void, Never> {
    Task {
      while !Task.isCancelled {
        for id in cluster.ids { await cluster.node(id)?.tick() }
        try? await Task.sleep(for: .milliseconds(2))
      }
    }
  }

  @Test func applyReceivesTheIndexAndTermOfTheEntry() async throws {
    let cluster = try LocalCluster()
    try await cluster.startAll()
    let leader = try await cluster.waitForLeader()
    let index = try await cluster.propose("stamped")
    let term = await leader.status.term
    let states = try await cluster.waitForConvergence(count: 1)
    for state in states {
      #expect(state.indexes == [index])
      #expect(state.terms == [term])
    }
    await cluster.stopAll()
  }

  /// A new leader first reports itself not ready; it turns ready only once its no-op is applied, i.e. when
  /// everything committed before its term is in its state machine.
  @Test func aNewLeaderIsReadyOnlyOnceItsTermsNoOpIsApplied() async throws {
    let cluster = try LocalCluster { $0.tickInterval = nil }
    var streams: [NodeID: AsyncStream<LeadershipState>] = [:]
    for id in cluster.ids {
      try await cluster.start(id, beforeStart: { streams[id] = await $0.leadershipChanges() })
    }
    let ticker = ticking(cluster)
    let leader = try await cluster.waitForLeader()
    let stream = try #require(streams[leader.id])
    var seen: [LeadershipState] = []
    for await state in stream {
      seen.append(state)
      if state.isReady { break }
    }
    ticker.cancel()
    let ready = try #require(seen.last)
    #expect(ready.isReady && ready.role == .leader && ready.leader == leader.id)
    #expect(seen.first?.role == .follower && seen.first?.isReady == false)
    #expect(seen.contains { $0.role == .leader && $0.term == ready.term && !$0.isReady })
    // The no-op is the first entry of the first term: once ready, it is applied.
    #expect(await leader.status.appliedIndex >= 1)
    // Followers never report readiness.
    for id in cluster.ids where id != leader.id {
      #expect(await cluster.node(id)?.status.role != .leader)
    }
    await cluster.stopAll()
  }

  @Test func committedMembershipChangesAreStreamedStartingWithTheCurrentOne() async throws {
    let cluster = try LocalCluster(size: 1) { $0.tickInterval = nil }
    let n1 = cluster.ids[0]
    var stream: AsyncStream<RaftConfiguration>?
    let node = try await cluster.start(n1, beforeStart: { stream = await $0.membershipChanges() })
    for _ in 0..<100 { await node.tick() }
    // Elected by the ticks; ready once its no-op is durable and applied, which the storage thread
    // finishes on its own time.
    try await eventually("n1 ready as the leader") {
      await node.leadershipChanges().first { _ in true }?.isReady == true
    }
    var iterator = try #require(stream).makeAsyncIterator()
    #expect(await iterator.next() == RaftConfiguration(voters: [n1]))
    let n2 = NodeID("n2")
    try await node.proposeConfigChange(.addLearner(n2))
    #expect(await iterator.next() == RaftConfiguration(voters: [n1], learners: [n2]))
    #expect(await node.committedMembership == RaftConfiguration(voters: [n1], learners: [n2]))
    // A late subscriber gets the current committed configuration at once.
    #expect(await node.membershipChanges().first { _ in true } == RaftConfiguration(voters: [n1], learners: [n2]))
    await node.stop()
    #expect(await iterator.next() == nil, "the stream finishes when the node stops")
  }

  @Test func aManualSnapshotCompactsTheLogAndSurvivesARestart() async throws {
    let cluster = try LocalCluster(size: 1) { $0.tickInterval = nil }
    let n1 = cluster.ids[0]
    let node = try await cluster.start(n1)
    for _ in 0..<100 { await node.tick() }
    for i in 0..<3 { _ = try await node.propose(Array("c\(i)".utf8)) }
    try await node.takeSnapshot()
    let status = await node.status
    #expect(status.snapshotIndex == status.appliedIndex)
    #expect(status.snapshotIndex == 4, "no-op + 3 commands")
    try await node.takeSnapshot()  // nothing new applied: a no-op
    await node.stop()
    await #expect(throws: RaftNodeError.stopped(reason: nil)) { try await node.takeSnapshot() }

    let reopened = try await cluster.start(n1)
    #expect(await reopened.status.snapshotIndex == 4)
    #expect(await reopened.currentState.commandStrings == ["c0", "c1", "c2"])
    await reopened.stop()
  }

  @Test func aSnapshotInstalledFromTheLeaderIsAnnounced() async throws {
    let cluster = try LocalCluster {
      $0.snapshotThreshold = 16
      $0.raft.compactionTailEntries = 0  // no log tail: the laggard must be sent the snapshot
    }
    try await cluster.startAll()
    let leader = try await cluster.waitForLeader()
    let laggard = try #require(cluster.ids.first { $0 != leader.id })
    await cluster.kill(laggard)
    for i in 0..<40 { try await cluster.propose("c\(i)") }
    var installs: AsyncStream<UInt64>?
    let restarted = try await cluster.start(laggard, beforeStart: { installs = await $0.snapshotInstalls() })
    var iterator = try #require(installs).makeAsyncIterator()
    let installed = try #require(await iterator.next())
    #expect(installed >= 16)
    // When the index is announced, the state machine already holds the snapshot's state.
    let state = await restarted.currentState
    #expect(state.indexes.last.map { $0 <= installed } ?? false)
    #expect(state.commands.count >= 15)
    await cluster.stopAll()
  }

  /// A leader cut off from the majority steps down (check-quorum) and fails its pending proposal at once
  /// with `outcomeUnknown`, long before the proposal timeout.
  @Test func aProposalPendingAtAStepDownFailsAtOnceWithOutcomeUnknown() async throws {
    let cluster = try LocalCluster { $0.proposalTimeoutTicks = 1_000_000 }
    try await cluster.startAll()
    let oldLeader = try await cluster.waitForLeader()
    try await cluster.propose("committed-before")
    await cluster.network.isolate(oldLeader.id)
    let started = ContinuousClock.now
    let outcome: Result<[UInt8], RaftNodeError>
    do throws(RaftNodeError) {
      outcome = .success(try await oldLeader.propose(Array("stranded".utf8)))
    } catch {
      outcome = .failure(error)
    }
    guard case .failure(.outcomeUnknown(let index, let reason)) = outcome else {
      Issue.record("expected outcomeUnknown, got \(outcome)")
      return
    }
    #expect(index == 3)
    #expect(reason.contains("stopped leading"))
    #expect(ContinuousClock.now - started < .seconds(60))
    #expect(await oldLeader.status.role != .leader)
    await cluster.stopAll()
  }
}
