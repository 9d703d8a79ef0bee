import TealAPI
import TealRaft
import TealWire
import Testing

@testable import TealCluster
@testable import TealNode

/// The API's refusals of membership requests and the leader's membership steps (pure parts).
@Suite("Membership requests and steps")
struct MembershipChecksTests {
  static let defaults = NodeConfiguration(
    node: NodeID("n1"), address: "127.0.0.1", dataDirectory: "/d", taskDirectory: "/t", certificateDirectory: "/c",
    tokenFile: "/k", peers: [NodeID("n1"): "127.0.0.1", NodeID("n2"): "127.0.0.2", NodeID("n3"): "127.0.0.3"])
  static let three = RaftConfiguration(voters: [NodeID("n1"), NodeID("n2"), NodeID("n3")])

  static func refusal(_ body: () throws -> Void) -> APIFailure? {
    do { try body() } catch { return error as? APIFailure }
    return nil
  }

  static func inFlight(_ request: MemberChangeRequest) -> ClusterState {
    var state = ClusterState()
    state.membership.change = MemberChange(request: request, index: 7, requestedAt: .zero)
    return state
  }

  @Test("an add gets the answering node's ports by default and an API URL from its address")
  func addDefaults() throws {
    let info = try MembershipChecks.add(
      MemberAddRequest(id: "n4", address: "127.0.0.4"), defaults: Self.defaults, raft: Self.three,
      state: ClusterState())
    #expect(info == NodeInfo(id: NodeID("n4"), address: "127.0.0.4", apiURL: "http://127.0.0.4:7070", peerPort: 7000))
  }

  @Test("a bad id, address or port is refused with 400 naming the field")
  func badInput() {
    for (request, field) in [
      (MemberAddRequest(id: "N 4", address: "127.0.0.4"), "id"),
      (MemberAddRequest(id: "n4", address: "host.example"), "address"),
      (MemberAddRequest(id: "n4", address: "127.0.0.4", peerPort: 0), "peerPort"),
      (MemberAddRequest(id: "n4", address: "127.0.0.4", peerPort: 7000, apiPort: 7000), "apiPort"),
    ] {
      let failure = Self.refusal {
        _ = try MembershipChecks.add(request, defaults: Self.defaults, raft: Self.three, state: ClusterState())
      }
      #expect(failure?.status.code == 400)
      #expect(failure?.field == field)
    }
    #expect(
      Self.refusal { _ = try MembershipChecks.remove("-x", raft: Self.three, state: ClusterState()) }?.status.code
        == 400)
  }

  @Test("a second change while one is in flight is refused with 409 and says which one")
  func secondChange() {
    let state = Self.inFlight(.add(NodeInfo(id: NodeID("n4"), address: "127.0.0.4", apiURL: "x", peerPort: 7000)))
    let add = Self.refusal {
      _ = try MembershipChecks.add(
        MemberAddRequest(id: "n5", address: "127.0.0.5"), defaults: Self.defaults, raft: Self.three, state: state)
    }
    #expect(add?.status.code == 409)
    #expect(add?.message.contains("in flight (add n4") == true)
    let remove = Self.refusal { _ = try MembershipChecks.remove("n2", raft: Self.three, state: state) }
    #expect(remove?.status.code == 409)
    // Removing the node being added is allowed: it aborts the add.
    #expect(throws: Never.self) { try MembershipChecks.remove("n4", raft: Self.three, state: state) }
  }

  @Test("removing the last voter is refused with 409; an unknown id with 404 listing the members")
  func lastVoterAndUnknown() {
    let one = RaftConfiguration(voters: [NodeID("n1")], learners: [NodeID("n2")])
    let last = Self.refusal { _ = try MembershipChecks.remove("n1", raft: one, state: ClusterState()) }
    #expect(last?.status.code == 409)
    #expect(last?.message.contains("last voter") == true)
    let unknown = Self.refusal { _ = try MembershipChecks.remove("n9", raft: Self.three, state: ClusterState()) }
    #expect(unknown?.status.code == 404)
    #expect(unknown?.message.contains("n1, n2, n3") == true)
    // A learner beside the last voter can go.
    #expect(throws: Never.self) { try MembershipChecks.remove("n2", raft: one, state: ClusterState()) }
  }

  @Test("a member or a removed id cannot be added (409)")
  func memberOrRemoved() {
    var state = ClusterState()
    state.membership.removed["n7"] = .zero
    for id in ["n2", "n7"] {
      let failure = Self.refusal {
        _ = try MembershipChecks.add(
          MemberAddRequest(id: id, address: "127.0.0.9"), defaults: Self.defaults, raft: Self.three, state: state)
      }
      #expect(failure?.status.code == 409)
    }
  }

  @Test("leader steps of an add: learner first, promote, then finish; nothing while an entry is uncommitted")
  func addSteps() {
    let n4 = NodeID("n4")
    let add = MemberChangeRequest.add(NodeInfo(id: n4, address: "127.0.0.4", apiURL: "x", peerPort: 7000))
    let learner = RaftConfiguration(voters: Self.three.voters, learners: [n4])
    let voter = RaftConfiguration(voters: Self.three.voters.union([n4]))
    let leader = NodeID("n1")
    #expect(
      MembershipController.nextStep(for: add, committed: Self.three, latest: Self.three, leader: leader)
        == .propose(.addLearner(n4)))
    #expect(MembershipController.nextStep(for: add, committed: Self.three, latest: learner, leader: leader) == .wait)
    #expect(
      MembershipController.nextStep(for: add, committed: learner, latest: learner, leader: leader)
        == .propose(.promote(n4)))
    #expect(
      MembershipController.nextStep(for: add, committed: voter, latest: voter, leader: leader) == .finish(error: nil))
  }

  @Test("leader steps of a removal: the leader hands leadership away first; the last voter is refused")
  func removeSteps() {
    let remove1 = MemberChangeRequest.remove(NodeID("n1"))
    #expect(
      MembershipController.nextStep(for: remove1, committed: Self.three, latest: Self.three, leader: NodeID("n1"))
        == .transferLeadership)
    #expect(
      MembershipController.nextStep(for: remove1, committed: Self.three, latest: Self.three, leader: NodeID("n2"))
        == .propose(.remove(NodeID("n1"))))
    let gone = RaftConfiguration(voters: [NodeID("n2"), NodeID("n3")])
    #expect(
      MembershipController.nextStep(for: remove1, committed: gone, latest: gone, leader: NodeID("n2"))
        == .finish(error: nil))
    let alone = RaftConfiguration(voters: [NodeID("n1")])
    guard
      case .finish(let error?) = MembershipController.nextStep(
        for: remove1, committed: alone, latest: alone, leader: NodeID("n1"))
    else {
      Issue.record("removing the last voter must finish with an error")
      return
    }
    #expect(error.contains("last voter"))
  }
}
