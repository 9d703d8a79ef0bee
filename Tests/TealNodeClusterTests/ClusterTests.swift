// Issue 14's cluster tests: real `teal node start` processes over TLS on loopback, driven through
// the HTTP API of NODE-CONTRACT.md. Skipped (with the reason) while the built `teal` has no
// `node start`.

import Foundation
import NIOHTTP1
import TealTestSupport
import TealTraffic
import Testing

/// The service specs the tests submit: teal-demo tasks, each given `PORT` by its node.
enum DemoSpecs {
  static func yaml(name: String = "web", desiredCount: Int, productionPort: Int, testPort: Int) -> String {
    """
    name: \(name)
    desiredCount: \(desiredCount)
    productionPort: \(productionPort)
    testPort: \(testPort)
    task:
      command: \(Binaries.tealDemo)
      env:
        # Every node gives its tasks ports from its own taskPortRange; the health check and the
        # balancers dial the node's address, so listen on all of them.
        TEAL_DEMO_HOST: "0.0.0.0"
        TEAL_DEMO_VERSION: "1"
      port: 0
      healthCheck:
        path: /health
        interval: 1s
        timeout: 500ms
        healthyThreshold: 1
        unhealthyThreshold: 2
    deployment:
      strategy: BLUE_GREEN
      bakeTime: 0s

    """
  }

  /// Why the specs above cannot be used, or nil: `teal spec validate` must accept `task.port: 0`
  /// (the node then hands each task a port through `PORT`).
  static let refusal: String? = {
    guard Binaries.missing == nil else { return Binaries.missing }
    let path = FileManager.default.temporaryDirectory.appendingPathComponent("teal-spec-\(UUID().uuidString).yaml")
      .path
    defer { try? FileManager.default.removeItem(atPath: path) }
    do {
      try yaml(desiredCount: 1, productionPort: 18080, testPort: 18081).write(
        toFile: path, atomically: true, encoding: .utf8)
      let result = try run(Binaries.teal, ["spec", "validate", "-f", path])
      return result.status == 0 ? nil : "teal spec validate refuses a spec with task.port: 0: \(result.output)"
    } catch {
      return "cannot run teal spec validate: \(error)"
    }
  }()
}

/// Ports for one service, free on every node's address.
struct ServicePorts {
  var production: Int
  var test: Int

  init(_ cluster: LocalCluster) throws {
    let hosts = cluster.nodes.map(\.address)
    production = try FreePorts.pick(on: hosts)
    test = try FreePorts.pick(on: hosts)
  }
}

@Suite(
  "Cluster of real nodes (teal node start)", .serialized,
  .enabled(if: Binaries.missing == nil, "\(Binaries.missing ?? "")"))
struct ClusterTests {
  // MARK: Formation

  @Test(.timeLimit(.minutes(2)))
  func threeNodesElectExactlyOneLeaderAndListThreeMembersUp() async throws {
    try await withCluster { cluster in
      let leader = try await cluster.waitForLeader()
      for id in cluster.ids {
        let health = try await cluster.api(id).send(.GET, "/health", authorized: false)
        #expect(health.status == 200)
        #expect(try decode(HealthView.self, health, what: "health") == HealthView(status: "ok", node: id))
        #expect(health.header("x-teal-node") == id)

        let response = try await cluster.api(id).send(.GET, "/v1/cluster")
        #expect(response.header("x-teal-node") == id)
        #expect(response.header("x-teal-leader") == leader)
        let status = try decode(ClusterStatusView.self, response, what: "cluster on \(id)")
        #expect(status.leader == leader)
        #expect(Set(status.members.map(\.id)) == Set(cluster.ids))
        #expect(status.members.allSatisfy { $0.state == "up" }, "\(status.members)")
        let leaders = status.members.filter { $0.role == "leader" }.map(\.id)
        #expect(leaders == [leader], "\(id) sees roles \(status.members.map { "\($0.id)=\($0.role ?? "-")" })")
        for member in status.members {
          #expect(member.address == cluster.node(member.id).address)
          #expect(member.api == "http://\(cluster.node(member.id).address):\(cluster.apiPort)")
        }
      }
      let ready = try await cluster.api(cluster.followers(of: leader)[0]).send(.GET, "/ready", authorized: false)
      #expect(ready.status == 200)
      #expect(try decode(ReadyView.self, ready, what: "ready").leader == leader)
    }
  }

  // MARK: A service through a follower

