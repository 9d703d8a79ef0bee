import TealWire
import Testing

@testable import TealCluster

@Suite struct PlacementTests {
  @Test func placesTheDesiredCountSpreadEvenlyTiesByNodeID() {
    var log = Log()
    log.announce(3)
    log.ok(.createService(makeSpec(desiredCount: 5)))
    #expect(
      Placement.plan(log.state, now: log.time)
        == ["n1", "n2", "n3", "n1", "n2"].map {
          .placeTask(service: "web", revision: 1, node: NodeID($0))
        })
    log.executePlan()
    #expect(Placement.plan(log.state, now: log.time).isEmpty)  // converged
    let ids = log.state.tasks(service: "web").map(\.id)
    #expect(ids == ["web.1.1", "web.1.2", "web.1.3", "web.1.4", "web.1.5"])
  }

  @Test func aFixedTaskPortAllowsOneTaskPerNode() {
    var log = Log()
    log.announce(3)
    var spec = makeSpec(desiredCount: 5)
    spec.task.port = 9000
    log.ok(.createService(spec))
    // Two tasks on one node would both bind port 9000: only three nodes, only three tasks.
    #expect(
      Placement.plan(log.state, now: log.time)
        == ["n1", "n2", "n3"].map { .placeTask(service: "web", revision: 1, node: NodeID($0)) })
    log.executePlan()
    #expect(Placement.plan(log.state, now: log.time).isEmpty)
    #expect(Set(log.state.tasks(service: "web").map(\.node)).count == 3)
  }

  @Test func spreadsEachServiceAndBalancesAcrossServices() {
    var log = Log()
    log.announce(3)
    log.ok(.createService(makeSpec("api", desiredCount: 1, productionPort: 8100, testPort: 8101)))
    log.ok(.createService(makeSpec("web", desiredCount: 2)))
    log.executePlan()
    // api takes n1; web then prefers the emptier n2 and n3 over n1.
    #expect(log.state.tasks(service: "api").map(\.node) == [NodeID("n1")])
    #expect(log.state.tasks(service: "web").map(\.node) == [NodeID("n2"), NodeID("n3")])
  }

  @Test func replacesTasksOfANodeThatWentDown() {
    var log = Log()
    log.announce(3)
    log.ok(.createService(makeSpec(desiredCount: 3)))
    log.executePlan()
    log.ok(.nodeDown(node: NodeID("n2"), incarnation: 1))
    #expect(log.state.tasks(on: NodeID("n2")).isEmpty)
    #expect(Placement.plan(log.state, now: log.time) == [.placeTask(service: "web", revision: 1, node: NodeID("n1"))])
    log.executePlan()
    #expect(log.state.tasks(service: "web").count == 3)
    #expect(log.state.tasks(service: "web").allSatisfy { $0.node != NodeID("n2") })
  }

  @Test func replacesATaskWhoseProcessExited() {
    var log = Log()
    log.announce(2)
    log.ok(.createService(makeSpec(desiredCount: 2)))
    log.executePlan()
    // It ran healthy for a while: not a crash loop, so it is replaced at once.
    log.runHealthy("web.1.2")
    log.advance(milliseconds: CrashLoop.stableRunMilliseconds)
    log.ok(
      .taskReports(
        node: NodeID("n2"), reports: [TaskReport(taskID: "web.1.2", state: .exited(code: 1), healthy: false)]))
    #expect(
      Placement.plan(log.state, now: log.time) == [
        .retireTask(taskID: "web.1.2", reason: "exited with code 1; replaced"),
        .placeTask(service: "web", revision: 1, node: NodeID("n2")),
      ])
    log.executePlan()
    #expect(log.state.tasks["web.1.2"]?.desired != .running)
    #expect(log.state.tasks["web.1.3"]?.node == NodeID("n2"))
    #expect(Placement.plan(log.state, now: log.time).isEmpty)
  }

  /// A restarted node reports a process of its previous run that it drains before stopping it: the
  /// replacement is placed now, while it drains, not once the node has stopped it.
  @Test func replacesATaskItsRestartedNodeDrainsAsItsPreviousRuns() {
    var log = Log()
    log.announce(2)
    log.ok(.createService(makeSpec(desiredCount: 2)))
    log.executePlan()
    log.runHealthy("web.1.2")
    log.ok(
      .taskReports(
        node: NodeID("n2"),
        reports: [TaskReport(taskID: "web.1.2", state: .running, healthy: false, previousRun: true)]))
    #expect(log.state.tasks["web.1.2"]?.previousRun == true)
    #expect(
      Placement.plan(log.state, now: log.time) == [
        .retireTask(taskID: "web.1.2", reason: "its node restarted; replaced while it drains"),
        .placeTask(service: "web", revision: 1, node: NodeID("n2")),
      ])
    // A task that is merely unhealthy is not replaced: the health checks decide.
    log.runHealthy("web.1.1")
    log.ok(
      .taskReports(node: NodeID("n1"), reports: [TaskReport(taskID: "web.1.1", state: .running, healthy: false)]))
    let plan = Placement.plan(log.state, now: log.time)
    #expect(plan.count == 2, "\(plan)")
    #expect(
      !plan.contains {
        if case .retireTask(let id, _) = $0 { return id == "web.1.1" }
        return false
      })
  }

  @Test func scaleDownRetiresTheNewestFirst() {
    var log = Log()
    log.announce(3)
    log.ok(.createService(makeSpec(desiredCount: 4)))
    log.executePlan()
    log.ok(.scaleService(service: "web", desiredCount: 2))
    #expect(
      Placement.plan(log.state, now: log.time) == [
        .retireTask(taskID: "web.1.4", reason: "scaled down to 2 tasks of web:1"),
        .retireTask(taskID: "web.1.3", reason: "scaled down to 2 tasks of web:1"),
      ])
    log.executePlan()
    #expect(Placement.plan(log.state, now: log.time).isEmpty)
    #expect(log.state.tasks(service: "web").filter { $0.desired == .running }.map(\.id) == ["web.1.1", "web.1.2"])
  }

  @Test func placesNothingWithoutAnUpNode() {
    var log = Log()
    log.announce(1)
    log.ok(.createService(makeSpec(desiredCount: 2)))
    log.ok(.nodeDown(node: NodeID("n1"), incarnation: 1))
    #expect(Placement.plan(log.state, now: log.time).isEmpty)
    guard case .rejected(let rejection) = log.apply(.placeTask(service: "web", revision: 1, node: NodeID("n1"))) else {
      Issue.record("placed a task on a node that is down")
      return
    }
    #expect(rejection.code == .conflict)
  }
}
