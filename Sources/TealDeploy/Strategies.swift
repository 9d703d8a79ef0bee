// The production traffic sequences of the three strategies.

extension DeploymentConfig {
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
    }
  }

  /// A percentage (validated to 0.1...100) in basis points, at least 1.
  static func basisPoints(_ percent: Double) -> Int {
    max(1, min(10_000, Int((percent * 100).rounded())))
  }
}
