import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import TealDeploy
import TealWire
import Testing

@testable import TealHooks

// MARK: - A tiny local HTTP server (port 0) answering by path

/// Request bodies the server received, by path.
final class ReceivedBodies: @unchecked Sendable {
  private let lock = NSLock()
  private var bodies: [String: [String]] = [:]

  func add(_ path: String, _ body: String) {
    lock.lock()
    defer { lock.unlock() }
    bodies[path, default: []].append(body)
  }

  func bodies(_ path: String) -> [String] {
    lock.lock()
    defer { lock.unlock() }
    return bodies[path] ?? []
  }
}

final class HookServerHandler: ChannelInboundHandler {
  typealias InboundIn = HTTPServerRequestPart
  typealias OutboundOut = HTTPServerResponsePart

  let received: ReceivedBodies
  var path = "/"
  var body = ""
  var term: String?

  init(received: ReceivedBodies) { self.received = received }

  func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    switch unwrapInboundIn(data) {
    case .head(let head):
      path = head.uri
      body = ""
      term = head.headers["x-teal-term"].first
    case .body(let buffer):
      body += String(buffer: buffer)
    case .end:
      received.add(path, path == "/term" ? "x-teal-term: \(term ?? "absent")" : body)
      let (status, text): (HTTPResponseStatus, String?)
      switch path {
      case "/succeeded", "/term": (status, text) = (.ok, #"{"hookStatus": "SUCCEEDED"}"#)
      case "/in-progress": (status, text) = (.ok, #"{"hookStatus": "IN_PROGRESS"}"#)
      case "/in-progress-delay": (status, text) = (.ok, #"{"hookStatus": "IN_PROGRESS", "callBackDelay": 90}"#)
      case "/failed": (status, text) = (.ok, #"{"hookStatus": "FAILED", "reason": "checkout returned 502"}"#)
      case "/server-error": (status, text) = (.internalServerError, #"{"hookStatus": "SUCCEEDED"}"#)
      case "/not-json": (status, text) = (.ok, "all good")
      case "/unknown-status": (status, text) = (.ok, #"{"hookStatus": "MAYBE"}"#)
      case "/missing-status": (status, text) = (.ok, #"{"status": "SUCCEEDED"}"#)
      case "/never": (status, text) = (.ok, nil)  // never answers
      default: (status, text) = (.notFound, "no such hook")
      }
      guard let text else { return }
      var head = HTTPResponseHead(version: .http1_1, status: status)
      head.headers.add(name: "Content-Length", value: String(text.utf8.count))
      head.headers.add(name: "Content-Type", value: "application/json")
      context.write(wrapOutboundOut(.head(head)), promise: nil)
      context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: text)))), promise: nil)
      context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
    }
  }
}

func withHookServer(_ body: (Int, ReceivedBodies, any EventLoopGroup) async throws -> Void) async throws {
  let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
  let received = ReceivedBodies()
  let channel = try await ServerBootstrap(group: group)
    .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
    .childChannelInitializer { channel in
      channel.eventLoop.makeCompletedFuture {
        try channel.pipeline.syncOperations.configureHTTPServerPipeline()
        try channel.pipeline.syncOperations.addHandler(HookServerHandler(received: received))
      }
    }
    .bind(host: "127.0.0.1", port: 0).get()
  let port = channel.localAddress?.port ?? 0
  do {
    try await body(port, received, group)
  } catch {
    try? await channel.close()
    try? await group.shutdownGracefully()
    throw error
  }
  try await channel.close()
  try await group.shutdownGracefully()
}

func invocation(_ action: HookAction, attempt: Int = 1) -> HookInvocation {
  HookInvocation(
    hookIndex: 0, hook: LifecycleHookConfiguration(stages: [.POST_TEST_TRAFFIC_SHIFT], action: action),
    context: HookContext(
      executionId: "d-7-POST_TEST_TRAFFIC_SHIFT", lifecycleStage: .POST_TEST_TRAFFIC_SHIFT,
      resourceArn: "teal:service/web/deployment/d-7",
      executionDetails: HookContext.ExecutionDetails(
        testTrafficWeights: ["web:1": 0, "web:2": 100], productionTrafficWeights: ["web:1": 100, "web:2": 0],
        serviceArn: "teal:service/web", targetServiceRevisionArn: "teal:revision/web:2"),
      hookDetails: .object(sorting: [("suite", .string("smoke"))]), deploymentId: "d-7", service: "web",
      targetRevision: "web:2", sourceRevision: "web:1", productionStep: 0, direction: .FORWARD, attempt: attempt),
    notBefore: Instant(millisecondsSinceEpoch: 0))
}

// MARK: - HTTP hooks

@Suite struct HTTPHookTests {
  @Test func answersMapToOutcomesAndTheBodyIsTheHookContext() async throws {
    try await withHookServer { port, received, group in
      let invoker = HookInvoker(group: group)
      let cases: [(String, HookOutcome)] = [
        ("/succeeded", .succeeded),
        ("/in-progress", .inProgress),
        ("/failed", .failed(reason: "hook returned FAILED: checkout returned 502")),
        ("/server-error", .failed(reason: "hook answered HTTP 500, expected 2xx")),
        ("/not-json", .failed(reason: "hook answered a body that is not a JSON object")),
        (
          "/unknown-status",
          .failed(reason: "hook answered unknown hookStatus \"MAYBE\" (expected SUCCEEDED, FAILED or IN_PROGRESS)")
        ),
        ("/missing-status", .failed(reason: "hook answer has no string field hookStatus")),
        ("/nowhere", .failed(reason: "hook answered HTTP 404, expected 2xx")),
      ]
      for (path, expected) in cases {
        let call = invocation(.http(url: "http://127.0.0.1:\(port)\(path)", timeout: .seconds(5)), attempt: 2)
        let result = await invoker.invoke(call)
        #expect(result.outcome == expected, "\(path)")
        #expect(result.executionId == "d-7-POST_TEST_TRAFFIC_SHIFT")
        #expect(result.attempt == 2)
      }
      let body = try #require(received.bodies("/succeeded").first)
      let context = try JSONDecoder().decode(HookContext.self, from: Data(body.utf8))
      #expect(context == invocation(.http(url: "", timeout: .seconds(1)), attempt: 2).context)
      let json = try #require(try JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any])
      #expect(json["lifecycleStage"] as? String == "POST_TEST_TRAFFIC_SHIFT")
      // ECS-shaped: executionId, lifecycleStage, resourceArn, executionDetails with weights by revision.
      #expect(json["resourceArn"] as? String == "teal:service/web/deployment/d-7")
      let details = try #require(json["executionDetails"] as? [String: Any])
      #expect((details["testTrafficWeights"] as? [String: Any])?["web:2"] as? Double == 100)
      #expect((details["productionTrafficWeights"] as? [String: Any])?["web:1"] as? Double == 100)
      #expect((json["hookDetails"] as? [String: Any])?["suite"] as? String == "smoke")
    }
  }

