// In-memory stand-ins for the parts of a node the control plane drives: the task runner, the load
// balancer, gossip's view and the hook caller.

import Foundation
import TealDeploy
import TealGossip
import TealLoadBalancer
import TealMembership
import TealNode
import TealTasks
import TealWire

// MARK: - Tasks

/// A task runner without processes: a started task is `starting`, then `healthy` at once (or stays
/// `starting` while its revision is held back with ``holdStarting(revision:)``); tests end a task
/// with ``exit(_:code:)``. Ports come from `firstPort` upwards unless the spec fixes one.
///
/// Bounds: at most ``maximumTasks`` tasks are kept (exited ones until forgotten); each events
/// subscriber buffers the newest ``eventBuffer`` events.
public actor InMemoryTasks: NodeTaskRunning {
  public static let maximumTasks = 10_000
  public static let eventBuffer = 1024

  private var table: [String: NodeTaskStatus] = [:]
  private var order: [String] = []
  private var subscribers: [Int: AsyncStream<TaskEvent>.Continuation] = [:]
  private var nextSubscriber = 0
  private var nextPort: Int
  private var heldRevisions: Set<String> = []
  private var isShutDown = false
  /// Every launch, in order (a test reads what the reconciler asked for).
  public private(set) var launches: [TaskLaunch] = []

  public init(firstPort: Int = 20_000) { nextPort = firstPort }

  public func start(_ launch: TaskLaunch) async throws {
    guard !isShutDown else { throw TaskRunnerError.shutDown }
    if let existing = table[launch.taskID], existing.state.isLive {
      throw TaskRunnerError.duplicateTaskID(launch.taskID)
    }
    guard table.count < Self.maximumTasks else {
      throw TaskRunnerError.noFreePort(
        taskID: launch.taskID, reason: "the in-memory runner holds \(Self.maximumTasks) tasks")
    }
    launches.append(launch)
    let port: Int
    if let fixed = launch.spec.fixedPort {
      port = fixed
    } else {
      port = nextPort
      nextPort += 1
    }
    if table[launch.taskID] == nil { order.append(launch.taskID) }
    set(NodeTaskStatus(taskID: launch.taskID, revision: launch.revision, port: port, state: .starting))
    if !heldRevisions.contains(launch.revision) { set(launch.taskID, .healthy) }
  }

  public func stop(_ taskID: String) async {
    guard let task = table[taskID], task.state.isLive else { return }
    set(taskID, .stopping)
    set(
      taskID, .exited(TaskExit(termination: .signaled(signal: 15), stopRequested: true, killedAfterGracePeriod: false)))
  }

  public func forget(_ taskID: String) async {
    guard let task = table[taskID], !task.state.isLive else { return }
    table[taskID] = nil
    order.removeAll { $0 == taskID }
  }

  public func tasks() async -> [NodeTaskStatus] { order.compactMap { table[$0] } }

  public func events() async -> AsyncStream<TaskEvent> {
    let (stream, continuation) = AsyncStream.makeStream(
      of: TaskEvent.self, bufferingPolicy: .bufferingNewest(Self.eventBuffer))
    nextSubscriber += 1
    let key = nextSubscriber
    subscribers[key] = continuation
    continuation.onTermination = { [weak self] _ in Task { await self?.unsubscribe(key) } }
    return stream
  }

  private func unsubscribe(_ key: Int) { subscribers[key] = nil }

  public func leftoversFromPreviousRun() async -> [String] { [] }

  public func killLeftoversFromPreviousRun() async {}

  public func shutdown() async {
    isShutDown = true
    for id in order { await stop(id) }
    for subscriber in subscribers.values { subscriber.finish() }
    subscribers = [:]
  }

  // MARK: Test controls

  /// Tasks of `revision` started from now on stay `starting` (their health check never passes).
  public func holdStarting(revision: String) { heldRevisions.insert(revision) }

  /// Ends a live task's process with `code` (as if it crashed or exited).
  public func exit(_ taskID: String, code: Int32) {
    guard let task = table[taskID], task.state.isLive else { return }
    set(
      taskID, .exited(TaskExit(termination: .exited(code: code), stopRequested: false, killedAfterGracePeriod: false)))
  }

  /// Ids of the live tasks.
  public var liveTaskIDs: [String] { order.filter { table[$0]?.state.isLive ?? false } }

  private func set(_ taskID: String, _ state: TaskState) {
    guard var task = table[taskID] else { return }
    task.state = state
    set(task)
  }

  private func set(_ task: NodeTaskStatus) {
    table[task.taskID] = task
    let event = TaskEvent(taskID: task.taskID, revision: task.revision, pid: 0, state: task.state)
    for subscriber in subscribers.values { subscriber.yield(event) }
  }
}

// MARK: - Balancer

/// A load balancer without listeners: it records each service's routes as the route reconciler
/// installs them, and counts no traffic.
public final class InMemoryBalancer: NodeRouteBalancing, @unchecked Sendable {
  private let lock = NSLock()
  /// Guarded by `lock`.
  private var installed: [String: ServiceRoutes] = [:]
  private var configurations: [String: ServiceConfiguration] = [:]
  private var isShutDown = false

  public init() {}

  public func addService(_ service: TealLoadBalancer.ServiceConfiguration, routes: TealLoadBalancer.ServiceRoutes)
    async throws
  {
    try lock.withLock {
      guard !isShutDown else { throw BalancerError.shutDown }
      configurations[service.name] = service
      installed[service.name] = routes
    }
  }

  public func setRoutes(_ routes: TealLoadBalancer.ServiceRoutes, forService name: String) async throws {
    try lock.withLock {
      guard installed[name] != nil else { throw BalancerError.unknownService(name) }
      installed[name] = routes
    }
  }

