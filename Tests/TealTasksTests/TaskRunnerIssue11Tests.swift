// Issue 11 for the task runner: an explicit environment, deregistration before SIGTERM, a bounded
// event stream.

import Foundation
import NIOConcurrencyHelpers
import Testing

@testable import TealTasks

#if canImport(Glibc)
  import Glibc
#endif

@Suite("TaskRunner environment, deregistration and event bounds", .serialized)
struct TaskRunnerIssue11Tests {
  /// Before: a task inherited the node's whole environment, secrets included.
  @Test("a task sees only the documented variables of the node's environment, its own and the runner's")
  func taskEnvironmentIsExplicit() async throws {
    let directory = try TaskTestDirectory()
    defer { directory.remove() }
    setenv("TEAL_TEST_NODE_SECRET", "leaked", 1)
    defer { unsetenv("TEAL_TEST_NODE_SECRET") }
    let runner = TaskRunner(configuration: TaskRunner.Configuration(logDirectory: directory.file("logs")))
    let info = try await runner.start(
      TaskLaunch(
        taskID: "env", revision: "r:1",
        spec: ProcessSpec(
          command: "/bin/sh", arguments: ["-c", "env | cut -d= -f1 | sort | tr '\\n' ' '"],
          environment: ["GREETING": "hello"])))
    _ = await runner.waitForExit("env")
    let names = Set(
      try String(contentsOfFile: info.stdoutLogPath, encoding: .utf8).split(separator: " ").map(String.init))
    await runner.shutdown()
    #expect(!names.contains("TEAL_TEST_NODE_SECRET"))
    #expect(names.isSuperset(of: ["GREETING", "PORT", "TEAL_TASK_ID", "TEAL_REVISION", "PATH"]))
    // Only the documented names come from the node (the shell adds PWD, SHLVL and `_` itself).
    let fromNode = names.subtracting(["GREETING", "PORT", "TEAL_TASK_ID", "TEAL_REVISION", "PWD", "SHLVL", "_"])
    #expect(fromNode.isSubset(of: TaskRunner.Configuration.defaultInheritedEnvironmentNames), "\(fromNode)")
  }

  /// Before: stop sent SIGTERM at once; a routed task was killed while the balancer still sent it requests.
  @Test("stop deregisters the task and signals it only after the deregistration returned")
  func stopDeregistersBeforeSIGTERM() async throws {
    let directory = try TaskTestDirectory()
    defer { directory.remove() }
    let order = NIOLockedValueBox<[String]>([])
    let runner = TaskRunner(
      configuration: TaskRunner.Configuration(logDirectory: directory.file("logs")),
      deregister: { info in
        order.withLockedValue { $0.append("deregister \(info.taskID) port \(info.port)") }
        try? await Task.sleep(for: .milliseconds(300))  // stands in for the balancer's drain
        order.withLockedValue { $0.append("deregistered") }
      })
    // The task records when SIGTERM arrives.
    let info = try await runner.start(
      TaskLaunch(
        taskID: "web", revision: "r:1",
        spec: ProcessSpec(
          command: "/bin/sh",
          arguments: ["-c", "trap 'echo TERM; exit 0' TERM; echo ready; while true; do sleep 0.05; done"])))
    let started = await TaskTestKit.eventually {
      ((try? String(contentsOfFile: info.stdoutLogPath, encoding: .utf8)) ?? "").contains("ready")
    }
    #expect(started)
    let stopping = Task { await runner.stop("web") }
    // While the deregistration runs, the task is `stopping` and still running (no SIGTERM yet).
    let deregistering = await TaskTestKit.eventually { order.withLockedValue { $0.count == 1 } }
    #expect(deregistering)
    #expect(await runner.task("web")?.state == .stopping)
    #expect(!((try? String(contentsOfFile: info.stdoutLogPath, encoding: .utf8)) ?? "").contains("TERM"))
    let exit = await stopping.value
    #expect(exit?.termination == .exited(code: 0))
    #expect(order.withLockedValue { $0 } == ["deregister web port \(info.port)", "deregistered"])
    #expect(try String(contentsOfFile: info.stdoutLogPath, encoding: .utf8).contains("TERM"))
    await runner.shutdown()
  }

  /// Before: every subscriber's buffer was unbounded.
  @Test("a subscriber that does not read keeps only the newest events, up to the documented bound")
  func eventStreamIsBounded() async throws {
    let directory = try TaskTestDirectory()
    defer { directory.remove() }
    let runner = TaskRunner(configuration: TaskRunner.Configuration(logDirectory: directory.file("logs")))
    let stream = await runner.events()
    let bound = TaskRunner.eventBufferLimit
    // Each task without a health check emits starting, healthy, then exited after `true` ends.
    for index in 0..<(bound / 2 + 10) {
      _ = try await runner.start(
        TaskLaunch(taskID: "t\(index)", revision: "r:1", spec: ProcessSpec(command: "/bin/true")))
    }
    for index in 0..<(bound / 2 + 10) { _ = await runner.waitForExit("t\(index)") }
    await runner.shutdown()
    var received: [TaskEvent] = []
    for await event in stream { received.append(event) }
    #expect(received.count == bound)
    // The newest are kept: the last event is the exit of the last task.
    #expect(received.last?.taskID == "t\(bound / 2 + 9)")
  }
}
