// What the deployment cluster tests share: the deployment endpoints' JSON as the suite reads it
// (its own shapes, as ClusterAPI.swift does for the other endpoints), spec builders, a watcher
// that records every change a deployment shows while nodes die, and traffic checks.

import Foundation
import NIOConcurrencyHelpers
import NIOHTTP1
import TealTestSupport
import TealTraffic
import Testing

#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

// MARK: - Response shapes (Sources/TealAPI/Deployments.swift; only the fields the tests read)

struct DeploymentDetailView: Decodable, Sendable, Equatable {
  var id: String
  var service: String
  var status: String
  var stage: String?
  var blue: String
  var green: String
  var strategy: String
  var stageTimeline: [StageTimeView]
  var weights: DeploymentWeightsView
  var bake: BakeWindowView?
  var hooks: [HookExecutionRecord]
  var controller: ControllerRef?
  var reason: String?

  static let finalStatuses: Set<String> = ["SUCCESSFUL", "STOPPED", "ROLLBACK_SUCCESSFUL", "ROLLBACK_FAILED"]
  var isFinished: Bool { Self.finalStatuses.contains(status) }

  /// When the deployment entered `stage` (the last time, log time), if it did.
  func entered(_ stage: String) -> Date? {
    stageTimeline.last { $0.stage == stage }.flatMap { parseAPIDate($0.enteredAt) }
  }

  var stages: [String] { stageTimeline.map(\.stage) }

  var summary: String {
    "\(id) \(status) at \(stage ?? "-") production \(weights.production.green)% green test \(weights.test.green)% green "
      + "generation \(weights.generation) controller \(controller.map { "\($0.node)@\($0.term)" } ?? "-")"
      + (reason.map { " reason: \($0)" } ?? "")
  }
}

struct StageTimeView: Decodable, Sendable, Equatable {
  var stage: String
  var enteredAt: String
}

struct DeploymentWeightsView: Decodable, Sendable, Equatable {
  var production: WeightPairView
  var test: WeightPairView
  var generation: Int
}

struct WeightPairView: Decodable, Sendable, Equatable {
  var blue: Double
  var green: Double
}

struct BakeWindowView: Decodable, Sendable, Equatable {
  var seconds: Double
  var startedAt: String?
  var endsAt: String?
}

struct HookExecutionRecord: Decodable, Sendable, Equatable {
  var stage: String
  var executionId: String
  var attempts: Int
  var result: String?
}

struct ControllerRef: Decodable, Sendable, Hashable {
  var node: String
  var term: UInt64
}

struct DeploymentListView: Decodable, Sendable {
  struct Item: Decodable, Sendable {
    var id: String
    var service: String
    var status: String
    var stage: String?
  }
  var deployments: [Item]
}

/// An API time (ISO 8601, UTC, with or without fractional seconds).
func parseAPIDate(_ text: String) -> Date? {
  if let date = try? Date(text, strategy: Date.ISO8601FormatStyle(includingFractionalSeconds: true)) { return date }
  return try? Date(text, strategy: Date.ISO8601FormatStyle())
}

extension NodeAPI {
  /// `POST /v1/services/{name}/deployments` with a YAML spec: 201 and the new deployment.
  func deploy(_ service: String, spec: String) async throws -> DeploymentDetailView {
    try await call(
      .POST, "/v1/services/\(service)/deployments", body: spec, contentType: "application/yaml", expect: 201,
      as: DeploymentDetailView.self)
  }

  func deployment(_ id: String, stale: Bool = true) async throws -> DeploymentDetailView {
    try await get("/v1/deployments/\(id)\(stale ? "?stale=true" : "")", as: DeploymentDetailView.self)
  }
}

// MARK: - Specs

/// Service specs for deployments: teal-demo tasks that answer `GET /` and `POST /process` after
/// `latencyMs` (so that requests are in flight at every weight change and every kill).
enum DeploymentSpecs {
  static let latencyMs = 200

