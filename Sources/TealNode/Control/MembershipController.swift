// The leader's membership controller: turns the membership change recorded in ClusterState (an
// operator's POST or DELETE /v1/cluster/members) into Raft configuration changes, one step at a
// time, and commits `finishMemberChange` once Raft's committed configuration shows the result. A new
// leader finds the change in ClusterState and its progress in Raft's configuration, and resumes.

import Logging
import TealCluster
import TealConsensus
import TealRaft
import TealWire

/// Drives the change in flight (see the file comment). The decisions are ``nextStep(for:committed:latest:leader:)``'s
/// (pure); this actor only performs them.
///
/// Adding: `addLearner` → (the learner receives a snapshot and entries) → `promote` once RaftCore
/// says it caught up (within `RaftOptions.learnerCatchUpLag` entries) → finish. Removing: the leader
/// that is asked to remove itself hands leadership to the most up-to-date other voter first (the new
/// leader then makes the change); otherwise `remove` → finish. Removing the last voter finishes with
/// an error instead. While a configuration entry is uncommitted nothing else is proposed.
actor MembershipController {
  private let node: NodeID
  private let log: any ProposalSink
  private let logger: Logger

  init(node: NodeID, log: any ProposalSink, logger: Logger) {
    self.node = node
    self.log = log
    self.logger = logger
  }

  /// What the leader does next for `change`.
  enum Step: Equatable {
    /// Nothing now (a configuration entry is uncommitted, or the learner is catching up).
    case wait
    case propose(ConfigChange)
    /// This leader is the member to remove: hand leadership away first.
    case transferLeadership
    /// The change is complete (`nil`) or cannot be made (the reason).
    case finish(error: String?)
  }

  static func nextStep(
    for request: MemberChangeRequest, committed: RaftConfiguration, latest: RaftConfiguration, leader: NodeID
  ) -> Step {
    let target = request.node
    switch request {
    case .add:
      if committed.voters.contains(target) { return .finish(error: nil) }
      if latest != committed { return .wait }
      return committed.learners.contains(target) ? .propose(.promote(target)) : .propose(.addLearner(target))
    case .remove:
      if !committed.members.contains(target) && !latest.members.contains(target) { return .finish(error: nil) }
      if latest != committed { return .wait }
      if committed.voters == [target] {
        return .finish(error: "cannot remove \(target): it is the last voter (a cluster keeps at least one)")
      }
      if target == leader { return .transferLeadership }
      return .propose(.remove(target))
    }
  }

  /// One step of the change in flight, if any, as the leader of `term`.
  func pass(term: UInt64) async {
    let state = await log.localState()
    guard let change = state.membership.change else { return }
    let raft = await log.raftMembership()
    let committed = raft.committed
    let latest = raft.latest
    let step = Self.nextStep(for: change.request, committed: committed, latest: latest, leader: node)
    switch step {
    case .wait:
      return
    case .finish(let error):
      do {
        _ = try await log.proposeAsLeader(.finishMemberChange(node: change.request.node, error: error), term: term)
        logger.notice(
          "membership change finished",
          metadata: ["change": "\(change.request)", "error": "\(error ?? "-")", "configuration": "\(committed)"])
      } catch {
        logger.debug("finishMemberChange not committed", metadata: ["error": "\(error)"])
      }
    case .transferLeadership:
      logger.notice("handing leadership away before this node is removed")
      do { try await log.transferLeadership(to: nil) } catch {
        logger.warning("leadership not transferred", metadata: ["error": "\(error)"])
      }
    case .propose(let configChange):
      // RaftCore promotes a learner within `learnerCatchUpLag` entries of the leader's last index,
      // which a learner that never answered (match 0) meets while the log is short: it must also
      // have acknowledged the entry that made it a learner (the latest configuration entry).
      if case .promote(let learner) = configChange {
        let acknowledged = await log.replicatedIndex(of: learner) ?? 0
        guard acknowledged >= max(1, raft.latestIndex) else {
          logger.debug("learner has acknowledged nothing yet", metadata: ["learner": "\(learner)"])
          return
        }
      }
      do {
        try await log.proposeConfigChange(configChange)
        logger.notice("membership: configuration changed", metadata: ["change": "\(configChange)"])
      } catch {
        if case .invalidRequest(let reason) = error {
          if case .promote = configChange {
            // The learner has not caught up yet (the only refusal of a promotion of a learner).
            logger.debug("learner not caught up yet", metadata: ["reason": "\(reason)"])
            return
          }
          _ = try? await log.proposeAsLeader(.finishMemberChange(node: change.request.node, error: reason), term: term)
          return
        }
        logger.debug("membership step not taken", metadata: ["change": "\(configChange)", "error": "\(error)"])
      }
    }
  }
}
