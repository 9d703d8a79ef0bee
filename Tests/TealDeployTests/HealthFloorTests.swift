import Foundation
import TealDeploy
import TealWire
import Testing

/// The circuit breaker's health floor after SCALE_UP: green going bad trips it at once; green short
/// of tasks because a node died or restarted holds the deployment until the tasks are replaced, and
/// trips only after `healthFloorGrace`.
@Suite("Circuit breaker health floor")
struct HealthFloorTests {
  static func canary(bake: TimeSpan = .minutes(10), grace: TimeSpan? = nil) -> ServiceSpec {
    var configuration = DeploymentConfiguration(
      strategy: .CANARY, bakeTime: bake, canary: CanaryConfiguration(canaryPercent: 10, canaryBakeTime: .minutes(5)))
    if let grace { configuration.circuitBreaker.healthFloorGrace = grace }
    return makeSpec(configuration)
  }

  @Test func greenGoingUnhealthyBelowTheFloorTripsTheBreakerAtOnce() {
    var driver = Driver(Self.canary())
    driver.run(until: .BAKE_TIME)
    #expect(Deployment.healthFloor(desiredCount: 3) == 2)
    driver.send(.taskHealth(node: nodeNames[0], revision: driver.green, healthy: 0, unhealthy: 1))
    #expect(driver.deployment.status == .IN_PROGRESS, "2 of 3 is at the floor")
    driver.send(.taskHealth(node: nodeNames[1], revision: driver.green, healthy: 0, unhealthy: 1))
    #expect(driver.deployment.status == .ROLLBACK_IN_PROGRESS)
    #expect(
      driver.deployment.reason?.contains("fell to 1/3 healthy tasks after SCALE_UP (floor 2), 2 of them unhealthy")
        == true)
  }

  @Test func greenShortOfTasksHoldsTheBakeAndGoesOnOnceTheyAreReplaced() throws {
    // A 30 s bake, shorter than the default 60 s grace: the bake ends inside the grace.
    var driver = Driver(Self.canary(bake: .seconds(30)))
    driver.run(until: .BAKE_TIME)
    guard case .waiting(let bakeEnd) = driver.deployment.gate else {
      Issue.record("not baking")
      return
    }
    // n1 restarts: its green task is gone (not unhealthy), and n2's with it: 1 of 3 healthy.
    driver.send(.taskHealth(node: nodeNames[0], revision: driver.green, healthy: 0))
    driver.send(.taskHealth(node: nodeNames[1], revision: driver.green, healthy: 0))
    #expect(driver.deployment.status == .IN_PROGRESS, "missing tasks do not trip the breaker at once")
    #expect(driver.deployment.belowFloorSince == driver.now)
    #expect(driver.deployment.history.last?.message.contains("holding until they are replaced") == true)
    #expect(
      driver.deployment.nextWakeup == min(bakeEnd, driver.now + CircuitBreakerConfiguration.defaultHealthFloorGrace))

    // The bake ends while green is short: the deployment does not clean blue up.
    driver.now = bakeEnd + .seconds(10)
    driver.send(.wakeUp)
    #expect(driver.deployment.stage == .BAKE_TIME, "no clean-up of blue while green is below its floor")
    #expect(driver.deployment.desired.taskSets.contains { $0.revision == driver.blue && $0.phase == .serving })

    // The replacements pass their checks: the deployment goes on and succeeds.
    driver.send(.taskHealth(node: nodeNames[0], revision: driver.green, healthy: 1))
    #expect(driver.deployment.belowFloorSince == nil)
    #expect(driver.deployment.stage == .CLEAN_UP)
    #expect(driver.deployment.history.contains { $0.message.contains("is back at 2/3 healthy tasks (floor 2)") })
    for _ in 0..<10 where driver.deployment.isActive { driver.step() }
    #expect(driver.deployment.status == .SUCCESSFUL)
  }

  @Test func greenShortOfTasksHoldsTheTrafficShiftToo() {
    var driver = Driver(Self.canary(grace: .minutes(10)))
    driver.run(until: .PRODUCTION_TRAFFIC_SHIFT)
    driver.reportRoutes()
    let weights = driver.deployment.desired.routes.weights
    driver.send(.taskHealth(node: nodeNames[0], revision: driver.green, healthy: 0))
    driver.send(.taskHealth(node: nodeNames[1], revision: driver.green, healthy: 0))
    driver.wait(.minutes(5) + .seconds(1))
    #expect(driver.deployment.productionStep == 0, "the canary step does not move while green is short")
    #expect(driver.deployment.desired.routes.weights == weights)
    #expect(driver.deployment.status == .IN_PROGRESS)
  }

  @Test func greenShortOfTasksForLongerThanTheGraceTripsTheBreaker() {
    var driver = Driver(Self.canary(grace: .seconds(30)))
    driver.run(until: .BAKE_TIME)
    driver.send(.taskHealth(node: nodeNames[0], revision: driver.green, healthy: 0))
    driver.send(.taskHealth(node: nodeNames[1], revision: driver.green, healthy: 0))
    driver.wait(.seconds(29))
    #expect(driver.deployment.status == .IN_PROGRESS)
    driver.wait(.seconds(1))
    #expect(driver.deployment.status == .ROLLBACK_IN_PROGRESS)
    #expect(
      driver.deployment.reason
        == "circuit breaker: green web:2 stayed below its floor (1/3 healthy tasks, floor 2) for healthFloorGrace 30s "
        + "after SCALE_UP")
  }

  @Test func aGraceOfZeroTripsOnMissingTasksAtOnce() {
    var driver = Driver(Self.canary(grace: .zero))
    driver.run(until: .BAKE_TIME)
    driver.send(.taskHealth(node: nodeNames[0], revision: driver.green, healthy: 0))
    driver.send(.taskHealth(node: nodeNames[1], revision: driver.green, healthy: 0))
    #expect(driver.deployment.status == .ROLLBACK_IN_PROGRESS)
  }

  @Test func unhealthyAndMissingTasksTogetherHoldWhileTheFloorIsStillReachable() {
    var driver = Driver(Self.canary())
    driver.run(until: .BAKE_TIME)
    // One unhealthy, one missing: 3 - 1 = 2 could still be healthy, so it holds.
    driver.send(.taskHealth(node: nodeNames[0], revision: driver.green, healthy: 0, unhealthy: 1))
    driver.send(.taskHealth(node: nodeNames[1], revision: driver.green, healthy: 0))
    #expect(driver.deployment.status == .IN_PROGRESS)
    #expect(driver.deployment.belowFloorSince != nil)
    // The missing one comes back unhealthy: the floor is out of reach.
    driver.send(.taskHealth(node: nodeNames[1], revision: driver.green, healthy: 0, unhealthy: 1))
    #expect(driver.deployment.status == .ROLLBACK_IN_PROGRESS)
  }

  @Test func theStateWithoutUnhealthyTasksOrAGraceEncodesAsBefore() throws {
    let health = RevisionHealth(revision: RevisionID(service: "web", number: 2), healthy: 3)
    let encoded = String(decoding: try JSONEncoder().encode(health), as: UTF8.self)
    #expect(!encoded.contains("unhealthy"))
    #expect(try JSONDecoder().decode(RevisionHealth.self, from: Data(encoded.utf8)) == health)
    let going = RevisionHealth(revision: health.revision, healthy: 1, unhealthy: 2)
    #expect(try JSONDecoder().decode(RevisionHealth.self, from: JSONEncoder().encode(going)) == going)

    let breaker = CircuitBreakerConfiguration.default(desiredCount: 3)
    let breakerJSON = String(decoding: try JSONEncoder().encode(breaker), as: UTF8.self)
    #expect(!breakerJSON.contains("healthFloorGrace"))
    let decoded = try JSONDecoder().decode(CircuitBreakerConfiguration.self, from: Data(breakerJSON.utf8))
    #expect(decoded.healthFloorGrace == CircuitBreakerConfiguration.defaultHealthFloorGrace)
  }
}
