// SimulatedCluster: a whole Teal cluster in one process, on the node's real control code.

import Foundation
import Logging
import TealCluster
import TealConsensus
import TealNode
import TealRaft
import TealStorage
import TealStorageTesting
import TealTransportTesting
import TealWire

/// N nodes in one process: each a ``NodeControlPlane`` (RaftNode<ClusterState> with the node's
/// ClusterLog and control loops, the code `teal node start` runs) over an ``InMemoryPeerNetwork``,
/// a `SimulatedFileSystem` per node, an ``InMemoryTasks`` runner and an ``InMemoryBalancer`` per
/// node, one ``SimulatedGossip`` view and one ``ManualClock``.
///
/// Time moves only in ``step()``: every live node's Raft ticks once, the clock advances by one tick
/// (``tick``, 20 ms as on a node), and the harness waits until the network is quiet (each Raft has
/// processed what it was handed and every queued message is delivered). Control loops run on Swift's
/// global executor between steps; they sleep on the manual clock, so what they do depends on the
/// simulated time, not on how long a step takes on the machine. The schedule inside a step is the
/// runtime's (not a seeded scheduler), so a test waits for conditions with ``run(until:within:_:)``,
/// bounded in simulated time, never for a fixed number of steps.
///
/// Faults: ``crash(_:)`` (the node's messages stop, its Raft and log close without a handover,
/// unsynced disk writes are lost, gossip declares it dead), ``restart(_:)`` (the node comes back
/// from its simulated disk, gossip sees it alive again), and the network's partition and drop
/// controls (``network``).
///
/// Observation: `onApplied` is told of every entry any node applies, with that node's state after
/// it (on the node's Raft executor, inside `apply`: see ``AppliedEntryObserver``); hook calls are
/// recorded with the node and term that made them (``ScriptedHooks/callLog``).
public final class SimulatedCluster: @unchecked Sendable {
  /// One Raft tick and the time a step advances the clock: the node's own tick.
  public static let tick: Duration = .milliseconds(20)

  public let ids: [NodeID]
  public let clock: ManualClock
  public let network: InMemoryPeerNetwork
  public let gossip = SimulatedGossip()
  public let hooks: ScriptedHooks
  private let seed: UInt64
  private let electionTimeoutMilliseconds: Int
  private let logger: Logger
  private let onApplied: (@Sendable (NodeID, AppliedEntry, ClusterState) -> Void)?

  private struct Machine {
    var configuration: NodeConfiguration
    var disk: SimulatedFileSystem
    var tasks: InMemoryTasks
    var balancer: InMemoryBalancer
    var plane: NodeControlPlane?
    var control: Task<Void, Never>?
    var boots = 0
  }

  private let lock = NSLock()
  /// Guarded by `lock`.
  private var machines: [NodeID: Machine] = [:]
  /// Revisions whose tasks stay `starting` on every node's runner, the ones a restart creates too
  /// (guarded by `lock`).
  private var heldRevisions: Set<String> = []

  /// - Parameters:
  ///   - nodes: how many founding members (`n1` … `nN`, addresses 127.0.0.1 …).
  ///   - seed: seeds Raft's election timeouts (each node its own, derived from it) and the network.
  ///   - electionTimeoutMilliseconds: the nodes' election timeout (their default: 1 s).
  ///   - onApplied: told of every entry a node applies (the node, the entry, the node's state after
  ///     it); it runs inside the node's `apply`, so it must be quick and must not keep the state.
  public init(
    nodes: Int = 3, seed: UInt64 = 1, electionTimeoutMilliseconds: Int = 1000,
    hooks: ScriptedHooks = ScriptedHooks(), logger: Logger = Logger(label: "teal.sim"),
    onApplied: (@Sendable (NodeID, AppliedEntry, ClusterState) -> Void)? = nil
  ) {
    precondition((1...64).contains(nodes), "a simulated cluster has 1 to 64 nodes, not \(nodes)")
    ids = (1...nodes).map { NodeID("n\($0)") }
    clock = ManualClock()
    network = InMemoryPeerNetwork(seed: seed)
    self.hooks = hooks
    self.seed = seed
    self.electionTimeoutMilliseconds = electionTimeoutMilliseconds
    self.onApplied = onApplied
    var logger = logger
    if logger.logLevel < .warning { logger.logLevel = .warning }
    self.logger = logger
    let peers = Dictionary(uniqueKeysWithValues: ids.enumerated().map { ($1, "127.0.0.\($0 + 1)") })
    for id in ids {
      let configuration = NodeConfiguration(
        node: id, address: peers[id]!, dataDirectory: "/sim/\(id)/data", taskDirectory: "/sim/\(id)/tasks",
        certificateDirectory: "/sim/certs", tokenFile: "/sim/token", peers: peers,
        electionTimeoutMilliseconds: electionTimeoutMilliseconds)
      machines[id] = Machine(
        configuration: configuration, disk: SimulatedFileSystem(), tasks: InMemoryTasks(), balancer: InMemoryBalancer())
    }
  }

