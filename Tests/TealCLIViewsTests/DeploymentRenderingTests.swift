import Foundation
import TealAPI
import Testing

@testable import TealCLIViews

let t0 = Date(timeIntervalSince1970: 1_796_112_000)  // 08:00:00 UTC

func at(_ seconds: Double) -> Date { t0.addingTimeInterval(seconds) }

/// A CANARY deployment in BAKE_TIME: 10 s bake started at +20 s, controller n2 in term 4.
func sampleView() -> DeploymentView {
  DeploymentView(
    id: "web-42", service: "web", status: "IN_PROGRESS", stage: "BAKE_TIME", blue: "web:1", green: "web:2",
    strategy: "CANARY", createdAt: t0, updatedAt: at(20),
    stageTimeline: [
      StageTime(stage: "RECONCILE_SERVICE", enteredAt: at(0)), StageTime(stage: "PRE_SCALE_UP", enteredAt: at(0.1)),
      StageTime(stage: "SCALE_UP", enteredAt: at(0.2)), StageTime(stage: "POST_SCALE_UP", enteredAt: at(3)),
      StageTime(stage: "TEST_TRAFFIC_SHIFT", enteredAt: at(3.1)),
      StageTime(stage: "POST_TEST_TRAFFIC_SHIFT", enteredAt: at(3.2)),
      StageTime(stage: "PRODUCTION_TRAFFIC_SHIFT", enteredAt: at(4)),
      StageTime(stage: "POST_PRODUCTION_TRAFFIC_SHIFT", enteredAt: at(19)),
      StageTime(stage: "BAKE_TIME", enteredAt: at(20)),
    ],
    weights: DeploymentWeights(
      production: WeightPair(blue: 0, green: 100), test: WeightPair(blue: 0, green: 100), generation: 9),
    bake: BakeWindow(seconds: 10, startedAt: at(20), endsAt: at(30)),
    hooks: [
      HookExecutionView(stage: "PRODUCTION_TRAFFIC_SHIFT", executionId: "e-1", attempts: 2, result: "SUCCEEDED")
    ],
    tasks: [
      DeploymentTaskCount(revision: "web:2", node: "n1", running: 1, healthy: 1),
      DeploymentTaskCount(revision: "web:1", node: "n1", running: 1, healthy: 1),
      DeploymentTaskCount(revision: "web:2", node: "n2", running: 1, healthy: 0),
    ],
    controller: ControllerView(node: "n2", term: 4), pausedBy: nil, reason: nil,
    recent: [DeploymentNote(at: at(20), message: "bake time started")])
}

