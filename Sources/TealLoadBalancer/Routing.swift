// Routing: the pure core of the load balancer. Which target groups exist, their weights per listener,
// which targets are healthy, and the smooth weighted round-robin picker. No I/O, no clocks, no NIO.

// MARK: - Addresses and target groups

/// The address of one target: a task's listening socket, reachable over TCP.
public struct TargetAddress: Hashable, Sendable, CustomStringConvertible {
  /// Host name or IP address literal.
  public var host: String
  /// TCP port, 1...65535.
  public var port: Int

  public init(host: String, port: Int) {
    self.host = host
    self.port = port
  }

  public var description: String { "\(self.host):\(self.port)" }
}

/// The tasks of one revision, as the load balancer sees them.
///
/// Invariant (checked by ``ServiceRoutes/validate()``): `revision` is non-empty and no target appears
/// twice in the same service.
public struct TargetGroup: Hashable, Sendable {
  /// The revision these targets run; it is also the value of the `x-teal-revision` response header.
  public var revision: String
  public var targets: [TargetAddress]

  public init(revision: String, targets: [TargetAddress]) {
    self.revision = revision
    self.targets = targets
  }
}

/// The two listeners every service has.
public enum ListenerRole: String, Hashable, Sendable, CaseIterable {
  /// Serves real users; its weights move during a deployment.
  case production
  /// Lets hooks and people reach a revision before it takes production traffic.
  case test
}

/// The complete routing wanted for one service: its target groups and the weights of each listener.
///
/// Weights are relative (10/90 and 1/9 route the same way). A revision missing from a weight map has
/// weight 0. A target group that is present but has weight 0 on both listeners still gets health
/// checks, which is how a new revision is warmed up before weights move to it.
///
/// `generation` is given by the caller (the node passes the generation of the committed state the
/// routes were computed from); the balancer never makes one up. It only ever moves forward: routes
/// with a generation below the one applied are not installed (see ``LoadBalancer/setRoutes(_:forService:)``),
/// and every response carries the generation that routed it in `x-teal-generation`.
public struct ServiceRoutes: Hashable, Sendable {
  public var generation: UInt64
  public var targetGroups: [TargetGroup]
  public var productionWeights: [String: Int]
  public var testWeights: [String: Int]

  public init(
    generation: UInt64, targetGroups: [TargetGroup], productionWeights: [String: Int],
    testWeights: [String: Int] = [:]
  ) {
    self.generation = generation
    self.targetGroups = targetGroups
    self.productionWeights = productionWeights
    self.testWeights = testWeights
  }

  /// No target groups, generation 0; every request gets 503.
  public static let empty = ServiceRoutes(generation: 0, targetGroups: [], productionWeights: [:])

  /// The weights of one listener.
  public func weights(for role: ListenerRole) -> [String: Int] {
    switch role {
    case .production: return self.productionWeights
    case .test: return self.testWeights
    }
  }

  /// Checks the invariants and names the field at fault.
  public func validate() throws(RoutesError) {
    var revisions = Set<String>()
    var targets = Set<TargetAddress>()
    for group in self.targetGroups {
      guard !group.revision.isEmpty else { throw .emptyRevisionName }
      guard isHeaderToken(group.revision) else { throw .invalidRevisionName(group.revision) }
      guard revisions.insert(group.revision).inserted else { throw .duplicateRevision(group.revision) }
      for target in group.targets {
        guard !target.host.isEmpty, (1...65_535).contains(target.port) else {
          throw .invalidTarget(revision: group.revision, target: target)
        }
        guard targets.insert(target).inserted else { throw .duplicateTarget(target) }
      }
    }
    for role in ListenerRole.allCases {
      for (revision, weight) in self.weights(for: role) {
        guard weight >= 0 else { throw .negativeWeight(listener: role, revision: revision, weight: weight) }
        guard revisions.contains(revision) else { throw .weightForUnknownRevision(listener: role, revision: revision) }
      }
    }
  }
}

/// Why a ``ServiceRoutes`` value was rejected.
public enum RoutesError: Error, Hashable, Sendable, CustomStringConvertible {
  case emptyRevisionName
  case invalidRevisionName(String)
  case invalidForwardedProto(String)
  case duplicateRevision(String)
  case invalidTarget(revision: String, target: TargetAddress)
  case duplicateTarget(TargetAddress)
  case negativeWeight(listener: ListenerRole, revision: String, weight: Int)
  case weightForUnknownRevision(listener: ListenerRole, revision: String)
  case unknownService(String)
  case serviceExists(String)
  case tooManyPendingControlCalls(service: String, limit: Int)

