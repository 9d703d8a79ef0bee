// `teal chaos run` on real nodes: an example scenario of Deploy/chaos runs against a fresh local
// cluster while the test watches on its own (every node's leader report, its own traffic on every
// listener, the deployment through the API), and the report must agree with what the test saw.
// CI runs two scenarios; TEAL_CHAOS_SCENARIOS=all runs every one but the soak, TEAL_CHAOS_SOAK=1
// the soak (TEAL_CHAOS_SEED, TEAL_CHAOS_DURATION).

import Foundation
import NIOConcurrencyHelpers
import TealTestSupport
import TealTraffic
import Testing

enum ChaosScenarios {
  /// The repository's Deploy/chaos directory.
  static let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent().appendingPathComponent("Deploy/chaos").path

  /// Short ones (bake 6 s or less): about 30 s each with the cluster's start.
  static let ci = ["kill-leader-bake", "pause-leader-bake"]
  static let soak = "random-soak"
  /// Scenarios with partition or loss faults (they need nftables).
  static let network: Set<String> = ["partition-leader-mid-shift", "loss-follower"]

  static var all: [String] {
    let files = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
    return files.filter { $0.hasSuffix(".yaml") && $0 != "web.yaml" }.map { String($0.dropLast(5)) }
      .filter { $0 != soak }.sorted()
  }

  /// `TEAL_CHAOS_SCENARIOS`: unset, the CI pair; `all`, every one but the soak; else a comma-separated list.
  static var selected: [String] {
    switch ProcessInfo.processInfo.environment["TEAL_CHAOS_SCENARIOS"] {
    case nil, "": ci
    case "all": all
    case let list?: list.split(separator: ",").map(String.init)
    }
  }
}

/// Leader reports of every node, each asked every 100 ms on its own (a paused node delays only its
/// own answers): (when, leader, term) each time the leader of the highest term reported in the last
/// 1.5 s changed.
final class LeaderLog: Sendable {
  private let changes = NIOLockedValueBox<[(at: Date, leader: String?, term: Int)]>([])
  private let latest = NIOLockedValueBox<[String: (at: Date, leader: String?, term: Int)]>([:])
  private let tasks = NIOLockedValueBox<[Task<Void, Never>]>([])

  func start(_ cluster: LocalCluster) {
    let changes = self.changes
    let latest = self.latest
    var started: [Task<Void, Never>] = []
    for id in cluster.ids {
      started.append(
        Task {
          while !Task.isCancelled {
            if let status = try? await cluster.api(id).cluster() {
              latest.withLockedValue { $0[id] = (Date(), status.leader, status.term) }
            }
            try? await Task.sleep(for: .milliseconds(100))
          }
        })
    }
    started.append(
      Task {
        while !Task.isCancelled {
          let now = Date()
          let fresh = latest.withLockedValue { Array($0.values) }.filter { now.timeIntervalSince($0.at) < 1.5 }
          if let top = fresh.map(\.term).max() {
            let leader = fresh.filter { $0.term == top }.compactMap(\.leader).first
            changes.withLockedValue { list in
              if list.last.map({ $0.leader != leader || $0.term != top }) ?? true, (list.last?.term ?? 0) <= top {
                list.append((now, leader, top))
              }
            }
          }
          try? await Task.sleep(for: .milliseconds(50))
        }
      })
    tasks.withLockedValue { $0 = started }
  }

  func stop() { tasks.withLockedValue { $0.forEach { $0.cancel() } } }

  var all: [(at: Date, leader: String?, term: Int)] { changes.withLockedValue { $0 } }

  /// The leader last reported before `moment`.
  func leader(at moment: Date) -> (leader: String?, term: Int)? {
    all.last(where: { $0.at <= moment }).map { ($0.leader, $0.term) }
  }
}

@Suite(
  "Chaos scenarios on real nodes (teal chaos run)", .serialized,
  .enabled(if: Binaries.missing == nil, "\(Binaries.missing ?? "")"))
struct ChaosScenarioTests {
  @Test(.timeLimit(.minutes(5)), arguments: ChaosScenarios.selected)
  func theScenarioPassesAndItsReportAgreesWithWhatTheTestObserved(_ name: String) async throws {
    if ChaosScenarios.network.contains(name), let why = NFTables.unusable {
      print("skipping \(name): \(why)")
      return
    }
    try await runScenario(name, extra: [], timeout: .seconds(240))
  }

