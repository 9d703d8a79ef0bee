// DeploymentController: the leader's hands for the deployments ClusterState runs. The engine runs
// in `apply` on every node; this actor only turns time into wake-ups and performs the one external
// effect the engine asks for, the hook call, fenced so that a deposed leader does not make it.

import Logging
import TealCluster
import TealDeploy
import TealHooks
import TealWire

/// Active only while this node leads and is ready (NodeControl's leader loop calls `pass`).
///
/// Each pass reads the applied state and, for every active deployment:
/// - proposes `deploymentWakeUp` once the wall clock reaches its `nextWakeup` (stamped with this
///   leader's term, so ClusterState rejects it if it lands in a later term); at most one per
///   deployment and wake-up time every ``wakeUpRetryInterval``;
/// - for a deployment with alarms, proposes one datapoint per ``TrafficReporter/period``: green's
///   production traffic summed over every node's balancer counters (``TrafficAggregator``);
/// - calls the hook of `pendingHookCall` once its `notBefore` has come, at most one call per
///   execution and attempt at a time on this node, and proposes the answer (a fact: applied only
///   if that execution and attempt is still awaited, so a late or doubled answer changes nothing).
///
/// **Fencing.** Right before each hook call the controller confirms that it still leads: a ReadIndex
/// round (a quorum acknowledges this leader's term) that must finish within ``fenceBound`` on the
/// monotonic clock, which counts a SIGSTOP. A leader paused for longer than an election timeout
/// therefore finds its read failing (or too slow) on resume and calls nothing. The request carries
/// `x-teal-term`, so a hook can refuse a call from an older term than one it has seen.
actor DeploymentController {
  private let log: any ProposalSink
  private let hooks: any NodeHookCalling
  private let clock: any ControlClock
  /// Where hook calls run (beside the passes).
  private let executor: any ControlExecutor
  private let logger: Logger

  /// A wake-up not applied within this time is proposed again.
  static let wakeUpRetryInterval: Duration = .seconds(1)
  /// The longest a leadership confirmation may take for the hook call that follows it to go ahead.
  static let fenceBound: Duration = .milliseconds(500)
  /// Hook calls in flight on this node at most (the rest wait for the next pass).
  static let maximumCallsInFlight = 64

  /// Calls in flight, by `executionId#attempt`.
  private var calling: Set<String> = []
  /// The last wake-up proposed per deployment: its target time and when it was proposed.
  private var proposedWakeUps: [String: (target: Instant, at: ContinuousClock.Instant)] = [:]
  /// Every node's latest balancer counters and each deployment's baseline.
  private var traffic = TrafficAggregator()
  /// When each deployment's last datapoint was taken (monotonic).
  private var lastDatapoint: [String: ContinuousClock.Instant] = [:]

  init(
    log: any ProposalSink, hooks: any NodeHookCalling, clock: any ControlClock, executor: any ControlExecutor,
    logger: Logger
  ) {
    self.log = log
    self.hooks = hooks
    self.clock = clock
    self.executor = executor
    self.logger = logger
  }

  /// One pass as leader of `term`.
  func pass(term: UInt64) async {
    let state = await log.localState()
    let now = Instant(millisecondsSinceEpoch: clock.now().millisecondsSinceEpoch)
    let active = state.allDeployments().filter(\.isActive)
    proposedWakeUps = proposedWakeUps.filter { id, _ in active.contains { $0.id == id } }
    traffic.forget(except: Set(active.map(\.id)))
    lastDatapoint = lastDatapoint.filter { id, _ in active.contains { $0.id == id } }
    for deployment in active where !deployment.configuration.alarms.isEmpty {
      await proposeDatapoint(deployment, now: now, term: term)
    }
    for deployment in active {
      if let call = deployment.pendingHookCall, call.notBefore <= now { startCall(call, of: deployment, term: term) }
      guard let wake = deployment.nextWakeup, wake <= now else { continue }
      if let last = proposedWakeUps[deployment.id], last.target == wake,
        last.at.duration(to: clock.monotonicNow) < Self.wakeUpRetryInterval
      {
        continue
      }
      proposedWakeUps[deployment.id] = (wake, clock.monotonicNow)
      do {
        let result = try await log.proposeAsLeader(
          .deploymentWakeUp(service: deployment.service, deploymentID: deployment.id), term: term)
        if case .rejected(let rejection) = result {
          logger.debug("wake-up refused", metadata: ["deployment": "\(deployment.id)", "reason": "\(rejection)"])
        }
      } catch {
        logger.debug("wake-up not committed", metadata: ["deployment": "\(deployment.id)", "error": "\(error)"])
        return
      }
    }
  }

  /// Counters from `node` (this one included), as its TrafficReporter sent them.
  func receiveTraffic(_ samples: [TrafficSample], from node: NodeID) { traffic.receive(samples, from: node) }

  /// One datapoint per deployment and ``TrafficReporter/period``: the sum of every node's counters of
  /// green since the previous one. The first after this node began leading only sets the baseline.
  private func proposeDatapoint(_ deployment: Deployment, now: Instant, term: UInt64) async {
    let monotonic = clock.monotonicNow
    if let last = lastDatapoint[deployment.id], last.duration(to: monotonic) < TrafficReporter.period { return }
    lastDatapoint[deployment.id] = monotonic
    guard let sample = traffic.datapoint(for: deployment, at: now) else { return }
    do {
      _ = try await log.proposeAsLeader(
        .deploymentMetrics(service: deployment.service, deploymentID: deployment.id, sample: sample), term: term)
    } catch {
      logger.debug("datapoint not committed", metadata: ["deployment": "\(deployment.id)", "error": "\(error)"])
    }
  }

  private func startCall(_ call: HookInvocation, of deployment: Deployment, term: UInt64) {
    let key = "\(call.context.executionId)#\(call.context.attempt)"
    guard !calling.contains(key), calling.count < Self.maximumCallsInFlight else { return }
    calling.insert(key)
    let service = deployment.service
    let id = deployment.id
    executor.spawn {
      await self.call(call, service: service, deploymentID: id, term: term)
      await self.finished(key)
    }
  }

  private func finished(_ key: String) { calling.remove(key) }

  /// Confirms leadership, calls the hook, proposes its answer.
  private func call(_ invocation: HookInvocation, service: String, deploymentID: String, term: UInt64) async {
    let metadata: Logger.Metadata = [
      "deployment": "\(deploymentID)", "executionId": "\(invocation.context.executionId)",
      "attempt": "\(invocation.context.attempt)", "term": "\(term)",
    ]
    guard await stillLeads(term: term) else {
      logger.notice(
        "hook not called: leadership not confirmed (lost, or the check took longer than \(Self.fenceBound))",
        metadata: metadata)
      return
    }
    let result = await hooks.invoke(invocation, term: term)
    do {
      _ = try await log.submit(.hookAnswered(service: service, deploymentID: deploymentID, result: result))
    } catch {
      // The next leader (or this one, on the next pass) calls again with the same execution id.
      logger.warning("hook answer not committed", metadata: metadata.merging(["error": "\(error)"]) { $1 })
    }
  }

  /// True when a ReadIndex round confirmed this node as leader of `term` within ``fenceBound``.
  private func stillLeads(term: UInt64) async -> Bool {
    let started = clock.monotonicNow
    do { try await log.confirmLeadership() } catch { return false }
    let leadership = await log.currentLeadership
    guard leadership.role == .leader, leadership.term == term else { return false }
    return started.duration(to: clock.monotonicNow) < Self.fenceBound
  }
}
