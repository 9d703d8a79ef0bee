// The report of a chaos run: what the command observed (deployments, faults, leaders, requests) in,
// the outcome against the expectation out. Pure: `ChaosReport.build` is a function of its input.

import Foundation

// MARK: - What the command observed

/// One request the traffic generator made, reduced to what the report needs.
public struct RequestSample: Sendable, Hashable {
  /// Index into ``RunObservations/listeners``.
  public var listener: Int
  /// Start and end on the wall clock, ns since 1970.
  public var startNs: Int64
  public var endNs: Int64
  /// A 2xx answer.
  public var ok: Bool
  /// The status of a complete answer, nil when there was none.
  public var status: Int?
  /// Why there was no answer (`connectRefused`, `timeout`, ...), nil when there was one.
  public var failure: String?
  /// `x-teal-revision` of the answer.
  public var revision: String?
  /// `GET`, `POST`, ...
  public var method: String
  /// `x-teal-generation` of the answer: the routes generation the listener's balancer used.
  public var generation: Int?

  public init(
    listener: Int, startNs: Int64, endNs: Int64, ok: Bool, status: Int?, failure: String?, revision: String?,
    method: String = "GET", generation: Int? = nil
  ) {
    self.listener = listener
    self.startNs = startNs
    self.endNs = endNs
    self.ok = ok
    self.status = status
    self.failure = failure
    self.revision = revision
    self.method = method
    self.generation = generation
  }
}

/// A production listener: `127.0.0.2:8180` of node n2.
public struct ListenerInfo: Sendable, Hashable {
  public var address: String
  public var node: String
  public init(address: String, node: String) {
    self.address = address
    self.node = node
  }
}

/// A span during which a node's own process was stopped by a fault (killed or paused) until its
/// listener answered again.
public struct NodeWindow: Codable, Sendable, Hashable {
  public var node: String
  public var from: Date
  public var to: Date?
  public init(node: String, from: Date, to: Date?) {
    self.node = node
    self.from = from
    self.to = to
  }
}

/// A fault as the command made it.
public struct FaultRecord: Sendable, Hashable {
  public var planned: PlannedFault
  /// The node(s) it hit, as resolved when it fired (`leader` → n2).
  public var node: String?
  public var from: String?
  /// The leader's term when it fired (for faults on the leader).
  public var term: UInt64?
  public var startedAt: Date?
  /// When it was undone (resumed, healed, restarted, or the kill for a kill without restart).
  public var endedAt: Date?
  public var windows: [NodeWindow]
  /// Why it could not be made, or why it never fired.
  public var error: String?

  public init(
    planned: PlannedFault, node: String? = nil, from: String? = nil, term: UInt64? = nil, startedAt: Date? = nil,
    endedAt: Date? = nil, windows: [NodeWindow] = [], error: String? = nil
  ) {
    self.planned = planned
    self.node = node
    self.from = from
    self.term = term
    self.startedAt = startedAt
    self.endedAt = endedAt
    self.windows = windows
    self.error = error
  }
}

/// A deployment as the command watched it.
public struct ObservedDeployment: Sendable, Hashable {
  public var id: String
  public var strategy: String
  public var blue: String
  public var green: String
  public var status: String
  public var reason: String?
  public var stages: [StageEntry]
  public var bakeSeconds: Double
  public var bakeEndsAt: Date?
  public var hooks: [HookReport]
  /// History lines (log time), oldest first, without repeats.
  public var notes: [Note]
  /// The committed weights each time they changed.
  public var weights: [WeightPoint]
  /// The controller each time it changed.
  public var controllers: [ControllerChange]

  public init(
    id: String, strategy: String, blue: String, green: String, status: String, reason: String?,
    stages: [StageEntry], bakeSeconds: Double, bakeEndsAt: Date?, hooks: [HookReport], notes: [Note],
    weights: [WeightPoint], controllers: [ControllerChange]
  ) {
    self.id = id
    self.strategy = strategy
    self.blue = blue
    self.green = green
    self.status = status
    self.reason = reason
    self.stages = stages
    self.bakeSeconds = bakeSeconds
    self.bakeEndsAt = bakeEndsAt
    self.hooks = hooks
    self.notes = notes
    self.weights = weights
    self.controllers = controllers
  }
}

