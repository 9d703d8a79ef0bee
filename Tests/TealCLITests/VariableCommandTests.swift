import Foundation
import TealAPI
import TealTestSupport
import Testing

/// `teal var` against a fake node (a local HTTP server answering the API's variable bodies).
@Suite("teal var against a fake node (the executable)")
struct VariableCommandTests {
  static func body<T: Encodable>(_ value: T) -> String { String(decoding: try! TealJSON.encode(value), as: UTF8.self) }

  /// One variable `hooks/web/token` at version 7; `cas` other than 7 is a mismatch.
  static func fakeNode(_ request: ReceivedRequest, _ index: Int) -> Behavior {
    let parts = request.uri.split(separator: "?", maxSplits: 1).map(String.init)
    let path = parts[0]
    let query = parts.count > 1 ? parts[1] : ""
    let mismatch = Behavior.respond(
      status: 409,
      body: body(
        APIErrorBody(
          .versionMismatch, "variable hooks/web/token is at version 7, not version 3", field: "cas", version: 7)))
    switch (request.method, path) {
    case ("GET", "/v1/variables/hooks/web/token"):
      return .respond(status: 200, body: body(VariableView(path: "hooks/web/token", value: "s3cret", version: 7)))
    case ("PUT", "/v1/variables/hooks/web/token"):
      if query == "cas=3" { return mismatch }
      let value = (try? TealJSON.decode(VariableWrite.self, from: Data(request.body.utf8)))?.value ?? "?"
      return .respond(status: 200, body: body(VariableView(path: "hooks/web/token", value: value, version: 12)))
    case ("DELETE", "/v1/variables/hooks/web/token"):
      if query == "cas=3" { return mismatch }
      return .respond(status: 200, body: body(VariableView(path: "hooks/web/token", value: nil, version: 7)))
    case ("GET", "/v1/variables"):
      if query.hasPrefix("prefix=hooks%2F") && !query.contains("after=") {
        return .respond(
          status: 200,
          body: body(
            VariableList(
              variables: [VariableSummary(path: "hooks/api/token", version: 3)], next: "hooks/api/token")))
      }
      if query.contains("after=hooks%2Fapi%2Ftoken") {
        return .respond(
          status: 200, body: body(VariableList(variables: [VariableSummary(path: "hooks/web/token", version: 7)])))
      }
      return .respond(status: 200, body: body(VariableList(variables: [])))
    default:
      return .respond(status: 404, body: body(APIErrorBody(.notFound, "no variable at \(path.dropFirst(14))")))
    }
  }

  @Test func getPutDeleteAndListSendTheAPIsRequestsAndPrintTheAnswers() async throws {
    try #require(
      FileManager.default.isExecutableFile(atPath: tealExecutable), "no teal executable at \(tealExecutable)")
    let server = try await TestHTTPServer(behavior: Self.fakeNode)
    let endpoint = ["--endpoint", server.endpoint]

    let got = try run(tealExecutable, ["var", "get", "hooks/web/token"] + endpoint)
    #expect(got.status == 0 && got.output == "s3cret\n", "\(got.output)")
    let gotJSON = try run(tealExecutable, ["var", "get", "hooks/web/token", "--json"] + endpoint)
    #expect(gotJSON.output == #"{"path":"hooks/web/token","value":"s3cret","version":7}"# + "\n")

    let put = try run(
      tealExecutable, ["var", "put", "hooks/web/token", "new value", "--idempotency-key", "k1"] + endpoint)
    #expect(put.status == 0 && put.output == "hooks/web/token is at version 12\n", "\(put.output)")
    let sent = try #require(server.requests.last)
    #expect(sent.method == "PUT" && sent.uri == "/v1/variables/hooks/web/token")
    #expect(sent.body == #"{"value":"new value"}"# && sent.headers["idempotency-key"] == "k1")

    let file = temporaryDirectory("value")
    try "line 1\nline 2\n".write(toFile: file, atomically: true, encoding: .utf8)
    defer { try? FileManager.default.removeItem(atPath: file) }
    let fromFile = try run(tealExecutable, ["var", "put", "hooks/web/token", "--file", file, "--cas", "7"] + endpoint)
    #expect(fromFile.status == 0, "\(fromFile.output)")
    #expect(server.requests.last?.uri == "/v1/variables/hooks/web/token?cas=7")
    #expect(server.requests.last?.body == #"{"value":"line 1\nline 2\n"}"#)

    let deleted = try run(tealExecutable, ["var", "delete", "hooks/web/token"] + endpoint)
    #expect(deleted.status == 0 && deleted.output == "deleted hooks/web/token (it was at version 7)\n")
    #expect(server.requests.last?.method == "DELETE")

    // The list follows `next` until the last page.
    let listed = try run(tealExecutable, ["var", "list", "--prefix", "hooks/"] + endpoint)
    #expect(
      listed.output == """
        PATH             VERSION
        hooks/api/token  3
        hooks/web/token  7

        """, "\(listed.output)")
    #expect(
      server.requests.suffix(2).map(\.uri) == [
        "/v1/variables?prefix=hooks%2F", "/v1/variables?prefix=hooks%2F&after=hooks%2Fapi%2Ftoken",
      ])
    let none = try run(tealExecutable, ["var", "list"] + endpoint)
    #expect(none.output == "no variables\n")
    await server.stop()
  }

  @Test func aCompareAndSetMismatchAndAMissingVariableExitNonZeroWithTheServersMessage() async throws {
    try #require(
      FileManager.default.isExecutableFile(atPath: tealExecutable), "no teal executable at \(tealExecutable)")
    let server = try await TestHTTPServer(behavior: Self.fakeNode)
    let endpoint = ["--endpoint", server.endpoint]
    let put = try run(tealExecutable, ["var", "put", "hooks/web/token", "v", "--cas", "3"] + endpoint)
    #expect(put.status == 1)
    #expect(
      put.output
        == "Error: \(server.endpoint) answered 409 version_mismatch: variable hooks/web/token is at version 7, not version 3\n"
    )
    let delete = try run(tealExecutable, ["var", "delete", "hooks/web/token", "--cas", "3"] + endpoint)
    #expect(delete.status == 1 && delete.output.contains("is at version 7"))
    let missing = try run(tealExecutable, ["var", "get", "nope"] + endpoint)
    #expect(missing.status == 1)
    #expect(missing.output == "Error: \(server.endpoint) answered 404 not_found: no variable at nope\n")
    let neither = try run(tealExecutable, ["var", "put", "a"] + endpoint)
    #expect(neither.status != 0 && neither.output.contains("give the value or --file"))
    await server.stop()
  }
}
