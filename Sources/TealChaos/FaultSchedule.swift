// The fault schedule: a scenario's entries expanded (repeats, random faults drawn from the seed)
// into planned faults, and when each is due given what the deployment has done so far.

import Foundation
import TealDeploy
import TealWire

/// One fault the run will fire.
public struct PlannedFault: Hashable, Sendable {
  /// 0, 1, ... in the order of the file (repeats next to their entry), random ones last.
  public var index: Int
  public var action: FaultAction
  public var trigger: FaultTrigger
  /// Where it came from: `faults[2]` (line 14), `faults[2] #3`, `random #4`.
  public var origin: String

  public init(index: Int, action: FaultAction, trigger: FaultTrigger, origin: String) {
    self.index = index
    self.action = action
    self.trigger = trigger
    self.origin = origin
  }
}

/// What the deployment has shown so far, as the schedule needs it (log times).
public struct DeploymentProgress: Sendable {
  /// When the run submitted the deployment.
  public var startedAt: Date
  /// Every stage entered and when.
  public var stages: [(stage: LifecycleStage, enteredAt: Date)]
  /// The configured bake time, seconds.
  public var bakeSeconds: Double
  /// When each production traffic step began (the n-th at index n-1).
  public var steps: [Date]
  /// The deployment reached its final status.
  public var finished: Bool

  public init(
    startedAt: Date, stages: [(stage: LifecycleStage, enteredAt: Date)] = [], bakeSeconds: Double = 0,
    steps: [Date] = [], finished: Bool = false
  ) {
    self.startedAt = startedAt
    self.stages = stages
    self.bakeSeconds = bakeSeconds
    self.steps = steps
    self.finished = finished
  }
}

/// When a planned fault fires.
public enum FaultDue: Hashable, Sendable {
  /// At this moment (it may be past: fire at once).
  case at(Date)
  /// Its moment is not known yet.
  case notYet
  /// It can never come (the deployment finished without reaching it); the reason.
  case never(String)
}

public enum FaultSchedule {
  /// Every fault the scenario fires, in index order. `seed` and `durationMs` replace the
  /// scenario's (the command's `--seed` and `--duration`).
  /// - Throws: when the expansion is over ``ScenarioLimits/maximumPlannedFaults``, or random faults
  ///   do not fit their window.
  public static func plan(
    _ scenario: ChaosScenario, seed: UInt64? = nil, durationMs: Int64? = nil
  ) throws(ScenarioError) -> [PlannedFault] {
    var planned: [PlannedFault] = []
    func add(_ action: FaultAction, _ trigger: FaultTrigger, _ origin: String) throws(ScenarioError) {
      guard planned.count < ScenarioLimits.maximumPlannedFaults else {
        throw ScenarioError(
          field: "faults", line: nil,
          message: "more than \(ScenarioLimits.maximumPlannedFaults) faults after repeats and random faults")
      }
      planned.append(PlannedFault(index: planned.count, action: action, trigger: trigger, origin: origin))
    }
    for (number, entry) in scenario.faults.enumerated() {
      let line = entry.line.map { " (line \($0))" } ?? ""
      for repeatIndex in 0..<entry.count {
        let shift = Int64(repeatIndex) * (entry.everyMs ?? 0)
        let trigger: FaultTrigger
        switch entry.trigger {
        case .after(let value): trigger = .after(value + shift)
        case .step(let n, let offset): trigger = .step(n, offset + shift)
        case .stage(let stage, .milliseconds(let offset)): trigger = .stage(stage, .milliseconds(offset + shift))
        case .stage(let stage, .percentOfBake(let share, let plus)):
          trigger = .stage(stage, .percentOfBake(share, plusMilliseconds: plus + shift))
        }
        let origin = "faults[\(number)]" + (entry.count > 1 ? " #\(repeatIndex + 1)" : "") + line
        try add(entry.action, trigger, origin)
      }
    }
    if var random = scenario.random {
      if let seed { random.seed = seed }
      let end = random.endMs ?? durationMs ?? scenario.durationMs
      guard let end, end > random.startMs else {
        throw ScenarioError(field: "random.end", line: nil, message: "the random faults' window is empty")
      }
      for (number, fault) in try draw(random, endMs: end).enumerated() {
        try add(fault.action, .after(fault.atMs), "random #\(number + 1) (seed \(random.seed))")
      }
    }
    return planned
  }

