import Foundation
import TealAPI
import TealTestSupport
import Testing

/// The API commands against a fake node (a local HTTP server answering the contract's bodies).
@Suite("teal API commands against a fake node (the executable)")
struct APICommandTests {
  static let status = ClusterStatus(
    leader: "n2", term: 3, commitIndex: 17, appliedIndex: 16,
    members: [
      ClusterMember(id: "n1", address: "127.0.0.1", state: .up, role: .follower, api: "http://127.0.0.1:7070"),
      ClusterMember(id: "n2", address: "127.0.0.2", state: .up, role: .leader, api: "http://127.0.0.2:7070"),
      ClusterMember(id: "n3", address: "127.0.0.3", state: .down, role: .unknown, api: "http://127.0.0.3:7070"),
    ])

  static let task = TaskView(
    id: "web.1.7", service: "web", revision: "web:1", node: "n2", desired: .running, state: .running, healthy: true,
    address: "127.0.0.2", port: 20001, startedAt: Date(timeIntervalSince1970: 1_796_112_629))

  static let detail = ServiceDetail(
    summary: ServiceSummary(
      name: "web", desiredCount: 3, runningCount: 1, healthyCount: 1, currentRevision: "web:1", productionPort: 8080,
      testPort: 8081),
    revisions: [RevisionView(id: "web:1", number: 1, digest: "abc123", createdAt: Date(timeIntervalSince1970: 0))],
    tasks: [task],
    routes: RoutesView(
      generation: 4, production: ["web:1": 100], test: ["web:1": 100],
      targets: [RouteTarget(task: "web.1.7", node: "n2", address: "127.0.0.2", port: 20001, revision: "web:1")]))

  static func body<T: Encodable>(_ value: T) -> String { String(decoding: try! TealJSON.encode(value), as: UTF8.self) }

  /// Answers like a node: the contract's bodies by path; `POST` gets 201.
  static func fakeNode(_ request: ReceivedRequest, _ index: Int) -> Behavior {
    guard request.headers["authorization"] == "Bearer tok" else {
      return .respond(status: 401, body: body(APIErrorBody(.unauthorized, "missing or wrong bearer token")))
    }
    let path = request.uri.split(separator: "?").first.map(String.init) ?? request.uri
    switch (request.method, path) {
    case ("GET", "/v1/cluster"): return .respond(status: 200, body: body(status))
    case ("GET", "/v1/services"): return .respond(status: 200, body: body(ServiceList(services: [detail.summary])))
    case ("POST", "/v1/services"):
      return request.body.contains("desiredCount: 0")
        ? .respond(
          status: 422, body: body(APIErrorBody(.invalidSpec, "must be in 1...1000, got 0", field: "desiredCount")))
        : .respond(status: 201, body: body(detail))
    case ("GET", "/v1/services/web"), ("PUT", "/v1/services/web/scale"):
      return .respond(status: 200, body: body(detail))
    case ("DELETE", "/v1/services/web"):
      return .respond(status: 200, body: body(ServiceDeletion(name: "web", status: .deleted)))
    case ("GET", "/v1/tasks"): return .respond(status: 200, body: body(TaskList(tasks: [task])))
    case ("GET", "/v1/events"):
      return .respond(
        status: 200,
        body: body(
          EventList(events: [
            EventView(
              index: 5, time: Date(timeIntervalSince1970: 1_796_112_629), service: "web", kind: "serviceCreated",
              message: "created web:1")
          ])))
    default:
      return .respond(status: 404, body: body(APIErrorBody(.notFound, "no service 'nope'")))
    }
  }

  /// A cluster directory whose cluster.yaml points at `server` and whose token is "tok".
  private func directory(for server: TestHTTPServer) throws -> String {
    let dir = temporaryDirectory("fake")
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    try "tok\n".write(toFile: "\(dir)/token", atomically: true, encoding: .utf8)
    try """
    nodes:
      - id: n1
        address: 127.0.0.1
        api: "\(server.endpoint)"
        peerPort: 7000
    """.write(toFile: "\(dir)/cluster.yaml", atomically: true, encoding: .utf8)
    return dir
  }

