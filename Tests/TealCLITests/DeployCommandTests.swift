import Foundation
import TealAPI
import TealTestSupport
import Testing

/// `teal deploy` and `teal deployment ...` against a fake node answering the contract's bodies.
@Suite("teal deploy and teal deployment against a fake node (the executable)")
struct DeployCommandTests {
  static let t0 = Date(timeIntervalSince1970: 1_796_112_000)

  static func view(
    status: String = "IN_PROGRESS", stage: String = "PRODUCTION_TRAFFIC_SHIFT", green: Double = 20,
    controller: ControllerView = ControllerView(node: "n2", term: 4), reason: String? = nil
  ) -> DeploymentView {
    DeploymentView(
      id: "web-42", service: "web", status: status, stage: stage, blue: "web:1", green: "web:2", strategy: "CANARY",
      createdAt: t0, updatedAt: t0.addingTimeInterval(5),
      stageTimeline: [StageTime(stage: stage, enteredAt: t0.addingTimeInterval(4))],
      weights: DeploymentWeights(
        production: WeightPair(blue: 100 - green, green: green), test: WeightPair(blue: 0, green: 100),
        generation: 3),
      bake: BakeWindow(seconds: 10, startedAt: nil, endsAt: nil), hooks: [],
      tasks: [DeploymentTaskCount(revision: "web:2", node: "n1", running: 1, healthy: 1)], controller: controller,
      pausedBy: nil, reason: reason, recent: [])
  }

  static func body<T: Encodable>(_ value: T) -> String { String(decoding: try! TealJSON.encode(value), as: UTF8.self) }

  static func ok<T: Encodable>(_ value: T, status: Int = 200) -> Behavior {
    .respond(status: status, body: body(value))
  }