  @Test(.timeLimit(.minutes(2)), .enabled(if: DemoSpecs.refusal == nil, "\(DemoSpecs.refusal ?? "")"))
  func aServiceCreatedThroughAFollowerIsCommittedEverywhereAndServedByEveryListener() async throws {
    try await withCluster { cluster in
      let leader = try await cluster.waitForLeader()
      let follower = cluster.followers(of: leader)[0]
      let ports = try ServicePorts(cluster)
      let created = try await cluster.api(follower).call(
        .POST, "/v1/services",
        body: DemoSpecs.yaml(desiredCount: 3, productionPort: ports.production, testPort: ports.test),
        contentType: "application/yaml", expect: 201, as: ServiceDetailView.self)
      #expect(created.name == "web")
      #expect(created.desiredCount == 3)
      #expect(created.currentRevision == "web:1")
      #expect(created.revisions.map(\.id) == ["web:1"])

      let views = try await waitForServing(cluster, "web", count: 3)
      #expect(Set(views.map(\.committedShape)).count == 1, "\(views.map(\.committedShape))")
      let tasks = views[0].tasks.filter(\.isServing)
      #expect(
        Set(tasks.map(\.node)) == Set(cluster.ids), "tasks are not spread: \(tasks.map { "\($0.id)@\($0.node)" })")
      for task in tasks {
        #expect(task.address == cluster.node(task.node).address)
        #expect(task.port.map { cluster.node(task.node).taskPorts.contains($0) } == true, "\(task)")
      }

      let taskList = try await cluster.api(leader).get("/v1/tasks?service=web", as: TaskListView.self)
      #expect(Set(taskList.tasks.filter(\.isServing).map(\.id)) == Set(tasks.map(\.id)))

      for node in cluster.nodes {
        try await waitUntil("\(node.id)'s production listener serves web:1") {
          let connection = try await HTTPConnection.connect(host: node.address, port: ports.production)
          defer { Task { await connection.close() } }
          let response = try await connection.request(method: .GET, path: "/")
          return response.status == 200 && response.header("x-teal-revision") == "web:1"
        }
      }
    }
  }

  // MARK: Scale down and SIGTERM under load

  @Test(.timeLimit(.minutes(3)), .enabled(if: DemoSpecs.refusal == nil, "\(DemoSpecs.refusal ?? "")"))
  func scaleThreeToOneThenSIGTERMANodeUnderLoadFailsNoRequestOnTheSurvivors() async throws {
    try await withCluster { cluster in
      let leader = try await cluster.waitForLeader()
      let ports = try ServicePorts(cluster)
      _ = try await cluster.api(leader).call(
        .POST, "/v1/services",
        body: DemoSpecs.yaml(desiredCount: 3, productionPort: ports.production, testPort: ports.test),
        contentType: "application/yaml", expect: 201, as: ServiceDetailView.self)
      _ = try await waitForServing(cluster, "web", count: 3)
      try await waitForListeners(cluster, ports.production)

      let targets = cluster.nodes.map { TrafficTarget(host: $0.address, port: ports.production) }
      let traffic = try TrafficGenerator(
        configuration: TrafficConfiguration(
          targets: targets, clientsPerTarget: 4, postFraction: 0.5, getPath: "/", postPath: "/process",
          bodyBytes: 2048, maximumDuration: .seconds(150), requestTimeout: .seconds(10)))
      traffic.start()
      defer { Task { await traffic.stop() } }
      try await waitUntil("traffic flows on every listener") {
        traffic.snapshot().summaries.values.allSatisfy { $0.ok >= 20 }
      }

      let scaled = try await cluster.api(cluster.followers(of: leader)[0]).call(
        .PUT, "/v1/services/web/scale", body: #"{"desiredCount": 1}"#, as: ServiceDetailView.self)
      #expect(scaled.desiredCount == 1)
      let views = try await waitForServing(cluster, "web", count: 1, exactTasks: true)
      let remaining = try #require(views[0].tasks.first)

      // SIGTERM a node that does not hold the remaining task; the leader if it can be.
      let victim = leader != remaining.node ? leader : cluster.ids.first { $0 != remaining.node && $0 != leader }!
      let survivors = cluster.ids.filter { $0 != victim }
      let exit = try await cluster.sigterm(victim)
      #expect(exit == .exited(0), "\(victim) after SIGTERM: \(exit)")
      _ = try await cluster.waitForLeader(among: survivors, expectUp: 2)
      try await waitUntil("survivors see \(victim) down") {
        for id in survivors {
          let status = try await cluster.api(id).cluster()
          guard status.members.first(where: { $0.id == victim })?.state == "down" else { return false }
        }
        return true
      }
      // More traffic after the membership change, then stop it and count.
      let before = traffic.snapshot().total.sent
      try await waitUntil("traffic after the SIGTERM") { traffic.snapshot().total.sent >= before + 100 }
      await traffic.stop()
      let snapshot = traffic.snapshot()
      print("scale and SIGTERM traffic:\n\(snapshot.report)")
      for node in cluster.nodes where survivors.contains(node.id) {
        let summary = try #require(snapshot.summaries[TrafficTarget(host: node.address, port: ports.production)])
        #expect(summary.failed == 0 && summary.errorResponses == 0, "\(node.id)'s listener: \(summary.line)")
        #expect(summary.ok > 0)
      }
      let survivorViews = try await waitForServing(cluster, "web", count: 1, on: survivors, exactTasks: true)
      #expect(survivorViews.allSatisfy { $0.desiredCount == 1 })
    }
  }

  // MARK: kill -9 the leader

  @Test(.timeLimit(.minutes(3)), .enabled(if: DemoSpecs.refusal == nil, "\(DemoSpecs.refusal ?? "")"))
  func killingTheLeaderElectsANewOneReplacesItsTasksLosesNoAcknowledgedWriteAndItCatchesUp() async throws {
    try await withCluster { cluster in
      let leader = try await cluster.waitForLeader()
      let ports = try ServicePorts(cluster)
      _ = try await cluster.api(leader).call(
        .POST, "/v1/services",
        body: DemoSpecs.yaml(desiredCount: 3, productionPort: ports.production, testPort: ports.test),
        contentType: "application/yaml", expect: 201, as: ServiceDetailView.self)
      _ = try await waitForServing(cluster, "web", count: 3)

      // An acknowledged write, then at once the kill.
      let acknowledged = try await cluster.api(leader).call(
        .PUT, "/v1/services/web/scale", body: #"{"desiredCount": 4}"#, as: ServiceDetailView.self)
      #expect(acknowledged.desiredCount == 4)
      try await cluster.kill9(leader)

      let survivors = cluster.followers(of: leader)
      let newLeader = try await cluster.waitForLeader(among: survivors, expectUp: 2, excluding: leader)
      #expect(newLeader != leader)
      try await waitUntil("survivors mark \(leader) down") {
        for id in survivors {
          let status = try await cluster.api(id).cluster()
          guard status.members.first(where: { $0.id == leader })?.state == "down" else { return false }
        }
        return true
      }
      let views = try await waitForServing(cluster, "web", count: 4, on: survivors, timeout: .seconds(60))
      for view in views {
        #expect(view.desiredCount == 4, "the acknowledged scale to 4 was lost")
        #expect(view.tasks.filter(\.isServing).allSatisfy { $0.node != leader }, "\(view.tasks)")
        #expect((view.routes.targets ?? []).allSatisfy { $0.node != leader }, "routes still target \(leader)")
      }

      try cluster.restart(leader)
      _ = try await cluster.waitForLeader(expectUp: 3, timeout: .seconds(60))
      try await waitUntil("\(leader) catches up", timeout: .seconds(60)) {
        let reference = try await cluster.api(newLeader).service("web", stale: false)
        let caughtUp = try await cluster.api(leader).service("web")
        return caughtUp.committedShape == reference.committedShape && caughtUp.desiredCount == 4
      }
    }
  }

  // MARK: Idempotency

  @Test(.timeLimit(.minutes(2)), .enabled(if: DemoSpecs.refusal == nil, "\(DemoSpecs.refusal ?? "")"))
  func theSameIdempotencyKeyThroughTwoNodesHasOneEffectAndAnotherBodyIsRefused() async throws {
    try await withCluster { cluster in
      try await cluster.waitForLeader()
      let ports = try ServicePorts(cluster)
      let spec = DemoSpecs.yaml(desiredCount: 1, productionPort: ports.production, testPort: ports.test)
      let key = UUID().uuidString
      let first = try await cluster.api("n1").send(
        .POST, "/v1/services", body: spec, contentType: "application/yaml", idempotencyKey: key)
      #expect(first.status == 201, "\(first.text)")
      let second = try await cluster.api("n2").send(
        .POST, "/v1/services", body: spec, contentType: "application/yaml", idempotencyKey: key)
      #expect(second.status == first.status, "\(second.text)")
      let firstView = try decode(ServiceDetailView.self, first, what: "first create")
      let secondView = try decode(ServiceDetailView.self, second, what: "repeated create")
      #expect(secondView.revisions == firstView.revisions)
      #expect(secondView.name == firstView.name)

      let list = try await cluster.api("n3").get("/v1/services", as: ServiceListView.self)
      #expect(list.services.map(\.name) == ["web"])
      let detail = try await cluster.api("n3").service("web", stale: false)
      #expect(detail.revisions.count == 1, "the repeated create made a second revision: \(detail.revisions)")

      let other = DemoSpecs.yaml(desiredCount: 2, productionPort: ports.production, testPort: ports.test)
      let mismatch = try await cluster.api("n3").send(
        .POST, "/v1/services", body: other, contentType: "application/yaml", idempotencyKey: key)
      #expect(mismatch.status == 422, "\(mismatch.text)")
      #expect(try decode(ErrorView.self, mismatch, what: "mismatch").error.code == "idempotency_mismatch")
      let after = try await cluster.api("n1").service("web", stale: false)
      #expect(after.desiredCount == 1)
      #expect(after.revisions.count == 1)

      // The same for a scale: twice with one key through two nodes, one effect (one event).
      let scaleKey = UUID().uuidString
      for id in ["n2", "n3"] {
        let response = try await cluster.api(id).send(
          .PUT, "/v1/services/web/scale", body: #"{"desiredCount": 2}"#, idempotencyKey: scaleKey)
        #expect(response.status == 200, "\(id): \(response.text)")
      }
      let mismatchedScale = try await cluster.api("n1").send(
        .PUT, "/v1/services/web/scale", body: #"{"desiredCount": 3}"#, idempotencyKey: scaleKey)
      #expect(mismatchedScale.status == 422, "\(mismatchedScale.text)")
      #expect(try await cluster.api("n1").service("web", stale: false).desiredCount == 2)
    }
  }

  // MARK: Errors

  @Test(.timeLimit(.minutes(2)))
  func noTokenIs401MalformedJSONIs400AndAnInvalidSpecIs422NamingTheField() async throws {
    try await withCluster { cluster in
      let leader = try await cluster.waitForLeader()
      let api = cluster.api(cluster.followers(of: leader)[0])

      let noToken = try await api.send(.GET, "/v1/cluster", authorized: false)
      #expect(noToken.status == 401)
      #expect(try decode(ErrorView.self, noToken, what: "no token").error.code == "unauthorized")
      #expect(noToken.header("x-teal-node") == api.node)
      let wrongToken = try await api.send(.GET, "/v1/services", token: String(repeating: "0", count: 64))
      #expect(wrongToken.status == 401)
      let noTokenWrite = try await api.send(.POST, "/v1/services", body: "{}", authorized: false)
      #expect(noTokenWrite.status == 401)

      let malformed = try await api.send(.POST, "/v1/services", body: #"{"name": "web", "desiredCount": "#)
      #expect(malformed.status == 400, "\(malformed.text)")
      let malformedError = try decode(ErrorView.self, malformed, what: "malformed JSON").error
      #expect(malformedError.code == "bad_request")
      #expect(!malformedError.message.isEmpty)

      let ports = try ServicePorts(cluster)
      // Only desiredCount is wrong (a fixed task port, valid whether or not port 0 is accepted).
      let invalid = DemoSpecs.yaml(desiredCount: 1, productionPort: ports.production, testPort: ports.test)
        .replacingOccurrences(of: "desiredCount: 1", with: "desiredCount: 0")
        .replacingOccurrences(of: "port: 0", with: "port: 9000")
      let refused = try await api.send(.POST, "/v1/services", body: invalid, contentType: "application/yaml")
      #expect(refused.status == 422, "\(refused.text)")
      let refusal = try decode(ErrorView.self, refused, what: "invalid spec").error
      #expect(refusal.code == "invalid_spec")
      #expect(refusal.field?.hasSuffix("desiredCount") == true, "field: \(refusal.field ?? "none")")
      #expect(refusal.message.contains("1...1000"), "\(refusal.message)")

      let badScale = try await api.send(.PUT, "/v1/services/nope/scale", body: #"{"desiredCount": 1}"#)
      #expect(badScale.status == 404, "\(badScale.text)")
      let missing = try await api.send(.GET, "/v1/services/nope")
      #expect(missing.status == 404)
      #expect(try decode(ErrorView.self, missing, what: "missing").error.code == "not_found")
      #expect(try await api.get("/v1/services", as: ServiceListView.self).services.isEmpty)
    }
  }

  // MARK: Full restart

  @Test(.timeLimit(.minutes(3)), .enabled(if: DemoSpecs.refusal == nil, "\(DemoSpecs.refusal ?? "")"))
  func allThreeStoppedAndStartedAgainKeepEveryServiceAndEvent() async throws {
    try await withCluster { cluster in
      let leader = try await cluster.waitForLeader()
      let ports = try ServicePorts(cluster)
      _ = try await cluster.api(leader).call(
        .POST, "/v1/services",
        body: DemoSpecs.yaml(desiredCount: 2, productionPort: ports.production, testPort: ports.test),
        contentType: "application/yaml", expect: 201, as: ServiceDetailView.self)
      _ = try await cluster.api(leader).call(
        .PUT, "/v1/services/web/scale", body: #"{"desiredCount": 3}"#, as: ServiceDetailView.self)
      _ = try await waitForServing(cluster, "web", count: 3)
      let servicesBefore = try await cluster.api(leader).get("/v1/services", as: ServiceListView.self)
      let detailBefore = try await cluster.api(leader).service("web", stale: false)
      let eventsBefore = try await allEvents(cluster.api(leader))
      #expect(!eventsBefore.isEmpty)

      // Stop all three at once (stopping them one by one would leave the last without a quorum).
      try await withThrowingTaskGroup(of: (String, ChildExit).self) { group in
        for id in cluster.ids { group.addTask { (id, try await cluster.sigterm(id)) } }
        for try await (id, exit) in group { #expect(exit == .exited(0), "\(id) after SIGTERM: \(exit)") }
      }
      try cluster.startAll()
      let newLeader = try await cluster.waitForLeader(timeout: .seconds(60))

      let servicesAfter = try await cluster.api(newLeader).get("/v1/services", as: ServiceListView.self)
      #expect(servicesAfter.services.map(\.name) == servicesBefore.services.map(\.name))
      let detailAfter = try await cluster.api(newLeader).service("web", stale: false)
      #expect(detailAfter.desiredCount == 3)
      #expect(detailAfter.revisions == detailBefore.revisions)
      let eventsAfter = try await allEvents(cluster.api(newLeader))
      let kept = Set(eventsAfter.map { "\($0.index) \($0.kind) \($0.message)" })
      let lost = eventsBefore.filter { !kept.contains("\($0.index) \($0.kind) \($0.message)") }
      #expect(lost.isEmpty, "events lost across the restart: \(lost)")
      _ = try await waitForServing(cluster, "web", count: 3, timeout: .seconds(60))
    }
  }

  // MARK: - Helpers

  /// Waits until every node in `on` (default: all) holds the same committed shape of `name` with
  /// `count` tasks running and healthy (and, with `exactTasks`, no other task at all); returns
  /// each node's view.
  @discardableResult
  func waitForServing(
    _ cluster: LocalCluster, _ name: String, count: Int, on nodes: [String]? = nil, exactTasks: Bool = false,
    timeout: Duration = .seconds(60)
  ) async throws -> [ServiceDetailView] {
    let members = nodes ?? cluster.ids
    var views: [ServiceDetailView] = []
    try await waitUntil(
      "\(name) with \(count) healthy tasks on \(members)", timeout: timeout, interval: .milliseconds(200)
    ) {
      var seen: [ServiceDetailView] = []
      for id in members { seen.append(try await cluster.api(id).service(name)) }
      guard Set(seen.map(\.committedShape)).count == 1 else { return false }
      for view in seen {
        let serving = view.tasks.filter(\.isServing)
        guard view.runningCount == count, view.healthyCount == count, serving.count == count else { return false }
        if exactTasks && view.tasks.count != count { return false }
      }
      views = seen
      return true
    }
    return views
  }

  /// Every event, page by page (`after` the last index seen; at most 100 pages).
  func allEvents(_ api: NodeAPI) async throws -> [EventView] {
    var events: [EventView] = []
    for _ in 0..<100 {
      let path = "/v1/events" + (events.last.map { "?after=\($0.index)" } ?? "")
      let page = try await api.get(path, as: EventListView.self).events
      if page.isEmpty { return events }
      events += page
    }
    return events
  }

  /// Waits until every node's production listener answers 200.
  func waitForListeners(_ cluster: LocalCluster, _ port: Int) async throws {
    for node in cluster.nodes {
      try await waitUntil("\(node.id)'s listener on \(port)") {
        let connection = try await HTTPConnection.connect(host: node.address, port: port)
        defer { Task { await connection.close() } }
        return try await connection.request(method: .GET, path: "/").status == 200
      }
    }
  }
}
