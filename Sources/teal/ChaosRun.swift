import ArgumentParser
import Foundation
import TealAPI
import TealChaos
import TealClient
import TealDeploy
import TealSpec
import TealTraffic

#if canImport(Glibc)
  import Glibc
#endif

// `teal chaos run SCENARIO.yaml`: a deployment under traffic with faults at the moments the
// scenario names, and a report of what happened against what it expects (TealChaos holds the pure
// parts: the scenario, the schedule, the report). Docs/CHAOS.md.

extension Chaos {
  struct Run: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Run a chaos scenario: a deployment under traffic, faults at its stages, a report.",
      discussion: """
        Creates the scenario's service if the cluster (--dir, or --targets FILE) has none, sends \
        keep-alive traffic to every node's production listener, deploys the new revision and makes \
        each fault when its moment comes (a stage, STAGE+6s, BAKE_TIME+60%, STEPn, after 10s, \
        repeated, or random from a seed). Then prints the report (text, or --json) and writes --html. Exits 1 when the outcome \
        differs from the scenario's expectation. Docs/CHAOS.md describes the scenario file.
        """)

    @Argument(help: "The scenario file (YAML).")
    var scenario: String

    /// `--dir` or `--targets`.
    @OptionGroup var cluster: ClusterOptions

    @Flag(name: .long, help: "Print the report as JSON instead of text.")
    var json = false

    @Option(name: .long, help: ArgumentHelp("Also write the report as a self-contained HTML page.", valueName: "file"))
    var html: String?

    @Option(
      name: .customLong("report"), help: ArgumentHelp("Also write the JSON report to this file.", valueName: "file"))
    var reportFile: String?

    @Option(name: .long, help: "The random faults' seed (replaces the scenario's).")
    var seed: UInt64?

    @Option(
      name: .long,
      help: ArgumentHelp(
        "Run deployments back to back for this long (a soak; replaces the scenario's).", valueName: "duration"))
    var duration: String?

    @Option(
      name: .customLong("set"),
      help: ArgumentHelp(
        "Change one field of the service spec (repeatable), e.g. productionPort=9080.", valueName: "key=value"))
    var sets: [String] = []

    @Flag(name: .long, help: "No progress lines on standard error.")
    var quiet = false

    func validate() throws {
      if let duration { _ = try parseChaosDuration(duration, option: "--duration") }
    }

    func run() async throws {
      let text: String
      do { text = try String(contentsOfFile: scenario, encoding: .utf8) } catch {
        throw CommandFailure(message: "cannot read \(scenario): \(error.localizedDescription)")
      }
      let parsed: ChaosScenario
      let planned: [PlannedFault]
      let durationMs = try duration.map { Int64(seconds(try parseChaosDuration($0, option: "--duration")) * 1000) }
      do {
        parsed = try ScenarioParser.parse(text, file: scenario)
        planned = try FaultSchedule.plan(parsed, seed: seed, durationMs: durationMs)
      } catch {
        var named = error
        named.file = scenario
        throw CommandFailure(message: named.description)
      }
      let runner = try ScenarioRunner(
        scenario: parsed, planned: planned, scenarioFile: scenario, targets: try cluster.load(),
        extraSets: try parseOverrides(sets),
        seed: seed ?? parsed.random?.seed, durationMs: durationMs ?? parsed.durationMs, quiet: quiet)
      let report = try await runner.run()
      if json { print(report.json()) } else { print(report.text(), terminator: "") }
      if let html { try writeFile(html, report.html()) }
      if let reportFile { try writeFile(reportFile, report.json() + "\n") }
      fflush(nil)
      if !report.passed { throw ExitCode(1) }
    }
  }
}

/// The run of one scenario: owns the traffic, the watchers and the faults, and undoes every fault
/// (the nftables table, a stopped process) however the run ends.
final class ScenarioRunner: Sendable {
  let scenario: ChaosScenario
  let planned: [PlannedFault]
  let cluster: ChaosCluster
  let serviceSpec: ServiceSpec
  let serviceText: String
  let seed: UInt64?
  let durationMs: Int64?
  let quiet: Bool
  let log = RunLog()
  let faults: NetworkFaults
  /// The processes this run stopped and has not resumed yet.
  let paused = PausedProcesses()

