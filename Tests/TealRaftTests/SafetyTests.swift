import TealWire
import Testing

@testable import TealRaft

/// Regression tests of the consensus-safety findings (issue 9). Each failed before its fix.
@Suite struct SafetyTests {
  /// Item 1: a single voter wins its election inside one tick. If its AppendEntries for the new term left
  /// before the Ready holding the new term was durable, a crash before the fsync would let it win the same
  /// term again and write a different entry at the same (index, term) its learner already holds.
  @Test func aSingleVoterLeaderSendsNothingBeforeItsNewTermIsDurable() throws {
    var c = TestCluster(["n1"], learners: ["n2"])
    let n1 = NodeID("n1")
    var core = c["n1"]
    var guardCount = 0
    while core.role != .leader && guardCount < 100 {
      core.tick()
      guardCount += 1
    }
    #expect(core.role == .leader)
    _ = try core.propose(Array("A".utf8))
    let ready = core.ready()
    #expect(ready.hardState?.term == core.term)
    #expect(ready.messages.isEmpty, "messages of an undurable term must wait for the persist step")

    // Crash before the fsync: only `messages` left the node; nothing was persisted.
    c.queue.append(contentsOf: ready.messages)
    c.stabilize()
    c.crash("n1")
    c.restart("n1", seed: 7)
    c.tick("n1", times: 100)
    #expect(c["n1"].role == .leader)
    _ = try c.propose("n1", "B")
    c.runTicks(5)
    let leaderApplied = c.applied[n1]!.filter { $0.kind == .command }
    let learnerApplied = c.applied[NodeID("n2")]!.filter { $0.kind == .command }
    #expect(leaderApplied.count == 1)
    for entry in learnerApplied {
      let same = leaderApplied.first { $0.index == entry.index }
      #expect(same == nil || same == entry, "n1 and n2 applied different commands at index \(entry.index)")
    }
    #expect(c.appliedCommands("n2") == ["B"])
  }

  /// Item 2: a session evicted from a full table must not let a retry of its last command apply again.
  @Test func aRetryOfAnEvictedSessionIsRefusedNotAppliedAgain() {
    var sessions = ClientSessions(capacity: 2)
    // Sessions 1, 2, 3 are registered at indexes 1-3 and each applies its command 1 at 11-13.
    for client in UInt64(1)...3 { sessions.register(at: client) }
    for client in UInt64(2)...3 {
      let command = SessionCommand(clientID: client, sequence: 1, payload: [])
      #expect(sessions.check(command, at: 10 + client) == .apply)
      sessions.record(command, response: [], at: 10 + client)
    }
    // Session 1 was evicted (capacity 2): its retried command is refused, not applied a second time.
    let retry = SessionCommand(clientID: 1, sequence: 1, payload: [])
    #expect(sessions.check(retry, at: 20) == .rejected(.unknownSession(clientID: 1)))
    #expect(SessionError.unknownSession(clientID: 1).description.contains("register a new session"))
  }

