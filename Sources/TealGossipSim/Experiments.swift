import TealGossip
import TealWire

// MARK: - Experiments shared by the tests and the benchmark

/// Summary statistics of a sample of durations.
public struct DurationSummary: Sendable, CustomStringConvertible {
  public let count: Int
  public let p50: Duration
  public let p99: Duration
  public let max: Duration

  public init?(_ samples: [Duration]) {
    guard !samples.isEmpty else { return nil }
    let sorted = samples.sorted()
    func percentile(_ p: Double) -> Duration {
      let rank = Int((p * Double(sorted.count)).rounded(.up)) - 1
      return sorted[Swift.max(0, Swift.min(sorted.count - 1, rank))]
    }
    count = sorted.count
    p50 = percentile(0.5)
    p99 = percentile(0.99)
    max = sorted[sorted.count - 1]
  }

  public var description: String {
    "n=\(count) p50=\(Self.milliseconds(p50)) ms p99=\(Self.milliseconds(p99)) ms max=\(Self.milliseconds(max)) ms"
  }

  public static func milliseconds(_ duration: Duration) -> Int {
    let (seconds, attoseconds) = duration.components
    return Int(seconds) * 1000 + Int(attoseconds / 1_000_000_000_000_000)
  }
}

/// The outcome of one crash-detection run.
public struct CrashDetectionResult: Sendable {
  /// From the crash until the first live member declared the crashed one dead.
  public let firstDetection: Duration?
  /// From the crash until every live member had declared it dead (nil: not within the timeout).
  public let allDetected: Duration?
  public let falsePositives: Int
  /// See `GossipSimulation.invariantViolations`.
  public let invariantViolations: [String]
}

public enum GossipExperiments {
  /// Starts `memberCount` members, lets them converge, runs `warmUp` more, crashes one member
  /// (not a seed) at a random moment and measures until every live member declares it dead.
  public static func crashDetection(
    memberCount: Int, settings: SWIMSettings, network: NetworkConditions = .lan, seed: UInt64,
    timeout: Duration = .seconds(60)
  ) throws -> CrashDetectionResult {
    var sim = try GossipSimulation(memberCount: memberCount, settings: settings, network: network, seed: seed)
    guard sim.runUntilConverged(timeout: .seconds(30) + settings.probeInterval * memberCount) else {
      throw SimulationFailure(seed: seed, reason: "\(memberCount) members did not converge after joining")
    }
    // Crash at a random phase of the probe cycle.
    var random = SplitMix64(seed: seed ^ 0xC4A5_11ED)
    let phase = SWIMCore.multiply(settings.probeInterval, by: Double(random.next() % 1000) / 1000)
    sim.run(for: settings.probeInterval * 2 + phase)
    let victim = GossipSimulation.nodeID(memberCount)
    sim.crash(victim)
    let crashedAt = sim.now
    let survivors = sim.liveNodes
    let allAt = sim.run(timeout: timeout, checkEvery: .milliseconds(5)) { sim in
      survivors.allSatisfy { sim.status(of: victim, seenBy: $0) == .dead }
    }
    let first = sim.deaths.first { $0.subject == victim }?.time
    return CrashDetectionResult(
      firstDetection: first.map { $0 - crashedAt }, allDetected: allAt.map { $0 - crashedAt },
      falsePositives: sim.falsePositives.count, invariantViolations: sim.invariantViolations)
  }

  /// Runs `memberCount` members with no crash for `duration` under `lossRate` loss and returns
  /// the deaths declared of live members (the aim is none) and the suspicions raised.
  public static func falsePositives(
    memberCount: Int, settings: SWIMSettings, lossRate: Double, duration: Duration, seed: UInt64
  ) throws -> FalsePositiveResult {
    var sim = try GossipSimulation(memberCount: memberCount, settings: settings, network: .lan, seed: seed)
    guard sim.runUntilConverged(timeout: .seconds(30) + settings.probeInterval * memberCount) else {
      throw SimulationFailure(seed: seed, reason: "\(memberCount) members did not converge after joining")
    }
    sim.network.lossRate = lossRate
    let sentBefore = sim.messagesDelivered + sim.messagesDropped
    sim.run(for: duration)
    let sent = sim.messagesDelivered + sim.messagesDropped - sentBefore
    let seconds = Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
    var suspicions = 0
    var refutations = 0
    for id in sim.nodes {
      suspicions += sim.core(id)?.statistics.suspicionsRaised ?? 0
      refutations += sim.core(id)?.statistics.refutations ?? 0
    }
    return FalsePositiveResult(
      falsePositives: sim.falsePositives, suspicions: suspicions, refutations: refutations,
      messagesPerMemberPerSecond: Double(sent) / Double(memberCount) / seconds,
      invariantViolations: sim.invariantViolations)
  }
}

/// The outcome of one run under loss without crashes.
public struct FalsePositiveResult: Sendable {
  /// Deaths declared of members that had neither crashed nor left (the aim is none).
  public let falsePositives: [DeathRecord]
  public let suspicions: Int
  public let refutations: Int
  /// Gossip messages each member sent per second, on average.
  public let messagesPerMemberPerSecond: Double
  /// See `GossipSimulation.invariantViolations`.
  public let invariantViolations: [String]
}

/// A simulation run that broke an expectation, with the seed that replays it.
public struct SimulationFailure: Error, CustomStringConvertible {
  public let seed: UInt64
  public let reason: String
  public var description: String { "seed \(seed): \(reason)" }
}
