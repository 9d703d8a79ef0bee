import Foundation
import TealChaos
import TealDeploy
import Testing

@Suite("The chaos report")
struct ReportTests {
  let start = Date(timeIntervalSince1970: 2_000_000)

  func at(_ seconds: Double) -> Date { start.addingTimeInterval(seconds) }
  func ns(_ seconds: Double) -> Int64 { Int64((start.timeIntervalSince1970 + seconds) * 1e9) }

  /// A run of 20 s: a deployment whose bake ran 6 s (configured 6 s), n3 the leader killed at 10 s and
  /// back at 12 s, n1 leading from 11 s; requests on three listeners.
  func observations(extraFailure: Bool = false, status: String = "SUCCESSFUL") -> RunObservations {
    let kill = PlannedFault(
      index: 0, action: .kill(.leader, restartAfterMs: 1000, withTasks: false),
      trigger: .stage(.BAKE_TIME, .percentOfBake(60, plusMilliseconds: 0)), origin: "faults[0] (line 9)")
    let fault = FaultRecord(
      planned: kill, node: "n3", term: 1, startedAt: at(10), endedAt: at(11),
      windows: [NodeWindow(node: "n3", from: at(10), to: at(12))])
    let deployment = ObservedDeployment(
      id: "web-7", strategy: "CANARY", blue: "web:1", green: "web:2", status: status, reason: nil,
      stages: [
        StageEntry(stage: "PRODUCTION_TRAFFIC_SHIFT", enteredAt: at(2)),
        StageEntry(stage: "BAKE_TIME", enteredAt: at(6.4)),
        StageEntry(stage: "CLEAN_UP", enteredAt: at(12.6)),
      ], bakeSeconds: 6, bakeEndsAt: at(12.4),
      hooks: [HookReport(stage: "PRE_SCALE_UP", executionId: "e1", calls: 2, result: "SUCCEEDED")],
      notes: [Note(at: at(9), message: "baking"), Note(at: at(11.5), message: "entered CLEAN_UP")],
      weights: [
        WeightPoint(at: at(1), productionGreen: 0, testGreen: 0),
        WeightPoint(at: at(2), productionGreen: 25, testGreen: 100),
        WeightPoint(at: at(5), productionGreen: 100, testGreen: 100),
      ],
      controllers: [
        ControllerChange(at: at(1), node: "n3", term: 1), ControllerChange(at: at(11.2), node: "n1", term: 2),
      ])
    var requests: [RequestSample] = []
    for second in 0..<20 {
      let t = Double(second)
      let green = t >= 5 ? "web:2" : (second % 4 == 0 && t >= 2 ? "web:2" : "web:1")
      for listener in 0..<3 {
        let down = listener == 2 && t >= 10 && t < 12
        requests.append(
          RequestSample(
            listener: listener, startNs: ns(t + 0.1), endNs: ns(t + 0.2), ok: !down, status: down ? nil : 200,
            failure: down ? "connectRefused" : nil, revision: down ? nil : green))
      }
    }
    // A request to n3 sent just before the kill and cut by it: under the fault.
    requests.append(
      RequestSample(
        listener: 2, startNs: ns(9.9), endNs: ns(10.05), ok: false, status: nil, failure: "resetBeforeResponse",
        revision: nil))
    if extraFailure {
      requests.append(
        RequestSample(
          listener: 0, startNs: ns(10.5), endNs: ns(10.6), ok: false, status: 503, failure: nil, revision: "web:2",
          method: "POST", generation: 7))
    }
    return RunObservations(
      scenario: "kill-leader-bake", seed: nil, startedAt: start, endedAt: at(20), deployments: [deployment],
      faults: [fault],
      leaders: [
        LeaderChange(at: at(0), leader: "n3", term: 1), LeaderChange(at: at(10.5), leader: nil, term: 2),
        LeaderChange(at: at(11), leader: "n1", term: 2),
      ],
      listeners: [
        ListenerInfo(address: "127.0.0.1:8180", node: "n1"), ListenerInfo(address: "127.0.0.2:8180", node: "n2"),
        ListenerInfo(address: "127.0.0.3:8180", node: "n3"),
      ], requests: requests)
  }

  var expect: ChaosExpectation {
    var expect = ChaosExpectation()
    expect.bakeDeviationMs = 500
    expect.maximumTimeToLeaderMs = 5000
    return expect
  }

