// A chaos scenario (`teal chaos run SCENARIO.yaml`): the deployment, the faults and when they
// strike, the traffic, and the outcome expected. Pure: the file's text in, a checked scenario out,
// or an error naming the field and its line. Docs/CHAOS.md describes the format and its limits.

import TealDeploy

/// Bounds on a scenario file, checked by ``ScenarioParser``.
public enum ScenarioLimits {
  /// Largest scenario file read (64 KiB).
  public static let maximumBytes = 64 * 1024
  /// Entries in `faults` (each may repeat, see ``maximumRepeats``).
  public static let maximumFaultEntries = 100
  /// Times one entry fires (`count`).
  public static let maximumRepeats = 100
  /// Faults a whole run may fire, after repeats and random faults are expanded.
  public static let maximumPlannedFaults = 1_000
  /// Longest fault (`for`), restart delay or repeat period: 1 h.
  public static let maximumFaultMilliseconds: Int64 = 3_600_000
  /// Longest run (`duration`) and deployment timeout: 24 h.
  public static let maximumRunMilliseconds: Int64 = 86_400_000
  /// `set` entries in one section.
  public static let maximumOverrides = 64
  /// Keep-alive clients per listener (as TealTraffic allows).
  public static let clientsPerListener = 1...512
  /// Requests per second per client.
  public static let maximumRatePerClient = 1_000.0
  /// Loss percentages (100 % is a partition).
  public static let lossPercent = 1...99
}

/// Which node a fault is aimed at, resolved when it fires.
public enum NodeSelector: Hashable, Sendable, CustomStringConvertible {
  /// The leader the cluster reports at that moment.
  case leader
  /// A node that is not the leader at that moment (the first by id).
  case follower
  case node(String)

  init?(_ text: String) {
    switch text {
    case "leader": self = .leader
    case "follower": self = .follower
    default:
      guard !text.isEmpty, text.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == "_") })
      else { return nil }
      self = .node(text)
    }
  }

  public var description: String {
    switch self {
    case .leader: "leader"
    case .follower: "follower"
    case .node(let id): id
    }
  }
}

/// What a fault does (Docs/CHAOS.md, one per `teal chaos` command).
public enum FaultAction: Hashable, Sendable {
  /// SIGKILL to the node's teal process (and its tasks with `withTasks`); started again after
  /// `restartAfter` when given.
  case kill(NodeSelector, restartAfterMs: Int64?, withTasks: Bool)
  /// SIGSTOP, then SIGCONT after `forMs`.
  case pause(NodeSelector, forMs: Int64)
  /// The node's peer traffic cut (both ways; one way with `from`) for `forMs`.
  case partition(NodeSelector, from: NodeSelector?, forMs: Int64)
  /// `percent` of the node's peer packets dropped for `forMs`.
  case loss(NodeSelector, percent: Int, forMs: Int64)
  /// Every node restarted (rolling, or all at once).
  case restartAll(atOnce: Bool)
  /// SIGKILL to one running task of the deployed service (on `node` when given).
  case killTask(NodeSelector?)

  /// The name used in scenario files and reports.
  public var kind: String {
    switch self {
    case .kill(.leader, _, _): "kill-leader"
    case .kill: "kill"
    case .pause: "pause"
    case .partition: "partition"
    case .loss: "loss"
    case .restartAll: "restart-all"
    case .killTask: "kill-task"
    }
  }

  /// Whether the node's own process stops (its listener is then counted apart).
  public var isProcessFault: Bool {
    switch self {
    case .kill, .pause, .restartAll: true
    case .partition, .loss, .killTask: false
    }
  }

