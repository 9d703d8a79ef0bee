// `teal chaos --targets FILE` against real nodes that no `teal cluster up` laid out: the test
// harness starts them, removes cluster.yaml and every node.pid, and describes them only in a
// targets file. Two nodes are "this machine" (found by their --config path in /proc); the third is
// reached through an exec prefix, a wrapper script that logs every command line and runs it, so the
// test sees that its faults (the process lookup, nft, kill, the start command) really go through it.

import Foundation
import TealTestSupport
import Testing

#if canImport(Glibc)
  import Glibc
#endif

@Suite(
  "Chaos on a cluster described by a targets file", .serialized,
  .enabled(if: Binaries.missing == nil, "\(Binaries.missing ?? "")"))
struct ChaosTargetsTests {
  struct Written: Decodable { var version: UInt64 }

  @Test(.timeLimit(.minutes(3)))
  func localAndExecPrefixNodesGetRealProcessAndNetworkFaults() async throws {
    try await withCluster { cluster in
      let leader = try await cluster.waitForLeader()
      let followers = cluster.followers(of: leader)
      let (local, remote) = (followers[0], followers[1])
      // A node a start command started is not the harness's child: killed by PID here, on every
      // path, after checking its command line names this cluster's config.
      defer {
        for id in cluster.ids {
          for pid in nodeProcesses(config: cluster.node(id).configPath) { kill(pid, SIGKILL) }
        }
      }
      // Nothing of a `teal cluster up` directory is left for chaos to read.
      try FileManager.default.removeItem(atPath: "\(cluster.directory)/cluster.yaml")
      for id in cluster.ids { try? FileManager.default.removeItem(atPath: "\(cluster.node(id).directory)/node.pid") }

      let work = "\(cluster.directory)/targets-work"
      try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)
      let execLog = "\(work)/exec.log"
      let wrapper = "\(work)/exec.sh"
      try """
      #!/bin/sh
      printf '%s\\n---\\n' "$1" >> \(execLog)
      exec /bin/sh -c "$1"

      """.write(toFile: wrapper, atomically: true, encoding: .utf8)
      chmod(wrapper, 0o755)
      var targets = "token: \(cluster.token)\nnodes:\n"
      for id in cluster.ids {
        let node = cluster.node(id)
        let start =
          "setsid \(Binaries.teal) node start --config \(node.configPath) >> \(node.logPath) 2>&1 < /dev/null &"
        targets += """
            - id: \(id)
              api: http://\(node.address):\(cluster.apiPort)
              address: \(node.address)
              peerPort: \(cluster.peerPort)
              config: \(node.configPath)
              start: "\(start)"

          """
        if id == remote { targets += "    exec: [\(wrapper)]\n" }
      }
      let targetsFile = "\(work)/targets.yaml"
      try targets.write(toFile: targetsFile, atomically: true, encoding: .utf8)
      func execCommands() -> String { (try? String(contentsOfFile: execLog, encoding: .utf8)) ?? "" }
      func output(_ log: String) -> String { (try? String(contentsOfFile: log, encoding: .utf8)) ?? "" }

      // (1) A partition of the exec node: its rules go in through the prefix, really stop its peer
      // traffic, and are removed when the time is up.
      if NFTables.unusable == nil {
        let log = "\(work)/partition.log"
        let partition = try cluster.spawnTeal(
          ["chaos", "partition", remote, "--for", "8s", "--targets", targetsFile, "--json"], log: log)
        defer { killGroup(partition, startTime: nil) }
        var table = ""
        try await waitUntil("the partition is installed", timeout: .seconds(20)) {
          table = jsonLines(log).first { $0["action"] as? String == "partition" }?["table"] as? String ?? ""
          return !table.isEmpty
        }
        #expect(NFTables.hasTable(table), "no nftables table \(table) while the fault is on")
        #expect(execCommands().contains("-f"), "nft -f did not go through the prefix:\n\(execCommands())")
        #expect(execCommands().contains(table))
        var target: UInt64 = 0
        for index in 1...3 {
          target = try await cluster.api(leader).call(
            .PUT, "/v1/variables/targets/\(index)", body: #"{"value": "v"}"#, as: Written.self
          ).version
        }
        func applied() async throws -> UInt64 {
          try await cluster.api(remote).get("/v1/cluster/state?stale=true", as: StateDigestView.self).appliedIndex
        }
        let clock = ContinuousClock()
        let window = clock.now + .seconds(3)
        while clock.now < window {
          let seen = try await applied()
          #expect(seen < target, "\(remote) applied \(seen) ≥ \(target) while partitioned")
          try await Task.sleep(for: .milliseconds(200))
        }
        let exit = try await waitForChild(partition, "teal chaos partition --targets", timeout: .seconds(30))
        #expect(exit == .exited(0), "\(output(log))")
        #expect(!NFTables.hasTable(table), "the table outlived the partition")
        #expect(execCommands().contains("delete"), "the table was not removed through the prefix")
        try await waitUntil("\(remote) catches up after the partition", timeout: .seconds(20)) {
          try await applied() >= target
        }
      }

      // (2) A pause of a node on this machine: the real process is stopped, then resumed.
      let pid = try #require(cluster.pid(local))
      let pauseLog = "\(work)/pause.log"
      let pause = try cluster.spawnTeal(
        ["chaos", "pause", local, "--for", "3s", "--targets", targetsFile, "--json"], log: pauseLog)
      defer { killGroup(pause, startTime: nil) }
      try await waitUntil("\(local) is paused", timeout: .seconds(20)) {
        jsonLines(pauseLog).contains { $0["action"] as? String == "pause" }
      }
      let paused = jsonLines(pauseLog).first { $0["action"] as? String == "pause" }
      #expect(paused?["pid"] as? Int == Int(pid), "\(output(pauseLog))")
      #expect(processState(pid) == "T", "\(local) (pid \(pid)) is not stopped during the pause")
      let pauseExit = try await waitForChild(pause, "teal chaos pause --targets", timeout: .seconds(30))
      #expect(pauseExit == .exited(0), "\(output(pauseLog))")
      #expect(processState(pid) != "T", "\(local) is still stopped after the pause")

      // A pause of the exec node: found, stopped and resumed through the prefix.
      let remotePID = try #require(cluster.pid(remote))
      let remotePauseLog = "\(work)/pause-remote.log"
      let remotePause = try cluster.spawnTeal(
        ["chaos", "pause", remote, "--for", "2s", "--targets", targetsFile, "--json"], log: remotePauseLog)
      defer { killGroup(remotePause, startTime: nil) }
      try await waitUntil("\(remote) is paused", timeout: .seconds(20)) {
        jsonLines(remotePauseLog).contains { $0["action"] as? String == "pause" }
      }
      #expect(processState(remotePID) == "T", "\(remote) (pid \(remotePID)) is not stopped during the pause")
      let remotePauseExit = try await waitForChild(remotePause, "teal chaos pause (exec)", timeout: .seconds(30))
      #expect(remotePauseExit == .exited(0), "\(output(remotePauseLog))")
      #expect(processState(remotePID) != "T", "\(remote) is still stopped after the pause")
      #expect(execCommands().contains("kill -s STOP \(remotePID)"), "\(execCommands())")
      #expect(execCommands().contains("kill -s CONT \(remotePID)"), "\(execCommands())")
      #expect(execCommands().contains(cluster.node(remote).configPath), "the lookup did not go through the prefix")

      // (3) kill-leader, whichever node leads now (through the prefix if it is the exec node), and
      // its start command after 1 s.
      let killed = try await cluster.waitForLeader()
      let killedPID = try #require(cluster.pid(killed))
      let killLog = "\(work)/kill.log"
      let kill = try cluster.spawnTeal(
        ["chaos", "kill-leader", "--restart-after", "1s", "--targets", targetsFile, "--json"], log: killLog)
      defer { killGroup(kill, startTime: nil) }
      let killExit = try await waitForChild(kill, "teal chaos kill-leader --targets", timeout: .seconds(60))
      #expect(killExit == .exited(0), "\(output(killLog))")
      let line = jsonLines(killLog).first { $0["action"] as? String == "kill" }
      #expect(line?["node"] as? String == killed, "\(output(killLog))")
      #expect(line?["pid"] as? Int == Int(killedPID), "\(output(killLog))")
      try await waitUntil("the killed leader's process is gone", timeout: .seconds(10)) {
        !cluster.isRunning(killed)
      }
      #expect(execCommands().contains("kill -s KILL") == (killed == remote), "\(execCommands())")
      #expect(execCommands().contains("setsid") == (killed == remote), "\(execCommands())")
      // The restarted node, for cleanup by PID like the others.
      let node = cluster.node(killed)
      var restarted: pid_t = 0
      try await waitUntil("the start command started \(killed) again", timeout: .seconds(20)) {
        restarted = nodeProcesses(config: node.configPath).first ?? 0
        return restarted > 0
      }
      try "\(restarted)\n".write(toFile: "\(node.directory)/node.pid", atomically: true, encoding: .utf8)
      _ = try cluster.adopt(killed)
      try await cluster.waitForLeader(expectUp: 3)

      // Only the exec node's commands went through the prefix.
      for id in cluster.ids where id != remote {
        #expect(!execCommands().contains(cluster.node(id).configPath), "\(id)'s commands went through the prefix")
      }
    }
  }

  @Test func aBadTargetsFileIsRefusedNamingTheField() throws {
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent(
      "teal-targets-\(UUID().uuidString.prefix(8))"
    ).path
    try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: directory) }
    let file = "\(directory)/targets.yaml"
    try "nodes:\n  - {id: n1, api: 'http://127.0.0.1:1', address: 127.0.0.1, peerPort: 99999}\n".write(
      toFile: file, atomically: true, encoding: .utf8)
    let result = try run(Binaries.teal, ["chaos", "pause", "n1", "--for", "1s", "--targets", file])
    #expect(result.status != 0)
    #expect(result.output.contains("nodes[0].peerPort: must be in 1...65535"), "\(result.output)")
    let scenario = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
      .deletingLastPathComponent().appendingPathComponent("Deploy/chaos/kill-leader-bake.yaml").path
    let scenarioRun = try run(Binaries.teal, ["chaos", "run", scenario, "--targets", file])
    #expect(scenarioRun.status != 0)
    #expect(scenarioRun.output.contains("nodes[0].peerPort"), "\(scenarioRun.output)")
    let both = try run(Binaries.teal, ["chaos", "heal", "--targets", file, "--dir", directory])
    #expect(both.status != 0)
    #expect(both.output.contains("give --dir or --targets, not both"), "\(both.output)")
  }
}

/// The PIDs of `teal node start --config CONFIG` processes (not zombies).
func nodeProcesses(config: String) -> [pid_t] {
  let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
  return entries.compactMap { entry -> pid_t? in
    guard let pid = pid_t(entry), let data = FileManager.default.contents(atPath: "/proc/\(entry)/cmdline") else {
      return nil
    }
    let arguments = data.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
    guard arguments.first.map({ URL(fileURLWithPath: $0).lastPathComponent == "teal" }) == true,
      arguments.contains(config), processState(pid) != "Z"
    else { return nil }
    return pid
  }
}