  public var description: String {
    switch self {
    case .emptyRevisionName:
      return "targetGroups: a target group has an empty revision name"
    case .invalidRevisionName(let revision):
      return "targetGroups: revision '\(revision)' must be visible ASCII without spaces (it is sent as x-teal-revision)"
    case .invalidForwardedProto(let value):
      return "forwardedProto '\(value)' must be visible ASCII without spaces (it is sent as x-forwarded-proto)"
    case .duplicateRevision(let revision):
      return "targetGroups: revision '\(revision)' appears twice; each revision is one target group"
    case .invalidTarget(let revision, let target):
      return "targetGroups[\(revision)]: target '\(target)' needs a non-empty host and a port in 1...65535"
    case .duplicateTarget(let target):
      return "targetGroups: target '\(target)' appears twice; a target belongs to exactly one revision"
    case .negativeWeight(let listener, let revision, let weight):
      return "\(listener.rawValue)Weights[\(revision)] = \(weight): weights must be 0 or more"
    case .weightForUnknownRevision(let listener, let revision):
      return "\(listener.rawValue)Weights names revision '\(revision)', which has no target group"
    case .unknownService(let name):
      return "service '\(name)' is not configured on this load balancer; add it first"
    case .serviceExists(let name):
      return "service '\(name)' is already configured; use setRoutes to change its routing"
    case .tooManyPendingControlCalls(let name, let limit):
      return "service '\(name)': \(limit) control calls are already waiting for their turn; retry later"
    }
  }
}

/// Whether `value` can be sent as a header value verbatim: 1...256 visible ASCII characters, no spaces.
func isHeaderToken(_ value: String) -> Bool {
  !value.isEmpty && value.utf8.count <= 256 && value.utf8.allSatisfy { (0x21...0x7E).contains($0) }
}

/// Where one request goes: the revision (target group), the target inside it, and the generation of
/// the routes that chose it.
public struct RouteChoice: Hashable, Sendable {
  public var revision: String
  public var target: TargetAddress
  public var generation: UInt64

  public init(revision: String, target: TargetAddress, generation: UInt64 = 0) {
    self.revision = revision
    self.target = target
    self.generation = generation
  }
}

// MARK: - Router

/// Weighted routing for one service: picks a target group by smooth weighted round-robin among the
/// groups that have a positive weight and at least one healthy target, then a healthy target of
/// that group by round-robin.
///
/// Invariants:
/// - `pick` never returns an unhealthy target, a target of a group with weight 0 on that listener,
///   or a target of a group that is not in the installed routes.
/// - Over any window of `W` consecutive picks (W = sum of eligible weights) with unchanged routes
///   and health, group `g` is picked exactly `weight(g)` times, interleaved as evenly as possible.
/// - `install` replaces the routing in one step; health of targets that stay is kept.
/// - `seed` only moves where the sequences start (see ``init(routes:healthyTargets:seed:)``);
///   the same seed and the same inputs give the same picks.
public struct WeightedRouter: Sendable {
  public private(set) var routes: ServiceRoutes
  /// Targets currently eligible for traffic.
  public private(set) var healthyTargets: Set<TargetAddress>
  /// Where the round-robin sequences start (0: at the first group and target).
  public let seed: UInt64
  private var production: SmoothPicker
  private var test: SmoothPicker

  /// - Parameter seed: moves the start of the sequences, so that routers of different nodes (seeded
  ///   differently, e.g. by the node's index among the members) do not all send their first request
  ///   to the same target: inside a group, target `seed mod n` of the `n` healthy ones comes first;
  ///   between groups, the smooth sequence starts `seed mod W` picks into its cycle (W the sum of
  ///   the weights; at most ``WeightedRouter/maxPhaseSteps`` picks in). Any seed keeps the exact
  ///   split over every cycle of W picks.
  public init(routes: ServiceRoutes = .empty, healthyTargets: Set<TargetAddress> = [], seed: UInt64 = 0) {
    self.routes = routes
    self.healthyTargets = healthyTargets
    self.seed = seed
    self.production = SmoothPicker(seed: seed)
    self.test = SmoothPicker(seed: seed)
    self.rebuild()
  }

  /// The most picks the seed moves the start of the smooth sequence into its cycle (a bound on the
  /// work of one rebuild; 10,000 covers every position of weights given in basis points).
  public static let maxPhaseSteps = 10_000

  /// Replaces the routes. Targets that are no longer in any group lose their health state.
  public mutating func install(_ routes: ServiceRoutes) {
    self.routes = routes
    let known = Set(routes.targetGroups.flatMap(\.targets))
    self.healthyTargets.formIntersection(known)
    self.rebuild()
  }

  /// Marks a target healthy or not. Returns whether anything changed. Unknown targets are ignored.
  @discardableResult
  public mutating func setHealthy(_ target: TargetAddress, _ healthy: Bool) -> Bool {
    let changed: Bool
    if healthy {
      guard self.routes.targetGroups.contains(where: { $0.targets.contains(target) }) else { return false }
      changed = self.healthyTargets.insert(target).inserted
    } else {
      changed = self.healthyTargets.remove(target) != nil
    }
    if changed { self.rebuild() }
    return changed
  }

