import Testing

@testable import TealLoadBalancer

private let blue1 = TargetAddress(host: "10.0.0.1", port: 8001)
private let blue2 = TargetAddress(host: "10.0.0.2", port: 8001)
private let green1 = TargetAddress(host: "10.0.0.3", port: 8001)
private let green2 = TargetAddress(host: "10.0.0.4", port: 8001)

private func routes(blue: Int, green: Int, test: [String: Int] = [:]) -> ServiceRoutes {
  ServiceRoutes(
    generation: 1,
    targetGroups: [
      TargetGroup(revision: "blue", targets: [blue1, blue2]),
      TargetGroup(revision: "green", targets: [green1, green2]),
    ],
    productionWeights: ["blue": blue, "green": green], testWeights: test)
}

private func makeRouter(blue: Int, green: Int, healthy: Set<TargetAddress> = [blue1, blue2, green1, green2])
  -> WeightedRouter
{
  WeightedRouter(routes: routes(blue: blue, green: green), healthyTargets: healthy)
}

@Suite("Weighted routing")
struct WeightedRoutingTests {
  @Test func splitIsExactOverEveryFullCycleOfWeights() {
    var router = makeRouter(blue: 1, green: 9)
    for _ in 0..<50 {
      var counts: [String: Int] = [:]
      for _ in 0..<10 { counts[router.pick(.production)!.revision, default: 0] += 1 }
      #expect(counts == ["blue": 1, "green": 9])
    }
  }

  @Test func smoothPickerInterleavesInsteadOfBursting() {
    var router = makeRouter(blue: 1, green: 1)
    let picks = (0..<20).map { _ in router.pick(.production)!.revision }
    for index in 1..<picks.count { #expect(picks[index] != picks[index - 1]) }
  }

  @Test func targetsInsideAGroupAreUsedRoundRobin() {
    var router = makeRouter(blue: 1, green: 0)
    let targets = (0..<6).map { _ in router.pick(.production)!.target }
    #expect(targets == [blue1, blue2, blue1, blue2, blue1, blue2])
  }

  @Test func unhealthyTargetsNeverReceiveRequests() {
    var router = makeRouter(blue: 1, green: 1, healthy: [blue2, green1, green2])
    for _ in 0..<100 { #expect(router.pick(.production)!.target != blue1) }
  }

  @Test func groupWithoutHealthyTargetGivesItsShareToTheOthers() {
    var router = makeRouter(blue: 50, green: 50, healthy: [green1, green2])
    for _ in 0..<100 { #expect(router.pick(.production)!.revision == "green") }
  }

  @Test func weightZeroGetsNothingAndNoHealthyWeightedGroupMeansNil() {
    var zero = makeRouter(blue: 0, green: 100)
    for _ in 0..<100 { #expect(zero.pick(.production)!.revision == "green") }
    var none = makeRouter(blue: 100, green: 0, healthy: [green1])
    #expect(none.pick(.production) == nil)
  }

  @Test func listenersHaveTheirOwnWeights() {
    var router = WeightedRouter(
      routes: routes(blue: 100, green: 0, test: ["green": 1]), healthyTargets: [blue1, blue2, green1, green2])
    for _ in 0..<20 {
      #expect(router.pick(.production)!.revision == "blue")
      #expect(router.pick(.test)!.revision == "green")
    }
  }

  @Test func excludingSkipsTheFailedTarget() {
    var router = makeRouter(blue: 1, green: 0)
    for _ in 0..<10 { #expect(router.pick(.production, excluding: blue1)!.target == blue2) }
    var single = makeRouter(blue: 1, green: 1, healthy: [blue1, green1])
    for _ in 0..<10 { #expect(single.pick(.production, excluding: blue1)!.target == green1) }
    var alone = makeRouter(blue: 1, green: 0, healthy: [blue1])
    #expect(alone.pick(.production, excluding: blue1) == nil)
  }

  @Test func installSwitchesWeightsAtOnceAndKeepsHealth() {
    var router = makeRouter(blue: 100, green: 0, healthy: [blue1, green1])
    #expect(router.pick(.production)!.revision == "blue")
    router.install(routes(blue: 0, green: 100))
    for _ in 0..<10 { #expect(router.pick(.production)!.target == green1) }
    #expect(router.healthyTargets == [blue1, green1])
  }

  @Test func installDropsHealthOfRemovedTargets() {
    var router = makeRouter(blue: 1, green: 1)
    router.install(
      ServiceRoutes(
        generation: 1, targetGroups: [TargetGroup(revision: "green", targets: [green1])],
        productionWeights: ["green": 1]))
    #expect(router.healthyTargets == [green1])
    #expect(router.setHealthy(blue1, true) == false)
  }

  @Test func validationNamesTheFieldAtFault() {
    #expect(throws: RoutesError.duplicateRevision("blue")) {
      try ServiceRoutes(
        generation: 1,
        targetGroups: [TargetGroup(revision: "blue", targets: []), TargetGroup(revision: "blue", targets: [])],
        productionWeights: [:]
      ).validate()
    }
    #expect(throws: RoutesError.weightForUnknownRevision(listener: .production, revision: "red")) {
      try ServiceRoutes(generation: 1, targetGroups: [], productionWeights: ["red": 1]).validate()
    }
    #expect(throws: RoutesError.negativeWeight(listener: .test, revision: "blue", weight: -1)) {
      try routes(blue: 1, green: 1, test: ["blue": -1]).validate()
    }
    #expect(throws: RoutesError.duplicateTarget(blue1)) {
      try ServiceRoutes(
        generation: 1,
        targetGroups: [TargetGroup(revision: "a", targets: [blue1]), TargetGroup(revision: "b", targets: [blue1])],
        productionWeights: [:]
      ).validate()
    }
    #expect(throws: RoutesError.invalidTarget(revision: "a", target: TargetAddress(host: "h", port: 0))) {
      try ServiceRoutes(
        generation: 1, targetGroups: [TargetGroup(revision: "a", targets: [TargetAddress(host: "h", port: 0)])],
        productionWeights: [:]
      ).validate()
    }
    #expect(
      "\(RoutesError.weightForUnknownRevision(listener: .production, revision: "red"))".contains("productionWeights"))
  }
}

@Suite("Health tracking")
struct HealthTrackingTests {
  @Test func firstResultDecidesThenThresholdsApply() {
    var tracker = TargetHealth(healthyThreshold: 2, unhealthyThreshold: 3)
    #expect(tracker.record(blue1, passed: true) == true)
    #expect(tracker.record(blue1, passed: false) == nil)
    #expect(tracker.record(blue1, passed: false) == nil)
    #expect(tracker.record(blue1, passed: false) == false)
    #expect(tracker.record(blue1, passed: true) == nil)
    #expect(tracker.record(blue1, passed: false) == nil)
    #expect(tracker.record(blue1, passed: true) == nil)
    #expect(tracker.record(blue1, passed: true) == true)
  }

