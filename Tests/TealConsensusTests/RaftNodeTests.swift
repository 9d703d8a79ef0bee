import Foundation
import TealConsensus
import TealRaft
import TealStorage
import TealStorageTesting
import TealTestSupport
import TealWire
import Testing

@Suite("RaftNode over an in-memory network")
struct RaftNodeTests {
  @Test func aLeaderIsElectedAndCommandsApplyInTheSameOrderOnEveryNode() async throws {
    let cluster = try LocalCluster()
    try await cluster.startAll()
    _ = try await cluster.waitForLeader()

    let acknowledged = try await withThrowingTaskGroup(of: [(String, UInt64)].self) { group in
      for proposer in 0..<8 {
        group.addTask {
          var done: [(String, UInt64)] = []
          for i in 0..<8 {
            let command = "p\(proposer)-\(i)"
            done.append((command, try await cluster.propose(command)))
          }
          return done
        }
      }
      return try await group.reduce(into: []) { $0 += $1 }
    }
    let states = try await cluster.waitForConvergence(count: 64)
    #expect(states.count == 3)
    for state in states {
      #expect(Set(state.commandStrings) == Set(acknowledged.map(\.0)))
      // Each proposer's result names the log index its command was applied at.
      for (command, index) in acknowledged { #expect(state.command(at: index) == command) }
    }
    await cluster.stopAll()
  }

  @Test func aProposalOnAFollowerFailsWithTheLeaderAsHint() async throws {
    let cluster = try LocalCluster()
    try await cluster.startAll()
    let leader = try await cluster.waitForLeader()
    try await cluster.propose("first")
    var follower: Node?
    for id in cluster.ids where id != leader.id {
      if let node = cluster.node(id), await node.status.leader == leader.id { follower = node }
    }
    let chosen = try #require(follower)
    await #expect(throws: RaftNodeError.notLeader(leader: leader.id)) {
      _ = try await chosen.propose(Array("from-a-follower".utf8))
    }
    let state = await chosen.currentState
    #expect(!state.commandStrings.contains("from-a-follower"))
    await cluster.stopAll()
  }

  @Test func aRestartedNodeRecoversItsLogFromDiskAndCatchesUp() async throws {
    let cluster = try LocalCluster()
    try await cluster.startAll()
    let leader = try await cluster.waitForLeader()
    for i in 0..<20 { try await cluster.propose("before-\(i)") }
    _ = try await cluster.waitForConvergence(count: 20)
    let victim = try #require(cluster.ids.first { $0 != leader.id })
    let before = try #require(await cluster.node(victim)?.status)
    await cluster.kill(victim)

    for i in 0..<20 { try await cluster.propose("after-\(i)") }

    // Reopen from the same directory, detached from the network: the log comes back from disk.
    let reopened = try Node(
      configuration: cluster.configuration(for: victim), stateMachine: CommandLog(),
      network: cluster.network.sender(for: victim))
    let recovered = await reopened.status
    #expect(recovered.lastIndex >= before.lastIndex)
    #expect(recovered.term >= before.term)
    await reopened.stop(transferringLeadership: false)

    try await cluster.start(victim)
    let states = try await cluster.waitForConvergence(count: 40)
    #expect(states.count == 3)
    #expect(states[0].commandStrings.filter { $0.hasPrefix("after-") }.count == 20)
    await cluster.stopAll()
  }

