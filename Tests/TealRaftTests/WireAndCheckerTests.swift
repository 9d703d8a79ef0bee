import TealWire
import Testing

@testable import TealRaft
@testable import TealRaftSim

@Suite struct RaftWireFormatTests {
  static let metadata = SnapshotMetadata(
    index: 9, term: 3, configuration: RaftConfiguration(voters: [NodeID("n1"), NodeID("n2")], learners: [NodeID("n3")]))

  static let bodies: [RaftMessage.Body] = [
    .preVote(lastIndex: 5, lastTerm: 2),
    .preVoteResponse(granted: true),
    .vote(lastIndex: 1 << 40, lastTerm: 7, transfer: true),
    .voteResponse(granted: false),
    .append(
      prevIndex: 4, prevTerm: 2,
      entries: [
        RaftEntry(term: 3, index: 5, kind: .noop), RaftEntry(term: 3, index: 6, kind: .command, data: [1, 2, 3]),
        RaftEntry(term: 3, index: 7, kind: .configuration, data: metadata.configuration.wireBytes()),
      ], commit: 4),
    .appendResponse(index: 6, reject: true, hintIndex: 3, hintTerm: 1),
    .heartbeat(commit: 12, readSequence: 99),
    .heartbeatResponse(readSequence: 99),
    .snapshotChunk(
      metadata: metadata, offset: 64, data: Array(repeating: 0xAB, count: 100), done: false, totalLength: 300,
      checksum: 0xDEAD_BEEF),
    .snapshotChunkResponse(index: 9, nextOffset: 164),
    .timeoutNow,
    .readIndex(context: [9, 8, 7]),
    .readIndexResponse(index: 44, context: []),
  ]

  @Test func everyMessageKindRoundTripsThroughTheWireFormat() throws {
    for body in Self.bodies {
      let m = RaftMessage(from: NodeID("n1"), to: NodeID("node-2"), term: UInt64.max, body: body)
      let decoded = try RaftMessage(wireBytes: m.wireBytes())
      #expect(decoded == m)
    }
  }

  @Test func entriesHardStateAndSnapshotsRoundTrip() throws {
    let hs = HardState(term: 8, vote: NodeID("n3"), commit: 77)
    #expect(try HardState(wireBytes: hs.wireBytes()) == hs)
    #expect(try HardState(wireBytes: HardState().wireBytes()) == HardState())
    let snap = RaftSnapshot(metadata: Self.metadata, data: [1, 2, 3])
    #expect(try RaftSnapshot(wireBytes: snap.wireBytes()) == snap)
    let command = SessionCommand(clientID: 5, sequence: 6, payload: [7])
    #expect(try SessionCommand(wireBytes: command.wireBytes()) == command)
  }

  @Test func truncatedOrCorruptInputThrowsInsteadOfCrashing() {
    for body in Self.bodies {
      let bytes = RaftMessage(from: NodeID("n1"), to: NodeID("n2"), term: 3, body: body).wireBytes()
      for cut in 0..<bytes.count {
        #expect(throws: WireError.self) { try RaftMessage(wireBytes: Array(bytes[..<cut])) }
      }
    }
    var unknownKind = RaftMessage(from: NodeID("n1"), to: NodeID("n2"), term: 3, body: .timeoutNow).wireBytes()
    unknownKind[unknownKind.count - 1] = 200
    #expect(throws: WireError.unknownTag(field: "raft.kind", tag: 200)) { try RaftMessage(wireBytes: unknownKind) }
  }

  @Test func malformedAppendEntriesAreIgnoredByTheFollower() {
    var f = try! RaftCore(
      id: NodeID("n2"), bootstrap: RaftConfiguration(voters: [NodeID("n1"), NodeID("n2")]), randomSeed: 1)
    f.step(
      RaftMessage(
        from: NodeID("n1"), to: NodeID("n2"), term: 1,
        body: .append(prevIndex: 0, prevTerm: 0, entries: [RaftEntry(term: 1, index: 5)], commit: 5)))
    #expect(f.lastIndex == 0 && f.commitIndex == 0)
    // Indexes at the end of the range are refused, not overflowed.
    f.step(
      RaftMessage(
        from: NodeID("n1"), to: NodeID("n2"), term: 1,
        body: .append(
          prevIndex: UInt64.max, prevTerm: 1, entries: [RaftEntry(term: 1, index: 0)], commit: UInt64.max)))
    f.step(
      RaftMessage(from: NodeID("n1"), to: NodeID("n2"), term: 1, body: .heartbeat(commit: UInt64.max, readSequence: 0)))
    #expect(f.lastIndex == 0 && f.commitIndex == 0)
    // A term that could overflow is dropped rather than adopted.
    f.step(RaftMessage(from: NodeID("n1"), to: NodeID("n2"), term: UInt64.max, body: .timeoutNow))
    #expect(f.term == 1 && f.role == .follower)
  }
}

