// ClusterLog: how anything on a node gets a command into the replicated log. On the leader it
// proposes; on a follower it forwards to the leader over the peer control channel; with no leader
// it waits a bounded time. Every answer comes only once the command is applied on this node.

import Foundation
import Logging
import TealAPI
import TealCluster
import TealConsensus
import TealRaft
import TealWire

/// Why a submission failed, in the terms the API maps to HTTP.
public enum SubmitError: Error, Sendable, Hashable, CustomStringConvertible {
  /// No leader could be reached within the write timeout; nothing was applied. 503 + Retry-After.
  case noLeader(String)
  /// The command may or may not have been applied (the leader was lost mid-way). A retry with the
  /// same idempotency key is safe. 503.
  case outcomeUnknown(String)
  /// Refused for good: too large, or the node is stopping.
  case refused(String)

  public var description: String {
    switch self {
    case .noLeader(let reason): "no leader is available: \(reason)"
    case .outcomeUnknown(let reason): "the write's outcome is unknown: \(reason)"
    case .refused(let reason): reason
    }
  }
}

/// The node's gateway to the replicated log (see the file comment).
///
/// Bounds: at most ``maximumForwardedInFlight`` proposals forwarded by other nodes are in flight
/// on the leader at once (more are answered "retry later"); at most ``maximumPendingForwards`` of
/// this node's own forwards wait for an answer; a submission gives up after ``writeTimeout``.
public actor ClusterLog {
  public nonisolated let node: NodeID
  let raft: RaftNode<ClusterStateMachine>
  let observer: AppliedIndexObserver
  private let sender: any PeerMessageSender
  /// Every wait and timeout of a submission is measured on it (a manual clock under TealNodeTesting).
  private let clock: any ControlClock
  private let logger: Logger
  private let metrics: NodeMetrics

  /// How long a write waits for a leader and its commit before it fails (the API answers 503).
  public let writeTimeout: Duration
  static let maximumForwardedInFlight = 4096
  static let maximumPendingForwards = 16_384

  private var leadership: LeadershipState
  private var leadershipWaiters: [CheckedContinuation<Void, Never>] = []
  private var pending: [UInt64: CheckedContinuation<ForwardOutcome, Never>] = [:]
  private var nextRequestID: UInt64 = 0
  private var forwardedInFlight = 0
  private var leadershipTask: Task<Void, Never>?
  private var isStopped = false
  /// Where traffic reports from peers (and this node's own, while it leads) go.
  private var trafficSink: (@Sendable (NodeID, [TrafficSample]) async -> Void)?

  init(
    node: NodeID, raft: RaftNode<ClusterStateMachine>, observer: AppliedIndexObserver, sender: any PeerMessageSender,
    clock: any ControlClock, writeTimeout: Duration = .seconds(5), logger: Logger, metrics: NodeMetrics = .none
  ) {
    self.metrics = metrics
    self.node = node
    self.raft = raft
    self.observer = observer
    self.sender = sender
    self.clock = clock
    self.writeTimeout = writeTimeout
    self.logger = logger
    self.leadership = LeadershipState(role: .follower, leader: nil, term: 0, isReady: false)
  }

  /// Follows RaftNode's leadership changes until ``stop()``.
  func start() async {
    let changes = await raft.leadershipChanges()
    leadershipTask = Task { [weak self] in
      for await state in changes {
        guard let self else { return }
        await self.leadershipChanged(state)
      }
    }
  }

  func stop() {
    isStopped = true
    leadershipTask?.cancel()
    for (_, continuation) in pending { continuation.resume(returning: .refused("this node is stopping")) }
    pending = [:]
    wakeLeadershipWaiters()
  }

  private func leadershipChanged(_ state: LeadershipState) {
    if state.leader != leadership.leader || state.term != leadership.term && state.leader != nil {
      metrics.count("teal_raft_leader_changes_total")
    }
    leadership = state
    wakeLeadershipWaiters()
  }

  private func wakeLeadershipWaiters() {
    let waiters = leadershipWaiters
    leadershipWaiters = []
    for waiter in waiters { waiter.resume() }
  }

  /// The latest leadership this node knows of.
  public var currentLeadership: LeadershipState { leadership }

  // MARK: - Submitting

  /// Stamps `command` with this node's `now` and term, gets it committed (proposing here or
  /// forwarding to the leader) and returns its result once this node has applied it.
  ///
  /// A command without an idempotency key is not retried after an unknown outcome; one with a key
  /// is (ClusterState answers the retry with the first result).
  public func submit(_ command: ClusterCommand, idempotency: IdempotencyRecordKey? = nil) async throws(SubmitError)
    -> ClusterResult
  {
    let deadline = clock.monotonicNow.advanced(by: writeTimeout)
    var lastProblem = "no leader is known"
    while !isStopped {
      let remaining = clock.monotonicNow.duration(to: deadline)
      guard remaining > .zero else { break }
      let state = leadership
      let entry = ClusterEntry(
        stamp: CommandStamp(now: clock.now(), node: node, term: state.term), idempotency: idempotency,
        command: command)
      let bytes = entry.encode()
      let outcome: ForwardOutcome
      if state.role == .leader {
        outcome = await proposeLocally(bytes)
      } else if let leader = state.leader, leader != node {
        outcome = await forward(bytes, to: leader, timeout: min(remaining, .seconds(2)))
        metrics.count("teal_api_forwarded_total", [("outcome", NodeMetrics.outcome(outcome))])
      } else {
        await waitForLeadershipChange(upTo: min(remaining, .milliseconds(200)))
        continue
      }
      switch outcome {
      case .applied(let index, let result):
        let left = clock.monotonicNow.duration(to: deadline)
        guard await observer.wait(forIndex: index, timeout: max(left, .milliseconds(500))) else {
          throw .outcomeUnknown("committed at index \(index) but not yet applied on \(node)")
        }
        return try decodeResult(result)
      case .notLeader(let leader):
        lastProblem = "\(state.leader.map(\.description) ?? "the leader") no longer leads"
        if leader == nil || leader == state.leader { await waitForLeadershipChange(upTo: .milliseconds(100)) }
      case .retryLater(let reason):
        lastProblem = reason
        try? await clock.sleep(for: .milliseconds(20))
      case .outcomeUnknown(let reason):
        guard idempotency != nil || command.isIdempotentFact else { throw .outcomeUnknown(reason) }
        lastProblem = reason
        await waitForLeadershipChange(upTo: .milliseconds(100))
      case .refused(let reason):
        throw .refused(reason)
      }
    }
    if isStopped { throw .refused("this node is stopping") }
    throw .noLeader("\(lastProblem) (waited \(writeTimeout))")
  }

  /// Proposes a command derived from leader-only state (placements, liveness), stamped with the
  /// term this node leads in. Never forwarded and never retried in another term: if leadership
  /// moved, ClusterState would reject it anyway.
  func proposeAsLeader(_ command: ClusterCommand, term: UInt64) async throws(SubmitError) -> ClusterResult {
    guard leadership.role == .leader, leadership.term == term else {
      throw .refused("no longer the leader of term \(term)")
    }
    let entry = ClusterEntry(stamp: CommandStamp(now: clock.now(), node: node, term: term), command: command)
    switch await proposeLocally(entry.encode()) {
    case .applied(_, let result): return try decodeResult(result)
    case .notLeader, .refused: throw .refused("no longer the leader of term \(term)")
    case .retryLater(let reason): throw .noLeader(reason)
    case .outcomeUnknown(let reason): throw .outcomeUnknown(reason)
    }
  }

  private func decodeResult(_ bytes: [UInt8]) throws(SubmitError) -> ClusterResult {
    do { return try ClusterResult(decoding: bytes) } catch {
      preconditionFailure("a result this node's state machine encoded does not decode: \(error)")
    }
  }

  private func proposeLocally(_ bytes: [UInt8]) async -> ForwardOutcome {
    let outcome = await proposeToRaft(bytes)
    metrics.count("teal_raft_proposals_total", [("outcome", NodeMetrics.outcome(outcome))])
    return outcome
  }

  private func proposeToRaft(_ bytes: [UInt8]) async -> ForwardOutcome {
    do {
      let reply = try await raft.propose(bytes)
      let applied: AppliedResult
      do { applied = try AppliedResult(decoding: reply) } catch {
        preconditionFailure("RaftNode returned a result the state machine did not write: \(error)")
      }
      return .applied(index: applied.index, result: applied.result)
    } catch {
      switch error {
      case .notLeader(let leader): return .notLeader(leader: leader)
      case .retryLater(let reason): return .retryLater(reason)
      case .proposalDropped: return .retryLater("the proposal was replaced by a new leader's entry")
      case .outcomeUnknown, .timedOut: return .outcomeUnknown(error.description)
      case .stopped, .storage, .invalidPersistentState, .stateMachine, .invalidRequest:
        return .refused(error.description)
      }
    }
  }

  private func waitForLeadershipChange(upTo timeout: Duration) async {
    let clock = clock
    let timer = Task { [weak self] in
      try? await clock.sleep(for: timeout)
      await self?.wakeLeadershipWaiters()
    }
    await withCheckedContinuation { leadershipWaiters.append($0) }
    timer.cancel()
  }

  // MARK: - Forwarding

  private func forward(_ entry: [UInt8], to leader: NodeID, timeout: Duration) async -> ForwardOutcome {
    guard pending.count < Self.maximumPendingForwards else {
      return .retryLater("too many writes waiting for the leader")
    }
    nextRequestID += 1
    let id = nextRequestID
    do {
      try await sender.send(ControlMessage.proposeRequest(id: id, entry: entry).encoded(), on: .control, to: leader)
    } catch {
      return .retryLater("cannot reach the leader \(leader): \(error)")
    }
    let clock = clock
    let timer = Task { [weak self] in
      try? await clock.sleep(for: timeout)
      await self?.complete(id, with: .outcomeUnknown("no answer from the leader \(leader) within \(timeout)"))
    }
    defer { timer.cancel() }
    return await withCheckedContinuation { pending[id] = $0 }
  }

  private func complete(_ id: UInt64, with outcome: ForwardOutcome) {
    pending.removeValue(forKey: id)?.resume(returning: outcome)
  }

  /// Handles one control-channel message from `peer` (its id proven by its certificate).
  func receive(from peer: NodeID, payload: [UInt8]) {
    let message: ControlMessage
    do { message = try ControlMessage(decoding: payload) } catch {
      logger.warning("dropped an undecodable control message", metadata: ["from": "\(peer)", "error": "\(error)"])
      return
    }
    switch message {
    case .trafficReport(let bytes):
      guard let samples = try? TealJSON.decode([TrafficSample].self, from: Data(bytes)) else {
        logger.debug("dropped an undecodable traffic report", metadata: ["from": "\(peer)"])
        return
      }
      deliverTraffic(samples, from: peer)
    case .proposeResponse(let id, let outcome):
      complete(id, with: outcome)
    case .proposeRequest(let id, let entry):
      guard forwardedInFlight < Self.maximumForwardedInFlight else {
        reply(.proposeResponse(id: id, outcome: .retryLater("the leader is overloaded")), to: peer)
        return
      }
      guard let decoded = try? ClusterEntry(decoding: entry) else {
        reply(.proposeResponse(id: id, outcome: .refused("the forwarded entry does not decode")), to: peer)
        return
      }
      // Leader decisions are made and proposed by the leader itself, never forwarded.
      guard !decoded.command.isLeaderOnly else {
        reply(.proposeResponse(id: id, outcome: .refused("leader-only commands cannot be forwarded")), to: peer)
        return
      }
      guard leadership.role == .leader else {
        reply(.proposeResponse(id: id, outcome: .notLeader(leader: leadership.leader)), to: peer)
        return
      }
      forwardedInFlight += 1
      Task {
        let outcome = await self.proposeLocally(entry)
        self.finishForwarded(id: id, outcome: outcome, to: peer)
      }
    }
  }

  // MARK: - Traffic reports

  /// Sets the receiver of traffic reports (the deployment controller).
  func setTrafficSink(_ sink: @escaping @Sendable (NodeID, [TrafficSample]) async -> Void) { trafficSink = sink }

  /// Sends this node's counters to the leader (or hands them to the local sink while this node leads).
  func reportTraffic(_ samples: [TrafficSample]) async {
    guard let leader = leadership.leader else { return }
    if leader == node {
      deliverTraffic(samples, from: node)
      return
    }
    guard let bytes = try? Array(TealJSON.encode(samples)) else { return }
    do { try await sender.send(ControlMessage.trafficReport(samples: bytes).encoded(), on: .control, to: leader) } catch
    {
      logger.debug("traffic report not sent", metadata: ["to": "\(leader)", "error": "\(error)"])
    }
  }

  private func deliverTraffic(_ samples: [TrafficSample], from peer: NodeID) {
    guard leadership.role == .leader, let sink = trafficSink else { return }
    Task { await sink(peer, samples) }
  }

  private func finishForwarded(id: UInt64, outcome: ForwardOutcome, to peer: NodeID) {
    forwardedInFlight -= 1
    reply(.proposeResponse(id: id, outcome: outcome), to: peer)
  }

  private func reply(_ message: ControlMessage, to peer: NodeID) {
    let sender = sender
    let logger = logger
    Task {
      do { try await sender.send(message.encoded(), on: .control, to: peer) } catch {
        logger.debug("control reply not sent", metadata: ["to": "\(peer)", "error": "\(error)"])
      }
    }
  }
}

extension ClusterCommand {
  /// Whether applying the command twice has the effect of applying it once: node reports restate a
  /// fact, so a report whose outcome is unknown may simply be sent again.
  var isIdempotentFact: Bool {
    switch self {
    case .announceNode, .taskReports, .routesApplied, .taskStopped, .drainNode, .hookAnswered: true
    default: false
    }
  }
}
