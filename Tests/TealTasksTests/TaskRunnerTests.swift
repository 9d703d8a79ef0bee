// TaskRunner with real processes: start, environment, health, crashes, stop, logs, errors, reaping.

import Foundation
import Testing

@testable import TealTasks

#if canImport(Glibc)
  import Glibc
#endif

/// Makes a runner writing logs into `directory/logs`.
private func makeRunner(
  _ directory: TaskTestDirectory, logPolicy: TaskLogPolicy = TaskLogPolicy(), grace: Duration = .seconds(5),
  portRange: ClosedRange<Int>? = nil
) -> TaskRunner {
  TaskRunner(
    configuration: TaskRunner.Configuration(
      logDirectory: directory.file("logs"), logPolicy: logPolicy, defaultStopGracePeriod: grace,
      portRange: portRange))
}

private func shell(_ script: String, _ configure: (inout ProcessSpec) -> Void = { _ in }) -> ProcessSpec {
  var spec = ProcessSpec(command: "/bin/sh", arguments: ["-c", script])
  configure(&spec)
  return spec
}

/// A python3 HTTP server on `$PORT` serving the working directory.
private func pythonHTTPServer(directory: String, healthPath: String) -> ProcessSpec {
  ProcessSpec(
    command: "/bin/sh",
    arguments: ["-c", "exec python3 -m http.server \"$PORT\" --bind 127.0.0.1"],
    workingDirectory: directory,
    healthCheck: TaskHealthCheck(
      probe: .http(path: healthPath), interval: .milliseconds(50), timeout: .seconds(1), healthyThreshold: 2,
      unhealthyThreshold: 2, startPeriod: .seconds(5))
  )
}

@Suite("TaskRunner with real processes")
struct TaskRunnerTests {
  // MARK: Start and environment

  @Test("a task gets PORT, TEAL_TASK_ID, TEAL_REVISION, its env and working directory; output goes to its logs")
  func taskReceivesEnvironmentAndWorkingDirectory() async throws {
    let directory = try TaskTestDirectory()
    defer { directory.remove() }
    let workDir = directory.file("work")
    try FileManager.default.createDirectory(atPath: workDir, withIntermediateDirectories: true)
    let runner = makeRunner(directory)
    let script = """
      echo "port=$PORT id=$TEAL_TASK_ID rev=$TEAL_REVISION greeting=$GREETING pwd=$(pwd)"
      echo "to-stderr" >&2
      """
    let info = try await runner.start(
      TaskLaunch(
        taskID: "web:2/abc", revision: "web:2",
        spec: shell(script) {
          $0.environment = ["GREETING": "hello", "PORT": "overridden-by-runner"]
          $0.workingDirectory = workDir
        }))
    #expect(info.port > 0)
    let exit = try #require(await runner.waitForExit("web:2/abc"))
    #expect(exit.termination == .exited(code: 0))
    #expect(exit.stopRequested == false)
    let stdout = try String(contentsOfFile: info.stdoutLogPath, encoding: .utf8)
    let realWorkDir = URL(fileURLWithPath: workDir).resolvingSymlinksInPath().path
    #expect(stdout == "port=\(info.port) id=web:2/abc rev=web:2 greeting=hello pwd=\(realWorkDir)\n")
    #expect(try String(contentsOfFile: info.stderrLogPath, encoding: .utf8) == "to-stderr\n")
    await runner.shutdown()
  }

  @Test("a task inherits no descriptor of the runner's process but its three standard streams")
  func taskInheritsNoDescriptors() async throws {
    let directory = try TaskTestDirectory()
    defer { directory.remove() }
    // A descriptor opened without close-on-exec, as a listening socket of the node could be: a task
    // that inherited it would keep the node's port bound after the node died.
    let leaked = open("/dev/null", O_RDONLY)
    #expect(leaked > 2)
    defer { close(leaked) }
    let runner = makeRunner(directory)
    let info = try await runner.start(
      TaskLaunch(taskID: "fds", revision: "r1", spec: shell("exec ls -1 /proc/self/fd")))
    _ = try #require(await runner.waitForExit("fds"))
    let listed = try String(contentsOfFile: info.stdoutLogPath, encoding: .utf8)
      .split(separator: "\n").compactMap { Int32($0) }
    #expect(!listed.contains(leaked), "the task inherited descriptor \(leaked): \(listed)")
    // 0-2 are the standard streams; 3 is the directory `ls` itself opened to list them.
    #expect(listed.sorted() == [0, 1, 2, 3], "descriptors beyond stdio: \(listed)")
  }