  public func deregister(_ target: TargetAddress, deregistrationDelay: Duration) async {}

  public func removeService(_ name: String) async {
    lock.withLock {
      installed[name] = nil
      configurations[name] = nil
    }
  }

  public func metrics() -> LoadBalancerMetrics { LoadBalancerMetrics() }

  public func shutdown(gracePeriod: Duration) async {
    lock.withLock {
      isShutDown = true
      installed = [:]
    }
  }

  /// The routes installed for `service`, if its listeners are open.
  public func routes(of service: String) -> ServiceRoutes? { lock.withLock { installed[service] } }

  /// The targets `service` routes production traffic to (every target of a revision with weight).
  public func productionTargets(of service: String) -> Set<TargetAddress> {
    guard let routes = routes(of: service) else { return [] }
    let weighted = Set(routes.productionWeights.filter { $0.value > 0 }.keys)
    return Set(routes.targetGroups.filter { weighted.contains($0.revision) }.flatMap(\.targets))
  }

  enum BalancerError: Error, CustomStringConvertible {
    case shutDown
    case unknownService(String)

    var description: String {
      switch self {
      case .shutDown: "the balancer was shut down"
      case .unknownService(let name): "no service \(name) on this balancer"
      }
    }
  }
}

// MARK: - Gossip

/// Gossip's view for every node of a simulated cluster, set by the test (or the harness, when it
/// crashes and restarts nodes): every node sees the same members.
public final class SimulatedGossip: @unchecked Sendable {
  private let lock = NSLock()
  /// Guarded by `lock`.
  private var members: [NodeID: Member] = [:]

  public init() {}

  /// Adds `node` alive (or marks it alive again with a higher incarnation, as a restarted node refutes).
  public func markAlive(_ node: NodeID, address: String) {
    lock.withLock {
      let incarnation = members[node].map { $0.incarnation + 1 } ?? 1
      members[node] = Member(
        id: node, status: .alive, incarnation: incarnation,
        metadata: MemberMetadata(peerAddress: HostPort(host: address, port: 7000), apiPort: 7070, version: "simulated"))
    }
  }

  /// Declares `node` dead, as SWIM would after its probes failed.
  public func markDead(_ node: NodeID) {
    lock.withLock { members[node]?.status = .dead }
  }

  /// The view of `node`.
  public func view(of node: NodeID) -> any NodeGossipView { View(gossip: self, node: node) }

  fileprivate func snapshot(of node: NodeID) -> MembershipSnapshot {
    lock.withLock {
      let others = members.values.filter { $0.id != node }.sorted { $0.id < $1.id }
      let myself =
        members[node]
        ?? Member(
          id: node, status: .alive, incarnation: 1,
          metadata: MemberMetadata(peerAddress: HostPort(host: "", port: 7000), apiPort: 7070, version: "simulated"))
      return MembershipSnapshot(myself: myself, members: others)
    }
  }

  private struct View: NodeGossipView {
    let gossip: SimulatedGossip
    let node: NodeID

    func snapshot() async -> MembershipSnapshot { gossip.snapshot(of: node) }
  }
}

// MARK: - Hooks

/// Answers every hook call with `outcome` (default: succeeded), or with the outcome set for the
/// call's service, and records the calls.
///
/// Bounds: ``calls`` and ``callLog`` keep the first ``maximumRecordedCalls`` calls each.
public actor ScriptedHooks: NodeHookCalling {
  public static let maximumRecordedCalls = 10_000

  /// One call as a node's deployment controller made it.
  public struct Call: Sendable {
    public var node: NodeID?
    /// The term the controller called in (`x-teal-term`).
    public var term: UInt64?
    /// Simulated time of the call (nil when the caller did not say).
    public var at: Duration?
    public var invocation: HookInvocation
  }

  public private(set) var calls: [HookInvocation] = []
  /// Every call with the node and term that made it (``caller(_:clock:)`` fills them in).
  public private(set) var callLog: [Call] = []
  private var outcome: HookOutcome
  private var outcomes: [String: HookOutcome] = [:]

  public init(outcome: HookOutcome = .succeeded) { self.outcome = outcome }

  public func setOutcome(_ outcome: HookOutcome) { self.outcome = outcome }

  /// Calls for `service`'s deployments answer `outcome` (instead of the default one).
  public func setOutcome(_ outcome: HookOutcome, forService service: String) { outcomes[service] = outcome }

  public func invoke(_ invocation: HookInvocation, term: UInt64?) async -> HookResult {
    answer(Call(node: nil, term: term, at: nil, invocation: invocation))
  }

  private func answer(_ call: Call) -> HookResult {
    if calls.count < Self.maximumRecordedCalls { calls.append(call.invocation) }
    if callLog.count < Self.maximumRecordedCalls { callLog.append(call) }
    let outcome = outcomes[call.invocation.context.service] ?? self.outcome
    return HookResult(answering: call.invocation, outcome: outcome)
  }

  /// The hook caller of `node`: calls recorded with the node, its term and the simulated time.
  public nonisolated func caller(_ node: NodeID, clock: ManualClock) -> any NodeHookCalling {
    Caller(hooks: self, node: node, clock: clock)
  }

  private struct Caller: NodeHookCalling {
    let hooks: ScriptedHooks
    let node: NodeID
    let clock: ManualClock

    func invoke(_ invocation: HookInvocation, term: UInt64?) async -> HookResult {
      await hooks.answer(Call(node: node, term: term, at: clock.elapsed, invocation: invocation))
    }
  }
}
