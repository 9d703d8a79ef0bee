import ArgumentParser
import Dispatch
import Foundation
import TealAPI
import TealClient
import TealDeploy
import Yams

#if canImport(Glibc)
  import Glibc
#endif

// `teal chaos kill-leader|pause` (network faults: ChaosNetwork.swift): break a cluster on purpose,
// at a moment a deployment defines. The local cluster of `teal cluster up` by the PIDs it recorded
// (DIR/nI/node.pid), or any cluster a targets file describes (ChaosTargets.swift). Docs/CHAOS.md.

struct Chaos: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    abstract:
      "Break the local cluster on purpose: kill -9 its leader, pause a node, cut or degrade a node's peer network.",
    discussion: """
      Works on the cluster of `teal cluster up` in --dir, or on any cluster whose nodes this machine \
      can reach, described by --targets FILE (each node's API, peer address and port, and how to \
      reach its host: this machine, or a command prefix such as `ssh root@HOST`). The leader is \
      found through the API, the node's process by the PID in DIR/nI/node.pid or by its --config \
      path in /proc (checked to still be that node). Every action is printed with its UTC time.
      """,
    subcommands: [
      Run.self, KillLeader.self, Pause.self, Partition.self, Loss.self, Heal.self, RestartAll.self, KillTask.self,
    ])

  struct KillLeader: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      commandName: "kill-leader",
      abstract: "kill -9 the leader's teal process, now or when a deployment reaches a stage.",
      discussion: """
        --at STAGE waits until the deployment (--deployment ID, or the only active one) enters STAGE; \
        --at STAGE+6s until 6 s after it entered it (the stage timeline's enteredAt); --after 5s \
        waits 5 s. With --with-tasks the leader's tasks (their process groups, from its task ledger) \
        are killed too, as when a machine dies. --restart-after 3s starts the node again, as \
        `teal cluster up` does, 3 s after the kill.
        """)

    @Option(
      name: .long,
      help: ArgumentHelp("Kill when the deployment enters STAGE, or STAGE+OFFSET after.", valueName: "stage[+offset]"))
    var at: String?

    @Option(name: .long, help: ArgumentHelp("Kill after this delay (500ms, 5s, 1.5s, 2m).", valueName: "duration"))
    var after: String?

    @Option(name: .long, help: ArgumentHelp("Start the node again this long after the kill.", valueName: "duration"))
    var restartAfter: String?

    @Flag(name: .long, help: "Also kill the leader's tasks' process groups.")
    var withTasks = false

    @Option(name: .long, help: "The deployment --at watches (default: the only one in progress).")
    var deployment: String?

    /// `--dir` or `--targets`.
    @OptionGroup var cluster: ClusterOptions

    @Option(
      name: .long, help: ArgumentHelp("Give up waiting for --at's moment after this long.", valueName: "duration"))
    var wait: String = "1h"

    @Flag(name: .long, help: "Print one JSON object per action instead of text.")
    var json = false

    func validate() throws {
      if at != nil && after != nil { throw ValidationError("give --at or --after, not both") }
      if let at { _ = try KillMoment.parseAt(at) }
      if let after { _ = try parseChaosDuration(after, option: "--after") }
      if let restartAfter { _ = try parseChaosDuration(restartAfter, option: "--restart-after") }
      _ = try parseChaosDuration(wait, option: "--wait")
      if deployment != nil && at == nil {
        throw ValidationError("--deployment names the deployment --at watches; give --at")
      }
    }

    func run() async throws {
      let cluster = try ChaosCluster(try self.cluster.load())
      let out = ChaosOutput(json: json)
      defer { Task { await cluster.client.shutdown() } }
      var watched: String?
      if let at {
        let (stage, offset) = try KillMoment.parseAt(at)
        let id = try await cluster.resolveDeployment(deployment)
        watched = id
        try await cluster.waitFor(
          deployment: id, stage: stage, offset: offset, within: try parseChaosDuration(wait, option: "--wait"), out: out
        )
      } else if let after {
        let delay = try parseChaosDuration(after, option: "--after")
        out.say("waiting \(formatSeconds(delay))", ["action": "wait", "seconds": seconds(delay)])
        try await Task.sleep(for: delay)
      }
      let leader = try await cluster.leader()
      let (node, _) = try await cluster.resolveNode(leader.id)
      guard let process = try node.process() else {
        throw CommandFailure(message: cluster.noProcess(node, role: "the leader "))
      }
      let pid = process.pid
      // The ledger first: the node rewrites it, and after the kill nobody does.
      let tasks = withTasks ? try node.taskGroups() : []
      try node.signal(process, SIGKILL, group: true)
      node.killTaskGroups(tasks.map(\.group))
      let killedAt = Date()
      var stageNote = ""
      if let watched, let view = try? await cluster.client.deployment(watched, stale: true) {
        stageNote = "; deployment \(watched) is \(view.status) at \(view.stage ?? "-")"
      }
      out.say(
        "killed \(leader.id) (pid \(pid)), the leader in term \(leader.term), with SIGKILL\(stageNote)",
        [
          "action": "kill", "node": leader.id, "pid": Int(pid), "term": Int(leader.term),
          "deployment": watched as Any, "tasks": tasks.map(\.task), "taskGroups": tasks.map { Int($0.group) },
        ], at: killedAt)
      if !tasks.isEmpty {
        out.say(
          "killed \(tasks.count) task process group(s) of \(leader.id): "
            + tasks.map { "\($0.task) (pgid \($0.group))" }.joined(separator: ", "), nil)
      } else if withTasks {
        out.say("\(leader.id) had no live task in its ledger", nil)
      }
      try await waitForNodeExit(node, process, within: .seconds(10))

      if let restartAfter {
        let delay = try parseChaosDuration(restartAfter, option: "--restart-after")
        try await Task.sleep(for: delay)
        let started = try node.start()
        out.say(
          "restarted \(leader.id) (\(started.note))",
          ["action": "restart", "node": leader.id, "pid": started.pid.map { Int($0) } as Any])
      }
    }
  }

  struct Pause: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Pause a node (SIGSTOP) for a while, then resume it (SIGCONT).",
      discussion: """
        NODE is a node id of the cluster in --dir, or `leader` (found through the API). The node is \
        resumed when the time is up, and also when this command is interrupted (SIGINT, SIGTERM, \
        SIGHUP). Only SIGKILL of this command leaves it stopped: `kill -CONT PID` resumes it then.
        """)

    @Argument(help: "A node id (n1, n2, ...) or `leader`.")
    var node: String

    /// `--for` (how long it stays stopped), `--dir` or `--targets`, `--json`.
    @OptionGroup var options: FaultOptions

    func run() async throws {
      let duration = options.duration
      let cluster = try ChaosCluster(try options.cluster.load())
      let out = ChaosOutput(json: options.json)
      defer { Task { await cluster.client.shutdown() } }
      let length = try parseChaosDuration(duration, option: "--for")
      let (target, term) = try await cluster.resolveNode(node)
      let id = target.id
      guard let process = try target.process() else { throw CommandFailure(message: cluster.noProcess(target)) }
      let pid = process.pid
      // Resume on SIGINT, SIGTERM and SIGHUP too: installed before the node is stopped.
      SignalPipe.install([SIGINT, SIGTERM, SIGHUP]) { signalNumber in
        try? target.signal(process, SIGCONT)
        let fields: [String: Any] = ["action": "resume", "node": id, "pid": Int(pid), "interrupted": true]
        out.say("interrupted (signal \(signalNumber)): resumed \(id) (pid \(pid)) with SIGCONT", fields)
        Glibc.exit(128 + signalNumber)
      }
      defer { try? target.signal(process, SIGCONT) }
      try target.signal(process, SIGSTOP)
      let termNote = term.map { ", the leader in term \($0)," } ?? ""
      out.say(
        "paused \(id) (pid \(pid))\(termNote) with SIGSTOP for \(formatSeconds(length))",
        [
          "action": "pause", "node": id, "pid": Int(pid), "seconds": seconds(length),
          "term": term.map { Int($0) } as Any,
        ])
      let clock = ContinuousClock()
      let started = clock.now
      try? await Task.sleep(for: length)
      try target.signal(process, SIGCONT)
      out.say(
        "resumed \(id) (pid \(pid)) with SIGCONT after \(formatSeconds(clock.now - started))",
        ["action": "resume", "node": id, "pid": Int(pid)])
    }
  }
}