  init(
    scenario: ChaosScenario, planned: [PlannedFault], scenarioFile: String, targets: ClusterTargets,
    extraSets: [SpecOverride],
    seed: UInt64?, durationMs: Int64?, quiet: Bool
  ) throws {
    self.scenario = scenario
    self.planned = planned
    self.seed = seed
    self.durationMs = durationMs
    self.quiet = quiet
    cluster = try ChaosCluster(targets)
    faults = NetworkFaults(targets: cluster.targets)
    let base = URL(fileURLWithPath: scenarioFile).deletingLastPathComponent()
    let specPath =
      scenario.serviceSpec.hasPrefix("/")
      ? scenario.serviceSpec : base.appendingPathComponent(scenario.serviceSpec).path
    guard var text = try? String(contentsOfFile: specPath, encoding: .utf8) else {
      throw CommandFailure(message: "\(scenarioFile): service.spec: cannot read \(specPath)")
    }
    let demo = URL(fileURLWithPath: currentExecutable()).deletingLastPathComponent().appendingPathComponent("teal-demo")
    if text.contains("${TEAL_DEMO}") {
      guard FileManager.default.isExecutableFile(atPath: demo.path) else {
        throw CommandFailure(
          message: "\(specPath) runs ${TEAL_DEMO}, but there is no teal-demo next to this teal (\(demo.path)): "
            + "build it (`swift build --product teal-demo`)")
      }
      text = text.replacingOccurrences(of: "${TEAL_DEMO}", with: demo.path)
    }
    var spec: ServiceSpec
    do {
      spec = try SpecParser.parse(text, fileName: specPath)
      let overrides = scenario.serviceSet.map { SpecOverride(keyPath: $0.key, value: $0.value) } + extraSets
      if !overrides.isEmpty { spec = try SpecWriter.applying(overrides, to: spec) }
    } catch {
      throw CommandFailure(
        message: "the scenario's service spec: " + error.errors.map(\.description).joined(separator: "; "))
    }
    serviceSpec = spec
    serviceText = SpecWriter.yaml(spec)
    let network = planned.contains {
      switch $0.action {
      case .partition, .loss: true
      default: false
      }
    }
    if network { try NetworkFaults.check(cluster.nodes) }
  }

  func say(_ line: String) {
    guard !quiet else { return }
    writeError("\(TealJSON.formatDate(Date())) \(line)\n")
  }

  // MARK: - The run