  @Test func passiveFailureIsImmediateAndNeedsFullRecovery() {
    var tracker = TargetHealth(healthyThreshold: 2, unhealthyThreshold: 3)
    _ = tracker.record(blue1, passed: true)
    #expect(tracker.recordPassiveFailure(blue1) == false)
    #expect(tracker.recordPassiveFailure(blue1) == nil)
    #expect(tracker.record(blue1, passed: true) == nil)
    #expect(tracker.record(blue1, passed: true) == true)
  }
}

@Suite("Metrics")
struct MetricsTests {
  @Test func histogramQuantilesAreBucketUpperBounds() {
    var histogram = LatencyHistogram()
    for _ in 0..<98 { histogram.record(nanoseconds: 200_000) }
    histogram.record(nanoseconds: 3_000_000)
    histogram.record(nanoseconds: 30_000_000_000)
    #expect(histogram.count == 100)
    #expect(histogram.quantileUpperBound(0.5) == 250_000)
    #expect(histogram.quantileUpperBound(0.99) == 5_000_000)
    #expect(histogram.quantileUpperBound(1.0) == 10_000_000_000)
    #expect(LatencyHistogram().quantileUpperBound(0.99) == nil)
  }

  @Test func windowIsTheDifferenceOfTwoSnapshots() {
    var traffic = ServiceTraffic(routes: routes(blue: 1, green: 0), healthyThreshold: 1, unhealthyThreshold: 1)
    traffic.recordProbe(blue1, passed: true)
    for _ in 0..<10 {
      let choice = traffic.begin(.production)!
      _ = traffic.finish(.production, choice, status: 200, nanoseconds: 100_000)
    }
    let earlier = traffic.metrics.targetGroups[TargetGroupKey(listener: .production, revision: "blue")]!
    for status in [200, 500, 503, 404] {
      let choice = traffic.begin(.production)!
      _ = traffic.finish(.production, choice, status: status, nanoseconds: 2_000_000)
    }
    let now = traffic.metrics.targetGroups[TargetGroupKey(listener: .production, revision: "blue")]!
    let window = now.subtracting(earlier)
    #expect(window.requests == 4)
    #expect(window.responses5xx == 2)
    #expect(window.serverErrorRate == 0.5)
    #expect(window.p99Seconds == 0.0025)
    #expect(now.requests == 14)
  }
}

@Suite("Service traffic bookkeeping")
struct ServiceTrafficTests {
  @Test func inFlightSurvivesRemovalUntilTheLastRequestEnds() {
    var traffic = ServiceTraffic(routes: routes(blue: 1, green: 0), healthyThreshold: 1, unhealthyThreshold: 1)
    for target in [blue1, blue2, green1] { traffic.recordProbe(target, passed: true) }
    let first = traffic.begin(.production)!
    let second = traffic.begin(.production)!
    traffic.install(routes(blue: 0, green: 1))
    #expect(traffic.begin(.production)!.revision == "green")
    #expect(traffic.inFlight["blue"] == 2)
    let firstIdle = traffic.finish(.production, first, status: 200, nanoseconds: 1)
    #expect(firstIdle.revision == nil)
    let secondIdle = traffic.finish(.production, second, status: nil, nanoseconds: 1)
    #expect(secondIdle.revision == "blue")
    #expect(traffic.inFlight["blue"] == nil)
    #expect(traffic.metrics.targetGroups[TargetGroupKey(listener: .production, revision: "blue")]?.aborted == 1)
  }

