// One service's deployments: at most one active at a time, superseding on request.

/// Why a new deployment was not accepted.
public enum DeploymentRefusal: Error, Hashable, Sendable, CustomStringConvertible {
  /// The service already has an active deployment and the caller did not ask to supersede it.
  case deploymentInProgress(service: String, deploymentId: String, stage: LifecycleStage?, status: DeploymentStatus)
  /// The new deployment belongs to another service.
  case wrongService(expected: String, got: String)
  /// The new deployment is not PENDING (it was started elsewhere).
  case notPending(deploymentId: String, status: DeploymentStatus)

  public var description: String {
    switch self {
    case .deploymentInProgress(let service, let id, let stage, let status):
      return "service \(service) has deployment \(id) in progress (\(status.rawValue)"
        + (stage.map { " at \($0.rawValue)" } ?? "") + "); wait for it, stop it, or deploy with --supersede"
    case .wrongService(let expected, let got):
      return "deployment is for service \(got), not \(expected)"
    case .notPending(let id, let status):
      return "deployment \(id) is \(status.rawValue), not PENDING"
    }
  }
}

/// The rule "one deployment per service at a time", as a value type the replicated state keeps
/// per service.
///
/// Invariants: `current` is the only deployment that may be IN_PROGRESS; `queued` is PENDING and
/// starts as soon as `current` becomes terminal (after the rollback a supersede asked for).
public struct ServiceDeployments: Codable, Hashable, Sendable {
  public let service: String
  /// The deployment that holds the service (active or the last one that finished).
  public private(set) var current: DeploymentEngine?
  /// A superseding deployment waiting for `current` to finish rolling back.
  public private(set) var queued: DeploymentEngine?

  public init(service: String) { self.service = service }

  /// Accepts `deployment` (PENDING) and starts it, or refuses it.
  ///
  /// With an active current deployment: refused unless `supersede`; with `supersede` the current
  /// one rolls back first and `deployment` starts once that rollback finished (in the same call
  /// when blue is healthy). A previously queued deployment is replaced.
  public mutating func submit(
    _ deployment: DeploymentEngine, supersede: Bool, now: Instant
  ) throws(DeploymentRefusal) -> [DeploymentEngine.Effect] {
    guard deployment.service == service else {
      throw .wrongService(expected: service, got: deployment.service)
    }
    guard deployment.status == .PENDING else {
      throw .notPending(deploymentId: deployment.deploymentId, status: deployment.status)
    }
    guard var active = current, active.isActive else {
      var started = deployment
      let effects = started.start(now: now)
      current = started
      return effects
    }
    guard supersede else {
      throw .deploymentInProgress(
        service: service, deploymentId: active.deploymentId, stage: active.stage, status: active.status)
    }
    var effects: [DeploymentEngine.Effect] = []
    if active.status == .IN_PROGRESS || active.status == .PENDING {
      effects += active.handle(.superseded(by: deployment.deploymentId), now: now)
      current = active
    }
    queued = deployment
    effects += startQueuedIfFree(now: now)
    return effects
  }

  /// Routes an event to the current deployment, then starts a queued one if the current finished.
  public mutating func handle(_ event: DeploymentEngine.Event, now: Instant) -> [DeploymentEngine.Effect] {
    guard var active = current else { return [] }
    var effects = active.handle(event, now: now)
    current = active
    effects += startQueuedIfFree(now: now)
    return effects
  }

  /// Resumes the current deployment on a new leader (see `DeploymentEngine.resume(now:)`).
  public mutating func resume(now: Instant) -> [DeploymentEngine.Effect] {
    guard var active = current else { return [] }
    var effects = active.resume(now: now)
    current = active
    effects += startQueuedIfFree(now: now)
    return effects
  }

  private mutating func startQueuedIfFree(now: Instant) -> [DeploymentEngine.Effect] {
    guard var next = queued, current?.isActive != true else { return [] }
    queued = nil
    let effects = next.start(now: now)
    current = next
    return effects
  }
}
