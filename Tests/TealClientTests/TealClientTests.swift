import Foundation
import NIOCore
import TealAPI
import TealClient
import TealTestSupport
import Testing

private let clusterJSON =
  #"{"appliedIndex":5,"commitIndex":5,"leader":"n1","members":[{"address":"127.0.0.1","api":"http://127.0.0.1:7070","id":"n1","role":"leader","state":"up"}],"term":2}"#

private let detailJSON =
  #"{"currentRevision":"web:1","desiredCount":1,"healthyCount":0,"name":"web","productionPort":8080,"revisions":[],"routes":{"generation":1,"production":{},"targets":[],"test":{}},"runningCount":0,"tasks":[],"testPort":8081}"#

private func makeClient(
  _ endpoints: [String], configure: (inout TealClientConfiguration) -> Void = { _ in }
) throws -> TealClient {
  var configuration = TealClientConfiguration(endpoints: try endpoints.map { try Endpoint(url: $0) }, token: "secret")
  configuration.initialBackoff = .milliseconds(10)
  configuration.maxBackoff = .milliseconds(100)
  configure(&configuration)
  return TealClient(configuration: configuration)
}

@Suite("TealClient (real sockets)")
struct TealClientTests {
  @Test func movesToTheNextEndpointWhenOneRefusesConnections() async throws {
    let refusing = try RefusingPort()
    let server = try await TestHTTPServer { _, _ in .respond(status: 200, body: clusterJSON) }
    defer { Task { await server.stop() } }
    let client = try makeClient([refusing.endpoint, server.endpoint])
    let status = try await client.clusterStatus()
    #expect(status.leader == "n1" && status.members.count == 1)
    #expect(server.requests.count == 1)
    #expect(server.requests[0].headers["authorization"] == "Bearer secret")
    #expect(server.requests[0].uri == "/v1/cluster")
    // The next call starts with the endpoint that answered, on the same kept-alive connection.
    _ = try await client.clusterStatus(stale: true)
    #expect(server.requests.count == 2 && server.requests[1].uri == "/v1/cluster?stale=true")
    #expect(server.connections == 1)
    await client.shutdown()
  }

