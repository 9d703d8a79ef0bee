import Foundation
import Hummingbird
import TealDeploy
import TealGossip
import TealLoadBalancer
import TealSpec
import TealWire
import Testing

@testable import TealCluster
@testable import TealNode
@testable import TealTasks

@Suite("Node decisions (pure parts of the shells)")
struct NodeDecisionTests {
  static func record(_ id: String, up: Bool, incarnation: UInt64 = 0) -> ClusterNode {
    ClusterNode(
      info: NodeInfo(id: NodeID(id), address: "127.0.0.9", apiURL: "http://127.0.0.9:7070", peerPort: 7000),
      liveness: up ? .up : .down, incarnation: incarnation, routesApplied: [:], announcedAt: .zero,
      livenessChangedAt: .zero, draining: false)
  }

  static func member(_ id: String, _ status: MemberStatus, incarnation: UInt64 = 3, left: Bool = false) -> Member {
    Member(
      id: NodeID(id), status: status, incarnation: incarnation,
      metadata: MemberMetadata(
        peerAddress: HostPort(host: "127.0.0.9", port: 7000), apiPort: 7070, listenerPorts: [], version: "t",
        raftRole: .follower, raftTerm: 0),
      leftGracefully: left)
  }

  @Test("liveness: gossip's dead or departed member that the log has up is committed down, with gossip's incarnation")
  func deadMemberGoesDown() {
    #expect(
      MembershipReporter.decide(
        record: Self.record("n2", up: true), gossip: Self.member("n2", .dead), ledLongEnough: false)
        == .nodeDown(node: NodeID("n2"), incarnation: 3))
    #expect(
      MembershipReporter.decide(
        record: Self.record("n2", up: true), gossip: Self.member("n2", .dead, left: true), ledLongEnough: false)
        == .nodeDown(node: NodeID("n2"), incarnation: 3))
  }

  @Test("liveness: a suspect member is not down yet; an alive one that the log has down comes up")
  func suspectAndAlive() {
    #expect(
      MembershipReporter.decide(
        record: Self.record("n2", up: true), gossip: Self.member("n2", .suspect), ledLongEnough: true)
        == nil)
    #expect(
      MembershipReporter.decide(
        record: Self.record("n2", up: false), gossip: Self.member("n2", .alive), ledLongEnough: false)
        == .nodeUp(node: NodeID("n2"), incarnation: 3))
    #expect(
      MembershipReporter.decide(
        record: Self.record("n2", up: true), gossip: Self.member("n2", .alive), ledLongEnough: true)
        == nil)
  }

  @Test("liveness: a node gossip never heard of is down only after the leader led for the grace period")
  func unheardNode() {
    #expect(MembershipReporter.decide(record: Self.record("n3", up: true), gossip: nil, ledLongEnough: false) == nil)
    #expect(
      MembershipReporter.decide(record: Self.record("n3", up: true, incarnation: 7), gossip: nil, ledLongEnough: true)
        == .nodeDown(node: NodeID("n3"), incarnation: 7))
  }

  @Test("a task's process spec: the spec's command and env, HOST and ids added, PORT unless the spec fixes one")
  func processSpec() {
    let task = TealDeploy.TaskSpec(
      command: "/bin/demo", args: ["-v"], env: ["MODE": "x"], port: 0,
      healthCheck: TealDeploy.HealthCheckConfiguration(
        path: "/health", interval: .seconds(2), timeout: .seconds(1), healthyThreshold: 2, unhealthyThreshold: 3))
    let spec = TaskReconciler.processSpec(
      task, taskID: "web.1.4", revision: RevisionID(service: "web", number: 1), host: "127.0.0.2")
    #expect(spec.command == "/bin/demo")
    #expect(spec.arguments == ["-v"])
    #expect(spec.environment["MODE"] == "x")
    #expect(spec.environment["HOST"] == "127.0.0.2")
    #expect(spec.environment["TEAL_TASK_ID"] == "web.1.4")
    #expect(spec.fixedPort == nil)
    #expect(spec.healthCheck?.host == "127.0.0.2")
    #expect(spec.healthCheck?.interval == .seconds(2))
    var fixed = task
    fixed.port = 9000
    #expect(
      TaskReconciler.processSpec(fixed, taskID: "t", revision: RevisionID(service: "web", number: 1), host: "h")
        .fixedPort == 9000)
  }

  @Test("a task's report: healthy is running and healthy, unhealthy is running, a signal is a negative code")
  func reports() {
    func info(_ state: TaskState) -> TaskInfo {
      TaskInfo(
        taskID: "t", revision: "web:1", pid: 10, port: 20_001, state: state, stdoutLogPath: "", stderrLogPath: "")
    }
    #expect(
      TaskReconciler.report(of: info(.healthy), host: "h")
        == TaskReport(taskID: "t", state: .running, healthy: true, address: "h", port: 20_001))
    #expect(
      TaskReconciler.report(of: info(.unhealthy(reason: "404")), host: "h")
        == TaskReport(taskID: "t", state: .running, healthy: false, address: "h", port: 20_001))
    #expect(TaskReconciler.report(of: info(.stopping), host: "h") == nil)
    let killed = TaskExit(termination: .signaled(signal: 9), stopRequested: false, killedAfterGracePeriod: false)
    #expect(
      TaskReconciler.report(of: info(.exited(killed)), host: "h")
        == TaskReport(taskID: "t", state: .exited(code: -9), healthy: false))
  }

  @Test("committed routes become one target group per revision with the committed generation and weights")
  func balancerRoutes() {
    let blue = RevisionID(service: "web", number: 1)
    let green = RevisionID(service: "web", number: 2)
    let routes = TealCluster.ServiceRoutes(
      generation: 9,
      targets: [
        RouteTarget(taskID: "a", node: NodeID("n1"), address: "127.0.0.1", port: 20_000, revision: blue),
        RouteTarget(taskID: "b", node: NodeID("n2"), address: "127.0.0.2", port: 20_000, revision: blue),
      ],
      production: [blue: 9_000, green: 1_000], test: [green: 10_000])
    let mapped = RouteReconciler.balancerRoutes(routes)
    #expect(mapped.generation == 9)
    #expect(mapped.targetGroups.map(\.revision) == ["web:1", "web:2"])
    #expect(mapped.targetGroups[0].targets.count == 2)
    #expect(mapped.targetGroups[1].targets.isEmpty)
    #expect(mapped.productionWeights == ["web:1": 9_000, "web:2": 1_000])
    #expect(mapped.testWeights == ["web:2": 10_000])
    #expect(throws: Never.self) { try mapped.validate() }
  }

  @Test("bearer tokens compare equal only byte for byte")
  func tokens() {
    #expect(BearerTokenMiddleware<BasicRequestContext>.constantTimeEqual(Array("abc".utf8), Array("abc".utf8)))
    #expect(!BearerTokenMiddleware<BasicRequestContext>.constantTimeEqual(Array("abc".utf8), Array("abd".utf8)))
    #expect(!BearerTokenMiddleware<BasicRequestContext>.constantTimeEqual(Array("abc".utf8), Array("abcd".utf8)))
  }

  @Test("each refusal of ClusterState has its HTTP status; a malformed spec document is 400, a broken rule 422")
  func errorMapping() {
    #expect(APIFailure(ClusterRejection(code: .notFound, message: "m")).status == .notFound)
    #expect(APIFailure(ClusterRejection(code: .conflict, message: "m")).status == .conflict)
    #expect(APIFailure(ClusterRejection(code: .invalidSpec, message: "m", field: "f")).status == .unprocessableContent)
    #expect(APIFailure(ClusterRejection(code: .idempotencyMismatch, message: "m")).status == .unprocessableContent)
    #expect(APIFailure(ClusterRejection(code: .staleTerm, message: "m")).status == .serviceUnavailable)
    #expect(APIFailure(SubmitError.noLeader("x")).retryAfter == 1)
    let syntax = APIFailure(spec: SpecErrors(SpecError(path: "(document)", message: "not JSON")))
    #expect(syntax.status == .badRequest)
    let rule = APIFailure(spec: SpecErrors(SpecError(path: "deployment.bakeTime", message: "too long")))
    #expect(rule.status == .unprocessableContent)
    #expect(rule.field == "spec.deployment.bakeTime")
  }
}
