import ArgumentParser
import Foundation
import TealAPI
import TealClient

#if canImport(Glibc)
  import Glibc
#endif

// `teal chaos restart-all` and `teal chaos kill-task`: process faults on the cluster of --dir (by
// the PIDs `teal cluster up` recorded) or --targets (ChaosTargets.swift), and the task ledgers the
// nodes keep. Docs/CHAOS.md.

extension Chaos {
  struct RestartAll: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      commandName: "restart-all",
      abstract: "Restart every node: one at a time (followers first), or all at once.",
      discussion: """
        Rolling (the default): each node gets SIGTERM (it drains its listeners, stops its tasks and \
        exits; SIGKILL after --stop-timeout), is started again as `teal cluster up` does (with \
        --targets: by the node's start command), and the next \
        one waits until it is back: answering /ready, committed `up` and at the leader's applied \
        index. --at-once stops them all, then starts them all and waits for a leader with every node \
        up: every node restarts from its data directory.
        """)

    @Flag(name: .long, help: "Stop every node, then start them all (a whole-cluster restart).")
    var atOnce = false

    @Option(name: .long, help: ArgumentHelp("How long a node may take to stop before SIGKILL.", valueName: "duration"))
    var stopTimeout: String = "30s"

    @Option(
      name: .long, help: ArgumentHelp("How long a restarted node may take to be back (each).", valueName: "duration"))
    var rejoinTimeout: String = "60s"

    /// `--dir` or `--targets`.
    @OptionGroup var cluster: ClusterOptions

    @Flag(name: .long, help: "Print one JSON object per action instead of text.")
    var json = false

    func validate() throws {
      for (option, text) in [("--stop-timeout", stopTimeout), ("--rejoin-timeout", rejoinTimeout)] {
        let value = try parseChaosDuration(text, option: option)
        if value > .seconds(3600) { throw ValidationError("\(option) must be at most 1h, got \(text)") }
      }
    }

    func run() async throws {
      let cluster = try ChaosCluster(try self.cluster.load())
      defer { Task { await cluster.client.shutdown() } }
      let out = ChaosOutput(json: json)
      let stopWithin = try parseChaosDuration(stopTimeout, option: "--stop-timeout")
      let rejoinWithin = try parseChaosDuration(rejoinTimeout, option: "--rejoin-timeout")
      let running = try cluster.nodes.map { node -> (node: ChaosNode, process: NodeProcess) in
        guard let process = try node.process() else { throw CommandFailure(message: cluster.noProcess(node)) }
        return (node, process)
      }
      let clock = ContinuousClock()
      let started = clock.now
      if atOnce {
        try await restart(running, cluster: cluster, stopWithin: stopWithin, out: out)
        let status = try await cluster.waitForAll(up: cluster.nodes.map(\.id), within: rejoinWithin)
        out.say(
          "every node is back: leader \(status.leader ?? "?") in term \(status.term)",
          ["action": "rejoined", "nodes": cluster.nodes.map(\.id), "leader": status.leader as Any])
      } else {
        let leader = try? await cluster.leader()
        // Followers first, the leader last: one election instead of up to three.
        let order =
          running.filter { $0.node.id != leader?.id } + running.filter { $0.node.id == leader?.id }
        for entry in order {
          try await restart([entry], cluster: cluster, stopWithin: stopWithin, out: out)
          let node = entry.node
          let status = try await cluster.waitForRejoin(node.id, within: rejoinWithin)
          out.say(
            "\(node.id) is back (applied index \(status.applied), leader \(status.leader))",
            ["action": "rejoined", "node": node.id, "appliedIndex": Int(status.applied), "leader": status.leader])
        }
      }
      out.say(
        "restarted \(running.count) nodes \(atOnce ? "at once" : "one at a time") in \(formatSeconds(clock.now - started))",
        ["action": "done", "seconds": seconds(clock.now - started)])
    }

    private func restart(
      _ nodes: [(node: ChaosNode, process: NodeProcess)], cluster: ChaosCluster, stopWithin: Duration,
      out: ChaosOutput
    ) async throws {
      for entry in nodes {
        out.say(
          "stopping \(entry.node.id) (pid \(entry.process.pid)) with SIGTERM",
          ["action": "stop", "node": entry.node.id, "pid": Int(entry.process.pid)])
      }
      let killed = await stopNodeProcesses(nodes, timeout: stopWithin)
      for id in killed {
        out.say("\(id) did not stop within \(formatSeconds(stopWithin)): SIGKILL", ["action": "kill", "node": id])
      }
      for entry in nodes {
        let started = try entry.node.start()
        out.say(
          "started \(entry.node.id) (\(started.note))",
          ["action": "restart", "node": entry.node.id, "pid": started.pid.map { Int($0) } as Any])
      }
    }
  }

  struct KillTask: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      commandName: "kill-task",
      abstract: "kill -9 one running task of a service (its process group), on a node if given.",
      discussion: """
        The task is one the cluster reports running for SERVICE (on --node N if given); its process \
        group comes from that node's task ledger (checked to still be that process). The node sees \
        the exit and the cluster replaces the task.
        """)

    @Argument(help: "The service whose task to kill.")
    var service: String

    @Option(name: .long, help: "Only a task placed on this node.")
    var node: String?

    /// `--dir` or `--targets`.
    @OptionGroup var cluster: ClusterOptions

    @Flag(name: .long, help: "Print one JSON object per action instead of text.")
    var json = false

    func run() async throws {
      let cluster = try ChaosCluster(try self.cluster.load())
      defer { Task { await cluster.client.shutdown() } }
      let out = ChaosOutput(json: json)
      let tasks: [TaskView]
      do { tasks = try await cluster.client.tasks(service: service, node: node, stale: true).tasks } catch {
        throw CommandFailure(message: "cannot list the tasks of \(service): \(error)")
      }
      let running = tasks.filter { $0.state == .running && $0.desired == .running }
      for task in running {
        guard let host = cluster.targets.node(task.node),
          let group = try host.taskGroups().first(where: { $0.task == task.id })
        else { continue }
        host.killTaskGroups([group.group])
        out.say(
          "killed task \(task.id) of \(service) on \(task.node) (pgid \(group.group)) with SIGKILL",
          ["action": "kill-task", "service": service, "task": task.id, "node": task.node, "pgid": Int(group.group)])
        return
      }
      let scope = node.map { " on \($0)" } ?? ""
      throw CommandFailure(
        message: running.isEmpty
          ? "no running task of \(service)\(scope) (\(tasks.count) task(s) in other states)"
          : "no running task of \(service)\(scope) has a live process in its node's task ledger")
    }
  }
}