  /// Item 2: sessions expire by log time (entries), identically on every replica; a command of an
  /// expired or never-registered session is refused.
  @Test func sessionsExpireByLogTimeAndUnknownSessionsAreRefused() throws {
    var sessions = ClientSessions(capacity: 10, expiryEntries: 100)
    let id = sessions.register(at: 5)
    #expect(id == 5)
    let first = SessionCommand(clientID: id, sequence: 1, payload: [1])
    #expect(sessions.check(first, at: 50) == .apply)
    sessions.record(first, response: [9], at: 50)
    #expect(sessions.check(first, at: 150) == .duplicate(response: [9]))
    #expect(
      sessions.check(SessionCommand(clientID: id, sequence: 2, payload: []), at: 151)
        == .rejected(.unknownSession(clientID: id)))
    let other = sessions.register(at: 200)  // log time moves on: session 5 is dropped
    #expect(sessions.sessions.keys.sorted() == [other])
    #expect(
      sessions.check(SessionCommand(clientID: 77, sequence: 1, payload: []), at: 201)
        == .rejected(.unknownSession(clientID: 77)))
    #expect(
      sessions.check(SessionCommand(clientID: other, sequence: 0, payload: []), at: 201)
        == .rejected(.invalidSequence(clientID: other)))
    #expect(try ClientSessions(wireBytes: sessions.wireBytes()) == sessions)
  }

  /// Item 2: many sessions, each used many times: the table stays bounded and its bookkeeping small.
  @Test func recordingIsCheapAndTheTableStaysBounded() {
    var sessions = ClientSessions(capacity: 1_000)
    var index: UInt64 = 0
    for _ in 0..<2_000 {
      index += 1
      sessions.register(at: index)
    }
    #expect(sessions.sessions.count == 1_000)
    for round in UInt64(1)...50 {
      for client in sessions.sessions.keys.sorted() {
        index += 1
        let command = SessionCommand(clientID: client, sequence: round, payload: [])
        #expect(sessions.check(command, at: index) == .apply)
        sessions.record(command, response: [], at: index)
      }
    }
    #expect(sessions.sessions.count == 1_000)
  }

  /// Item 3: a ReadIndex answer is accepted only from the leader this node follows.
  @Test func aReadIndexResponseFromANodeThatIsNotTheLeaderIsIgnored() {
    var c = TestCluster(["n1", "n2", "n3"])
    c.campaign("n1")
    #expect(c.leaders == [NodeID("n1")])
    var follower = c["n3"]
    #expect(follower.leader == NodeID("n1"))
    follower.step(
      RaftMessage(
        from: NodeID("n2"), to: NodeID("n3"), term: follower.term, body: .readIndexResponse(index: 1, context: [1])))
    #expect(follower.ready().readStates.isEmpty)
  }

  /// Item 4: chunks of two leaders' snapshots with the same metadata must not be spliced into one.
  @Test func snapshotChunksOfTwoLeadersAreNotSpliced() {
    let voters = RaftConfiguration(voters: [NodeID("n1"), NodeID("n2"), NodeID("n3")])
    var follower = try! RaftCore(
      id: NodeID("n3"), options: TestCluster.defaultOptions(), bootstrap: voters, randomSeed: 1)
    let metadata = SnapshotMetadata(index: 10, term: 1, configuration: voters)
    // Leader n1 (term 2) sends the first chunk of its snapshot; n2 (term 3) the last chunk of its own.
    let first: [UInt8] = [1, 2, 3, 6, 6]
    let second: [UInt8] = [7, 7, 7, 4, 5]
    follower.step(
      RaftMessage(
        from: NodeID("n1"), to: NodeID("n3"), term: 2,
        body: .snapshotChunk(
          metadata: metadata, offset: 0, data: Array(first[0..<3]), done: false, totalLength: 5,
          checksum: SnapshotChecksum.of(first))))
    _ = follower.ready()
    follower.step(
      RaftMessage(
        from: NodeID("n2"), to: NodeID("n3"), term: 3,
        body: .snapshotChunk(
          metadata: metadata, offset: 3, data: Array(second[3...]), done: true, totalLength: 5,
          checksum: SnapshotChecksum.of(second))))
    let ready = follower.ready()
    #expect(ready.snapshot == nil, "a snapshot spliced from two leaders' chunks was installed")
    // The new leader is asked for its snapshot from the start.
    #expect(
      (ready.messages + ready.messagesAfterPersist).contains {
        $0.body == .snapshotChunkResponse(index: 10, nextOffset: 0)
      })
  }

  /// Item 4: a snapshot whose assembled bytes do not match the announced checksum is not installed.
  @Test func aSnapshotThatFailsItsChecksumIsNotInstalled() {
    let voters = RaftConfiguration(voters: [NodeID("n1"), NodeID("n2"), NodeID("n3")])
    var follower = try! RaftCore(
      id: NodeID("n3"), options: TestCluster.defaultOptions(), bootstrap: voters, randomSeed: 1)
    let metadata = SnapshotMetadata(index: 10, term: 1, configuration: voters)
    let data: [UInt8] = [1, 2, 3, 4, 5]
    func chunk(_ offset: Int, _ bytes: [UInt8], done: Bool, checksum: UInt32) -> RaftMessage {
      RaftMessage(
        from: NodeID("n1"), to: NodeID("n3"), term: 2,
        body: .snapshotChunk(
          metadata: metadata, offset: UInt64(offset), data: bytes, done: done, totalLength: 5, checksum: checksum))
    }
    follower.step(chunk(0, [1, 2, 3], done: false, checksum: SnapshotChecksum.of(data)))
    follower.step(chunk(3, [4, 9], done: true, checksum: SnapshotChecksum.of(data)))  // damaged in transit
    #expect(follower.ready().snapshot == nil)
    follower.step(chunk(0, [1, 2, 3], done: false, checksum: SnapshotChecksum.of(data)))
    follower.step(chunk(3, [4, 5], done: true, checksum: SnapshotChecksum.of(data)))
    #expect(follower.ready().snapshot?.data == data)
  }

  /// Item 6: a voter whose disk was wiped votes again in a term it may already have voted in, unless it
  /// starts in join mode, which refuses votes and campaigns until a leader's log has reached it.
  @Test func aWipedVoterInJoinModeNeitherVotesNorCampaignsUntilItHasALeadersLog() throws {
    let voters = RaftConfiguration(voters: [NodeID("n1"), NodeID("n2"), NodeID("n3")])
    func voteRequest(from: String, term: UInt64, lastIndex: UInt64 = 0, lastTerm: UInt64 = 0) -> RaftMessage {
      RaftMessage(
        from: NodeID(from), to: NodeID("n3"), term: term,
        body: .vote(lastIndex: lastIndex, lastTerm: lastTerm, transfer: false))
    }
    func granted(_ ready: RaftReady) -> [Bool] {
      ready.messagesAfterPersist.compactMap { if case .voteResponse(let g) = $0.body { g } else { nil } }
    }
    // Founding mode (today's behaviour): the wiped voter grants a vote at once.
    var founding = try RaftCore(id: NodeID("n3"), bootstrap: voters, randomSeed: 1)
    founding.step(voteRequest(from: "n2", term: 5))
    #expect(granted(founding.ready()) == [true])

    var joining = try RaftCore(id: NodeID("n3"), bootstrap: voters, randomSeed: 1, joining: true)
    #expect(joining.awaitingLeaderLog)
    joining.step(voteRequest(from: "n2", term: 5))
    #expect(granted(joining.ready()) == [false])
    joining.step(
      RaftMessage(
        from: NodeID("n2"), to: NodeID("n3"), term: 6,
        body: .vote(lastIndex: 0, lastTerm: 0, transfer: true)))
    #expect(granted(joining.ready()) == [false], "not even for a leadership transfer")
    for _ in 0..<1_000 { joining.tick() }
    #expect(joining.role == .follower && joining.term == 6, "it never campaigns")

    // The leader of term 7 replicates its log; from then on the node is an ordinary voter.
    joining.step(
      RaftMessage(
        from: NodeID("n1"), to: NodeID("n3"), term: 7,
        body: .append(prevIndex: 0, prevTerm: 0, entries: [RaftEntry(term: 7, index: 1, kind: .noop)], commit: 0)))
    _ = joining.ready()
    #expect(!joining.awaitingLeaderLog)
    for _ in 0..<200 { joining.tick() }  // the leader went quiet: the lease expired
    joining.step(voteRequest(from: "n2", term: 9, lastIndex: 1, lastTerm: 7))
    #expect(granted(joining.ready()) == [true])

    // A node that restarts with a log is not held back.
    let restarted = try RaftCore(
      id: NodeID("n3"), bootstrap: voters, randomSeed: 1,
      restoring: RaftPersistentState(
        hardState: HardState(term: 7), entries: [RaftEntry(term: 7, index: 1, kind: .noop)]),
      joining: true)
    #expect(!restarted.awaitingLeaderLog)
  }

  /// Assertions: a configuration entry that does not decode is refused at the boundary (wire
  /// decoding, an inbound message, a restored disk), never silently skipped inside the core.
  @Test func anUndecodableConfigurationEntryIsRefusedAtTheBoundary() throws {
    let bad = RaftEntry(term: 1, index: 1, kind: .configuration, data: [0xFF, 0xFF])
    #expect(throws: WireError.self) { try RaftEntry(wireBytes: bad.wireBytes()) }

    let voters = RaftConfiguration(voters: [NodeID("n1"), NodeID("n2"), NodeID("n3")])
    var follower = try RaftCore(id: NodeID("n3"), bootstrap: voters, randomSeed: 1)
    follower.step(
      RaftMessage(
        from: NodeID("n1"), to: NodeID("n3"), term: 1,
        body: .append(prevIndex: 0, prevTerm: 0, entries: [bad], commit: 0)))
    #expect(follower.lastIndex == 0, "the message is dropped")
    #expect(follower.invariantViolation() == nil)

    #expect(throws: RaftError.self) {
      _ = try RaftCore(
        id: NodeID("n3"), bootstrap: voters, randomSeed: 1,
        restoring: RaftPersistentState(hardState: HardState(term: 1), entries: [bad]))
    }
  }
}