  @Test func clusterStatusPrintsTheContractsShapeAndATable() async throws {
    try #require(
      FileManager.default.isExecutableFile(atPath: tealExecutable), "no teal executable at \(tealExecutable)")
    let server = try await TestHTTPServer(behavior: Self.fakeNode)
    let dir = try directory(for: server)
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let json = try run(tealExecutable, ["cluster", "status", "--dir", dir, "--json"])
    #expect(json.status == 0, "\(json.output)")
    #expect(json.output == Self.body(Self.status) + "\n")
    #expect(
      json.output.hasPrefix(#"{"appliedIndex":16,"commitIndex":17,"leader":"n2","members":[{"address":"127.0.0.1","#))
    let text = try run(tealExecutable, ["cluster", "status", "--dir", dir])
    #expect(
      text.output == """
        leader n2  term 3  commit 17  applied 16
        ID  ADDRESS    STATE  ROLE      API
        n1  127.0.0.1  up     follower  http://127.0.0.1:7070
        n2  127.0.0.2  up     leader    http://127.0.0.2:7070
        n3  127.0.0.3  down   unknown   http://127.0.0.3:7070

        """)
    #expect(server.requests.allSatisfy { $0.uri == "/v1/cluster" && $0.headers["authorization"] == "Bearer tok" })
    await server.stop()
  }

  @Test func clusterStatusWithoutALeaderShowsANodesOwnView() async throws {
    try #require(
      FileManager.default.isExecutableFile(atPath: tealExecutable), "no teal executable at \(tealExecutable)")
    let server = try await TestHTTPServer { request, _ in
      request.uri.hasSuffix("stale=true")
        ? .respond(
          status: 200,
          body: Self.body(ClusterStatus(leader: nil, term: 4, commitIndex: 17, appliedIndex: 17, members: [])))
        : .respond(
          status: 503, headers: [("Retry-After", "1")], body: Self.body(APIErrorBody(.noLeader, "election in progress"))
        )
    }
    let result = try run(tealExecutable, ["cluster", "status", "--endpoint", server.endpoint])
    #expect(result.status == 0, "\(result.output)")
    #expect(
      result.output.hasPrefix(
        "no leader answers (election in progress); this is one node's own view\nleader none  term 4"))
    await server.stop()
  }

  @Test func serviceCommandsSendTheContractsRequests() async throws {
    try #require(
      FileManager.default.isExecutableFile(atPath: tealExecutable), "no teal executable at \(tealExecutable)")
    let server = try await TestHTTPServer(behavior: Self.fakeNode)
    let dir = try directory(for: server)
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let spec = "\(repositoryRoot)/Deploy/examples/web-blue-green.yaml"
    let created = try run(tealExecutable, ["service", "create", "-f", spec, "--dir", dir, "--idempotency-key", "k1"])
    #expect(created.status == 0, "\(created.output)")
    #expect(created.output == "created service web, revision web:1, 3 tasks desired\n")
    let post = try #require(server.requests.last)
    #expect(post.method == "POST" && post.uri == "/v1/services")
    #expect(post.headers["content-type"] == "application/yaml" && post.headers["idempotency-key"] == "k1")
    #expect(post.body == (try String(contentsOfFile: spec, encoding: .utf8)))

    let scaled = try run(tealExecutable, ["service", "scale", "web", "5", "--dir", dir])
    #expect(scaled.status == 0, "\(scaled.output)")
    let put = try #require(server.requests.last)
    #expect(put.method == "PUT" && put.uri == "/v1/services/web/scale" && put.body == #"{"desiredCount":5}"#)
    #expect(UUID(uuidString: put.headers["idempotency-key"] ?? "") != nil)

    let listed = try run(tealExecutable, ["service", "list", "--dir", dir])
    #expect(
      listed.output == """
        NAME  DESIRED  RUNNING  HEALTHY  REVISION  PRODUCTION  TEST
        web   3        1        1        web:1     8080        8081

        """)
    let described = try run(tealExecutable, ["service", "describe", "web", "--dir", dir])
    #expect(
      described.output.contains("routes (generation 4): production web:1 100%; test web:1 100%"), "\(described.output)")
    #expect(described.output.contains("web.1.7 on n2 at 127.0.0.2:20001 (web:1)"))
    let describedJSON = try run(tealExecutable, ["service", "describe", "web", "--dir", dir, "--json"])
    #expect(describedJSON.output == Self.body(Self.detail) + "\n")

    let deleted = try run(tealExecutable, ["service", "delete", "web", "--dir", dir])
    #expect(deleted.output == "deleted service web\n" && server.requests.last?.method == "DELETE")
    await server.stop()
  }

  @Test func tasksAndEventsPassTheirFilters() async throws {
    try #require(
      FileManager.default.isExecutableFile(atPath: tealExecutable), "no teal executable at \(tealExecutable)")
    let server = try await TestHTTPServer(behavior: Self.fakeNode)
    let dir = try directory(for: server)
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let tasks = try run(tealExecutable, ["tasks", "--service", "web", "--node", "n2", "--dir", dir])
    #expect(server.requests.last?.uri == "/v1/tasks?service=web&node=n2")
    #expect(
      tasks.output == """
        ID       SERVICE  REVISION  NODE  DESIRED  STATE    HEALTHY  ADDRESS          STARTED
        web.1.7  web      web:1     n2    running  running  yes      127.0.0.2:20001  2026-12-01 08:10:29

        """)
    let events = try run(tealExecutable, ["events", "web", "--after", "3", "--limit", "10", "--dir", dir])
    #expect(server.requests.last?.uri == "/v1/events?service=web&after=3&limit=10")
    #expect(
      events.output.contains("5      2026-12-01 08:10:29  web      serviceCreated  created web:1"), "\(events.output)")
    await server.stop()
  }

  @Test func errorsAreOneLineNamingTheCodeAndField() async throws {
    try #require(
      FileManager.default.isExecutableFile(atPath: tealExecutable), "no teal executable at \(tealExecutable)")
    let server = try await TestHTTPServer(behavior: Self.fakeNode)
    let dir = try directory(for: server)
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let missing = try run(tealExecutable, ["service", "describe", "nope", "--dir", dir])
    #expect(missing.status == 1)
    #expect(missing.output == "Error: \(server.endpoint) answered 404 not_found: no service 'nope'\n")
    // No token: the hint says where the token comes from.
    let noToken = try run(
      tealExecutable, ["service", "list", "--endpoint", server.endpoint, "--dir", temporaryDirectory("none")])
    #expect(noToken.status == 1)
    #expect(noToken.output.contains("answered 401 unauthorized: missing or wrong bearer token (set TEAL_TOKEN"))
    #expect(noToken.output.split(separator: "\n").count == 1)
    await server.stop()
  }
}