// MARK: - The cluster as chaos sees it

/// The cluster a chaos command works on (``ClusterTargets``) and a client that keeps answering
/// while nodes die.
struct ChaosCluster {
  let targets: ClusterTargets
  let client: TealClient

  var nodes: [ChaosNode] { targets.nodes }

  init(_ targets: ClusterTargets) throws {
    self.targets = targets
    client = try targets.client(for: targets.nodes, maxAttempts: max(2, targets.nodes.count))
  }

  /// Why there is no process to fault for `node`.
  func noProcess(_ node: ChaosNode, role: String = "") -> String {
    switch node.locator {
    case .layout(let layout):
      return "\(role)\(node.id) is not running (no live process in \(layout.pidFile(node.id))): "
        + targets.startHint
    case .config(let config):
      return "\(role)\(node.id) is not running on \(node.host.label) (no `teal node start` process with "
        + "--config \(config ?? "?"))"
    }
  }

  /// The node `name` names: a node id of the cluster, or `leader` (with its term).
  func resolveNode(_ name: String) async throws -> (node: ChaosNode, term: UInt64?) {
    var id = name
    var term: UInt64?
    if name == "leader" {
      let leader = try await leader()
      id = leader.id
      term = leader.term
    }
    guard let node = nodes.first(where: { $0.id == id }) else {
      throw CommandFailure(
        message: "no node \(id) in \(targets.description) (nodes: \(nodes.map(\.id).joined(separator: ", ")))")
    }
    return (node, term)
  }

