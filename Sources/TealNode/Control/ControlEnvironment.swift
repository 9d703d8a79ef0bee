// What the node's controllers and reconcilers are handed instead of reaching for them: the clock
// they read and sleep on, the executor they spawn work on, the log they propose to, and the parts
// of the node they drive (task runner, balancer, gossip's view, hooks). A node passes the real ones
// (`NodeControlEnvironment.production`); TealNodeTesting passes a manual clock and in-memory
// doubles, so the same control code runs a whole cluster in one process.

import TealCluster
import TealConsensus
import TealDeploy
import TealHooks
import TealLoadBalancer
import TealMembership
import TealRaft
import TealTasks
import TealWire

// MARK: - Clock

/// The clock of the control plane: wall time to stamp proposals, monotonic time for local waits, and
/// sleeping on that monotonic time.
///
/// ``NodeClock`` is the production one (the system clocks, `Task.sleep`); TealNodeTesting's manual
/// clock moves only when a test advances it, and wakes the sleepers whose deadline it passed.
public protocol ControlClock: Sendable {
  /// Wall-clock time, used only to stamp proposed commands (ClusterState clamps it so log time never
  /// runs backwards).
  func now() -> LogTime
  /// Monotonic time, for local waits, timeouts and intervals.
  var monotonicNow: ContinuousClock.Instant { get }
  /// Suspends for `duration` of this clock's monotonic time; throws `CancellationError` when the
  /// calling task is cancelled first.
  func sleep(for duration: Duration) async throws
}

extension NodeClock: ControlClock {
  public var monotonicNow: ContinuousClock.Instant { monotonic.now }

  public func sleep(for duration: Duration) async throws { try await Task.sleep(for: duration) }
}

// MARK: - Executor

/// Where controllers start work that runs beside them (a task start or stop, a hook call, a timer):
/// fire and forget, the work reports back through the actor that spawned it.
public protocol ControlExecutor: Sendable {
  /// Runs `work` concurrently with the caller; returns at once.
  func spawn(_ work: @escaping @Sendable () async -> Void)
}

/// The production executor: an unstructured `Task` per piece of work, on Swift's global executor.
public struct TaskControlExecutor: ControlExecutor {
  public init() {}

  public func spawn(_ work: @escaping @Sendable () async -> Void) { Task { await work() } }
}

// MARK: - Proposal sink

/// What the controllers read from and propose to the replicated log. ``ClusterLog`` is the one
/// implementation a node runs (it proposes on the leader and forwards from a follower); the
/// membership controller and the deployment controller's fence reach Raft through it too.
protocol ProposalSink: Sendable {
  var node: NodeID { get }
  /// This node's applied ClusterState.
  func localState() async -> ClusterState
  /// The latest leadership this node knows of.
  var currentLeadership: LeadershipState { get async }
  /// Gets `command` committed from any node (see ``ClusterLog/submit(_:idempotency:)``).
  func submit(_ command: ClusterCommand, idempotency: IdempotencyRecordKey?) async throws(SubmitError)
    -> ClusterResult
  /// Proposes a leader decision stamped with `term` (see ``ClusterLog/proposeAsLeader(_:term:)``).
  func proposeAsLeader(_ command: ClusterCommand, term: UInt64) async throws(SubmitError) -> ClusterResult
  /// Applied indexes as they move (only the newest is kept for a slow reader).
  func appliedIndexChanges() -> AsyncStream<UInt64>
  /// Sends this node's traffic counters to the leader.
  func reportTraffic(_ samples: [TrafficSample]) async
  /// Sets where traffic reports received by this node go.
  func setTrafficSink(_ sink: @escaping @Sendable (NodeID, [TrafficSample]) async -> Void) async

  // Raft, for the membership controller, the drain and the hook fence.
  func raftMembership() async -> RaftMembershipView
  func replicatedIndex(of peer: NodeID) async -> UInt64?
  func proposeConfigChange(_ change: ConfigChange) async throws(RaftNodeError)
  func transferLeadership(to target: NodeID?) async throws(RaftNodeError)
  /// A ReadIndex round: returns once a quorum confirmed this node's leadership.
  func confirmLeadership() async throws(RaftNodeError)
}

extension ProposalSink {
  func submit(_ command: ClusterCommand) async throws(SubmitError) -> ClusterResult {
    try await submit(command, idempotency: nil)
  }
}

/// Raft's configuration as the membership controller needs it, read in one hop.
struct RaftMembershipView: Sendable {
  /// The configuration as of the applied index.
  var committed: RaftConfiguration
  /// The latest configuration in the log (possibly uncommitted).
  var latest: RaftConfiguration
  /// The log index of the latest configuration entry.
  var latestIndex: UInt64
}

extension ClusterLog: ProposalSink {
  func localState() async -> ClusterState { await raft.currentState.state }
  nonisolated func appliedIndexChanges() -> AsyncStream<UInt64> { observer.changes() }
  func raftMembership() async -> RaftMembershipView {
    let raft = raft
    return RaftMembershipView(
      committed: await raft.committedMembership, latest: await raft.membership, latestIndex: await raft.membershipIndex)
  }
  func replicatedIndex(of peer: NodeID) async -> UInt64? { await raft.replicatedIndex(of: peer) }
  func proposeConfigChange(_ change: ConfigChange) async throws(RaftNodeError) {
    try await raft.proposeConfigChange(change)
  }
  func transferLeadership(to target: NodeID?) async throws(RaftNodeError) {
    try await raft.transferLeadership(to: target)
  }
  func confirmLeadership() async throws(RaftNodeError) { try await raft.linearizableRead() }
}