  @Test("live tasks get distinct ports, taken from the configured range")
  func liveTasksGetDistinctPortsFromTheRange() async throws {
    let directory = try TaskTestDirectory()
    defer { directory.remove() }
    let runner = makeRunner(directory, portRange: 41_700...41_799)
    var ports: [Int] = []
    for index in 0..<4 {
      let info = try await runner.start(
        TaskLaunch(taskID: "t\(index)", revision: "r:1", spec: ProcessSpec(command: "sleep", arguments: ["30"])))
      ports.append(info.port)
    }
    #expect(Set(ports).count == 4)
    #expect(ports.allSatisfy { (41_700...41_799).contains($0) })
    await runner.shutdown(gracePeriod: .seconds(2))
  }

  @Test("a task id already live is refused; it can be reused once the task exited")
  func duplicateLiveTaskIDIsRefused() async throws {
    let directory = try TaskTestDirectory()
    defer { directory.remove() }
    let runner = makeRunner(directory)
    let launch = TaskLaunch(taskID: "dup", revision: "r:1", spec: ProcessSpec(command: "sleep", arguments: ["30"]))
    try await runner.start(launch)
    await #expect(throws: TaskRunnerError.duplicateTaskID("dup")) { try await runner.start(launch) }
    _ = await runner.stop("dup")
    let again = try await runner.start(launch)
    #expect(again.state == .healthy)
    await runner.shutdown()
  }

  // MARK: Errors

  @Test("a command that cannot start throws a clear error at once and leaves nothing behind")
  func unstartableCommandReportsClearError() async throws {
    let directory = try TaskTestDirectory()
    defer { directory.remove() }
    let runner = makeRunner(directory)
    let events = await TaskEventLog.recording(runner)
    let started = ContinuousClock.now
    await #expect(throws: TaskRunnerError.self) {
      try await runner.start(TaskLaunch(taskID: "web:2/abc", revision: "web:2", spec: ProcessSpec(command: "/no/such")))
    }
    do {
      try await runner.start(TaskLaunch(taskID: "web:2/abc", revision: "web:2", spec: ProcessSpec(command: "/no/such")))
    } catch {
      #expect(error.description == "task web:2/abc: cannot start '/no/such': No such file or directory")
    }
    #expect(ContinuousClock.now - started < .seconds(2))