  @Test func a503MovesToAnotherNodeWithTheSameKey() async throws {
    let unavailable = try await TestHTTPServer { _, _ in
      .respond(
        status: 503, headers: [("Retry-After", "1")], body: #"{"error":{"code":"no_leader","message":"election"}}"#)
    }
    let healthy = try await TestHTTPServer { _, _ in .respond(status: 201, body: detailJSON) }
    defer {
      Task {
        await unavailable.stop()
        await healthy.stop()
      }
    }
    let client = try makeClient([unavailable.endpoint, healthy.endpoint])
    let detail = try await client.createService(spec: "name: web\n")
    #expect(detail.name == "web")
    #expect(unavailable.requests.count == 1 && healthy.requests.count == 1)
    let key = try #require(unavailable.requests[0].headers["idempotency-key"])
    #expect(UUID(uuidString: key) != nil, "generated key \(key) is not a UUID")
    #expect(healthy.requests[0].headers["idempotency-key"] == key)
    #expect(healthy.requests[0].body == "name: web\n")
    #expect(healthy.requests[0].headers["content-type"] == "application/yaml")
    await client.shutdown()
  }

  @Test func aWriteWhoseOutcomeTheNodeCannotTellEndsAsOutcomeUnknown() async throws {
    let server = try await TestHTTPServer { _, _ in
      .respond(
        status: 503, headers: [("Retry-After", "0")],
        body: #"{"error":{"code":"outcome_unknown","message":"the leader stepped down"}}"#)
    }
    defer { Task { await server.stop() } }
    let client = try makeClient([server.endpoint]) { $0.maxAttempts = 2 }
    await #expect(
      throws: TealClientError.outcomeUnknown(
        endpoint: server.endpoint, reason: "the leader stepped down", idempotencyKey: "k7")
    ) { _ = try await client.scale("web", to: 1, idempotencyKey: "k7") }
    #expect(server.requests.map(\.headers["idempotency-key"]) == ["k7", "k7"])
    await client.shutdown()
  }

  @Test func aRetryAfterTheConnectionBrokeKeepsTheKey() async throws {
    let server = try await TestHTTPServer { _, index in
      index == 0 ? .close : .respond(status: 200, body: detailJSON)
    }
    defer { Task { await server.stop() } }
    let client = try makeClient([server.endpoint])
    _ = try await client.scale("web", to: 3, idempotencyKey: "key-1")
    #expect(server.requests.map(\.headers["idempotency-key"]) == ["key-1", "key-1"])
    #expect(server.requests.map(\.body) == [#"{"desiredCount":3}"#, #"{"desiredCount":3}"#])
    #expect(server.requests.map(\.method) == ["PUT", "PUT"])
    await client.shutdown()
  }

  @Test func aKeptAliveConnectionClosedByTheServerIsReplacedAtOnce() async throws {
    let server = try await TestHTTPServer { _, index in
      index == 1 ? .close : .respond(status: 200, body: clusterJSON)
    }
    defer { Task { await server.stop() } }
    let client = try makeClient([server.endpoint]) { $0.maxAttempts = 1 }
    _ = try await client.clusterStatus()
    // The second call meets the closed kept-alive connection and retries on a fresh one, within its one attempt.
    _ = try await client.clusterStatus()
    #expect(server.requests.count == 3)
    #expect(server.connections == 2)
    await client.shutdown()
  }

  @Test func aNodeThatNeverAnswersTimesOutAsOutcomeUnknown() async throws {
    let server = try await TestHTTPServer { _, _ in .hang }
    defer { Task { await server.stop() } }
    let client = try makeClient([server.endpoint]) {
      $0.requestTimeout = .milliseconds(300)
      $0.maxAttempts = 2
    }
    let start = ContinuousClock.now
    do {
      _ = try await client.deleteService("web", idempotencyKey: "k")
      Issue.record("expected a timeout")
    } catch let error as TealClientError {
      guard case .outcomeUnknown(_, let reason, let key) = error else {
        Issue.record("expected outcomeUnknown, got \(error)")
        return
      }
      #expect(reason.contains("in time"), "\(reason)")
      #expect(key == "k")
      #expect(error.description.contains("may or may not have taken effect"))
    }
    // Without the request timeout the call would hang for ever; the margin absorbs a loaded machine.
    #expect(ContinuousClock.now - start < .seconds(20))
    #expect(server.requests.count == 2)
    await client.shutdown()
  }

  @Test func cancellingACallClosesItsConnectionAndReturnsAtOnce() async throws {
    let server = try await TestHTTPServer { _, _ in .hang }
    defer { Task { await server.stop() } }
    let client = try makeClient([server.endpoint]) { $0.requestTimeout = .seconds(60) }
    let call = Task { try await client.services() }
    try await eventually("the request reached the server") { server.requests.count == 1 }
    let start = ContinuousClock.now
    call.cancel()
    await #expect(throws: CancellationError.self) { _ = try await call.value }
    #expect(ContinuousClock.now - start < .seconds(5))
    #expect(server.requests.count == 1, "a cancelled call is not retried")
    await client.shutdown()
  }

  @Test func theOverallTimeoutBoundsTheWholeCall() async throws {
    let server = try await TestHTTPServer { _, _ in .hang }
    defer { Task { await server.stop() } }
    let client = try makeClient([server.endpoint]) {
      $0.requestTimeout = .seconds(120)
      $0.overallTimeout = .milliseconds(400)
    }
    let start = ContinuousClock.now
    await #expect(throws: TealClientError.self) { _ = try await client.services() }
    // Far below the request timeout (120 s); the margin absorbs a loaded machine.
    #expect(ContinuousClock.now - start < .seconds(20))
    await client.shutdown()
  }

  @Test func anOversizeAnswerIsRefusedAndNotRetried() async throws {
    let server = try await TestHTTPServer { request, _ in
      request.uri == "/declared"
        ? .respond(status: 200, body: String(repeating: "y", count: 5000)) : .large(count: 3 << 20)
    }
    defer { Task { await server.stop() } }
    let client = try makeClient([server.endpoint]) { $0.maxResponseBytes = 1 << 20 }
    await #expect(throws: TealClientError.responseTooLarge(endpoint: server.endpoint, limit: 1 << 20)) {
      _ = try await client.send(TealRequest(method: .GET, path: "/chunked"))
    }
    #expect(server.requests.count == 1)
    let small = try makeClient([server.endpoint]) { $0.maxResponseBytes = 1000 }
    await #expect(throws: TealClientError.responseTooLarge(endpoint: server.endpoint, limit: 1000)) {
      _ = try await small.send(TealRequest(method: .GET, path: "/declared"))
    }
    await client.shutdown()
    await small.shutdown()
  }

  @Test func anErrorAnswerCarriesTheAPIErrorBodyAndIsNotRetried() async throws {
    let server = try await TestHTTPServer { _, _ in
      .respond(status: 404, body: #"{"error":{"code":"not_found","message":"no service 'web'"}}"#)
    }
    defer { Task { await server.stop() } }
    let client = try makeClient([server.endpoint])
    do {
      _ = try await client.service("web")
      Issue.record("expected a 404")
    } catch let error as TealClientError {
      #expect(error.status == 404)
      #expect(error.apiError == APIError(code: .notFound, message: "no service 'web'"))
      #expect(error.description == "\(server.endpoint) answered 404 not_found: no service 'web'")
    }
    #expect(server.requests.count == 1)
    await client.shutdown()
  }

  @Test func aNonJSONErrorBodyStillSaysWhatHappened() async throws {
    let server = try await TestHTTPServer { _, _ in .respond(status: 500, body: "boom") }
    defer { Task { await server.stop() } }
    let client = try makeClient([server.endpoint])
    do {
      _ = try await client.services()
      Issue.record("expected a 500")
    } catch let error as TealClientError {
      #expect(error.status == 500 && error.apiError?.message == "boom")
    }
    await client.shutdown()
  }

  @Test func nothingSentWhenEveryEndpointRefuses() async throws {
    let first = try RefusingPort()
    let second = try RefusingPort()
    let client = try makeClient([first.endpoint, second.endpoint]) { $0.maxAttempts = 4 }
    do {
      _ = try await client.createService(spec: "x")
      Issue.record("expected notSent")
    } catch let error as TealClientError {
      guard case .notSent(_, let reason) = error else {
        Issue.record("expected notSent, got \(error)")
        return
      }
      #expect(reason == "connection refused")
      #expect(error.description.contains("nothing was sent"))
    }
  }

  @Test func redirectsAreNotFollowed() async throws {
    let server = try await TestHTTPServer { _, _ in .respond(status: 302, headers: [("Location", "http://evil/")]) }
    defer { Task { await server.stop() } }
    let client = try makeClient([server.endpoint])
    do {
      _ = try await client.services()
      Issue.record("expected an error")
    } catch let error as TealClientError {
      guard case .invalidResponse(_, let reason) = error else {
        Issue.record("expected invalidResponse, got \(error)")
        return
      }
      #expect(reason == "redirect (302) to http://evil/ not followed")
    }
    #expect(server.requests.count == 1)
    await client.shutdown()
  }

  @Test func aStreamedBodyArrivesInChunksAndTheConnectionIsReused() async throws {
    let server = try await TestHTTPServer { request, _ in
      request.uri == "/watch"
        ? .chunks(["one\n", "two\n", "three\n"], gap: .milliseconds(100)) : .respond(status: 200, body: clusterJSON)
    }
    defer { Task { await server.stop() } }
    let client = try makeClient([server.endpoint])
    let response = try await client.stream(TealRequest(method: .GET, path: "/watch"))
    #expect(response.status == 200)
    var chunks: [String] = []
    for try await chunk in response.body { chunks.append(String(decoding: chunk, as: UTF8.self)) }
    #expect(chunks.joined() == "one\ntwo\nthree\n")
    #expect(chunks.count >= 2, "chunks should arrive as they are sent: \(chunks)")
    _ = try await client.clusterStatus()
    #expect(server.connections == 1)
    await client.shutdown()
  }

  @Test func readyReturnsANotReadyAnswerInsteadOfRetrying() async throws {
    let server = try await TestHTTPServer { _, _ in .respond(status: 503, body: #"{"node":"n2","ready":false}"#) }
    defer { Task { await server.stop() } }
    let client = try makeClient([server.endpoint])
    #expect(try await client.ready() == ReadyResponse(ready: false, node: "n2"))
    #expect(server.requests.count == 1)
    await client.shutdown()
  }

  @Test func endpointsParseAndBadOnesSayWhy() throws {
    #expect(try Endpoint(url: "http://127.0.0.2:7070/") == Endpoint(host: "127.0.0.2", port: 7070))
    #expect(try Endpoint(url: "http://[::1]:7070").authority == "[::1]:7070")
    #expect(try Endpoint(url: "http://node").port == 80)
    #expect(throws: TealClientError.self) { try Endpoint(url: "127.0.0.1:7070") }
    #expect(throws: TealClientError.self) { try Endpoint(url: "http://127.0.0.1:99999") }
    #expect(throws: TealClientError.self) { try Endpoint(url: "http://127.0.0.1:7070/v1") }
  }

  @Test func anHTTPSEndpointNeedsTheClusterCAAndPlainHTTPIsNotSentToIt() async throws {
    let client = try makeClient(["https://127.0.0.1:7070"])
    do {
      _ = try await client.health()
      Issue.record("expected the https endpoint to be refused without APITLSSecurity")
    } catch let error as TealClientError {
      #expect("\(error)".contains("needs the cluster CA"), "\(error)")
    }
    await client.shutdown()
  }
}