@Suite struct DeploymentRenderingTests {
  @Test func barsFillInProportionAndKeepSmallSharesVisible() {
    #expect(DeploymentRendering.bar(0, width: 10) == "░░░░░░░░░░")
    #expect(DeploymentRendering.bar(100, width: 10) == "██████████")
    #expect(
      DeploymentRendering.bar(50, width: 20) == String(repeating: "█", count: 10) + String(repeating: "░", count: 10))
    #expect(DeploymentRendering.bar(1, width: 10) == "█░░░░░░░░░")
    #expect(DeploymentRendering.bar(99, width: 10) == "█████████░")
    #expect(DeploymentRendering.bar(250, width: 4) == "████")
    #expect(DeploymentRendering.bar(-3, width: 4) == "░░░░")
    #expect(DeploymentRendering.bar(.nan, width: 4) == "░░░░")
  }

  @Test func percentagesAndDurationsReadShort() {
    #expect(DeploymentRendering.percent(10) == "10%")
    #expect(DeploymentRendering.percent(12.5) == "12.5%")
    #expect(DeploymentRendering.percent(33.333) == "33.3%")
    #expect(DeploymentRendering.duration(0.25) == "250ms")
    #expect(DeploymentRendering.duration(4.26) == "4.2s")
    #expect(DeploymentRendering.duration(65) == "1m05s")
    #expect(DeploymentRendering.duration(7380) == "2h03m")
    #expect(DeploymentRendering.duration(-1) == "0ms")
    #expect(DeploymentRendering.clock(at(3661.25)) == "09:01:01.2")
  }

  @Test func bakeTimeLeftCountsDownToTheCommittedDeadline() {
    let bake = BakeWindow(seconds: 10, startedAt: at(20), endsAt: at(30))
    #expect(DeploymentRendering.bake(bake, now: at(24)) == "6.0s left of 10.0s (ends 08:00:30.0)")
    #expect(DeploymentRendering.bake(bake, now: at(31)) == "done (10.0s, ended 08:00:30.0)")
    #expect(
      DeploymentRendering.bake(BakeWindow(seconds: 10, startedAt: nil, endsAt: nil), now: at(5))
        == "not started (10.0s)")
    #expect(DeploymentRendering.bakeRemaining(bake, now: at(24)) == 6)
    #expect(DeploymentRendering.bakeRemaining(bake, now: at(40)) == 0)
    #expect(DeploymentRendering.bakeRemaining(nil, now: at(40)) == nil)
  }

  @Test func theViewShowsTimelineWeightsTasksHooksControllerAndBake() {
    let lines = DeploymentRendering.lines(sampleView(), now: at(24))
    let text = lines.joined(separator: "\n")
    #expect(text.contains("Service:     web  web:1 → web:2  (CANARY)"))
    #expect(text.contains("Status:      ◐ IN_PROGRESS  at BAKE_TIME"))
    #expect(text.contains("Controller:  n2 (term 4)"))
    #expect(text.contains("Bake:        6.0s left of 10.0s (ends 08:00:30.0)"))
    // Each stage with its time, its offset from the start and how long it took; the current one
    // running for now - enteredAt; the stage ahead dimmed.
    #expect(lines.contains("  ✔ PRODUCTION_TRAFFIC_SHIFT       08:00:04.0     +4.0s  15.0s"))
    #expect(lines.contains("  ▶ BAKE_TIME                      08:00:20.0    +20.0s  for 4.0s"))
    #expect(lines.contains("  · CLEAN_UP"))
    #expect(
      lines.contains(
        "  production  blue  ░░░░░░░░░░░░░░░░░░░░     0%  green ████████████████████   100%"))
    // Blue's tasks first, then green's, per node.
    let tasks = lines.drop { !$0.hasPrefix("Tasks") }.dropFirst().prefix(3)
    #expect(Array(tasks) == ["  web:1  n1      1/1  ✔", "  web:2  n1      1/1  ✔", "  web:2  n2      0/1  …"])
    #expect(lines.contains("  PRODUCTION_TRAFFIC_SHIFT  e-1  2 attempts   SUCCEEDED"))
  }

  @Test func aFinishedDeploymentShowsNoStagesAheadAndItsLastStageDuration() {
    var view = sampleView()
    view.status = "SUCCESSFUL"
    view.stageTimeline.append(StageTime(stage: "CLEAN_UP", enteredAt: at(30)))
    view.updatedAt = at(31)
    let lines = DeploymentRendering.stageLines(view, now: at(100))
    #expect(lines.last == "  ✔ CLEAN_UP                       08:00:30.0    +30.0s  1.0s")
    #expect(!lines.contains { $0.contains("·") })
  }

  @Test func coloursAreOnlyUsedWhenAskedFor() {
    let plain = DeploymentRendering.lines(sampleView(), now: at(24)).joined()
    let colored = DeploymentRendering.lines(sampleView(), now: at(24), style: RenderStyle(color: true)).joined()
    #expect(!plain.contains("\u{1B}"))
    #expect(colored.contains("\u{1B}[32m"))
  }

  @Test func exitCodesFollowTheFinalStatus() {
    #expect(DeploymentWatcher.exitCode(forFinal: "SUCCESSFUL") == 0)
    #expect(DeploymentWatcher.exitCode(forFinal: "ROLLBACK_SUCCESSFUL") == 2)
    #expect(DeploymentWatcher.exitCode(forFinal: "STOPPED") == 3)
    #expect(DeploymentWatcher.exitCode(forFinal: "ROLLBACK_FAILED") == 4)
    #expect(DeploymentWatcher.exitCode(forFinal: "IN_PROGRESS") == nil)
    for status in DeploymentView.finalStatuses { #expect(DeploymentWatcher.exitCode(forFinal: status) != nil) }
  }
}

