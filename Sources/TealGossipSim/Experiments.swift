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

  /// Runs `memberCount` members with no crash for `duration` under `lossRate` loss (and, with
  /// `oneWayLink`, every message from `n1` to `n2` lost) and returns the deaths declared of live
  /// members (the aim is none) and the suspicions raised.
  public static func falsePositives(
    memberCount: Int, settings: SWIMSettings, lossRate: Double, duration: Duration, seed: UInt64,
    oneWayLink: Bool = false
  ) throws -> FalsePositiveResult {
    var sim = try GossipSimulation(memberCount: memberCount, settings: settings, network: .lan, seed: seed)
    guard sim.runUntilConverged(timeout: .seconds(30) + settings.probeInterval * memberCount) else {
      throw SimulationFailure(seed: seed, reason: "\(memberCount) members did not converge after joining")
    }
    sim.network.lossRate = lossRate
    if oneWayLink { sim.blockLink(from: GossipSimulation.nodeID(1), to: GossipSimulation.nodeID(2)) }
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

extension GossipExperiments {
  /// One member (the last) loses every message it sends for `duration`, at a random phase;
  /// returns the deaths declared of it (the aim is none while the outage is shorter than a
  /// transport reconnect).
  public static func outboundOutage(
    memberCount: Int, settings: SWIMSettings = SWIMSettings(), duration: Duration, seed: UInt64
  ) throws -> OutageResult {
    var sim = try GossipSimulation(memberCount: memberCount, settings: settings, seed: seed)
    guard sim.runUntilConverged(timeout: .seconds(30) + settings.probeInterval * memberCount) else {
      throw SimulationFailure(seed: seed, reason: "\(memberCount) members did not converge after joining")
    }
    var random = SplitMix64(seed: seed ^ 0x0A7A_6E)
    sim.run(for: SWIMCore.multiply(settings.probeInterval, by: Double(random.next() % 1000) / 1000))
    let victim = GossipSimulation.nodeID(memberCount)
    sim.outboundOutage(victim, for: duration)
    sim.run(for: duration + .seconds(10))
    return OutageResult(
      falseDeaths: sim.falsePositives.count, convergedAfter: sim.runUntilConverged(timeout: .seconds(30)),
      invariantViolations: sim.invariantViolations)
  }

  /// The liveness run: `memberCount` members with signed records, of which the last forges
  /// records on every message, go through `duration` of random faults, one started every
  /// second (a one-way link until the end, an outbound outage of 0.5 to 5 s, a pause of 0.1 to
  /// 2 s, an in-order stall of a link for 0.5 to 3 s) with 5 % of timers up to 150 ms late.
  /// Then the faults end, and every live member must see every live member alive, with its
  /// current metadata, within `livenessTimeout`.
  public static func faultStorm(
    memberCount: Int, settings: SWIMSettings = SWIMSettings(), seed: UInt64, duration: Duration = .seconds(20),
    livenessTimeout: Duration = .seconds(30)
  ) throws -> FaultStormResult {
    var sim = try GossipSimulation(memberCount: memberCount, settings: settings, seed: seed, signRecords: true)
    guard sim.runUntilConverged(timeout: .seconds(30) + settings.probeInterval * memberCount) else {
      throw SimulationFailure(seed: seed, reason: "\(memberCount) members did not converge after joining")
    }
    var random = SplitMix64(seed: seed ^ 0x57_0A_11)
    func pick(_ count: Int) -> Int { Int(random.next() % UInt64(count)) }
    func between(_ low: Int, _ high: Int) -> Duration { .milliseconds(low + pick(high - low + 1)) }
    let ids = sim.nodes
    sim.forger = ids[ids.count - 1]
    sim.lateTimerProbability = 0.05
    sim.maximumTimerLateness = .milliseconds(150)
    let end = sim.now + duration
    while sim.now < end {
      let a = ids[pick(ids.count)]
      var b = ids[pick(ids.count)]
      if a == b { b = ids[(ids.firstIndex(of: a)! + 1) % ids.count] }
      switch pick(4) {
      case 0: sim.blockLink(from: a, to: b)
      case 1: sim.outboundOutage(a, for: between(500, 5000))
      case 2: sim.pause(a, for: between(100, 2000))
      default: sim.stall(from: a, to: b, for: between(500, 3000))
      }
      sim.run(for: .seconds(1))
    }
    let forged = sim.forgedRecordsSent
    sim.endFaults()
    let faultsEnded = sim.now
    let deathsDuring = sim.falsePositives.count
    let converged = sim.run(timeout: livenessTimeout, checkEvery: .milliseconds(50)) { $0.isConverged }
    var rejected = 0
    for id in ids { rejected += sim.core(id)?.statistics.updatesRejected ?? 0 }
    return FaultStormResult(
      convergedAfterFaults: converged.map { $0 - faultsEnded }, falseDeathsDuringFaults: deathsDuring,
      forgedRecords: forged, updatesRejected: rejected, invariantViolations: sim.invariantViolations)
  }
}

/// The outcome of `GossipExperiments.outboundOutage`.
public struct OutageResult: Sendable {
  public let falseDeaths: Int
  public let convergedAfter: Bool
  public let invariantViolations: [String]
}

/// The outcome of `GossipExperiments.faultStorm`.
public struct FaultStormResult: Sendable {
  /// From the end of the faults until every live member saw every live member alive with its
  /// metadata; nil if that did not happen within the timeout (a liveness failure).
  public let convergedAfterFaults: Duration?
  /// Deaths of live members declared while the faults lasted (outages longer than the
  /// suspicion can cause them; the members must come back afterwards).
  public let falseDeathsDuringFaults: Int
  public let forgedRecords: Int
  public let updatesRejected: Int
  public let invariantViolations: [String]
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
