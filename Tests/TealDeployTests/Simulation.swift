import Foundation

@testable import TealDeploy

// MARK: - Fixtures

let startInstant = Instant(millisecondsSinceEpoch: 1_700_000_000_000)
let blueID = RevisionID(service: "web", number: 1)

/// A spec for `strategy` with the given hooks; bake 5m, canary 10 % for 2m, linear 25 % every 1m.
func makeSpec(
  _ strategy: DeploymentStrategy, hooks: [LifecycleHookSpec] = [], alarms: [AlarmSpec] = [],
  breaker: CircuitBreakerSpec = CircuitBreakerSpec(
    enable: true, rollback: true, failureThreshold: 2, scaleUpTimeout: .minutes(2)),
  desiredCount: Int = 2
) -> ServiceSpec {
  ServiceSpec(
    name: "web", desiredCount: desiredCount, productionPort: 8080, testPort: 8081,
    task: TaskSpec(
      command: "/bin/demo", args: [], env: [:], port: 9000,
      healthCheck: HealthCheckSpec(
        path: "/health", interval: .seconds(5), timeout: .seconds(2), healthyThreshold: 2, unhealthyThreshold: 3)),
    deployment: DeploymentConfig(
      strategy: strategy, bakeTime: .minutes(5),
      canary: strategy == .CANARY ? CanaryConfig(canaryPercent: 10, canaryBakeTime: .minutes(2)) : nil,
      linear: strategy == .LINEAR ? LinearConfig(stepPercent: 25, stepBakeTime: .minutes(1)) : nil,
      lifecycleHooks: hooks, alarms: alarms, circuitBreaker: breaker))
}

func httpHook(_ stages: [LifecycleStage], timeoutAction: HookTimeoutAction = .ROLLBACK) -> LifecycleHookSpec {
  LifecycleHookSpec(
    stages: stages, action: .http(url: "http://127.0.0.1:9/hook", timeout: .seconds(10)), callBackDelay: .seconds(30),
    timeoutAction: timeoutAction)
}

let hookableStages = LifecycleStage.allCases.filter(\.isHookable)

func makeEngine(_ spec: ServiceSpec, id: String = "d-1") -> DeploymentEngine {
  DeploymentEngine(
    deploymentId: id, blue: blueID, green: Revision(id: RevisionID(service: "web", number: 2), spec: spec),
    createdAt: startInstant)
}

// MARK: - The world around the engine

/// Something that goes wrong, delivered when a stage is entered.
enum Injection: Hashable, Sendable, CustomStringConvertible {
  case hookFails(LifecycleStage)
  case hookTimesOut(LifecycleStage)
  case hookInProgressTwice(LifecycleStage)
  case alarm(LifecycleStage)
  case stopWithRollback(LifecycleStage)
  case stopWithoutRollback(LifecycleStage)
  case greenTasksFail
  case greenNeverHealthy
  case blueUnhealthyThenHookFails(LifecycleStage)

  var description: String {
    switch self {
    case .hookFails(let stage): return "hook FAILED at \(stage)"
    case .hookTimesOut(let stage): return "hook timed out at \(stage)"
    case .hookInProgressTwice(let stage): return "hook IN_PROGRESS twice at \(stage)"
    case .alarm(let stage): return "alarm at \(stage)"
    case .stopWithRollback(let stage): return "stop --rollback at \(stage)"
    case .stopWithoutRollback(let stage): return "stop at \(stage)"
    case .greenTasksFail: return "green tasks fail"
    case .greenNeverHealthy: return "green never healthy"
    case .blueUnhealthyThenHookFails(let stage): return "blue unhealthy, then hook FAILED at \(stage)"
    }
  }
}

/// A scheduled delivery. `survivesCrash` marks facts of the world (task health, alarms, a person's
/// request), as opposed to messages to the leader process (hook answers, timers).
struct Delivery {
  var at: Instant
  var sequence: Int
  var event: DeploymentEngine.Event
  var survivesCrash: Bool
}

