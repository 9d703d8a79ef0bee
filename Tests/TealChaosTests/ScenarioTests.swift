import Foundation
import TealChaos
import TealDeploy
import Testing

/// The repository's Deploy/chaos directory.
let chaosDirectory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
  .deletingLastPathComponent().appendingPathComponent("Deploy/chaos").path

func parseError(_ text: String) -> ScenarioError? {
  do {
    _ = try ScenarioParser.parse(text, file: "s.yaml")
    return nil
  } catch {
    return error
  }
}

let minimal = """
  name: t
  service:
    spec: web.yaml

  """

@Suite("Scenario files")
struct ScenarioParserTests {
  @Test func everyExampleScenarioParsesAndPlans() throws {
    let files = try FileManager.default.contentsOfDirectory(atPath: chaosDirectory).filter {
      $0.hasSuffix(".yaml") && $0 != "web.yaml" && !$0.hasPrefix("targets")
    }
    #expect(files.count >= 2)
    for file in files {
      let text = try String(contentsOfFile: "\(chaosDirectory)/\(file)", encoding: .utf8)
      let scenario = try ScenarioParser.parse(text, file: file)
      #expect(scenario.serviceSpec == "web.yaml", "\(file)")
      let planned = try FaultSchedule.plan(scenario, durationMs: 600_000)
      #expect(!planned.isEmpty, "\(file) plans no fault")
    }
  }