  @Test func noAcknowledgedProposalIsLostWhenTheLeaderIsKilled() async throws {
    let cluster = try LocalCluster()
    try await cluster.startAll()
    let firstLeader = try await cluster.waitForLeader()

    let acknowledged = try await withThrowingTaskGroup(of: [String].self) { group in
      for proposer in 0..<6 {
        group.addTask {
          var done: [String] = []
          for i in 0..<15 {
            let command = "p\(proposer)-\(i)"
            try await cluster.propose(command, within: 15)
            done.append(command)
          }
          return done
        }
      }
      group.addTask {
        // Kill the leader while proposals are in flight.
        try await eventually("some proposals to commit") {
          await firstLeader.status.commitIndex >= 30
        }
        await cluster.kill(firstLeader.id)
        return []
      }
      return try await group.reduce(into: []) { $0 += $1 }
    }
    #expect(acknowledged.count == 90)
    let newLeader = try await cluster.waitForLeader()
    #expect(newLeader.id != firstLeader.id)

    try await cluster.start(firstLeader.id)
    let states = try await cluster.waitForConvergence(count: 90, within: 15)
    #expect(states.count == 3)
    for state in states {
      let applied = Set(state.commandStrings)
      let lost = acknowledged.filter { !applied.contains($0) }
      #expect(lost.isEmpty, "acknowledged but not applied: \(lost)")
    }
    await cluster.stopAll()
  }

  /// An isolated leader still accepts a proposal, but the majority elects a new leader whose entries take
  /// that log position. The isolated leader steps down (check-quorum) and fails the proposal at once as
  /// outcome unknown; once the partition heals its entry is replaced and applied nowhere.
  @Test func aProposalOfAnIsolatedLeaderFailsWhenItStepsDownAndIsOverwritten() async throws {
    let cluster = try LocalCluster()
    try await cluster.startAll()
    let oldLeader = try await cluster.waitForLeader()
    try await cluster.propose("committed-before")
    _ = try await cluster.waitForConvergence(count: 1)
    let others = cluster.ids.filter { $0 != oldLeader.id }
    await cluster.network.isolate(oldLeader.id)

    let stranded = Task { () -> Result<[UInt8], RaftNodeError> in
      do throws(RaftNodeError) {
        return .success(try await oldLeader.propose(Array("stranded".utf8)))
      } catch {
        return .failure(error)
      }
    }
    try await eventually("the majority to elect a new leader") {
      for id in others where await cluster.node(id)?.status.role == .leader { return true }
      return false
    }
    let strandedIndex = await oldLeader.status.lastIndex
    let oldTerm = await oldLeader.status.term
    for i in 0..<3 { try await cluster.propose("majority-\(i)") }

    let outcome = await stranded.value
    #expect(oldTerm > 0)
    guard case .failure(.outcomeUnknown(let index, _)) = outcome else {
      Issue.record("expected outcomeUnknown, got \(outcome)")
      return
    }
    #expect(index == strandedIndex)
    await cluster.network.heal()
    let states = try await cluster.waitForConvergence(count: 4)
    #expect(states.count == 3)
    #expect(states.allSatisfy { !$0.commandStrings.contains("stranded") })
    await cluster.stopAll()
  }

  @Test func aDiskWriteFailureStopsTheNodeWithoutAcknowledging() async throws {
    let disks = [FaultInjectingFileSystem(), FaultInjectingFileSystem(), FaultInjectingFileSystem()]
    let cluster = try LocalCluster { configuration in
      let slot = Int(configuration.id.rawValue.dropFirst()) ?? 1
      configuration.storage.fileSystem = disks[slot - 1]
    }
    try await cluster.startAll()
    let leader = try await cluster.waitForLeader()
    try await cluster.propose("durable")
    let disk = disks[(Int(leader.id.rawValue.dropFirst()) ?? 1) - 1]

    disk.faults = FaultInjectingFileSystem.Faults(failFileSyncs: true)
    var outcome: Result<[UInt8], RaftNodeError>
    do {
      outcome = .success(try await leader.propose(Array("never-acknowledged".utf8)))
    } catch {
      outcome = .failure(error)
    }
    guard case .failure(.stopped(let reason)) = outcome else {
      Issue.record("a proposal whose write failed must not be acknowledged; got \(outcome)")
      return
    }
    #expect(reason?.contains("fdatasync") == true)
    let status = await leader.status
    #expect(!status.isRunning)
    #expect(status.failure?.contains("durable log failure") == true)
    await #expect(throws: RaftNodeError.self) { _ = try await leader.propose(Array("after-failure".utf8)) }

    // The other two carry on; the failed node restarts from its directory once the disk is healthy.
    await cluster.network.unregister(leader.id)
    try await cluster.propose("after-the-failure")
    disk.faults = .none
    try await cluster.start(leader.id)
    let states = try await cluster.waitForConvergence(count: 2)
    #expect(states.count == 3)
    #expect(states.allSatisfy { $0.commandStrings.contains("after-the-failure") })
    await cluster.stopAll()
  }