/// Drives one engine with a fake clock: answers its effects as a real world would (tasks become
/// healthy 2 s after a scale-up, hooks answer after 1 s by their script, timers fire on time) and
/// records a readable trace of everything the engine asked for.
struct Simulation {
  var engine: DeploymentEngine
  var now = startInstant
  var pending: [Delivery] = []
  var sequence = 0
  var trace: [String] = []
  var effects: [DeploymentEngine.Effect] = []
  var hookCalls: [String: Int] = [:]
  var injection: Injection?
  var injectedStages: Set<LifecycleStage> = []
  var productionChanges: [(at: Instant, weight: WeightSplit)] = []
  var steps = 0

  static let hookLatency = TimeSpan.seconds(1)
  static let taskStartLatency = TimeSpan.seconds(2)

  init(engine: DeploymentEngine, injection: Injection? = nil) {
    self.engine = engine
    self.injection = injection
  }

  var isDone: Bool { engine.status.isTerminal || pending.isEmpty }

  mutating func start() {
    let before = (engine.stage, engine.status)
    apply(engine.start(now: now), before: before)
  }

  /// Delivers the next pending event; false when nothing is pending or the deployment finished.
  @discardableResult mutating func step() -> Bool {
    guard !engine.status.isTerminal else { return false }
    guard
      let index = pending.indices.min(by: {
        (pending[$0].at, pending[$0].sequence) < (pending[$1].at, pending[$1].sequence)
      })
    else { return false }
    let delivery = pending.remove(at: index)
    now = max(now, delivery.at)
    steps += 1
    let before = (engine.stage, engine.status)
    apply(engine.handle(delivery.event, now: now), before: before)
    return true
  }

  mutating func run(maxSteps: Int = 10_000) {
    var count = 0
    while count < maxSteps, step() { count += 1 }
  }

  /// The leader dies: the state goes through JSON, timers and in-flight hook answers are lost, the
  /// clock moves on by `clockMove`, and the new leader resumes.
  mutating func crashAndResume(clockMove: TimeSpan) throws {
    let data = try JSONEncoder().encode(engine)
    engine = try JSONDecoder().decode(DeploymentEngine.self, from: data)
    pending.removeAll { !$0.survivesCrash }
    now = now + clockMove
    for index in pending.indices where pending[index].at < now { pending[index].at = now }
    trace.append("\(stamp) -- resumed")
    let before = (engine.stage, engine.status)
    apply(engine.resume(now: now), before: before)
  }

  var stamp: String {
    let ms = (now - startInstant).milliseconds
    return ms % 1000 == 0 ? "\(ms / 1000)s" : "\(Double(ms) / 1000)s"
  }

  private mutating func deliver(_ event: DeploymentEngine.Event, after delay: TimeSpan, survivesCrash: Bool) {
    sequence += 1
    pending.append(Delivery(at: now + delay, sequence: sequence, event: event, survivesCrash: survivesCrash))
  }

