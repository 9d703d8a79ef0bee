// teal-demo, run as a real task by the TaskRunner: identity, health, knobs, graceful stop.

import Foundation
import TealTasks
import Testing

#if canImport(Glibc)
  import Glibc
#endif

/// Where the built `teal-demo` is: `$TEAL_DEMO_BINARY`, else next to the test bundle (the build's
/// products directory, where `swift build` / `swift test` put every executable of the package).
enum TealDemoBinary {
  static let path: String? = {
    if let explicit = ProcessInfo.processInfo.environment["TEAL_DEMO_BINARY"], !explicit.isEmpty {
      return FileManager.default.isExecutableFile(atPath: explicit) ? explicit : nil
    }
    guard let executable = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe") else {
      return nil
    }
    var directory = URL(fileURLWithPath: executable).deletingLastPathComponent()
    // On Linux the test runner is `<products>/<Package>PackageTests.xctest`; on Darwin it sits deeper
    // inside the bundle. Walk up a few levels.
    for _ in 0..<4 {
      let candidate = directory.appendingPathComponent("teal-demo").path
      if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
      directory = directory.deletingLastPathComponent()
    }
    return nil
  }()

  static let missingMessage =
    "teal-demo binary not found next to the test bundle; run `swift build` first or set TEAL_DEMO_BINARY"
}

private func demoSpec(_ arguments: [String] = [], environment: [String: String] = [:]) throws -> ProcessSpec {
  let binary = try #require(TealDemoBinary.path)
  return ProcessSpec(
    command: binary, arguments: arguments, environment: environment,
    healthCheck: TaskHealthCheck(
      probe: .http(path: "/health"), interval: .milliseconds(50), timeout: .seconds(2), healthyThreshold: 1,
      unhealthyThreshold: 2, startPeriod: .seconds(10)),
    stopGracePeriod: .seconds(10))
}

private func demoRequest(
  _ port: Int, _ path: String, method: String = "GET", body: String = ""
) async throws -> TaskTestHTTPResponse {
  try await TaskTestKit.offPool { try TaskTestKit.httpRequest(port: port, method: method, path: path, body: body) }
}

@Suite(
  "teal-demo as a task", .enabled(if: TealDemoBinary.path != nil, Comment(rawValue: TealDemoBinary.missingMessage)))