public struct StageEntry: Codable, Sendable, Hashable {
  public var stage: String
  public var enteredAt: Date
  public init(stage: String, enteredAt: Date) {
    self.stage = stage
    self.enteredAt = enteredAt
  }
}

public struct HookReport: Codable, Sendable, Hashable {
  public var stage: String
  public var executionId: String
  /// Calls made for this execution (one per attempt).
  public var calls: Int
  public var result: String?
  public init(stage: String, executionId: String, calls: Int, result: String?) {
    self.stage = stage
    self.executionId = executionId
    self.calls = calls
    self.result = result
  }
}

public struct Note: Codable, Sendable, Hashable {
  public var at: Date
  public var message: String
  public init(at: Date, message: String) {
    self.at = at
    self.message = message
  }
}

public struct WeightPoint: Codable, Sendable, Hashable {
  public var at: Date
  /// Percent of production traffic on green.
  public var productionGreen: Double
  public var testGreen: Double
  public init(at: Date, productionGreen: Double, testGreen: Double) {
    self.at = at
    self.productionGreen = productionGreen
    self.testGreen = testGreen
  }
}

public struct ControllerChange: Codable, Sendable, Hashable {
  public var at: Date
  public var node: String
  public var term: UInt64
  public init(at: Date, node: String, term: UInt64) {
    self.at = at
    self.node = node
    self.term = term
  }
}

public struct LeaderChange: Codable, Sendable, Hashable {
  public var at: Date
  /// Nil while no node reports a leader.
  public var leader: String?
  public var term: UInt64
  public init(at: Date, leader: String?, term: UInt64) {
    self.at = at
    self.leader = leader
    self.term = term
  }
}

/// Everything one run observed: the input of ``ChaosReport/build(_:expect:)``.
public struct RunObservations: Sendable {
  public var scenario: String
  public var seed: UInt64?
  public var startedAt: Date
  public var endedAt: Date
  public var deployments: [ObservedDeployment]
  public var faults: [FaultRecord]
  public var leaders: [LeaderChange]
  public var listeners: [ListenerInfo]
  public var requests: [RequestSample]
  /// Requests the generator counted but whose record its bounded list dropped.
  public var droppedRequests: Int

  public init(
    scenario: String, seed: UInt64?, startedAt: Date, endedAt: Date, deployments: [ObservedDeployment],
    faults: [FaultRecord], leaders: [LeaderChange], listeners: [ListenerInfo], requests: [RequestSample],
    droppedRequests: Int = 0
  ) {
    self.scenario = scenario
    self.seed = seed
    self.startedAt = startedAt
    self.endedAt = endedAt
    self.deployments = deployments
    self.faults = faults
    self.leaders = leaders
    self.listeners = listeners
    self.requests = requests
    self.droppedRequests = droppedRequests
  }
}

// MARK: - The report

public struct ChaosReport: Codable, Sendable, Hashable {
  public var scenario: String
  public var seed: UInt64?
  public var startedAt: Date
  public var endedAt: Date
  public var seconds: Double
  /// Every check passed: the outcome is the expected one.
  public var passed: Bool
  public var checks: [Check]
  public var deployments: [DeploymentReport]
  public var faults: [FaultReport]
  public var leaders: [LeaderChange]
  public var listeners: [ListenerReport]
  public var totals: Totals
  /// The width of each point of ``ListenerReport/series``.
  public var bucketSeconds: Double
  /// Requests counted but not in the record list (the counts of the listeners do not include them).
  public var droppedRequests: Int

  public struct Check: Codable, Sendable, Hashable {
    public var name: String
    public var expected: String
    public var observed: String
    public var passed: Bool
  }

  public struct DeploymentReport: Codable, Sendable, Hashable {
    public var id: String
    public var strategy: String
    public var blue: String
    public var green: String
    public var status: String
    public var reason: String?
    public var stages: [StageEntry]
    public var bake: Bake
    public var hooks: [HookReport]
    public var controllers: [ControllerChange]
    public var weights: [WeightPoint]
    public var notes: [Note]
  }