    let notExecutable = directory.file("script.txt")
    try "echo hi\n".write(toFile: notExecutable, atomically: true, encoding: .utf8)
    do {
      try await runner.start(TaskLaunch(taskID: "t", revision: "r:1", spec: ProcessSpec(command: notExecutable)))
      Issue.record("a non-executable file started")
    } catch {
      #expect(error.description == "task t: cannot start '\(notExecutable)': Permission denied")
    }
    do {
      try await runner.start(
        TaskLaunch(
          taskID: "t", revision: "r:1",
          spec: ProcessSpec(command: "/bin/true", workingDirectory: directory.file("none"))))
      Issue.record("a missing working directory was accepted")
    } catch {
      #expect(error == .workingDirectoryMissing(taskID: "t", path: directory.file("none")))
    }
    do {
      try await runner.start(
        TaskLaunch(
          taskID: "t", revision: "r:1",
          spec: ProcessSpec(command: "/bin/true", healthCheck: TaskHealthCheck(probe: .http(path: "health")))))
      Issue.record("a health path without '/' was accepted")
    } catch {
      #expect(error.description.contains("healthCheck.path"))
    }
    #expect(await runner.tasks().isEmpty)
    #expect(await events.events.isEmpty)
    await runner.shutdown()
  }

  // MARK: Health

  @Test("an HTTP health check makes a task healthy, 404 makes it unhealthy, and it recovers")
  func httpHealthCheckTracksTheTask() async throws {
    let directory = try TaskTestDirectory()
    defer { directory.remove() }
    let site = directory.file("site")
    try FileManager.default.createDirectory(atPath: site, withIntermediateDirectories: true)
    try "ok".write(toFile: "\(site)/ok.txt", atomically: true, encoding: .utf8)
    let runner = makeRunner(directory)
    let events = await TaskEventLog.recording(runner)
    let info = try await runner.start(
      TaskLaunch(taskID: "py", revision: "py:1", spec: pythonHTTPServer(directory: site, healthPath: "/ok.txt")))
    #expect(info.state == .starting)
    #expect(await events.waitForState(of: "py", where: { $0.isHealthy }) != nil)

    try FileManager.default.removeItem(atPath: "\(site)/ok.txt")
    let unhealthy = await events.waitForState(of: "py", where: { $0.isUnhealthy })
    #expect(unhealthy == .unhealthy(reason: "GET /ok.txt answered 404"))

    try "ok".write(toFile: "\(site)/ok.txt", atomically: true, encoding: .utf8)
    #expect(
      await TaskTestKit.eventually { await events.states(of: "py").filter(\.isHealthy).count == 2 },
      "the task becomes healthy again")
    #expect(Array(await events.states(of: "py").prefix(4)) == [.starting, .healthy, unhealthy, .healthy])

    let exit = await runner.stop("py")
    #expect(exit?.termination == .signaled(signal: SIGTERM))
    #expect(exit?.stopRequested == true)
    #expect(exit?.killedAfterGracePeriod == false)
    #expect(await events.waitForState(of: "py", where: { $0.exitInfo != nil }) == .exited(try #require(exit)))
    #expect(await events.states(of: "py").suffix(2) == [.stopping, .exited(try #require(exit))])
    await runner.shutdown()
  }

  @Test("a TCP health check makes a listening task healthy; a task that never listens turns unhealthy")
  func tcpHealthCheckTracksListening() async throws {
    let directory = try TaskTestDirectory()
    defer { directory.remove() }
    let runner = makeRunner(directory)
    let events = await TaskEventLog.recording(runner)
    let check = TaskHealthCheck(
      probe: .tcp, interval: .milliseconds(50), timeout: .milliseconds(500), healthyThreshold: 2,
      unhealthyThreshold: 3)
    let listener = """
      import os, socket, time
      s = socket.socket()
      s.bind(("127.0.0.1", int(os.environ["PORT"])))
      s.listen(16)
      time.sleep(60)
      """
    try await runner.start(
      TaskLaunch(
        taskID: "tcp", revision: "tcp:1",
        spec: ProcessSpec(command: "python3", arguments: ["-c", listener], healthCheck: check)))
    let muteInfo = try await runner.start(
      TaskLaunch(
        taskID: "mute", revision: "mute:1",
        spec: ProcessSpec(command: "sleep", arguments: ["30"], healthCheck: check)))
    #expect(await events.waitForState(of: "tcp", where: { $0.isHealthy }) != nil)
    let mute = await events.waitForState(of: "mute", where: { $0.isUnhealthy })
    #expect(mute == .unhealthy(reason: "cannot connect to 127.0.0.1:\(muteInfo.port): Connection refused"))
    #expect(await events.states(of: "mute").contains(.healthy) == false)
    await runner.shutdown(gracePeriod: .seconds(2))
  }

  // MARK: Crashes

  @Test("a task that exits on its own is reported with its exit code")
  func crashIsReportedWithExitCode() async throws {
    let directory = try TaskTestDirectory()
    defer { directory.remove() }
    let runner = makeRunner(directory)
    let events = await TaskEventLog.recording(runner)
    try await runner.start(TaskLaunch(taskID: "crash", revision: "c:1", spec: shell("sleep 0.1; exit 7")))
    let state = await events.waitForState(of: "crash", where: { $0.exitInfo != nil })
    #expect(
      state?.exitInfo == TaskExit(termination: .exited(code: 7), stopRequested: false, killedAfterGracePeriod: false))
    #expect(await events.states(of: "crash") == [.starting, .healthy, try #require(state)])
    #expect(await runner.task("crash")?.state == state)
    await runner.shutdown()
  }

  @Test("a task killed by a signal is reported with the signal")
  func crashIsReportedWithSignal() async throws {
    let directory = try TaskTestDirectory()
    defer { directory.remove() }
    let runner = makeRunner(directory)
    let info = try await runner.start(
      TaskLaunch(taskID: "victim", revision: "v:1", spec: ProcessSpec(command: "sleep", arguments: ["30"])))
    #expect(kill(info.pid, SIGKILL) == 0)
    let exit = await runner.waitForExit("victim")
    #expect(exit?.termination == .signaled(signal: SIGKILL))
    #expect(exit?.stopRequested == false)
    #expect(exit?.description == "killed by signal 9 (SIGKILL)")
    await runner.shutdown()
  }

  @Test("when a task's main process exits, the helpers it left in its process group are killed")
  func exitOfMainProcessKillsItsGroup() async throws {
    let directory = try TaskTestDirectory()
    defer { directory.remove() }
    let runner = makeRunner(directory)
    let pidFile = directory.file("helper.pid")
    try await runner.start(
      TaskLaunch(
        taskID: "leaver", revision: "l:1",
        spec: shell("sleep 30 >/dev/null 2>&1 & echo $! > '\(pidFile)'; exit 3")))
    let exit = await runner.waitForExit("leaver")
    #expect(exit?.termination == .exited(code: 3))
    let helper = try #require(
      Int32(try String(contentsOfFile: pidFile, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)))
    #expect(await TaskTestKit.eventually(timeout: .seconds(5)) { !TaskTestKit.processIsRunning(helper) })
    await runner.shutdown()
  }

  // MARK: Stop

  @Test("stop sends SIGTERM to the task, which can exit cleanly within its grace period")
  func stopHonoursSIGTERM() async throws {
    let directory = try TaskTestDirectory()
    defer { directory.remove() }
    let runner = makeRunner(directory)
    let ready = directory.file("ready")
    let script = "trap 'echo got-term; exit 0' TERM; touch '\(ready)'; while :; do sleep 0.05; done"
    let info = try await runner.start(TaskLaunch(taskID: "polite", revision: "p:1", spec: shell(script)))
    #expect(await TaskTestKit.eventually { FileManager.default.fileExists(atPath: ready) })
    let started = ContinuousClock.now
    let exit = await runner.stop("polite", gracePeriod: .seconds(10))
    #expect(ContinuousClock.now - started < .seconds(5))
    #expect(exit == TaskExit(termination: .exited(code: 0), stopRequested: true, killedAfterGracePeriod: false))
    #expect(try String(contentsOfFile: info.stdoutLogPath, encoding: .utf8).contains("got-term"))
    await runner.shutdown()
  }

  @Test("a task that ignores SIGTERM gets SIGKILL after the grace period")
  func stopEscalatesToSIGKILLAfterGracePeriod() async throws {
    let directory = try TaskTestDirectory()
    defer { directory.remove() }
    let runner = makeRunner(directory)
    let ready = directory.file("ready")
    let script = "trap '' TERM; touch '\(ready)'; while :; do sleep 0.05; done"
    try await runner.start(TaskLaunch(taskID: "stubborn", revision: "s:1", spec: shell(script)))
    #expect(await TaskTestKit.eventually { FileManager.default.fileExists(atPath: ready) })
    let started = ContinuousClock.now
    let exit = await runner.stop("stubborn", gracePeriod: .milliseconds(400))
    let elapsed = ContinuousClock.now - started
    #expect(
      exit == TaskExit(termination: .signaled(signal: SIGKILL), stopRequested: true, killedAfterGracePeriod: true))
    #expect(elapsed >= .milliseconds(400))
    #expect(elapsed < .seconds(5))
    await runner.shutdown()
  }

  @Test("the grace period is measured on the injected clock")
  func gracePeriodUsesInjectedClock() async throws {
    let directory = try TaskTestDirectory()
    defer { directory.remove() }
    let requested = TaskSleepLog()
    // A clock whose sleeps end at once: an hour of grace passes immediately.
    let clock = TaskClock(now: { .zero }, sleep: { duration in await requested.record(duration) })
    let runner = TaskRunner(
      configuration: TaskRunner.Configuration(logDirectory: directory.file("logs")), clock: clock)
    let ready = directory.file("ready")
    let script = "trap '' TERM; touch '\(ready)'; while :; do sleep 0.05; done"
    try await runner.start(TaskLaunch(taskID: "stubborn", revision: "s:1", spec: shell(script)))
    #expect(await TaskTestKit.eventually { FileManager.default.fileExists(atPath: ready) })
    let exit = await runner.stop("stubborn", gracePeriod: .seconds(3600))
    #expect(exit?.killedAfterGracePeriod == true)
    #expect(await requested.durations == [.seconds(3600)])
    await runner.shutdown()
  }

  // MARK: Logs

  @Test("log files are capped and rotated, keeping the newest output")
  func logsAreCappedAndRotated() async throws {
    let directory = try TaskTestDirectory()
    defer { directory.remove() }
    let runner = makeRunner(directory, logPolicy: TaskLogPolicy(maxFileBytes: 1000, rotatedFiles: 2))
    // 200 lines of 20 bytes: 4000 bytes, more than the 3000 bytes the policy keeps.
    let script = "i=100; while [ $i -lt 300 ]; do echo \"line-$i-abcdefghijk\"; i=$((i+1)); done"
    let info = try await runner.start(TaskLaunch(taskID: "chatty", revision: "c:1", spec: shell(script)))
    #expect(await runner.waitForExit("chatty")?.termination == .exited(code: 0))

    let path = info.stdoutLogPath
    let fileManager = FileManager.default
    let live = try String(contentsOfFile: path, encoding: .utf8)
    let first = try String(contentsOfFile: "\(path).1", encoding: .utf8)
    let second = try String(contentsOfFile: "\(path).2", encoding: .utf8)
    #expect(!fileManager.fileExists(atPath: "\(path).3"))
    #expect(first.utf8.count == 1000)
    #expect(second.utf8.count == 1000)
    #expect(live.utf8.count <= 1000)
    let everything = (100..<300).map { "line-\($0)-abcdefghijk\n" }.joined()
    let kept = second + first + live
    #expect(kept.utf8.count == 2000 + live.utf8.count)
    #expect(everything.hasSuffix(kept), "the kept files are the newest output, oldest first")
    #expect(live.hasSuffix("line-299-abcdefghijk\n"))
    await runner.shutdown()
  }

  @Test("the log file name is safe for any task id and keeps distinct ids apart")
  func logFileNamesAreSafe() {
    #expect(TaskRunner.logFileBaseName("web-2.abc") == "web-2.abc")
    let slashed = TaskRunner.logFileBaseName("web:2/abc")
    #expect(slashed.hasPrefix("web_2_abc-"))
    #expect(!slashed.contains("/"))
    #expect(TaskRunner.logFileBaseName("web:2/abc") != TaskRunner.logFileBaseName("web/2:abc"))
    #expect(!TaskRunner.logFileBaseName("..").hasPrefix(".."))
  }

  // MARK: Shutdown

  @Test("after shutdown no task process, helper or zombie is left and the event streams finish")
  func shutdownLeavesNoZombiesOrOrphans() async throws {
    let directory = try TaskTestDirectory()
    defer { directory.remove() }
    let runner = makeRunner(directory)
    let events = await TaskEventLog.recording(runner)
    let helperFile = directory.file("helper.pid")
    let ready = directory.file("stubborn.ready")
    var pids: [Int32] = []
    pids.append(
      try await runner.start(
        TaskLaunch(taskID: "sleeper", revision: "r:1", spec: ProcessSpec(command: "sleep", arguments: ["30"]))
      ).pid)
    pids.append(
      try await runner.start(
        TaskLaunch(
          taskID: "parent", revision: "r:1",
          spec: shell("sleep 30 >/dev/null 2>&1 & echo $! > '\(helperFile)'; wait"))
      ).pid)
    pids.append(
      try await runner.start(
        TaskLaunch(
          taskID: "stubborn", revision: "r:1",
          spec: shell("trap '' TERM; touch '\(ready)'; while :; do sleep 0.05; done"))
      ).pid)
    pids.append(
      try await runner.start(TaskLaunch(taskID: "crashed", revision: "r:1", spec: shell("exit 1"))).pid)
    #expect(await runner.waitForExit("crashed")?.termination == .exited(code: 1))
    #expect(
      await TaskTestKit.eventually {
        FileManager.default.fileExists(atPath: ready) && FileManager.default.fileExists(atPath: helperFile)
      })
    let helperText = try String(contentsOfFile: helperFile, encoding: .utf8)
    let helper = try #require(Int32(helperText.trimmingCharacters(in: .whitespacesAndNewlines)))

    await runner.shutdown(gracePeriod: .milliseconds(300))

    // Task processes are our children: reaped, so gone from /proc. The helper is a grandchild:
    // killed (init reaps it later).
    for pid in pids {
      #expect(await TaskTestKit.eventually(timeout: .seconds(3)) { !TaskTestKit.processExists(pid) }, "pid \(pid) gone")
    }
    #expect(await TaskTestKit.eventually(timeout: .seconds(3)) { !TaskTestKit.processIsRunning(helper) })
    #expect(
      await TaskTestKit.eventually(timeout: .seconds(3)) { TaskTestKit.zombieChildrenOfThisProcess().isEmpty },
      "no zombie children: \(TaskTestKit.zombieChildrenOfThisProcess())")
    #expect(await runner.tasks().allSatisfy { !$0.state.isLive })
    #expect(await events.waitUntilFinished())
    await #expect(throws: TaskRunnerError.shutDown) {
      try await runner.start(TaskLaunch(taskID: "late", revision: "r:1", spec: ProcessSpec(command: "/bin/true")))
    }
  }
}