  @Test func aHookThatNeverAnswersTimesOutWithinItsTimeout() async throws {
    try await withHookServer { port, _, group in
      let invoker = HookInvoker(group: group)
      let clock = ContinuousClock()
      let started = clock.now
      let result = await invoker.invoke(
        invocation(.http(url: "http://127.0.0.1:\(port)/never", timeout: .milliseconds(300))))
      let elapsed = clock.now - started
      #expect(result.outcome == .timedOut)
      // The upper bound only says "not waiting for ever": a loaded 2-core machine (the fuzz test in
      // parallel) has delayed the timer by several seconds.
      #expect(elapsed >= .milliseconds(300) && elapsed < .seconds(15), "\(elapsed)")
    }
  }

  @Test func anInProgressAnswerCarriesTheHooksCallBackDelay() async throws {
    try await withHookServer { port, _, group in
      let invoker = HookInvoker(group: group)
      let delayed = await invoker.invoke(
        invocation(.http(url: "http://127.0.0.1:\(port)/in-progress-delay", timeout: .seconds(5))))
      #expect(delayed.outcome == .inProgress)
      #expect(delayed.callBackDelay == .seconds(90))
      let plain = await invoker.invoke(
        invocation(.http(url: "http://127.0.0.1:\(port)/in-progress", timeout: .seconds(5))))
      #expect(plain.callBackDelay == nil)
    }
  }