// MARK: - The parts the controllers drive

/// What a reconciler knows about one task of the runner right now.
public struct NodeTaskStatus: Sendable, Hashable {
  public var taskID: String
  /// `web:2`.
  public var revision: String
  /// The port given to the task.
  public var port: Int
  public var state: TaskState

  public init(taskID: String, revision: String, port: Int, state: TaskState) {
    self.taskID = taskID
    self.revision = revision
    self.port = port
    self.state = state
  }

  public init(_ info: TaskInfo) {
    self.init(taskID: info.taskID, revision: info.revision, port: info.port, state: info.state)
  }
}

/// The task runner as the task reconciler drives it. `TaskRunner` in a node; TealNodeTesting's
/// in-memory runner in a simulated one.
public protocol NodeTaskRunning: Sendable {
  /// Starts a task (returns once it is spawned, not healthy).
  func start(_ launch: TaskLaunch) async throws
  /// Stops a task with its spec's grace period; returns once it exited.
  func stop(_ taskID: String) async
  /// Forgets an exited task.
  func forget(_ taskID: String) async
  func tasks() async -> [NodeTaskStatus]
  /// Every state change of every task.
  func events() async -> AsyncStream<TaskEvent>
  /// Ids of the previous run's processes that are still alive (from the runner's ledger).
  func leftoversFromPreviousRun() async -> [String]
  /// Kills them.
  func killLeftoversFromPreviousRun() async
  /// Stops every task and starts nothing more.
  func shutdown() async
}

/// The production runner: a node's `TaskRunner`.
public struct ProcessTasks: NodeTaskRunning {
  public let runner: TaskRunner

  public init(_ runner: TaskRunner) { self.runner = runner }

  public func start(_ launch: TaskLaunch) async throws { _ = try await runner.start(launch) }
  public func stop(_ taskID: String) async { _ = await runner.stop(taskID) }
  public func forget(_ taskID: String) async { _ = await runner.forget(taskID) }
  public func tasks() async -> [NodeTaskStatus] { await runner.tasks().map(NodeTaskStatus.init) }
  public func events() async -> AsyncStream<TaskEvent> { await runner.events() }
  public func leftoversFromPreviousRun() async -> [String] { await runner.leftoversFromPreviousRun().map(\.taskID) }
  public func killLeftoversFromPreviousRun() async { _ = await runner.killLeftoversFromPreviousRun() }
  public func shutdown() async { await runner.shutdown() }
}

/// The load balancer as the route reconciler and the traffic reporter drive it.
public protocol NodeRouteBalancing: Sendable {
  /// Opens the service's listeners with its first routes.
  func addService(_ service: TealLoadBalancer.ServiceConfiguration, routes: TealLoadBalancer.ServiceRoutes) async throws
  func setRoutes(_ routes: TealLoadBalancer.ServiceRoutes, forService name: String) async throws
  /// Stops routing new requests to `target` and waits (at most `deregistrationDelay`) for the ones in flight.
  func deregister(_ target: TargetAddress, deregistrationDelay: Duration) async
  func removeService(_ name: String) async
  /// The balancer's counters (cumulative).
  func metrics() -> LoadBalancerMetrics
  /// Closes every listener, letting requests in flight finish for at most `gracePeriod`.
  func shutdown(gracePeriod: Duration) async
}

/// The production balancer: a node's `LoadBalancer`.
public struct BalancerRoutes: NodeRouteBalancing {
  public let balancer: LoadBalancer

  public init(_ balancer: LoadBalancer) { self.balancer = balancer }

  public func addService(_ service: TealLoadBalancer.ServiceConfiguration, routes: TealLoadBalancer.ServiceRoutes)
    async throws
  {
    _ = try await balancer.addService(service, routes: routes)
  }
  public func setRoutes(_ routes: TealLoadBalancer.ServiceRoutes, forService name: String) async throws {
    _ = try await balancer.setRoutes(routes, forService: name)
  }
  public func deregister(_ target: TargetAddress, deregistrationDelay: Duration) async {
    _ = await balancer.deregister(target, deregistrationDelay: deregistrationDelay)
  }
  public func removeService(_ name: String) async { await balancer.removeService(name) }
  public func metrics() -> LoadBalancerMetrics { balancer.metrics() }
  public func shutdown(gracePeriod: Duration) async { await balancer.shutdown(gracePeriod: gracePeriod) }
}

/// Gossip's view, as the membership reporter reads it. `MembershipService` in a node.
public protocol NodeGossipView: Sendable {
  func snapshot() async -> MembershipSnapshot
}

extension MembershipService: NodeGossipView {}

/// Calls one lifecycle hook. `HookInvoker` in a node.
public protocol NodeHookCalling: Sendable {
  func invoke(_ invocation: HookInvocation, term: UInt64?) async -> HookResult
}

extension HookInvoker: NodeHookCalling {}

/// Everything the node's control loops are handed (see the file comment).
public struct NodeControlEnvironment: Sendable {
  public var clock: any ControlClock
  public var executor: any ControlExecutor
  public var tasks: any NodeTaskRunning
  public var balancer: any NodeRouteBalancing
  public var gossip: any NodeGossipView
  public var hooks: any NodeHookCalling

  public init(
    clock: any ControlClock, executor: any ControlExecutor = TaskControlExecutor(), tasks: any NodeTaskRunning,
    balancer: any NodeRouteBalancing, gossip: any NodeGossipView, hooks: any NodeHookCalling
  ) {
    self.clock = clock
    self.executor = executor
    self.tasks = tasks
    self.balancer = balancer
    self.gossip = gossip
    self.hooks = hooks
  }
}