  /// The leader and its term, as the cluster reports it; waits up to 30 s through an election.
  func leader() async throws -> (id: String, term: UInt64) {
    let clock = ContinuousClock()
    let deadline = clock.now + .seconds(30)
    var last = "no node answered"
    while true {
      do {
        let status = try await client.clusterStatus(stale: true)
        if let leader = status.leader { return (leader, status.term) }
        last = "no leader in term \(status.term)"
      } catch {
        last = "\(error)"
      }
      if clock.now >= deadline {
        throw CommandFailure(message: "\(targets.description) has no leader after 30 s (last: \(last))")
      }
      try await Task.sleep(for: .milliseconds(100))
    }
  }

  /// `id`, checked to exist, or the only deployment in progress.
  func resolveDeployment(_ id: String?) async throws -> String {
    if let id {
      do {
        return try await client.deployment(id, stale: true).id
      } catch let error as TealClientError where error.status == 404 {
        throw CommandFailure(message: "no deployment \(id) in \(targets.description)")
      } catch let error as TealClientError {
        throw CommandFailure(message: "cannot read deployment \(id): \(error)")
      }
    }
    let list: DeploymentList
    do { list = try await client.deployments(stale: true) } catch let error as TealClientError {
      throw CommandFailure(message: "cannot list the deployments: \(error)")
    }
    let active = list.deployments.filter { !DeploymentView.finalStatuses.contains($0.status) }
    switch active.count {
    case 0:
      throw CommandFailure(
        message:
          "no active deployment in \(targets.description) (start one with `teal deploy`, or give --deployment ID)"
      )
    case 1:
      return active[0].id
    default:
      throw CommandFailure(
        message: "\(active.count) deployments are in progress (\(active.map(\.id).joined(separator: ", "))): "
          + "give --deployment ID")
    }
  }

