// The placement planner: what the leader's Service actors propose so that each service runs its
// desired count of tasks of its current revision, spread over the nodes that are up.

import TealDeploy
import TealWire

/// A pure planner over ``ClusterState``. Deterministic: the same state always gives the same plan.
///
/// Per service (in name order; services being deleted are skipped), the revisions and counts come
/// from `ClusterState.desiredTaskCounts`: the current revision at `desiredCount`, or the task sets
/// of the deployment in control. Tasks meant to run of any other revision are retired. Then per
/// wanted revision, in the deployment's order:
/// 1. A task meant to run whose process exited is retired (`retireTask`); it no longer counts. So is
///    one its restarted node reported as its previous run's (``TaskReport/previousRun``): the node
///    drains and stops it, and its replacement starts meanwhile.
/// 2. More tasks than wanted: the newest (highest sequence) are retired.
/// 3. Fewer: new tasks are placed one at a time on the eligible node (committed up, not shutting
///    down) with the fewest running-desired tasks of this revision, then the fewest such tasks of
///    all services (counting the placements planned so far), then the smallest node id.
///
/// A revision whose task has a fixed port (`task.port` not 0) gets at most one task per node: a node
/// that already runs a task of the service holding that port is not eligible.
///
/// **Crash-loop backoff.** A revision whose tasks crash (exit before they run healthy for
/// `CrashLoop.stableRunMilliseconds`; see ``CrashLoop``) gets no new task in step 3 until the
/// leader's `now` reaches `CrashLoop.holdsUntil` (the last crash's log time plus 1 s, doubling per
/// consecutive crash, at most 5 min), unless a task of it has run healthy since the last crash for
/// the stable run. Steps 1 and 2 are never held. `now` is the leader's clock; the crash time is log
/// time, so a node whose clock runs ahead of the leader's lengthens the wait by that skew.
///
/// Retired tasks are left alone (they stop through the stop rule).
/// Tasks of nodes that are down are already gone from the state (removed at `nodeDown`), so they are
/// replaced by step 3. The leader proposes the plan, waits until those entries are applied, and only
/// then plans again: planning twice against the same state would place twice.
public enum Placement {
  /// The commands for every service.
  public static func plan(_ state: ClusterState, now: LogTime) -> [ClusterCommand] {
    var load = nodeLoad(state)
    var commands: [ClusterCommand] = []
    for name in state.services.keys.sorted() { commands += plan(state, service: name, now: now, load: &load) }
    return commands
  }

  /// The commands for one service (empty if it does not exist or is being deleted).
  public static func plan(_ state: ClusterState, service name: String, now: LogTime) -> [ClusterCommand] {
    var load = nodeLoad(state)
    return plan(state, service: name, now: now, load: &load)
  }

  /// Running-desired tasks per eligible node (up, not shutting down), all services.
  private static func nodeLoad(_ state: ClusterState) -> [NodeID: Int] {
    var load: [NodeID: Int] = [:]
    for node in state.nodes.values where node.isUp && !node.draining { load[node.id] = 0 }
    for task in state.tasks.values where task.desired == .running && load[task.node] != nil {
      load[task.node, default: 0] += 1
    }
    return load
  }

  private static func plan(
    _ state: ClusterState, service name: String, now: LogTime, load: inout [NodeID: Int]
  ) -> [ClusterCommand] {
    guard let service = state.services[name], !service.deleting else { return [] }
    let wanted = state.desiredTaskCounts(of: name)
    var commands: [ClusterCommand] = []
    // Revisions nobody wants any more (a finished deployment's other side, a superseded green).
    let wantedRevisions = Set(wanted.map(\.revision))
    for task in state.tasks(service: name) where task.desired == .running && !wantedRevisions.contains(task.revision) {
      commands.append(.retireTask(taskID: task.id, reason: "revision \(task.revision) is no longer deployed"))
      load[task.node] = load[task.node].map { $0 - 1 }
    }
    for (revision, count) in wanted {
      commands += plan(state, service: service, revision: revision, count: count, now: now, load: &load)
    }
    return commands
  }

  private static func plan(
    _ state: ClusterState, service: ClusterService, revision current: RevisionID, count desiredCount: Int,
    now: LogTime, load: inout [NodeID: Int]
  ) -> [ClusterCommand] {
    let name = service.name
    let live = state.tasks(service: name).filter { $0.desired == .running && $0.revision == current }
    var commands: [ClusterCommand] = []
    var kept: [ClusterTask] = []
    for task in live {
      if case .exited(let code) = task.state {
        commands.append(.retireTask(taskID: task.id, reason: "exited with code \(code); replaced"))
        load[task.node] = load[task.node].map { $0 - 1 }
      } else if task.previousRun == true {
        // Its node restarted and drains it: replaced now, not once the node has stopped it.
        commands.append(.retireTask(taskID: task.id, reason: "its node restarted; replaced while it drains"))
        load[task.node] = load[task.node].map { $0 - 1 }
      } else {
        kept.append(task)
      }
    }
    if kept.count > desiredCount {
      for task in kept.suffix(kept.count - desiredCount).reversed() {
        commands.append(.retireTask(taskID: task.id, reason: "scaled down to \(desiredCount) tasks of \(current)"))
        load[task.node] = load[task.node].map { $0 - 1 }
      }
      return commands
    }
    var perNode: [NodeID: Int] = [:]
    for node in load.keys { perNode[node] = 0 }
    for task in kept where perNode[task.node] != nil { perNode[task.node, default: 0] += 1 }
    // A revision with a fixed port runs at most one task per node, and not beside another task of
    // the service (any revision, not yet stopped) that holds the same port.
    let fixedPort = service.revision(current.number)?.revision.spec.task.port ?? 0
    if fixedPort != 0 {
      for task in state.tasks(service: name) {
        if case .exited = task.state { continue }
        if task.revision == current || service.revision(task.revision.number)?.revision.spec.task.port == fixedPort {
          perNode[task.node] = nil
        }
      }
    }
    guard !perNode.isEmpty, !state.placementHeld(current, now: now) else { return commands }
    for _ in 0..<(desiredCount - kept.count) {
      let node = perNode.keys.min { lhs, rhs in
        (perNode[lhs] ?? 0, load[lhs] ?? 0, lhs.rawValue) < (perNode[rhs] ?? 0, load[rhs] ?? 0, rhs.rawValue)
      }
      guard let node else { break }
      commands.append(.placeTask(service: name, revision: current.number, node: node))
      perNode[node, default: 0] += 1
      if fixedPort != 0 { perNode[node] = nil }
      load[node, default: 0] += 1
    }
    return commands
  }
}