/// The sleeps asked of an injected clock.
private actor TaskSleepLog {
  private(set) var durations: [Duration] = []
  func record(_ duration: Duration) { durations.append(duration) }
}

// MARK: - Leftovers of a crashed runner

@Suite("TaskRunner after a crash of the previous runner")
struct TaskRunnerLeftoverTests {
  /// Starts `sleep 30` in its own session and process group (`setsid`), detached from us as a crashed runner's task would
  /// be (its parent shell exits at once, so init adopts it). Returns its pid (= its pgid).
  private func startDetachedGroup(_ runner: TaskRunner, _ name: String) async throws -> Int32 {
    // Wait until the child has left our group (field 5 of /proc/<pid>/stat is its pgid): the
    // runner kills the shell's group when the shell exits.
    let script = """
      setsid sleep 30 >/dev/null 2>&1 &
      pid=$!
      while [ "$(cut -d' ' -f5 /proc/$pid/stat)" != "$pid" ]; do sleep 0.01; done
      echo $pid
      """
    let info = try await runner.start(
      TaskLaunch(taskID: name, revision: "r:1", spec: shell(script)))
    #expect(await runner.waitForExit(name)?.termination == .exited(code: 0))
    let text = try String(contentsOfFile: info.stdoutLogPath, encoding: .utf8)
    return try #require(Int32(text.trimmingCharacters(in: .whitespacesAndNewlines)))
  }