  @Test(
    .enabled(if: ProcessInfo.processInfo.environment["TEAL_CHAOS_SOAK"] == "1", "set TEAL_CHAOS_SOAK=1 for the soak"),
    .timeLimit(.minutes(30)))
  func theRandomSoakPasses() async throws {
    let environment = ProcessInfo.processInfo.environment
    let seed = environment["TEAL_CHAOS_SEED"] ?? String(UInt32.random(in: 1...UInt32.max))
    print("soak seed \(seed) (replay with TEAL_CHAOS_SEED=\(seed))")
    try await runScenario(
      ChaosScenarios.soak, extra: ["--seed", seed, "--duration", environment["TEAL_CHAOS_DURATION"] ?? "10m"],
      timeout: .seconds(1500))
  }

  private func runScenario(_ name: String, extra: [String], timeout: Duration) async throws {
    try await withCluster { cluster in
      let ports = try ServicePorts(cluster)
      let leaders = LeaderLog()
      leaders.start(cluster)
      defer { leaders.stop() }
      let pidsBefore = Dictionary(uniqueKeysWithValues: cluster.ids.map { ($0, cluster.pid($0)) })
      let reportPath = "\(cluster.directory)/report.json"
      let htmlPath = "\(cluster.directory)/report.html"
      let log = "\(cluster.directory)/chaos-run.log"
      let chaos = try cluster.spawnTeal(
        [
          "chaos", "run", "\(ChaosScenarios.directory)/\(name).yaml", "--dir", cluster.directory, "--set",
          "productionPort=\(ports.production)", "--set", "testPort=\(ports.test)", "--report", reportPath, "--html",
          htmlPath,
        ] + extra, log: log)
      defer { killGroup(chaos, startTime: nil) }

      // The test's own traffic, once the scenario's service answers on every listener.
      let targets = productionTargets(cluster, ports)
      try await waitUntil("the scenario's service answers on every listener", timeout: .seconds(120)) {
        cluster.harvestLedgers()
        for target in targets {
          let connection = try await HTTPConnection.connect(host: target.host, port: target.port)
          defer { Task { await connection.close() } }
          guard try await connection.request(method: .GET, path: "/", timeout: .seconds(5)).status == 200 else {
            return false
          }
        }
        return true
      }
      let traffic = try TrafficGenerator(
        configuration: TrafficConfiguration(
          targets: targets, clientsPerTarget: 2, postFraction: 0, requestsPerSecondPerClient: 10,
          maximumDuration: timeout, requestTimeout: .seconds(10), maximumRecords: 1_000_000))
      traffic.start()
      var exit: ChildExit?
      try await waitUntil("teal chaos run \(name) exits", timeout: timeout, interval: .milliseconds(200)) {
        cluster.harvestLedgers()
        exit = reap(chaos)
        return exit != nil
      }
      await traffic.stop()
      cluster.harvestLedgers()
      // Nodes the scenario restarted are not our children: adopt them for the cleanup.
      for id in cluster.ids {
        if let pid = try? String(contentsOfFile: "\(cluster.node(id).directory)/node.pid", encoding: .utf8),
          pid_t(pid.trimmingCharacters(in: .whitespacesAndNewlines)) != pidsBefore[id] ?? nil
        {
          _ = try cluster.adopt(id)
        }
      }
      let output = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
      let data = try #require(FileManager.default.contents(atPath: reportPath), "no report; output:\n\(output)")
      let report = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
      let passed = report["passed"] as? Bool
      #expect(passed == true, "the scenario failed:\n\(output)")
      #expect(exit == .exited(passed == true ? 0 : 1), "exit \(String(describing: exit)):\n\(output)")

      // The deployment: the report's status, stages and bake are the API's.
      let deployments = try #require(report["deployments"] as? [[String: Any]])
      let first = try #require(deployments.first, "no deployment in the report:\n\(output)")
      let id = try #require(first["id"] as? String)
      let survivor = try #require(cluster.ids.first { cluster.isRunning($0) })
      let view = try await cluster.api(survivor).deployment(id)
      #expect(first["status"] as? String == view.status)
      let stages = (first["stages"] as? [[String: Any]] ?? []).compactMap { $0["stage"] as? String }
      #expect(stages == view.stages, "report stages \(stages), API \(view.stages)")
      let times = (first["stages"] as? [[String: Any]] ?? []).compactMap {
        ($0["enteredAt"] as? String).flatMap(parseAPIDate)
      }
      let apiTimes = view.stageTimeline.compactMap { parseAPIDate($0.enteredAt) }
      #expect(zip(times, apiTimes).allSatisfy { abs($0.timeIntervalSince($1)) < 0.002 }, "stage times differ")
      if let bakeStart = view.entered("BAKE_TIME"), let cleanUp = view.entered("CLEAN_UP") {
        let observed = ((first["bake"] as? [String: Any])?["observedSeconds"] as? NSNumber)?.doubleValue
        #expect(
          observed.map { abs($0 - cleanUp.timeIntervalSince(bakeStart)) < 0.01 } == true,
          "report bake \(String(describing: observed)), API \(cleanUp.timeIntervalSince(bakeStart))")
      }

      // Faults on the leader: the node the report names led when the fault began, as the test saw
      // it; the new leader the report names is the one the test saw next.
      var windows: [(node: String, from: Date, to: Date)] = []
      for fault in report["faults"] as? [[String: Any]] ?? [] {
        let summary = fault["summary"] as? String ?? ""
        #expect(fault["error"] == nil, "fault \(summary) not made: \(fault["error"] ?? "")")
        guard let start = (fault["startedAt"] as? String).flatMap(parseAPIDate) else { continue }
        for window in fault["windows"] as? [[String: Any]] ?? [] {
          guard let node = window["node"] as? String, let from = (window["from"] as? String).flatMap(parseAPIDate)
          else {
            continue
          }
          let to = (window["to"] as? String).flatMap(parseAPIDate) ?? .distantFuture
          windows.append((node, from, to))
        }
        guard fault["takesLeader"] as? Bool == true, fault["kind"] as? String != "restart-all" else { continue }
        let node = fault["node"] as? String
        let seen = leaders.leader(at: start)
        #expect(
          seen?.leader == node, "\(summary): the report names \(node ?? "-"), the test saw \(seen?.leader ?? "-") lead")
        let next = leaders.all.first { $0.at > start && $0.leader != nil && $0.leader != node }
        #expect(
          fault["newLeader"] as? String == next?.leader,
          "\(summary): the report's new leader \(fault["newLeader"] ?? "-"), the test's \(next?.leader ?? "-")")
        if let next, let reported = (fault["timeToLeaderSeconds"] as? NSNumber)?.doubleValue {
          #expect(abs(reported - next.at.timeIntervalSince(start)) < 1.0, "\(summary): times to a new leader differ")
        }
        if fault["kind"] as? String == "kill-leader", let node, summary.contains("restart") {
          #expect(cluster.pid(node) != pidsBefore[node] ?? nil, "\(node) was not restarted with a new PID")
        }
      }

      // The test's own requests: none failed at a listener outside its own node's process faults,
      // as the report says of its requests.
      let snapshot = traffic.snapshot()
      for target in targets {
        let node = try #require(cluster.ids.first { cluster.node($0).address == target.host })
        let failed = snapshot.records.filter { record in
          guard record.target == target, !record.outcome.isOK else { return false }
          let from = record.startDate
          let to = from.addingTimeInterval(record.latency.inSeconds)
          return !windows.contains { $0.node == node && from <= $0.to.addingTimeInterval(0.5) && to >= $0.from }
        }
        let shown = failed.prefix(3).map { "\($0.outcome) at \($0.startDate) (generation \($0.generation ?? -1))" }
        #expect(
          failed.isEmpty,
          "\(failed.count) of the test's own requests to \(target) failed outside faults, first: \(shown)")
        #expect(snapshot.summaries[target]?.ok ?? 0 > 0, "the test's own requests to \(target) got no answer")
      }
      for listener in report["listeners"] as? [[String: Any]] ?? [] {
        #expect(
          (listener["failedOutsideFaults"] as? NSNumber)?.intValue == 0,
          "the report counts failures at \(listener["listener"] ?? "?") outside faults")
      }
      let html = (try? String(contentsOfFile: htmlPath, encoding: .utf8)) ?? ""
      #expect(html.contains("<svg") && html.contains(id), "the HTML report lacks its plots or the deployment")
      #expect(NFTables.unusable != nil || !cluster.chaosTableExists(), "the scenario left its nftables table")
    }
  }
}

extension LocalCluster {
  /// Whether any `teal_` nftables table is left (a scenario removes its own at the end).
  func chaosTableExists() -> Bool {
    guard let executable = NFTables.executable, let listed = try? run(executable, ["list", "tables"]) else {
      return false
    }
    return listed.output.contains(tableHint)
  }

  /// The table name of this cluster's directory (as `teal chaos` computes it).
  var tableHint: String {
    var hash: UInt64 = 0xcbf2_9ce4_8422_2325
    for byte in directory.utf8 {
      hash ^= UInt64(byte)
      hash = hash &* 0x0000_0100_0000_01b3
    }
    return "teal_" + String(String(hash, radix: 16).prefix(12))
  }
}