  @Test func refusedConnectionIsUnreachableWithAReasonSoTheEngineRetriesIt() async throws {
    // Hold a port bound but not listening for the whole test: connecting to it is refused, and no
    // other test running in parallel can take it (closing a probe socket would free it for reuse).
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    let (descriptor, port) = try boundButNotListening()
    defer { close(descriptor) }
    let result = await HookInvoker(group: group).invoke(
      invocation(.http(url: "http://127.0.0.1:\(port)/x", timeout: .seconds(2))))
    guard case .unreachable(let reason) = result.outcome else {
      Issue.record("expected unreachable, got \(result.outcome)")
      try await group.shutdownGracefully()
      return
    }
    #expect(reason.contains("cannot connect to 127.0.0.1:\(port)"), "\(reason)")
    try await group.shutdownGracefully()
  }

  @Test func theLeadersTermTravelsInXTealTermAndIsAbsentWithoutOne() async throws {
    try await withHookServer { port, received, group in
      let invoker = HookInvoker(group: group)
      let action = HookAction.http(url: "http://127.0.0.1:\(port)/term", timeout: .seconds(5))
      #expect(await invoker.invoke(invocation(action), term: 7).outcome == .succeeded)
      #expect(await invoker.invoke(invocation(action)).outcome == .succeeded)
      #expect(received.bodies("/term") == ["x-teal-term: 7", "x-teal-term: absent"])
    }
  }

  @Test func hookURLsParse() {
    #expect(
      HookURL("http://127.0.0.1:9100/hooks/smoke") == HookURL(host: "127.0.0.1", port: 9100, path: "/hooks/smoke"))
    #expect(HookURL("http://example.com") == HookURL(host: "example.com", port: 80, path: "/"))
    #expect(HookURL("http://[::1]:81/a?b=c") == HookURL(host: "::1", port: 81, path: "/a?b=c"))
    #expect(HookURL("https://example.com") == nil)
    #expect(HookURL("http://:80/") == nil)
    #expect(HookURL("http://host:99999/") == nil)
  }
}

// MARK: - Command hooks

@Suite struct CommandHookTests {
  func run(_ script: String, timeout: TimeSpan = .seconds(5), outputLimit: Int = 2048) async -> HookResult {
    let group = MultiThreadedEventLoopGroup.singleton
    return await HookInvoker(group: group, outputLimit: outputLimit).invoke(
      invocation(.command(argv: ["/bin/sh", "-c", script], timeout: timeout)))
  }

  @Test func exitStatusDecidesTheOutcome() async {
    #expect(await run("cat >/dev/null; exit 0").outcome == .succeeded)
    #expect(await run("exit 3").outcome == .inProgress)
    #expect(await run("echo broken >&2; exit 7").outcome == .failed(reason: "/bin/sh exited with status 7"))
  }