  @Test func requestsToAListenerWhoseNodeIsKilledAreCountedApartAndTheOthersMustNotFail() throws {
    let report = ChaosReport.build(observations(), expect: expect)
    #expect(report.passed, "\(report.text())")
    let n3 = report.listeners[2]
    #expect(n3.failed == 3 && n3.failedUnderFault == 3 && n3.failedOutsideFaults == 0)
    #expect(n3.sentUnderFault == 3)
    #expect(report.listeners[0].failed == 0 && report.listeners[0].sentUnderFault == 0)
    #expect(report.totals.sent == 61 && report.totals.failedOutsideFaults == 0)

    let failing = ChaosReport.build(observations(extraFailure: true), expect: expect)
    #expect(!failing.passed)
    #expect(failing.listeners[0].failures == ["status 503": 1])
    let check = failing.checks.first { $0.name.hasPrefix("failed requests outside") }
    #expect(check?.passed == false && check?.observed.hasPrefix("1 (n1 1") == true)
    // Each one is listed, to find it in the nodes' logs; failures under a fault are not.
    let listed = failing.listeners[0].failedOutsideFaultsList ?? []
    #expect(listed.count == 1)
    #expect(
      listed.first.map { abs($0.at.timeIntervalSince(failing.startedAt) - 10.5) < 1e-6 && abs($0.seconds - 0.1) < 1e-6 }
        == true)
    #expect(listed.first?.method == "POST" && listed.first?.failure == "status 503")
    #expect(listed.first?.revision == "web:2" && listed.first?.generation == 7)
    #expect(failing.listeners[2].failedOutsideFaultsList == nil)
    #expect(failing.text().contains("outside faults: POST at 10.500 s ("))
    #expect(failing.text().contains("status 503 after 0.100 s (revision web:2, generation 7)"))
    #expect(try ChaosReport.decode(Data(failing.json().utf8)).listeners[0].failedOutsideFaultsList == listed)
  }

  @Test func theStatusBakeAndLeaderChecksCompareWithTheExpectation() {
    let report = ChaosReport.build(observations(), expect: expect)
    #expect(report.deployments[0].bake.observedSeconds.map { abs($0 - 6.2) < 1e-6 } == true)
    let fault = report.faults[0]
    #expect(fault.newLeader == "n1" && fault.timeToLeaderSeconds.map { abs($0 - 1) < 1e-6 } == true)
    #expect(
      fault.firstAction == "entered CLEAN_UP" && fault.timeToFirstActionSeconds.map { abs($0 - 1.5) < 1e-6 } == true)
    #expect(fault.takesLeader && fault.processFault)

    let rolledBack = ChaosReport.build(observations(status: "ROLLBACK_SUCCESSFUL"), expect: expect)
    #expect(!rolledBack.passed)
    #expect(rolledBack.checks.first { $0.name.hasSuffix("status") }?.passed == false)

    var tight = expect
    tight.bakeDeviationMs = 100
    tight.maximumTimeToLeaderMs = 500
    let strict = ChaosReport.build(observations(), expect: tight)
    #expect(strict.checks.filter { !$0.passed }.map { $0.name } == ["web-7 bake", "fault 0 new leader"])
  }

  @Test func aBakeDeadlineThatFellInTheFailoverPassesWhenCleanUpFollowsTheNewLeader() {
    var run = observations()
    // Bake 6 s from 6.4 s: due at 12.4 s. The leader killed at 10 s, the next one seen at 13 s.
    run.leaders[2].at = at(13)
    run.deployments[0].stages[2].enteredAt = at(13.3)
    let report = ChaosReport.build(run, expect: expect)
    let bake = report.checks.first { $0.name == "web-7 bake" }
    #expect(bake?.passed == true && bake?.observed.contains("fell in fault 0's failover") == true, "\(bake!)")
    run.deployments[0].stages[2].enteredAt = at(14)
    let late = ChaosReport.build(run, expect: expect)
    #expect(late.checks.first { $0.name == "web-7 bake" }?.passed == false)
  }

  @Test func theSeriesCountsGreenAnswersPerBucket() {
    let report = ChaosReport.build(observations(), expect: expect)
    let series = report.listeners[0].series
    #expect(series.count == 21)
    #expect(series[1].answered == 1 && series[1].green == 0)
    #expect(series[4].green == 1)
    #expect(series[6].green == 1 && series[6].sent == 1)
    #expect(report.listeners[2].series[9].failed == 1 && report.listeners[2].series[10].failed == 1)
  }

  @Test func aFaultThatWasNotMadeFailsTheRun() {
    var run = observations()
    run.faults[0] = FaultRecord(planned: run.faults[0].planned, error: "never fired: the deployment finished first")
    let report = ChaosReport.build(run, expect: expect)
    #expect(!report.passed)
    #expect(report.text().contains("NOT MADE: never fired"))
  }

  @Test func jsonRoundTripsAndTextAndHTMLShowTheOutcome() throws {
    let report = ChaosReport.build(observations(), expect: expect)
    let decoded = try ChaosReport.decode(Data(report.json().utf8))
    #expect(decoded.passed == report.passed && decoded.listeners == report.listeners)
    #expect(decoded.faults == report.faults && decoded.checks == report.checks)
    #expect(abs(decoded.startedAt.timeIntervalSince(report.startedAt)) < 0.001)
    let text = report.text()
    #expect(text.hasPrefix("chaos run kill-leader-bake: PASSED"))
    #expect(text.contains("new leader n1 after 1 s"))
    #expect(text.contains("127.0.0.3:8180 (n3): sent 21, ok 18, failed 3 (0 outside faults, 3 of 3 under fault)"))
    let html = report.html()
    #expect(html.hasPrefix("<!DOCTYPE html>") && html.hasSuffix("</html>\n"))
    #expect(html.components(separatedBy: "<svg").count - 1 == 1 + 2 * 3)
    #expect(!html.contains("<script") && !html.contains("src=") && !html.contains("href="))
    #expect(escape("<a href=\"x\">&'") == "&lt;a href=&quot;x&quot;&gt;&amp;&#39;")
  }
}