  func run() async throws -> ChaosReport {
    let faults = self.faults
    let nodes = cluster.nodes
    let paused = self.paused
    let log = self.log
    faults.remove()
    // Undo on SIGINT/SIGTERM/SIGHUP: the table, and any process left stopped.
    SignalPipe.install([SIGINT, SIGTERM, SIGHUP]) { signalNumber in
      faults.remove()
      paused.resumeAll(nodes)
      writeError("interrupted (signal \(signalNumber)): removed the network faults, resumed every node\n")
      Glibc.exit(128 + signalNumber)
    }
    defer {
      faults.remove()
      paused.resumeAll(nodes)
      Task { await cluster.client.shutdown() }
    }

    let service = serviceSpec.name
    try await ensureService()
    let listeners = nodes.map { ListenerInfo(address: "\($0.address):\(serviceSpec.productionPort)", node: $0.id) }
    let targets = nodes.map { TrafficTarget(host: $0.address, port: serviceSpec.productionPort) }
    let maximumMs = durationMs.map { $0 + scenario.deploymentTimeoutMs } ?? scenario.deploymentTimeoutMs
    let plan = scenario.traffic
    let traffic = try TrafficGenerator(
      configuration: TrafficConfiguration(
        targets: targets, clientsPerTarget: plan.clientsPerListener, postFraction: plan.postFraction,
        getPath: plan.getPath, postPath: plan.postPath, bodyBytes: plan.bodyBytes,
        requestsPerSecondPerClient: plan.ratePerClient, maximumDuration: .milliseconds(maximumMs + 120_000),
        requestTimeout: .milliseconds(plan.requestTimeoutMs), maximumRecords: 5_000_000))

    let pollers = startPollers()
    defer { for poller in pollers { poller.cancel() } }
    traffic.start()
    let startedAt = Date()
    await log.setStart(startedAt)
    say("traffic on \(targets.count) listeners (\(plan.clientsPerListener) clients each)")

    let clock = ContinuousClock()
    let runEnd = durationMs.map { clock.now + .milliseconds($0) }
    var round = 0
    var deploymentError: String?
    repeat {
      round += 1
      do {
        let id = try await deploy(round: round)
        await log.watch(id)
        say("deployment \(id) started")
        try await driveDeployment(id, scheduleFaults: round == 1 || durationMs != nil, runEnd: runEnd)
      } catch {
        deploymentError = "\(error)"
        say("deployment round \(round): \(error)")
        break
      }
    } while runEnd.map({ clock.now < $0 }) ?? false
    // Time faults (after, random) still to come in a soak, and faults in progress.
    try await finishFaults(runEnd: runEnd)
    // A second of traffic after the end, then stop.
    try? await Task.sleep(for: .seconds(1))
    await traffic.stop()
    for poller in pollers { poller.cancel() }
    let endedAt = Date()

    let snapshot = traffic.snapshot()
    let index = Dictionary(uniqueKeysWithValues: targets.enumerated().map { ($0.element, $0.offset) })
    let requests = snapshot.records.map { record -> RequestSample in
      var status: Int?
      var failure: String?
      switch record.outcome {
      case .status(let code): status = code
      case .failure(let kind): failure = kind.rawValue
      }
      let start = record.startedAtWallNanoseconds
      let (whole, fraction) = record.latency.components
      return RequestSample(
        listener: index[record.target] ?? 0, startNs: start,
        endNs: start + whole * 1_000_000_000 + fraction / 1_000_000_000,
        ok: record.outcome.isOK, status: status, failure: failure, revision: record.revision, method: record.method,
        generation: record.generation)
    }
    var observed = await log.observations(
      scenario: scenario.name, seed: seed, startedAt: startedAt, endedAt: endedAt, planned: planned,
      listeners: listeners, requests: requests, dropped: snapshot.droppedRecords)
    if let deploymentError, observed.deployments.isEmpty {
      say("no deployment: \(deploymentError)")
    }
    observed.endedAt = endedAt
    _ = service
    return ChaosReport.build(observed, expect: scenario.expect)
  }

  /// The service exists and every node's production listener answers.
  private func ensureService() async throws {
    let name = serviceSpec.name
    do {
      _ = try await cluster.client.service(name, stale: true)
      say("service \(name) exists; deploying on top of its serving revision")
    } catch let error as TealClientError where error.status == 404 {
      do { _ = try await cluster.client.createService(spec: serviceText) } catch {
        throw CommandFailure(message: "cannot create the service \(name): \(error)")
      }
      say("created service \(name)")
    }
    for node in cluster.nodes {
      try await waitForListener(host: node.address, port: serviceSpec.productionPort, within: .seconds(120))
    }
  }

  /// Submits the next revision: the scenario's spec, its deployment changes, and a run marker so
  /// that every run (and every round of a soak) is a new revision.
  private func deploy(round: Int) async throws -> String {
    var overrides = scenario.deploymentSet.map { SpecOverride(keyPath: $0.key, value: $0.value) }
    overrides.append(
      SpecOverride(
        keyPath: "task.env.TEAL_CHAOS_RUN", value: "\"\(Int(Date().timeIntervalSince1970 * 1000))-\(round)\""))
    let spec: ServiceSpec
    do { spec = try SpecWriter.applying(overrides, to: serviceSpec) } catch {
      throw CommandFailure(message: "deployment.set: " + error.errors.map(\.description).joined(separator: "; "))
    }
    let view = try await cluster.client.deploy(spec.name, spec: SpecWriter.yaml(spec))
    return view.id
  }

