// The node's metrics: one registry per node (TealMetrics), the collectors that read Raft, transport,
// gossip and task snapshots at each scrape, the recorder of gossip and task events, and the fsync
// timer around the Raft log's file system. Series and bounds: Docs/OPERATIONS.md, "Metrics".

import CoreMetrics
import Foundation
import Logging
import ServiceLifecycle
import TealCluster
import TealConsensus
import TealGossip
import TealLoadBalancer
import TealMembership
import TealMetrics
import TealRaft
import TealStorage
import TealTasks
import TealTransport
import TealWire

/// What the node's parts record into. `none` records nothing (parts built without a node).
struct NodeMetrics: Sendable {
  let registry: NodeMetricsRegistry?
  let factory: any MetricsFactory

  init(registry: NodeMetricsRegistry) {
    self.registry = registry
    self.factory = registry.factory
  }

  private init() {
    self.registry = nil
    self.factory = NOOPMetricsHandler.instance
  }

  static let none = NodeMetrics()

  /// Adds `amount` to the counter `name` with `labels` (a registry lookup: not for a per-request path).
  func count(_ name: String, _ labels: [(String, String)] = [], by amount: Int64 = 1) {
    Counter(label: name, dimensions: labels, factory: self.factory).increment(by: amount)
  }

  /// Sets the gauge `name` with `labels`.
  func gauge(_ name: String, _ labels: [(String, String)] = [], _ value: Double) {
    Gauge(label: name, dimensions: labels, factory: self.factory).record(value)
  }

  /// The outcome label of a proposal or a forward.
  static func outcome(_ outcome: ForwardOutcome) -> String {
    switch outcome {
    case .applied: "applied"
    case .notLeader: "not_leader"
    case .retryLater: "retry_later"
    case .outcomeUnknown: "outcome_unknown"
    case .refused: "refused"
    }
  }

  // MARK: - Collectors

  /// Gauges read at each scrape: Raft status, peer connections (one series per committed member and
  /// direction), gossip members by state, running tasks per service (from the committed state), and
  /// the balancer's gauges.
  func installCollectors(
    node: NodeID, raft: RaftNode<ClusterStateMachine>, transport: PeerTransport, membership: MembershipService,
    log: ClusterLog, balancer: LoadBalancer
  ) {
    guard let registry else { return }
    // Counters without labels exist from the start (at 0), so a rate() has a first sample.
    for name in ["teal_raft_leader_changes_total", "teal_gossip_suspicions_total"] { self.count(name, by: 0) }
    let connections = GaugeFamily(name: "teal_transport_connections", factory: self.factory)
    let running = GaugeFamily(name: "teal_tasks_running", factory: self.factory)
    registry.addCollector {
      let status = await raft.status
      self.gauge("teal_raft_term", [], Double(status.term))
      self.gauge("teal_raft_commit_index", [], Double(status.commitIndex))
      self.gauge("teal_raft_applied_index", [], Double(status.appliedIndex))
      self.gauge("teal_raft_last_index", [], Double(status.lastIndex))
      self.gauge("teal_raft_is_leader", [], status.role == .leader ? 1 : 0)

      let committed = await raft.committedMembership
      let peers = committed.voters.union(committed.learners).subtracting([node])
      let outbound = await transport.connectedPeers()
      let inbound = await transport.inboundPeers()
      var values: [[(String, String)]] = []
      var numbers: [Double] = []
      for peer in peers.sorted() {
        values.append([("peer", peer.rawValue), ("direction", "outbound")])
        numbers.append(outbound.contains(peer) ? 1 : 0)
        values.append([("peer", peer.rawValue), ("direction", "inbound")])
        numbers.append(inbound.contains(peer) ? 1 : 0)
      }
      connections.set(zip(values, numbers).map { ($0, $1) })

      let snapshot = await membership.snapshot()
      var byState: [MemberStatus: Int] = [:]
      for member in [snapshot.myself] + snapshot.members { byState[member.status, default: 0] += 1 }
      for state in MemberStatus.allCases {
        self.gauge("teal_gossip_members", [("state", state.description)], Double(byState[state] ?? 0))
      }

      let state = await log.localState()
      var perService: [String: Int] = [:]
      for service in state.services.keys { perService[service] = 0 }
      for task in state.tasks(on: node) where task.state == .running { perService[task.service, default: 0] += 1 }
      running.set(perService.sorted { $0.key < $1.key }.map { ([("service", $0.key)], Double($0.value)) })

      balancer.collectMetrics()
    }
  }
}

/// Gauges of one name whose label sets change (peers come and go, services are deleted): a set
/// replaces them all, destroying the series no longer present.
final class GaugeFamily: @unchecked Sendable {
  private let name: String
  private let factory: any MetricsFactory
  private let lock = NSLock()
  private var gauges: [String: Gauge] = [:]

