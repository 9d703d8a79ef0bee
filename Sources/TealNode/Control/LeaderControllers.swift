// The leader's controllers: the service scheduler (desired counts → placements) and the membership
// reporter (gossip's view → committed liveness). Both act only while this node leads and is ready
// (its term's no-op is applied), and propose commands stamped with that term, which ClusterState
// rejects if they land in a later one.

import Logging
import TealCluster
import TealGossip
import TealMembership
import TealWire

/// Keeps every service at its desired count of tasks of its current revision, spread over the
/// nodes that ClusterState says are up; replaces tasks whose process exited or whose node is down;
/// retires extra ones. The decisions are ``Placement``'s (pure); this actor only proposes them: one
/// plan's commands together (each places or retires a different task, and the plan counted every
/// one of them in the nodes' load, so they commit as one batch in any order), then it plans again
/// from the state they produced, so nothing is placed twice.
actor ServiceScheduler {
  private let log: any ProposalSink
  private let clock: any ControlClock
  private let logger: Logger
  /// Proposals made per pass at most: a pass that hits it continues on the next wake-up.
  static let maximumProposalsPerPass = 64

  init(log: any ProposalSink, clock: any ControlClock, logger: Logger) {
    self.log = log
    self.clock = clock
    self.logger = logger
  }

  func pass(term: UInt64) async {
    var proposed = 0
    while proposed < Self.maximumProposalsPerPass {
      let state = await log.localState()
      let plan = Placement.plan(state, now: clock.now()).prefix(Self.maximumProposalsPerPass - proposed)
      guard !plan.isEmpty else { return }
      proposed += plan.count
      let allCommitted = await withTaskGroup(of: Bool.self) { group in
        for command in plan { group.addTask { await self.propose(command, term: term) } }
        var all = true
        for await committed in group where !committed { all = false }
        return all
      }
      // A refusal or a lost leadership ends the pass; the next one plans from what did apply.
      guard allCommitted else { return }
    }
  }

  private func propose(_ command: ClusterCommand, term: UInt64) async -> Bool {
    do {
      let result = try await log.proposeAsLeader(command, term: term)
      if case .rejected(let rejection) = result {
        logger.warning("placement refused", metadata: ["command": "\(command.name)", "reason": "\(rejection)"])
        return false
      }
      return true
    } catch {
      logger.debug("placement not committed", metadata: ["command": "\(command.name)", "error": "\(error)"])
      return false
    }
  }
}

/// Turns gossip's view into committed liveness. Gossip only advises; this is where a node becomes
/// down (or up) for everything that reads ClusterState, so a new leader decides the same.
///
/// Rules: a member gossip declares dead (or that left) while ClusterState has it up → `nodeDown`
/// with gossip's incarnation; a member gossip sees alive while ClusterState has it down → `nodeUp`.
/// A node ClusterState knows but gossip has never heard of, after this node has led for
/// ``unheardGracePeriod``, is down too. This node itself is always up.
actor MembershipReporter {
  private let node: NodeID
  private let log: any ProposalSink
  private let membership: any NodeGossipView
  private let clock: any ControlClock
  private let logger: Logger

  static let unheardGracePeriod: Duration = .seconds(10)

  init(node: NodeID, log: any ProposalSink, membership: any NodeGossipView, clock: any ControlClock, logger: Logger) {
    self.node = node
    self.log = log
    self.membership = membership
    self.clock = clock
    self.logger = logger
  }

  func pass(term: UInt64, leadingSince: ContinuousClock.Instant) async {
    let state = await log.localState()
    let view = await membership.snapshot()
    let gossip = Dictionary(uniqueKeysWithValues: view.members.map { ($0.id, $0) })
    for record in state.nodes.values.sorted(by: { $0.id < $1.id }) where record.id != node {
      let decision = Self.decide(
        record: record, gossip: gossip[record.id],
        ledLongEnough: leadingSince.duration(to: clock.monotonicNow) >= Self.unheardGracePeriod)
      guard let command = decision else { continue }
      logger.notice("committing liveness", metadata: ["command": "\(command.name)", "node": "\(record.id)"])
      do { _ = try await log.proposeAsLeader(command, term: term) } catch {
        logger.debug("liveness not committed", metadata: ["node": "\(record.id)", "error": "\(error)"])
        return
      }
    }
  }

  /// The liveness command gossip's view calls for, if any.
  static func decide(record: ClusterNode, gossip: Member?, ledLongEnough: Bool) -> ClusterCommand? {
    guard let member = gossip else {
      return record.isUp && ledLongEnough ? .nodeDown(node: record.id, incarnation: record.incarnation) : nil
    }
    let gone = member.status == .dead || member.leftGracefully
    if gone && record.isUp { return .nodeDown(node: record.id, incarnation: member.incarnation) }
    if member.status == .alive && !member.leftGracefully && !record.isUp {
      return .nodeUp(node: record.id, incarnation: member.incarnation)
    }
    return nil
  }
}