  /// Watches `id` to its end, making each planned fault when it is due.
  private func driveDeployment(_ id: String, scheduleFaults: Bool, runEnd: ContinuousClock.Instant?) async throws {
    let clock = ContinuousClock()
    let deadline = clock.now + .milliseconds(scenario.deploymentTimeoutMs)
    while true {
      if scheduleFaults { await fireDueFaults(finished: false) }
      if let view = await log.latest(id), view.isFinished {
        say("deployment \(id) ended \(view.status)")
        if scheduleFaults { await fireDueFaults(finished: true) }
        return
      }
      if clock.now >= deadline {
        throw CommandFailure(
          message: "deployment \(id) did not end within \(formatSeconds(.milliseconds(scenario.deploymentTimeoutMs)))")
      }
      try await Task.sleep(for: .milliseconds(50))
    }
  }

  /// Waits for time-triggered faults still due before the run's end, then for every fault in progress.
  private func finishFaults(runEnd: ContinuousClock.Instant?) async throws {
    let clock = ContinuousClock()
    let limit = clock.now + .seconds(600)
    while await log.hasUnfired(planned), clock.now < limit {
      await fireDueFaults(finished: true)
      if let runEnd, clock.now >= runEnd { break }
      if runEnd == nil, await !log.hasPendingTimeFaults(planned) { break }
      try await Task.sleep(for: .milliseconds(50))
    }
    await log.markUnfired(planned, reason: "the run ended before its moment")
    await log.waitForRunningFaults()
  }

  private func fireDueFaults(finished: Bool) async {
    let progress = await log.progress(finished: finished)
    for fault in planned where await log.isUnfired(fault.index) {
      switch FaultSchedule.due(fault, progress) {
      case .notYet: continue
      case .never(let why): await log.record(FaultRecord(planned: fault, error: "never fired: \(why)"))
      case .at(let moment):
        guard moment <= Date() else { continue }
        await log.started(fault.index)
        let task = Task { await self.make(fault) }
        await log.running(task)
      }
    }
  }

  // MARK: - Faults

  /// Makes one fault, start to end, and records it.
  private func make(_ fault: PlannedFault) async {
    var record = FaultRecord(planned: fault)
    do {
      switch fault.action {
      case .kill(let selector, let restartAfter, let withTasks):
        try await kill(selector, restartAfterMs: restartAfter, withTasks: withTasks, into: &record)
      case .pause(let selector, let length):
        try await pause(selector, forMs: length, into: &record)
      case .partition(let selector, let from, let length):
        let (node, term) = try await resolve(selector)
        record.node = node.id
        record.term = term
        let fault: NetworkFaults.Fault
        if let from {
          let (peer, _) = try await resolve(from, excluding: node.id)
          record.from = peer.id
          fault = .oneWay(node, from: peer)
        } else {
          fault = .partition(node)
        }
        try await network(fault, forMs: length, into: &record)
      case .loss(let selector, let percent, let length):
        let (node, term) = try await resolve(selector)
        record.node = node.id
        record.term = term
        try await network(.loss(node, percent: percent), forMs: length, into: &record)
      case .restartAll(let atOnce):
        try await restartAll(atOnce: atOnce, into: &record)
      case .killTask(let selector):
        try await killTask(selector, into: &record)
      }
    } catch {
      record.error = "\(error)"
    }
    say(
      "fault \(fault.index) \(fault.action.summary)" + (record.node.map { " on \($0)" } ?? "")
        + (record.error.map { ": \($0)" } ?? ": done"))
    await log.record(record)
  }

  /// The node `selector` names now, and the leader's term when it names the leader.
  private func resolve(_ selector: NodeSelector, excluding: String? = nil) async throws -> (ChaosNode, UInt64?) {
    let leader = try await currentLeader()
    let id: String
    switch selector {
    case .leader: id = leader.id
    case .node(let name): id = name
    case .follower:
      guard
        let follower = cluster.nodes.first(where: {
          $0.id != leader.id && $0.id != excluding && (try? $0.process()) != nil
        })
      else { throw CommandFailure(message: "no running follower") }
      id = follower.id
    }
    guard let node = cluster.nodes.first(where: { $0.id == id }) else {
      throw CommandFailure(
        message: "no node \(id) in the cluster (nodes: \(cluster.nodes.map(\.id).joined(separator: ", ")))")
    }
    return (node, id == leader.id ? leader.term : nil)
  }

