import TealGossip
import TealWire

// MARK: - Network model

/// How the simulated network treats each message: dropped with probability `lossRate`, else
/// delivered after a delay drawn uniformly from `minimumDelay...maximumDelay`. Partitions drop
/// every message between groups, checked when the message is delivered.
public struct NetworkConditions: Sendable, Hashable {
  public var lossRate: Double
  public var minimumDelay: Duration
  public var maximumDelay: Duration

  public init(
    lossRate: Double = 0, minimumDelay: Duration = .microseconds(100), maximumDelay: Duration = .milliseconds(1)
  ) {
    self.lossRate = lossRate
    self.minimumDelay = minimumDelay
    self.maximumDelay = maximumDelay
  }

  /// A LAN: no loss, 0.1 to 1 ms one way.
  public static let lan = NetworkConditions()
}

/// One member declared another dead, as seen in the simulation.
public struct DeathRecord: Sendable, Hashable {
  public let time: Duration
  public let observer: NodeID
  public let subject: NodeID
  /// True when the subject had neither crashed nor left at that time (a false positive).
  public let subjectWasLive: Bool
}

// MARK: - Simulation

/// A deterministic simulation of a cluster of `SWIMCore`s on one simulated clock.
///
/// Everything random (network loss and delay, each core's generator) derives from `seed`, and
/// events at equal times run in the order they were scheduled, so one seed always replays the
/// same run. Every message goes through the wire encoding and back.
public struct GossipSimulation {
  public let seed: UInt64
  public let settings: SWIMSettings
  public var network: NetworkConditions
  /// The simulated time: the time of the last event run, or the end of the last `run(until:)`.
  public private(set) var now: Duration = .zero
  /// Every node ever started, in creation order.
  public private(set) var nodes: [NodeID] = []
  public private(set) var crashed: Set<NodeID> = []
  public private(set) var departed: Set<NodeID> = []
  public private(set) var deaths: [DeathRecord] = []
  public private(set) var messagesDelivered = 0
  public private(set) var messagesDropped = 0
  /// Every event each node reported, with its time (kept only if `recordEvents`).
  public private(set) var events: [(time: Duration, observer: NodeID, event: MembershipEvent)] = []
  public var recordEvents = false
  /// Called for every event every node reports.
  public var onEvent: ((Duration, NodeID, MembershipEvent) -> Void)?

  /// Broken safety rules, checked after every input of every node (the aim is none): a node
  /// holding itself as anything but alive before leaving, or crediting a member with an
  /// incarnation that member never issued.
  public private(set) var invariantViolations: [String] = []

  private var cores: [NodeID: SWIMCore] = [:]
  private var seedsOf: [NodeID: [NodeID]] = [:]
  private var highestIncarnation: [NodeID: UInt64] = [:]
  private var scheduledWakeup: [NodeID: Duration] = [:]
  private var partitionGroup: [NodeID: Int] = [:]
  private var restarts: [NodeID: Int] = [:]
  private var queue = EventQueue()
  private var random: SplitMix64

  /// Creates `memberCount` nodes `n1...nN`; each but `n1` joins through `n1` (and `n2` when
  /// there is one). Call `runUntilConverged` to let the join finish.
  public init(
    memberCount: Int, settings: SWIMSettings = SWIMSettings(), network: NetworkConditions = .lan, seed: UInt64
  ) throws(SWIMSettingsError) {
    self.seed = seed
    self.settings = settings
    self.network = network
    self.random = SplitMix64(seed: seed)
    for index in 1...max(1, memberCount) {
      let seeds = index == 1 ? [] : index == 2 ? [Self.nodeID(1)] : [Self.nodeID(1), Self.nodeID(2)]
      try addNode(Self.nodeID(index), seeds: seeds)
    }
  }

  public static func nodeID(_ index: Int) -> NodeID { NodeID("n\(index)") }

  public static func metadata(for index: Int) -> MemberMetadata {
    MemberMetadata(
      peerAddress: HostPort(host: "10.0.0.\(index % 250 + 1)", port: 7400), apiPort: 8080, listenerPorts: [80, 81],
      version: "1.0.0", raftRole: .follower, raftTerm: 1)
  }

  /// Starts a node now that joins through `seeds`.
  public mutating func addNode(_ id: NodeID, seeds: [NodeID]) throws(SWIMSettingsError) {
    let index = nodes.count + 1
    let core = try SWIMCore(
      id: id, metadata: Self.metadata(for: index), settings: settings,
      random: SplitMix64(seed: seed &* 0x9E37_79B9 &+ UInt64(index)), now: now)
    if !nodes.contains(id) { nodes.append(id) }
    seedsOf[id] = seeds
    cores[id] = core
    mutate(id) { core, now in core.join(seeds: seeds, now: now) }
  }