  init(name: String, factory: any MetricsFactory) {
    self.name = name
    self.factory = factory
  }

  func set(_ values: [([(String, String)], Double)]) {
    self.lock.lock()
    defer { self.lock.unlock() }
    var seen: Set<String> = []
    for (labels, value) in values {
      let key = labels.map { "\($0.0)=\($0.1)" }.joined(separator: "\u{0}")
      seen.insert(key)
      let gauge = self.gauges[key] ?? Gauge(label: self.name, dimensions: labels, factory: self.factory)
      self.gauges[key] = gauge
      gauge.record(value)
    }
    for (key, gauge) in self.gauges where !seen.contains(key) {
      gauge.destroy()
      self.gauges[key] = nil
    }
  }
}

// MARK: - Events

/// Counts gossip suspicions and task starts and exits as they happen, until graceful shutdown (it
/// never returns before: a service that returns stops the node's group).
struct MetricsEventRecorder: Service {
  let metrics: NodeMetrics
  let membership: MembershipService
  let tasks: TaskRunner
  let log: ClusterLog

  func run() async throws {
    let members = await membership.subscribe()
    let taskEvents = await tasks.events()
    await withTaskGroup(of: Void.self) { group in
      group.addTask {
        for await event in members.cancelOnGracefulShutdown() {
          if case .statusChanged(let member, let previous) = event, member.status == .suspect, previous != .suspect {
            metrics.count("teal_gossip_suspicions_total")
          }
        }
      }
      group.addTask {
        for await event in taskEvents.cancelOnGracefulShutdown() {
          let reason: String
          switch event.state {
          case .starting: reason = "start"
          case .exited(let exit):
            if exit.stopRequested {
              reason = "stopped"
            } else if case .exited(let code) = exit.termination {
              reason = code == 0 ? "exited" : "failed"
            } else {
              reason = "signalled"
            }
          default: continue
          }
          // The service from the committed state (bounded); a task it no longer knows is "unknown".
          let service = await log.localState().tasks[event.taskID]?.service ?? "unknown"
          if reason == "start" {
            metrics.count("teal_task_starts_total", [("service", service)])
          } else {
            metrics.count("teal_task_exits_total", [("service", service), ("reason", reason)])
          }
        }
      }
    }
    // A stream that ended early must not end the node (the group stops when a service returns).
    try? await gracefulShutdown()
  }
}

// MARK: - fsync latency

/// The Raft log's file system with every `fsync`/`fdatasync` timed into `teal_raft_fsync_duration_seconds`.
struct TimedFileSystem: StorageFileSystem {
  let base: any StorageFileSystem
  let timer: CoreMetrics.Timer

  init(base: any StorageFileSystem, factory: any MetricsFactory) {
    self.base = base
    self.timer = CoreMetrics.Timer(label: "teal_raft_fsync_duration_seconds", factory: factory)
  }

  func createDirectory(_ path: String) throws(StorageError) { try base.createDirectory(path) }
  func listDirectory(_ path: String) throws(StorageError) -> [String] { try base.listDirectory(path) }
  func openFile(_ path: String, create: Bool) throws(StorageError) -> any StorageFile {
    TimedFile(base: try base.openFile(path, create: create), timer: timer)
  }
  func rename(_ source: String, to destination: String) throws(StorageError) {
    try base.rename(source, to: destination)
  }
  func removeFile(_ path: String) throws(StorageError) { try base.removeFile(path) }
  func syncDirectory(_ path: String) throws(StorageError) {
    let started = ContinuousClock.now
    defer { timer.record(duration: ContinuousClock.now - started) }
    try base.syncDirectory(path)
  }
}

final class TimedFile: StorageFile {
  let base: any StorageFile
  let timer: CoreMetrics.Timer

  init(base: any StorageFile, timer: CoreMetrics.Timer) {
    self.base = base
    self.timer = timer
  }

  var path: String { base.path }
  func size() throws(StorageError) -> Int64 { try base.size() }
  func read(at offset: Int64, count: Int) throws(StorageError) -> [UInt8] { try base.read(at: offset, count: count) }
  func write(_ bytes: [UInt8], at offset: Int64) throws(StorageError) { try base.write(bytes, at: offset) }
  func syncData() throws(StorageError) {
    let started = ContinuousClock.now
    defer { timer.record(duration: ContinuousClock.now - started) }
    try base.syncData()
  }
  func syncAll() throws(StorageError) {
    let started = ContinuousClock.now
    defer { timer.record(duration: ContinuousClock.now - started) }
    try base.syncAll()
  }
  func truncate(to length: Int64) throws(StorageError) { try base.truncate(to: length) }
  func lockExclusively() throws(StorageError) { try base.lockExclusively() }
  func close() { base.close() }
}