  /// One line: `kill-leader (restart after 1.0 s)`, `partition follower from leader for 5.0 s`.
  public var summary: String {
    switch self {
    case .kill(let node, let restart, let withTasks):
      let who = node == .leader ? "kill-leader" : "kill \(node)"
      return who + (withTasks ? " with its tasks" : "")
        + (restart.map { " (restart after \(formatMilliseconds($0)))" } ?? "")
    case .pause(let node, let length): return "pause \(node) for \(formatMilliseconds(length))"
    case .partition(let node, let from, let length):
      return "partition \(node)" + (from.map { " from \($0) (one way)" } ?? "") + " for \(formatMilliseconds(length))"
    case .loss(let node, let percent, let length):
      return "loss \(percent) % on \(node) for \(formatMilliseconds(length))"
    case .restartAll(let atOnce): return atOnce ? "restart-all at once" : "restart-all (rolling)"
    case .killTask(let node): return "kill-task" + (node.map { " on \($0)" } ?? "")
    }
  }
}

/// An offset after a stage's start.
public enum StageOffset: Hashable, Sendable, CustomStringConvertible {
  case milliseconds(Int64)
  /// A share of the configured bake time (only after BAKE_TIME): `BAKE_TIME+60%`; a repeated
  /// entry adds its period after that.
  case percentOfBake(Double, plusMilliseconds: Int64)

  public var description: String {
    switch self {
    case .milliseconds(let value): value == 0 ? "" : "+" + formatDuration(value)
    case .percentOfBake(let share, let plus):
      "+" + formatNumber(share) + "%" + (plus == 0 ? "" : "+" + formatDuration(plus))
    }
  }
}

/// When a fault strikes.
public enum FaultTrigger: Hashable, Sendable, CustomStringConvertible {
  /// When the deployment entered the stage (its stage timeline's log time), plus the offset.
  case stage(LifecycleStage, StageOffset)
  /// When the deployment made its n-th production traffic step (1-based; the controller's
  /// `production step n/m` history line), plus milliseconds.
  case step(Int, Int64)
  /// This long after the run started (the deployment was submitted).
  case after(Int64)

  public var description: String {
    switch self {
    case .stage(let stage, let offset): "\(stage.rawValue)\(offset)"
    case .step(let n, let offset): "STEP\(n)" + (offset == 0 ? "" : "+" + formatDuration(offset))
    case .after(let value): "after " + formatDuration(value)
    }
  }
}

/// One `faults` entry.
public struct FaultEntry: Hashable, Sendable {
  public var action: FaultAction
  public var trigger: FaultTrigger
  /// With `count` > 1: the period between firings.
  public var everyMs: Int64?
  public var count: Int
  /// Where it is in the file (1-based).
  public var line: Int?

  public init(action: FaultAction, trigger: FaultTrigger, everyMs: Int64? = nil, count: Int = 1, line: Int? = nil) {
    self.action = action
    self.trigger = trigger
    self.everyMs = everyMs
    self.count = count
    self.line = line
  }
}

/// `random`: faults drawn from a seed (the same seed, the same faults), at times after the start.
public struct RandomFaults: Hashable, Sendable {
  public var seed: UInt64
  public var count: Int
  /// The kinds to draw from: `kill-leader`, `pause`, `partition`, `loss`, `restart-all`.
  public var kinds: [String]
  /// Faults fall in [startMs, endMs] after the run started (`endMs` nil: the run's duration).
  public var startMs: Int64
  public var endMs: Int64?
  /// Each fault lasts between these (pause, partition, loss; the restart delay of a kill).
  public var minimumForMs: Int64
  public var maximumForMs: Int64
  /// At least this long between the end of one fault and the start of the next.
  public var gapMs: Int64

  public init(
    seed: UInt64, count: Int, kinds: [String], startMs: Int64, endMs: Int64?, minimumForMs: Int64,
    maximumForMs: Int64, gapMs: Int64
  ) {
    self.seed = seed
    self.count = count
    self.kinds = kinds
    self.startMs = startMs
    self.endMs = endMs
    self.minimumForMs = minimumForMs
    self.maximumForMs = maximumForMs
    self.gapMs = gapMs
  }

  public static let allowedKinds = ["kill-leader", "pause", "partition", "loss", "restart-all"]
}

/// `traffic`: what the generator sends to every node's production listener.
public struct TrafficPlan: Hashable, Sendable {
  public var clientsPerListener = 8
  public var getPath = "/"
  public var postPath = "/"
  /// Share of POSTs (0...1).
  public var postFraction = 0.0
  public var bodyBytes = 1024
  /// Requests per second per client (nil: as fast as answers come).
  public var ratePerClient: Double? = 20
  public var requestTimeoutMs: Int64 = 10_000

