// One service's deployments: at most one active at a time, superseding on request. The value the
// replicated cluster state keeps per service; `apply` is its only mutation.

import TealWire

/// The rule "one deployment per service at a time", as a value type.
///
/// Invariants: `current` is the only deployment that may be past PENDING and not terminal;
/// `queued` is PENDING (a stop or rollback request drops it) and can start once `current` is terminal (after the rollback a supersede
/// asked for). The service's desired state is `current`'s, also after it finished, until the next
/// deployment starts from it.
public struct ServiceDeployments: Codable, Hashable, Sendable {
  public let service: String
  /// The deployment that holds the service (active, or the last one that finished).
  public private(set) var current: Deployment?
  /// A superseding deployment waiting for `current` to finish rolling back.
  public private(set) var queued: Deployment?

  public init(service: String) { self.service = service }

  /// What every node must reconcile this service to.
  public var desired: DesiredState? { current?.desired }

  /// The deployment a `start` input should be proposed for now, if any.
  public var startable: String? {
    if let current, current.status == .PENDING { return current.id }
    if let queued, queued.status == .PENDING, current?.isActive != true { return queued.id }
    return nil
  }

  /// The earliest log time at which a `wakeUp` for `current` changes something.
  public var nextWakeup: Instant? { current?.nextWakeup }

  /// The hook call the leader must make for this service, if any.
  public var pendingHookCall: HookInvocation? { current?.pendingHookCall }

  /// The deployment with `id`, current or queued.
  public func deployment(_ id: String) -> Deployment? {
    if current?.id == id { return current }
    if queued?.id == id { return queued }
    return nil
  }

  /// Applies one input. `submit` creates a deployment; `start` starts the startable one; every
  /// other input goes to the deployment it names (current or queued), and is ignored otherwise.
  @discardableResult
  public mutating func apply(_ input: DeploymentInput) -> DeploymentReply {
    switch input.command {
    case .submit(let submission):
      return submit(submission, id: input.deploymentId, now: input.now)
    case .retry(let previousId, let by):
      guard let previous = current, previous.id == previousId else {
        return .refused(reason: "deployment \(previousId) is not the latest deployment of \(service)")
      }
      guard previous.status == .ROLLBACK_SUCCESSFUL || previous.status == .STOPPED else {
        return .refused(
          reason:
            "deployment \(previousId) is \(previous.status.rawValue); only a rolled-back or stopped one can be retried")
      }
      guard previous.desired.taskSet(previous.green)?.phase != .draining else {
        return .refused(reason: "deployment \(previousId) is still draining green")
      }
      var retried = Deployment(id: input.deploymentId, retrying: previous, now: input.now)
      retried.recordRequest("retry requested by \(by)")
      current = retried
      return .accepted
    case .start:
      if let next = queued, next.id == input.deploymentId {
        guard next.status == .PENDING else {
          return .ignored(reason: "deployment \(next.id) is \(next.status.rawValue), not PENDING")
        }
        guard current?.isActive != true else {
          return .ignored(reason: "deployment \(next.id) waits for \(current?.id ?? "?") to finish")
        }
        queued = nil
        var starting = next
        starting.continueRoutes(after: current?.desired.routes.generation ?? 0)
        current = starting
      }
      return applyToCurrent(input)
    default:
      if queued?.id == input.deploymentId {
        var next = queued
        let reply = next?.apply(input) ?? .ignored(reason: "no queued deployment")
        // A queued deployment stopped before it started is dropped: nothing waits for it any more.
        queued = next?.isActive == true ? next : nil
        return reply
      }
      return applyToCurrent(input)
    }
  }

  /// Applies a node-level fact (`nodeUp`, `nodeDown`, `taskHealth`, `routesApplied`, ...) to the
  /// current and the queued deployment, whatever their ids. Other commands are refused.
  @discardableResult
  public mutating func broadcast(_ command: DeploymentCommand, now: Instant) -> DeploymentReply {
    switch command {
    case .nodeUp, .nodeDown, .taskHealth, .taskFailed, .routesApplied, .revisionDrained, .taskSetStopped:
      break
    default:
      return .refused(reason: "only node facts can be broadcast")
    }
    var reply = DeploymentReply.ignored(reason: "service \(service) has no deployment")
    if let id = current?.id { reply = apply(DeploymentInput(deploymentId: id, now: now, command: command)) }
    if let id = queued?.id { _ = apply(DeploymentInput(deploymentId: id, now: now, command: command)) }
    return reply
  }

  private mutating func applyToCurrent(_ input: DeploymentInput) -> DeploymentReply {
    guard var active = current, active.id == input.deploymentId else {
      return .ignored(reason: "deployment \(input.deploymentId) is not a deployment of \(service) in progress")
    }
    let reply = active.apply(input)
    current = active
    return reply
  }

  private mutating func submit(_ submission: DeploymentSubmission, id: String, now: Instant) -> DeploymentReply {
    guard submission.green.id.service == service, submission.blue.revision.service == service else {
      return .refused(reason: "deployment \(id) is for service \(submission.green.id.service), not \(service)")
    }
    guard deployment(id) == nil else { return .ignored(reason: "deployment \(id) is already submitted") }
    let generation = max(current?.desired.routes.generation ?? 0, queued?.desired.routes.generation ?? 0)
    let deployment = Deployment(id: id, submission: submission, now: now, routesGeneration: generation)
    guard var active = current, active.isActive else {
      current = deployment
      return .accepted
    }
    guard submission.supersede else {
      return .refused(
        reason: "service \(service) has deployment \(active.id) in progress (\(active.status.rawValue)"
          + (active.stage.map { " at \($0.rawValue)" } ?? "") + "); wait for it, stop it, or deploy with --supersede")
    }
    if active.status == .IN_PROGRESS || active.status == .PENDING {
      active.apply(DeploymentInput(deploymentId: active.id, now: now, command: .superseded(by: id)))
      current = active
    }
    queued = deployment
    return .accepted
  }
}
