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
}

extension RaftMessage.Body {
  fileprivate var isPreVoteTraffic: Bool {
    switch self {
    case .preVote, .preVoteResponse: true
    default: false
    }
  }
}