  @Test func anOversizedCommandIsRefusedBeforeItIsProposed() async throws {
    let cluster = try LocalCluster { $0.maxCommandBytes = 1_024 }
    try await cluster.startAll()
    let leader = try await cluster.waitForLeader()
    let lastIndex = await leader.status.lastIndex
    await #expect(throws: RaftNodeError.self) { _ = try await leader.propose([UInt8](repeating: 1, count: 1_025)) }
    #expect(await leader.status.lastIndex == lastIndex)
    _ = try await leader.propose([UInt8](repeating: 1, count: 1_024))
    await cluster.stopAll()
  }

  @Test func aLearnerJoinsCatchesUpIsPromotedAndCountsTowardsTheQuorum() async throws {
    let cluster = try LocalCluster { $0.proposalTimeoutTicks = 60 }
    try await cluster.startAll()
    let leader = try await cluster.waitForLeader()
    for i in 0..<10 { try await cluster.propose("early-\(i)") }
    let newcomer = NodeID("n4")
    try await leader.proposeConfigChange(.addLearner(newcomer))
    let joined = try await cluster.start(newcomer)
    _ = try await cluster.waitForConvergence(count: 10)

    try await eventually("the learner to be promoted") {
      do {
        try await leader.proposeConfigChange(.promote(newcomer))
        return true
      } catch {
        return false  // not caught up yet, or the leader is not ready: try again
      }
    }
    #expect(await joined.membership.voters == Set(cluster.ids + [newcomer]))
    // Four voters need a quorum of three. With one original follower dead and n4 cut off, the leader and
    // the remaining follower are two: a proposal must not commit (with n4 still a learner it would).
    let follower = try #require(cluster.ids.first { $0 != leader.id })
    await cluster.kill(follower)
    await cluster.network.isolate(newcomer)
    await #expect(throws: RaftNodeError.self) {
      _ = try await leader.propose(Array("without-a-quorum".utf8))
    }
    await cluster.network.heal()
    try await cluster.propose("with-the-new-voter")
    try await eventually("n4 to apply the last command") {
      await joined.currentState.commandStrings.last == "with-the-new-voter"
    }
    await cluster.stopAll()
    await joined.stop(transferringLeadership: false)
  }

  @Test func malformedOrMisaddressedMessagesAreDroppedAndTheNodeKeepsWorking() async throws {
    let cluster = try LocalCluster()
    try await cluster.startAll()
    let leader = try await cluster.waitForLeader()
    let other = try #require(cluster.ids.first { $0 != leader.id })
    let valid = RaftMessage(from: other, to: leader.id, term: 1_000, body: .timeoutNow).wireBytes()
    await leader.receive(from: other, payload: [])
    await leader.receive(from: other, payload: [0xff, 0x00, 0x13, 0x37])
    await leader.receive(from: other, payload: Array(valid.dropLast(3)))
    // A message that claims another sender than the authenticated one, and one addressed elsewhere.
    let third = try #require(cluster.ids.first { $0 != leader.id && $0 != other })
    await leader.receive(from: third, payload: valid)
    let misaddressed = RaftMessage(from: other, to: third, term: 1_000, body: .timeoutNow).wireBytes()
    await leader.receive(from: other, payload: misaddressed)

    let status = await leader.status
    #expect(status.isRunning)
    #expect(status.term < 1_000, "a rejected message must not change the term")
    try await cluster.propose("still-working")
    _ = try await cluster.waitForConvergence(count: 1)
    await cluster.stopAll()
  }

  @Test func aLinearizableReadOnAFollowerSeesEveryAcknowledgedWrite() async throws {
    let cluster = try LocalCluster()
    try await cluster.startAll()
    let leader = try await cluster.waitForLeader()
    let followerID = try #require(cluster.ids.first { $0 != leader.id })
    let follower = try #require(cluster.node(followerID))
    for i in 0..<10 {
      try await cluster.propose("write-\(i)")
      try await follower.linearizableRead()
      let state = await follower.currentState
      #expect(state.commandStrings.contains("write-\(i)"))
    }
    await cluster.stopAll()
  }

  @Test func theLogIsCompactedAndALaggingNodeCatchesUpFromASnapshot() async throws {
    let cluster = try LocalCluster {
      $0.snapshotThreshold = 16
      $0.raft.compactionTailEntries = 0  // no log tail: the laggard must be sent the snapshot
    }
    try await cluster.startAll()
    let leader = try await cluster.waitForLeader()
    let laggard = try #require(cluster.ids.first { $0 != leader.id })
    await cluster.kill(laggard)
    for i in 0..<60 { try await cluster.propose("c\(i)") }
    let leaderStatus = try #require(await cluster.leader()?.status)
    #expect(leaderStatus.snapshotIndex >= 16)

    let restarted = try await cluster.start(laggard)
    let states = try await cluster.waitForConvergence(count: 60)
    #expect(states.count == 3)
    #expect(await restarted.status.snapshotIndex > 0)

    // A full restart of every node restores from the snapshots and re-applies the rest.
    await cluster.stopAll()
    try await cluster.startAll()
    let after = try await cluster.waitForConvergence(count: 60)
    #expect(after.allSatisfy { $0.commandStrings == states[0].commandStrings })
    await cluster.stopAll()
  }

  @Test func theLeadershipStreamReportsTheLeaderAndFinishesWhenTheNodeStops() async throws {
    let cluster = try LocalCluster()
    try await cluster.startAll()
    let observer = try #require(cluster.node(cluster.ids[0]))
    let stream = await observer.leadershipChanges()
    let leader = try await cluster.waitForLeader()
    try await cluster.propose("settle")
    let leaderTerm = await leader.status.term
    var latest: LeadershipState?
    var iterator = stream.makeAsyncIterator()
    while let state = await iterator.next() {
      latest = state
      if state.term == leaderTerm && state.leader != nil { break }
    }
    #expect(latest?.leader == leader.id)
    await observer.stop(transferringLeadership: false)
    // The stream finishes once the node stops (the loop ends instead of waiting forever).
    while await iterator.next() != nil {}
    await cluster.stopAll()
  }

  /// A follower whose write fails must not acknowledge the entry: with the third node down, the leader then
  /// has no majority for it, so the proposal cannot commit.
  @Test func aFollowerWhoseDiskFailsNeverAcknowledgesTheEntry() async throws {
    let disks = [FaultInjectingFileSystem(), FaultInjectingFileSystem(), FaultInjectingFileSystem()]
    let cluster = try LocalCluster { configuration in
      let slot = Int(configuration.id.rawValue.dropFirst()) ?? 1
      configuration.storage.fileSystem = disks[slot - 1]
      configuration.proposalTimeoutTicks = 60
    }
    try await cluster.startAll()
    let leader = try await cluster.waitForLeader()
    try await cluster.propose("replicated")
    _ = try await cluster.waitForConvergence(count: 1)
    let followers = cluster.ids.filter { $0 != leader.id }
    await cluster.kill(followers[0])
    let faulty = followers[1]
    disks[(Int(faulty.rawValue.dropFirst()) ?? 1) - 1].faults = FaultInjectingFileSystem.Faults(failFileSyncs: true)

    // The leader cannot commit it: it times out, or (more often) the leader loses its quorum first, steps
    // down and fails the proposal at once. Either way the outcome is reported unknown.
    do throws(RaftNodeError) {
      _ = try await leader.propose(Array("needs-the-faulty-follower".utf8))
      Issue.record("the proposal must not commit without a durable majority")
    } catch .timedOut(let operation, _) {
      #expect(operation == "the proposal at index 3")
    } catch .outcomeUnknown(let index, _) {
      #expect(index == 3)
    } catch {
      Issue.record("unexpected error \(error)")
    }
    let faultyStatus = try #require(await cluster.node(faulty)?.status)
    #expect(!faultyStatus.isRunning)
    #expect(faultyStatus.failure?.contains("fdatasync") == true)
    let leaderStatus = await leader.status
    #expect(leaderStatus.commitIndex == 2, "the entry at index 3 must not commit without a durable majority")
    await cluster.stopAll()
  }
}

