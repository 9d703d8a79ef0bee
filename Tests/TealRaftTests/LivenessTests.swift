import TealWire
import Testing

@testable import TealRaft

/// Regression tests of liveness findings (issue 10). Each failed before its fix.
@Suite struct LivenessTests {
  /// Issue 10, item 1: with check-quorum, a healthy leader ignores higher-term (pre-)votes that are not
  /// part of a leadership transfer, also in the last heartbeat interval of its check-quorum round.
  @Test func aHealthyLeaderIgnoresHigherTermVotesThroughoutItsRound() {
    for kind in ["vote", "preVote"] {
      var c = TestCluster(["n1", "n2", "n3"])
      c.campaign("n1")
      #expect(c.leaders == [NodeID("n1")])
      let term = c["n1"].term
      // The last heartbeat interval of the round: electionTicks - 1 ticks since it became leader.
      for _ in 0..<(c.options.electionTicks - 1) { c["n1"].tick() }
      let lastIndex = c["n1"].lastIndex
      let body: RaftMessage.Body =
        kind == "vote"
        ? .vote(lastIndex: lastIndex, lastTerm: term, transfer: false)
        : .preVote(lastIndex: lastIndex, lastTerm: term)
      c.cores[NodeID("n1")]!.step(RaftMessage(from: NodeID("n3"), to: NodeID("n1"), term: term + 1, body: body))
      #expect(c["n1"].role == .leader, "a \(kind) request deposed the healthy leader")
      #expect(c["n1"].term == term)
    }
  }

  /// Issue 10, item 5: a read that reaches a new leader before its no-op commits is held and answered
  /// once the no-op commits, instead of being refused (locally) or dropped (forwarded).
  @Test func readsAtANewLeaderAreHeldUntilItsNoOpCommits() throws {
    var c = TestCluster(["n1", "n2", "n3"])
    // n1 wins the election; its no-op is not yet acknowledged.
    var guardCount = 0
    while c["n1"].role != .candidate && c["n1"].role != .leader && guardCount < 200 {
      c.tick("n1")
      guardCount += 1
      c.deliver { $0.body.isPreVoteTraffic }
    }
    for _ in 0..<2 {
      c.deliver { if case .vote = $0.body { true } else if case .voteResponse = $0.body { true } else { false } }
    }
    #expect(c["n1"].role == .leader)
    #expect(!c["n1"].isReadyLeader)
    // A local read and one forwarded by a follower, both before the no-op commits.
    try c.cores[NodeID("n1")]!.readIndex(context: [1])
    c.cores[NodeID("n2")]!.step(
      RaftMessage(
        from: NodeID("n1"), to: NodeID("n2"), term: c["n1"].term, body: .heartbeat(commit: 0, readSequence: 0)))
    c.process(NodeID("n2"))
    try c.cores[NodeID("n2")]!.readIndex(context: [2])
    c.stabilize()
    #expect(c["n1"].isReadyLeader)
    let noOp = c["n1"].termStartIndex
    #expect(c.readStates[NodeID("n1")]?.contains { $0.context == [1] && $0.index >= noOp } == true)
    #expect(c.readStates[NodeID("n2")]?.contains { $0.context == [2] && $0.index >= noOp } == true)
  }

  /// Issue 10, item 3: a heartbeat response that overtakes the acknowledgement of an append the
  /// follower is still writing neither sends the follower back to probe nor re-sends entries (every
  /// ReadIndex round sends heartbeats, so reads made this worse).
  @Test func aHeartbeatResponseOvertakingAnAppendAckDoesNotRestartReplication() throws {
    var c = TestCluster(["n1", "n2", "n3"])
    c.campaign("n1")
    c.runTicks(3)
    let n1 = NodeID("n1")
    try c.propose("n1", "a")
    try c.propose("n1", "b")
    let last = c["n1"].lastIndex
    // The followers store the entries; their acknowledgements are still on the way.
    c.deliver { $0.body.isAppend }
    for i in 0..<4 {
      try c.cores[n1]!.readIndex(context: [UInt8(i)])
      c.process(n1)
      c.deliver { $0.body.isHeartbeatTraffic }
    }
    c.deliver { $0.body.isHeartbeatTraffic }
    for follower in ["n2", "n3"] {
      #expect(c["n1"].replication(of: NodeID(follower))?.next == last + 1, "\(follower) was sent back to probe")
    }
    #expect(!c.queue.contains { $0.body.carriesEntries }, "entries were re-sent")
    c.stabilize()
    #expect(c["n1"].commitIndex == last)
  }

  /// Issue 10, item 3: a lost append is noticed once it has gone unacknowledged for two heartbeat
  /// intervals (not at the first heartbeat response), and then re-sent.
  @Test func aLostAppendIsResentAfterTwoHeartbeatIntervals() throws {
    var c = TestCluster(["n1", "n2", "n3"])
    c.campaign("n1")
    c.runTicks(3)
    let n2 = NodeID("n2")
    try c.propose("n1", "a")
    c.queue.removeAll { $0.to == n2 && $0.body.isAppend }  // lost
    let heartbeat = c.options.heartbeatTicks
    var resentAt: Int?
    for tick in 1...(3 * heartbeat + 1) where resentAt == nil {
      c.tick("n1")
      for _ in 0..<3 { c.deliver { !($0.to == n2 && $0.body.isAppend) } }
      if c.queue.contains(where: { $0.to == n2 && $0.body.carriesEntries }) { resentAt = tick }
      c.queue.removeAll { $0.to == n2 && $0.body.isAppend && !$0.body.carriesEntries }
    }
    let tick = try #require(resentAt, "the lost append was never re-sent")
    #expect(tick >= 2 * heartbeat, "re-sent after \(tick) ticks, before two heartbeat intervals")
    c.stabilize()
    #expect(c["n2"].lastIndex == c["n1"].lastIndex)
  }

  /// Issue 10, item 4: compaction keeps a tail, so a follower one entry behind catches up from the
  /// log instead of being sent the snapshot.
  @Test func compactionKeepsATailForAFollowerOneEntryBehind() throws {
    var c = TestCluster(["n1", "n2", "n3"])
    c.campaign("n1")
    c.runTicks(3)
    let (n1, n3) = (NodeID("n1"), NodeID("n3"))
    for i in 0..<5 { try c.propose("n1", "x\(i)") }
    c.stabilize()
    c.cut.insert([n1, n3])
    try c.propose("n1", "late")
    c.stabilize()
    let applied = c["n1"].appliedIndex
    #expect(applied == c["n1"].lastIndex)
    #expect(c["n3"].lastIndex == applied - 1)
    _ = try c.cores[n1]!.compact(upTo: applied, snapshotData: [])
    #expect(c["n1"].snapshot?.metadata.index == applied)
    c.heal()
    c.runTicks(4 * c.options.heartbeatTicks)
    #expect(c.installedSnapshots[n3] == nil, "the follower one entry behind was sent the snapshot")
    #expect(c["n3"].lastIndex == c["n1"].lastIndex)
    #expect(c.appliedCommands("n3").last == "late")
  }
}

extension RaftMessage.Body {
  fileprivate var isAppend: Bool {
    if case .append = self { true } else { false }
  }

  fileprivate var carriesEntries: Bool {
    if case .append(_, _, let entries, _) = self { !entries.isEmpty } else { false }
  }

  fileprivate var isHeartbeatTraffic: Bool {
    switch self {
    case .heartbeat, .heartbeatResponse: true
    default: false
    }
  }

  fileprivate var isPreVoteTraffic: Bool {
    switch self {
    case .preVote, .preVoteResponse: true
    default: false
    }
  }
}
