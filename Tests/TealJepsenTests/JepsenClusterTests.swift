// The Jepsen-style run against three real `teal node start` processes: a short one in CI (at most
// 90 s in all), a long one with TEAL_JEPSEN_SECONDS=600 (TEAL_JEPSEN_SEED replays the choices,
// TEAL_JEPSEN_HISTORY=path keeps the history's JSON). Then a real stale read: a `?stale=true`
// read through a partitioned follower, which the checker rejects.

import Foundation
import NIOConcurrencyHelpers
import TealJepsen
import TealTestSupport
import Testing

#if canImport(Glibc)
  import Glibc
#endif

enum JepsenEnvironment {
  static let seconds = ProcessInfo.processInfo.environment["TEAL_JEPSEN_SECONDS"].flatMap(Double.init)
  static let seed = ProcessInfo.processInfo.environment["TEAL_JEPSEN_SEED"].flatMap(UInt64.init)
  static let historyPath = ProcessInfo.processInfo.environment["TEAL_JEPSEN_HISTORY"]
}

@Suite(
  "Jepsen-style run on real nodes", .serialized,
  .enabled(if: Binaries.missing == nil, "\(Binaries.missing ?? "")"))
struct JepsenClusterTests {
  @Test(.timeLimit(.minutes(20)))
  func variablesStayLinearizableAndDeploymentsKeepTheirInvariantsUnderKillsPausesAndPartitions() async throws {
    let long = JepsenEnvironment.seconds
    let seed = JepsenEnvironment.seed ?? UInt64.random(in: 1...UInt64(UInt32.max))
    // The short run: 30 s of faults, so that start, set-up, the last deployment, the final reads,
    // the checks and the stale-read demonstration fit in 90 s.
    var configuration = RunConfiguration(seconds: long ?? 30, seed: seed)
    if long == nil { configuration.deploymentGrace = .seconds(10) }
    let wall = ContinuousClock.now
    let cluster = try RealCluster()
    var keep = false
    defer {
      BridgeTable().remove()
      _ = try? run(Binaries.teal, ["chaos", "heal", "--dir", cluster.directory])
      cluster.destroy(keepDirectory: keep)
      let ours = NFTables.tables().filter { $0 == BridgeTable().name }
      #expect(ours.isEmpty, "nftables tables left behind: \(ours)")
    }
    do {
      let result = try await jepsenRun(cluster, configuration)
      let elapsed = ContinuousClock.now - wall
      print(
        "jepsen: seed \(seed), \(configuration.seconds) s of faults, \(elapsed) in all; "
          + "\(result.history.operations.count) operations, \(result.history.faults.count) faults "
          + "\(faultCounts(result.history.faults)); \(result.report.summary); deployments \(result.deployments); "
          + "\(result.observations) observations; invariant violations: \(result.invariantViolations); "
          + "phases: \(result.phases.map { "\($0.0) \(String(format: "%.1f", $0.1)) s" }); "
          + "controllers by term: \(result.controllersByTerm.sorted { $0.key < $1.key }.map { "\($0.key): \($0.value.sorted())" }); "
          + "history: \(result.historyPath)")
      #expect(result.report.verdict == .linearizable, "\(result.report.summary) (seed \(seed))")
      #expect(result.invariantViolations.isEmpty, "\(result.invariantViolations) (seed \(seed))")
      #expect(result.history.faults.count >= 3, "the nemesis injected \(result.history.faults.count) faults")
      if configuration.deployments {
        #expect(!result.deployments.isEmpty, "no deployment ran")
      }
      try await staleReadThroughAPartitionedFollowerFailsTheCheck(cluster)
      if long == nil {
        #expect(elapsed < .seconds(90), "the short run took \(elapsed)")
      }
      if result.report.verdict != .linearizable || !result.invariantViolations.isEmpty { keep = true }
    } catch {
      print("jepsen run failed: \(error)\n\(cluster.logTails())\n(directory kept: \(cluster.directory))")
      keep = true
      throw error
    }
  }
}

