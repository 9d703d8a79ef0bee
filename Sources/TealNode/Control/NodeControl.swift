// NodeControl: the lifecycle service that runs this node's reconcilers and, while it leads, the
// leader's controllers; and that drains the node on graceful shutdown.

import Logging
import ServiceLifecycle
import TealCluster
import TealRaft
import TealWire

/// Owns every control loop of the node:
/// - announces the node to the cluster (its address and API URL) until that is committed;
/// - the task and route reconcilers, on every node;
/// - the service scheduler, membership reporter and deployment controller, only while this node
///   leads and is ready.
///
/// Every loop wakes on each applied index, on each task event and every ``resyncInterval``; wake-ups
/// coalesce (a loop never queues more than one), so a burst of commits costs one pass.
///
/// Graceful shutdown: hand leadership to another voter, commit `drainNode` (no new placement here;
/// this node's tasks are retired through the stop rule and placed elsewhere), wait until ClusterState
/// holds no task on this node (bounded by ``drainTimeout``), then stop what is left and close the
/// balancer's listeners. When `drainNode` cannot be committed (no quorum: the whole cluster is
/// stopping), the node stops without a drain after the write timeout.
///
/// Time, the log and the node's parts are injected (``NodeControlEnvironment``): every wait and
/// interval here and in the loops it owns is measured on `environment.clock`, so the same code runs
/// under TealNodeTesting's manual clock.
final class NodeControl: Service, Sendable {
  let configuration: NodeConfiguration
  let log: any ProposalSink
  let tasks: any NodeTaskRunning
  let balancer: any NodeRouteBalancing
  let clock: any ControlClock
  let logger: Logger
  let taskReconciler: TaskReconciler
  let routeReconciler: RouteReconciler
  let scheduler: ServiceScheduler
  let reporter: MembershipReporter
  let deployments: DeploymentController
  let members: MembershipController
  let traffic: TrafficReporter

  static let resyncInterval: Duration = .seconds(2)
  static let drainTimeout: Duration = .seconds(30)
  static let leaderPassInterval: Duration = .milliseconds(250)
  /// How long the listeners let requests in flight finish at shutdown before cutting them.
  static let listenerGracePeriod: Duration = .seconds(10)

  init(
    configuration: NodeConfiguration, log: any ProposalSink, environment: NodeControlEnvironment, logger: Logger
  ) {
    self.configuration = configuration
    self.log = log
    self.tasks = environment.tasks
    self.balancer = environment.balancer
    self.clock = environment.clock
    self.logger = logger
    self.taskReconciler = TaskReconciler(
      node: configuration.node, address: configuration.address, log: log, runner: environment.tasks,
      clock: environment.clock, executor: environment.executor, logger: logger)
    self.routeReconciler = RouteReconciler(
      node: configuration.node, address: configuration.address, log: log, balancer: environment.balancer,
      logger: logger)
    self.scheduler = ServiceScheduler(log: log, clock: environment.clock, logger: logger)
    self.reporter = MembershipReporter(
      node: configuration.node, log: log, membership: environment.gossip, clock: environment.clock, logger: logger)
    self.deployments = DeploymentController(
      log: log, hooks: environment.hooks, clock: environment.clock, executor: environment.executor, logger: logger)
    self.traffic = TrafficReporter(log: log, balancer: environment.balancer, clock: environment.clock)
    self.members = MembershipController(node: configuration.node, log: log, logger: logger)
  }

  func run() async throws {
    await withTaskGroup(of: Void.self) { group in
      group.addTask { await self.announce() }
      group.addTask { await self.taskReconciler.run(wakeups: self.wakeups(includingTaskEvents: true)) }
      group.addTask { await self.routeReconciler.run(wakeups: self.wakeups(includingTaskEvents: false)) }
      group.addTask { await self.leaderLoop() }
      group.addTask { await self.traffic.run() }
      let controller = self.deployments
      await self.log.setTrafficSink { node, samples in await controller.receiveTraffic(samples, from: node) }
      try? await gracefulShutdown()
      await self.drain()
      group.cancelAll()
    }
    // The listeners first: requests in flight to this node's own tasks finish (bounded by the grace
    // period) before the task runner stops what is left.
    await balancer.shutdown(gracePeriod: Self.listenerGracePeriod)
    await tasks.shutdown()
  }

  // MARK: - Wake-ups

  /// One stream of coalesced wake-ups from applied indexes, task events (optionally) and a timer.
  private func wakeups(includingTaskEvents: Bool, every resync: Duration = resyncInterval) -> AsyncStream<Void> {
    let (stream, continuation) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
    let log = log
    let tasks = tasks
    let clock = clock
    let feeders = Task {
      await withTaskGroup(of: Void.self) { group in
        group.addTask {
          for await _ in log.appliedIndexChanges() { continuation.yield() }
        }
        if includingTaskEvents {
          group.addTask {
            for await _ in await tasks.events() { continuation.yield() }
          }
        }
        group.addTask {
          while !Task.isCancelled {
            continuation.yield()
            try? await clock.sleep(for: resync)
          }
        }
        await group.waitForAll()
      }
      continuation.finish()
    }
    continuation.onTermination = { _ in feeders.cancel() }
    return stream
  }