  public struct Bake: Codable, Sendable, Hashable {
    public var configuredSeconds: Double
    /// CLEAN_UP entered − BAKE_TIME entered (log times).
    public var observedSeconds: Double?
    public var deviationSeconds: Double?
    public var endsAt: Date?
  }

  public struct FaultReport: Codable, Sendable, Hashable {
    public var index: Int
    public var kind: String
    public var summary: String
    public var origin: String
    public var trigger: String
    public var node: String?
    public var from: String?
    public var term: UInt64?
    public var startedAt: Date?
    public var endedAt: Date?
    public var processFault: Bool
    /// The fault takes the leader out (kill, pause or partition of the leader, restart-all): a new
    /// leader is expected.
    public var takesLeader: Bool
    public var windows: [NodeWindow]
    public var error: String?
    /// For a fault on the leader's process or network: the next leader and how long it took.
    public var newLeader: String?
    public var timeToLeaderSeconds: Double?
    /// The first history line of the deployment after the fault, and how long after it came.
    public var firstAction: String?
    public var timeToFirstActionSeconds: Double?
  }

  public struct ListenerReport: Codable, Sendable, Hashable {
    public var listener: String
    public var node: String
    public var sent: Int
    public var ok: Int
    /// Requests without a 2xx answer (no answer, or another status).
    public var failed: Int
    /// Requests that overlapped a process fault of this listener's own node, and how many of them failed.
    public var sentUnderFault: Int
    public var failedUnderFault: Int
    /// `failed - failedUnderFault`: must be within the expectation.
    public var failedOutsideFaults: Int
    /// Failed requests by why (`connectRefused`, `timeout`, `status 503`, ...).
    public var failures: [String: Int]
    public var servedByRevision: [String: Int]
    public var series: [Bucket]
    /// The first ``maximumFailuresListed`` failed requests outside faults, oldest first, to find
    /// them in the nodes' logs (nil in reports written before the list existed).
    public var failedOutsideFaultsList: [FailedRequest]? = nil
  }

  /// How many failed requests outside faults each listener lists.
  public static let maximumFailuresListed = 20

  /// One failed request outside faults.
  public struct FailedRequest: Codable, Sendable, Hashable {
    /// When it started on the wall clock (the run's start is the report's `startedAt`), and how
    /// long it took.
    public var at: Date
    public var seconds: Double
    public var method: String
    /// `status 502`, `connectRefused`, ...
    public var failure: String
    /// `x-teal-revision` and `x-teal-generation` of the answer, if there was one.
    public var revision: String?
    public var generation: Int?
  }

  public struct Bucket: Codable, Sendable, Hashable {
    /// Seconds from the start of the run.
    public var t: Double
    public var sent: Int
    public var failed: Int
    /// Answers from the green revision of the deployment in progress, and all answers.
    public var green: Int
    public var answered: Int
  }

  public struct Totals: Codable, Sendable, Hashable {
    public var sent: Int
    public var ok: Int
    public var failed: Int
    public var failedUnderFault: Int
    public var failedOutsideFaults: Int
  }
}

extension ChaosReport {
  /// The report of `run` against `expect`.
  public static func build(_ run: RunObservations, expect: ChaosExpectation, bucketSeconds: Double = 1) -> ChaosReport {
    precondition(bucketSeconds > 0, "a report's buckets have a positive width")
    let deployments = run.deployments.map(deploymentReport)
    let faults = run.faults.map { faultReport($0, run) }
    let listeners = listenerReports(run, bucketSeconds: bucketSeconds)
    let totals = Totals(
      sent: listeners.map(\.sent).reduce(0, +), ok: listeners.map(\.ok).reduce(0, +),
      failed: listeners.map(\.failed).reduce(0, +), failedUnderFault: listeners.map(\.failedUnderFault).reduce(0, +),
      failedOutsideFaults: listeners.map(\.failedOutsideFaults).reduce(0, +))
    var report = ChaosReport(
      scenario: run.scenario, seed: run.seed, startedAt: run.startedAt, endedAt: run.endedAt,
      seconds: run.endedAt.timeIntervalSince(run.startedAt), passed: false, checks: [], deployments: deployments,
      faults: faults, leaders: run.leaders, listeners: listeners, totals: totals, bucketSeconds: bucketSeconds,
      droppedRequests: run.droppedRequests)
    report.checks = checks(report, expect)
    report.passed = report.checks.allSatisfy(\.passed)
    return report
  }