  // MARK: Faults and inputs

  /// The node stops at once: it sends nothing more and every message to it is lost.
  public mutating func crash(_ id: NodeID) { crashed.insert(id) }

  /// Splits the network: nodes in different groups cannot reach each other; nodes in no group
  /// form one more group together.
  public mutating func partition(_ groups: [[NodeID]]) {
    partitionGroup = [:]
    for (index, group) in groups.enumerated() {
      for id in group { partitionGroup[id] = index + 1 }
    }
  }

  public mutating func heal() { partitionGroup = [:] }

  /// Starts a crashed (or departed) node again as a new process: incarnation `incarnation` (0
  /// unless a persisted counter is modelled), empty member list, joining through the seeds it had.
  /// Messages to its old process that are still in flight are lost.
  public mutating func restart(
    _ id: NodeID, metadata: MemberMetadata? = nil, incarnation: UInt64 = 0
  ) throws(SWIMSettingsError) {
    guard crashed.contains(id) || departed.contains(id), let index = nodes.firstIndex(of: id) else { return }
    crashed.remove(id)
    departed.remove(id)
    restarts[id, default: 0] += 1
    let core = try SWIMCore(
      id: id, metadata: metadata ?? Self.metadata(for: index + 1), settings: settings, incarnation: incarnation,
      random: SplitMix64(seed: seed &* 0x9E37_79B9 &+ UInt64(index + 1) &+ UInt64(restarts[id, default: 0]) << 32),
      now: now)
    cores[id] = core
    scheduledWakeup[id] = nil
    let seeds = seedsOf[id] ?? []
    mutate(id) { core, now in core.join(seeds: seeds, now: now) }
  }

  public mutating func leave(_ id: NodeID) {
    mutate(id) { core, now in core.leave(now: now) }
    departed.insert(id)
  }

  public mutating func updateMetadata(_ id: NodeID, _ metadata: MemberMetadata) {
    mutate(id) { core, now in core.updateMetadata(metadata, now: now) }
  }

  // MARK: Queries

  /// Nodes that have neither crashed nor left.
  public var liveNodes: [NodeID] { nodes.filter { !crashed.contains($0) && !departed.contains($0) } }

  public func core(_ id: NodeID) -> SWIMCore? { cores[id] }

  /// How `observer` sees `subject` (nil: does not know it).
  public func status(of subject: NodeID, seenBy observer: NodeID) -> MemberStatus? {
    cores[observer]?.member(subject)?.status
  }

  /// True when every live node knows every live node as alive with the metadata that node
  /// announces, and every other node as dead or forgotten.
  public var isConverged: Bool {
    let live = liveNodes
    for observer in live {
      guard let core = cores[observer] else { return false }
      for subject in nodes where subject != observer {
        let seen = core.member(subject)
        if live.contains(subject) {
          if seen?.status != .alive || seen?.metadata != cores[subject]?.myself.metadata { return false }
        } else if let seen, seen.status != .dead {
          return false
        }
      }
    }
    return true
  }

  /// Deaths declared of nodes that had neither crashed nor left.
  public var falsePositives: [DeathRecord] { deaths.filter(\.subjectWasLive) }

  // MARK: Running

  /// Runs every event up to `deadline`, then sets `now` to it.
  public mutating func run(until deadline: Duration) {
    while let next = queue.peekTime, next <= deadline { step() }
    now = max(now, deadline)
  }

  public mutating func run(for duration: Duration) { run(until: now + duration) }

  /// Runs until `condition` holds (checked every `interval`) or `timeout` passes; returns the time
  /// at which it held, or nil.
  public mutating func run(
    timeout: Duration, checkEvery interval: Duration = .milliseconds(10), until condition: (GossipSimulation) -> Bool
  ) -> Duration? {
    let deadline = now + timeout
    while now < deadline {
      if condition(self) { return now }
      run(until: min(deadline, now + interval))
    }
    return condition(self) ? now : nil
  }

  /// Runs until every live node sees the membership as it is (see `isConverged`).
  public mutating func runUntilConverged(timeout: Duration) -> Bool {
    run(timeout: timeout, checkEvery: .milliseconds(50)) { $0.isConverged } != nil
  }