  static func yaml(
    version: Int, ports: ServicePorts, desiredCount: Int = 3, strategy: String = "BLUE_GREEN",
    strategyBlock: String = "", bakeTime: String = "0s", hooks: [(stage: String, url: String)] = [],
    abortScaleDownDelay: String = "1s", extra: String = ""
  ) -> String {
    var text = """
      name: web
      desiredCount: \(desiredCount)
      productionPort: \(ports.production)
      testPort: \(ports.test)
      task:
        command: \(Binaries.tealDemo)
        env:
          TEAL_DEMO_VERSION: "\(version)"
          TEAL_DEMO_LATENCY_MS: "\(latencyMs)"
        port: \(ports.task)
        healthCheck:
          path: /health
          interval: 1s
          timeout: 500ms
          healthyThreshold: 1
          unhealthyThreshold: 2
      deployment:
        strategy: \(strategy)
        bakeTime: \(bakeTime)
        abortScaleDownDelay: \(abortScaleDownDelay)

      """
    if !strategyBlock.isEmpty { text += strategyBlock.split(separator: "\n").map { "  \($0)\n" }.joined() }
    if !extra.isEmpty { text += extra.split(separator: "\n").map { "  \($0)\n" }.joined() }
    if !hooks.isEmpty {
      text += "  lifecycleHooks:\n"
      for hook in hooks {
        text += """
              - stages: [\(hook.stage)]
                http:
                  url: \(hook.url)
                  timeout: 20s
                callBackDelay: 1s
                timeoutInMinutes: 5

          """
      }
    }
    return text
  }

  /// The hookable stages a deployment passes (RECONCILE_SERVICE runs hooks only with more than one
  /// active revision, as in ECS).
  static let hookStages = [
    "PRE_SCALE_UP", "POST_SCALE_UP", "TEST_TRAFFIC_SHIFT", "POST_TEST_TRAFFIC_SHIFT", "PRODUCTION_TRAFFIC_SHIFT",
    "POST_PRODUCTION_TRAFFIC_SHIFT",
  ]

  /// Every stage, in lifecycle order.
  static let allStages = [
    "RECONCILE_SERVICE", "PRE_SCALE_UP", "SCALE_UP", "POST_SCALE_UP", "TEST_TRAFFIC_SHIFT", "POST_TEST_TRAFFIC_SHIFT",
    "PRODUCTION_TRAFFIC_SHIFT", "POST_PRODUCTION_TRAFFIC_SHIFT", "BAKE_TIME", "CLEAN_UP",
  ]
}

// MARK: - Watching a deployment

/// One change a watcher saw.
struct DeploymentObservation: Sendable {
  var at: Date
  var node: String
  var view: DeploymentDetailView
}

/// Polls a deployment every 100 ms from the running nodes in turn (stale reads, so that it keeps
/// seeing it during an election and after its node died) and keeps every observation that differs
/// from the one before (bounded: 10,000).
final class DeploymentWatcher: Sendable {
  static let maximumObservations = 10_000

  let id: String
  private let cluster: LocalCluster
  private let state = NIOLockedValueBox<(observations: [DeploymentObservation], last: DeploymentDetailView?)>(([], nil))
  private let task = NIOLockedValueBox<Task<Void, Never>?>(nil)

  init(_ cluster: LocalCluster, id: String) {
    self.cluster = cluster
    self.id = id
  }

  func start() {
    let poller = Task { [self] in
      var turn = 0
      while !Task.isCancelled {
        let running = cluster.ids.filter { cluster.pid($0) != nil }
        if !running.isEmpty {
          let node = running[turn % running.count]
          turn += 1
          if let view = try? await cluster.api(node).deployment(id) { record(view, from: node) }
        }
        try? await Task.sleep(for: .milliseconds(100))
      }
    }
    task.withLockedValue { $0 = poller }
  }

  func stop() { task.withLockedValue { $0?.cancel() } }