  // MARK: - Lifecycle

  /// Boots every node.
  public func start() async throws {
    for id in ids { try await boot(id) }
  }

  /// Stops every node (as a crash: no drain) and waits for their control loops to end.
  public func shutdown() async {
    for id in ids where isRunning(id) { await halt(id) }
  }

  /// Crashes `node`: it leaves the network, its Raft and log close with no leadership transfer, its
  /// control loops are cancelled, its disk loses every unsynced write, and gossip declares it dead.
  public func crash(_ node: NodeID) async {
    await halt(node)
    var generator = SplitMix64(seed: seed &+ UInt64(machine(node).boots))
    machine(node).disk.crash(using: &generator)
    gossip.markDead(node)
  }

  /// Boots a crashed node again from its simulated disk, with a fresh task runner (a real node's
  /// processes would be leftovers, drained first; here they died with the node) and a fresh
  /// balancer (the old one was shut down with the node, as a process's listeners close with it).
  public func restart(_ node: NodeID) async throws {
    precondition(!isRunning(node), "\(node) is running; crash it before restarting it")
    let (tasks, held) = lock.withLock {
      let tasks = InMemoryTasks()
      machines[node]?.tasks = tasks
      machines[node]?.balancer = InMemoryBalancer()
      return (tasks, heldRevisions)
    }
    for revision in held.sorted() { await tasks.holdStarting(revision: revision) }
    try await boot(node)
  }

  public func isRunning(_ node: NodeID) -> Bool { lock.withLock { machines[node]?.plane != nil } }

  public var running: [NodeID] { ids.filter(isRunning) }

  private func boot(_ node: NodeID) async throws {
    let current = machine(node)
    let boots = current.boots + 1
    let environment = NodeControlEnvironment(
      clock: clock, tasks: current.tasks, balancer: current.balancer, gossip: gossip.view(of: node),
      hooks: hooks.caller(node, clock: clock))
    let observer = onApplied.map { observe in
      { @Sendable (entry: AppliedEntry, state: ClusterState) in observe(node, entry, state) }
    }
    let plane = try NodeControlPlane(
      configuration: current.configuration, fileSystem: current.disk, network: network.sender(for: node),
      environment: environment, randomSeed: seed &* 1_000_003 &+ UInt64(ids.firstIndex(of: node)! * 7919 + boots),
      logger: logger, onApplied: observer)
    await network.register(node, handler: plane.messageHandler)
    await plane.start()
    let control = Task { await plane.runControl() }
    lock.withLock {
      machines[node]?.plane = plane
      machines[node]?.control = control
      machines[node]?.boots = boots
    }
    gossip.markAlive(node, address: current.configuration.address)
  }

  private func halt(_ node: NodeID) async {
    let (plane, control): (NodeControlPlane?, Task<Void, Never>?) = lock.withLock {
      let parts = (machines[node]?.plane, machines[node]?.control)
      machines[node]?.plane = nil
      machines[node]?.control = nil
      return parts
    }
    await network.unregister(node)
    await plane?.stop()
    control?.cancel()
    await control?.value
  }

  private func machine(_ node: NodeID) -> Machine {
    lock.withLock {
      guard let machine = machines[node] else { preconditionFailure("no node \(node) in this simulated cluster") }
      return machine
    }
  }

  // MARK: - Parts

  /// The control plane of a running node.
  public func plane(_ node: NodeID) -> NodeControlPlane? { lock.withLock { machines[node]?.plane } }

  public func tasks(_ node: NodeID) -> InMemoryTasks { machine(node).tasks }

  public func balancer(_ node: NodeID) -> InMemoryBalancer { machine(node).balancer }

  public func configuration(_ node: NodeID) -> NodeConfiguration { machine(node).configuration }

  /// Tasks of `revision` (`web:2`) started from now on stay `starting` on every node, also on the
  /// runner a restarted node gets (see ``InMemoryTasks/holdStarting(revision:)``).
  public func holdStarting(revision: String) async {
    let runners = lock.withLock {
      heldRevisions.insert(revision)
      return machines.values.map(\.tasks)
    }
    for runner in runners { await runner.holdStarting(revision: revision) }
  }

  // MARK: - Time