  @Test("the ledger lists live tasks and a new runner kills the groups the previous one left behind")
  func leftoverGroupsAreKilledAtStartup() async throws {
    let directory = try TaskTestDirectory()
    defer { directory.remove() }
    let helperRunner = TaskRunner(configuration: TaskRunner.Configuration(logDirectory: directory.file("helper")))
    let orphan = try await startDetachedGroup(helperRunner, "orphan")
    let stranger = try await startDetachedGroup(helperRunner, "stranger")
    await helperRunner.shutdown()
    #expect(TaskTestKit.processIsRunning(orphan))
    #expect(TaskTestKit.processIsRunning(stranger))
    let orphanStart = try #require(TaskLedger.startTime(of: orphan))
    let strangerStart = try #require(TaskLedger.startTime(of: stranger))
    defer {
      for (pid, start) in [(orphan, orphanStart), (stranger, strangerStart)]
      where TaskLedger.startTime(of: pid) == start {
        _ = kill(pid, SIGKILL)
      }
    }

    // The previous runner crashed with these two in its ledger; "stranger"'s pid has since been
    // reused by another program (different start time), so it must be left alone.
    let ledger = directory.file("logs/tasks.ledger")
    TaskLedger.write(
      [
        TaskLedgerEntry(taskID: "web:1/orphan", processGroup: orphan, startTime: orphanStart),
        TaskLedgerEntry(taskID: "web:1/stranger", processGroup: stranger, startTime: strangerStart + 1),
      ], to: ledger)

    let runner = makeRunner(directory)
    let killed = await runner.killLeftoversFromPreviousRun()
    #expect(killed.map(\.taskID) == ["web:1/orphan"])
    #expect(await TaskTestKit.eventually(timeout: .seconds(3)) { !TaskTestKit.processIsRunning(orphan) })
    #expect(TaskTestKit.processIsRunning(stranger))
    #expect(TaskLedger.read(ledger).isEmpty, "the ledger now lists only this runner's tasks: none")

    let live = try await runner.start(
      TaskLaunch(taskID: "web:2/new", revision: "web:2", spec: ProcessSpec(command: "sleep", arguments: ["30"])))
    #expect(
      TaskLedger.read(ledger) == [
        TaskLedgerEntry(
          taskID: "web:2/new", processGroup: live.pid, startTime: try #require(TaskLedger.startTime(of: live.pid)))
      ])
    #expect(await runner.killLeftoversFromPreviousRun().isEmpty, "a live task of this runner is never killed")
    await runner.shutdown()
    #expect(TaskLedger.read(ledger).isEmpty)
  }
}
