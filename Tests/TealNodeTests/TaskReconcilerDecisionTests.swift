import TealDeploy
import TealWire
import Testing

@testable import TealCluster
@testable import TealNode

@Suite("Task reconciler decisions")
struct TaskReconcilerDecisionTests {
  static func task(
    _ sequence: UInt64, _ state: TaskRunState, desired: TaskDesiredState = .running, healthy: Bool = false
  ) -> ClusterTask {
    ClusterTask(
      id: "web.1.\(sequence)", service: "web", revision: RevisionID(service: "web", number: 1), node: NodeID("n1"),
      sequence: sequence, desired: desired, state: state, healthy: healthy,
      address: state == .running || state == .starting ? "127.0.0.1" : nil,
      port: state == .running || state == .starting ? 20_000 + Int(sequence) : nil, placedAt: .zero,
      startedAt: nil, drainGeneration: desired == .running ? nil : 1, retireReason: nil)
  }

  static func decide(
    _ mine: [ClusterTask], runnerKnows: Set<String> = [], startedHere: Set<String> = [],
    stoppingHere: Set<String> = [], reportedStopped: Set<String> = []
  ) -> TaskReconciler.Decisions {
    TaskReconciler.decide(
      mine: mine, runnerKnows: runnerKnows, startedHere: startedHere, stoppingHere: stoppingHere,
      reportedStopped: reportedStopped)
  }

  @Test("a pending task is started once; a spawn in flight is neither started again nor reported lost")
  func pendingStartsOnce() {
    let pending = Self.task(1, .pending)
    #expect(Self.decide([pending]).start.map(\.id) == ["web.1.1"])
    let inFlight = Self.decide([pending], startedHere: ["web.1.1"])
    #expect(inFlight.start.isEmpty)
    #expect(inFlight.lost.isEmpty)
    // The spawn is in flight, the runner does not know it yet, and a report of an earlier start is
    // already applied: still not lost.
    let reported = Self.decide([Self.task(1, .starting)], startedHere: ["web.1.1"])
    #expect(reported.start.isEmpty)
    #expect(reported.lost.isEmpty)
  }

  @Test("a task ClusterState has starting or running here that no process backs is reported exited as lost")
  func unbackedTaskIsLost() {
    let mine = [
      Self.task(1, .running, healthy: true), Self.task(2, .starting), Self.task(3, .running, desired: .draining),
    ]
    let decisions = Self.decide(mine)
    #expect(decisions.start.isEmpty)  // never started again under the same id
    #expect(
      decisions.lost
        == [1, 2, 3].map {
          TaskReport(taskID: "web.1.\($0)", state: .exited(code: TaskRunState.lostExitCode), healthy: false)
        })
  }

  @Test("a task the runner knows, one this process started, one already exited or stopping is not lost")
  func backedTasksAreNotLost() {
    let mine = [
      Self.task(1, .running, healthy: true), Self.task(2, .running), Self.task(3, .exited(code: 1)),
      Self.task(4, .running, desired: .stopping),
    ]
    let decisions = Self.decide(mine, runnerKnows: ["web.1.1"], startedHere: ["web.1.2"])
    #expect(decisions.lost.isEmpty)
    #expect(decisions.start.isEmpty)
    #expect(decisions.stop == ["web.1.4"])
  }

  @Test("a stopping task is stopped once, and not again after its taskStopped was committed")
  func stoppingOnce() {
    let stopping = Self.task(1, .running, desired: .stopping)
    #expect(Self.decide([stopping]).stop == ["web.1.1"])
    #expect(Self.decide([stopping], stoppingHere: ["web.1.1"]).stop.isEmpty)
    #expect(Self.decide([stopping], reportedStopped: ["web.1.1"]).stop.isEmpty)
  }
}