@Suite struct LinearizabilityCheckerTests {
  typealias Op = RegisterOperation

  @Test func acceptsSequentialAndConcurrentLinearizableHistories() {
    #expect(
      LinearizabilityChecker.isLinearizable([
        Op(client: 1, kind: .write(1), invoke: 1, response: 2),
        Op(client: 2, kind: .read(1), invoke: 3, response: 4),
      ]))
    // The read overlaps the write: either value is fine.
    #expect(
      LinearizabilityChecker.isLinearizable([
        Op(client: 1, kind: .write(1), invoke: 1, response: 4),
        Op(client: 2, kind: .read(nil), invoke: 2, response: 3),
        Op(client: 3, kind: .read(1), invoke: 2, response: 5),
      ]))
  }

  @Test func rejectsStaleReadAfterCompletedWrite() {
    #expect(
      !LinearizabilityChecker.isLinearizable([
        Op(client: 1, kind: .write(1), invoke: 1, response: 2),
        Op(client: 2, kind: .read(nil), invoke: 3, response: 4),
      ]))
  }

  @Test func rejectsReadsThatGoBackInTime() {
    // Two sequential reads observe 2 then 1 although 1 was overwritten by 2 before.
    #expect(
      !LinearizabilityChecker.isLinearizable([
        Op(client: 1, kind: .write(1), invoke: 1, response: 2),
        Op(client: 1, kind: .write(2), invoke: 3, response: 8),
        Op(client: 2, kind: .read(2), invoke: 4, response: 5),
        Op(client: 3, kind: .read(1), invoke: 6, response: 7),
      ]))
  }

  @Test func rejectsReadOfAValueNeverWritten() {
    #expect(
      !LinearizabilityChecker.isLinearizable([
        Op(client: 1, kind: .write(1), invoke: 1, response: 2),
        Op(client: 2, kind: .read(3), invoke: 3, response: 4),
      ]))
  }

  @Test func rejectsLostAcknowledgedWrite() {
    // write(2) completed after write(1); a later read sees 1: the acknowledged write 2 was lost.
    #expect(
      !LinearizabilityChecker.isLinearizable([
        Op(client: 1, kind: .write(1), invoke: 1, response: 2),
        Op(client: 2, kind: .write(2), invoke: 3, response: 4),
        Op(client: 3, kind: .read(1), invoke: 5, response: 6),
      ]))
  }

  @Test func timedOutWriteMayTakeEffectLateOrNever() {
    let open = Op(client: 1, kind: .write(7), invoke: 1, response: nil)
    #expect(
      LinearizabilityChecker.isLinearizable([
        open, Op(client: 2, kind: .read(nil), invoke: 2, response: 3),
        Op(client: 2, kind: .read(7), invoke: 10, response: 11),
      ]))
    #expect(LinearizabilityChecker.isLinearizable([open, Op(client: 2, kind: .read(nil), invoke: 20, response: 21)]))
    // But once seen, it cannot be unseen.
    #expect(
      !LinearizabilityChecker.isLinearizable([
        open, Op(client: 2, kind: .read(7), invoke: 2, response: 3),
        Op(client: 2, kind: .read(nil), invoke: 4, response: 5),
      ]))
  }

  @Test func handlesLongConcurrentHistoriesQuickly() {
    var history: [Op] = []
    var clock: UInt64 = 0
    for i in 0..<300 {
      clock += 1
      let start = clock
      clock += 3
      history.append(Op(client: i % 5, kind: .write(Int64(i)), invoke: start, response: clock))
      history.append(Op(client: 9, kind: .read(Int64(i)), invoke: start + 1, response: clock + 1))
    }
    #expect(LinearizabilityChecker.check(history) == .linearizable)
  }
}

@Suite struct ClientSessionTests {
  @Test func retriedCommandIsAppliedOnceAndItsResponseReturnedAgain() {
    var sessions = ClientSessions()
    sessions.register(at: 1)
    let first = SessionCommand(clientID: 1, sequence: 1, payload: [1])
    #expect(sessions.check(first, at: 10) == .apply)
    sessions.record(first, response: [42], at: 10)
    #expect(sessions.check(first, at: 11) == .duplicate(response: [42]))
    let next = SessionCommand(clientID: 1, sequence: 2, payload: [2])
    #expect(sessions.check(next, at: 11) == .apply)
    sessions.record(next, response: [43], at: 11)
    #expect(sessions.check(first, at: 12) == .stale)
  }

  @Test func sessionsEvictTheLeastRecentlyUsedDeterministicallyAndSurviveSnapshots() throws {
    var sessions = ClientSessions(capacity: 2)
    for client in UInt64(1)...3 {
      sessions.register(at: client)
      sessions.record(SessionCommand(clientID: client, sequence: 1, payload: []), response: [], at: 10 + client)
    }
    #expect(sessions.sessions.keys.sorted() == [2, 3])
    #expect(try ClientSessions(wireBytes: sessions.wireBytes()) == sessions)
  }