  /// When `fault` is due, given `progress`.
  public static func due(_ fault: PlannedFault, _ progress: DeploymentProgress) -> FaultDue {
    switch fault.trigger {
    case .after(let value):
      return .at(progress.startedAt.addingTimeInterval(Double(value) / 1000))
    case .stage(let stage, let offset):
      guard let entered = progress.stages.last(where: { $0.stage == stage })?.enteredAt else {
        if progress.finished { return .never("the deployment finished without entering \(stage.rawValue)") }
        return .notYet
      }
      switch offset {
      case .milliseconds(let value): return .at(entered.addingTimeInterval(Double(value) / 1000))
      case .percentOfBake(let share, let plus):
        return .at(entered.addingTimeInterval(progress.bakeSeconds * share / 100 + Double(plus) / 1000))
      }
    case .step(let n, let offset):
      guard n <= progress.steps.count else {
        if progress.finished { return .never("the deployment finished after \(progress.steps.count) production steps") }
        return .notYet
      }
      return .at(progress.steps[n - 1].addingTimeInterval(Double(offset) / 1000))
    }
  }

  /// A random fault: its kind, target and moment.
  struct Drawn {
    var action: FaultAction
    var atMs: Int64
  }

  /// `random.count` faults (or as many as fit) in [start, end], one after the other with at least
  /// `gap` between the end of one and the start of the next, drawn from the seed (SplitMix64: the same seed, the
  /// same faults on every machine).
  static func draw(_ random: RandomFaults, endMs: Int64) throws(ScenarioError) -> [Drawn] {
    var generator = SplitMix64(seed: random.seed)
    func between(_ low: Int64, _ high: Int64) -> Int64 {
      high <= low ? low : low + Int64(generator.next() % UInt64(high - low + 1))
    }
    // Each slot is as long as the longest fault plus the gap; the faults are spread over the window.
    let slot = random.maximumForMs + random.gapMs + restartSlackMs
    let window = endMs - random.startMs
    guard slot <= window else {
      throw ScenarioError(
        field: "random", line: nil,
        message: "one fault of up to \(formatMilliseconds(random.maximumForMs)) and "
          + "\(formatMilliseconds(random.gapMs)) after it does not fit in \(formatMilliseconds(window))")
    }
    // `count` is a most: a shorter run (`--duration`) fires as many as fit.
    let count = min(random.count, Int(window / slot))
    let spare = window - Int64(count) * slot
    var faults: [Drawn] = []
    var cursor = random.startMs
    var slack = spare
    for _ in 0..<count {
      let delay = between(0, slack / 2)
      slack -= delay
      let at = cursor + delay
      let length = between(random.minimumForMs, random.maximumForMs)
      let kind = random.kinds[Int(generator.next() % UInt64(random.kinds.count))]
      let target: NodeSelector = generator.next() % 2 == 0 ? .leader : .follower
      let action: FaultAction
      switch kind {
      case "kill-leader": action = .kill(.leader, restartAfterMs: length, withTasks: false)
      case "pause": action = .pause(target, forMs: length)
      case "partition":
        action =
          generator.next() % 2 == 0
          ? .partition(target, from: nil, forMs: length)
          : .partition(.follower, from: .leader, forMs: length)
      case "loss": action = .loss(target, percent: 10 + Int(generator.next() % 31), forMs: length)
      default: action = .restartAll(atOnce: false)
      }
      faults.append(Drawn(action: action, atMs: at))
      cursor = at + slot
    }
    return faults
  }

  /// Room after a kill's restart for the node to rejoin before the next random fault.
  static let restartSlackMs: Int64 = 5_000
}
