import Foundation
import TealAPI
import TealAPIConformance
import Testing

/// The repository's document (Docs/openapi.yaml), the copy the node serves, and the bodies TealAPI
/// encodes: all three must agree.
@Suite("The OpenAPI document")
struct OpenAPIDocumentTests {
  static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent()
  static let documentPath = repository.appendingPathComponent("Docs/openapi.yaml").path
  static let embeddedPath = repository.appendingPathComponent("Sources/TealAPI/OpenAPIDocument.swift").path

  static func contract() throws -> OpenAPIContract { try OpenAPIContract.load(path: documentPath) }

  @Test func theServedCopyIsTheRepositoryDocument() throws {
    let document = try String(contentsOfFile: Self.documentPath, encoding: .utf8)
    if document != OpenAPIDocument.yaml, ProcessInfo.processInfo.environment["TEAL_RECORD_OPENAPI"] == "1" {
      try Self.swiftSource(embedding: document).write(toFile: Self.embeddedPath, atomically: true, encoding: .utf8)
      Issue.record("rewrote Sources/TealAPI/OpenAPIDocument.swift from Docs/openapi.yaml: build and run again")
      return
    }
    #expect(
      document == OpenAPIDocument.yaml,
      "Sources/TealAPI/OpenAPIDocument.swift is not Docs/openapi.yaml: run TEAL_RECORD_OPENAPI=1 swift test --filter OpenAPIDocumentTests"
    )
  }

  /// The generated Swift file: the document as a raw string literal, indented as swift-format wants.
  static func swiftSource(embedding document: String) -> String {
    let indented = document.split(separator: "\n", omittingEmptySubsequences: false).map {
      $0.isEmpty ? "" : "    " + $0
    }.joined(separator: "\n")
    return """
      // Docs/openapi.yaml as the node serves it at `GET /v1/openapi.yaml`. Generated, do not edit: change
      // Docs/openapi.yaml and run `TEAL_RECORD_OPENAPI=1 swift test --filter OpenAPIDocumentTests` (the test
      // fails while the two differ).

      /// The OpenAPI 3.1 document of the node's API.
      public enum OpenAPIDocument {
        public static let yaml = #\"\"\"
      \(indented)
          \"\"\"#
      }

      """
  }

  @Test func theDocumentLoadsWithEveryOperationAndOnlyKeywordsTheCheckerKnows() throws {
    let contract = try Self.contract()
    let operations = Set(contract.operations.map(\.description))
    for expected in [
      "GET /health", "GET /v1/openapi.yaml", "POST /v1/services", "DELETE /v1/services/{name}",
      "POST /v1/deployments/{id}/{action}",
    ] {
      #expect(operations.contains(expected), "\(expected) missing from \(operations.sorted())")
    }
    #expect(throws: ContractError.self) {
      try OpenAPIContract(
        yaml: """
          openapi: 3.1.0
          paths: {}
          components:
            schemas:
              Thing: { type: object, oneOf: [] }
          """)
    }
  }

  @Test func literalSegmentsWinOverTemplatesAndQueriesAreIgnored() throws {
    let contract = try Self.contract()
    #expect(contract.operation(method: "GET", path: "/v1/cluster/state")?.path == "/v1/cluster/state")
    #expect(contract.operation(method: "GET", path: "/v1/services/web")?.path == "/v1/services/{name}")
    #expect(contract.operation(method: "GET", path: "/v1/services/web/spec")?.path == "/v1/services/{name}/spec")
    #expect(contract.operation(method: "PATCH", path: "/v1/services/web") == nil)
    // A rest-of-path parameter takes the slashes too, but no empty segment.
    #expect(contract.operation(method: "PUT", path: "/v1/variables/a/b/c")?.path == "/v1/variables/{path}")
    #expect(contract.operation(method: "GET", path: "/v1/variables")?.path == "/v1/variables")
    #expect(contract.operation(method: "GET", path: "/v1/variables/a//b") == nil)
    #expect(
      contract.operation(method: "GET", path: "/v1/variables/a")?.routeDescription == "GET /v1/variables/**")
    #expect(contract.operation(method: "GET", path: "/v1/services/") == nil)
    let ok = try TealJSON.encode(HealthResponse(node: "n1"))
    #expect(
      contract.check(
        method: "GET", path: "/health?x=1", status: 200, contentType: "application/json; charset=utf-8",
        body: Array(ok)
      ).isEmpty)
  }

  @Test func theCheckerNamesEachWayAnAnswerDeparts() throws {
    let contract = try Self.contract()
    func problems(_ path: String, _ status: Int, _ body: String, type: String = "application/json") -> [String] {
      contract.check(method: "GET", path: path, status: status, contentType: type, body: Array(body.utf8))
    }
    #expect(problems("/v1/nothing", 200, "{}").first?.contains("no operation") == true)
    #expect(problems("/health", 200, #"{"node":"n1"}"#).first?.contains("'status' is missing") == true)
    #expect(problems("/health", 200, #"{"node":"n1","status":"ok","extra":1}"#).first?.contains("'extra'") == true)
    #expect(problems("/health", 200, #"{"node":"n1","status":"fine"}"#).first?.contains("not one of") == true)
    #expect(problems("/health", 200, #"{"node":1,"status":"ok"}"#).first?.contains("expected string") == true)
    #expect(problems("/health", 200, "{}", type: "text/plain").first?.contains("content type") == true)
    #expect(problems("/health", 200, "not json").first?.contains("not JSON") == true)
    // An error answer is checked against the default response: the error body.
    #expect(problems("/v1/services/web", 404, #"{"error":{"code":"not_found","message":"no"}}"#).isEmpty)
    #expect(problems("/v1/services/web", 404, #"{"message":"no"}"#).isEmpty == false)
    let event = #"{"events":[{"index":1,"kind":"k","message":"m","time":"yesterday"}]}"#
    #expect(problems("/v1/events", 200, event).first?.contains("date-time") == true)
    let negative = #"{"events":[{"index":-1,"kind":"k","message":"m","time":"2026-12-01T08:10:29.123Z"}]}"#
    #expect(problems("/v1/events", 200, negative).first?.contains("below the minimum") == true)
  }

  /// Every body TealAPI defines, with its optional fields set and left out, as TealJSON encodes it,
  /// fits the document's schema of the same name.
  @Test func everyBodyTealAPIEncodesFitsItsSchema() throws {
    let contract = try Self.contract()
    func check<T: Encodable>(_ value: T, _ schema: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
      let json = try JSONValue.parse(json: Array(TealJSON.encode(value)))
      let problems = contract.problems(json, schema: schema)
      #expect(problems.isEmpty, "\(schema): \(problems)", sourceLocation: sourceLocation)
    }
    let date = Date(timeIntervalSince1970: 1_796_112_629.123)
    let member = ClusterMember(id: "n1", address: "127.0.0.1", state: .up, role: .leader, api: "http://127.0.0.1:7070")
    try check(HealthResponse(node: "n1"), "HealthResponse")
    try check(ReadyResponse(ready: true, node: "n1", leader: "n2"), "ReadyResponse")
    try check(ReadyResponse(ready: false, node: "n1"), "ReadyResponse")
    try check(
      ClusterStatus(leader: "n1", term: 3, commitIndex: 9, appliedIndex: 9, members: [member]), "ClusterStatus")
    try check(ClusterStatus(leader: nil, term: 0, commitIndex: 0, appliedIndex: 0, members: []), "ClusterStatus")
    try check(
      ClusterStateDigest(node: "n1", appliedIndex: 4, stateHash: String(repeating: "ab", count: 32)),
      "ClusterStateDigest")
    let task = TaskView(
      id: "web.1.7", service: "web", revision: "web:1", node: "n2", desired: .running, state: .running, healthy: true,
      address: "127.0.0.2", port: 20001, startedAt: date)
    let summary = ServiceSummary(
      name: "web", desiredCount: 2, runningCount: 2, healthyCount: 1, currentRevision: "web:1", productionPort: 8080,
      testPort: 8081)
    let detail = ServiceDetail(
      summary: summary, revisions: [RevisionView(id: "web:1", number: 1, digest: "sha256:ab", createdAt: date)],
      tasks: [
        task,
        TaskView(
          id: "web.1.8", service: "web", revision: "web:1", node: "n3", desired: .draining, state: .pending,
          healthy: false, address: "127.0.0.3", port: 0),
      ],
      routes: RoutesView(
        generation: 4, production: ["web:1": 90, "web:2": 10.5], test: ["web:2": 100],
        targets: [RouteTarget(task: "web.1.7", node: "n2", address: "127.0.0.2", port: 20001, revision: "web:1")]))
    try check(ServiceList(services: [summary]), "ServiceList")
    try check(detail, "ServiceDetail")
    try check(ServiceDeletion(name: "web", status: .deleting, service: detail), "ServiceDeletion")
    try check(ServiceDeletion(name: "web", status: .deleted), "ServiceDeletion")
    try check(ScaleRequest(desiredCount: 3), "ScaleRequest")
    try check(TaskList(tasks: [task]), "TaskList")
    try check(
      EventList(events: [
        EventView(index: 5, time: date, service: "web", kind: "serviceCreated", message: "created web:1"),
        EventView(index: 6, time: date, kind: "nodeDown", message: "n3 down"),
      ]), "EventList")
    try check(
      DeploymentList(deployments: [
        DeploymentSummaryView(
          id: "web-2", service: "web", status: "IN_PROGRESS", stage: "BAKE_TIME", blue: "web:1", green: "web:2",
          createdAt: date, updatedAt: date)
      ]), "DeploymentList")
    let pair = WeightPair(blue: 90, green: 10)
    try check(
      DeploymentView(
        id: "web-2", service: "web", status: "IN_PROGRESS", stage: "BAKE_TIME", blue: "web:1", green: "web:2",
        strategy: "CANARY", createdAt: date, updatedAt: date,
        stageTimeline: [StageTime(stage: "BAKE_TIME", enteredAt: date)],
        weights: DeploymentWeights(production: pair, test: pair, generation: 7),
        bake: BakeWindow(seconds: 30, startedAt: date, endsAt: date),
        hooks: [
          HookExecutionView(stage: "PRE_SCALE_UP", executionId: "web-2/PRE_SCALE_UP", attempts: 1, result: "SUCCEEDED")
        ],
        tasks: [DeploymentTaskCount(revision: "web:2", node: "n1", running: 1, healthy: 1)],
        controller: ControllerView(node: "n1", term: 3), pausedBy: "alice", reason: "alarm",
        recent: [
          DeploymentNote(at: date, message: "entered BAKE_TIME")
        ]), "DeploymentView")
    try check(
      DeploymentView(
        id: "web-2", service: "web", status: "SUCCESSFUL", stage: nil, blue: "web:1", green: "web:2",
        strategy: "BLUE_GREEN", createdAt: date, updatedAt: date, stageTimeline: [],
        weights: DeploymentWeights(production: pair, test: pair, generation: 0), bake: nil, hooks: [], tasks: [],
        controller: nil, pausedBy: nil, reason: nil, recent: []), "DeploymentView")
    try check(VariableWrite(value: "v"), "VariableWrite")
    try check(VariableView(path: "a/b", value: "v", version: 12), "VariableView")
    try check(VariableView(path: "a/b", value: nil, version: 12), "VariableView")
    try check(VariableList(variables: [VariableSummary(path: "a/b", version: 12)], next: "a/b"), "VariableList")
    try check(VariableList(variables: []), "VariableList")
    try check(APIErrorBody(.versionMismatch, "at version 12", field: "cas", version: 12), "ErrorBody")
    try check(APIErrorBody(.conflict, "busy", field: "spec"), "ErrorBody")
    try check(APIErrorBody(.noLeader, "no leader"), "ErrorBody")
  }
}
