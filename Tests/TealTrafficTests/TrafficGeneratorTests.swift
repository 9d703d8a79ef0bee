import TealTestSupport
import TealTraffic
import Testing

@Suite("TrafficGenerator against a local HTTP server (real sockets)")
struct TrafficGeneratorTests {
  @Test func countsAreExactPerTargetMethodAndConnection() async throws {
    let first = try await TestHTTPServer.start()
    let second = try await TestHTTPServer.start()
    defer {
      Task {
        await first.kill()
        await second.kill()
      }
    }
    let targets = [
      TrafficTarget(host: "127.0.0.1", port: first.port), TrafficTarget(host: "127.0.0.1", port: second.port),
    ]
    let generator = try TrafficGenerator(
      configuration: TrafficConfiguration(
        targets: targets, clientsPerTarget: 3, postFraction: 0.25, bodyBytes: 1000, maximumRequestsPerClient: 40))
    generator.start()
    await generator.wait()
    let snapshot = generator.snapshot()
    #expect(snapshot.inFlight == 0)
    #expect(snapshot.records.count == 240)
    #expect(snapshot.droppedRecords == 0)
    for (target, server) in zip(targets, [first, second]) {
      let summary = try #require(snapshot.summaries[target])
      #expect(summary.sent == 120, "\(snapshot.report)")
      #expect(summary.ok == 120)
      #expect(summary.failed == 0)
      #expect(summary.byMethod == ["GET": 90, "POST": 30])
      #expect(summary.servedByRevision == ["web:1": 120])
      #expect(summary.servedByNode == ["t1": 120])
      #expect(summary.connections == 3, "keep-alive: one connection per client")
      #expect(server.received == .init(byMethod: ["GET": 90, "POST": 30], postBodyBytes: 30_000, connections: 3))
    }
    let record = try #require(snapshot.records.last)
    #expect(record.revision == "web:1")
    #expect(record.generation == 3)
    #expect(record.node == "t1")
    #expect(record.outcome == .status(200))
    #expect(Set(snapshot.records.map(\.sequence)) == Set(0..<240))
  }

  @Test func connectionCloseMeansReconnectWithoutFailures() async throws {
    let server = try await TestHTTPServer.start()
    defer { Task { await server.kill() } }
    let target = TrafficTarget(host: "127.0.0.1", port: server.port)
    let generator = try TrafficGenerator(
      configuration: TrafficConfiguration(
        targets: [target], clientsPerTarget: 2, postFraction: 0.5, getPath: "/close", postPath: "/close",
        maximumRequestsPerClient: 10))
    generator.start()
    await generator.wait()
    let summary = try #require(generator.snapshot().summaries[target])
    #expect(summary.sent == 20)
    #expect(summary.ok == 20, "\(summary.line)")
    #expect(summary.connections == 20)
    #expect(server.received.connections == 20)
  }

  @Test func aKilledServerYieldsResetsThenRefusedConnectsAndNothingElse() async throws {
    let server = try await TestHTTPServer.start(delay: .milliseconds(20))
    let target = TrafficTarget(host: "127.0.0.1", port: server.port)
    let generator = try TrafficGenerator(
      configuration: TrafficConfiguration(
        targets: [target], clientsPerTarget: 4, postFraction: 0.5, bodyBytes: 4096, maximumDuration: .seconds(30),
        reconnectDelay: .milliseconds(20)))
    generator.start()
    try await eventually("40 answered requests") { generator.snapshot().summaries[target]?.ok ?? 0 >= 40 }
    await server.kill()
    let okAtKill = generator.snapshot().summaries[target]?.ok ?? 0
    try await eventually("refused connects") {
      generator.snapshot().summaries[target]?.failures[.connectRefused] ?? 0 >= 8
    }
    await generator.stop()
    let snapshot = generator.snapshot()
    let summary = try #require(snapshot.summaries[target])
    #expect(snapshot.inFlight == 0)
    #expect(summary.sent == summary.ok + summary.failed, "\(summary.line)")
    #expect(Set(summary.failures.keys).isSubset(of: [.resetBeforeResponse, .connectRefused]), "\(summary.line)")
    // Every client had a request in flight (the server answers after 20 ms) when it died.
    #expect(summary.failures[.resetBeforeResponse] ?? 0 >= 1, "\(summary.line)")
    #expect(summary.ok <= okAtKill + 4)
    let refused = snapshot.records.filter { $0.outcome == .failure(.connectRefused) }
    #expect(refused.allSatisfy { $0.connection == nil })
    #expect(server.received.byMethod.values.reduce(0, +) >= summary.ok)
  }