  static func deploymentReport(_ deployment: ObservedDeployment) -> DeploymentReport {
    let bakeStart = deployment.stages.last(where: { $0.stage == "BAKE_TIME" })?.enteredAt
    let cleanUp = deployment.stages.last(where: { $0.stage == "CLEAN_UP" })?.enteredAt
    var observed: Double?
    if let bakeStart, let cleanUp { observed = cleanUp.timeIntervalSince(bakeStart) }
    return DeploymentReport(
      id: deployment.id, strategy: deployment.strategy, blue: deployment.blue, green: deployment.green,
      status: deployment.status, reason: deployment.reason, stages: deployment.stages,
      bake: Bake(
        configuredSeconds: deployment.bakeSeconds, observedSeconds: observed,
        deviationSeconds: observed.map { $0 - deployment.bakeSeconds }, endsAt: deployment.bakeEndsAt),
      hooks: deployment.hooks, controllers: deployment.controllers, weights: deployment.weights,
      notes: deployment.notes)
  }

  static func faultReport(_ fault: FaultRecord, _ run: RunObservations) -> FaultReport {
    var report = FaultReport(
      index: fault.planned.index, kind: fault.planned.action.kind, summary: fault.planned.action.summary,
      origin: fault.planned.origin, trigger: fault.planned.trigger.description, node: fault.node, from: fault.from,
      term: fault.term, startedAt: fault.startedAt, endedAt: fault.endedAt,
      processFault: fault.planned.action.isProcessFault, takesLeader: hitsLeader(fault.planned.action),
      windows: fault.windows, error: fault.error)
    guard let start = fault.startedAt, fault.error == nil else { return report }
    // A new leader: the first one reported after the fault that is another node or a later term.
    if let term = fault.term, let old = fault.node, report.takesLeader {
      if let next = run.leaders.first(where: {
        $0.at >= start && $0.leader != nil && ($0.leader != old || $0.term > term)
      }) {
        report.newLeader = next.leader
        report.timeToLeaderSeconds = next.at.timeIntervalSince(start)
      }
    }
    // The new controller's first action: the first history line after the fault and, when a new
    // leader came, not before it was seen (less the watch's polling slack).
    let notes = run.deployments.flatMap(\.notes).sorted { $0.at < $1.at }
    let after = report.timeToLeaderSeconds.map { start.addingTimeInterval($0 - leaderPollSlack) } ?? start
    if let first = notes.first(where: { $0.at > start && $0.at >= after }) {
      report.firstAction = first.message
      report.timeToFirstActionSeconds = first.at.timeIntervalSince(start)
    }
    return report
  }

  /// How much earlier than the watch saw it a new leader may have acted (its polls are 100 ms apart).
  static let leaderPollSlack = 0.5

  /// Whether the fault takes the leader out (so that a new one is expected).
  static func hitsLeader(_ action: FaultAction) -> Bool {
    switch action {
    case .kill(.leader, _, _), .pause(.leader, _), .partition(.leader, nil, _): true
    case .restartAll: true
    default: false
    }
  }