@Suite struct DeploymentWatcherTests {
  @Test func pipedOutputPrintsOnlyWhatChanged() {
    var watcher = DeploymentWatcher(mode: .plain)
    let view = sampleView()
    let first = watcher.received(view, now: at(21)).stdout
    #expect(first.hasPrefix("08:00:21.0  deployment web-42: web web:1 → web:2 (CANARY)\n"))
    #expect(first.contains("stage BAKE_TIME entered at 08:00:20.0"))
    #expect(first.contains("bake started: 10.0s, ends 08:00:30.0"))
    // The same view again, later: the countdown moved, nothing else; nothing is printed.
    #expect(watcher.received(view, now: at(22)).isEmpty)
    #expect(watcher.received(view, now: at(23)).isEmpty)

    var healthier = view
    healthier.tasks[2].healthy = 1
    #expect(watcher.received(healthier, now: at(24)).stdout == "08:00:24.0  tasks web:1 n1 1/1; web:2 n1 1/1 n2 1/1\n")

    var done = healthier
    done.status = "SUCCESSFUL"
    done.stage = "CLEAN_UP"
    done.stageTimeline.append(StageTime(stage: "CLEAN_UP", enteredAt: at(30)))
    #expect(
      watcher.received(done, now: at(30.5)).stdout
        == "08:00:30.5  status SUCCESSFUL at CLEAN_UP\n08:00:30.5  stage CLEAN_UP entered at 08:00:30.0\n"
        + "08:00:30.5  final status SUCCESSFUL\n")
  }

  @Test func aControllerChangeIsALineInEveryMode() {
    var moved = sampleView()
    moved.controller = ControllerView(node: "n3", term: 5)
    let line = "controller changed: n2 (term 4) → n3 (term 5)"

    var plain = DeploymentWatcher(mode: .plain)
    _ = plain.received(sampleView(), now: at(21))
    #expect(plain.received(moved, now: at(22)).stdout == "08:00:22.0  \(line)\n")

    var json = DeploymentWatcher(mode: .json)
    _ = json.received(sampleView(), now: at(21))
    let output = json.received(moved, now: at(22))
    #expect(output.stderr == "teal: \(line)\n")
    let decoded = try? TealJSON.decode(DeploymentView.self, from: Data(output.stdout.utf8))
    #expect(decoded == moved)

    var terminal = DeploymentWatcher(mode: .terminal(style: .plain, width: 200, height: 100))
    _ = terminal.received(sampleView(), now: at(21))
    #expect(terminal.received(moved, now: at(22)).stdout.contains("08:00:22.0  \(line)"))
  }

  @Test func jsonStreamsOneObjectPerChangeOnOneLine() throws {
    var watcher = DeploymentWatcher(mode: .json)
    let first = watcher.received(sampleView(), now: at(21))
    #expect(first.stdout.hasSuffix("\n"))
    #expect(first.stdout.dropLast().contains("\n") == false)
    #expect(try TealJSON.decode(DeploymentView.self, from: Data(first.stdout.utf8)) == sampleView())
    #expect(watcher.received(sampleView(), now: at(22)).isEmpty)
  }

  @Test func anOutageIsSaidOnceAndItsEndOnce() {
    var watcher = DeploymentWatcher(mode: .plain)
    _ = watcher.received(sampleView(), now: at(21))
    #expect(
      watcher.failed("connection refused", now: at(22)).stdout
        == "08:00:22.0  no answer (connection refused); still trying every node\n")
    #expect(watcher.failed("no leader", now: at(22.25)).isEmpty)
    #expect(watcher.failed("no leader", now: at(22.5)).isEmpty)
    #expect(
      watcher.received(sampleView(), from: "n3", now: at(23.5)).stdout
        == "08:00:23.5  in contact again via n3 after 1.5s\n")
    #expect(watcher.received(sampleView(), now: at(24)).isEmpty)
  }

  @Test func theTerminalViewRedrawsInPlaceAndShowsTheOutage() {
    var watcher = DeploymentWatcher(mode: .terminal(style: .plain, width: 40, height: 100))
    let first = watcher.received(sampleView(), now: at(21)).stdout
    #expect(!first.hasPrefix("\r"))
    let drawn = first.components(separatedBy: "\n").count - 1
    // Every poll redraws (the bake countdown moves): up over the last frame, line by line.
    let second = watcher.received(sampleView(), now: at(22)).stdout
    #expect(second.hasPrefix("\r\u{1B}[\(drawn)A\u{1B}[2K"))
    #expect(second.contains("Bake:        8.0s left of 10.0s"))
    #expect(second.hasSuffix("\u{1B}[J"))
    // No line is wider than the terminal, or the cursor arithmetic would drift.
    for line in second.components(separatedBy: "\n") {
      let visible = line.replacingOccurrences(of: "\r\u{1B}[\(drawn)A", with: "")
        .replacingOccurrences(of: "\u{1B}[2K", with: "").replacingOccurrences(of: "\u{1B}[J", with: "")
      #expect(visible.count <= 40, "\(visible)")
    }
    let failing = watcher.failed("connection refused", now: at(23)).stdout
    #expect(failing.contains("08:00:23.0  no answer (connection"))  // cut at 40 columns
    #expect(watcher.failed("connection refused", now: at(25)).stdout.contains("⚠ no answer for 2.0s: connection "))
  }

  @Test func aFrameNeverOutgrowsTheTerminalsHeight() {
    var watcher = DeploymentWatcher(mode: .terminal(style: .plain, width: 200, height: 100))
    let full = watcher.received(sampleView(), now: at(21)).stdout
    #expect(full.contains("Recent"))
    let rows = full.components(separatedBy: "\n").count - 1
    // One row short of the frame: the recent history goes first.
    var shorter = DeploymentWatcher(mode: .terminal(style: .plain, width: 200, height: rows))
    let compact = shorter.received(sampleView(), now: at(21)).stdout
    #expect(!compact.contains("Recent") && compact.contains("Hooks"))
    // Far too short: cut, saying so, within height - 1 lines.
    var tiny = DeploymentWatcher(mode: .terminal(style: .plain, width: 200, height: 10))
    let cut = tiny.received(sampleView(), now: at(21)).stdout
    #expect(cut.components(separatedBy: "\n").count - 1 == 9)
    #expect(cut.contains("more lines: enlarge the terminal"))
  }

  @Test func cuttingKeepsEscapesAndResetsColour() {
    #expect(DeploymentWatcher.cut("abcdef", to: 3) == "abc")
    #expect(DeploymentWatcher.cut("\u{1B}[32mabcdef\u{1B}[0m", to: 2) == "\u{1B}[32mab\u{1B}[0m\u{1B}[0m")
    #expect(DeploymentWatcher.cut("abc", to: 10) == "abc")
  }

  @Test func theBakeDeadlineMovingIsCalledOut() {
    var watcher = DeploymentWatcher(mode: .plain)
    _ = watcher.received(sampleView(), now: at(21))
    var moved = sampleView()
    moved.bake?.endsAt = at(31)
    #expect(watcher.received(moved, now: at(22)).stdout == "08:00:22.0  bake end moved: 08:00:30.0 → 08:00:31.0\n")
  }

  @Test func hookAttemptsAndResultsAreLines() {
    var watcher = DeploymentWatcher(mode: .plain)
    var view = sampleView()
    view.hooks = [HookExecutionView(stage: "POST_TEST_TRAFFIC_SHIFT", executionId: "e-2", attempts: 1, result: nil)]
    _ = watcher.received(view, now: at(21))
    view.hooks[0].attempts = 2
    #expect(watcher.received(view, now: at(22)).stdout == "08:00:22.0  hook POST_TEST_TRAFFIC_SHIFT e-2: attempt 2\n")
    view.hooks[0].result = "FAILED"
    #expect(
      watcher.received(view, now: at(23)).stdout
        == "08:00:23.0  hook POST_TEST_TRAFFIC_SHIFT e-2: FAILED after 2 attempts\n")
  }
}