  @Test func kvStateMachineAppliesARetriedWriteOnce() {
    var kv = KVStateMachine()
    kv.apply(RaftEntry(term: 1, index: 1, data: KVStateMachine.encodeRegistration()))  // session 1
    kv.apply(RaftEntry(term: 1, index: 2, data: KVStateMachine.encodeRegistration()))  // session 2
    let put = KVStateMachine.encodePut(key: 1, value: 5, clientID: 1, sequence: 1)
    kv.apply(RaftEntry(term: 1, index: 3, data: put))
    kv.apply(RaftEntry(term: 1, index: 4, data: KVStateMachine.encodePut(key: 1, value: 6, clientID: 2, sequence: 1)))
    kv.apply(RaftEntry(term: 2, index: 5, data: put))  // the retry, committed again by a new leader
    #expect(kv.values[1] == 6)
    // A write of a session that was never registered is refused, with the reason.
    let refused = kv.apply(
      RaftEntry(term: 2, index: 6, data: KVStateMachine.encodePut(key: 1, value: 7, clientID: 9, sequence: 1)))
    #expect(refused?.refusal == .unknownSession(clientID: 9))
    #expect(kv.values[1] == 6)
  }
}

@Suite struct SimulationDeterminismTests {
  @Test func aSeedReplaysIdentically() {
    for seed: UInt64 in [3, 4] {
      var p = SimulationParameters(seed: seed)
      p.steps = 1_500
      p.trace = true
      var a = RaftSimulation(p)
      var b = RaftSimulation(p)
      let ra = a.run()
      let rb = b.run()
      #expect(ra.trace == rb.trace)
      #expect(ra.steps == rb.steps && ra.committedIndex == rb.committedIndex)
      #expect(ra.violations.isEmpty)
    }
  }

  @Test func livenessCheckFailsWhenPendingOperationsCannotFinishInTime() {
    // With no time allowed after the heal, operations still in flight must be reported: the
    // liveness check does not pass vacuously.
    var p = SimulationParameters(seed: 1)
    p.steps = 300
    p.livenessBoundMillis = 0
    p.faults = false
    var sim = RaftSimulation(p)
    let report = sim.run()
    #expect(report.violations.contains { $0.hasPrefix("liveness") })
  }
}

@Suite struct RaftInputFuzzTests {
  /// Random (well-formed but arbitrary) messages from peers must never crash a node in any role.
  @Test func arbitraryPeerMessagesNeverCrashANode() {
    var random = SimRandom(seed: 42)
    let peers = [NodeID("n1"), NodeID("n2"), NodeID("n3")]
    func number(_ r: inout SimRandom) -> UInt64 {
      switch r.below(10) {
      case 0: UInt64.max
      case 1: UInt64.max / 2
      default: UInt64(r.below(12))
      }
    }
    for round in 0..<150 {
      var c = TestCluster(["n1", "n2", "n3"])
      if round % 2 == 0 { c.campaign("n1") }
      for _ in 0..<250 {
        let from = peers[1 + random.below(2)]
        let term = number(&random)
        let entries = (0..<random.below(3)).map {
          RaftEntry(term: number(&random), index: number(&random) &+ UInt64($0), kind: .command, data: [1])
        }
        let bodies: [RaftMessage.Body] = [
          .preVote(lastIndex: number(&random), lastTerm: number(&random)),
          .preVoteResponse(granted: random.chance(0.5)),
          .vote(lastIndex: number(&random), lastTerm: number(&random), transfer: random.chance(0.5)),
          .voteResponse(granted: random.chance(0.5)),
          .append(prevIndex: number(&random), prevTerm: number(&random), entries: entries, commit: number(&random)),
          .appendResponse(
            index: number(&random), reject: random.chance(0.5), hintIndex: number(&random), hintTerm: number(&random)),
          .heartbeat(commit: number(&random), readSequence: number(&random)),
          .heartbeatResponse(readSequence: number(&random)),
          .snapshotChunk(
            metadata: SnapshotMetadata(
              index: number(&random), term: number(&random), configuration: RaftConfiguration(voters: Set(peers))),
            offset: number(&random), data: [1, 2], done: random.chance(0.5), totalLength: number(&random),
            checksum: UInt32(truncatingIfNeeded: number(&random))),
          .snapshotChunkResponse(index: number(&random), nextOffset: number(&random)),
          .timeoutNow,
          .readIndex(context: [1]),
          .readIndexResponse(index: number(&random), context: [2]),
        ]
        let body = bodies[random.below(bodies.count)]
        c.cores[NodeID("n1")]!.step(RaftMessage(from: from, to: NodeID("n1"), term: term, body: body))
        c.process(NodeID("n1"))
        c.dropQueued()
        if random.chance(0.1) { c.tick("n1", times: 3) }
      }
      #expect(c["n1"].commitIndex <= c["n1"].lastIndex)
    }
  }
}
