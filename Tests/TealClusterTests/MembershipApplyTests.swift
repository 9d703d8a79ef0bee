import TealDeploy
import TealWire
import Testing

@testable import TealCluster

/// The membership rules of ClusterState.apply: one change at a time, removed ids never come back,
/// added members' addresses are replicated, a removed node's tasks and record go.
@Suite struct MembershipApplyTests {
  private func rejection(_ result: ClusterResult) -> ClusterRejection? {
    if case .rejected(let rejection) = result { return rejection }
    return nil
  }

  @Test func anAddRecordsTheMembersAddressAndIsTheChangeInFlight() {
    var log = Log()
    log.announce(3)
    #expect(log.ok(.requestMemberChange(.add(nodeInfo("n4", 4)))) == .memberChangeAccepted(node: NodeID("n4")))
    #expect(log.state.membership.change?.request == .add(nodeInfo("n4", 4)))
    #expect(log.state.memberAddress(NodeID("n4")) == nodeInfo("n4", 4))
    // Not a node of the state (placement ignores it) until it announces itself.
    #expect(log.state.nodes["n4"] == nil)
  }

  @Test func aSecondChangeWhileOneIsInFlightIsRefusedWithConflict() {
    var log = Log()
    log.announce(3)
    log.ok(.requestMemberChange(.add(nodeInfo("n4", 4))))
    for request in [MemberChangeRequest.add(nodeInfo("n5", 5)), .remove(NodeID("n2"))] {
      let refused = rejection(log.apply(.requestMemberChange(request)))
      #expect(refused?.code == .conflict)
      #expect(refused?.message.contains("in flight (add n4") == true)
    }
    #expect(log.state.membership.directory["n5"] == nil)
  }

  @Test func removingTheNodeBeingAddedAbortsTheAdd() {
    var log = Log()
    log.announce(3)
    log.ok(.requestMemberChange(.add(nodeInfo("n4", 4))))
    log.ok(.requestMemberChange(.remove(NodeID("n4"))))
    #expect(log.state.membership.change?.request == .remove(NodeID("n4")))
    log.ok(.finishMemberChange(node: NodeID("n4"), error: nil))
    #expect(log.state.membership.directory["n4"] == nil)
    #expect(log.state.wasRemoved(NodeID("n4")))
  }

  @Test func aBadAddressOrPortIsRefusedNamingTheField() {
    var log = Log()
    var bad = nodeInfo("n4", 4)
    bad.address = "127.0.0 .4"
    #expect(rejection(log.apply(.requestMemberChange(.add(bad))))?.field == "address")
    bad = nodeInfo("n4", 4)
    bad.peerPort = 70_000
    #expect(rejection(log.apply(.requestMemberChange(.add(bad))))?.field == "peerPort")
    #expect(log.state.membership.change == nil)
  }

  @Test func addingAKnownNodeIsRefused() {
    var log = Log()
    log.announce(3)
    let refused = rejection(log.apply(.requestMemberChange(.add(nodeInfo("n2", 2)))))
    #expect(refused?.code == .conflict)
    #expect(refused?.message.contains("already a member") == true)
  }

  @Test func aRemovedNodeLosesItsTasksAndRecordAndItsIdIsNeverAdmittedAgain() {
    var log = Log()
    log.announce(3)
    log.ok(.createService(makeSpec(desiredCount: 1)))
    let task = log.place("web", on: "n3")
    log.ok(.requestMemberChange(.remove(NodeID("n3"))))
    #expect(log.state.tasks[task] != nil)  // nothing happens before the leader made the change
    log.ok(.finishMemberChange(node: NodeID("n3"), error: nil))
    #expect(log.state.tasks[task] == nil)
    #expect(log.state.nodes["n3"] == nil)
    #expect(log.state.membership.change == nil)
    #expect(log.state.membership.last?.error == nil)
    #expect(log.state.invariantViolation() == nil)
    // Neither an operator's add nor the old node's own announcement brings the id back.
    #expect(rejection(log.apply(.requestMemberChange(.add(nodeInfo("n3", 3)))))?.message.contains("never") == true)
    #expect(rejection(log.apply(.announceNode(nodeInfo("n3", 3))))?.code == .conflict)
    #expect(log.state.nodes["n3"] == nil)
  }

  @Test func aFailedAddForgetsTheAddressAndRecordsWhy() {
    var log = Log()
    log.announce(3)
    log.ok(.requestMemberChange(.add(nodeInfo("n4", 4))))
    log.ok(.finishMemberChange(node: NodeID("n4"), error: "invalid membership change: n4 is already a member"))
    #expect(log.state.membership.directory["n4"] == nil)
    #expect(log.state.membership.last?.error?.contains("already a member") == true)
    #expect(!log.state.wasRemoved(NodeID("n4")))
  }

  @Test func finishIsLeaderOnlyAndIgnoredForAnotherNode() {
    var log = Log()
    log.announce(3)
    log.ok(.requestMemberChange(.remove(NodeID("n3"))))
    #expect(
      log.ok(.finishMemberChange(node: NodeID("n2"), error: nil))
        == .ignored(reason: "no membership change of n2 is in flight"))
    log.term = 2
    #expect(rejection(log.apply(.finishMemberChange(node: NodeID("n3"), error: nil), stampTerm: 1))?.code == .staleTerm)
    #expect(log.state.membership.change != nil)
  }

  @Test func membershipSurvivesASnapshot() throws {
    var log = Log()
    log.announce(3)
    log.ok(.requestMemberChange(.remove(NodeID("n3"))))
    log.ok(.finishMemberChange(node: NodeID("n3"), error: nil))
    log.ok(.requestMemberChange(.add(nodeInfo("n4", 4))))
    let restored = try ClusterState(snapshot: log.state.snapshot())
    #expect(restored == log.state)
    #expect(restored.wasRemoved(NodeID("n3")))
    #expect(restored.memberAddress(NodeID("n4")) == nodeInfo("n4", 4))
  }
}
