// The Jepsen-style run: concurrent clients read, write and compare-and-set variables through every
// node's API while a nemesis kills, pauses, restarts and partitions nodes, and a deployment driver
// runs blue/green deployments of a real service; the history (JSON) is checked for
// linearizability and the deployment invariants are checked on what the run observed.

import Foundation
import NIOConcurrencyHelpers
import NIOHTTP1
import TealJepsen
import TealTestSupport
import TealTraffic

#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

/// A small seeded generator (SplitMix64), so that a run's choices can be replayed from its seed.
struct SeededRandom: RandomNumberGenerator {
  var state: UInt64
  mutating func next() -> UInt64 {
    state &+= 0x9E37_79B9_7F4A_7C15
    var z = state
    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
    z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
    return z ^ (z >> 31)
  }
}

struct RunConfiguration: Sendable {
  /// How long clients and the nemesis run.
  var seconds: Double
  var clients = 6
  var keys = 4
  var seed: UInt64
  /// One request's time limit; past it the operation is open (`info`).
  var requestTimeout: Duration = .milliseconds(2500)
  /// Pause between a client's operations.
  var thinkTime: Duration = .milliseconds(15)
  /// The nemesis: quiet time between faults, and how long a fault lasts.
  var quiet: ClosedRange<Double> = 1.5...3
  var faultLength: ClosedRange<Double> = 2...4
  var partitions = NFTables.usable
  var deployments = true
  /// How long the last deployment may run on after the clients stop (its outcome is then known).
  var deploymentGrace: Duration = .seconds(60)
  /// At most this many operations are recorded (a bound on memory; the clients stop at it).
  var maximumOperations = 400_000
}

/// The history as it is recorded: one clock (the run's start) for every client and the nemesis.
final class Recorder: Sendable {
  let started = ContinuousClock.now
  private let state = NIOLockedValueBox<(operations: [JepsenOperation], faults: [JepsenFault])>(([], []))

  func now() -> Int64 {
    let elapsed = ContinuousClock.now - started
    return elapsed.components.seconds * 1_000_000_000 + elapsed.components.attoseconds / 1_000_000_000
  }

  /// Records a completed (or open) operation; false when the bound is reached.
  @discardableResult
  func record(_ make: (Int) -> JepsenOperation, limit: Int) -> Bool {
    state.withLockedValue { state in
      guard state.operations.count < limit else { return false }
      state.operations.append(make(state.operations.count))
      return true
    }
  }

  func fault(_ fault: JepsenFault) { state.withLockedValue { $0.faults.append(fault) } }

  var operations: [JepsenOperation] { state.withLockedValue { $0.operations } }
  var faults: [JepsenFault] { state.withLockedValue { $0.faults } }
}

/// What a run found, beside the history.
struct RunResult: Sendable {
  var history: JepsenHistory
  var report: CheckReport
  var invariantViolations: [String]
  var deployments: [String: String]
  var controllersByTerm: [UInt64: Set<String>]
  var observations: Int
  var historyPath: String
  /// Seconds per phase (set-up, faults, settle and final reads, invariants, check).
  var phases: [(String, Double)]
}

// MARK: - Clients