  @Test func aCommandHookSeesTheLeadersTermInTEAL_TERM() async {
    let action = HookAction.command(argv: ["/bin/sh", "-c", #"test "$TEAL_TERM" = 12"#], timeout: .seconds(5))
    let invoker = HookInvoker(group: MultiThreadedEventLoopGroup.singleton)
    #expect(await invoker.invoke(invocation(action), term: 12).outcome == .succeeded)
    #expect(await invoker.invoke(invocation(action), term: 11).outcome != .succeeded)
  }

  @Test func theHookContextArrivesOnStdinAndOutputIsKept() async {
    let result = await run("cat; echo done >&2")
    #expect(result.outcome == .succeeded)
    let output = result.output ?? ""
    #expect(output.contains("\"executionId\":\"d-7-POST_TEST_TRAFFIC_SHIFT\""), "\(output)")
    #expect(output.contains("stderr: done"))
  }

  @Test func longOutputIsTruncated() async {
    let result = await run("head -c 10000 /dev/zero | tr '\\000' x", outputLimit: 100)
    #expect(result.outcome == .succeeded)
    #expect(result.output?.contains("...(truncated, 10000 bytes)") == true, "\(result.output ?? "")")
    #expect((result.output?.count ?? 0) < 300)
  }

  @Test func aCommandStillRunningAtItsTimeoutIsKilledAndTimedOut() async {
    let clock = ContinuousClock()
    let started = clock.now
    let result = await run("exec sleep 20", timeout: .milliseconds(300))
    #expect(result.outcome == .timedOut)
    #expect(clock.now - started < .seconds(5))
  }

  @Test func aMissingProgramIsFailed() async {
    // A missing program is a configuration error, not a hook restarting: no retries for hours.
    let result = await HookInvoker(group: MultiThreadedEventLoopGroup.singleton).invoke(
      invocation(.command(argv: ["/nonexistent/hook"], timeout: .seconds(1))))
    guard case .failed(let reason) = result.outcome else {
      Issue.record("expected FAILED, got \(result.outcome)")
      return
    }
    #expect(reason.hasPrefix("cannot start /nonexistent/hook"), "\(reason)")
  }

  @Test func resultFeedsTheDeploymentAsTheAnswerItAwaits() async throws {
    // The invoker's answer to the deployment's pending call is exactly what the deployment awaits.
    let spec = ServiceSpec(
      name: "web", desiredCount: 1, productionPort: 8080, testPort: 8081,
      task: TaskSpec(
        command: "/bin/demo", args: [], env: [:], port: 9000,
        healthCheck: HealthCheckConfiguration(
          path: "/", interval: .seconds(5), timeout: .seconds(1), healthyThreshold: 1, unhealthyThreshold: 1)),
      deployment: DeploymentConfiguration(
        strategy: .BLUE_GREEN, bakeTime: .zero,
        lifecycleHooks: [
          LifecycleHookConfiguration(
            stages: [.PRE_SCALE_UP], action: .command(argv: ["/bin/sh", "-c", "exit 0"], timeout: .seconds(5)))
        ]))
    let start = Instant(millisecondsSinceEpoch: 0)
    var deployment = Deployment(
      id: "d-9",
      submission: DeploymentSubmission(
        green: Revision(id: RevisionID(service: "web", number: 2), spec: spec),
        blue: BlueRevision(revision: RevisionID(service: "web", number: 1), desiredCount: 1), nodes: [NodeID("n1")]),
      now: start)
    deployment.apply(DeploymentInput(deploymentId: "d-9", now: start, command: .start))
    let call = try #require(deployment.pendingHookCall)
    let result = await HookInvoker(group: MultiThreadedEventLoopGroup.singleton).invoke(call)
    deployment.apply(
      DeploymentInput(deploymentId: "d-9", now: Instant(millisecondsSinceEpoch: 50), command: .hookAnswered(result)))
    #expect(deployment.stage == .SCALE_UP)
    #expect(deployment.pendingHookCall == nil)
  }
}

extension CommandHookTests {
  @Test func aCommandThatClosesItsOutputEarlyStillRunsToItsExit() async {
    let result = await run("exec >&- 2>&-; sleep 0.3; exit 3")
    #expect(result.outcome == .inProgress)
  }
}

/// A TCP socket bound to a free loopback port without `listen`: connections to it are refused.
private func boundButNotListening() throws -> (Int32, Int) {
  let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
  guard descriptor >= 0 else { throw POSIXError(.EMFILE) }
  var address = sockaddr_in()
  address.sin_family = sa_family_t(AF_INET)
  address.sin_port = 0
  address.sin_addr.s_addr = inet_addr("127.0.0.1")
  var length = socklen_t(MemoryLayout<sockaddr_in>.size)
  let bound = withUnsafeMutablePointer(to: &address) { pointer in
    pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { socketAddress in
      bind(descriptor, socketAddress, length) == 0 && getsockname(descriptor, socketAddress, &length) == 0
    }
  }
  guard bound else {
    close(descriptor)
    throw POSIXError(.EADDRNOTAVAIL)
  }
  return (descriptor, Int(UInt16(bigEndian: address.sin_port)))
}
