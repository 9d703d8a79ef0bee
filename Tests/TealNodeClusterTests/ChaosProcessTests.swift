// `teal chaos kill-task` and `teal chaos restart-all` against real nodes: a killed task is replaced,
// and a rolling restart (then one of every node at once) keeps the service serving everywhere and
// every acknowledged write.

import Foundation
import TealTestSupport
import Testing

@Suite(
  "Process faults on real nodes (teal chaos kill-task, restart-all)", .serialized,
  .enabled(if: Binaries.missing == nil, "\(Binaries.missing ?? "")"))
struct ChaosProcessTests {
  struct Written: Decodable { var version: UInt64 }
  struct Read: Decodable {
    var value: String?
    var version: UInt64
  }

  @Test(.timeLimit(.minutes(3)))
  func aKilledTaskIsReplacedAndRestartsRollingAndAtOnceKeepTheServiceAndEveryWrite() async throws {
    try await withCluster { cluster in
      let leader = try await cluster.waitForLeader()
      let ports = try ServicePorts(cluster)
      try await cluster.createWeb(
        DeploymentSpecs.yaml(version: 1, ports: ports), through: leader, count: 3, ports: ports)
      let victimNode = cluster.followers(of: leader)[0]
      let before = try await cluster.api(leader).get("/v1/tasks?service=web&node=\(victimNode)", as: TaskListView.self)
      let serving = before.tasks.first(where: \.isServing)
      let victim = try #require(serving, "no serving task on \(victimNode)")

      // kill-task: the task's process group dies; the cluster puts a new task in its place.
      let killed = try run(
        Binaries.teal, ["chaos", "kill-task", "web", "--node", victimNode, "--dir", cluster.directory, "--json"])
      #expect(killed.status == 0, "\(killed.output)")
      #expect(killed.output.contains(#""task":"\#(victim.id)""#), "\(killed.output)")
      try await waitUntil("a task replaces \(victim.id)", timeout: .seconds(60), interval: .milliseconds(200)) {
        let tasks = try await cluster.api(leader).get("/v1/tasks?service=web", as: TaskListView.self).tasks
        return tasks.filter(\.isServing).count == 3 && !tasks.contains { $0.id == victim.id && $0.isServing }
      }

      // Writes acknowledged before the restarts.
      var acknowledged: [String: UInt64] = [:]
      for index in 1...5 {
        acknowledged["before/\(index)"] = try await cluster.api(leader).call(
          .PUT, "/v1/variables/before/\(index)", body: #"{"value": "\#(index)"}"#, as: Written.self
        ).version
      }

      for mode in [[], ["--at-once"]] {
        let log = "\(cluster.directory)/restart-all\(mode.first ?? "").log"
        let restart = try cluster.spawnTeal(
          ["chaos", "restart-all", "--dir", cluster.directory, "--json"] + mode, log: log)
        defer { killGroup(restart, startTime: nil) }
        let exit = try await waitForChild(restart, "teal chaos restart-all \(mode)", timeout: .seconds(150))
        let output = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
        #expect(exit == .exited(0), "\(output)")
        let restarted = jsonLines(log).filter { $0["action"] as? String == "restart" }.compactMap {
          $0["node"] as? String
        }
        #expect(Set(restarted) == Set(cluster.ids), "\(output)")
        for id in cluster.ids { _ = try cluster.adopt(id) }
        let rejoined = jsonLines(log).filter { $0["action"] as? String == "rejoined" }
        #expect(!rejoined.isEmpty, "\(output)")
      }

      // Every node is back, every acknowledged write is still there (linearizable reads through
      // each node), and every listener serves web again.
      let newLeader = try await cluster.waitForLeader(expectUp: 3)
      for id in cluster.ids {
        for (path, version) in acknowledged.sorted(by: { $0.key < $1.key }) {
          let read = try await cluster.api(id).get("/v1/variables/\(path)", as: Read.self)
          #expect(read.version == version, "\(id): \(path) at \(read.version), acknowledged at \(version)")
        }
      }
      try await cluster.waitForServing("web", revision: "web:1", count: 3)
      try await cluster.waitForListeners(productionTargets(cluster, ports), revision: "web:1")
      #expect(cluster.ids.contains(newLeader))
    }
  }
}