func faultCounts(_ faults: [JepsenFault]) -> [String: Int] {
  var counts: [String: Int] = [:]
  for fault in faults { counts[fault.kind, default: 0] += 1 }
  return counts
}

/// Waits until every node reports the same leader and every member up.
func waitForLeader(_ cluster: RealCluster, timeout: Duration) async throws -> String {
  let deadline = ContinuousClock.now + timeout
  var last = ""
  while ContinuousClock.now < deadline {
    var seen: Set<String> = []
    var allUp = true
    for id in cluster.ids {
      guard let status = try? await cluster.api(id).get("/v1/cluster", as: ClusterStatusView.self, timeout: .seconds(2))
      else {
        allUp = false
        break
      }
      seen.insert(status.leader ?? "")
      allUp = allUp && status.members.filter { $0.state == "up" }.count == cluster.ids.count
    }
    if allUp, seen.count == 1, let only = seen.first, !only.isEmpty { return only }
    last = "leaders \(seen.sorted()), all up: \(allUp)"
    try await Task.sleep(for: .milliseconds(100))
  }
  throw HarnessError(description: "no agreed leader with every member up within \(timeout); \(last)")
}

/// The run: start, set up `web`, clients + nemesis + deployments for `seconds`, heal, final reads,
/// then the checks.
func jepsenRun(_ cluster: RealCluster, _ configuration: RunConfiguration) async throws -> RunResult {
  var phases: [(String, Double)] = []
  var mark = ContinuousClock.now
  func phase(_ name: String) {
    let now = ContinuousClock.now
    phases.append((name, Double((now - mark).components.attoseconds) / 1e18 + Double((now - mark).components.seconds)))
    mark = now
  }
  try cluster.startAll()
  _ = try await waitForLeader(cluster, timeout: .seconds(40))
  let recorder = Recorder()
  let observer = DeploymentObserver()
  let hosts = cluster.nodes.map(\.address)
  let ports = (try FreePorts.pick(on: hosts), try FreePorts.pick(on: hosts))
  if configuration.deployments {
    _ = try await submitEverywhere(
      cluster, "/v1/services", body: webSpec(version: 1, production: ports.0, test: ports.1), expect: 201,
      timeout: .seconds(20))
    let deadline = ContinuousClock.now + .seconds(30)
    while true {
      let view = try? await cluster.api(cluster.ids[0]).get("/v1/services/web", as: ServiceView.self)
      let serving = view?.tasks.filter { $0.desired == "running" && $0.state == "running" && $0.healthy == true }
      if (serving?.count ?? 0) >= 2 { break }
      if ContinuousClock.now > deadline { throw HarnessError(description: "web:1 never served 2 tasks") }
      try await Task.sleep(for: .milliseconds(200))
    }
  }

  phase("set-up")
  let stop = NIOLockedValueBox(false)
  let started = NIOLockedValueBox<[String]>([])
  let deployments = NIOLockedValueBox<[String: String]>([:])
  try await withThrowingTaskGroup(of: Void.self) { group in
    for index in 0..<configuration.clients {
      group.addTask { await runClient(index, cluster, recorder, configuration: configuration, stop: stop) }
    }
    group.addTask { try await runNemesis(cluster, recorder, configuration: configuration, stop: stop) }
    if configuration.deployments {
      group.addTask { await runObserver(cluster, observer, stop: stop) { started.withLockedValue { $0 } } }
      group.addTask {
        let driverStop = NIOLockedValueBox(false)
        // The driver stops starting deployments with the clients, and waits for its last one to end.
        let watcher = Task {
          while !stop.withLockedValue({ $0 }) { try? await Task.sleep(for: .milliseconds(100)) }
          driverStop.withLockedValue { $0 = true }
        }
        defer { watcher.cancel() }
        let results = try await runDeploymentsRecording(
          cluster, observer: observer, ports: ports, stop: driverStop, started: started,
          grace: configuration.deploymentGrace)
        deployments.withLockedValue { $0 = results }
      }
    }
    group.addTask {
      try await Task.sleep(for: .milliseconds(Int64(configuration.seconds * 1000)))
      stop.withLockedValue { $0 = true }
    }
    try await group.waitForAll()
  }
  phase("faults")
  // Every fault is undone; every node runs again. Wait for the cluster to settle, then read every
  // key through every node (these reads are part of the history: no acknowledged write may be lost).
  for id in cluster.ids where cluster.pid(id) == nil { try cluster.start(id) }
  _ = try await waitForLeader(cluster, timeout: .seconds(60))
  let finalConfiguration = configuration
  var finals: [String: UInt64] = [:]
  for key in (0..<configuration.keys).map({ "k\($0)" }) {
    for id in cluster.ids {
      var read: JepsenOperation?
      for _ in 0..<20 {
        read = await performOperation(
          cluster, recorder, configuration: finalConfiguration, process: 1000, node: id, key: key, kind: .read,
          value: nil, expected: nil)
        if read?.outcome == .ok { break }
        try await Task.sleep(for: .milliseconds(250))
      }
      guard let read, read.outcome == .ok else {
        throw HarnessError(
          description: "no final read of \(key) through \(id): \(read.map(String.init(describing:)) ?? "-")")
      }
      finals[key] = max(finals[key] ?? 0, read.version ?? 0)
    }
  }

  phase("settle and final reads")
  var violations = observer.violations
  // No acknowledged write lost: the last version read of each key is at least every version a
  // write of it was acknowledged with.
  for operation in recorder.operations where operation.kind != .read && operation.outcome == .ok {
    if let version = operation.version, version > finals[operation.key] ?? 0 {
      violations.append(
        "acknowledged write lost: \(operation) but the final reads of \(operation.key) are at \(finals[operation.key] ?? 0)"
      )
    }
  }
  let results = deployments.withLockedValue { $0 }
  if configuration.deployments {
    let events = try await allEvents(cluster)
    var blueOf: [String: String] = [:]
    for id in results.keys {
      if let view = try? await cluster.api(cluster.ids[0]).get("/v1/deployments/\(id)", as: DeploymentView.self) {
        blueOf[id] = view.blue
      }
    }
    violations += checkBlueKeptUntilCleanUp(events: events, deployments: results, blueOf: blueOf)
  }

  phase("invariants")
  let history = JepsenHistory(
    operations: recorder.operations, faults: recorder.faults,
    notes: [
      "seed": "\(configuration.seed)", "seconds": "\(configuration.seconds)", "clients": "\(configuration.clients)",
      "keys": "\(configuration.keys)", "load": loadAverage(),
    ])
  let path = JepsenEnvironment.historyPath ?? "\(cluster.directory)/history.json"
  try history.encoded().write(to: URL(fileURLWithPath: path))
  // The check reads back what was written: the JSON is the record.
  let recorded = try JepsenHistory.decode(Data(contentsOf: URL(fileURLWithPath: path)))
  let report = LinearizabilityCheck.check(recorded, budget: CheckBudget(maximumSteps: 200_000_000, maximumSeconds: 120))
  phase("check")
  return RunResult(
    history: recorded, report: report, invariantViolations: violations, deployments: results,
    controllersByTerm: observer.controllers, observations: observer.observations, historyPath: path, phases: phases)
}