  @Test func aRequestWithoutAnswerTimesOutAndTheClientReconnects() async throws {
    let server = try await TestHTTPServer.start()
    defer { Task { await server.kill() } }
    let target = TrafficTarget(host: "127.0.0.1", port: server.port)
    let generator = try TrafficGenerator(
      configuration: TrafficConfiguration(
        targets: [target], clientsPerTarget: 1, postFraction: 0, getPath: "/hang", maximumRequestsPerClient: 2,
        requestTimeout: .milliseconds(200)))
    generator.start()
    await generator.wait()
    let snapshot = generator.snapshot()
    let summary = try #require(snapshot.summaries[target])
    #expect(summary.failures == [.timeout: 2])
    #expect(summary.connections == 2)
    for record in snapshot.records {
      #expect(record.latency >= .milliseconds(200) && record.latency < .seconds(3))
    }
  }

  @Test func aResponseThatIsNotHTTPIsABadResponse() async throws {
    let server = try await TestHTTPServer.start(garbage: true)
    defer { Task { await server.kill() } }
    let target = TrafficTarget(host: "127.0.0.1", port: server.port)
    let generator = try TrafficGenerator(
      configuration: TrafficConfiguration(
        targets: [target], clientsPerTarget: 1, postFraction: 0, maximumRequestsPerClient: 3))
    generator.start()
    await generator.wait()
    let summary = try #require(generator.snapshot().summaries[target])
    #expect(summary.failures == [.badResponse: 3], "\(summary.line)")
  }

  @Test func theRecordListKeepsTheMostRecentWithinItsBoundAndCountsStayExact() async throws {
    let server = try await TestHTTPServer.start()
    defer { Task { await server.kill() } }
    let target = TrafficTarget(host: "127.0.0.1", port: server.port)
    let generator = try TrafficGenerator(
      configuration: TrafficConfiguration(
        targets: [target], clientsPerTarget: 2, postFraction: 0.5, bodyBytes: 10, maximumRequestsPerClient: 150,
        maximumRecords: 50))
    generator.start()
    await generator.wait()
    let snapshot = generator.snapshot()
    #expect(snapshot.records.count == 50)
    #expect(snapshot.droppedRecords == 250)
    #expect(snapshot.records.map(\.sequence) == Array(250..<300))
    #expect(snapshot.summaries[target]?.sent == 300)
    #expect(snapshot.summaries[target]?.ok == 300)
  }

  @Test func stopLetsInFlightRequestsFinishAndReturnsPromptly() async throws {
    let server = try await TestHTTPServer.start(delay: .milliseconds(100))
    defer { Task { await server.kill() } }
    let target = TrafficTarget(host: "127.0.0.1", port: server.port)
    let generator = try TrafficGenerator(
      configuration: TrafficConfiguration(targets: [target], clientsPerTarget: 8, maximumDuration: .seconds(60)))
    generator.start()
    try await eventually("requests in flight") { generator.snapshot().inFlight >= 4 }
    let clock = ContinuousClock()
    let stopped = clock.now
    await generator.stop()
    #expect(clock.now - stopped < .seconds(3))
    let snapshot = generator.snapshot()
    #expect(snapshot.inFlight == 0)
    #expect(snapshot.summaries[target]?.failed == 0, "\(snapshot.report)")
    #expect(snapshot.summaries[target]?.sent ?? 0 >= 8)
  }

  @Test func theGeneratorStopsByItselfAfterItsMaximumDuration() async throws {
    let server = try await TestHTTPServer.start(delay: .milliseconds(5))
    defer { Task { await server.kill() } }
    let target = TrafficTarget(host: "127.0.0.1", port: server.port)
    let generator = try TrafficGenerator(
      configuration: TrafficConfiguration(
        targets: [target], clientsPerTarget: 2, requestsPerSecondPerClient: 50, maximumDuration: .milliseconds(500)))
    let clock = ContinuousClock()
    let started = clock.now
    generator.start()
    await generator.wait()
    let elapsed = clock.now - started
    #expect(elapsed >= .milliseconds(500) && elapsed < .seconds(5))
    let sent = generator.snapshot().summaries[target]?.sent ?? 0
    // 2 clients at 50/s for 0.5 s: at most 26 each (the first is due at once).
    #expect(sent > 0 && sent <= 52, "sent \(sent)")
  }

  @Test func aConfigurationOutOfBoundsNamesTheField() {
    let target = TrafficTarget(host: "127.0.0.1", port: 1)
    #expect(throws: TrafficConfigurationError.self) {
      try TrafficGenerator(configuration: TrafficConfiguration(targets: []))
    }
    do {
      _ = try TrafficGenerator(configuration: TrafficConfiguration(targets: [target], clientsPerTarget: 0))
      Issue.record("clientsPerTarget 0 was accepted")
    } catch {
      #expect(error.field == "clientsPerTarget")
    }
    do {
      _ = try TrafficGenerator(configuration: TrafficConfiguration(targets: [target], postFraction: 1.5))
      Issue.record("postFraction 1.5 was accepted")
    } catch {
      #expect(error.description == "traffic: postFraction: must be in 0...1, got 1.5")
    }
  }
}
