// The harness's own machinery (process groups, signals, reaping, ledgers, ports), checked with
// teal-demo and /bin/sh as stand-ins so that it is known to work before the node lands.

import Foundation
import TealTestSupport
import TealTraffic
import Testing

#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

@Suite("LocalCluster machinery (no node needed)", .serialized)
struct HarnessSelfTests {
  @Test func freePortsBindOnEveryLoopbackAddressAndAreNotHandedOutTwice() throws {
    let hosts = ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
    let first = try FreePorts.pick(on: hosts)
    let second = try FreePorts.pick(on: hosts)
    #expect(first != second)
    for host in hosts { #expect(FreePorts.bindable(host: host, port: first) == first) }
    let range = try FreePorts.range(count: 10, on: ["0.0.0.0"])
    #expect(range.count == 10)
    #expect(!range.contains(first) && !range.contains(second))
  }

  @Test func aSpawnedProcessLeadsItsOwnGroupLogsToItsFileAndExitsOnSIGTERM() async throws {
    let demo = Binaries.tealDemo
    try #require(FileManager.default.isExecutableFile(atPath: demo), "no teal-demo at \(demo)")
    let log = temporaryDirectory("harness") + ".log"
    defer { try? FileManager.default.removeItem(atPath: log) }
    let port = try FreePorts.pick(on: ["127.0.0.1"])
    let pid = try spawnInOwnGroup(demo, ["--port", "\(port)"], logPath: log)
    defer { killGroup(pid, startTime: nil) }
    #expect(getpgid(pid) == pid)
    #expect(processStartTime(pid) != nil)
    try await waitUntil("teal-demo answers", timeout: .seconds(20)) {
      let connection = try await HTTPConnection.connect(host: "127.0.0.1", port: port)
      defer { Task { await connection.close() } }
      return try await connection.request(method: .GET, path: "/health").status == 200
    }
    #expect(reap(pid) == nil)
    kill(pid, SIGTERM)
    var exit: ChildExit?
    try await waitUntil("teal-demo exits", timeout: .seconds(20)) {
      exit = reap(pid)
      return exit != nil
    }
    #expect(exit == .exited(0))
    let text = try String(contentsOfFile: log, encoding: .utf8)
    #expect(text.contains("listening on 127.0.0.1:\(port)"), "\(text)")
  }

  @Test func killGroupKillsTheLeaderAndItsChildrenAndReapReportsTheSignal() async throws {
    let log = temporaryDirectory("harness") + ".log"
    defer { try? FileManager.default.removeItem(atPath: log) }
    // A group leader with a child that would outlive it: the child's pid is printed to the log.
    let pid = try spawnInOwnGroup("/bin/sh", ["-c", "sleep 300 & echo child $!; wait"], logPath: log)
    var child: pid_t = 0
    try await waitUntil("the child's pid in the log", timeout: .seconds(10)) {
      let text = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
      guard let line = text.split(separator: "\n").first(where: { $0.hasPrefix("child ") }),
        let value = pid_t(line.dropFirst(6))
      else { return false }
      child = value
      return true
    }
    #expect(getpgid(child) == pid)
    killGroup(pid, startTime: processStartTime(pid))
    var exit: ChildExit?
    try await waitUntil("the leader is reaped", timeout: .seconds(10)) {
      exit = reap(pid)
      return exit != nil
    }
    #expect(exit == .signalled(SIGKILL))
    try await waitUntil("the child is gone", timeout: .seconds(10)) {
      // A zombie child of init is reaped promptly; kill(pid, 0) fails once it is.
      kill(child, 0) != 0
        || (try? String(contentsOfFile: "/proc/\(child)/stat", encoding: .utf8))?.contains(") Z ")
          == true
    }
  }

  @Test func aStaleStartTimeSparesAProcessThatReusedThePID() throws {
    let me = getpid()
    let start = try #require(processStartTime(me))
    // A group named by our PID but recorded with another start time is not ours to kill.
    killGroup(me, startTime: start + 1)
    #expect(kill(me, 0) == 0)
  }

  @Test func theTaskLedgerIsReadAsGroupStartTimeAndTask() throws {
    let path = temporaryDirectory("ledger")
    defer { try? FileManager.default.removeItem(atPath: path) }
    try "4242 1234567 web.1.7\n\nbad line\n1 5 init-is-never-a-task\n77 0 api.2.1\n".write(
      toFile: path, atomically: true, encoding: .utf8)
    let entries = readTaskLedger(path)
    #expect(entries.map(\.group) == [4242, 77])
    #expect(entries.map(\.startTime) == [1_234_567, 0])
    #expect(entries.map(\.task) == ["web.1.7", "api.2.1"])
    #expect(readTaskLedger("/no/such/ledger").isEmpty)
  }

  @Test func theClusterLayoutHasCertificatesATokenAndOneConfigurationPerNode() throws {
    try #require(FileManager.default.isExecutableFile(atPath: Binaries.teal), "no teal at \(Binaries.teal)")
    let cluster = try LocalCluster(nodes: 3, electionTimeoutMs: 1500)
    defer { cluster.destroy() }
    let files = FileManager.default
    for name in ["ca.pem", "ca.key", "n1.pem", "n1.key", "n2.pem", "n3.key"] {
      #expect(files.fileExists(atPath: "\(cluster.directory)/certs/\(name)"), "\(name)")
    }
    let attributes = try files.attributesOfItem(atPath: "\(cluster.directory)/token")
    #expect((attributes[.posixPermissions] as? NSNumber)?.intValue == 0o600)
    #expect(cluster.token.count == 64 && cluster.token.allSatisfy(\.isHexDigit))
    let n2 = try String(contentsOfFile: cluster.node("n2").configPath, encoding: .utf8)
    for line in [
      "node: n2", "address: 127.0.0.2", "peerPort: \(cluster.peerPort)", "apiPort: \(cluster.apiPort)",
      "dataDir: \(cluster.directory)/n2/data", "taskDir: \(cluster.directory)/n2/tasks",
      "certDir: \(cluster.directory)/certs", "tokenFile: \(cluster.directory)/token", "  n1: 127.0.0.1",
      "  n3: 127.0.0.3", "bootstrap: true", "electionTimeoutMs: 1500",
    ] {
      #expect(n2.split(separator: "\n").contains(Substring(line)), "node.yaml lacks '\(line)':\n\(n2)")
    }
    #expect(!cluster.node("n1").taskPorts.overlaps(cluster.node("n2").taskPorts))
    // cluster.yaml as `teal cluster up` writes it (`teal chaos --dir` reads it).
    let clusterFile = try String(contentsOfFile: "\(cluster.directory)/cluster.yaml", encoding: .utf8)
    #expect(
      clusterFile.contains("  - id: n2\n    address: 127.0.0.2\n    api: \"http://127.0.0.2:\(cluster.apiPort)\"\n"))
    let verify = try run(opensslPath, ["x509", "-noout", "-text", "-in", "\(cluster.directory)/certs/n3.pem"])
    #expect(verify.output.contains("127.0.0.3"), "n3's certificate lacks its address")
    cluster.destroy()
    #expect(!files.fileExists(atPath: cluster.directory))
  }