  @Test func retryMovesTheRequestAndCountsAFailureAgainstTheThreshold() {
    var traffic = ServiceTraffic(routes: routes(blue: 1, green: 0), healthyThreshold: 1, unhealthyThreshold: 3)
    for target in [blue1, blue2] { traffic.recordProbe(target, passed: true) }
    let first = traffic.begin(.production)!
    let retried = traffic.retry(.production, failed: first, excluding: []).choice!
    #expect(retried.target != first.target)
    #expect(traffic.inFlight["blue"] == 1)
    let blue = traffic.metrics.targetGroups[TargetGroupKey(listener: .production, revision: "blue")]
    #expect(blue?.requests == 1)
    #expect(blue?.retries == 1)
    #expect(blue?.connectFailures == 1)
    #expect(blue?.inFlight == 1)
  }

  /// Item 10: before, one connect failure on the data path took a target out at once.
  @Test func dataPathFailuresFollowTheUnhealthyThreshold() {
    var traffic = ServiceTraffic(routes: routes(blue: 1, green: 0), healthyThreshold: 1, unhealthyThreshold: 3)
    for target in [blue1, blue2] { traffic.recordProbe(target, passed: true) }
    for expectedHealthy in [true, true, false] {
      var choice = traffic.begin(.production)!
      while choice.target != blue1 {
        _ = traffic.finish(.production, choice, status: 200, nanoseconds: 1)
        choice = traffic.begin(.production)!
      }
      let retried = traffic.retry(.production, failed: choice, excluding: []).choice!
      _ = traffic.finish(.production, retried, status: 200, nanoseconds: 1)
      #expect(traffic.router.healthyTargets.contains(blue1) == expectedHealthy)
    }
    // A passing probe resets the count; the thresholds apply to probes and data path alike.
    let back = traffic.recordProbe(blue1, passed: true)
    #expect(back == true)
  }

  /// Item 12: before, a retry onto another revision left the drain of the first one waiting.
  @Test func retryOntoAnotherRevisionReportsTheFailedRevisionIdle() {
    let routes = ServiceRoutes(
      generation: 1,
      targetGroups: [
        TargetGroup(revision: "blue", targets: [blue1]), TargetGroup(revision: "green", targets: [green1]),
      ],
      productionWeights: ["blue": 1, "green": 1])
    var traffic = ServiceTraffic(routes: routes, healthyThreshold: 1, unhealthyThreshold: 2)
    for target in [blue1, green1] { traffic.recordProbe(target, passed: true) }
    var choice = traffic.begin(.production)!
    if choice.revision != "blue" {
      _ = traffic.finish(.production, choice, status: 200, nanoseconds: 1)
      choice = traffic.begin(.production)!
    }
    #expect(choice.revision == "blue")
    let (retried, idle) = traffic.retry(.production, failed: choice, excluding: [])
    #expect(retried?.revision == "green")
    #expect(idle == BecameIdle(revision: "blue", target: blue1))
    #expect(traffic.inFlight["blue"] == nil)
    // Item 13: counters never go back; the request is counted in blue (routed, retried elsewhere)
    // and in green (routed), and each group's in-flight count follows.
    let blue = traffic.metrics.targetGroups[TargetGroupKey(listener: .production, revision: "blue")]!
    let green = traffic.metrics.targetGroups[TargetGroupKey(listener: .production, revision: "green")]!
    #expect(blue.requests == 1)
    #expect(blue.retriedElsewhere == 1)
    #expect(blue.inFlight == 0)
    #expect(green.requests == 1)
    #expect(green.inFlight == 1)
  }