  private func record(_ view: DeploymentDetailView, from node: String) {
    state.withLockedValue { state in
      // A lagging node's older view is not a change (the deployment never goes back).
      if let last = state.last,
        view.stageTimeline.count < last.stageTimeline.count || view.weights.generation < last.weights.generation
          || (last.isFinished && !view.isFinished)
      {
        return
      }
      state.last = view
      if let previous = state.observations.last?.view, previous == view { return }
      guard state.observations.count < Self.maximumObservations else { return }
      state.observations.append(DeploymentObservation(at: Date(), node: node, view: view))
    }
  }

  var observations: [DeploymentObservation] { state.withLockedValue { $0.observations } }
  var latest: DeploymentDetailView? { state.withLockedValue { $0.last } }

  /// Waits until the deployment is observed `condition`; returns that view.
  @discardableResult
  func wait(
    _ what: String, timeout: Duration = .seconds(90),
    until condition: @escaping @Sendable (DeploymentDetailView) -> Bool
  ) async throws -> DeploymentDetailView {
    var seen: DeploymentDetailView?
    do {
      try await waitUntil("deployment \(id) \(what)", timeout: timeout, interval: .milliseconds(50)) {
        guard let latest = self.latest, condition(latest) else { return false }
        seen = latest
        return true
      }
    } catch {
      throw APIError(description: "\(error); last seen: \(latest?.summary ?? "nothing")")
    }
    guard let seen else { preconditionFailure("wait returned without a view") }
    return seen
  }

  func finished(timeout: Duration = .seconds(120)) async throws -> DeploymentDetailView {
    try await wait("finishes", timeout: timeout) { $0.isFinished }
  }

  /// The controllers seen, in order (a finished deployment shows none, so the last one seen is
  /// the one that finished it).
  var controllers: [ControllerRef] { sequence { $0.controller }.compactMap { $0 } }

  /// Consecutive distinct values of `value` over the observations.
  func sequence<T: Equatable>(_ value: (DeploymentDetailView) -> T) -> [T] {
    var result: [T] = []
    for observation in observations {
      let next = value(observation.view)
      if result.last != next { result.append(next) }
    }
    return result
  }
}

// MARK: - Traffic checks

/// The production listeners of `nodes`.
func productionTargets(_ cluster: LocalCluster, _ ports: ServicePorts, nodes: [String]? = nil) -> [TrafficTarget] {
  (nodes ?? cluster.ids).map { TrafficTarget(host: cluster.node($0).address, port: ports.production) }
}

/// The issue's traffic: 16 keep-alive clients per listener, GET / and POST /process with a 1 KiB
/// body, half and half.
/// How most deployment tests begin: `web` v1 with 3 tasks created through the leader, and
/// ``deploymentTraffic(_:duration:)`` flowing on every production listener (at least 32 answers
/// each). The caller stops the traffic.
func startServingWeb(
  _ cluster: LocalCluster
) async throws -> (leader: String, ports: ServicePorts, targets: [TrafficTarget], traffic: TrafficGenerator) {
  let leader = try await cluster.waitForLeader()
  let ports = try ServicePorts(cluster)
  try await cluster.createWeb(DeploymentSpecs.yaml(version: 1, ports: ports), through: leader, count: 3, ports: ports)
  let targets = productionTargets(cluster, ports)
  let traffic = try deploymentTraffic(targets)
  traffic.start()
  do {
    try await waitUntil("traffic flows on every listener") {
      traffic.snapshot().summaries.values.allSatisfy { $0.ok >= 32 }
    }
  } catch {
    await traffic.stop()
    throw error
  }
  return (leader, ports, targets, traffic)
}

func deploymentTraffic(_ targets: [TrafficTarget], duration: Duration = .seconds(200)) throws -> TrafficGenerator {
  try TrafficGenerator(
    configuration: TrafficConfiguration(
      targets: targets, clientsPerTarget: 16, postFraction: 0.5, getPath: "/", postPath: "/process", bodyBytes: 1024,
      maximumDuration: duration, requestTimeout: .seconds(10), maximumRecords: 2_000_000))
}

extension TrafficRecord {
  var startWall: Int64 { startedAtWallNanoseconds }
  var endWall: Int64 { startedAtWallNanoseconds + latency.nanoseconds }
  var startDate: Date { Date(timeIntervalSince1970: Double(startedAtWallNanoseconds) / 1e9) }
}

