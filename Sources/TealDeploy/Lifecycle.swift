// The vocabulary of a deployment, in ECS's words: lifecycle stages, statuses, traffic weights.

/// The lifecycle stages of a blue/green deployment, in the order ECS runs them.
///
/// Invariant: a deployment's stage only moves forward in this order; a rollback changes the
/// deployment's status, never its stage.
public enum LifecycleStage: String, Codable, Hashable, Sendable, CaseIterable, Comparable {
  case RECONCILE_SERVICE
  case PRE_SCALE_UP
  case SCALE_UP
  case POST_SCALE_UP
  case TEST_TRAFFIC_SHIFT
  case POST_TEST_TRAFFIC_SHIFT
  case PRODUCTION_TRAFFIC_SHIFT
  case POST_PRODUCTION_TRAFFIC_SHIFT
  case BAKE_TIME
  case CLEAN_UP

  /// Position in the lifecycle, 0 for RECONCILE_SERVICE.
  public var ordinal: Int { Self.allCases.firstIndex(of: self) ?? 0 }

  /// Stages at which lifecycle hooks may run (all but SCALE_UP, BAKE_TIME and CLEAN_UP).
  public var isHookable: Bool { self != .SCALE_UP && self != .BAKE_TIME && self != .CLEAN_UP }

  /// The stage after this one, nil after CLEAN_UP.
  public var next: LifecycleStage? {
    let all = Self.allCases
    let index = ordinal + 1
    return index < all.count ? all[index] : nil
  }

  public static func < (lhs: LifecycleStage, rhs: LifecycleStage) -> Bool { lhs.ordinal < rhs.ordinal }
}

/// A deployment's status, as ECS names them.
public enum DeploymentStatus: String, Codable, Hashable, Sendable, CaseIterable {
  case PENDING
  case IN_PROGRESS
  case STOP_REQUESTED
  case ROLLBACK_REQUESTED
  case ROLLBACK_IN_PROGRESS
  case SUCCESSFUL
  case STOPPED
  case ROLLBACK_SUCCESSFUL
  case ROLLBACK_FAILED

  /// True once the deployment can no longer change.
  public var isTerminal: Bool {
    switch self {
    case .SUCCESSFUL, .STOPPED, .ROLLBACK_SUCCESSFUL, .ROLLBACK_FAILED: return true
    default: return false
    }
  }
}

/// How one listener splits its traffic between blue and green, in basis points (1/100 of a percent).
///
/// Invariant: `blueBasisPoints + greenBasisPoints == 10_000`, both non-negative. Integers keep the
/// sum exact for fractional canary percentages such as 0.1 %.
public struct WeightSplit: Codable, Hashable, Sendable, CustomStringConvertible {
  public private(set) var greenBasisPoints: Int
  public var blueBasisPoints: Int { 10_000 - greenBasisPoints }

  /// A split sending `greenBasisPoints` (clamped to 0...10_000) to green and the rest to blue.
  public init(greenBasisPoints: Int) { self.greenBasisPoints = min(10_000, max(0, greenBasisPoints)) }

  public static let allBlue = WeightSplit(greenBasisPoints: 0)
  public static let allGreen = WeightSplit(greenBasisPoints: 10_000)

  /// Green's share in percent (e.g. 12.5).
  public var greenPercent: Double { Double(greenBasisPoints) / 100 }
  /// Blue's share in percent.
  public var bluePercent: Double { Double(blueBasisPoints) / 100 }

  public var description: String { "blue \(Self.format(blueBasisPoints))/green \(Self.format(greenBasisPoints))" }

  static func format(_ basisPoints: Int) -> String {
    basisPoints % 100 == 0 ? "\(basisPoints / 100)" : "\(Double(basisPoints) / 100)"
  }
}

/// The weights of both listeners of a service.
public struct TrafficWeights: Codable, Hashable, Sendable, CustomStringConvertible {
  public var production: WeightSplit
  public var test: WeightSplit

  public init(production: WeightSplit, test: WeightSplit) {
    self.production = production
    self.test = test
  }

  /// Both listeners entirely on blue: the state before a deployment and after a rollback.
  public static let allBlue = TrafficWeights(production: .allBlue, test: .allBlue)

  public var description: String { "production \(production), test \(test)" }
}