extension ChaosCluster {
  /// Waits until `id` answers /ready, is committed `up` and has applied the leader's commit index
  /// (as it was when the wait began); returns that index and the leader.
  func waitForRejoin(_ id: String, within: Duration) async throws -> (applied: UInt64, leader: String) {
    guard let member = targets.node(id) else { preconditionFailure("unknown node \(id)") }
    let own = try targets.client(for: [member], maxAttempts: 1)
    defer { Task { await own.shutdown() } }
    let clock = ContinuousClock()
    let deadline = clock.now + within
    var target: UInt64?
    var last = "it has not answered yet"
    while clock.now < deadline {
      do {
        let cluster = try await client.clusterStatus(stale: true)
        if target == nil, cluster.leader != nil { target = cluster.commitIndex }
        let mine = try await own.clusterStatus(stale: true)
        let up = cluster.members.first(where: { $0.id == id })?.state == .up
        if let leader = cluster.leader, let target, up, mine.appliedIndex >= target {
          return (mine.appliedIndex, leader)
        }
        last = "committed \(up ? "up" : "down"), applied \(mine.appliedIndex) of \(target.map(String.init) ?? "?")"
      } catch {
        last = "\(error)"
      }
      try await Task.sleep(for: .milliseconds(200))
    }
    throw CommandFailure(
      message: "\(id) is not back after \(formatSeconds(within)) (\(last)); \(member.logHint)")
  }

  /// Waits until some node reports a leader with every node in `ids` committed `up`.
  func waitForAll(up ids: [String], within: Duration) async throws -> ClusterStatus {
    let clock = ContinuousClock()
    let deadline = clock.now + within
    var last = "no node answered"
    while clock.now < deadline {
      do {
        let status = try await client.clusterStatus(stale: true)
        let down = ids.filter { id in status.members.first(where: { $0.id == id })?.state != .up }
        if status.leader != nil, down.isEmpty { return status }
        last = status.leader == nil ? "no leader" : "down: \(down.joined(separator: ", "))"
      } catch {
        last = "\(error)"
      }
      try await Task.sleep(for: .milliseconds(200))
    }
    throw CommandFailure(message: "the cluster is not back after \(formatSeconds(within)) (\(last))")
  }
}
