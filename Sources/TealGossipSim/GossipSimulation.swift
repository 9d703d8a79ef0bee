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

  // Faults beyond loss, crashes and partitions (issue 13).
  private var blockedLinks: Set<Link> = []
  private var outboundOutageUntil: [NodeID: Duration] = [:]
  private var pausedUntil: [NodeID: Duration] = [:]
  private var linkStallUntil: [Link: Duration] = [:]
  /// Links deliver in order, like the TCP connections they model: the last delivery time per link.
  private var lastDelivery: [Link: Duration] = [:]
  /// With this probability each timer fires late, by up to `maximumTimerLateness` (uniform).
  public var lateTimerProbability: Double = 0
  public var maximumTimerLateness: Duration = .zero
  /// A member that appends forged records to every message it sends: deaths of live members,
  /// alives of crashed ones, suspicions with invented suspecters, leader metadata of term 2^60
  /// for others, and invented ids. Otherwise it follows the protocol.
  public var forger: NodeID?
  /// Whether the cores sign their records (with `SimulatedAuthenticator`).
  public let signRecords: Bool
  /// How many forged records the forger sent.
  public private(set) var forgedRecordsSent = 0

  struct Link: Hashable {
    var from: NodeID
    var to: NodeID
  }

  /// Creates `memberCount` nodes `n1...nN`; each but `n1` joins through `n1` (and `n2` when
  /// there is one). Call `runUntilConverged` to let the join finish.
  public init(
    memberCount: Int, settings: SWIMSettings = SWIMSettings(), network: NetworkConditions = .lan, seed: UInt64,
    signRecords: Bool = false
  ) throws(SWIMSettingsError) {
    self.seed = seed
    self.signRecords = signRecords
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
      random: SplitMix64(seed: seed &* 0x9E37_79B9 &+ UInt64(index)), now: now, authenticator: authenticator(for: id))
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

  /// Drops every message from `from` to `to` (the other direction still works) until unblocked.
  public mutating func blockLink(from: NodeID, to: NodeID) { blockedLinks.insert(Link(from: from, to: to)) }

  public mutating func unblockLink(from: NodeID, to: NodeID) { blockedLinks.remove(Link(from: from, to: to)) }

  /// Every message `id` sends during the next `duration` is lost (its links are down).
  public mutating func outboundOutage(_ id: NodeID, for duration: Duration) {
    outboundOutageUntil[id] = max(outboundOutageUntil[id] ?? now, now + duration)
  }

  /// The process stops for `duration` (SIGSTOP): it handles nothing, then every message that
  /// arrived meanwhile and its overdue timers, in order.
  public mutating func pause(_ id: NodeID, for duration: Duration) {
    pausedUntil[id] = max(pausedUntil[id] ?? now, now + duration)
  }

  /// Holds every message on the link `from → to` sent during the next `duration`; they arrive,
  /// in order, after it.
  public mutating func stall(from: NodeID, to: NodeID, for duration: Duration) {
    let link = Link(from: from, to: to)
    linkStallUntil[link] = max(linkStallUntil[link] ?? now, now + duration)
  }

  /// Ends every one-way block, outage, pause, stall and late timer (messages already held still
  /// arrive; a paused node resumes at once).
  public mutating func endFaults() {
    blockedLinks = []
    outboundOutageUntil = [:]
    pausedUntil = [:]
    linkStallUntil = [:]
    lateTimerProbability = 0
    forger = nil
  }

  private func authenticator(for id: NodeID) -> SimulatedAuthenticator? {
    signRecords ? SimulatedAuthenticator(node: id, clusterSecret: seed ^ 0x51_6E_ED) : nil
  }

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
      now: now, authenticator: authenticator(for: id))
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
      if let until = pausedUntil[id], until > now {
        scheduledWakeup[id] = until
        queue.push(until, .wake(id))
        return
      }
      scheduledWakeup[id] = nil
      mutate(id) { core, now in core.tick(now: now) }
    case .deliver(let bytes, let from, let to, let process):
      if let until = pausedUntil[to], until > now {
        queue.push(until, .deliver(bytes, from: from, to: to, process: process))
        return
      }
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
      case .send(let sent, let to):
        let message = id == forger ? forge(sent, to: to) : sent
        let link = Link(from: id, to: to)
        if Double(random.next() % 1_000_000) / 1_000_000 < network.lossRate || blockedLinks.contains(link)
          || (outboundOutageUntil[id].map { $0 > now } ?? false)
        {
          messagesDropped += 1
          continue
        }
        let span = network.maximumDelay - network.minimumDelay
        let jitter = span > .zero ? span * (Double(random.next() % 1_000_000) / 1_000_000) : .zero
        var arrival = now + network.minimumDelay + jitter
        if let until = linkStallUntil[link], until > now { arrival = max(arrival, until) }
        arrival = max(arrival, lastDelivery[link] ?? .zero)
        lastDelivery[link] = arrival
        queue.push(arrival, .deliver(message.wireBytes(), from: id, to: to, process: restarts[to, default: 0]))
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
      var due = max(wakeup, now)
      if lateTimerProbability > 0, Double(random.next() % 1_000_000) / 1_000_000 < lateTimerProbability {
        due = due + maximumTimerLateness * (Double(random.next() % 1_000_000) / 1_000_000)
      }
      if let current = scheduledWakeup[id], current <= due, current >= now { return }
      scheduledWakeup[id] = due
      queue.push(due, .wake(id))
    }
  }
}