  func requireTeal() throws {
    try #require(
      FileManager.default.isExecutableFile(atPath: tealExecutable), "no teal executable at \(tealExecutable)")
  }

  @Test func watchFollowsThroughAnOutageAndAControllerChangeAndExitsZeroOnSuccess() async throws {
    try requireTeal()
    // Requests 0-1: canary; 2-29: the node drops every connection (more than one poll's retries);
    // 30-31: another controller; then done.
    let server = try await TestHTTPServer { _, index in
      switch index {
      case 0...1: return Self.ok(Self.view())
      case 2...29: return .close
      case 30...31: return Self.ok(Self.view(green: 100, controller: ControllerView(node: "n3", term: 5)))
      default:
        return Self.ok(
          Self.view(
            status: "SUCCESSFUL", stage: "CLEAN_UP", green: 100, controller: ControllerView(node: "n3", term: 5)))
      }
    }
    let result = try run(tealExecutable, ["deployment", "watch", "web-42", "--endpoint", server.endpoint])
    #expect(result.status == 0, "\(result.output)")
    let lines = result.output.split(separator: "\n").map(String.init)
    func count(_ text: String) -> Int { lines.filter { $0.contains(text) }.count }
    #expect(count("deployment web-42: web web:1 → web:2 (CANARY)") == 1, "\(result.output)")
    #expect(count("no answer (") == 1, "\(result.output)")
    #expect(count("in contact again") == 1, "\(result.output)")
    #expect(count("controller changed: n2 (term 4) → n3 (term 5)") == 1, "\(result.output)")
    #expect(count("final status SUCCESSFUL") == 1, "\(result.output)")
    // Piped: no escape sequences, and the repeated identical answers printed nothing.
    #expect(!result.output.contains("\u{1B}"))
    #expect(count("weights") == 2, "\(result.output)")
    #expect(server.requests.allSatisfy { $0.uri.hasPrefix("/v1/deployments/web-42") })
    await server.stop()
  }

  @Test func watchExitsNonZeroWithTheReasonOnARollback() async throws {
    try requireTeal()
    let server = try await TestHTTPServer { _, index in
      index == 0
        ? Self.ok(Self.view())
        : Self.ok(Self.view(status: "ROLLBACK_SUCCESSFUL", stage: "CLEAN_UP", green: 0, reason: "hook FAILED"))
    }
    let result = try run(tealExecutable, ["deployment", "watch", "web-42", "--endpoint", server.endpoint])
    #expect(result.status == 2, "\(result.output)")
    #expect(result.output.hasSuffix("deployment web-42 ended ROLLBACK_SUCCESSFUL: hook FAILED\n"), "\(result.output)")
    await server.stop()
  }

  @Test func watchJSONStreamsOneViewPerChange() async throws {
    try requireTeal()
    let server = try await TestHTTPServer { _, index in
      index < 3 ? Self.ok(Self.view()) : Self.ok(Self.view(status: "SUCCESSFUL", stage: "CLEAN_UP", green: 100))
    }
    let result = try run(tealExecutable, ["deployment", "watch", "web-42", "--json", "--endpoint", server.endpoint])
    #expect(result.status == 0, "\(result.output)")
    let views = try result.output.split(separator: "\n").map {
      try TealJSON.decode(DeploymentView.self, from: Data($0.utf8))
    }
    #expect(views.map(\.status) == ["IN_PROGRESS", "SUCCESSFUL"])
    await server.stop()
  }

  @Test func watchWithATimeoutFailsWhenTheDeploymentDoesNotFinish() async throws {
    try requireTeal()
    let server = try await TestHTTPServer { _, _ in Self.ok(Self.view()) }
    let result = try run(
      tealExecutable, ["deployment", "watch", "web-42", "--timeout", "1", "--json", "--endpoint", server.endpoint])
    #expect(result.status == 1)
    #expect(
      result.output.hasSuffix(
        "Error: deployment web-42 did not finish within 1.0 seconds (IN_PROGRESS at PRODUCTION_TRAFFIC_SHIFT); "
          + "it goes on: `teal deployment watch web-42`\n"), "\(result.output)")
    await server.stop()
  }

  @Test func watchOfAnUnknownDeploymentFailsInOneLine() async throws {
    try requireTeal()
    let server = try await TestHTTPServer { _, _ in
      .respond(status: 404, body: Self.body(APIErrorBody(.notFound, "no deployment 'web-9'")))
    }
    let result = try run(tealExecutable, ["deployment", "watch", "web-9", "--endpoint", server.endpoint])
    #expect(result.status == 1)
    #expect(result.output == "Error: \(server.endpoint) answered 404 not_found: no deployment 'web-9'\n")
    await server.stop()
  }

  @Test func deploySetAppliesTheOverridesToTheServingSpecAndPrintsTheID() async throws {
    try requireTeal()
    let serving = try String(
      contentsOfFile: "\(repositoryRoot)/Deploy/examples/web-blue-green.yaml", encoding: .utf8)
    let server = try await TestHTTPServer { request, _ in
      switch (request.method, request.uri) {
      case ("GET", "/v1/services/web/spec"): return .respond(status: 200, body: serving)
      case ("POST", "/v1/services/web/deployments?supersede=true"): return Self.ok(Self.view(), status: 201)
      default: return .respond(status: 404, body: Self.body(APIErrorBody(.notFound, "no \(request.uri)")))
      }
    }
    let result = try run(
      tealExecutable,
      [
        "deploy", "web", "--set", "task.env.LOG_LEVEL=debug", "--set", "desiredCount=4", "--supersede", "--endpoint",
        server.endpoint,
      ])
    #expect(result.status == 0, "\(result.output)")
    #expect(result.output.hasPrefix("web-42\n"), "\(result.output)")
    let post = try #require(server.requests.last)
    #expect(post.headers["content-type"] == "application/yaml")
    #expect(post.body.contains("desiredCount: 4\n"), "\(post.body)")
    #expect(post.body.contains("    LOG_LEVEL: \"debug\"\n"), "\(post.body)")
    #expect(post.body.contains("deployment:\n  strategy: BLUE_GREEN\n  bakeTime: 10m\n"), "\(post.body)")

    let unknown = try run(tealExecutable, ["deploy", "web", "--set", "tsk.env.X=1", "--endpoint", server.endpoint])
    #expect(unknown.status == 1)
    #expect(unknown.output.hasPrefix("Error: --set: tsk: unknown field (allowed here: name, desiredCount"))
    #expect(unknown.output.split(separator: "\n").count == 1)
    let bad = try run(tealExecutable, ["deploy", "web", "--set", "desiredCount=0", "--endpoint", server.endpoint])
    #expect(bad.output == "Error: --set: desiredCount: must be in 1...1000, got 0\n")
    await server.stop()
  }

  @Test func deployWithAFileSendsItAsWritten() async throws {
    try requireTeal()
    let file = "\(repositoryRoot)/Deploy/examples/web-blue-green.yaml"
    let server = try await TestHTTPServer { _, _ in Self.ok(Self.view(), status: 201) }
    let result = try run(tealExecutable, ["deploy", "web", "-f", file, "--endpoint", server.endpoint, "--json"])
    #expect(result.status == 0, "\(result.output)")
    #expect(try TealJSON.decode(DeploymentView.self, from: Data(result.output.utf8)) == Self.view())
    let post = try #require(server.requests.last)
    let written = try String(contentsOfFile: file, encoding: .utf8)
    #expect(post.uri == "/v1/services/web/deployments")
    #expect(post.body == written)
    let wrong = try run(tealExecutable, ["deploy", "api", "-f", file, "--endpoint", server.endpoint])
    #expect(wrong.output == "Error: \(file) is the spec of service web, not api\n")
    await server.stop()
  }

  @Test func deployWatchContinuesIntoTheWatchAndExitsAsItDoes() async throws {
    try requireTeal()
    let file = "\(repositoryRoot)/Deploy/examples/web-blue-green.yaml"
    let server = try await TestHTTPServer { request, _ in
      request.method == "POST"
        ? Self.ok(Self.view(), status: 201)
        : Self.ok(Self.view(status: "STOPPED", stage: "CLEAN_UP", green: 0, reason: "stopped by an operator"))
    }
    let result = try run(tealExecutable, ["deploy", "web", "-f", file, "--watch", "--endpoint", server.endpoint])
    #expect(result.status == 3, "\(result.output)")
    #expect(result.output.hasPrefix("deployment web-42 started: web:1 → web:2 (CANARY)\n"), "\(result.output)")
    #expect(result.output.contains("final status STOPPED"))
    #expect(result.output.hasSuffix("deployment web-42 ended STOPPED: stopped by an operator\n"))
    #expect(server.requests.dropFirst().allSatisfy { $0.method == "GET" && $0.uri == "/v1/deployments/web-42" })
    await server.stop()
  }

  @Test func listAndDescribeShowTheDeployments() async throws {
    try requireTeal()
    let summary = DeploymentSummaryView(
      id: "web-42", service: "web", status: "IN_PROGRESS", stage: "BAKE_TIME", blue: "web:1", green: "web:2",
      createdAt: Self.t0, updatedAt: Self.t0.addingTimeInterval(65))
    let server = try await TestHTTPServer { request, _ in
      request.uri.hasPrefix("/v1/deployments?")
        ? Self.ok(DeploymentList(deployments: [summary])) : Self.ok(Self.view())
    }
    let listed = try run(tealExecutable, ["deployment", "list", "--service", "web", "--endpoint", server.endpoint])
    #expect(server.requests.last?.uri == "/v1/deployments?service=web")
    #expect(
      listed.output == """
        ID      SERVICE  STATUS       STAGE      REVISIONS      CREATED     UPDATED
        web-42  web      IN_PROGRESS  BAKE_TIME  web:1 → web:2  08:00:00.0  08:01:05.0

        """)
    let described = try run(tealExecutable, ["deployment", "describe", "web-42", "--endpoint", server.endpoint])
    #expect(described.status == 0)
    #expect(described.output.hasPrefix("Deployment:  web-42\nService:     web  web:1 → web:2  (CANARY)\n"))
    #expect(described.output.contains("  production  blue  ████████████████░░░░    80%"), "\(described.output)")
    let json = try run(tealExecutable, ["deployment", "describe", "web-42", "--json", "--endpoint", server.endpoint])
    #expect(try TealJSON.decode(DeploymentView.self, from: Data(json.output.utf8)) == Self.view())
    await server.stop()
  }

  @Test func actionsPostToTheirPathAndRetryPrintsTheNewID() async throws {
    try requireTeal()
    let server = try await TestHTTPServer { request, _ in
      request.uri.hasSuffix("/retry")
        ? .respond(
          status: 201, body: Self.body(DeploymentView.retried(Self.view(status: "PENDING", stage: "RECONCILE_SERVICE")))
        )
        : Self.ok(Self.view(status: "ROLLBACK_REQUESTED"))
    }
    let rolled = try run(tealExecutable, ["deployment", "rollback", "web-42", "--endpoint", server.endpoint])
    #expect(rolled.status == 0, "\(rolled.output)")
    #expect(
      rolled.output == "deployment web-42: rollback accepted; status ROLLBACK_REQUESTED at PRODUCTION_TRAFFIC_SHIFT\n")
    #expect(server.requests.last?.method == "POST" && server.requests.last?.uri == "/v1/deployments/web-42/rollback")
    let retried = try run(tealExecutable, ["deployment", "retry", "web-42", "--endpoint", server.endpoint])
    #expect(retried.output.hasPrefix("web-57\n"), "\(retried.output)")
    await server.stop()
  }
}

extension DeploymentView {
  static func retried(_ view: DeploymentView) -> DeploymentView {
    var copy = view
    copy.id = "web-57"
    return copy
  }
}