  /// Waits until `deployment` entered `stage` and `offset` passed since (its enteredAt, log time).
  func waitFor(
    deployment id: String, stage: LifecycleStage, offset: Duration, within: Duration, out: ChaosOutput
  ) async throws {
    let clock = ContinuousClock()
    let deadline = clock.now + within
    var first = true
    var said = false
    while true {
      if let view = try? await client.deployment(id, stale: true) {
        if let entered = view.stageTimeline.last(where: { $0.stage == stage.rawValue }) {
          if first && view.stage != stage.rawValue {
            throw CommandFailure(
              message: "deployment \(id) is already past \(stage.rawValue) (\(view.status) at \(view.stage ?? "-"))")
          }
          let target = entered.enteredAt.addingTimeInterval(seconds(offset))
          out.say(
            "deployment \(id) entered \(stage.rawValue) at \(TealJSON.formatDate(entered.enteredAt))"
              + (offset > .zero ? "; killing at \(TealJSON.formatDate(target))" : ""),
            [
              "action": "stage", "deployment": id, "stage": stage.rawValue,
              "enteredAt": TealJSON.formatDate(entered.enteredAt),
            ])
          let wait = target.timeIntervalSinceNow
          if wait > 0 { try await Task.sleep(for: .milliseconds(Int64(wait * 1000))) }
          return
        }
        if view.isFinished {
          throw CommandFailure(
            message: "deployment \(id) finished \(view.status) without entering \(stage.rawValue)"
              + (view.reason.map { " (\($0))" } ?? ""))
        }
        if !said {
          out.say(
            "waiting for deployment \(id) (\(view.status) at \(view.stage ?? "-")) to enter \(stage.rawValue)", nil)
          said = true
        }
      }
      first = false
      if clock.now >= deadline {
        throw CommandFailure(
          message: "deployment \(id) did not enter \(stage.rawValue) within \(formatSeconds(within))")
      }
      try await Task.sleep(for: .milliseconds(50))
    }
  }
}

/// The process groups in a node's task ledger whose leader is still the process recorded.
func liveTaskGroups(_ layout: ClusterLayout, _ id: String) -> [(group: pid_t, task: String)] {
  let ledger = taskDirectory(layout, id) + "/tasks.ledger"
  guard let data = FileManager.default.contents(atPath: ledger) else { return [] }
  return String(decoding: data, as: UTF8.self).split(whereSeparator: \.isNewline).compactMap { line in
    let fields = line.split(separator: " ", maxSplits: 2)
    guard fields.count == 3, let group = pid_t(fields[0]), group > 1, let start = UInt64(fields[1]) else { return nil }
    guard processStartTicks(group) == start else { return nil }
    return (group, String(fields[2]))
  }
}

/// The node's `taskDir` from its node.yaml, else the layout's.
func taskDirectory(_ layout: ClusterLayout, _ id: String) -> String {
  if let data = FileManager.default.contents(atPath: layout.configFile(id)),
    let object = try? Yams.load(yaml: String(decoding: data, as: UTF8.self)) as? [String: Any],
    let directory = object["taskDir"] as? String, !directory.isEmpty
  {
    return directory
  }
  return layout.taskDir(id)
}

/// Field 22 of /proc/PID/stat (start time in clock ticks since boot), or nil.
func processStartTicks(_ pid: pid_t) -> UInt64? {
  guard let data = FileManager.default.contents(atPath: "/proc/\(pid)/stat") else { return nil }
  let text = String(decoding: data, as: UTF8.self)
  guard let close = text.lastIndex(of: ")") else { return nil }
  let fields = text[text.index(after: close)...].split(separator: " ")
  return fields.count > 19 ? UInt64(fields[19]) : nil
}

// MARK: - Moments and durations