  /// The leader the pollers saw last, else the cluster's answer.
  private func currentLeader() async throws -> (id: String, term: UInt64) {
    if let known = await log.freshLeader() { return known }
    return try await cluster.leader()
  }

  private func kill(
    _ selector: NodeSelector, restartAfterMs: Int64?, withTasks: Bool, into record: inout FaultRecord
  ) async throws {
    let (node, term) = try await resolve(selector)
    record.node = node.id
    record.term = term
    guard let process = try node.process() else { throw CommandFailure(message: cluster.noProcess(node)) }
    let pid = process.pid
    let tasks = withTasks ? try node.taskGroups() : []
    try node.signal(process, SIGKILL, group: true)
    node.killTaskGroups(tasks.map(\.group))
    let killedAt = Date()
    record.startedAt = killedAt
    say("killed \(node.id) (pid \(pid))" + (term.map { ", the leader in term \($0)" } ?? ""))
    try? await waitForNodeExit(node, process, within: .seconds(10))
    guard let restartAfterMs else {
      record.endedAt = killedAt
      record.windows = [NodeWindow(node: node.id, from: killedAt, to: nil)]
      return
    }
    try await Task.sleep(for: .milliseconds(restartAfterMs))
    let started = try node.start()
    record.endedAt = Date()
    say("restarted \(node.id) (\(started.note))")
    let back = try? await waitForListener(host: node.address, port: serviceSpec.productionPort, within: .seconds(60))
    record.windows = [NodeWindow(node: node.id, from: killedAt, to: back)]
  }

  private func pause(_ selector: NodeSelector, forMs length: Int64, into record: inout FaultRecord) async throws {
    let (node, term) = try await resolve(selector)
    record.node = node.id
    record.term = term
    guard let process = try node.process() else { throw CommandFailure(message: cluster.noProcess(node)) }
    paused.add(node, process)
    do { try node.signal(process, SIGSTOP) } catch {
      paused.remove(process)
      throw error
    }
    let stoppedAt = Date()
    record.startedAt = stoppedAt
    try? await Task.sleep(for: .milliseconds(length))
    try? node.signal(process, SIGCONT)
    paused.remove(process)
    record.endedAt = Date()
    let back = try? await waitForListener(host: node.address, port: serviceSpec.productionPort, within: .seconds(60))
    record.windows = [NodeWindow(node: node.id, from: stoppedAt, to: back)]
  }

  private func network(_ fault: NetworkFaults.Fault, forMs length: Int64, into record: inout FaultRecord) async throws {
    try faults.install(fault)
    record.startedAt = Date()
    try? await Task.sleep(for: .milliseconds(length))
    faults.remove()
    record.endedAt = Date()
  }

  private func restartAll(atOnce: Bool, into record: inout FaultRecord) async throws {
    let leader = try await currentLeader()
    record.node = leader.id
    record.term = leader.term
    let running = try cluster.nodes.map { node -> (node: ChaosNode, process: NodeProcess) in
      guard let process = try node.process() else { throw CommandFailure(message: cluster.noProcess(node)) }
      return (node, process)
    }
    let order = running.filter { $0.node.id != leader.id } + running.filter { $0.node.id == leader.id }
    record.startedAt = Date()
    let groups = atOnce ? [order] : order.map { [$0] }
    let taskCount =
      (try? await cluster.client.tasks(service: serviceSpec.name, stale: true).tasks.filter {
        $0.desired == .running && $0.state == .running
      }.count) ?? 0
    for group in groups {
      let stoppedAt = Date()
      _ = await stopNodeProcesses(group, timeout: .seconds(30))
      for entry in group { _ = try entry.node.start() }
      for entry in group {
        let member = entry.node
        if !atOnce { _ = try await cluster.waitForRejoin(member.id, within: .seconds(60)) }
        let back = try? await waitForListener(
          host: member.address, port: serviceSpec.productionPort, within: .seconds(60))
        record.windows.append(NodeWindow(node: member.id, from: stoppedAt, to: back))
      }
      say("restarted " + group.map(\.node.id).joined(separator: ", "))
      // A node stops its tasks when it stops: the next one goes only once they were replaced and
      // are healthy again, or the restarts would take a revision below its circuit breaker's floor.
      if !atOnce, let node = group.first?.node, node.id != order.last?.node.id {
        try await waitForHealthyTasks(count: taskCount, node: node.id, since: stoppedAt, within: .seconds(90))
      }
    }
    if atOnce { _ = try await cluster.waitForAll(up: cluster.nodes.map(\.id), within: .seconds(60)) }
    record.endedAt = Date()
  }

