import Foundation
import TealDeploy
import TealWire
import Testing

@testable import TealCluster

extension Log {
  /// The task's node reports it exited.
  mutating func exit(_ taskID: String, code: Int32 = 1) {
    guard let node = state.tasks[taskID]?.node else { preconditionFailure("no task \(taskID)") }
    ok(.taskReports(node: node, reports: [TaskReport(taskID: taskID, state: .exited(code: code), healthy: false)]))
  }

  /// The ids of the service's tasks meant to run.
  func running(_ service: String = "web") -> [String] {
    state.tasks(service: service).filter { $0.desired == .running }.map(\.id)
  }

  func plan(after milliseconds: Int64 = 0) -> [ClusterCommand] {
    Placement.plan(state, now: time.adding(milliseconds: milliseconds))
  }
}

@Suite struct CrashLoopTests {
  static let web1 = RevisionID(service: "web", number: 1)

  static func places(_ plan: [ClusterCommand]) -> Bool {
    plan.contains { if case .placeTask = $0 { true } else { false } }
  }

  @Test func tasksThatExitBeforeTheyAreHealthyAreReplacedAfterADoublingBackoffUpToFiveMinutes() {
    var log = Log()
    log.announce(2)
    log.ok(.createService(makeSpec(desiredCount: 1)))
    log.executePlan()
    let waits: [Int64] = [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300].map { $0 * 1000 }
    for (offset, wait) in waits.enumerated() {
      guard let task = log.running().first else {
        Issue.record("no task to crash at crash \(offset + 1)")
        return
      }
      log.exit(task)
      #expect(log.state.services["web"]?.crashLoop(of: 1) == CrashLoop(crashes: offset + 1, lastCrashAt: log.time))
      #expect(log.state.services["web"]?.crashLoop(of: 1)?.backoffMilliseconds == wait)
      // The exited task is retired at once; its replacement waits for the backoff.
      #expect(log.plan() == [.retireTask(taskID: task, reason: "exited with code 1; replaced")])
      #expect(!Self.places(log.plan(after: wait - 1)))
      #expect(Self.places(log.plan(after: wait)))
      log.advance(milliseconds: wait)
      log.executePlan()
      #expect(log.running().count == 1)
    }
    let message = log.state.history.events.last { $0.kind == .taskExited }?.message ?? ""
    #expect(message.contains("crash 11 in a row"), "\(message)")
  }

  @Test func aTaskThatRanHealthyForTheStableRunClearsTheCountAndIsReplacedAtOnce() {
    var log = Log()
    log.announce(2)
    log.ok(.createService(makeSpec(desiredCount: 1)))
    log.executePlan()
    log.exit(log.running()[0])
    log.advance(milliseconds: 1000)
    log.executePlan()
    let second = log.running()[0]
    log.runHealthy(second)
    #expect(log.state.tasks[second]?.healthyAt == log.time)
    log.advance(milliseconds: CrashLoop.stableRunMilliseconds)
    log.exit(second)
    #expect(log.state.services["web"]?.crashLoops == nil)
    #expect(Self.places(log.plan()))
  }

  @Test func aHealthyRunShorterThanTheStableRunIsStillACrash() {
    var log = Log()
    log.announce(2)
    log.ok(.createService(makeSpec(desiredCount: 1)))
    log.executePlan()
    log.exit(log.running()[0])
    log.advance(milliseconds: 1000)
    log.executePlan()
    let second = log.running()[0]
    log.runHealthy(second)
    log.advance(milliseconds: CrashLoop.stableRunMilliseconds - 1)
    log.exit(second)
    #expect(log.state.services["web"]?.crashLoop(of: 1) == CrashLoop(crashes: 2, lastCrashAt: log.time))
    #expect(!Self.places(log.plan(after: 1999)))
  }

  @Test func aTaskHealthySinceTheLastCrashSettlesTheRevisionAndTheNextCrashCountsFromOne() {
    var log = Log()
    log.announce(2)
    log.ok(.createService(makeSpec(desiredCount: 2)))
    log.executePlan()
    let steady = log.running()[0]
    log.runHealthy(steady)
    log.advance(milliseconds: 60_000)
    // The other task crashes twice; the steady one, healthy since before, settles nothing.
    log.exit(log.running()[1])
    log.advance(milliseconds: 1000)
    log.executePlan()
    log.exit(log.running()[1])
    #expect(log.state.services["web"]?.crashLoop(of: 1)?.crashes == 2)
    #expect(log.state.placementHeld(Self.web1, now: log.time))
    log.advance(milliseconds: 2000)
    log.executePlan()
    let third = log.running()[1]
    log.runHealthy(third)
    log.advance(milliseconds: CrashLoop.stableRunMilliseconds)
    // Settled: no hold even before the record is dropped.
    #expect(log.state.services["web"]?.crashLoop(of: 1) != nil)
    #expect(!log.state.placementHeld(Self.web1, now: log.time))
    log.runHealthy(steady, port: 20_001)  // any report of the service's tasks drops a settled record
    #expect(log.state.services["web"]?.crashLoops == nil)
    log.exit(third)
    #expect(log.state.services["web"]?.crashLoop(of: 1)?.crashes == nil)  // ran healthy long enough
    log.executePlan()
    log.exit(log.running()[1])
    #expect(log.state.services["web"]?.crashLoop(of: 1) == CrashLoop(crashes: 1, lastCrashAt: log.time))
  }

  @Test func exitsOfRetiredTasksAreNotCrashes() {
    var log = Log()
    log.announce(2)
    log.ok(.createService(makeSpec(desiredCount: 2)))
    log.executePlan()
    log.ok(.scaleService(service: "web", desiredCount: 1))
    log.executePlan()
    let retired = log.state.tasks.values.first { $0.desired != .running }!.id
    log.exit(retired, code: -15)
    #expect(log.state.services["web"]?.crashLoops == nil)
  }

  @Test func aLostTaskSaysSoInItsEvent() {
    var log = Log()
    log.announce(1)
    log.ok(.createService(makeSpec(desiredCount: 1)))
    log.executePlan()
    log.exit(log.running()[0], code: TaskRunState.lostExitCode)
    let message = log.state.history.events.last { $0.kind == .taskExited }?.message ?? ""
    #expect(message.hasPrefix("task web.1.1 on n1 is lost: no process of its node backs it"), "\(message)")
    // It died with its node's run, not of its revision: no crash loop, replaced at once.
    #expect(log.state.services["web"]?.crashLoops == nil)
    #expect(Self.places(log.plan()))
  }

  @Test func theCrashLoopIsInTheSnapshotAndAnUnknownRevisionIsRefused() throws {
    var log = Log()
    log.announce(1)
    log.ok(.createService(makeSpec(desiredCount: 1)))
    log.executePlan()
    log.exit(log.running()[0])
    let bytes = log.state.snapshot()
    let restored = try ClusterState(snapshot: bytes)
    #expect(restored == log.state)
    #expect(restored.services["web"]?.crashLoop(of: 1)?.crashes == 1)
    let text = String(decoding: bytes, as: UTF8.self)
    #expect(text.contains("\"crashLoops\":{\"1\":"))
    let broken = Array(text.replacingOccurrences(of: "\"crashLoops\":{\"1\":", with: "\"crashLoops\":{\"7\":").utf8)
    #expect(throws: ClusterSnapshotError.self) { try ClusterState(snapshot: broken) }
  }
}