struct TealDemoTests {
  @Test("teal-demo reports its version, task id and revision, and its health follows /control")
  func demoReportsIdentityAndHealthFollowsControl() async throws {
    let directory = try TaskTestDirectory()
    defer { directory.remove() }
    let runner = TaskRunner(configuration: TaskRunner.Configuration(logDirectory: directory.path))
    let events = await TaskEventLog.recording(runner)
    let info = try await runner.start(
      TaskLaunch(taskID: "web:3/a1", revision: "web:3", spec: try demoSpec(["--version", "3.1.4"])))
    #expect(await events.waitForState(of: "web:3/a1", where: { $0.isHealthy }) != nil)

    let root = try await demoRequest(info.port, "/")
    #expect(root.status == 200)
    #expect(root.headers["x-teal-revision"] == "web:3")
    #expect(root.headers["content-type"] == "application/json")
    let json = try #require(try JSONSerialization.jsonObject(with: Data(root.body.utf8)) as? [String: Any])
    #expect(json["version"] as? String == "3.1.4")
    #expect(json["taskId"] as? String == "web:3/a1")
    #expect(json["revision"] as? String == "web:3")
    #expect(json["port"] as? Int == info.port)
    #expect(json["pid"] as? Int == Int(info.pid))

    let failing = try await demoRequest(info.port, "/control", method: "POST", body: #"{"failHealth":true}"#)
    #expect(failing.status == 200)
    #expect((try await demoRequest(info.port, "/health")).status == 503)
    #expect(
      await events.waitForState(of: "web:3/a1", where: { $0.isUnhealthy })
        == .unhealthy(reason: "GET /health answered 503"))

    let bad = try await demoRequest(info.port, "/control", method: "POST", body: #"{"errorRate":1.5}"#)
    #expect(bad.status == 400)
    #expect(bad.body.contains("errorRate must be between 0 and 1"))

    _ = try await demoRequest(info.port, "/control", method: "POST", body: #"{"failHealth":false}"#)
    #expect(
      await TaskTestKit.eventually { await events.states(of: "web:3/a1").filter(\.isHealthy).count == 2 },
      "healthy again after failHealth is switched off")
    await runner.shutdown()
  }

  @Test("the error rate is seeded and repeatable; rejecting uploads fails POST /process only")
  func demoFailureKnobs() async throws {
    let directory = try TaskTestDirectory()
    defer { directory.remove() }
    let runner = TaskRunner(configuration: TaskRunner.Configuration(logDirectory: directory.path))
    let events = await TaskEventLog.recording(runner)
    let info = try await runner.start(
      TaskLaunch(
        taskID: "web:4/b", revision: "web:4",
        spec: try demoSpec(environment: ["TEAL_DEMO_REJECT_UPLOADS": "1", "TEAL_DEMO_ERROR_RATE": "0"])))
    #expect(await events.waitForState(of: "web:4/b", where: { $0.isHealthy }) != nil)

    let upload = try await demoRequest(info.port, "/process", method: "POST", body: String(repeating: "x", count: 5000))
    #expect(upload.status == 500)
    #expect(upload.body.contains("uploads are refused by this version"))
    #expect((try await demoRequest(info.port, "/")).status == 200)
    _ = try await demoRequest(info.port, "/control", method: "POST", body: #"{"rejectUploads":false}"#)
    let accepted = try await demoRequest(
      info.port, "/process", method: "POST", body: String(repeating: "x", count: 5000))
    #expect(accepted.status == 200)
    #expect(accepted.body.contains(#""processedBytes":5000"#))

    func statuses() async throws -> [Int] {
      var result: [Int] = []
      for _ in 0..<40 { result.append(try await demoRequest(info.port, "/").status) }
      return result
    }
    _ = try await demoRequest(info.port, "/control", method: "POST", body: #"{"errorRate":0.5,"seed":42}"#)
    let first = try await statuses()
    _ = try await demoRequest(info.port, "/control", method: "POST", body: #"{"seed":42}"#)
    let second = try await statuses()
    #expect(first == second, "same seed, same sequence")
    let failures = first.filter { $0 == 500 }.count
    #expect((8...32).contains(failures), "about half of 40 fail at rate 0.5, got \(failures)")
    #expect(first.allSatisfy { $0 == 200 || $0 == 500 })
    #expect((try await demoRequest(info.port, "/health")).status == 200, "the error rate never touches /health")
    await runner.shutdown()
  }

  @Test("a SIGTERM sent while teal-demo is still starting is not lost")
  func demoStoppedDuringStartupExitsWithoutSIGKILL() async throws {
    let directory = try TaskTestDirectory()
    defer { directory.remove() }
    let runner = TaskRunner(configuration: TaskRunner.Configuration(logDirectory: directory.path))
    for index in 0..<3 {
      let taskID = "web:6/\(index)"
      try await runner.start(TaskLaunch(taskID: taskID, revision: "web:6", spec: try demoSpec()))
      let exit = try #require(await runner.stop(taskID, gracePeriod: .seconds(8)))
      // Before its handler is ready the default action ends it (SIGTERM); after, it drains and exits 0.
      #expect(exit.termination == .exited(code: 0) || exit.termination == .signaled(signal: SIGTERM))
      #expect(exit.killedAfterGracePeriod == false, "SIGTERM was lost: \(exit)")
    }
    await runner.shutdown()
  }

  @Test("on SIGTERM teal-demo finishes the request in flight and exits 0")
  func demoFinishesInFlightRequestOnSIGTERM() async throws {
    let directory = try TaskTestDirectory()
    defer { directory.remove() }
    let runner = TaskRunner(configuration: TaskRunner.Configuration(logDirectory: directory.path))
    let events = await TaskEventLog.recording(runner)
    let info = try await runner.start(
      TaskLaunch(taskID: "web:5/c", revision: "web:5", spec: try demoSpec(["--latency-ms", "700"])))
    #expect(await events.waitForState(of: "web:5/c", where: { $0.isHealthy }) != nil)

    let port = info.port
    let slow = Task { try await demoRequest(port, "/") }
    #expect(
      try await TaskTestKit.eventually {
        let control = try await demoRequest(port, "/control")
        return control.body.contains(#""inFlight":1"#)
      }, "the slow request is in flight")
    let exit = await runner.stop("web:5/c")
    #expect(exit == TaskExit(termination: .exited(code: 0), stopRequested: true, killedAfterGracePeriod: false))
    let answer = try await slow.value
    #expect(answer.status == 200)
    #expect(answer.headers["x-teal-revision"] == "web:5")
    let stdout = try String(contentsOfFile: info.stdoutLogPath, encoding: .utf8)
    #expect(stdout.contains("teal-demo: drained, exiting"))
    await runner.shutdown()
  }
}
