// The scale simulation's plan (issue 18, item 4): services, deployments and fault episodes, all
// drawn from one seed before the run starts.

import Foundation
import TealDeploy
import TealWire

/// The shape of one scale run: how many nodes, services, concurrent deployments and fault episodes,
/// and the seed everything is drawn from.
public struct ScaleScenario: Sendable, Hashable, CustomStringConvertible {
  public var seed: UInt64
  public var nodes: Int
  public var services: Int
  /// Deployments submitted together (one per service, on distinct services).
  public var deployments: Int
  /// Fault episodes, one after another, while the deployments run.
  public var faults: Int
  /// How long after the faults heal every deployment must be terminal and every node converged.
  public var settleBound: Duration

  public init(
    seed: UInt64, nodes: Int = 5, services: Int = 200, deployments: Int = 50, faults: Int = 6,
    settleBound: Duration = .seconds(240)
  ) {
    precondition((3...7).contains(nodes), "a scale run has 3 to 7 nodes, not \(nodes)")
    precondition(services >= 1 && services <= 2000, "a scale run has 1 to 2,000 services, not \(services)")
    precondition(
      (0...services).contains(deployments), "a scale run deploys 0 to \(services) services, not \(deployments)")
    precondition(faults >= 0 && faults <= 100, "a scale run has 0 to 100 fault episodes, not \(faults)")
    self.seed = seed
    self.nodes = nodes
    self.services = services
    self.deployments = deployments
    self.faults = faults
    self.settleBound = settleBound
  }

  /// The issue's shape: 5 nodes, 200 services, 50 concurrent deployments, 6 fault episodes.
  public static func full(seed: UInt64) -> ScaleScenario { ScaleScenario(seed: seed) }

  /// The CI shape: 5 nodes, 24 services, 8 concurrent deployments, 4 fault episodes.
  public static func small(seed: UInt64) -> ScaleScenario {
    ScaleScenario(seed: seed, services: 24, deployments: 8, faults: 4)
  }

  public var description: String {
    "seed \(seed): \(nodes) nodes, \(services) services, \(deployments) deployments, \(faults) fault episodes"
  }
}

/// Everything a run does, drawn from the scenario's seed: the services, the deployments (strategy,
/// timing, hooks and the outcome they are set up for) and the fault episodes.
public struct ScalePlan: Sendable {
  /// What a deployment is set up to do.
  public enum Outcome: String, Sendable, CaseIterable {
    /// Every hook succeeds: the deployment should end SUCCESSFUL (faults may still roll it back,
    /// through the circuit breaker, when green's tasks die with their node).
    case succeed
    /// Its hook answers FAILED: it must roll back.
    case hookFails
    /// Green's tasks never become healthy: the circuit breaker's scale-up timeout rolls it back.
    case circuitBreaker
    /// An operator stops it (rolls it back) when it reaches `stopAt`.
    case operatorStop
  }

  public struct PlannedService: Sendable {
    public var name: String
    public var spec: ServiceSpec
  }

  public struct PlannedDeployment: Sendable {
    public var service: String
    public var spec: ServiceSpec
    public var outcome: Outcome
    /// The stage of its one hook, if it has one.
    public var hookStage: LifecycleStage?
    /// `operatorStop`: the stage at which the operator stops it.
    public var stopAt: LifecycleStage?

    public var strategy: DeploymentStrategy { spec.deployment.strategy }
  }

