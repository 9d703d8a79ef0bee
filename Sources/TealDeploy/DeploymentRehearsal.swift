/// A dry run of a deployment: the engine driven through an ideal world in simulated time, where
/// every task becomes healthy at once, every hook answers SUCCEEDED at once and every wake-up
/// arrives on time. It shows an operator exactly which stages, weights, hook calls and waits a
/// spec produces, before anything runs. Pure: no clock, no I/O.
public enum DeploymentRehearsal {
  /// One thing that happened, at `offset` from the start of the deployment.
  public struct Step: Hashable, Sendable, CustomStringConvertible {
    public var offset: TimeSpan
    public var stage: LifecycleStage?
    public var text: String

    public var description: String {
      let stageText = stage.map { "\($0.rawValue)" } ?? "-"
      return "+\(offset)".padding(toLength: 10) + stageText.padding(toLength: 32) + text
    }
  }

  /// Runs `spec` as the green revision over a blue revision 1 of the same service.
  /// - Returns: the steps in order and the engine's final state.
  public static func run(spec: ServiceSpec, maximumSteps: Int = 10_000) -> (steps: [Step], engine: DeploymentEngine) {
    let start = Instant(millisecondsSinceEpoch: 0)
    let blue = RevisionID(service: spec.name, number: 1)
    var engine = DeploymentEngine(
      deploymentId: "rehearsal", blue: blue, green: Revision(id: RevisionID(service: spec.name, number: 2), spec: spec),
      createdAt: start)
    var steps: [Step] = []
    // Pending events by due time; ties keep their order of arrival.
    var pending: [(due: Instant, sequence: Int, event: DeploymentEngine.Event)] = []
    var sequence = 0
    var now = start
    // The stage as the engine announced it, effect by effect (the engine's own `stage` is where it
    // ended up after a whole step).
    var stage: LifecycleStage?

    func absorb(_ effects: [DeploymentEngine.Effect]) {
      for effect in effects {
        switch effect {
        case .scaleTaskSet(let revision, let count):
          steps.append(Step(offset: now - start, stage: stage, text: "scale \(revision) to \(count) tasks"))
          pending.append((now, sequence, .taskSetHealth(revision: revision, healthy: count)))
        case .setWeights(let weights):
          steps.append(Step(offset: now - start, stage: stage, text: "weights: \(weights)"))
        case .invokeHook(let invocation):
          steps.append(
            Step(
              offset: now - start, stage: invocation.context.lifecycleStage,
              text: "call hook #\(invocation.hookIndex) (attempt \(invocation.context.attempt))"))
          pending.append((now, sequence, .hookResult(HookResult(answering: invocation, outcome: .succeeded))))
        case .scheduleWakeUp(let at):
          pending.append((at, sequence, .wakeUp))
        case .stopTaskSet(let revision):
          steps.append(Step(offset: now - start, stage: stage, text: "stop \(revision)"))
        case .recordEvent(let event):
          stage = event.stage ?? stage
          steps.append(Step(offset: event.at - start, stage: event.stage, text: event.message))
        case .requestRefused(let reason):
          steps.append(Step(offset: now - start, stage: stage, text: "refused: \(reason)"))
        }
        sequence += 1
      }
    }

    absorb(engine.start(now: now))
    var handled = 0
    while !engine.status.isTerminal, !pending.isEmpty, handled < maximumSteps {
      let next = pending.indices.min {
        (pending[$0].due, pending[$0].sequence) < (pending[$1].due, pending[$1].sequence)
      }
      guard let index = next else { break }
      let (due, _, event) = pending.remove(at: index)
      if due > now { now = due }
      absorb(engine.handle(event, now: now))
      handled += 1
    }
    return (steps, engine)
  }
}

extension String {
  fileprivate func padding(toLength length: Int) -> String {
    count >= length ? self + " " : self + String(repeating: " ", count: length - count)
  }
}