enum KillMoment {
  /// `STAGE` or `STAGE+OFFSET`.
  static func parseAt(_ text: String) throws -> (LifecycleStage, Duration) {
    let parts = text.split(separator: "+", maxSplits: 1, omittingEmptySubsequences: false).map(String.init)
    guard let stage = LifecycleStage(rawValue: parts[0]) else {
      throw ValidationError(
        "--at: unknown stage '\(parts[0])' (stages: \(LifecycleStage.allCases.map(\.rawValue).joined(separator: ", ")))"
      )
    }
    let offset = parts.count == 2 ? try parseChaosDuration(parts[1], option: "--at's offset") : .zero
    return (stage, offset)
  }
}

/// `500ms`, `5s`, `1.5s`, `2m`, `1h` (0...24 h).
func parseChaosDuration(_ text: String, option: String) throws -> Duration {
  let units: [(String, Double)] = [("ms", 0.001), ("s", 1), ("m", 60), ("h", 3600)]
  for (unit, scale) in units where text.hasSuffix(unit) {
    let number = text.dropLast(unit.count)
    guard !number.isEmpty, number.allSatisfy({ $0.isASCII && ($0.isNumber || $0 == ".") }),
      let value = Double(number), value.isFinite
    else { break }
    let total = value * scale
    guard total <= 86_400 else { throw ValidationError("\(option): at most 24h, got \(text)") }
    return .milliseconds(Int64((total * 1000).rounded()))
  }
  throw ValidationError("\(option): expected a duration such as 500ms, 5s, 1.5s, 2m or 1h, got '\(text)'")
}

func seconds(_ duration: Duration) -> Double {
  let (whole, fraction) = duration.components
  return Double(whole) + Double(fraction) / 1e18
}

func formatSeconds(_ duration: Duration) -> String { String(format: "%.1f s", seconds(duration)) }

/// Lines with their UTC time, or one JSON object per action.
struct ChaosOutput: Sendable {
  var json: Bool

  /// `fields` nil: a text-only note (not printed with --json).
  func say(_ text: String, _ fields: [String: Any]?, at time: Date = Date()) {
    let stamp = TealJSON.formatDate(time)
    if json {
      guard var object = fields else { return }
      object["at"] = stamp
      object = object.filter { !($0.value is NSNull) && !isNil($0.value) }
      if let data = try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]) {
        print(String(decoding: data, as: UTF8.self))
      }
    } else {
      print("\(stamp) \(text)")
    }
    fflush(nil)
  }

  private func isNil(_ value: Any) -> Bool {
    if case Optional<Any>.none = value as Any? { return true }
    let mirror = Mirror(reflecting: value)
    return mirror.displayStyle == .optional && mirror.children.isEmpty
  }
}

// MARK: - Signals

/// Signals delivered through a pipe that a plain `sigaction` handler writes: in force for the whole
/// process from the moment ``install(_:_:)`` returns, whichever thread the kernel picks (a Dispatch
/// signal source on Linux left a window in which SIGINT still had its default action and killed the
/// command before it could undo its fault). `body` runs on a thread of its own, once per signal.
enum SignalPipe {
  nonisolated(unsafe) private static var writeEnd: Int32 = -1

  static func install(_ signals: [Int32], _ body: @escaping @Sendable (Int32) -> Void) {
    var ends: [Int32] = [-1, -1]
    guard pipe(&ends) == 0 else { preconditionFailure("pipe() failed: \(String(cString: strerror(errno)))") }
    writeEnd = ends[1]
    let readEnd = ends[0]
    for signalNumber in signals {
      var action = sigaction()
      action.__sigaction_handler.sa_handler = { received in
        var byte = UInt8(truncatingIfNeeded: received)
        _ = write(SignalPipe.writeEnd, &byte, 1)
      }
      sigemptyset(&action.sa_mask)
      action.sa_flags = SA_RESTART
      sigaction(signalNumber, &action, nil)
    }
    let reader = Thread {
      var byte: UInt8 = 0
      while read(readEnd, &byte, 1) == 1 { body(Int32(byte)) }
    }
    reader.start()
  }
}
