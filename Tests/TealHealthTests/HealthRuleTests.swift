// The shared health rule and threshold tracker (pure).

import TealHealth
import Testing

@Suite("Health rule")
struct HealthRuleTests {
  @Test("only 2xx passes: a redirect, an informational, a client or server error fails")
  func onlyTwoHundredsPass() {
    for status in [200, 201, 204, 299] { #expect(HealthRule.passes(httpStatus: status), "\(status)") }
    for status in [100, 199, 300, 301, 302, 304, 307, 400, 404, 500, 503] {
      #expect(!HealthRule.passes(httpStatus: status), "\(status)")
    }
  }
}

@Suite("HealthTracker thresholds")
struct HealthTrackerTests {
  @Test("healthy only after healthyThreshold consecutive passes")
  func healthyAfterConsecutivePasses() {
    var tracker = HealthTracker(healthyThreshold: 3, unhealthyThreshold: 2)
    #expect(tracker.record(passed: true) == nil)
    #expect(tracker.record(passed: true) == nil)
    #expect(tracker.record(passed: false, excusable: true) == nil)  // resets the passes
    #expect(tracker.record(passed: true) == nil)
    #expect(tracker.record(passed: true) == nil)
    #expect(tracker.record(passed: true) == .healthy)
    #expect(tracker.record(passed: true) == nil)  // no repeated transition
  }

  @Test("unhealthy only after unhealthyThreshold consecutive failures that are not excused")
  func unhealthyAfterConsecutiveFailures() {
    var tracker = HealthTracker(healthyThreshold: 1, unhealthyThreshold: 2)
    #expect(tracker.record(passed: false, excusable: true) == nil)
    #expect(tracker.record(passed: false, excusable: true) == nil)
    #expect(tracker.record(passed: false, excusable: true) == nil)
    #expect(tracker.status == .unknown)
    #expect(tracker.record(passed: false) == nil)
    #expect(tracker.record(passed: true) == .healthy)
    #expect(tracker.record(passed: false) == nil)
    #expect(tracker.record(passed: false) == .unhealthy)
    #expect(tracker.record(passed: false) == nil)
    #expect(tracker.record(passed: true) == .healthy)
  }

  @Test("excuses stop once a probe passed (the start period ends at the first pass)")
  func excusesEndAtFirstPass() {
    var tracker = HealthTracker(healthyThreshold: 1, unhealthyThreshold: 1)
    #expect(tracker.record(passed: false, excusable: true) == nil)
    #expect(tracker.record(passed: true, excusable: true) == .healthy)
    #expect(tracker.record(passed: false, excusable: true) == .unhealthy)
  }

  @Test("with firstResultDecides the first result decides, then the thresholds apply")
  func firstResultDecides() {
    var passing = HealthTracker(healthyThreshold: 3, unhealthyThreshold: 3, firstResultDecides: true)
    #expect(passing.record(passed: true) == .healthy)
    var failing = HealthTracker(healthyThreshold: 3, unhealthyThreshold: 3, firstResultDecides: true)
    #expect(failing.record(passed: false) == .unhealthy)
    #expect(failing.record(passed: true) == nil)
    #expect(failing.record(passed: true) == nil)
    #expect(failing.record(passed: true) == .healthy)
  }

  @Test("markUnhealthy is immediate and recovery needs healthyThreshold passes")
  func markUnhealthy() {
    var tracker = HealthTracker(healthyThreshold: 2, unhealthyThreshold: 3, firstResultDecides: true)
    _ = tracker.record(passed: true)
    #expect(tracker.markUnhealthy() == .unhealthy)
    #expect(tracker.markUnhealthy() == nil)
    #expect(tracker.record(passed: true) == nil)
    #expect(tracker.record(passed: true) == .healthy)
  }
}