  // MARK: The hook server

  /// One hook call as a node makes it: a POST of the hook context with `x-teal-term`.
  func callHook(
    _ server: HookServer, stage: String, execution: String, attempt: Int, term: UInt64,
    connection: HTTPConnection? = nil
  ) async throws -> HTTPResponse {
    let body =
      #"{"executionId":"\#(execution)","lifecycleStage":"\#(stage)","attempt":\#(attempt),"#
      + #""deploymentId":"web-7","direction":"FORWARD","productionStep":0}"#
    let open: HTTPConnection
    if let connection {
      open = connection
    } else {
      open = try await HTTPConnection.connect(host: "127.0.0.1", port: server.port)
    }
    return try await open.request(
      method: .POST, path: "/hooks/\(stage)",
      headers: [("content-type", "application/json"), ("x-teal-term", "\(term)"), ("connection", "close")],
      body: Array(body.utf8), timeout: .seconds(20))
  }

  func hookStatus(_ response: HTTPResponse) -> String? {
    ((try? JSONSerialization.jsonObject(with: Data(response.body))) as? [String: Any])?["hookStatus"] as? String
  }

  @Test func theHookServerAnswersEachExecutionByItsStagesRuleAndRecordsEveryCall() async throws {
    let server = try await HookServer(rules: [
      "POST_SCALE_UP": .inProgress(times: 2, callBackDelay: 1), "POST_TEST_TRAFFIC_SHIFT": .fail("smoke failed"),
    ])
    defer { Task { await server.stop() } }
    var answers: [String?] = []
    for attempt in 1...3 {
      answers.append(
        hookStatus(try await callHook(server, stage: "POST_SCALE_UP", execution: "e1", attempt: attempt, term: 3)))
    }
    #expect(answers == ["IN_PROGRESS", "IN_PROGRESS", "SUCCEEDED"])
    // Counted per execution: another executionId of the stage starts again.
    let other = try await callHook(server, stage: "POST_SCALE_UP", execution: "e2", attempt: 1, term: 4)
    #expect(hookStatus(other) == "IN_PROGRESS")
    #expect(other.text.contains(#""callBackDelay":1"#), "\(other.text)")
    let failed = try await callHook(server, stage: "POST_TEST_TRAFFIC_SHIFT", execution: "e3", attempt: 1, term: 4)
    #expect(failed.status == 200 && hookStatus(failed) == "FAILED" && failed.text.contains("smoke failed"))
    let unlisted = try await callHook(server, stage: "PRE_SCALE_UP", execution: "e4", attempt: 1, term: 4)
    #expect(hookStatus(unlisted) == "SUCCEEDED")

    let calls = server.calls
    #expect(calls.map(\.executionId) == ["e1", "e1", "e1", "e2", "e3", "e4"])
    #expect(calls.map(\.attempt) == [1, 2, 3, 1, 1, 1])
    #expect(calls.map(\.term) == [3, 3, 3, 4, 4, 4])
    #expect(calls.map(\.callOfExecution) == [0, 1, 2, 0, 0, 0])
    #expect(calls[4].stage == "POST_TEST_TRAFFIC_SHIFT" && calls[4].deploymentId == "web-7")
    #expect(calls.allSatisfy { $0.answered != nil && !$0.closedUnanswered })
  }