  /// Waits until the service has `count` tasks meant to run, all running and healthy, none of
  /// them on `node` started before `since` (the node kills its old tasks when it starts again, and
  /// the cluster replaces them: a stale view would still show the old ones healthy).
  private func waitForHealthyTasks(count: Int, node: String, since: Date, within: Duration) async throws {
    let clock = ContinuousClock()
    let deadline = clock.now + within
    var last = "no answer"
    while clock.now < deadline {
      if let tasks = try? await cluster.client.tasks(service: serviceSpec.name, stale: true).tasks {
        let meant = tasks.filter { $0.desired == .running }
        let healthy = meant.filter {
          $0.state == .running && $0.healthy && !($0.node == node && ($0.startedAt ?? .distantPast) < since)
        }
        if healthy.count >= count && healthy.count == meant.count { return }
        last = "\(healthy.count) of \(count) tasks running healthy"
      }
      try await Task.sleep(for: .milliseconds(200))
    }
    throw CommandFailure(message: "the service's tasks are not back after \(formatSeconds(within)) (\(last))")
  }

  private func killTask(_ selector: NodeSelector?, into record: inout FaultRecord) async throws {
    var node: String?
    if let selector { node = try await resolve(selector).0.id }
    let tasks = try await cluster.client.tasks(service: serviceSpec.name, node: node, stale: true).tasks
    for task in tasks where task.state == .running && task.desired == .running {
      guard let host = cluster.targets.node(task.node),
        let group = try host.taskGroups().first(where: { $0.task == task.id })
      else { continue }
      host.killTaskGroups([group.group])
      record.node = task.node
      record.startedAt = Date()
      record.endedAt = record.startedAt
      return
    }
    throw CommandFailure(message: "no running task of \(serviceSpec.name)" + (node.map { " on \($0)" } ?? ""))
  }

  // MARK: - Watching

  /// One poller per node: its cluster status (who leads, in which term) and the deployment being
  /// watched, every 100 ms. Each node is asked for itself, so that a partitioned or paused node
  /// delays only its own answers.
  private func startPollers() -> [Task<Void, Never>] {
    cluster.nodes.compactMap { node -> Task<Void, Never>? in
      guard let client = try? cluster.targets.client(for: [node], maxAttempts: 1) else {
        return nil
      }
      let log = self.log
      return Task {
        defer { Task { await client.shutdown() } }
        while !Task.isCancelled {
          if let status = try? await client.clusterStatus(stale: true) {
            await log.status(from: node.id, leader: status.leader, term: status.term, at: Date())
          }
          if let id = await log.watched(), let view = try? await client.deployment(id, stale: true) {
            await log.view(view, at: Date())
          }
          try? await Task.sleep(for: .milliseconds(100))
        }
      }
    }
  }