  static func listenerReports(_ run: RunObservations, bucketSeconds: Double) -> [ListenerReport] {
    let startNs = Int64(run.startedAt.timeIntervalSince1970 * 1e9)
    let bucketNs = Int64(bucketSeconds * 1e9)
    let buckets = max(1, Int((run.endedAt.timeIntervalSince(run.startedAt) / bucketSeconds).rounded(.up)) + 1)
    let greens = Set(run.deployments.map(\.green))
    let endNs = Int64(run.endedAt.timeIntervalSince1970 * 1e9)
    // Process-fault windows of each node, in ns.
    var windows: [String: [(Int64, Int64)]] = [:]
    for fault in run.faults where fault.planned.action.isProcessFault {
      for window in fault.windows {
        let from = Int64(window.from.timeIntervalSince1970 * 1e9)
        let to = window.to.map { Int64($0.timeIntervalSince1970 * 1e9) } ?? endNs
        windows[window.node, default: []].append((from, to))
      }
    }
    var reports = run.listeners.map { listener in
      ListenerReport(
        listener: listener.address, node: listener.node, sent: 0, ok: 0, failed: 0, sentUnderFault: 0,
        failedUnderFault: 0, failedOutsideFaults: 0, failures: [:], servedByRevision: [:],
        series: (0..<buckets).map { Bucket(t: Double($0) * bucketSeconds, sent: 0, failed: 0, green: 0, answered: 0) })
    }
    for request in run.requests where reports.indices.contains(request.listener) {
      let node = run.listeners[request.listener].node
      let underFault = (windows[node] ?? []).contains { request.startNs <= $0.1 && request.endNs >= $0.0 }
      let bucket = min(buckets - 1, max(0, Int((request.startNs - startNs) / max(1, bucketNs))))
      var report = reports[request.listener]
      report.sent += 1
      report.series[bucket].sent += 1
      if underFault { report.sentUnderFault += 1 }
      if request.ok {
        report.ok += 1
      } else {
        report.failed += 1
        report.series[bucket].failed += 1
        let why = request.failure ?? "status \(request.status.map(String.init) ?? "?")"
        if underFault {
          report.failedUnderFault += 1
        } else {
          report.failedOutsideFaults += 1
          var listed = report.failedOutsideFaultsList ?? []
          if listed.count < Self.maximumFailuresListed {
            listed.append(
              FailedRequest(
                at: Date(timeIntervalSince1970: Double(request.startNs) / 1e9),
                seconds: Double(request.endNs - request.startNs) / 1e9, method: request.method, failure: why,
                revision: request.revision, generation: request.generation))
            report.failedOutsideFaultsList = listed
          }
        }
        report.failures[why, default: 0] += 1
      }
      if request.status != nil {
        report.servedByRevision[request.revision ?? "-", default: 0] += 1
        report.series[bucket].answered += 1
        if let revision = request.revision, greens.contains(revision) { report.series[bucket].green += 1 }
      }
      reports[request.listener] = report
    }
    return reports
  }