  @Test func aFullScenarioReadsEveryField() throws {
    let scenario = try ScenarioParser.parse(
      """
      name: full
      description: every field
      service:
        spec: web.yaml
        set:
          productionPort: 9080
      deployment:
        strategy: LINEAR
        bakeTime: 5s
        set:
          deployment.linear.stepPercent: 50
          task.env.V: "2"
        timeout: 2m
      faults:
        - kill: leader
          at: BAKE_TIME+60%
          restartAfter: 1s
        - pause: follower
          at: STEP2+500ms
          for: 3s
        - partition: leader
          from: follower
          for: 5s
          after: 10s
          every: 20s
          count: 3
        - loss: n2
          percent: 20
          for: 4s
          at: PRODUCTION_TRAFFIC_SHIFT
        - restart-all: at-once
          at: CLEAN_UP
        - kill-task: any
          after: 1s
      traffic:
        clients: 16
        get: /
        post: /process
        postShare: 0.25
        bodyBytes: 2048
        rate: max
        timeout: 5s
      expect:
        status: ROLLBACK_SUCCESSFUL
        bakeDeviation: any
        failedRequests: 3
        failedUnderFault: 100
        timeToLeader: 8s
      """)
    #expect(scenario.name == "full")
    #expect(scenario.serviceSet == [KeyValue("productionPort", "9080")])
    #expect(
      scenario.deploymentSet == [
        KeyValue("deployment.strategy", "LINEAR"), KeyValue("deployment.bakeTime", "5s"),
        KeyValue("deployment.linear.stepPercent", "50"), KeyValue("task.env.V", "\"2\""),
      ])
    #expect(scenario.deploymentTimeoutMs == 120_000)
    #expect(scenario.faults.count == 6)
    #expect(scenario.faults[0].action == .kill(.leader, restartAfterMs: 1000, withTasks: false))
    #expect(scenario.faults[0].trigger == .stage(.BAKE_TIME, .percentOfBake(60, plusMilliseconds: 0)))
    #expect(scenario.faults[0].line == 15)
    #expect(scenario.faults[1].trigger == .step(2, 500))
    #expect(scenario.faults[2].action == .partition(.leader, from: .follower, forMs: 5000))
    #expect(scenario.faults[2].count == 3 && scenario.faults[2].everyMs == 20_000)
    #expect(scenario.faults[3].action == .loss(.node("n2"), percent: 20, forMs: 4000))
    #expect(scenario.faults[4].action == .restartAll(atOnce: true))
    #expect(scenario.faults[5].action == .killTask(nil))
    #expect(scenario.traffic.clientsPerListener == 16 && scenario.traffic.postFraction == 0.25)
    #expect(scenario.traffic.ratePerClient == nil && scenario.traffic.requestTimeoutMs == 5000)
    #expect(scenario.expect.status == "ROLLBACK_SUCCESSFUL" && scenario.expect.bakeDeviationMs == nil)
    #expect(scenario.expect.failedRequests == 3 && scenario.expect.failedUnderFault == 100)
    #expect(scenario.expect.maximumTimeToLeaderMs == 8000)
  }

  @Test func errorsNameTheFieldAndItsLine() {
    let cases: [(String, String, Int?, String)] = [
      ("name: t\n", "service", 1, "missing"),
      (minimal + "faults:\n  - kill: leader\n    at: BAKE\n", "faults[0].at", 6, "unknown stage 'BAKE'"),
      (
        minimal + "faults:\n  - pause: leader\n    at: SCALE_UP\n    for: 5 s\n", "faults[0].for", 7,
        "expected a duration"
      ),
      (minimal + "faults:\n  - pause: leader\n    at: SCALE_UP\n", "faults[0].for", 5, "missing"),
      (
        minimal + "faults:\n  - loss: n2\n    percent: 100\n    for: 1s\n    after: 1s\n", "faults[0].percent", 6,
        "1...99"
      ),
      (minimal + "faults:\n  - kill: leader\n    at: SCALE_UP\n    after: 1s\n", "faults[0].after", 7, "not both"),
      (minimal + "faults:\n  - kill: leader\n    after: 1s\n    count: 3\n", "faults[0].count", 7, "every"),
      (minimal + "faults:\n  - kill: leader\n    pause: leader\n    after: 1s\n", "faults[0]", 5, "exactly one"),
      (minimal + "faults:\n  - kill: leader\n    after: 1s\n    for: 2s\n", "faults[0].for", 7, "does not apply"),
      (minimal + "faults:\n  - kill: leader\n    at: SCALE_UP+50%\n", "faults[0].at", 6, "BAKE_TIME only"),
      (minimal + "faults:\n  - kill: the-boss!\n    after: 1s\n", "faults[0].kill", 5, "leader, follower"),
      (minimal + "traffic:\n  clients: 600\n", "traffic.clients", 5, "1...512"),
      (minimal + "traffic:\n  speed: 3\n", "traffic.speed", 5, "unknown field"),
      (minimal + "expect:\n  status: GREAT\n", "expect.status", 5, "must be one of"),
      (minimal + "random:\n  seed: 1\n  count: 2\n", "random.end", 5, "duration"),
      ("name: [\n", "", 2, "not valid YAML"),
    ]
    for (text, field, line, message) in cases {
      let error = parseError(text)
      #expect(error?.field == field, "\(text)")
      #expect(error?.line == line, "\(text): \(String(describing: error))")
      #expect(error?.description.contains(message) == true, "\(String(describing: error))")
      #expect(error?.description.hasPrefix("s.yaml") == true)
    }
  }

  @Test func theLimitsHold() {
    let big = minimal + "description: \"" + String(repeating: "x", count: ScenarioLimits.maximumBytes) + "\"\n"
    #expect(parseError(big)?.message.contains("at most \(ScenarioLimits.maximumBytes)") == true)
    let many =
      minimal + "faults:\n"
      + String(repeating: "  - kill: leader\n    after: 1s\n", count: ScenarioLimits.maximumFaultEntries + 1)
    #expect(parseError(many)?.message.contains("at most \(ScenarioLimits.maximumFaultEntries) entries") == true)
    let repeats = minimal + "faults:\n  - kill: leader\n    after: 1s\n    every: 1s\n    count: 101\n"
    #expect(parseError(repeats)?.field == "faults[0].count")
    let long = minimal + "faults:\n  - pause: leader\n    after: 1s\n    for: 2h\n"
    #expect(parseError(long)?.message.contains("0s...1h") == false)
    #expect(parseError(long)?.field == "faults[0].for")
  }
}

@Suite("The fault schedule")
struct FaultScheduleTests {
  let start = Date(timeIntervalSince1970: 1_000_000)

