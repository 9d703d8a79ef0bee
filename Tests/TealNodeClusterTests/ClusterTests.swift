// Issue 14's cluster tests: real `teal node start` processes over TLS on loopback, driven through
// the HTTP API of NODE-CONTRACT.md. Skipped (with the reason) while the built `teal` has no
// `node start`.

import Foundation
import NIOHTTP1
import TealTestSupport
import TealTraffic
import Testing

/// The service specs the tests submit: teal-demo tasks, which bind `HOST` (their node's address)
/// and `PORT`.
enum DemoSpecs {
  static func yaml(name: String = "web", desiredCount: Int, ports: ServicePorts) -> String {
    """
    name: \(name)
    desiredCount: \(desiredCount)
    productionPort: \(ports.production)
    testPort: \(ports.test)
    task:
      command: \(Binaries.tealDemo)
      env:
        TEAL_DEMO_VERSION: "1"
      port: \(ports.task)
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

  /// Whether `teal spec validate` accepts `task.port: 0` (each task then gets a port of its
  /// node's `taskPortRange` through `PORT`). When it does not, the tests fix one task port that
  /// is free on every node's address, and keep at most one task of a service per node.
  static let portZeroAccepted: Bool = {
    guard Binaries.missing == nil else { return false }
    let path = FileManager.default.temporaryDirectory.appendingPathComponent("teal-spec-\(UUID().uuidString).yaml")
      .path
    defer { try? FileManager.default.removeItem(atPath: path) }
    let ports = ServicePorts(production: 18080, test: 18081, task: 0)
    guard (try? yaml(desiredCount: 1, ports: ports).write(toFile: path, atomically: true, encoding: .utf8)) != nil,
      let result = try? run(Binaries.teal, ["spec", "validate", "-f", path])
    else { return false }
    return result.status == 0
  }()
}

/// Ports for one service, free on every node's address.
struct ServicePorts {
  var production: Int
  var test: Int
  /// `task.port`: 0 (the node picks) when the spec parser accepts it, else one fixed port.
  var task: Int

  init(production: Int, test: Int, task: Int) {
    self.production = production
    self.test = test
    self.task = task
  }

  init(_ cluster: LocalCluster) throws {
    let hosts = cluster.nodes.map(\.address)
    production = try FreePorts.pick(on: hosts)
    test = try FreePorts.pick(on: hosts)
    task = DemoSpecs.portZeroAccepted ? 0 : try FreePorts.pick(on: hosts)
  }

  /// Whether `port` is a port a task of this service on `node` may listen on.
  func allows(_ port: Int?, on node: ClusterNode) -> Bool {
    guard let port else { return false }
    return task == 0 ? node.taskPorts.contains(port) : port == task
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
      let ready = try await cluster.api(cluster.followers(of: leader)[0]).send(.GET, "/ready")
      #expect(ready.status == 200)
      #expect(try decode(ReadyView.self, ready, what: "ready").leader == leader)
    }
  }

  // MARK: A service through a follower

  @Test(.timeLimit(.minutes(2)))
  func aServiceCreatedThroughAFollowerIsCommittedEverywhereAndServedByEveryListener() async throws {
    try await withCluster { cluster in
      let leader = try await cluster.waitForLeader()
      let follower = cluster.followers(of: leader)[0]
      let ports = try ServicePorts(cluster)
      let created = try await cluster.api(follower).call(
        .POST, "/v1/services",
        body: DemoSpecs.yaml(desiredCount: 3, ports: ports),
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
        #expect(ports.allows(task.port, on: cluster.node(task.node)), "\(task)")
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

      try await checkMetrics(cluster, ports: ports, follower: follower)

      // Three separate processes at the same applied index hold byte-identical snapshots: the
      // state hash is the SHA-256 of each node's canonical snapshot.
      var compared = false
      try await waitUntil("all three nodes at one applied index") {
        var digests: [StateDigestView] = []
        for id in cluster.ids {
          digests.append(try await cluster.api(id).get("/v1/cluster/state", as: StateDigestView.self))
        }
        guard Set(digests.map(\.appliedIndex)).count == 1 else { return false }
        #expect(Set(digests.map(\.stateHash)).count == 1, "same index, different states: \(digests)")
        compared = true
        return true
      }
      #expect(compared)

      // Every node serves the repository's OpenAPI document, and it names exactly the routes the
      // node serves (each answer above was already checked against it by `NodeAPI.send`).
      let served = try await cluster.api(follower).send(.GET, "/v1/openapi.yaml")
      let repositoryDocument = try String(contentsOfFile: documentPath, encoding: .utf8)
      #expect(served.status == 200 && served.text == repositoryDocument)
      let documented = Set(try documentedContract.get().operations.map(\.routeDescription))
      let logged = try #require(loggedRoutes(cluster, follower), "no 'API routes' line in \(follower)'s log")
      #expect(
        logged == documented,
        """
        served, not documented: \(logged.subtracting(documented).sorted()); \
        documented, not served: \(documented.subtracting(logged).sorted())
        """)

      // `teal service delete` returns once the tasks are drained and stopped and the service is gone.
      let log = "\(cluster.directory)/delete.log"
      let delete = try cluster.spawnTeal(["service", "delete", "web", "--dir", cluster.directory], log: log)
      defer { killGroup(delete, startTime: nil) }
      let exit = try await waitForChild(delete, "teal service delete", timeout: .seconds(90))
      let output = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
      #expect(exit == .exited(0) && output.hasSuffix("deleted service web\n"), "\(output)")
      let gone = try await cluster.api(leader).send(.GET, "/v1/services/web")
      #expect(gone.status == 404)
      let left = try await cluster.api(leader).get("/v1/tasks?service=web", as: TaskListView.self)
      #expect(left.tasks.isEmpty, "\(left.tasks.map(\.id))")
    }
  }

  /// `GET /metrics` on `id`, parsed by the strict parser (a parse error is recorded and thrown).
  static func scrape(_ cluster: LocalCluster, _ id: String) async throws -> PrometheusExposition {
    let response = try await cluster.api(id).send(.GET, "/metrics")
    #expect(response.status == 200, "GET /metrics on \(id): \(response.status)")
    #expect(response.header("content-type")?.hasPrefix("text/plain; version=0.0.4") == true)
    do { return try PrometheusExposition(parsing: response.text) } catch {
      Issue.record("GET /metrics on \(id) does not parse: \(error)")
      throw error
    }
  }

  /// Issue 17 (#15 in its text), item 2, on the cluster this test already runs: `/metrics` on
  /// every node parses as Prometheus text, exactly one node reports itself leader, and the
  /// balancer's request counter of each node rises by the requests sent through its listener.
  func checkMetrics(_ cluster: LocalCluster, ports: ServicePorts, follower: String) async throws {
    func scrape(_ id: String) async throws -> PrometheusExposition { try await Self.scrape(cluster, id) }
    try await waitUntil("exactly one node reports itself leader in /metrics") {
      var leaders = 0
      for id in cluster.ids { leaders += try await scrape(id).value("teal_raft_is_leader") == 1 ? 1 : 0 }
      return leaders == 1
    }
    let production = ["service": "web", "listener": "production"]
    for node in cluster.nodes {
      let before = try await scrape(node.id)
      #expect((before.value("teal_raft_term") ?? 0) >= 1, "\(node.id)")
      #expect((before.value("teal_raft_applied_index") ?? 0) >= 1, "\(node.id)")
      #expect(before.families["teal_lb_request_duration_seconds"]?.type == "histogram", "\(node.id)")
      let connections = before.sum("teal_transport_connections")
      #expect(connections >= 1, "\(node.id) has no peer connection in /metrics")
      #expect(before.sum("teal_transport_sent_bytes_total") > 0, "\(node.id)")
      #expect(before.sum("teal_transport_received_bytes_total") > 0, "\(node.id)")
      #expect(before.value("teal_gossip_members", ["state": "alive"]) == 3, "\(node.id)")
      let sent = 5
      let connection = try await HTTPConnection.connect(host: node.address, port: ports.production)
      for _ in 0..<sent {
        #expect(try await connection.request(method: .GET, path: "/").status == 200)
      }
      await connection.close()
      let after = try await scrape(node.id)
      let rise =
        after.sum("teal_lb_requests_total", matching: production)
        - before.sum("teal_lb_requests_total", matching: production)
      #expect(rise >= Double(sent), "\(node.id): teal_lb_requests_total rose by \(rise)")
      let answered =
        after.sum("teal_lb_responses_total", matching: production.merging(["code": "2xx"]) { $1 })
        - before.sum("teal_lb_responses_total", matching: production.merging(["code": "2xx"]) { $1 })
      #expect(answered >= Double(sent), "\(node.id): 2xx rose by \(answered)")
      #expect(after.sum("teal_tasks_running", matching: ["service": "web"]) >= 1, "\(node.id)")
    }
    let created = try await scrape(follower).value(
      "teal_api_requests_total", ["route": "/v1/services", "method": "POST", "status": "201"])
    #expect(created == 1, "the follower counted its POST /v1/services")
    #expect(try await scrape(follower).sum("teal_api_forwarded_total", matching: ["outcome": "applied"]) >= 1)
  }

  // MARK: A node of another cluster

  /// Connections the cluster's nodes refused or closed, as their logs say.
  static func refusals(in cluster: LocalCluster) -> Int {
    cluster.ids.reduce(0) { count, id in
      let log = (try? String(contentsOfFile: cluster.node(id).logPath, encoding: .utf8)) ?? ""
      return count + log.components(separatedBy: "peer connection").count - 1
    }
  }

  @Test(.timeLimit(.minutes(2)))
  func aNodeWithACertificateFromAnotherCACannotJoinAndNothingItSendsIsApplied() async throws {
    try await withCluster { cluster in
      let leader = try await cluster.waitForLeader()
      let before = try await cluster.api(leader).get("/v1/cluster/state", as: StateDigestView.self)
      // n4: a certificate from its own CA, configured as a member of this cluster at 127.0.0.4.
      let intruder = try cluster.layOutForeignNode("n4", address: "127.0.0.4")
      let refusedBefore = Self.refusals(in: cluster)
      try cluster.startForeign(intruder)
      defer { cluster.stopForeign(intruder) }
      // Wait until n4 has dialled the cluster and a node turned it away (three refusals, so that
      // gossip and Raft both had a go), then look at what the cluster holds.
      try await waitUntil("the cluster refuses n4's connections", timeout: .seconds(30)) {
        Self.refusals(in: cluster) >= refusedBefore + 3
      }
      // The refusals show in /metrics too (by reason: another CA fails the TLS handshake).
      var counted = 0.0
      for id in cluster.ids { counted += try await Self.scrape(cluster, id).sum("teal_transport_refusals_total") }
      #expect(counted >= 1, "no node counted a refusal in teal_transport_refusals_total")
      let status = try await cluster.api(leader).cluster()
      #expect(!status.members.contains { $0.id == "n4" }, "n4 became a member: \(status.members)")
      let after = try await cluster.api(leader).get("/v1/cluster/state", as: StateDigestView.self)
      let events = try await cluster.api(leader).send(.GET, "/v1/events?limit=1000")
      #expect(!events.text.contains("n4"), "an event names n4: \(events.text)")
      #expect(after.appliedIndex >= before.appliedIndex)
      for id in cluster.ids {
        let tail = (try? String(contentsOfFile: cluster.node(id).logPath, encoding: .utf8)) ?? ""
        #expect(!tail.contains("peer=n4 tls=TLSv1.3 [TealTransport] connected"), "\(id) accepted n4")
      }
    }
  }

  // MARK: Scale down and SIGTERM under load

  @Test(.timeLimit(.minutes(3)))
  func scaleThreeToOneThenSIGTERMANodeUnderLoadFailsNoRequestOnTheSurvivors() async throws {
    try await withCluster { cluster in
      let leader = try await cluster.waitForLeader()
      let ports = try ServicePorts(cluster)
      _ = try await cluster.api(leader).call(
        .POST, "/v1/services",
        body: DemoSpecs.yaml(desiredCount: 3, ports: ports),
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
      // The two retired tasks show in /metrics as stopped exits; three (or more) were started.
      try await waitUntil("two stopped exits and one running task in /metrics") {
        var stopped = 0.0
        var running = 0.0
        var starts = 0.0
        for id in cluster.ids {
          let metrics = try await Self.scrape(cluster, id)
          stopped += metrics.sum("teal_task_exits_total", matching: ["service": "web", "reason": "stopped"])
          running += metrics.sum("teal_tasks_running", matching: ["service": "web"])
          starts += metrics.sum("teal_task_starts_total", matching: ["service": "web"])
        }
        return stopped >= 2 && running == 1 && starts >= 3
      }

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

  @Test(.timeLimit(.minutes(3)))
  func killingTheLeaderElectsANewOneReplacesItsTasksLosesNoAcknowledgedWriteAndItCatchesUp() async throws {
    try await withCluster { cluster in
      let leader = try await cluster.waitForLeader()
      let ports = try ServicePorts(cluster)
      _ = try await cluster.api(leader).call(
        .POST, "/v1/services",
        body: DemoSpecs.yaml(desiredCount: 3, ports: ports),
        contentType: "application/yaml", expect: 201, as: ServiceDetailView.self)
      _ = try await waitForServing(cluster, "web", count: 3)

      // An acknowledged write, then at once the kill. (A scale down: with a fixed task port a node
      // holds at most one task of the service, and two survivors hold two.)
      let before = try await cluster.api(leader).service("web", stale: false)
      let leaderTasks = before.tasks.filter { $0.node == leader }.map(\.id)
      let acknowledged = try await cluster.api(leader).call(
        .PUT, "/v1/services/web/scale", body: #"{"desiredCount": 2}"#, as: ServiceDetailView.self)
      #expect(acknowledged.desiredCount == 2)
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
      let views = try await waitForServing(cluster, "web", count: 2, on: survivors, timeout: .seconds(60))
      for view in views {
        #expect(view.desiredCount == 2, "the acknowledged scale to 2 was lost")
        let serving = view.tasks.filter(\.isServing)
        #expect(serving.allSatisfy { $0.node != leader }, "\(view.tasks)")
        #expect(Set(serving.map(\.node)) == Set(survivors), "\(serving)")
        #expect(serving.allSatisfy { !leaderTasks.contains($0.id) }, "the dead leader's tasks still count: \(serving)")
        #expect((view.routes.targets ?? []).allSatisfy { $0.node != leader }, "routes still target \(leader)")
      }

      // The dead node's listeners are gone with it (its tasks live on in their own groups).
      let leftovers = readTaskLedger(cluster.node(leader).ledgerPath)
      let deadAPI: TrafficFailure?
      do {
        let connection = try await HTTPConnection.connect(host: cluster.node(leader).address, port: cluster.apiPort)
        await connection.close()
        deadAPI = nil
      } catch {
        deadAPI = error as? TrafficFailure
      }
      do {
        #expect(
          deadAPI == .connectRefused,
          "the dead \(leader)'s API port still accepts connections (leftover tasks: \(leftovers.map(\.task)))")
        try cluster.restart(leader)
        _ = try await cluster.waitForLeader(expectUp: 3, timeout: .seconds(30))
        try await waitUntil("\(leader) catches up", timeout: .seconds(30)) {
          let reference = try await cluster.api(newLeader).service("web", stale: false)
          let caughtUp = try await cluster.api(leader).service("web")
          return caughtUp.committedShape == reference.committedShape && caughtUp.desiredCount == 2
        }
      }
    }
  }

  // MARK: Idempotency

  @Test(.timeLimit(.minutes(2)))
  func theSameIdempotencyKeyThroughTwoNodesHasOneEffectAndAnotherBodyIsRefused() async throws {
    try await withCluster { cluster in
      try await cluster.waitForLeader()
      let ports = try ServicePorts(cluster)
      let spec = DemoSpecs.yaml(desiredCount: 1, ports: ports)
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

      let other = DemoSpecs.yaml(desiredCount: 2, ports: ports)
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
      // A token that is present but wrong: 401 or 403 (the contract names both codes).
      let wrongToken = try await api.send(.GET, "/v1/services", token: String(repeating: "0", count: 64))
      let wrongTokenCode = try decode(ErrorView.self, wrongToken, what: "wrong token").error.code
      #expect(
        (wrongToken.status == 401 && wrongTokenCode == "unauthorized")
          || (wrongToken.status == 403 && wrongTokenCode == "forbidden"), "\(wrongToken.status) \(wrongToken.text)")
      let noTokenWrite = try await api.send(.POST, "/v1/services", body: "{}", authorized: false)
      #expect(noTokenWrite.status == 401)

      let malformed = try await api.send(.POST, "/v1/services", body: #"{"name": "web", "desiredCount": "#)
      let malformedError = try decode(ErrorView.self, malformed, what: "malformed JSON").error
      #expect(!malformedError.message.isEmpty)
      do {
        #expect(malformed.status == 400, "\(malformed.text)")
        #expect(malformedError.code == "bad_request")
      }
      let malformedScale = try await api.send(.PUT, "/v1/services/web/scale", body: #"{"desiredCount": "#)
      #expect(malformedScale.status == 400, "\(malformedScale.text)")
      let scaleError = try decode(ErrorView.self, malformedScale, what: "malformed scale").error
      #expect(scaleError.code == "bad_request")
      #expect(scaleError.message.contains("desiredCount"), "\(scaleError.message)")

      let ports = try ServicePorts(cluster)
      // Only desiredCount is wrong (a fixed task port, valid whether or not port 0 is accepted).
      let invalid = DemoSpecs.yaml(desiredCount: 1, ports: ports)
        .replacingOccurrences(of: "desiredCount: 1", with: "desiredCount: 0")
        .replacingOccurrences(of: "port: \(ports.task)\n", with: "port: 9000\n")
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

  @Test(.timeLimit(.minutes(3)))
  func allThreeStoppedAndStartedAgainKeepEveryServiceAndEvent() async throws {
    try await withCluster { cluster in
      let leader = try await cluster.waitForLeader()
      let ports = try ServicePorts(cluster)
      _ = try await cluster.api(leader).call(
        .POST, "/v1/services",
        body: DemoSpecs.yaml(desiredCount: 2, ports: ports),
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

  /// Every event from the first, page by page (`after` the last index seen; at most 100 pages).
  func allEvents(_ api: NodeAPI) async throws -> [EventView] {
    var events: [EventView] = []
    for _ in 0..<100 {
      let path = "/v1/events?after=\(events.last?.index ?? 0)"
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

/// `GET /v1/cluster/state`.
struct StateDigestView: Decodable, Sendable, CustomStringConvertible {
  var node: String
  var appliedIndex: UInt64
  var stateHash: String
  var description: String { "\(node)@\(appliedIndex):\(stateHash.prefix(12))" }
}
