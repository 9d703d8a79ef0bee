import Foundation
import TealDeploy
import TealWire

let nodeNames = [NodeID("n1"), NodeID("n2"), NodeID("n3")]
let t0 = Instant(millisecondsSinceEpoch: 1_000_000)

/// The example spec `file` as green revision 2 over blue revision 1 with the same count.
func example(_ file: String) throws -> (green: Revision, blue: BlueRevision) {
  let spec = try loadSpec(examplesDirectory.appendingPathComponent(file).path)
  return (
    Revision(id: RevisionID(service: spec.name, number: 2), spec: spec),
    BlueRevision(revision: RevisionID(service: spec.name, number: 1), desiredCount: spec.desiredCount)
  )
}

let exampleFiles = ["web-blue-green.yaml", "web-canary.yaml", "web-linear.yaml"]

/// A spec built in code: `desiredCount` 3, the given deployment configuration.
func makeSpec(_ deployment: DeploymentConfiguration, desiredCount: Int = 3) -> ServiceSpec {
  ServiceSpec(
    name: "web", desiredCount: desiredCount, productionPort: 8080, testPort: 8081,
    task: TaskSpec(
      command: "/bin/demo", args: [], env: ["MODE": "x"], port: 9000,
      healthCheck: HealthCheckConfiguration(
        path: "/health", interval: .seconds(5), timeout: .seconds(2), healthyThreshold: 2, unhealthyThreshold: 3)),
    deployment: deployment)
}

func revisions(_ spec: ServiceSpec) -> (green: Revision, blue: BlueRevision) {
  (
    Revision(id: RevisionID(service: "web", number: 2), spec: spec),
    BlueRevision(revision: RevisionID(service: "web", number: 1), desiredCount: spec.desiredCount)
  )
}

/// Replays a log into a fresh service; returns the state after every input.
func replay(_ log: [DeploymentInput], service: String = "web") -> [Deployment] {
  var deployments = ServiceDeployments(service: service)
  var states: [Deployment] = []
  for input in log {
    deployments.apply(input)
    if let current = deployments.current { states.append(current) }
  }
  return states
}

/// The stages a deployment went through, in order.
func stages(_ deployment: Deployment) -> [LifecycleStage] { deployment.stageTimeline.map(\.stage) }

func entered(_ deployment: Deployment, _ stage: LifecycleStage) -> Instant? {
  deployment.stageTimeline.first { $0.stage == stage }?.enteredAt
}

/// Drives one deployment by hand, input by input, on nodes n1...n3.
struct Driver {
  var service = ServiceDeployments(service: "web")
  var now = t0
  let id: String

  init(_ spec: ServiceSpec, id: String = "d-1", activeRevisions: [RevisionID]? = nil, blueHealthy: Bool = true) {
    self.id = id
    let (green, blue) = revisions(spec)
    send(.submit(DeploymentSubmission(green: green, blue: blue, nodes: nodeNames, activeRevisions: activeRevisions)))
    if blueHealthy { reportHealth(blue.revision, total: blue.desiredCount) }
    send(.start)
  }

  var deployment: Deployment { service.current! }
  var green: RevisionID { deployment.green }
  var blue: RevisionID { deployment.blue.revision }

  @discardableResult
  mutating func send(_ command: DeploymentCommand, id other: String? = nil) -> DeploymentReply {
    service.apply(DeploymentInput(deploymentId: other ?? id, now: now, command: command))
  }

  mutating func wait(_ span: TimeSpan) {
    now = now + span
    send(.wakeUp)
  }

  /// `total` healthy tasks of `revision`, spread over the nodes as the world would.
  mutating func reportHealth(_ revision: RevisionID, total: Int) {
    for node in nodeNames {
      send(
        .taskHealth(
          node: node, revision: revision, healthy: SimulatedWorld.share(of: total, node: node, among: nodeNames)))
    }
  }

  mutating func reportRoutes(_ nodes: [NodeID] = nodeNames) {
    let generation = deployment.desired.routes.generation
    for node in nodes { send(.routesApplied(node: node, generation: generation)) }
  }

  /// Answers the pending hook call with `outcome`; returns its executionId.
  @discardableResult
  mutating func answerHook(_ outcome: HookOutcome = .succeeded, callBackDelay: TimeSpan? = nil) -> String? {
    guard let call = deployment.pendingHookCall else { return nil }
    if call.notBefore > now { now = call.notBefore }
    send(.hookAnswered(HookResult(answering: call, outcome: outcome, callBackDelay: callBackDelay)))
    return call.context.executionId
  }

  /// Plays an ideal world until the deployment reaches `stage` (or ends).
  mutating func run(until stage: LifecycleStage) {
    for _ in 0..<1000 {
      guard deployment.status == .IN_PROGRESS, let current = deployment.stage, current < stage else { return }
      step()
    }
  }

  /// One ideal world reaction.
  mutating func step() {
    let d = deployment
    if d.status == .ROLLBACK_IN_PROGRESS, let phase = d.rollback?.phase {
      switch phase {
      case .restoringBlue, .confirmingBlue: reportHealth(blue, total: d.blue.desiredCount)
      case .drainingGreen:
        reportRoutes()
        for node in nodeNames { send(.revisionDrained(node: node, revision: green)) }
      case .stoppingGreen:
        for node in nodeNames { send(.taskSetStopped(node: node, revision: green)) }
      case .delayingStop, .finished: break
      }
      if let wake = deployment.nextWakeup {
        now = max(now, wake)
        send(.wakeUp)
      }
      return
    }
    if case .converging(let convergence) = d.gate {
      switch convergence {
      case .healthy(let revision, let count): reportHealth(revision, total: count)
      case .routes: reportRoutes()
      case .drained(let revision):
        reportRoutes()
        for node in nodeNames { send(.revisionDrained(node: node, revision: revision)) }
      case .stopped(let revision):
        for node in nodeNames { send(.taskSetStopped(node: node, revision: revision)) }
      }
      return
    }
    if d.pendingHookCall != nil {
      answerHook()
      return
    }
    if let wake = d.nextWakeup {
      now = max(now, wake)
      send(.wakeUp)
    }
  }
}