// MARK: - Forgery

extension GossipSimulation {
  /// `message` with one forged record appended (see `forger`).
  fileprivate mutating func forge(_ message: SWIMMessage, to recipient: NodeID) -> SWIMMessage {
    guard let forger, let core = cores[forger] else { return message }
    let others = nodes.filter { $0 != forger && $0 != recipient }
    guard !others.isEmpty else { return message }
    let victim = others[Int(random.next() % UInt64(others.count))]
    let known =
      core.member(victim) ?? Member(id: victim, status: .alive, incarnation: 0, metadata: Self.metadata(for: 1))
    var record = known
    var suspecter: NodeID?
    switch random.next() % 5 {
    case 0:
      record.status = .dead
      record.incarnation += 1
    case 1:
      let gone = nodes.filter { crashed.contains($0) }
      if let ghost = gone.first, let seen = core.member(ghost) {
        record = seen
      }
      record.status = .alive
      record.incarnation += 1
    case 2:
      record.status = .suspect
      suspecter = others[Int(random.next() % UInt64(others.count))]
    case 3:
      record.status = .alive
      record.incarnation += 1
      record.metadata.raftRole = .leader
      record.metadata.raftTerm = 1 << 60
    default:
      record = Member(
        id: NodeID("forged\(random.next() % 100_000)"), status: .alive, incarnation: 0, metadata: Self.metadata(for: 1))
    }
    var forged = MemberUpdate(member: record, suspectedBy: suspecter)
    if signRecords {
      forged.signature =
        SimulatedAuthenticator(node: forger, clusterSecret: seed ^ 0x51_6E_ED).sign(forged.signedContent) ?? []
    }
    forgedRecordsSent += 1
    switch message {
    case .ping(let sequence, let updates): return .ping(sequence: sequence, updates: updates + [forged])
    case .pingRequest(let sequence, let target, let updates):
      return .pingRequest(sequence: sequence, target: target, updates: updates + [forged])
    case .ack(let sequence, let target, let updates):
      return .ack(sequence: sequence, target: target, updates: updates + [forged])
    case .nack(let sequence, let target, let updates):
      return .nack(sequence: sequence, target: target, updates: updates + [forged])
    case .gossip(let updates): return .gossip(updates: updates + [forged])
    case .pushPull(let isResponse, let isJoin, let members):
      return .pushPull(isResponse: isResponse, isJoin: isJoin, members: members + [forged])
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
