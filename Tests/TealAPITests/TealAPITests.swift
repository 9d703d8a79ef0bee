import Foundation
import TealAPI
import Testing

@Suite("TealAPI bodies")
struct TealAPITests {
  private func json<T: Encodable>(_ value: T) throws -> String {
    String(decoding: try TealJSON.encode(value), as: UTF8.self)
  }

  @Test func clusterStatusHasTheShapeOfTheIssueExample() throws {
    let status = ClusterStatus(
      leader: "n1", term: 3, commitIndex: 42, appliedIndex: 41,
      members: [
        ClusterMember(id: "n1", address: "127.0.0.1", state: .up, role: .leader, api: "http://127.0.0.1:7070"),
        ClusterMember(id: "n2", address: "127.0.0.2", state: .down, role: .unknown, api: "http://127.0.0.2:7070"),
      ])
    #expect(
      try json(status)
        == #"{"appliedIndex":41,"commitIndex":42,"leader":"n1","members":["#
        + #"{"address":"127.0.0.1","api":"http://127.0.0.1:7070","id":"n1","role":"leader","state":"up"},"#
        + #"{"address":"127.0.0.2","api":"http://127.0.0.2:7070","id":"n2","role":"unknown","state":"down"}],"#
        + #""term":3}"#)
    #expect(try TealJSON.decode(ClusterStatus.self, from: TealJSON.encode(status)) == status)
  }

  @Test func anAbsentLeaderIsLeftOutAndReadBack() throws {
    let status = ClusterStatus(leader: nil, term: 0, commitIndex: 0, appliedIndex: 0, members: [])
    #expect(try json(status) == #"{"appliedIndex":0,"commitIndex":0,"members":[],"term":0}"#)
    #expect(try TealJSON.decode(ClusterStatus.self, from: Data(json(status).utf8)).leader == nil)
  }

  @Test func datesAreISO8601UTCWithMilliseconds() throws {
    let date = Date(timeIntervalSince1970: 1_796_112_629.123)
    let event = EventView(index: 7, time: date, service: "web", kind: "serviceCreated", message: "created web:1")
    let text = try json(event)
    #expect(text.contains(#""time":"2026-12-01T08:10:29.123Z""#), "\(text)")
    let back = try TealJSON.decode(EventView.self, from: Data(text.utf8))
    #expect(abs(back.time.timeIntervalSince1970 - date.timeIntervalSince1970) < 0.0005)
    // Without fraction, too.
    let plain = #"{"index":1,"kind":"k","message":"m","time":"2026-12-01T08:10:29Z"}"#
    #expect(try TealJSON.decode(EventView.self, from: Data(plain.utf8)).time.timeIntervalSince1970 == 1_796_112_629)
  }

  @Test func aBadDateNamesTheExpectedForm() throws {
    let bad = #"{"index":1,"kind":"k","message":"m","time":"yesterday"}"#
    #expect(throws: DecodingError.self) { try TealJSON.decode(EventView.self, from: Data(bad.utf8)) }
  }

  @Test func serviceDetailRoundTripsAndCarriesTheSummaryFields() throws {
    let task = TaskView(
      id: "web.1.7", service: "web", revision: "web:1", node: "n2", desired: .running, state: .running, healthy: true,
      address: "127.0.0.2", port: 20001, startedAt: Date(timeIntervalSince1970: 1_796_112_629.5))
    let summary = ServiceSummary(
      name: "web", desiredCount: 3, runningCount: 1, healthyCount: 1, currentRevision: "web:1", productionPort: 8080,
      testPort: 8081)
    let detail = ServiceDetail(
      summary: summary,
      revisions: [RevisionView(id: "web:1", number: 1, digest: "abc", createdAt: Date(timeIntervalSince1970: 1))],
      tasks: [task],
      routes: RoutesView(
        generation: 4, production: ["web:1": 100], test: ["web:1": 100],
        targets: [RouteTarget(task: "web.1.7", node: "n2", address: "127.0.0.2", port: 20001, revision: "web:1")]))
    let text = try json(detail)
    #expect(text.contains(#""routes":{"generation":4,"production":{"web:1":100},"targets":[{"#))
    #expect(text.hasPrefix(#"{"currentRevision":"web:1","desiredCount":3,"healthyCount":1,"name":"web","#))
    #expect(text.contains(#""desired":"running""#) && text.contains(#""startedAt":"2026-12-01T08:10:29.500Z""#))
    let back = try TealJSON.decode(ServiceDetail.self, from: Data(text.utf8))
    #expect(back == detail)
    #expect(back.summary == summary)
    // A summary decodes from a detail's JSON (the extra fields are ignored).
    #expect(try TealJSON.decode(ServiceSummary.self, from: Data(text.utf8)) == summary)
  }