  // MARK: - Announce

  /// Announces this node once per process start, until ClusterState holds it with this address, up
  /// and not draining (a restart after a graceful stop clears the drain). Later liveness changes are
  /// the leader's (gossip → `nodeDown` / `nodeUp`); a drain at shutdown is never undone from here.
  private func announce() async {
    let info = NodeInfo(
      id: configuration.node, address: configuration.address,
      apiURL: configuration.apiURL(of: configuration.node) ?? "", peerPort: configuration.peerPort)
    while !Task.isCancelled {
      let state = await log.localState()
      if let known = state.nodes[configuration.node.rawValue], known.info == info, known.isUp, !known.draining {
        return
      }
      if state.wasRemoved(configuration.node) {
        logger.error(
          "this node's id was removed from the cluster; it is never admitted again (start it under a new id)")
        return
      }
      do {
        if case .rejected(let rejection) = try await log.submit(.announceNode(info)) {
          logger.warning("announce refused", metadata: ["reason": "\(rejection)"])
          try? await clock.sleep(for: .seconds(1))
        }
      } catch {
        logger.debug("announce not committed yet", metadata: ["error": "\(error)"])
        try? await clock.sleep(for: .milliseconds(200))
      }
    }
  }

  // MARK: - Leader

  /// While this node leads and is ready: the deployment controller on every applied entry (so a
  /// request that makes a wake-up due, such as a rollback, is acted on at once) and at least every
  /// ``leaderPassInterval``; the membership reporter and the scheduler every ``leaderPassInterval``.
  private func leaderLoop() async {
    var leadingSince: (term: UInt64, since: ContinuousClock.Instant)?
    var lastFullPass: ContinuousClock.Instant?
    for await _ in wakeups(includingTaskEvents: false, every: Self.leaderPassInterval) {
      guard !Task.isCancelled else { return }
      let leadership = await log.currentLeadership
      guard leadership.role == .leader, leadership.isReady else {
        leadingSince = nil
        lastFullPass = nil
        continue
      }
      let now = clock.monotonicNow
      if leadingSince?.term != leadership.term { (leadingSince, lastFullPass) = ((leadership.term, now), nil) }
      let since = leadingSince?.since ?? now
      if lastFullPass.map({ $0.duration(to: now) >= Self.leaderPassInterval }) ?? true {
        lastFullPass = now
        await reporter.pass(term: leadership.term, leadingSince: since)
        await members.pass(term: leadership.term)
        if await placementMaySettle(leadingSince: since) { await scheduler.pass(term: leadership.term) }
      }
      await deployments.pass(term: leadership.term)
    }
  }

  /// After a new leader takes over (a whole-cluster restart above all), placement waits until every
  /// voter has announced itself ready (up and not draining) or is committed down, for at most
  /// ``placementSettlePeriod``: otherwise the first node to come back would get every task.
  private func placementMaySettle(leadingSince: ContinuousClock.Instant) async -> Bool {
    if leadingSince.duration(to: clock.monotonicNow) >= Self.placementSettlePeriod { return true }
    let state = await log.localState()
    let voters = await log.raftMembership().latest.voters
    return voters.allSatisfy { voter in
      guard let node = state.nodes[voter.rawValue] else { return false }
      return !node.isUp || !node.draining
    }
  }

  static let placementSettlePeriod: Duration = .seconds(10)

  // MARK: - Drain

  private func drain() async {
    logger.notice("draining: handing leadership away and moving this node's tasks")
    if await log.currentLeadership.role == .leader {
      do { try await log.transferLeadership(to: nil) } catch {
        logger.warning("leadership not transferred", metadata: ["error": "\(error)"])
      }
    }
    let deadline = clock.monotonicNow.advanced(by: Self.drainTimeout)
    do {
      _ = try await log.submit(.drainNode(node: configuration.node))
    } catch {
      // No quorum (the whole cluster is stopping, or this node is cut off): nothing can move the
      // tasks elsewhere, so waiting would only delay the stop.
      logger.warning("drainNode not committed; stopping without a drain", metadata: ["error": "\(error)"])
      return
    }
    while clock.monotonicNow < deadline {
      let state = await log.localState()
      if !state.tasks.values.contains(where: { $0.node == configuration.node }) { break }
      try? await clock.sleep(for: .milliseconds(100))
    }
    logger.notice("drained", metadata: ["inTime": "\(clock.monotonicNow < deadline)"])
  }
}
