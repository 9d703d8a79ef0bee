// The deployment invariants the scale simulation checks at every committed entry (issue 18, item 4).

import Foundation
import TealCluster
import TealDeploy
import TealNode
import TealWire

/// Checks the deployment invariants at every committed entry, as the nodes apply them.
///
/// Every node applies the same entries in the same order, so each log index is checked once, on
/// the first node that applies it (the state hashes compared at the end of a run cover the rest).
/// Checked at each entry, on the state after it:
/// - **one controller per term**: every accepted leader-only command (placement, liveness,
///   wake-ups, datapoints) of a term was proposed by one node, and none stamped with another term
///   than its entry's was accepted (fencing on apply);
/// - **weights**: every service's committed production and test weights are each 0...10,000 basis
///   points and sum to 10,000 (100 %);
/// - **blue before CLEAN_UP**: while a deployment holds its service before CLEAN_UP, blue's task
///   set serves and no task of blue that still runs is retired; the first breach is recorded per
///   deployment (a violation if that deployment ends SUCCESSFUL: ``blueStopsBeforeCleanUp``).
///
/// Bounds: at most ``maximumViolations`` violations are kept (the count goes on).
public final class ScaleInvariants: @unchecked Sendable {
  public static let maximumViolations = 100

  private let lock = NSLock()
  /// Guarded by `lock`.
  private var checkedIndex: UInt64 = 0
  private var checkedEntries = 0
  private var violationList: [String] = []
  private var violationTotal = 0
  private var controllers: [UInt64: NodeID] = [:]
  private var blueStops: [String: String] = [:]

  public init() {}

  /// Entries checked (each log index once).
  public var entries: Int { lock.withLock { checkedEntries } }

  /// The highest log index checked.
  public var index: UInt64 { lock.withLock { checkedIndex } }

  /// The violations seen so far (the first ``maximumViolations``).
  public var violations: [String] { lock.withLock { violationList } }

  public var violationCount: Int { lock.withLock { violationTotal } }

  /// The node whose leader-only commands were accepted in each term.
  public var controllerOfTerm: [UInt64: NodeID] { lock.withLock { controllers } }

  /// Per deployment id, the first time blue was drained, stopped or retired before CLEAN_UP.
  public var blueStopsBeforeCleanUp: [String: String] { lock.withLock { blueStops } }

  /// Records a violation found outside the per-entry checks (by the run's end checks).
  public func record(_ violation: String) {
    lock.withLock { noteViolation(violation) }
  }

  /// The observer to hand ``SimulatedCluster`` (`onApplied`).
  public func observe(_ node: NodeID, _ applied: AppliedEntry, _ state: ClusterState) {
    guard let entry = try? ClusterEntry(decoding: applied.bytes) else {
      // Nothing in the simulation proposes bytes that do not decode.
      lock.withLock {
        guard applied.index > checkedIndex else { return }
        checkedIndex = applied.index
        checkedEntries += 1
        noteViolation("entry \(applied.index) (term \(applied.term), applied first on \(node)) does not decode")
      }
      return
    }
    var accepted = false
    if let result = try? ClusterResult(decoding: applied.result), case .ok = result { accepted = true }
    check(entry, index: applied.index, term: applied.term, accepted: accepted, state: state, on: node)
  }

  /// Checks `entry` at log `index`, carried by a Raft entry of `term`, that `apply` accepted (or
  /// not), with `state` the state after it; an index already checked is skipped.
  public func check(
    _ entry: ClusterEntry, index: UInt64, term: UInt64, accepted: Bool, state: ClusterState, on node: NodeID
  ) {
    lock.withLock {
      guard index > checkedIndex else { return }
      checkedIndex = index
      checkedEntries += 1
      let command = entry.command
      if command.isLeaderOnly && accepted {
        if entry.stamp.term != term {
          noteViolation(
            "entry \(index): \(command.name) stamped in term \(entry.stamp.term) by \(entry.stamp.node) was accepted in an entry of term \(term)"
          )
        } else if let other = controllers[term], other != entry.stamp.node {
          noteViolation(
            "entry \(index): two controllers acted in term \(term): \(other) and \(entry.stamp.node) (\(command.name))")
        } else {
          controllers[term] = entry.stamp.node
        }
      }
      for name in Self.touchedServices(command, state) { checkService(name, state, index: index) }
    }
  }

  private func noteViolation(_ violation: String) {
    violationTotal += 1
    if violationList.count < Self.maximumViolations { violationList.append(violation) }
  }

  /// Guarded by `lock`.
  private func checkService(_ name: String, _ state: ClusterState, index: UInt64) {
    guard let service = state.services[name] else { return }
    let routes = service.routes
    for (listener, weights) in [("production", routes.production), ("test", routes.test)] {
      let sum = weights.values.reduce(0, +)
      if sum != ServiceRoutes.fullWeight || weights.values.contains(where: { $0 < 0 || $0 > ServiceRoutes.fullWeight })
      {
        let shown = weights.keys.sorted().map { "\($0): \(weights[$0] ?? 0)" }.joined(separator: ", ")
        noteViolation(
          "entry \(index): \(name)'s committed \(listener) weights sum to \(sum) basis points, not 10,000 (\(shown); routes generation \(routes.generation))"
        )
      }
    }
    guard let deployment = state.deployments[name]?.current else { return }
    let stage = deployment.stage ?? .RECONCILE_SERVICE
    guard deployment.isActive, stage < .CLEAN_UP, blueStops[deployment.id] == nil else { return }
    let blue = deployment.blue.revision
    let at = "at entry \(index), \(deployment.status) in \(stage)"
    guard let set = deployment.desired.taskSet(blue) else {
      blueStops[deployment.id] = "blue \(blue) has no task set \(at)"
      return
    }
    if set.phase != .serving {
      blueStops[deployment.id] = "blue \(blue)'s task set is \(set.phase) \(at)"
      return
    }
    for task in state.tasks(service: name) where task.revision == blue && task.desired != .running {
      if case .exited = task.state { continue }  // it died (or was lost with its node's run): nothing stopped it
      blueStops[deployment.id] =
        "blue task \(task.id) on \(task.node) is \(task.desired) (\(task.retireReason ?? "retired")) \(at)"
      return
    }
  }

  /// The services whose routes or deployments an entry may change: the ones it names, or every
  /// service for the commands that re-derive them all (liveness, announcements, drains, membership).
  static func touchedServices(_ command: ClusterCommand, _ state: ClusterState) -> [String] {
    func service(ofTask id: String) -> String { state.tasks[id]?.service ?? String(id.prefix { $0 != "." }) }
    switch command {
    case .createService(let spec): return [spec.name]
    case .registerRevision(let service, _), .scaleService(let service, _), .deleteService(let service),
      .placeTask(let service, _, _), .submitDeployment(let service, _, _), .deploymentAction(let service, _, _),
      .hookAnswered(let service, _, _), .deploymentWakeUp(let service, _), .deploymentMetrics(let service, _, _):
      return [service]
    case .taskReports(_, let reports): return Array(Set(reports.map { service(ofTask: $0.taskID) })).sorted()
    case .routesApplied(_, let generations): return generations.keys.sorted()
    case .taskStopped(_, let taskID), .retireTask(let taskID, _): return [service(ofTask: taskID)]
    case .announceNode, .drainNode, .nodeDown, .nodeUp, .requestMemberChange, .finishMemberChange:
      return state.services.keys.sorted()
    case .registerSession, .putVariable, .deleteVariable: return []
    }
  }
}