  /// Picks where the next request on `role`'s listener goes, or nil when no weighted group has a
  /// healthy target. `excluding` skips one target (the one a failed connect just tried).
  public mutating func pick(_ role: ListenerRole, excluding: TargetAddress?) -> RouteChoice? {
    self.pick(role, excluding: excluding.map { [$0] } ?? [])
  }

  /// Picks where the next request on `role`'s listener goes, skipping the targets in `excluding`
  /// (those a retried request already failed on); nil when no weighted group has another healthy
  /// target.
  public mutating func pick(_ role: ListenerRole, excluding: Set<TargetAddress> = []) -> RouteChoice? {
    var choice: RouteChoice?
    switch role {
    case .production: choice = self.production.pick(excluding: excluding)
    case .test: choice = self.test.pick(excluding: excluding)
    }
    choice?.generation = self.routes.generation
    return choice
  }

  private mutating func rebuild() {
    self.production.reset(
      groups: self.routes.targetGroups, weights: self.routes.productionWeights, healthy: self.healthyTargets)
    self.test.reset(groups: self.routes.targetGroups, weights: self.routes.testWeights, healthy: self.healthyTargets)
  }
}

/// Smooth weighted round-robin (the nginx algorithm) over target groups, round-robin inside a group.
private struct SmoothPicker: Sendable {
  struct Entry: Sendable {
    var revision: String
    var weight: Int
    var current: Int
    var healthy: [TargetAddress]
    var nextTarget: Int
  }

  private var entries: [Entry] = []
  private let seed: UInt64

  init(seed: UInt64) {
    self.seed = seed
  }

  /// Rebuilds the entries, keeping each surviving revision's smoothing state so a health change or
  /// a weight change does not restart the sequence.
  mutating func reset(groups: [TargetGroup], weights: [String: Int], healthy: Set<TargetAddress>) {
    var previous: [String: Entry] = [:]
    for entry in self.entries { previous[entry.revision] = entry }
    var entries: [Entry] = []
    for group in groups {
      let weight = max(0, weights[group.revision] ?? 0)
      let healthyTargets = group.targets.filter { healthy.contains($0) }
      guard weight > 0, !healthyTargets.isEmpty else { continue }
      let old = previous[group.revision]
      entries.append(
        Entry(
          revision: group.revision, weight: weight, current: old?.current ?? 0, healthy: healthyTargets,
          nextTarget: (old?.nextTarget ?? 0) % healthyTargets.count))
    }
    // Bound the carried-over smoothing state so a weight change cannot starve a group for long.
    let total = entries.reduce(0) { $0 + $1.weight }
    for index in entries.indices { entries[index].current = min(max(entries[index].current, -total), total) }
    let phase = self.entries.count <= 1 && entries.count >= 2 && self.seed != 0
    self.entries = entries
    // A sequence between groups (re)starts: from the zero state, moved `seed mod W` picks into
    // its cycle, a state the sequence passes anyway, so every cycle of W picks stays exact.
    if phase {
      for index in self.entries.indices { self.entries[index].current = 0 }
      let steps = Int(self.seed % UInt64(min(total, WeightedRouter.maxPhaseSteps)))
      for _ in 0..<steps { self.advance() }
    }
  }

  /// One step of the smooth sequence without a request (no target is taken).
  private mutating func advance() {
    var total = 0
    var best = 0
    for index in self.entries.indices {
      self.entries[index].current += self.entries[index].weight
      total += self.entries[index].weight
      if self.entries[index].current > self.entries[best].current { best = index }
    }
    self.entries[best].current -= total
  }

  mutating func pick(excluding: Set<TargetAddress>) -> RouteChoice? {
    var total = 0
    var best = -1
    for index in self.entries.indices {
      if !excluding.isEmpty, self.entries[index].healthy.allSatisfy({ excluding.contains($0) }) { continue }
      self.entries[index].current += self.entries[index].weight
      total += self.entries[index].weight
      if best < 0 || self.entries[index].current > self.entries[best].current { best = index }
    }
    guard best >= 0 else { return nil }
    self.entries[best].current -= total
    let count = self.entries[best].healthy.count
    // `nextTarget` counts from 0; the seed moves which healthy target that position names.
    let offset = Int(self.seed % UInt64(count))
    var position = self.entries[best].nextTarget
    while excluding.contains(self.entries[best].healthy[(position + offset) % count]) {
      position = (position + 1) % count
    }
    let target = self.entries[best].healthy[(position + offset) % count]
    self.entries[best].nextTarget = (position + 1) % count
    return RouteChoice(revision: self.entries[best].revision, target: target)
  }
}