  private mutating func step() {
    guard let event = queue.pop() else { return }
    now = max(now, event.time)
    switch event.kind {
    case .wake(let id):
      guard scheduledWakeup[id] == event.time else { return }
      scheduledWakeup[id] = nil
      mutate(id) { core, now in core.tick(now: now) }
    case .deliver(let bytes, let from, let to, let process):
      guard !crashed.contains(to), !departed.contains(to), sameSide(from, to), process == restarts[to, default: 0]
      else {
        messagesDropped += 1
        return
      }
      guard let message = try? SWIMMessage(wireBytes: bytes) else {
        messagesDropped += 1
        return
      }
      messagesDelivered += 1
      mutate(to) { core, now in core.receive(message, from: from, now: now) }
    }
  }

  private mutating func checkInvariants(of core: SWIMCore) {
    let id = core.myself.id
    highestIncarnation[id] = max(highestIncarnation[id] ?? 0, core.myself.incarnation)
    if core.myself.status != .alive && !core.hasLeft {
      invariantViolations.append("\(now): \(id) holds itself \(core.myself.status)")
    }
    for member in core.unorderedMembers where member.incarnation > highestIncarnation[member.id] ?? 0 {
      invariantViolations.append(
        "\(now): \(id) credits \(member.id) with incarnation \(member.incarnation) it never issued")
    }
  }

  private func sameSide(_ a: NodeID, _ b: NodeID) -> Bool {
    partitionGroup.isEmpty || partitionGroup[a, default: 0] == partitionGroup[b, default: 0]
  }

  /// Runs one input on a node's core and carries out its directives.
  private mutating func mutate(_ id: NodeID, _ input: (inout SWIMCore, Duration) -> [SWIMDirective]) {
    guard !crashed.contains(id), var core = cores[id] else { return }
    let directives = input(&core, now)
    cores[id] = core
    checkInvariants(of: core)
    for directive in directives {
      switch directive {
      case .send(let message, let to):
        if Double(random.next() % 1_000_000) / 1_000_000 < network.lossRate {
          messagesDropped += 1
          continue
        }
        let span = network.maximumDelay - network.minimumDelay
        let jitter = span > .zero ? span * (Double(random.next() % 1_000_000) / 1_000_000) : .zero
        queue.push(
          now + network.minimumDelay + jitter,
          .deliver(message.wireBytes(), from: id, to: to, process: restarts[to, default: 0]))
      case .event(let event):
        if recordEvents { events.append((now, id, event)) }
        onEvent?(now, id, event)
        if case .statusChanged(let member, _) = event, member.status == .dead {
          let live = !crashed.contains(member.id) && !departed.contains(member.id)
          deaths.append(DeathRecord(time: now, observer: id, subject: member.id, subjectWasLive: live))
        }
      }
    }
    if let wakeup = core.nextWakeup {
      let due = max(wakeup, now)
      if let current = scheduledWakeup[id], current <= due, current >= now { return }
      scheduledWakeup[id] = due
      queue.push(due, .wake(id))
    }
  }
}

// MARK: - Event queue

/// A binary min-heap of events by (time, insertion order).
struct EventQueue {
  enum Kind {
    case wake(NodeID)
    case deliver([UInt8], from: NodeID, to: NodeID, process: Int)
  }

  struct Entry {
    var time: Duration
    var order: UInt64
    var kind: Kind
  }

  private var heap: [Entry] = []
  private var counter: UInt64 = 0

  var peekTime: Duration? { heap.first?.time }

  private static func less(_ a: Entry, _ b: Entry) -> Bool { (a.time, a.order) < (b.time, b.order) }

  mutating func push(_ time: Duration, _ kind: Kind) {
    counter += 1
    heap.append(Entry(time: time, order: counter, kind: kind))
    var child = heap.count - 1
    while child > 0 {
      let parent = (child - 1) / 2
      if !Self.less(heap[child], heap[parent]) { break }
      heap.swapAt(child, parent)
      child = parent
    }
  }

  mutating func pop() -> Entry? {
    guard !heap.isEmpty else { return nil }
    heap.swapAt(0, heap.count - 1)
    let top = heap.removeLast()
    var parent = 0
    while true {
      let left = 2 * parent + 1
      let right = left + 1
      var smallest = parent
      if left < heap.count && Self.less(heap[left], heap[smallest]) { smallest = left }
      if right < heap.count && Self.less(heap[right], heap[smallest]) { smallest = right }
      if smallest == parent { break }
      heap.swapAt(parent, smallest)
      parent = smallest
    }
    return top
  }
}