/// One variable operation through one node, recorded with its outcome.
func performOperation(
  _ cluster: RealCluster, _ recorder: Recorder, configuration: RunConfiguration, process: Int, node: String,
  key: String, kind: JepsenOperation.Kind, value: String?, expected: (version: UInt64, value: String?)?,
  stale: Bool = false
) async -> JepsenOperation? {
  let api = cluster.api(node)
  var path = "/v1/variables/jepsen/\(key)"
  if kind == .cas { path += "?cas=\(expected?.version ?? 0)" }
  if stale { path += "?stale=true" }
  let invoked = recorder.now()
  let answer: NodeClient.Answer
  if kind == .read {
    answer = await api.send(.GET, path, timeout: configuration.requestTimeout)
  } else {
    answer = await api.send(.PUT, path, body: #"{"value":"\#(value ?? "")"}"#, timeout: configuration.requestTimeout)
  }
  let completed = recorder.now()
  var operation = JepsenOperation(
    id: 0, process: process, node: node, key: key, kind: kind, value: value, expectedVersion: expected?.version,
    expectedValue: expected?.value, stale: stale, invokedAt: invoked, completedAt: completed, outcome: .fail)
  switch answer {
  case .notSent(let why):
    operation.outcome = .fail
    operation.error = "not sent: \(why)"
  case .unknown(let why):
    operation.outcome = .info
    operation.completedAt = nil
    operation.error = why
  case .response(let response):
    let code = (try? JSONDecoder().decode(ErrorBodyView.self, from: Data(response.body)))?.error.code
    switch (response.status, kind) {
    case (200, _):
      guard let view = try? JSONDecoder().decode(VariableView.self, from: Data(response.body)) else {
        operation.outcome = .info
        operation.completedAt = nil
        operation.error = "200 with a body that is not a variable: \(response.text)"
        break
      }
      operation.outcome = .ok
      operation.version = view.version
      if kind == .read { operation.readValue = view.value }
    case (404, .read) where code == "not_found":
      operation.outcome = .ok
      operation.version = 0
    case (409, .cas) where code == "version_mismatch":
      operation.outcome = .fail
      operation.version = (try? JSONDecoder().decode(MismatchView.self, from: Data(response.body)))?.version
      operation.error = "version_mismatch"
    case (503, _) where code == "no_leader" || kind == .read:
      // A read changes nothing; a write refused with no_leader was never proposed (Docs/API.md).
      operation.outcome = .fail
      operation.error = "\(response.status) \(code ?? "")"
    case (400..<500, _):
      operation.outcome = .fail
      operation.error = "\(response.status) \(code ?? ""): \(response.text.prefix(200))"
    default:
      // 503 outcome_unknown, 500: the write may or may not have been applied.
      operation.outcome = .info
      operation.completedAt = nil
      operation.error = "\(response.status) \(code ?? "")"
    }
  }
  let recorded = operation
  guard
    recorder.record(
      { id in
        var copy = recorded
        copy.id = id
        return copy
      }, limit: configuration.maximumOperations)
  else { return nil }
  return recorded
}

/// A client: random operations on random keys through random nodes until `stop`.
func runClient(
  _ index: Int, _ cluster: RealCluster, _ recorder: Recorder, configuration: RunConfiguration,
  stop: NIOLockedValueBox<Bool>
) async {
  var random = SeededRandom(state: configuration.seed &+ UInt64(index) &* 7919)
  var process = index
  var known: [String: (version: UInt64, value: String?)] = [:]
  var written = 0
  while !stop.withLockedValue({ $0 }) {
    let key = "k\(Int.random(in: 0..<configuration.keys, using: &random))"
    let node = cluster.ids[Int.random(in: 0..<cluster.ids.count, using: &random)]
    let roll = Int.random(in: 0..<10, using: &random)
    let kind: JepsenOperation.Kind = roll < 4 ? .read : roll < 7 ? .write : .cas
    var value: String?
    if kind != .read {
      written += 1
      value = "c\(index)-\(written)"
    }
    let expected = kind == .cas ? known[key] ?? (0, nil) : nil
    guard
      let done = await performOperation(
        cluster, recorder, configuration: configuration, process: process, node: node, key: key, kind: kind,
        value: value, expected: expected)
    else { return }
    switch (done.outcome, done.kind) {
    case (.ok, .read): known[key] = (done.version ?? 0, done.readValue)
    case (.ok, _): known[key] = (done.version ?? 0, done.value)
    case (.fail, .cas): if let version = done.version, version == 0 { known[key] = (0, nil) } else { known[key] = nil }
    case (.info, _):
      // The operation may still be in flight: a new logical process takes over this client.
      process += configuration.clients
      known[key] = nil
    default: break
    }
    try? await Task.sleep(for: configuration.thinkTime)
  }
}

// MARK: - The nemesis

/// The run's own nftables table for faults `teal chaos partition` does not make (a bridge: two
/// nodes cut from each other, the third still talking to both). Named after this test process.
struct BridgeTable {
  let name = "teal_jepsen_\(getpid())"

  /// Cuts every peer connection between `a` and `b` (whoever dialled it), on loopback's output
  /// hook and the input hook, like `teal chaos partition`'s rules.
  func install(_ a: JepsenNode, _ b: JepsenNode, peerPort: Int) throws {
    remove()
    var rules: [String] = []
    for (from, to) in [(a, b), (b, a)] {
      rules.append("ip saddr \(from.address) ip daddr \(to.address) tcp dport \(peerPort) drop")
      rules.append("ip saddr \(to.address) ip daddr \(from.address) tcp sport \(peerPort) drop")
    }
    var text = "table inet \(name) {\n"
    for hook in ["output", "input"] {
      text += "  chain \(hook) {\n    type filter hook \(hook) priority 0; policy accept;\n"
      for rule in rules { text += "    \(rule)\n" }
      text += "  }\n"
    }
    text += "}\n"
    let file = FileManager.default.temporaryDirectory.appendingPathComponent("\(name).nft").path
    try text.write(toFile: file, atomically: true, encoding: .utf8)
    defer { try? FileManager.default.removeItem(atPath: file) }
    guard let nft = NFTables.executable else { throw HarnessError(description: "no nft") }
    let result = try run(nft, ["-f", file])
    guard result.status == 0 else { throw HarnessError(description: "nft -f failed: \(result.output)") }
  }

  func remove() {
    guard let nft = NFTables.executable else { return }
    _ = try? run(nft, ["delete", "table", "inet", name])
  }
}

/// Runs `teal` with `arguments` in its own process group and waits for it (at most `timeout`).
func runTeal(_ arguments: [String], log: String, timeout: Duration) async throws -> ChildExit {
  let pid = try spawnInOwnGroup(Binaries.teal, arguments, logPath: log)
  defer { SpawnedProcesses.untrack(group: pid) }
  let deadline = ContinuousClock.now + timeout
  while ContinuousClock.now < deadline {
    if let exit = reap(pid) { return exit }
    try await Task.sleep(for: .milliseconds(50))
  }
  kill(pid, SIGINT)
  try await Task.sleep(for: .milliseconds(500))
  killGroup(pid, startTime: nil)
  _ = reap(pid)
  throw HarnessError(description: "teal \(arguments.joined(separator: " ")) did not finish within \(timeout)")
}

/// The nemesis: one fault at a time, on a random node, then quiet; every fault is undone before
/// the next starts, and at `stop` the last one is undone too.
func runNemesis(
  _ cluster: RealCluster, _ recorder: Recorder, configuration: RunConfiguration, stop: NIOLockedValueBox<Bool>
) async throws {
  var random = SeededRandom(state: configuration.seed ^ 0xA5A5_5A5A)
  var kinds = ["kill", "pause", "restart"]
  if configuration.partitions { kinds += ["partition", "one-way", "bridge"] }
  let bridge = BridgeTable()
  var number = 0
  func pause(_ range: ClosedRange<Double>) async throws {
    let seconds = Double.random(in: range, using: &random)
    let until = ContinuousClock.now + .milliseconds(Int64(seconds * 1000))
    while ContinuousClock.now < until, !stop.withLockedValue({ $0 }) { try await Task.sleep(for: .milliseconds(50)) }
  }
  while !stop.withLockedValue({ $0 }) {
    try await pause(configuration.quiet)
    if stop.withLockedValue({ $0 }) { break }
    number += 1
    // Every kind in turn first, then at random.
    let kind = number <= kinds.count ? kinds[number - 1] : kinds[Int.random(in: 0..<kinds.count, using: &random)]
    let ids = cluster.ids
    let target = ids[Int.random(in: 0..<ids.count, using: &random)]
    let others = ids.filter { $0 != target }
    let peer = others[Int.random(in: 0..<others.count, using: &random)]
    let length = Double.random(in: configuration.faultLength, using: &random)
    let started = recorder.now()
    var nodes = [target]
    var detail: String?
    switch kind {
    case "kill":
      try await cluster.kill9(target)
      try await pause(1...2)
      try cluster.start(target)
    case "pause":
      cluster.signal(target, SIGSTOP)
      try await pause(length...length)
      cluster.signal(target, SIGCONT)
    case "restart":
      try await cluster.terminate(target)
      try cluster.start(target)
    case "partition", "one-way":
      let seconds = String(format: "%.1fs", length)
      var arguments = ["chaos", "partition", target, "--for", seconds, "--dir", cluster.directory, "--json"]
      if kind == "one-way" {
        arguments += ["--from", peer]
        nodes.append(peer)
        detail = "\(target)'s own connections to \(peer) cut"
      }
      let exit = try await runTeal(
        arguments, log: "\(cluster.directory)/nemesis-\(number).log", timeout: .seconds(length + 30))
      if exit != .exited(0) {
        detail = "teal chaos partition ended with \(exit)"
      }
    case "bridge":
      // `target` bridges: the two others cannot reach each other, both still reach it.
      let (a, b) = (others[0], others[1])
      nodes = [a, b]
      detail = "\(a) and \(b) cut from each other; \(target) reaches both"
      try bridge.install(cluster.node(a), cluster.node(b), peerPort: cluster.peerPort)
      try await pause(length...length)
      bridge.remove()
    default: preconditionFailure("unknown fault \(kind)")
    }
    recorder.fault(JepsenFault(kind: kind, nodes: nodes, startedAt: started, endedAt: recorder.now(), detail: detail))
  }
  bridge.remove()
}

// MARK: - Deployments

/// Observes deployments and the service's routes from every running node (stale reads) and checks
/// the invariants that hold at every moment: weights sum to 100, one controller per term.
final class DeploymentObserver: Sendable {
  private struct State {
    var controllers: [UInt64: Set<String>] = [:]
    var violations: [String] = []
    var observations = 0
    var latest: [String: DeploymentView] = [:]
  }
  private let state = NIOLockedValueBox(State())
  /// Violations are kept up to this many (the count goes on).
  static let maximumViolations = 100

  func violation(_ text: String) {
    state.withLockedValue { if $0.violations.count < Self.maximumViolations { $0.violations.append(text) } }
  }

  func observe(_ view: DeploymentView, from node: String) {
    state.withLockedValue { state in
      state.observations += 1
      state.latest[view.id] = view
      if let controller = view.controller {
        state.controllers[controller.term, default: []].insert(controller.node)
        if state.controllers[controller.term, default: []].count > 1, state.violations.count < Self.maximumViolations {
          state.violations.append(
            "two controllers in term \(controller.term): \(state.controllers[controller.term, default: []].sorted())")
        }
      }
    }
    // A finished deployment's view is a summary without weights (0 and 0, generation 0).
    guard !(view.isFinished && view.weights.generation == 0) else { return }
    for (name, pair) in [("production", view.weights.production), ("test", view.weights.test)]
    where abs(pair.blue + pair.green - 100) > 0.001 {
      violation("\(view.id) on \(node): \(name) weights \(pair.blue) + \(pair.green) ≠ 100 (\(view.status))")
    }
  }

  func observe(_ service: ServiceView, from node: String) {
    state.withLockedValue { $0.observations += 1 }
    for (name, weights) in [("production", service.routes.production), ("test", service.routes.test)] {
      guard let weights, !weights.isEmpty else { continue }
      let sum = weights.values.reduce(0, +)
      if abs(sum - 100) > 0.001 {
        violation(
          "web on \(node): \(name) route weights \(weights) sum to \(sum) (generation \(service.routes.generation))")
      }
    }
  }

  var violations: [String] { state.withLockedValue { $0.violations } }
  var controllers: [UInt64: Set<String>] { state.withLockedValue { $0.controllers } }
  var observations: Int { state.withLockedValue { $0.observations } }
  func latest(_ id: String) -> DeploymentView? { state.withLockedValue { $0.latest[id] } }
}

/// The spec of `web` at `version`: 2 teal-demo tasks, blue/green.
func webSpec(version: Int, production: Int, test: Int) -> String {
  """
  name: web
  desiredCount: 2
  productionPort: \(production)
  testPort: \(test)
  task:
    command: \(Binaries.tealDemo)
    env:
      TEAL_DEMO_VERSION: "\(version)"
    port: 0
    healthCheck:
      path: /health
      interval: 1s
      timeout: 500ms
      healthyThreshold: 1
      unhealthyThreshold: 2
  deployment:
    strategy: BLUE_GREEN
    bakeTime: 1s
    abortScaleDownDelay: 1s

  """
}

/// Sends `body` to `path` through the nodes in turn (one Idempotency-Key for every attempt) until
/// one answers `status`, or `timeout`.
func submitEverywhere(
  _ cluster: RealCluster, _ path: String, body: String, expect status: Int, timeout: Duration
) async throws -> HTTPResponse {
  let key = UUID().uuidString
  let deadline = ContinuousClock.now + timeout
  var attempt = 0
  var last = ""
  while ContinuousClock.now < deadline {
    let node = cluster.ids[attempt % cluster.ids.count]
    attempt += 1
    let api = cluster.api(node)
    do {
      let connection = try await HTTPConnection.connect(host: api.host, port: api.port, timeout: .seconds(1))
      defer { Task { await connection.close() } }
      let response = try await connection.request(
        method: .POST, path: path,
        headers: [
          ("authorization", "Bearer \(api.token)"), ("content-type", "application/yaml"), ("idempotency-key", key),
          ("accept", "application/json"),
        ], body: Array(body.utf8), timeout: .seconds(5))
      if response.status == status { return response }
      last = "\(node): \(response.status) \(response.text.prefix(200))"
      if response.status != 503 { throw HarnessError(description: "POST \(path): \(last)") }
    } catch let error as HarnessError {
      throw error
    } catch {
      last = "\(node): \(error)"
    }
    try await Task.sleep(for: .milliseconds(200))
  }
  throw HarnessError(description: "POST \(path) not accepted within \(timeout); last: \(last)")
}

/// Polls the deployments the driver started and the service's routes, round robin over the
/// running nodes (stale reads: they keep answering through elections and partitions).
func runObserver(
  _ cluster: RealCluster, _ observer: DeploymentObserver, stop: NIOLockedValueBox<Bool>,
  ids: @Sendable @escaping () -> [String]
) async {
  var turn = 0
  while !stop.withLockedValue({ $0 }) {
    let running = cluster.ids.filter { cluster.pid($0) != nil }
    if !running.isEmpty {
      let node = running[turn % running.count]
      turn += 1
      let api = cluster.api(node)
      for id in ids() {
        if let view = try? await api.get(
          "/v1/deployments/\(id)?stale=true", as: DeploymentView.self, timeout: .seconds(1))
        {
          observer.observe(view, from: node)
        }
      }
      if let service = try? await api.get("/v1/services/web?stale=true", as: ServiceView.self, timeout: .seconds(1)) {
        observer.observe(service, from: node)
      }
    }
    try? await Task.sleep(for: .milliseconds(150))
  }
}

/// Every event of `web`, read linearizably from whichever node answers (paged by `after`).
func allEvents(_ cluster: RealCluster) async throws -> [EventsView.Event] {
  var events: [EventsView.Event] = []
  var after: UInt64 = 0
  while true {
    var page: EventsView?
    for id in cluster.ids {
      page = try? await cluster.api(id).get(
        "/v1/events?service=web&after=\(after)&limit=1000", as: EventsView.self, timeout: .seconds(5))
      if page != nil { break }
    }
    guard let page else { throw HarnessError(description: "no node answered GET /v1/events") }
    events += page.events
    guard let last = page.events.last, page.events.count == 1000 else { return events }
    after = last.index
  }
}

/// Blue is never retired by a deployment before the deployment's CLEAN_UP, for every successful
/// deployment: no blue task drains "no longer deployed" or "scaled down" at a log index before the
/// event that entered CLEAN_UP. (Drains because a node shut down or a task exited are not the
/// deployment's doing.) Returns the violations.
func checkBlueKeptUntilCleanUp(events: [EventsView.Event], deployments: [String: String], blueOf: [String: String])
  -> [String]
{
  var revisionOf: [String: String] = [:]
  for event in events where event.kind == "taskPlaced" {
    // "task web.1.3 of web:1 placed on n2"
    let words = event.message.split(separator: " ")
    if words.count >= 4, words[0] == "task", words[2] == "of" { revisionOf[String(words[1])] = String(words[3]) }
  }
  var violations: [String] = []
  for (id, status) in deployments.sorted(by: { $0.key < $1.key }) where status == "SUCCESSFUL" {
    guard let blue = blueOf[id] else { continue }
    guard let submitted = events.first(where: { $0.message.hasPrefix("deployment \(id) ") })?.index else {
      violations.append("\(id): no event of its submission")
      continue
    }
    guard
      let cleanUp = events.first(where: {
        $0.kind == "deploymentProgress" && $0.message.hasPrefix("deployment \(id) ")
          && $0.message.hasSuffix(" at CLEAN_UP")
      })?.index
    else {
      violations.append("\(id) is SUCCESSFUL without a CLEAN_UP event")
      continue
    }
    for event in events where event.kind == "taskDraining" && event.index > submitted && event.index < cleanUp {
      let words = event.message.split(separator: " ")
      guard words.count >= 2, revisionOf[String(words[1])] == blue else { continue }
      if event.message.contains("no longer deployed") || event.message.contains("scaled down") {
        violations.append(
          "\(id): blue task retired before CLEAN_UP (index \(event.index) < \(cleanUp)): \(event.message)")
      }
    }
  }
  return violations
}