  /// One fault episode; it starts `gap` after the previous one healed (or after the deployments
  /// were submitted, for the first).
  public struct Fault: Sendable, CustomStringConvertible {
    public enum Kind: Sendable {
      /// Crash the leader (once a deployment waits in `inStage`, if given, at most 15 s later
      /// anyway), restart it after `down`.
      case crashLeader(down: Duration, inStage: LifecycleStage?)
      /// Crash a follower for `down`: gossip declares it dead, the leader commits it down.
      case crashFollower(down: Duration)
      /// Crash the leader and a follower together (two of five down), restart both after `down`.
      case crashLeaderAndFollower(down: Duration)
      /// Cut every link of one node (the leader, or a follower) for `duration`; after
      /// `markDeadAfter` gossip declares it dead (as SWIM would), and alive again at the heal.
      case isolate(leader: Bool, duration: Duration, markDeadAfter: Duration)
      /// Every message is lost with probability `probability` for `duration`.
      case messageLoss(probability: Double, duration: Duration)
    }

    public var gap: Duration
    public var kind: Kind

    public var description: String {
      switch kind {
      case .crashLeader(let down, let stage):
        "crash the leader\(stage.map { " once a deployment waits in \($0)" } ?? "") for \(down)"
      case .crashFollower(let down): "crash a follower for \(down)"
      case .crashLeaderAndFollower(let down): "crash the leader and a follower for \(down)"
      case .isolate(let leader, let duration, let dead):
        "isolate \(leader ? "the leader" : "a follower") for \(duration) (gossip: dead after \(dead))"
      case .messageLoss(let probability, let duration):
        "lose \(Int(probability * 100)) % of messages for \(duration)"
      }
    }
  }

  public let scenario: ScaleScenario
  public let services: [PlannedService]
  public let deployments: [PlannedDeployment]
  public let faults: [Fault]

  public init(_ scenario: ScaleScenario) {
    self.scenario = scenario
    var random = SplitMix64(seed: scenario.seed &* 0x2545_F491_4F6C_DD1D &+ 0x5CA1E)
    var services: [PlannedService] = []
    for index in 0..<scenario.services {
      let name = String(format: "svc-%04d", index)
      let spec = Self.spec(
        name: name, index: index, desiredCount: 1 + random.below(2), version: "v1",
        deployment: DeploymentConfiguration(strategy: .BLUE_GREEN, bakeTime: .seconds(2)))
      services.append(PlannedService(name: name, spec: spec))
    }
    self.services = services
    // Distinct services for the deployments, chosen by a seeded shuffle.
    var order = Array(services.indices)
    for position in order.indices.reversed() where position > 0 {
      order.swapAt(position, random.below(position + 1))
    }
    var deployments: [PlannedDeployment] = []
    for position in 0..<scenario.deployments {
      let blue = services[order[position]].spec
      deployments.append(Self.deployment(of: blue, &random))
    }
    self.deployments = deployments
    var faults: [Fault] = []
    for _ in 0..<scenario.faults { faults.append(Self.fault(&random)) }
    self.faults = faults
  }