  public init() {}
}

/// `expect`: the outcome the run must show, else `teal chaos run` exits 1.
public struct ChaosExpectation: Hashable, Sendable {
  /// The deployment's final status.
  public var status = "SUCCESSFUL"
  /// |observed bake - configured bake| at most this (nil: not checked).
  public var bakeDeviationMs: Int64? = 1_000
  /// Requests without a 2xx answer allowed at listeners whose node was not under a process fault.
  public var failedRequests = 0
  /// The same for listeners under a process fault, during it (nil: any number).
  public var failedUnderFault: Int?
  /// Time from a leader's loss (kill, pause) to a new leader at most this (nil: not checked).
  public var maximumTimeToLeaderMs: Int64?

  public init() {}
}

/// A checked scenario.
public struct ChaosScenario: Hashable, Sendable {
  public var name: String
  public var description: String?
  /// The service spec file (relative to the scenario's directory) the service starts from.
  public var serviceSpec: String
  /// `service.set`: changes to that spec (as `teal deploy --set`), in order.
  public var serviceSet: [KeyValue]
  /// `deployment.set`: what the new revision changes (plus `strategy`, `bakeTime` shorthands).
  public var deploymentSet: [KeyValue]
  /// How long to wait for a deployment's final status.
  public var deploymentTimeoutMs: Int64
  /// With `duration`: deployments follow each other until it is over (a soak).
  public var durationMs: Int64?
  public var faults: [FaultEntry]
  public var random: RandomFaults?
  public var traffic: TrafficPlan
  public var expect: ChaosExpectation

  public init(name: String, serviceSpec: String) {
    self.name = name
    self.serviceSpec = serviceSpec
    serviceSet = []
    deploymentSet = []
    deploymentTimeoutMs = 180_000
    faults = []
    traffic = TrafficPlan()
    expect = ChaosExpectation()
  }
}

/// One `key: value` of a `set` section (a spec key path and a YAML value).
public struct KeyValue: Hashable, Sendable {
  public var key: String
  public var value: String
  public init(_ key: String, _ value: String) {
    self.key = key
    self.value = value
  }
}

// MARK: - Numbers and durations

/// `500ms`, `5s`, `1.5s`, `2m`, `1h` as milliseconds, or nil.
public func parseDurationMilliseconds(_ text: String) -> Int64? {
  let units: [(String, Double)] = [("ms", 1), ("s", 1000), ("m", 60_000), ("h", 3_600_000)]
  for (unit, scale) in units where text.hasSuffix(unit) {
    let number = text.dropLast(unit.count)
    guard !number.isEmpty, number.allSatisfy({ $0.isASCII && ($0.isNumber || $0 == ".") }),
      let value = Double(number), value.isFinite, value * scale <= 1e15
    else { return nil }
    return Int64((value * scale).rounded())
  }
  return nil
}

/// `1.5 s`.
public func formatMilliseconds(_ value: Int64) -> String { formatNumber(Double(value) / 1000, digits: 1) + " s" }

/// `6s`, `1.5s`, `500ms` (as a scenario writes it).
func formatDuration(_ value: Int64) -> String {
  value % 1000 == 0 ? "\(value / 1000)s" : (value < 1000 ? "\(value)ms" : formatNumber(Double(value) / 1000) + "s")
}

/// A number with at most `digits` decimals and no trailing zeros.
public func formatNumber(_ value: Double, digits: Int = 3) -> String {
  var scale = 1.0
  for _ in 0..<digits { scale *= 10 }
  let rounded = (value * scale).rounded() / scale
  if rounded == rounded.rounded() && abs(rounded) < 1e15 { return String(Int64(rounded)) }
  var text = String(rounded)
  if let dot = text.firstIndex(of: "."), text.distance(from: dot, to: text.endIndex) > digits + 1 {
    text = String(text[..<text.index(dot, offsetBy: digits + 1)])
  }
  return text
}
