import Foundation
import TealRaft
import TealStorage
import TealStorageTesting
import TealWire
import Testing

@testable import TealConsensus

/// Issue 9, item 5: a Ready that carries both a snapshot (from a leader of a newer term) and the hard state
/// of that term must never leave, after a crash in between, a snapshot whose term is above the durable
/// hard state's: the node would refuse to start.
@Suite("Persisting a Ready")
struct PersistReadyTests {
  @Test func aCrashBetweenTheSnapshotAndTheHardStateLeavesAStartableDirectory() throws {
    let directory = try TemporaryDirectory()
    let disk = FaultInjectingFileSystem()
    var options = StorageOptions(logger: quietLogger())
    options.fileSystem = disk
    let path = directory.child("node")
    let voters = RaftConfiguration(voters: [NodeID("n1"), NodeID("n2"), NodeID("n3")])
    do {
      let log = try DurableLog(directory: path, options: options)
      try log.append(
        entries: [StoredEntry(index: 1, term: 1, kind: RaftEntryKind.noop.rawValue, payload: [])],
        hardState: StoredHardState(term: 1, vote: "n1", commit: 1))
      var ready = RaftReady()
      ready.hardState = HardState(term: 5, vote: nil, commit: 10)
      ready.snapshot = RaftSnapshot(
        metadata: TealRaft.SnapshotMetadata(index: 10, term: 5, configuration: voters), data: [1, 2, 3])
      // Every fdatasync fails from now on (the snapshot file itself is fsync'ed): the node crashes somewhere
      // in the middle of persisting this Ready.
      disk.faults = FaultInjectingFileSystem.Faults(failDataSyncs: true)
      #expect(throws: StorageError.self) { try StorageMapping.persist(ready, to: log) }
      log.close()
    }
    disk.faults = .none
    let reopened = try DurableLog(directory: path, options: options)
    let state = try StorageMapping.persistentState(of: reopened)
    #expect(throws: Never.self) {
      _ = try RaftCore(id: NodeID("n1"), bootstrap: voters, randomSeed: 1, restoring: state)
    }
    reopened.close()
  }
}

/// Issue 9, item 3: a ReadIndex answer meant for a previous incarnation of this node (its read ids restart
/// at 1) must not complete a read of the current one.
@Suite("ReadIndex contexts")
struct ReadContextTests {
  @Test func aReadIndexAnswerForAnotherIncarnationDoesNotCompleteARead() async throws {
    let cluster = try LocalCluster { $0.readTimeoutTicks = 60 }
    try await cluster.startAll()
    let leader = try await cluster.waitForLeader()
    try await cluster.propose("seen-by-all")
    _ = try await cluster.waitForConvergence(count: 1)
    let followerID = try #require(cluster.ids.first { $0 != leader.id })
    let follower = try #require(cluster.node(followerID))
    await cluster.network.isolate(followerID)
    for i in 0..<3 { try await cluster.propose("missed-\(i)") }
    let term = await follower.status.term

    let finished = Flag()
    let read = Task { () -> RaftNodeError? in
      defer { finished.set() }
      do throws(RaftNodeError) {
        try await follower.linearizableRead()
        return nil
      } catch {
        return error
      }
    }
    // The answer a previous incarnation's read 1 would get: an old read index, from the leader, this term.
    // Delivered repeatedly until the read ends, so that it surely arrives while the read waits.
    var context = WireWriter(capacity: 8)
    context.writeFixed(UInt64(1))
    let stale = RaftMessage(
      from: leader.id, to: followerID, term: term, body: .readIndexResponse(index: 2, context: context.bytes))
    while !finished.isSet {
      await follower.receive(from: leader.id, payload: stale.wireBytes())
      try await Task.sleep(for: .milliseconds(5))
    }
    let outcome = await read.value
    guard case .timedOut = outcome else {
      Issue.record("the read must not complete from another incarnation's answer; got \(String(describing: outcome))")
      await cluster.stopAll()
      return
    }
    #expect(await follower.currentState.commands.count == 1)
    await cluster.stopAll()
  }
}

/// Issue 9, item 6: the data directory records its cluster id; a node added to a running cluster starts in
/// join mode.
@Suite("Cluster identity and join mode")
struct ClusterIdentityTests {
  @Test func aDataDirectoryOfAnotherClusterIsRefused() async throws {
    let cluster = try LocalCluster(size: 1) {
      $0.tickInterval = nil
      $0.clusterID = "teal-prod"
    }
    let id = cluster.ids[0]
    let node = try await cluster.start(id)
    await node.stop()
    let reopened = try await cluster.start(id)  // same cluster: accepted
    await reopened.stop()
    var other = cluster.configuration(for: id)
    other.clusterID = "teal-staging"
    do {
      _ = try Node(configuration: other, stateMachine: CommandLog(), network: cluster.network.sender(for: id))
      Issue.record("a directory of another cluster must be refused")
    } catch {
      guard case .invalidPersistentState(let message) = error else {
        Issue.record("expected invalidPersistentState, got \(error)")
        return
      }
      #expect(message.contains("teal-prod") && message.contains("teal-staging") && message.contains("cluster-id"))
    }
    other.clusterID = "has space"
    #expect(throws: RaftNodeError.self) {
      _ = try Node(configuration: other, stateMachine: CommandLog(), network: cluster.network.sender(for: id))
    }
  }

  /// A voter whose directory was wiped rejoins in join mode: it catches up from the leader and the cluster
  /// keeps committing with it.
  @Test func aWipedVoterRejoinsInJoinModeAndCatchesUp() async throws {
    let cluster = try LocalCluster { $0.clusterID = "teal-test" }
    try await cluster.startAll()
    let leader = try await cluster.waitForLeader()
    for i in 0..<5 { try await cluster.propose("before-\(i)") }
    let wiped = try #require(cluster.ids.first { $0 != leader.id })
    await cluster.kill(wiped)
    try FileManager.default.removeItem(atPath: cluster.directory.child(wiped.rawValue))
    let rejoined = try await cluster.start(wiped, adjust: { $0.join = true })
    for i in 0..<3 { try await cluster.propose("after-\(i)") }
    let states = try await cluster.waitForConvergence(count: 8)
    #expect(states.count == 3)
    #expect(await rejoined.status.role == .follower)
    await cluster.stopAll()
  }
}