  /// One tick of simulated time (see the type's documentation).
  public func step() async {
    let planes = running.compactMap(plane)
    for plane in planes { await plane.tick() }
    clock.advance(by: Self.tick)
    await settle(planes)
  }

  /// Waits until every Raft processed its inputs and the network delivered everything queued,
  /// twice in a row with nothing delivered in between (bounded rounds: a chatty cluster moves on).
  private func settle(_ planes: [NodeControlPlane]) async {
    var quietRounds = 0
    for _ in 0..<50 {
      let before = await network.deliveredCount
      // A hop onto each Raft's executor runs after the Ready its inputs scheduled.
      for plane in planes { _ = await plane.raftStatus() }
      await network.waitUntilIdle()
      for _ in 0..<4 { await Task.yield() }
      if await network.deliveredCount == before {
        quietRounds += 1
        if quietRounds == 2 { return }
      } else {
        quietRounds = 0
      }
    }
  }

  /// Steps until `condition` holds, for at most `limit` of simulated time; throws
  /// ``SimulationTimeout`` naming `what` otherwise.
  public func run(
    until what: String, within limit: Duration = .seconds(60), _ condition: @Sendable () async -> Bool
  ) async throws {
    let deadline = clock.elapsed + limit
    while clock.elapsed <= deadline {
      if await condition() { return }
      await step()
    }
    throw SimulationTimeout(what: what, after: limit, summary: await summary())
  }

  /// Runs `work` while stepping the cluster, until it returns (bounded by `limit` of simulated time).
  public func whileStepping<Value: Sendable>(
    _ what: String, within limit: Duration = .seconds(60), _ work: @escaping @Sendable () async throws -> Value
  ) async throws -> Value {
    let task = Task { try await work() }
    let done = DoneFlag()
    let watcher = Task {
      _ = await task.result
      done.set()
    }
    defer { watcher.cancel() }
    try await run(until: what, within: limit) { done.isSet }
    return try await task.value
  }

  // MARK: - Views

  /// The running node that leads and is ready, if exactly one does in the highest term seen.
  public func leader() async -> NodeID? {
    var best: (NodeID, UInt64)?
    for id in running {
      guard let leadership = await plane(id)?.leadership(), leadership.role == .leader, leadership.isReady else {
        continue
      }
      if best.map({ leadership.term > $0.1 }) ?? true { best = (id, leadership.term) }
    }
    return best?.0
  }

  /// Every running node's leadership view.
  public func leaderships() async -> [NodeID: LeadershipState] {
    var views: [NodeID: LeadershipState] = [:]
    for id in running { if let view = await plane(id)?.leadership() { views[id] = view } }
    return views
  }

  /// The applied state of a running node.
  public func state(_ node: NodeID) async -> ClusterState? { await plane(node)?.state() }

  /// Submits through `node` (forwarded to the leader when it follows), stepping the cluster until it is answered.
  public func submit(_ command: ClusterCommand, through node: NodeID, within limit: Duration = .seconds(30))
    async throws -> ClusterResult
  {
    guard let plane = plane(node) else { throw SimulationError.notRunning(node) }
    return try await whileStepping("\(command.name) through \(node)", within: limit) {
      try await plane.submit(command)
    }
  }

  /// Each running node's applied index and state hash.
  public func hashes() async -> [NodeID: (applied: UInt64, hash: String)] {
    var result: [NodeID: (applied: UInt64, hash: String)] = [:]
    for id in running {
      if let state = await state(id) { result[id] = (state.appliedIndex, state.stateHash) }
    }
    return result
  }

  /// One line per running node: role, term, applied index; for reports of a timeout.
  public func summary() async -> String {
    var lines: [String] = ["t=\(clock.elapsed)"]
    for id in ids {
      guard let plane = plane(id) else {
        lines.append("\(id): down")
        continue
      }
      let status = await plane.raftStatus()
      lines.append("\(id): \(status)")
    }
    return lines.joined(separator: "\n")
  }
}

/// A condition that did not hold within its bound of simulated time.
public struct SimulationTimeout: Error, CustomStringConvertible {
  public var what: String
  public var after: Duration
  public var summary: String

  public var description: String { "not reached within \(after) of simulated time: \(what)\n\(summary)" }
}

public enum SimulationError: Error, CustomStringConvertible {
  case notRunning(NodeID)

  public var description: String {
    switch self {
    case .notRunning(let node): "\(node) is not running"
    }
  }
}

private final class DoneFlag: @unchecked Sendable {
  private let lock = NSLock()
  private var value = false

  var isSet: Bool { lock.withLock { value } }
  func set() { lock.withLock { value = true } }
}