/// `runDeployments`, publishing each started deployment's id for the observer.
func runDeploymentsRecording(
  _ cluster: RealCluster, observer: DeploymentObserver, ports: (Int, Int), stop: NIOLockedValueBox<Bool>,
  started: NIOLockedValueBox<[String]>, grace: Duration
) async throws -> [String: String] {
  var results: [String: String] = [:]
  var version = 1
  while !stop.withLockedValue({ $0 }) {
    version += 1
    let response = try await submitEverywhere(
      cluster, "/v1/services/web/deployments", body: webSpec(version: version, production: ports.0, test: ports.1),
      expect: 201, timeout: .seconds(60))
    let submitted = try JSONDecoder().decode(DeploymentView.self, from: Data(response.body))
    started.withLockedValue { $0.append(submitted.id) }
    results[submitted.id] = "IN_PROGRESS"
    // Past the stop, the last deployment gets at most `grace` more to finish.
    var stopDeadline: ContinuousClock.Instant?
    while true {
      if stop.withLockedValue({ $0 }) && stopDeadline == nil { stopDeadline = ContinuousClock.now + grace }
      if let stopDeadline, ContinuousClock.now > stopDeadline { break }
      if let latest = observer.latest(submitted.id), latest.isFinished {
        results[submitted.id] = latest.status
        break
      }
      try await Task.sleep(for: .milliseconds(200))
    }
    if results[submitted.id] == "IN_PROGRESS" { break }
  }
  return results
}

