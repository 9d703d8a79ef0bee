// The production traffic sequences of the three strategies.

extension DeploymentConfiguration {
  /// Green's production share after each step of PRODUCTION_TRAFFIC_SHIFT, ending at 100 %.
  ///
  /// - BLUE_GREEN: `[100]`.
  /// - CANARY: `[canaryPercent, 100]` (just `[100]` when canaryPercent is 100).
  /// - LINEAR: `[s, 2s, 3s, ..., 100]`, the last step capped at 100.
  ///
  /// Invariant: strictly increasing, every element in 1...10_000 basis points, last is 10_000.
  public var productionWeightSteps: [WeightSplit] {
    switch strategy {
    case .BLUE_GREEN:
      return [.allGreen]
    case .CANARY:
      let canary = Self.basisPoints(canary?.canaryPercent ?? 100)
      return canary < 10_000 ? [WeightSplit(greenBasisPoints: canary), .allGreen] : [.allGreen]
    case .STEPS:
      var result: [WeightSplit] = []
      for percent in steps?.percents ?? [] {
        let split = WeightSplit(greenBasisPoints: Self.basisPoints(percent))
        if let last = result.last, split.greenBasisPoints <= last.greenBasisPoints { continue }
        result.append(split)
      }
      if result.last != .allGreen { result.append(.allGreen) }
      return result
    case .LINEAR:
      let step = Self.basisPoints(linear?.stepPercent ?? 100)
      var steps: [WeightSplit] = []
      var green = step
      while green < 10_000 {
        steps.append(WeightSplit(greenBasisPoints: green))
        green += step
      }
      steps.append(.allGreen)
      return steps
    }
  }

  /// How long each production step before the last one is held before the next step.
  public var productionStepWait: TimeSpan {
    switch strategy {
    case .BLUE_GREEN: return .zero
    case .CANARY: return canary?.canaryBakeTime ?? .zero
    case .LINEAR: return linear?.stepBakeTime ?? .zero
    case .STEPS: return steps?.stepBakeTime ?? .zero
    }
  }

  /// The wait after production step `index` (0 for the first), before the next step.
  public func productionStepWait(after index: Int) -> TimeSpan { productionStepWait }

  /// What the deployment takes with hooks answering at once and tasks healthy at once: the waits
  /// between production steps plus bake time.
  public var plannedDuration: TimeSpan {
    let waits = Int64(max(0, productionWeightSteps.count - 1))
    return TimeSpan(milliseconds: waits.multipliedReportingOverflow(by: productionStepWait.milliseconds).partialValue)
      + bakeTime
  }

  /// A percentage (validated to 0.1...100) in basis points, at least 1.
  static func basisPoints(_ percent: Double) -> Int {
    max(1, min(10_000, Int((percent * 100).rounded())))
  }

  /// The longest a deployment of this configuration can take before it ends one way or another:
  /// every hook execution runs to its overall timeout with CONTINUE, scale-up takes its whole
  /// timeout, every wait and bake time is served, then a rollback waits its longest (blue restored
  /// at its timeout, green's stop delay, blue confirmed at its timeout). Capped by
  /// `progressDeadline` plus the rollback, when set. Drain and stop times of the nodes are not
  /// counted (they are the nodes' own).
  public var worstCaseDuration: TimeSpan {
    var forward = TimeSpan.zero
    let steps = productionWeightSteps.count
    for hook in lifecycleHooks {
      for stage in hook.stages {
        let executions = stage == .PRODUCTION_TRAFFIC_SHIFT && hook.everyStep ? steps : 1
        forward = forward + TimeSpan(milliseconds: hook.overallTimeout.milliseconds * Int64(executions))
      }
    }
    forward = forward + circuitBreaker.scaleUpTimeout + plannedDuration
    let rollback = rollbackTimeout + abortScaleDownDelay + rollbackTimeout
    if let progressDeadline, progressDeadline < forward { return progressDeadline + rollback }
    return forward + rollback
  }
}