  @Test func repeatsExpandNextToTheirEntry() throws {
    let scenario = try ScenarioParser.parse(
      minimal + "faults:\n  - kill: leader\n    after: 2s\n    every: 5s\n    count: 3\n"
        + "  - pause: leader\n    at: BAKE_TIME+50%\n    for: 1s\n    every: 1s\n    count: 2\n")
    let planned = try FaultSchedule.plan(scenario)
    #expect(
      planned.map(\.trigger) == [
        .after(2000), .after(7000), .after(12000), .stage(.BAKE_TIME, .percentOfBake(50, plusMilliseconds: 0)),
        .stage(.BAKE_TIME, .percentOfBake(50, plusMilliseconds: 1000)),
      ])
    #expect(planned.map(\.index) == [0, 1, 2, 3, 4])
    #expect(planned[1].origin.hasPrefix("faults[0] #2"))
  }

  @Test func aFaultIsDueAtItsStageOffsetStepOrTime() {
    func fault(_ trigger: FaultTrigger) -> PlannedFault {
      PlannedFault(index: 0, action: .pause(.leader, forMs: 1), trigger: trigger, origin: "")
    }
    var progress = DeploymentProgress(startedAt: start, bakeSeconds: 10)
    #expect(FaultSchedule.due(fault(.after(1500)), progress) == .at(start.addingTimeInterval(1.5)))
    #expect(FaultSchedule.due(fault(.stage(.BAKE_TIME, .milliseconds(0))), progress) == .notYet)
    #expect(FaultSchedule.due(fault(.step(1, 0)), progress) == .notYet)
    let baking = start.addingTimeInterval(20)
    progress.stages = [(.PRODUCTION_TRAFFIC_SHIFT, start.addingTimeInterval(5)), (.BAKE_TIME, baking)]
    progress.steps = [start.addingTimeInterval(5), start.addingTimeInterval(9)]
    #expect(
      FaultSchedule.due(fault(.stage(.BAKE_TIME, .percentOfBake(60, plusMilliseconds: 500))), progress)
        == .at(baking.addingTimeInterval(6.5)))
    #expect(
      FaultSchedule.due(fault(.stage(.BAKE_TIME, .milliseconds(6000))), progress) == .at(baking.addingTimeInterval(6)))
    #expect(FaultSchedule.due(fault(.step(2, 1000)), progress) == .at(start.addingTimeInterval(10)))
    progress.finished = true
    guard case .never(let why) = FaultSchedule.due(fault(.stage(.CLEAN_UP, .milliseconds(0))), progress) else {
      Issue.record("a stage never entered by a finished deployment is never due")
      return
    }
    #expect(why.contains("CLEAN_UP"))
    guard case .never = FaultSchedule.due(fault(.step(3, 0)), progress) else {
      Issue.record("a step a finished deployment never made is never due")
      return
    }
  }

  @Test func randomFaultsComeFromTheSeedAndFitTheirWindow() throws {
    let text = minimal + "duration: 10m\nrandom:\n  seed: 42\n  count: 20\n  for: [2s, 6s]\n  gap: 10s\n"
    let scenario = try ScenarioParser.parse(text)
    let one = try FaultSchedule.plan(scenario)
    let again = try FaultSchedule.plan(scenario)
    let other = try FaultSchedule.plan(scenario, seed: 43)
    #expect(one == again)
    #expect(one.map(\.trigger) != other.map(\.trigger) || one.map(\.action) != other.map(\.action))
    #expect(one.count == 20)
    var previous: Int64 = -1
    for fault in one {
      guard case .after(let at) = fault.trigger else {
        Issue.record("random faults are timed")
        continue
      }
      #expect(at >= 5_000 && at <= 600_000)
      #expect(at > previous + 6_000 || previous < 0, "random faults overlap")
      previous = at
    }
    // A shorter run fires as many as fit (slots of 6 s + 10 s gap + 5 s slack), none if none fits.
    let short = try ScenarioParser.parse(minimal + "duration: 60s\nrandom:\n  seed: 1\n  count: 20\n")
    #expect(try FaultSchedule.plan(short).count == 2)
    let crowded = try ScenarioParser.parse(minimal + "duration: 20s\nrandom:\n  seed: 1\n  count: 20\n")
    #expect(throws: ScenarioError.self) { try FaultSchedule.plan(crowded) }
  }
}