  private mutating func apply(_ newEffects: [DeploymentEngine.Effect], before: (LifecycleStage?, DeploymentStatus)) {
    effects += newEffects
    var stageSeen = before.0
    var statusSeen = before.1
    for effect in newEffects {
      // Stage and status changes are read from the history entries, in order.
      if case .recordEvent(let event) = effect {
        if event.stage != stageSeen, let stage = event.stage {
          trace.append("\(stamp) stage \(stage)")
          stageSeen = stage
          enteredStage(stage)
        }
        if event.status != statusSeen {
          trace.append("\(stamp) status \(event.status)")
          statusSeen = event.status
        }
        continue
      }
      switch effect {
      case .scaleTaskSet(let revision, let count):
        trace.append("\(stamp) scale \(revision) to \(count)")
        if revision == engine.green {
          switch injection {
          case .greenNeverHealthy: break
          case .greenTasksFail:
            for index in 0..<engine.config.circuitBreaker.failureThreshold {
              deliver(
                .taskFailed(revision: revision, reason: "exit 1 (\(index))"), after: Self.taskStartLatency,
                survivesCrash: true)
            }
          default:
            deliver(
              .taskSetHealth(revision: revision, healthy: count), after: Self.taskStartLatency, survivesCrash: true)
          }
        } else if case .blueUnhealthyThenHookFails = injection {
          break  // blue stays down: the rollback cannot succeed
        } else {
          deliver(.taskSetHealth(revision: revision, healthy: count), after: Self.taskStartLatency, survivesCrash: true)
        }
      case .setWeights(let weights):
        trace.append("\(stamp) weights production \(weights.production), test \(weights.test)")
        if (productionChanges.last?.weight ?? .allBlue) != weights.production {
          productionChanges.append((now, weights.production))
        }
      case .invokeHook(let invocation):
        let context = invocation.context
        trace.append("\(stamp) hook \(invocation.hookIndex) \(context.lifecycleStage) attempt \(context.attempt)")
        let calls = hookCalls[context.executionId, default: 0]
        hookCalls[context.executionId] = calls + 1
        let outcome = scriptedOutcome(stage: context.lifecycleStage, call: calls)
        let delay = outcome == .timedOut ? invocation.hook.action.timeout : Self.hookLatency
        deliver(.hookResult(HookResult(answering: invocation, outcome: outcome)), after: delay, survivesCrash: false)
      case .scheduleWakeUp(let at):
        trace.append("\(stamp) wake at \(Double((at - startInstant).milliseconds) / 1000)s")
        sequence += 1
        pending.append(Delivery(at: at, sequence: sequence, event: .wakeUp, survivesCrash: false))
      case .stopTaskSet(let revision):
        trace.append("\(stamp) stop \(revision)")
      case .requestRefused(let reason):
        trace.append("\(stamp) refused: \(reason)")
      case .recordEvent:
        break
      }
    }
  }

  private func scriptedOutcome(stage: LifecycleStage, call: Int) -> HookOutcome {
    switch injection {
    case .hookFails(stage), .blueUnhealthyThenHookFails(stage): return .failed(reason: "smoke test failed")
    case .hookTimesOut(stage): return .timedOut
    case .hookInProgressTwice(stage): return call < 2 ? .inProgress : .succeeded
    default: return .succeeded
    }
  }

  private mutating func enteredStage(_ stage: LifecycleStage) {
    guard injectedStages.insert(stage).inserted else { return }
    switch injection {
    case .alarm(stage):
      deliver(
        .alarmFired(alarm: "errors", reason: "5xx rate 0.5 > 0.05"), after: .milliseconds(500), survivesCrash: true)
    case .stopWithRollback(stage):
      deliver(.stopRequested(rollback: true, requestedBy: "alice"), after: .milliseconds(500), survivesCrash: true)
    case .stopWithoutRollback(stage):
      deliver(.stopRequested(rollback: false, requestedBy: "alice"), after: .milliseconds(500), survivesCrash: true)
    case .blueUnhealthyThenHookFails(stage):
      deliver(.taskSetHealth(revision: blueID, healthy: 0), after: .milliseconds(100), survivesCrash: true)
    default:
      break
    }
  }

  /// Time from entering BAKE_TIME to entering CLEAN_UP, nil if CLEAN_UP was never reached.
  var bakeTime: TimeSpan? {
    let timeline = engine.stageTimeline
    guard let bake = timeline.first(where: { $0.stage == .BAKE_TIME }),
      let clean = timeline.first(where: { $0.stage == .CLEAN_UP })
    else { return nil }
    return clean.enteredAt - bake.enteredAt
  }

  /// Time between the first and the last production weight change (the strategy's step waits).
  var shiftTime: TimeSpan {
    guard let first = productionChanges.first, let last = productionChanges.last else { return .zero }
    return last.at - first.at
  }
}

/// A small seeded generator (SplitMix64) so that property tests replay exactly.
struct SeededGenerator: RandomNumberGenerator {
  var state: UInt64
  init(seed: UInt64) { state = seed }
  mutating func next() -> UInt64 {
    state &+= 0x9E37_79B9_7F4A_7C15
    var z = state
    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
    z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
    return z ^ (z >> 31)
  }
}
