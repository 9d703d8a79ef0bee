import TealWire
import Testing

@testable import TealRaft

/// Issue 10, items 2, 4 and 6: what a Ready costs, and the bounds on uncommitted and in-flight data.
@Suite struct BoundsTests {
  /// Issue 10, item 2: a Ready that only moves the commit index needs no sync (etcd's MustSync);
  /// one committed proposal costs one synced Ready per node.
  @Test func aReadyThatOnlyMovesTheCommitIndexNeedsNoSync() throws {
    var c = TestCluster(["n1", "n2", "n3"])
    c.campaign("n1")
    c.runTicks(3)
    var synced: [NodeID: Int] = [:]
    var commitOnly = 0
    _ = try c.cores[NodeID("n1")]!.propose([1])
    var queue: [NodeID] = [NodeID("n1")]
    // Runs each node's Ready loop by hand (as TestCluster.process does) to look at every Ready.
    while let id = queue.first {
      queue.removeFirst()
      var core = c.cores[id]!
      while true {
        let ready = core.ready()
        if ready.isEmpty { break }
        let changesTermOrVote = ready.hardState.map { $0.term != core.term || $0.vote != core.vote } ?? false
        #expect(
          ready.mustSync == (ready.snapshot != nil || !ready.entries.isEmpty || changesTermOrVote),
          "mustSync \(ready.mustSync) for \(ready.entries.count) entries, hard state \(String(describing: ready.hardState))"
        )
        if ready.mustSync { synced[id, default: 0] += 1 }
        if !ready.mustSync && ready.hardState != nil { commitOnly += 1 }
        for m in ready.messages + ready.messagesAfterPersist {
          c.cores[m.to]!.step(m)
          if !queue.contains(m.to) { queue.append(m.to) }
        }
        core.advance(ready)
      }
      c.cores[id] = core
      if queue.isEmpty { break }
    }
    #expect(c["n3"].commitIndex == c["n1"].lastIndex)
    #expect(synced == [NodeID("n1"): 1, NodeID("n2"): 1, NodeID("n3"): 1])
    #expect(commitOnly >= 3, "the commit index moved on every node without a sync")
  }

  /// Issue 10, item 6: the leader refuses a proposal that would take its uncommitted command bytes
  /// over `maxUncommittedBytes`, with a retryable error naming the limit; one proposal always fits
  /// when nothing is uncommitted.
  @Test func theLeaderRefusesProposalsBeyondItsUncommittedBytes() throws {
    var options = TestCluster.defaultOptions()
    options.maxUncommittedBytes = 100
    var c = TestCluster(["n1", "n2", "n3"], options: options)
    c.campaign("n1")
    c.runTicks(3)
    c.isolate("n1")
    try c.propose("n1", String(repeating: "a", count: 60))
    #expect(throws: RaftError.uncommittedLimit(bytes: 60, limit: 100)) {
      try c.propose("n1", String(repeating: "b", count: 41))
    }
    #expect(RaftError.uncommittedLimit(bytes: 60, limit: 100).description.contains("maxUncommittedBytes (100)"))
    try c.propose("n1", String(repeating: "c", count: 40))
    #expect(c["n1"].uncommittedBytes == 100)
    c.heal()
    c.runTicks(4 * options.heartbeatTicks)
    #expect(c["n1"].commitIndex == c["n1"].lastIndex)
    #expect(c["n1"].uncommittedBytes == 0)
    try c.propose("n1", String(repeating: "d", count: 150))  // over the limit, but nothing else is uncommitted
    #expect(c["n1"].uncommittedBytes == 150)
    c.stabilize()
    #expect(c["n1"].uncommittedBytes == 0)
  }

  /// Issue 10, item 6: the flow-control window is bounded in bytes as well as in messages.
  @Test func theInflightWindowIsBoundedInBytes() throws {
    var options = TestCluster.defaultOptions()
    options.maxEntriesPerAppend = 1
    options.maxInflightBytes = 1_000
    var c = TestCluster(["n1", "n2", "n3"], options: options)
    c.campaign("n1")
    c.runTicks(3)
    for i in 0..<10 { try c.propose("n1", String(repeating: "\(i)", count: 300)) }
    let toN2 = c.queue.filter {
      if $0.to == NodeID("n2"), case .append(_, _, let entries, _) = $0.body { !entries.isEmpty } else { false }
    }
    // 3 appends of 316 bytes stay below 1,000; the 4th is sent, the 5th waits for acknowledgements.
    #expect(toN2.count == 4)
    c.stabilize()
    #expect(c["n2"].lastIndex == c["n1"].lastIndex)
    #expect(c["n1"].commitIndex == c["n1"].lastIndex)
  }

  /// Issue 10, item 4: the leader keeps no more tail than its healthy followers need (at most
  /// `compactionTailEntries`); other nodes keep `compactionTailEntries` entries.
  @Test func compactionTailFollowsTheOptionAndTheFollowers() throws {
    var options = TestCluster.defaultOptions()
    options.compactionTailEntries = 3
    var c = TestCluster(["n1", "n2", "n3"], options: options)
    c.campaign("n1")
    c.runTicks(3)
    for i in 0..<10 { try c.propose("n1", "x\(i)") }
    c.stabilize()
    let applied = c["n1"].appliedIndex
    // Every follower holds everything: the leader compacts up to the snapshot.
    _ = try c.cores[NodeID("n1")]!.compact(upTo: applied, snapshotData: [])
    #expect(c["n1"].firstIndex == applied + 1)
    // A follower keeps the tail.
    _ = try c.cores[NodeID("n2")]!.compact(upTo: c["n2"].appliedIndex, snapshotData: [])
    #expect(c["n2"].firstIndex == c["n2"].appliedIndex - 3 + 1)
    #expect(c["n2"].snapshot?.metadata.index == c["n2"].appliedIndex)
    // A follower far behind does not hold the leader's log beyond the tail.
    c.cut.insert([NodeID("n1"), NodeID("n3")])
    for i in 0..<10 { try c.propose("n1", "y\(i)") }
    c.stabilize()
    let applied2 = c["n1"].appliedIndex
    _ = try c.cores[NodeID("n1")]!.compact(upTo: applied2, snapshotData: [])
    #expect(c["n1"].firstIndex == applied2 - 3 + 1)
    c.heal()
    c.runTicks(4 * options.heartbeatTicks)
    #expect(c.installedSnapshots[NodeID("n3")]?.last?.index == applied2)
    #expect(c["n3"].lastIndex == c["n1"].lastIndex)
    for id in c.ids { c.cores[id]!.checkInvariants() }
  }
}