extension Duration {
  var nanoseconds: Int64 {
    let (seconds, attoseconds) = components
    return seconds * 1_000_000_000 + attoseconds / 1_000_000_000
  }
  var inSeconds: Double { Double(nanoseconds) / 1e9 }
}

extension Date {
  var wallNanoseconds: Int64 { Int64((timeIntervalSince1970 * 1e9).rounded()) }
}

/// Requests of `records` at `targets` that had been sent and were not answered yet at `moment`.
func inFlight(at moment: Date, _ records: [TrafficRecord], targets: Set<TrafficTarget>) -> Int {
  let instant = moment.wallNanoseconds
  return records.filter { targets.contains($0.target) && $0.startWall < instant && instant < $0.endWall }.count
}

extension LocalCluster {
  /// Waits until every node in `on` (default: all) sees `service` with `count` tasks serving of
  /// `revision`.
  func waitForServing(
    _ service: String, revision: String, count: Int, on nodes: [String]? = nil, timeout: Duration = .seconds(60)
  ) async throws {
    for id in nodes ?? ids {
      try await waitUntil(
        "\(id) sees \(count) serving tasks of \(revision)", timeout: timeout, interval: .milliseconds(200)
      ) {
        let view = try await api(id).service(service)
        return view.tasks.filter { $0.isServing && $0.revision == revision }.count >= count
      }
    }
  }

  /// Waits until every listener of `targets` answers `GET /` from `revision`.
  func waitForListeners(_ targets: [TrafficTarget], revision: String) async throws {
    for target in targets {
      try await waitUntil("\(target) serves \(revision)") {
        let connection = try await HTTPConnection.connect(host: target.host, port: target.port)
        defer { Task { await connection.close() } }
        let response = try await connection.request(method: .GET, path: "/", timeout: .seconds(5))
        return response.status == 200 && response.header("x-teal-revision") == revision
      }
    }
  }

  /// Creates `web` from `spec` (through `node`) and waits until every listener serves `web:1`.
  func createWeb(_ spec: String, through node: String, count: Int, ports: ServicePorts) async throws {
    // Blue and green run side by side on each node: each task needs a port of its own.
    guard ports.task == 0 else {
      throw SpawnError(description: "deployments need `task.port: 0`, which `teal spec validate` refuses")
    }
    _ = try await api(node).call(
      .POST, "/v1/services", body: spec, contentType: "application/yaml", expect: 201, as: ServiceDetailView.self)
    try await waitForServing("web", revision: "web:1", count: count)
    try await waitForListeners(productionTargets(self, ports), revision: "web:1")
  }

  /// Runs `teal` with `arguments` in its own process group (its output in `log`); returns its PID.
  func spawnTeal(_ arguments: [String], log: String) throws -> pid_t {
    try spawnInOwnGroup(Binaries.teal, arguments, logPath: log)
  }
}

/// Waits until `pid` (a child) exits; returns how.
func waitForChild(_ pid: pid_t, _ what: String, timeout: Duration) async throws -> ChildExit {
  var exit: ChildExit?
  try await waitUntil("\(what) exits", timeout: timeout, interval: .milliseconds(20)) {
    exit = reap(pid)
    return exit != nil
  }
  guard let exit else { preconditionFailure("waitUntil returned without an exit") }
  return exit
}

/// The JSON objects of a `--json` command's log, one per line.
func jsonLines(_ path: String) -> [[String: Any]] {
  guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return [] }
  return text.split(separator: "\n").compactMap {
    (try? JSONSerialization.jsonObject(with: Data($0.utf8))) as? [String: Any]
  }
}

/// The state letter of a process (`R`, `S`, `T` stopped, `Z` zombie), nil when gone.
func processState(_ pid: pid_t) -> Character? {
  guard let text = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
    let close = text.lastIndex(of: ")")
  else { return nil }
  return text[text.index(after: close)...].trimmingCharacters(in: .whitespaces).first
}
