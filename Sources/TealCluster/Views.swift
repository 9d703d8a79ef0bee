// Read views for the HTTP API (NODE-CONTRACT.md): plain values computed from the state, in a
// defined order. TealAPI owns the JSON bodies; the node maps these onto them.

import TealDeploy
import TealWire

/// A service in the list view.
public struct ClusterServiceSummary: Hashable, Sendable {
  public var name: String
  public var desiredCount: Int
  /// Tasks meant to run whose process runs.
  public var runningCount: Int
  /// Of those, the healthy ones.
  public var healthyCount: Int
  public var currentRevision: RevisionID
  public var productionPort: Int
  public var testPort: Int
  /// Being deleted: its tasks drain, then it disappears.
  public var deleting: Bool
}

/// A service in the detail view.
public struct ClusterServiceDetail: Hashable, Sendable {
  public var summary: ClusterServiceSummary
  /// Oldest first.
  public var revisions: [ClusterRevision]
  /// In placement order.
  public var tasks: [ClusterTask]
  public var routes: ServiceRoutes
}

/// A node as the cluster view shows it.
public struct ClusterNodeView: Hashable, Sendable {
  public var info: NodeInfo
  public var liveness: NodeLiveness
  public var incarnation: UInt64
  public var draining: Bool
  /// Tasks placed on it (any desired state).
  public var taskCount: Int
  public var livenessChangedAt: LogTime
}

extension ClusterState {
  /// Most events one `events(...)` call returns.
  public static let maximumEventPage = 1000

  /// Every service, by name.
  public func serviceSummaries() -> [ClusterServiceSummary] {
    services.keys.sorted().compactMap { serviceSummary($0) }
  }

  public func serviceSummary(_ name: String) -> ClusterServiceSummary? {
    guard let service = services[name] else { return nil }
    let active = tasks(service: name).filter { $0.desired == .running && $0.state == .running }
    return ClusterServiceSummary(
      name: name, desiredCount: service.desiredCount, runningCount: active.count,
      healthyCount: active.filter(\.healthy).count, currentRevision: service.currentRevisionID,
      productionPort: service.productionPort, testPort: service.testPort, deleting: service.deleting)
  }

  public func serviceDetail(_ name: String) -> ClusterServiceDetail? {
    guard let service = services[name], let summary = serviceSummary(name) else { return nil }
    return ClusterServiceDetail(
      summary: summary, revisions: service.revisions, tasks: tasks(service: name), routes: service.routes)
  }

  /// Tasks, optionally only of `service` and/or on `node`, in placement order (by sequence).
  public func tasks(service: String? = nil, node: NodeID? = nil) -> [ClusterTask] {
    let candidates = service.map { taskIDs(of: $0).compactMap { tasks[$0] } } ?? Array(tasks.values)
    return candidates.filter { node == nil || $0.node == node }.sorted { $0.sequence < $1.sequence }
  }

  /// Events in log order, optionally only of `service`, at most `limit` (capped at
  /// `maximumEventPage`). Without `after`: the newest matching events (the tail, as `teal events`
  /// shows it). With `after`: the oldest matching events whose log index is above it, so a reader
  /// follows the history by passing the last index it saw.
  public func events(service: String? = nil, after: UInt64? = nil, limit: Int = maximumEventPage) -> [ClusterEvent] {
    let cap = max(0, min(limit, Self.maximumEventPage))
    let matching = history.events.filter { (service == nil || $0.service == service) && $0.index > (after ?? 0) }
    return after == nil ? Array(matching.suffix(cap)) : Array(matching.prefix(cap))
  }

  /// Whether every node committed up has reported `generation` (or a later one) of `service`'s
  /// routes applied, with the targets it removed drained: the stop rule's condition.
  public func everyLiveNodeApplied(generation: UInt64, of service: String) -> Bool {
    nodes.values.allSatisfy { !$0.isUp || ($0.routesApplied[service] ?? 0) >= generation }
  }

  /// Every known node, by id.
  public func nodeViews() -> [ClusterNodeView] {
    var taskCounts: [String: Int] = [:]
    for task in tasks.values { taskCounts[task.node.rawValue, default: 0] += 1 }
    return nodes.keys.sorted().compactMap { id in
      guard let node = nodes[id] else { return nil }
      return ClusterNodeView(
        info: node.info, liveness: node.liveness, incarnation: node.incarnation, draining: node.draining,
        taskCount: taskCounts[id] ?? 0, livenessChangedAt: node.livenessChangedAt)
    }
  }

  /// The node's record, if it announced itself.
  public func node(_ id: NodeID) -> ClusterNode? { nodes[id.rawValue] }

  /// Nodes committed up, by id.
  public var upNodes: [NodeID] { nodes.keys.sorted().compactMap { nodes[$0].flatMap { $0.isUp ? $0.id : nil } } }

  /// Tasks the node at `node` must run or stop (its task reconciler's input), by sequence.
  public func tasks(on node: NodeID) -> [ClusterTask] { tasks(service: nil, node: node) }
}