  @Test func aHeldHookCallIsAnsweredOnReleaseAndOneWhoseCallerDiesIsMarkedClosedUnanswered() async throws {
    let server = try await HookServer(rules: ["POST_TEST_TRAFFIC_SHIFT": .holdFirst(then: .succeeded)])
    defer { Task { await server.stop() } }
    let held = Task {
      try await callHook(server, stage: "POST_TEST_TRAFFIC_SHIFT", execution: "e1", attempt: 1, term: 5)
    }
    let first = try await server.waitForCall("the held call", timeout: .seconds(10)) { $0.executionId == "e1" }
    #expect(first.rule == .hold && first.answered == nil)
    // Held: a later call of the same execution (a new leader's) is answered at once.
    let again = try await callHook(server, stage: "POST_TEST_TRAFFIC_SHIFT", execution: "e1", attempt: 1, term: 6)
    #expect(hookStatus(again) == "SUCCEEDED")
    #expect(server.release(with: .succeeded) == 1)
    #expect(hookStatus(try await held.value) == "SUCCEEDED")

    // A caller that goes away while held (a killed leader).
    let connection = try await HTTPConnection.connect(host: "127.0.0.1", port: server.port)
    let orphan = Task {
      try? await callHook(
        server, stage: "POST_TEST_TRAFFIC_SHIFT", execution: "e2", attempt: 1, term: 7, connection: connection)
    }
    let call = try await server.waitForCall("the second held call", timeout: .seconds(10)) { $0.executionId == "e2" }
    await connection.close()
    _ = await orphan.value
    try await waitUntil("the server sees the caller gone", timeout: .seconds(10)) {
      server.calls[call.index].closedUnanswered
    }
    #expect(server.release() == 0)
    #expect(server.calls[call.index].answered == nil)
  }
}