@Suite("RaftNode with manual ticks")
struct RaftNodeManualTickTests {
  /// With no ticks at all after the call, only a leadership transfer (TimeoutNow) can produce a new leader:
  /// an election after a crash would need election timeouts to expire.
  @Test func aGracefulStopHandsLeadershipOverWithoutAnElectionTimeout() async throws {
    let cluster = try LocalCluster { $0.tickInterval = nil }
    try await cluster.startAll()
    let ticking = Task {
      while !Task.isCancelled {
        for id in cluster.ids { await cluster.node(id)?.tick() }
        try? await Task.sleep(for: .milliseconds(2))
      }
    }
    let leader = try await cluster.waitForLeader()
    try await cluster.propose("before-the-handover")
    _ = try await cluster.waitForConvergence(count: 1)
    ticking.cancel()
    _ = await ticking.value
    let oldTerm = await leader.status.term

    // A watchdog resumes ticking if the handover hangs, so that the test fails instead of hanging.
    let watchdogFired = Flag()
    let watchdog = Task {
      try await Task.sleep(for: .seconds(3))
      watchdogFired.set()
      while !Task.isCancelled {
        for id in cluster.ids { await cluster.node(id)?.tick() }
        try await Task.sleep(for: .milliseconds(2))
      }
    }
    await leader.stop()
    let successor = try await cluster.waitForLeader(within: 5)
    watchdog.cancel()
    #expect(!watchdogFired.isSet, "the handover needed ticks")
    #expect(successor.id != leader.id)
    #expect(await successor.status.term == oldTerm + 1)
    _ = try await successor.propose(Array("after-the-handover".utf8))
    await cluster.stopAll()
  }
}

