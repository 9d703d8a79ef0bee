import TealDeploy
import TealWire
import Testing

@testable import TealCluster

@Suite struct SessionTests {
  static func register(_ log: inout Log) -> UInt64 {
    guard case .sessionRegistered(let clientID) = log.ok(.registerSession) else {
      preconditionFailure("registerSession did not answer sessionRegistered")
    }
    return clientID
  }

  @Test func sessionIdIsTheRegistrationIndex() {
    var log = Log()
    log.ok(.createService(makeSpec()))
    #expect(Self.register(&log) == 2)
  }

  @Test func retriedSequenceGetsTheFirstAnswerAndAppliesOnce() {
    var log = Log()
    let client = Self.register(&log)
    let first = log.apply(.createService(makeSpec()), session: ClientSessionStamp(clientID: client, sequence: 1))
    #expect(first.isOK)
    let events = log.state.history.count
    #expect(log.apply(.createService(makeSpec()), session: ClientSessionStamp(clientID: client, sequence: 1)) == first)
    #expect(log.state.history.count == events)
    #expect(
      log.apply(
        .scaleService(service: "web", desiredCount: 1), session: ClientSessionStamp(clientID: client, sequence: 2)
      )
      .isOK)
    guard
      case .rejected(let stale) = log.apply(
        .scaleService(service: "web", desiredCount: 9), session: ClientSessionStamp(clientID: client, sequence: 1))
    else {
      Issue.record("an older sequence applied")
      return
    }
    #expect(stale.code == .staleSequence)
    #expect(log.state.services["web"]?.desiredCount == 1)
  }

  @Test func unknownOrIdleSessionIsRefusedNotForgottenSilently() {
    var log = Log(state: ClusterState(sessionIdleMilliseconds: 60_000))
    guard
      case .rejected(let unknown) = log.apply(
        .createService(makeSpec()), session: ClientSessionStamp(clientID: 77, sequence: 1))
    else {
      Issue.record("a command of an unregistered session applied")
      return
    }
    #expect(unknown.code == .unknownSession)
    #expect(log.state.services.isEmpty)
    let client = Self.register(&log)
    log.advance(milliseconds: 60_000)
    guard
      case .rejected(let idle) = log.apply(
        .createService(makeSpec()), session: ClientSessionStamp(clientID: client, sequence: 1))
    else {
      Issue.record("a command of an idle session applied")
      return
    }
    #expect(idle.code == .unknownSession)
    #expect(log.state.sessions.count == 0)
  }

  @Test func sessionTableEvictsTheLeastRecentlyUsed() {
    var log = Log(state: ClusterState(sessionCapacity: 2))
    let a = Self.register(&log)
    let b = Self.register(&log)
    log.ok(.createService(makeSpec()))
    log.apply(.scaleService(service: "web", desiredCount: 1), session: ClientSessionStamp(clientID: a, sequence: 1))
    _ = Self.register(&log)  // evicts b, used least recently
    #expect(log.state.sessions.session(a, now: log.state.logTime) != nil)
    #expect(log.state.sessions.session(b, now: log.state.logTime) == nil)
    #expect(log.state.sessions.count == 2)
  }

  @Test func conformsToTheByteStateMachineShape() throws {
    var state = ClusterState()
    let entry = ClusterEntry(
      stamp: CommandStamp(now: LogTime(millisecondsSinceEpoch: 5), node: NodeID("n1"), term: 1),
      command: .announceNode(nodeInfo("n1", 1)))
    let answer = try ClusterResult(decoding: state.apply(entry.encode(), index: 1, term: 1))
    #expect(answer == .ok(.nodeAnnounced(NodeID("n1"))))
    var other = ClusterState()
    try other.restore(from: state.snapshot())
    #expect(other.stateHash == state.stateHash)
    #expect(throws: ClusterSnapshotError.notASnapshot) { try other.restore(from: [1, 2, 3]) }
    #expect(other.stateHash == state.stateHash)  // a failed restore leaves the state as it was
  }
}