func loadAverage() -> String {
  (try? String(contentsOfFile: "/proc/loadavg", encoding: .utf8))?.split(separator: " ").prefix(3).joined(
    separator: " ") ?? "?"
}

/// A real stale read: write `before`, partition a follower (`teal chaos partition`, the real
/// binary), write `after` through the leader, then read through the follower with `?stale=true`:
/// it answers from its own state, `before`, after `after` was acknowledged. The checker must reject
/// that history, and accept it without the stale read.
func staleReadThroughAPartitionedFollowerFailsTheCheck(_ cluster: RealCluster) async throws {
  guard NFTables.usable else {
    print("stale-read demonstration skipped: nftables cannot be used here")
    return
  }
  let leader = try await waitForLeader(cluster, timeout: .seconds(30))
  let follower = cluster.ids.first { $0 != leader }!
  let recorder = Recorder()
  let configuration = RunConfiguration(seconds: 0, seed: 1, requestTimeout: .seconds(3))
  func op(_ node: String, _ kind: JepsenOperation.Kind, value: String? = nil, stale: Bool = false) async
    -> JepsenOperation?
  {
    await performOperation(
      cluster, recorder, configuration: configuration, process: stale ? 1 : 0, node: node, key: "stale", kind: kind,
      value: value, expected: nil, stale: stale)
  }
  let before = await op(leader, .write, value: "before")
  #expect(before?.outcome == .ok, "\(before.map(String.init(describing:)) ?? "-")")
  let deadline = ContinuousClock.now + .seconds(10)
  while ContinuousClock.now < deadline {
    if let read = await op(follower, .read, stale: true), read.readValue == "before" { break }
    try await Task.sleep(for: .milliseconds(100))
  }
  let log = "\(cluster.directory)/stale-partition.log"
  let pid = try spawnInOwnGroup(
    Binaries.teal, ["chaos", "partition", follower, "--for", "20s", "--dir", cluster.directory, "--json"],
    logPath: log)
  defer {
    kill(pid, SIGINT)
    let until = ContinuousClock.now + .seconds(5)
    while reap(pid) == nil && ContinuousClock.now < until { usleep(20_000) }
    killGroup(pid, startTime: nil)
    _ = reap(pid)
    SpawnedProcesses.untrack(group: pid)
  }
  let installed = ContinuousClock.now + .seconds(20)
  while !((try? String(contentsOfFile: log, encoding: .utf8)) ?? "").contains(#""action":"partition""#) {
    guard ContinuousClock.now < installed else { throw HarnessError(description: "the partition was never installed") }
    try await Task.sleep(for: .milliseconds(50))
  }
  let after = await op(leader, .write, value: "after")
  #expect(after?.outcome == .ok, "\(after.map(String.init(describing:)) ?? "-")")
  let stale = await op(follower, .read, stale: true)
  #expect(stale?.outcome == .ok && stale?.readValue == "before", "\(stale.map(String.init(describing:)) ?? "-")")
  let history = JepsenHistory(operations: recorder.operations)
  let report = LinearizabilityCheck.check(history)
  print("stale-read demonstration: \(history.operations.count) operations; \(report.summary)")
  #expect(report.verdict == .notLinearizable, "\(report.summary)")
  #expect(report.keys.first?.stuckAt?.stale == true, "\(report.summary)")
  let withoutStale = JepsenHistory(operations: history.operations.filter { !$0.stale })
  #expect(LinearizabilityCheck.check(withoutStale).verdict == .linearizable)
}