  /// Polls `GET /` on a listener until it answers 2xx; returns when it did.
  @discardableResult
  func waitForListener(host: String, port: Int, within: Duration) async throws -> Date {
    let clock = ContinuousClock()
    let deadline = clock.now + within
    var last = "no answer yet"
    while clock.now < deadline {
      do {
        let connection = try await HTTPConnection.connect(host: host, port: port, timeout: .seconds(1))
        let response = try await connection.request(
          method: .GET, path: scenario.traffic.getPath, timeout: .seconds(2))
        await connection.close()
        if (200..<300).contains(response.status) { return Date() }
        last = "status \(response.status)"
      } catch {
        last = "\(error)"
      }
      try await Task.sleep(for: .milliseconds(100))
    }
    throw CommandFailure(
      message: "the listener \(host):\(port) did not answer within \(formatSeconds(within)) (\(last))")
  }
}

/// The node processes a run stopped (SIGSTOP) and has not resumed: resumed however the run ends.
final class PausedProcesses: @unchecked Sendable {
  private let lock = NSLock()
  private var stopped: [(node: ChaosNode, process: NodeProcess)] = []

  func add(_ node: ChaosNode, _ process: NodeProcess) { lock.withLock { stopped.append((node, process)) } }
  func remove(_ process: NodeProcess) { lock.withLock { stopped.removeAll { $0.process == process } } }

  /// SIGCONT to every process this run stopped, and to every node process on this machine (a
  /// stopped node there is cheap to find; one behind an exec prefix costs a command, so only those
  /// this run stopped).
  func resumeAll(_ nodes: [ChaosNode]) {
    let entries = lock.withLock { stopped }
    for entry in entries { try? entry.node.signal(entry.process, SIGCONT) }
    for node in nodes where node.host == .local {
      if let process = try? node.process(), !entries.contains(where: { $0.process == process }) {
        try? node.signal(process, SIGCONT)
      }
    }
    lock.withLock { stopped.removeAll() }
  }
}

// MARK: - What the run saw