/// A flag set from one task and read from another.
final class Flag: @unchecked Sendable {
  private let lock = NSLock()
  private var value = false
  func set() { lock.withLock { value = true } }
  var isSet: Bool { lock.withLock { value } }
}

@Suite("RaftNode start-up")
struct RaftNodeStartupTests {
  @Test func aCorruptDataDirectoryRefusesToStartNamingTheFile() async throws {
    let cluster = try LocalCluster(size: 1) { $0.tickInterval = nil }
    let id = cluster.ids[0]
    let node = try await cluster.start(id)
    for _ in 0..<100 { await node.tick() }
    let status = await node.status
    #expect(status.role == .leader, "a single voter elects itself")
    _ = try await node.propose(Array("kept".utf8))
    await node.stop()

    let directory = cluster.directory.child(id.rawValue)
    let segment = try #require(
      try FileManager.default.contentsOfDirectory(atPath: directory).first { $0.hasPrefix("wal-") })
    let path = directory + "/" + segment
    var bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))
    for i in 0..<8 { bytes[i] ^= 0xff }
    try Data(bytes).write(to: URL(fileURLWithPath: path))

    do {
      _ = try Node(
        configuration: cluster.configuration(for: id), stateMachine: CommandLog(),
        network: cluster.network.sender(for: id))
      Issue.record("a node must refuse to start on a corrupt WAL")
    } catch {
      guard case .storage = error else {
        Issue.record("expected a storage error, got \(error)")
        return
      }
      #expect(error.description.contains(segment))
    }
  }
}