  /// A deployment of `blue`'s service: a strategy, an outcome (6 in 10 succeed, 2 in 10 have a
  /// failing hook, 1 in 10 trips the circuit breaker, 1 in 10 is stopped by an operator) and timing.
  static func deployment(of blue: ServiceSpec, _ random: inout SplitMix64) -> PlannedDeployment {
    let strategy: DeploymentStrategy = [.BLUE_GREEN, .CANARY, .LINEAR][random.below(3)]
    let roll = random.below(10)
    let outcome: Outcome =
      roll < 6 ? .succeed : roll < 8 ? .hookFails : roll < 9 ? .circuitBreaker : .operatorStop
    let hookStages: [LifecycleStage] = [
      .POST_SCALE_UP, .POST_TEST_TRAFFIC_SHIFT, .PRODUCTION_TRAFFIC_SHIFT, .POST_PRODUCTION_TRAFFIC_SHIFT,
    ]
    var hookStage: LifecycleStage?
    switch outcome {
    case .hookFails: hookStage = hookStages[random.below(hookStages.count)]
    case .succeed: hookStage = random.below(2) == 0 ? hookStages[random.below(hookStages.count)] : nil
    case .circuitBreaker, .operatorStop: hookStage = nil
    }
    let stopStages: [LifecycleStage] = [.SCALE_UP, .TEST_TRAFFIC_SHIFT, .PRODUCTION_TRAFFIC_SHIFT, .BAKE_TIME]
    let stopAt = outcome == .operatorStop ? stopStages[random.below(stopStages.count)] : nil
    var configuration = DeploymentConfiguration(
      strategy: strategy, bakeTime: .milliseconds(Int64(3000 + random.below(12000))),
      circuitBreaker: CircuitBreakerConfiguration(
        enable: true, rollback: true, failureThreshold: 3,
        scaleUpTimeout: outcome == .circuitBreaker ? .seconds(10) : .seconds(120)),
      abortScaleDownDelay: .seconds(1))
    switch strategy {
    case .CANARY:
      configuration.canary = CanaryConfiguration(
        canaryPercent: Double(10 + random.below(41)), canaryBakeTime: .milliseconds(Int64(1000 + random.below(3000))))
    case .LINEAR:
      configuration.linear = LinearConfiguration(
        stepPercent: [25, 34, 50][random.below(3)], stepBakeTime: .milliseconds(Int64(1000 + random.below(1000))))
    case .BLUE_GREEN, .STEPS:
      break
    }
    if let hookStage {
      configuration.lifecycleHooks = [
        LifecycleHookConfiguration(
          stages: [hookStage], action: .http(url: "http://127.0.0.1:9/scale-hook", timeout: .seconds(5)),
          callBackDelay: .seconds(1), timeoutAction: .ROLLBACK, overallTimeout: .minutes(10),
          everyStep: hookStage == .PRODUCTION_TRAFFIC_SHIFT && strategy != .BLUE_GREEN)
      ]
    }
    var green = blue
    green.task.env["VERSION"] = "v2"
    green.deployment = configuration
    return PlannedDeployment(
      service: blue.name, spec: green, outcome: outcome, hookStage: hookStage, stopAt: stopAt)
  }

  static func fault(_ random: inout SplitMix64) -> Fault {
    let gap = Duration.milliseconds(500 + random.below(2500))
    let kind: Fault.Kind
    switch random.below(6) {
    case 0:
      kind = .crashLeader(down: .milliseconds(1000 + random.below(5000)), inStage: nil)
    case 1:
      kind = .crashLeader(
        down: .milliseconds(1000 + random.below(4000)),
        inStage: random.below(2) == 0 ? .PRODUCTION_TRAFFIC_SHIFT : .BAKE_TIME)
    case 2:
      kind = .crashFollower(down: .milliseconds(3000 + random.below(7000)))
    case 3:
      kind = .crashLeaderAndFollower(down: .milliseconds(2000 + random.below(3000)))
    case 4:
      kind = .isolate(
        leader: random.below(2) == 0, duration: .milliseconds(2000 + random.below(4000)),
        markDeadAfter: .milliseconds(1500))
    default:
      kind = .messageLoss(
        probability: Double(2 + random.below(14)) / 100, duration: .milliseconds(2000 + random.below(4000)))
    }
    return Fault(gap: gap, kind: kind)
  }

  /// A service's spec: listener ports from its index (10000 + 2·index and the next), a task on any
  /// port, healthy at once in the in-memory runner.
  static func spec(
    name: String, index: Int, desiredCount: Int, version: String, deployment: DeploymentConfiguration
  ) -> ServiceSpec {
    ServiceSpec(
      name: name, desiredCount: desiredCount, productionPort: 10_000 + 2 * index, testPort: 10_001 + 2 * index,
      task: TaskSpec(
        command: "/usr/bin/teal-demo", args: ["--port", "$PORT"], env: ["VERSION": version], port: 0,
        healthCheck: HealthCheckConfiguration(
          path: "/health", interval: .seconds(1), timeout: .milliseconds(500), healthyThreshold: 1,
          unhealthyThreshold: 3)),
      deployment: deployment)
  }
}