/// The shared record of a run: the leaders the pollers saw, the deployments, the faults.
actor RunLog {
  private var startedAt = Date()
  private var reports: [String: (leader: String?, term: UInt64, at: Date)] = [:]
  private(set) var leaders: [LeaderChange] = []
  private var ids: [String] = []
  private var views: [String: DeploymentView] = [:]
  private var tracked: [String: Tracked] = [:]
  private var faults: [Int: FaultRecord] = [:]
  private var fired: Set<Int> = []
  private var tasks: [Task<Void, Never>] = []

  struct Tracked {
    var notes: [Note] = []
    var seen: Set<String> = []
    var weights: [WeightPoint] = []
    var controllers: [ControllerChange] = []
  }

  func setStart(_ date: Date) { startedAt = date }

  func status(from node: String, leader: String?, term: UInt64, at: Date) {
    reports[node] = (leader, term, at)
    // The highest term any node reported in the last 1.5 s, and its leader.
    let fresh = reports.values.filter { at.timeIntervalSince($0.at) < 1.5 }
    guard let top = fresh.map(\.term).max() else { return }
    let leader = fresh.filter { $0.term == top }.compactMap(\.leader).first
    if let last = leaders.last, last.term == top, last.leader == leader { return }
    if let last = leaders.last, last.term > top { return }
    leaders.append(LeaderChange(at: at, leader: leader, term: top))
  }

  func freshLeader() -> (id: String, term: UInt64)? {
    guard let last = leaders.last, let leader = last.leader else { return nil }
    let newest = reports.values.map(\.at).max() ?? .distantPast
    return Date().timeIntervalSince(newest) < 1 ? (leader, last.term) : nil
  }

  func watch(_ id: String) { ids.append(id) }
  func watched() -> String? { ids.last }
  func latest(_ id: String) -> DeploymentView? { views[id] }

  func view(_ view: DeploymentView, at: Date) {
    if let known = views[view.id], known.updatedAt > view.updatedAt { return }
    if let known = views[view.id], known.isFinished, !view.isFinished { return }
    views[view.id] = view
    var track = tracked[view.id] ?? Tracked()
    for note in view.recent {
      let key = "\(note.at.timeIntervalSince1970) \(note.message)"
      if track.seen.insert(key).inserted { track.notes.append(Note(at: note.at, message: note.message)) }
    }
    track.notes.sort { $0.at < $1.at }
    let weight = WeightPoint(
      at: at, productionGreen: view.weights.production.green, testGreen: view.weights.test.green)
    if track.weights.last.map({ $0.productionGreen != weight.productionGreen || $0.testGreen != weight.testGreen })
      ?? true
    {
      // The log time of the change when the history names it (`routes generation G: ...`).
      var point = weight
      if let note = track.notes.last(where: { $0.message.hasPrefix("routes generation \(view.weights.generation):") }) {
        point.at = note.at
      }
      track.weights.append(point)
    }
    if let controller = view.controller,
      track.controllers.last.map({ $0.node != controller.node || $0.term != controller.term }) ?? true
    {
      track.controllers.append(ControllerChange(at: at, node: controller.node, term: controller.term))
    }
    tracked[view.id] = track
  }

  /// What the schedule needs of the deployment watched now.
  func progress(finished: Bool) -> DeploymentProgress {
    guard let id = ids.last, let view = views[id] else { return DeploymentProgress(startedAt: startedAt) }
    let stages = view.stageTimeline.compactMap { entry in
      LifecycleStage(rawValue: entry.stage).map { (stage: $0, enteredAt: entry.enteredAt) }
    }
    var steps: [Date] = []
    if let production = stages.last(where: { $0.stage == .PRODUCTION_TRAFFIC_SHIFT }) {
      steps.append(production.enteredAt)
      for note in tracked[id]?.notes ?? [] where note.message.hasPrefix("production step ") {
        steps.append(note.at)
      }
    }
    return DeploymentProgress(
      startedAt: startedAt, stages: stages, bakeSeconds: view.bake?.seconds ?? 0, steps: steps,
      finished: finished || view.isFinished)
  }

  func isUnfired(_ index: Int) -> Bool { !fired.contains(index) }
  func started(_ index: Int) { fired.insert(index) }
  func running(_ task: Task<Void, Never>) { tasks.append(task) }

  func record(_ fault: FaultRecord) {
    fired.insert(fault.planned.index)
    faults[fault.planned.index] = fault
  }

  func hasUnfired(_ planned: [PlannedFault]) -> Bool { planned.contains { !fired.contains($0.index) } }

  func hasPendingTimeFaults(_ planned: [PlannedFault]) -> Bool {
    planned.contains {
      guard !fired.contains($0.index) else { return false }
      if case .after = $0.trigger { return true }
      return false
    }
  }

  func markUnfired(_ planned: [PlannedFault], reason: String) {
    for fault in planned where !fired.contains(fault.index) {
      record(FaultRecord(planned: fault, error: "never fired: \(reason)"))
    }
  }

  func waitForRunningFaults() async {
    while !tasks.isEmpty {
      let task = tasks.removeFirst()
      await task.value
    }
  }

  func observations(
    scenario: String, seed: UInt64?, startedAt: Date, endedAt: Date, planned: [PlannedFault],
    listeners: [ListenerInfo], requests: [RequestSample], dropped: Int
  ) -> RunObservations {
    let deployments = ids.compactMap { id -> ObservedDeployment? in
      guard let view = views[id] else { return nil }
      let track = tracked[id] ?? Tracked()
      return ObservedDeployment(
        id: view.id, strategy: view.strategy, blue: view.blue, green: view.green, status: view.status,
        reason: view.reason, stages: view.stageTimeline.map { StageEntry(stage: $0.stage, enteredAt: $0.enteredAt) },
        bakeSeconds: view.bake?.seconds ?? 0, bakeEndsAt: view.bake?.endsAt,
        hooks: view.hooks.map {
          HookReport(stage: $0.stage, executionId: $0.executionId, calls: $0.attempts, result: $0.result)
        }, notes: track.notes, weights: track.weights, controllers: track.controllers)
    }
    let records = planned.map { faults[$0.index] ?? FaultRecord(planned: $0, error: "never fired") }
    return RunObservations(
      scenario: scenario, seed: seed, startedAt: startedAt, endedAt: endedAt, deployments: deployments,
      faults: records, leaders: leaders, listeners: listeners, requests: requests, droppedRequests: dropped)
  }
}