  @Test func listsAndSmallBodiesRoundTrip() throws {
    #expect(try json(ScaleRequest(desiredCount: 3)) == #"{"desiredCount":3}"#)
    #expect(try json(HealthResponse(node: "n1")) == #"{"node":"n1","status":"ok"}"#)
    #expect(try json(ReadyResponse(ready: false, node: "n3")) == #"{"node":"n3","ready":false}"#)
    let tasks = TaskList(tasks: [
      TaskView(
        id: "a.1.1", service: "a", revision: "a:1", node: "n1", desired: .draining, state: .pending, healthy: false,
        address: "127.0.0.1", port: 0)
    ])
    #expect(try TealJSON.decode(TaskList.self, from: TealJSON.encode(tasks)) == tasks)
    let services = ServiceList(services: [])
    #expect(try json(services) == #"{"services":[]}"#)
    #expect(try json(EventList(events: [])) == #"{"events":[]}"#)
  }

  @Test func errorBodyShapeAndUnknownCodes() throws {
    let body = APIErrorBody(.invalidSpec, "must be at least 0", field: "spec.deployment.bakeTime")
    #expect(
      try json(body)
        == #"{"error":{"code":"invalid_spec","field":"spec.deployment.bakeTime","message":"must be at least 0"}}"#)
    #expect(
      try json(APIErrorBody(.notFound, "no service 'x'"))
        == #"{"error":{"code":"not_found","message":"no service 'x'"}}"#)
    let unknown = try TealJSON.decode(
      APIErrorBody.self, from: Data(#"{"error":{"code":"teapot","message":"short and stout"}}"#.utf8))
    #expect(unknown.error.code.rawValue == "teapot")
    #expect(unknown.error.code.httpStatus == 500)
    let statuses = [
      APIErrorCode.badRequest, .unauthorized, .forbidden, .notFound, .conflict, .tooLarge, .invalidSpec,
      .idempotencyMismatch, .noLeader, .outcomeUnknown, .internal,
    ].map(\.httpStatus)
    #expect(statuses == [400, 401, 403, 404, 409, 413, 422, 422, 503, 503, 500])
  }

  @Test func pathsArePercentEncoded() {
    #expect(APIPath.service("web") == "/v1/services/web")
    #expect(APIPath.scale("a b/c") == "/v1/services/a%20b%2Fc/scale")
    #expect(APIPath.tasks() == "/v1/tasks")
    #expect(APIPath.tasks(service: "web", node: "n2") == "/v1/tasks?service=web&node=n2")
    #expect(APIPath.events(service: nil, after: 12, limit: 50) == "/v1/events?after=12&limit=50")
    #expect(APIPath.stale(APIPath.cluster) == "/v1/cluster?stale=true")
    #expect(APIPath.stale(APIPath.tasks(node: "n1")) == "/v1/tasks?node=n1&stale=true")
  }

  @Test func bearerTokens() {
    #expect(APIHeader.bearer("abc") == "Bearer abc")
    #expect(APIHeader.bearerToken(from: "Bearer abc") == "abc")
    #expect(APIHeader.bearerToken(from: "bearer  abc ") == "abc")
    #expect(APIHeader.bearerToken(from: "Basic abc") == nil)
    #expect(APIHeader.bearerToken(from: "Bearer ") == nil)
  }
}