  static func checks(_ report: ChaosReport, _ expect: ChaosExpectation) -> [Check] {
    var checks: [Check] = []
    if report.deployments.isEmpty {
      checks.append(Check(name: "deployment", expected: "one submitted", observed: "none", passed: false))
    }
    for deployment in report.deployments {
      checks.append(
        Check(
          name: "\(deployment.id) status", expected: expect.status,
          observed: deployment.status + (deployment.reason.map { " (\($0))" } ?? ""),
          passed: deployment.status == expect.status))
      if let bound = expect.bakeDeviationMs, deployment.bake.configuredSeconds > 0, expect.status == "SUCCESSFUL" {
        let limit = Double(bound) / 1000
        let expected = "\(formatNumber(deployment.bake.configuredSeconds)) s ± \(formatNumber(limit)) s"
        if let observed = deployment.bake.observedSeconds {
          var passed = abs(observed - deployment.bake.configuredSeconds) <= limit + 1e-9
          var note = ""
          // A deadline that fell while no leader could act: CLEAN_UP as soon as the new one came.
          if !passed, observed > deployment.bake.configuredSeconds,
            let start = deployment.stages.last(where: { $0.stage == "BAKE_TIME" })?.enteredAt,
            let cleanUp = deployment.stages.last(where: { $0.stage == "CLEAN_UP" })?.enteredAt
          {
            let due = start.addingTimeInterval(deployment.bake.configuredSeconds)
            for fault in report.faults where fault.takesLeader {
              guard let from = fault.startedAt, let gap = fault.timeToLeaderSeconds else { continue }
              let newLeader = from.addingTimeInterval(gap)
              if from <= due && due <= newLeader && cleanUp.timeIntervalSince(newLeader) <= limit + 1e-9 {
                passed = true
                note =
                  " (the deadline fell in fault \(fault.index)'s failover; CLEAN_UP "
                  + "\(formatNumber(cleanUp.timeIntervalSince(newLeader))) s after the new leader)"
              }
            }
          }
          checks.append(
            Check(
              name: "\(deployment.id) bake", expected: expected, observed: formatNumber(observed) + " s" + note,
              passed: passed))
        } else {
          checks.append(
            Check(
              name: "\(deployment.id) bake", expected: expected, observed: "BAKE_TIME or CLEAN_UP not entered",
              passed: false))
        }
      }
    }
    for fault in report.faults {
      checks.append(
        Check(
          name: "fault \(fault.index) (\(fault.summary))", expected: "made at \(fault.trigger)",
          observed: fault.error ?? "made" + (fault.node.map { " on \($0)" } ?? ""),
          passed: fault.error == nil && fault.startedAt != nil))
      if let bound = expect.maximumTimeToLeaderMs, fault.takesLeader {
        let limit = Double(bound) / 1000
        checks.append(
          Check(
            name: "fault \(fault.index) new leader", expected: "within \(formatNumber(limit)) s",
            observed: fault.timeToLeaderSeconds.map { "\(fault.newLeader ?? "?") after \(formatNumber($0)) s" }
              ?? "none seen",
            passed: (fault.timeToLeaderSeconds ?? .infinity) <= limit))
      }
    }
    let outside = report.listeners.map { "\($0.node) \($0.failedOutsideFaults)" }.joined(separator: ", ")
    checks.append(
      Check(
        name: "failed requests outside process faults", expected: "at most \(expect.failedRequests)",
        observed: "\(report.totals.failedOutsideFaults) (\(outside))",
        passed: report.totals.failedOutsideFaults <= expect.failedRequests))
    if let bound = expect.failedUnderFault {
      checks.append(
        Check(
          name: "failed requests under process faults", expected: "at most \(bound)",
          observed: "\(report.totals.failedUnderFault)", passed: report.totals.failedUnderFault <= bound))
    }
    let silent = report.listeners.filter { $0.ok == 0 }.map(\.listener)
    checks.append(
      Check(
        name: "traffic answered on every listener", expected: "at least one 2xx each",
        observed: silent.isEmpty ? "yes" : "none at " + silent.joined(separator: ", "), passed: silent.isEmpty))
    return checks
  }

  // MARK: - JSON

  /// The report as JSON (dates as ISO 8601 UTC with milliseconds, keys sorted).
  public func json() -> String {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
    encoder.dateEncodingStrategy = .custom { date, encoder in
      var container = encoder.singleValueContainer()
      try container.encode(formatDate(date))
    }
    guard let data = try? encoder.encode(self) else { preconditionFailure("a chaos report always encodes") }
    return String(decoding: data, as: UTF8.self)
  }

  /// Reads ``json()``'s text back.
  public static func decode(_ data: Data) throws -> ChaosReport {
    let decoder = JSONDecoder()
    decoder.dateDecodingStrategy = .custom { decoder in
      let text = try decoder.singleValueContainer().decode(String.self)
      guard let date = parseDate(text) else {
        throw DecodingError.dataCorrupted(
          .init(codingPath: decoder.codingPath, debugDescription: "not a date: \(text)"))
      }
      return date
    }
    return try decoder.decode(ChaosReport.self, from: data)
  }
}

/// `2026-12-01T11:32:04.210Z`.
public func formatDate(_ date: Date) -> String {
  let formatter = ISO8601DateFormatter()
  formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
  formatter.timeZone = TimeZone(identifier: "UTC")
  return formatter.string(from: date)
}

func parseDate(_ text: String) -> Date? {
  let formatter = ISO8601DateFormatter()
  formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
  return formatter.date(from: text) ?? ISO8601DateFormatter().date(from: text)
}