  @Test func aDeregisteredTargetGetsNothingWhateverItsProbes() {
    var traffic = ServiceTraffic(routes: routes(blue: 1, green: 0), healthyThreshold: 1, unhealthyThreshold: 1)
    for target in [blue1, blue2] { traffic.recordProbe(target, passed: true) }
    let inFlight = traffic.begin(.production)!
    let deregistered = traffic.deregister(inFlight.target)
    #expect(deregistered)
    #expect(traffic.inFlightByTarget[inFlight.target] == 1)
    traffic.recordProbe(inFlight.target, passed: true)
    traffic.install(routes(blue: 1, green: 1))
    for _ in 0..<10 {
      let choice = traffic.begin(.production)!
      #expect(choice.target != inFlight.target)
      _ = traffic.finish(.production, choice, status: 200, nanoseconds: 1)
    }
    let idle = traffic.finish(.production, inFlight, status: 200, nanoseconds: 1)
    #expect(idle.target == inFlight.target)
    let unknown = traffic.deregister(TargetAddress(host: "10.9.9.9", port: 1))
    #expect(!unknown)
  }

  @Test func noHealthyTargetIsCountedPerListener() {
    var traffic = ServiceTraffic(routes: routes(blue: 1, green: 0), healthyThreshold: 1, unhealthyThreshold: 1)
    #expect(traffic.begin(.production) == nil)
    #expect(traffic.metrics.noHealthyTarget[.production] == 1)
  }
}

/// Before: every node's router started at the same position, so with three nodes and three tasks
/// each node sent its first request to the same task.
@Suite("Round-robin seed")
struct RoundRobinSeedTests {
  private static let tasks = [
    TargetAddress(host: "10.0.1.1", port: 8001), TargetAddress(host: "10.0.1.2", port: 8001),
    TargetAddress(host: "10.0.1.3", port: 8001),
  ]

  @Test func seedsStartAtDifferentTargetsOfAGroup() {
    let routes = ServiceRoutes(
      generation: 1, targetGroups: [TargetGroup(revision: "demo", targets: Self.tasks)],
      productionWeights: ["demo": 1])
    var firsts: [TargetAddress] = []
    for seed: UInt64 in 0..<3 {
      var router = WeightedRouter(routes: routes, healthyTargets: Set(Self.tasks), seed: seed)
      firsts.append(router.pick(.production)!.target)
      // Every task still gets one request of every three.
      var counts: [TargetAddress: Int] = [:]
      for _ in 0..<30 { counts[router.pick(.production)!.target, default: 0] += 1 }
      #expect(counts == [Self.tasks[0]: 10, Self.tasks[1]: 10, Self.tasks[2]: 10])
    }
    #expect(Set(firsts).count == 3, "\(firsts)")
  }

  @Test func seedsStartAtDifferentGroupsAndKeepTheWeightsOverEveryCycle() {
    let healthy: Set<TargetAddress> = [blue1, blue2, green1, green2]
    var zero = WeightedRouter(routes: routes(blue: 1, green: 3), healthyTargets: healthy, seed: 0)
    var one = WeightedRouter(routes: routes(blue: 1, green: 3), healthyTargets: healthy, seed: 1)
    let zeroPicks = (0..<40).map { _ in zero.pick(.production)! }
    let onePicks = (0..<40).map { _ in one.pick(.production)! }
    #expect(zeroPicks[0].target != onePicks[0].target)
    #expect(zeroPicks.map(\.revision) != onePicks.map(\.revision), "another position in the cycle")
    for picks in [zeroPicks, onePicks] {
      for cycle in 0..<10 {
        let window = picks[(cycle * 4)..<(cycle * 4 + 4)]
        #expect(window.filter { $0.revision == "blue" }.count == 1)
        #expect(window.filter { $0.revision == "green" }.count == 3)
      }
    }
  }

  @Test func theSameSeedGivesTheSameSequence() {
    let healthy: Set<TargetAddress> = [blue1, blue2, green1, green2]
    var first = WeightedRouter(routes: routes(blue: 2, green: 5), healthyTargets: healthy, seed: 12_345)
    var second = WeightedRouter(routes: routes(blue: 2, green: 5), healthyTargets: healthy, seed: 12_345)
    let a = (0..<50).map { _ in first.pick(.production)! }
    let b = (0..<50).map { _ in second.pick(.production)! }
    #expect(a == b)
  }

  /// The seed also holds when health arrives one target at a time (as the first probes do).
  @Test func theSeedHoldsWhenTargetsBecomeHealthyOneByOne() {
    let routes = ServiceRoutes(
      generation: 1, targetGroups: [TargetGroup(revision: "demo", targets: Self.tasks)],
      productionWeights: ["demo": 1])
    var firsts: [TargetAddress] = []
    for seed: UInt64 in 0..<3 {
      var traffic = ServiceTraffic(routes: .empty, healthyThreshold: 1, unhealthyThreshold: 1, roundRobinSeed: seed)
      traffic.install(routes)
      for task in Self.tasks { traffic.recordProbe(task, passed: true) }
      firsts.append(traffic.begin(.production)!.target)
    }
    #expect(Set(firsts).count == 3, "\(firsts)")
  }
}
