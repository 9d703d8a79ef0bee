import TealRaft
import TealWire

// MARK: - Parameters and report

/// What one simulated run does. Everything not given here is drawn from the seed.
public struct SimulationParameters: Sendable {
  public var seed: UInt64
  /// Events processed in the fault phase; then faults heal and the run continues until every
  /// client operation has completed (or the liveness bound is exceeded).
  public var steps: Int = 2_000
  /// 3 or 5; nil lets the seed choose.
  public var nodeCount: Int?
  /// Raft tunables. The default compresses time (100 ms election timeout) so a run of a few
  /// thousand events sees many elections.
  public var options: RaftOptions
  public var tickMillis: UInt64 = 10
  /// Inject faults (loss, duplication, partitions, crashes, disk failures).
  public var faults: Bool = true
  /// Run a client workload and check its linearizability.
  public var clients: Int = 3
  public var keys: Int = 3
  /// After the faults heal, a leader must be elected and every pending operation must complete
  /// within this many simulated milliseconds.
  public var livenessBoundMillis: UInt64 = 10_000
  /// Exercise membership changes (5-node clusters) and leadership transfers (all clusters).
  public var membershipChanges: Bool = true
  /// Record a human-readable trace of every event (for replaying one seed).
  public var trace: Bool = false
  /// Let the seed turn pre-vote and check-quorum off for some runs.
  public var varyProtocolOptions: Bool = true
  /// One-way message delay; nil lets the seed choose an upper bound of 2, 5, 15 or 40 ms.
  public var networkDelayMillis: ClosedRange<Int>?

  public init(seed: UInt64) {
    self.seed = seed
    var o = RaftOptions()
    o.electionTicks = 10
    o.heartbeatTicks = 2
    o.maxInflightAppends = 8
    o.maxEntriesPerAppend = 16
    self.options = o
  }
}

/// The outcome of one run.
public struct SimulationReport: Sendable {
  public var seed: UInt64
  public var nodeCount: Int
  public var steps: Int
  public var simulatedMillis: UInt64
  public var violations: [String]
  public var elections: Int
  public var committedIndex: UInt64
  public var operations: Int
  public var completedOperations: Int
  public var snapshotsInstalled: Int
  public var trace: [String]
}

// MARK: - Simulation

/// A deterministic simulation of a Raft cluster in one process: a seeded generator decides
/// message delay, loss, duplication and reordering, partitions (symmetric and one-way), crashes
/// that lose everything not persisted, restarts, disk write failures, and a client workload on a
/// key-value register. Invariants are checked after every event (see ``checkNode(_:)``), and the
/// client history is checked for linearizability at the end.
public struct RaftSimulation: Sendable {
  public let parameters: SimulationParameters
  public private(set) var now: UInt64 = 0
  public private(set) var steps = 0
  public private(set) var violations: [String] = []
  public private(set) var elections = 0
  public private(set) var trace: [String] = []

  private var random: SimRandom
  private var queue = EventQueue()
  private var nodes: [SimNode] = []
  /// The running RaftCore of each node (nil while it is down), kept apart from `nodes` so that
  /// touching one does not copy the other.
  private var cores: [RaftCore?] = []
  public let ids: [NodeID]
  private var indexOf: [NodeID: Int] = [:]
  private let bootstrap: RaftConfiguration

  // Network
  private var blocked: [[Bool]]
  private var partitionGeneration = 0
  private var lossRate: Double
  private var duplicateRate: Double
  private var delay: ClosedRange<Int>
  private var faultRate: Double
  private var faultsActive: Bool
  private var snapshotEvery: UInt64
  private var snapshotChunk: Int
  private var preVote = true
  private var maxEntriesPerAppend = 16
  private var maxInflight = 8
  private var checkQuorum = true

  // Clients and history
  private var clients: [SimClient] = []
  private var operations: [SimOperation] = []
  private var historyClock: UInt64 = 0
  private var acceptingNewOperations = true
  private var openOperations = 0

  // Invariant bookkeeping
  private var leaderOfTerm: [UInt64: Int] = [:]
  private var committedTerms: [UInt64] = [0]
  private var committedInTerm: [UInt64] = [0]
  private var appliedFingerprint: [UInt64] = [0]
  private var entryRecord: [EntryKey: EntryRecord] = [:]
  private var snapshotsInstalled = 0

  private struct EntryKey: Hashable {
    var index: UInt64
    var term: UInt64
  }

  private struct EntryRecord: Equatable {
    var fingerprint: UInt64
    var previousTerm: UInt64
  }

  public init(_ parameters: SimulationParameters) {
    self.parameters = parameters
    var random = SimRandom(seed: parameters.seed)
    let count = parameters.nodeCount ?? (random.chance(0.5) ? 3 : 5)
    ids = (0..<count).map { NodeID("n\($0)") }
    bootstrap = RaftConfiguration(voters: Set(ids))
    blocked = Array(repeating: Array(repeating: false, count: count), count: count)
    faultsActive = parameters.faults
    lossRate = parameters.faults ? [0, 0.01, 0.05, 0.15][random.below(4)] : 0
    duplicateRate = parameters.faults ? [0, 0.02][random.below(2)] : 0
    delay = parameters.networkDelayMillis ?? 1...[2, 5, 15, 40][random.below(4)]
    faultRate = parameters.faults ? [0.002, 0.005, 0.01, 0.03][random.below(4)] : 0
    snapshotEvery = UInt64([8, 20, 50][random.below(3)])
    snapshotChunk = [16, 64, 4096][random.below(3)]
    maxEntriesPerAppend = [1, 2, 16][random.below(3)]
    maxInflight = [1, 8][random.below(2)]
    self.random = random
    for (i, id) in ids.enumerated() {
      indexOf[id] = i
      nodes.append(SimNode(id: id))
      cores.append(nil)
    }
    for i in 0..<count { startNode(i) }
    for c in 0..<parameters.clients {
      clients.append(SimClient(id: c, target: random.below(count)))
      queue.schedule(.clientIssue(client: c), at: UInt64(random.within(0...50)))
    }
    if parameters.membershipChanges && parameters.faults {
      queue.schedule(.membershipChange, at: UInt64(random.within(200...800)))
    }
    if parameters.faults && parameters.varyProtocolOptions {
      // Most seeds run the production settings; some run Raft without pre-vote or check-quorum.
      preVote = random.chance(0.8)
      checkQuorum = random.chance(0.8)
      // With neither, a node removed from the cluster (which never learns it) disrupts it forever
      // by raising the term (thesis §4.2.3): Raft needs one of them with membership changes.
      if !preVote && !checkQuorum { preVote = true }
    }
  }

  // MARK: Running

  /// Runs the fault phase for `parameters.steps` events, heals every fault, runs until the
  /// cluster is live again, then checks the history.
  public mutating func run() -> SimulationReport {
    while steps < parameters.steps && violations.isEmpty {
      guard stepOnce() else { break }
      if faultsActive && random.chance(faultRate) { injectFault() }
    }
    if violations.isEmpty { healAndCheckLiveness() }
    if violations.isEmpty { checkHistory() }
    return report()
  }

  /// Processes the next event. Returns false when nothing is left to do.
  @discardableResult
  public mutating func stepOnce() -> Bool {
    guard let (time, event) = queue.pop() else { return false }
    now = time
    steps += 1
    handle(event)
    return true
  }

  /// Processes events until simulated time reaches `time`.
  public mutating func run(until time: UInt64) {
    while let next = queue.nextTime, next <= time, violations.isEmpty { stepOnce() }
    now = max(now, time)
  }

  public func report() -> SimulationReport {
    SimulationReport(
      seed: parameters.seed, nodeCount: ids.count, steps: steps, simulatedMillis: now, violations: violations,
      elections: elections, committedIndex: UInt64(committedTerms.count - 1), operations: operations.count,
      completedOperations: operations.filter { $0.response != nil }.count, snapshotsInstalled: snapshotsInstalled,
      trace: trace)
  }

  // MARK: Observation (for benchmarks)

  /// The node that leads and has committed an entry of its term, if exactly such a node exists.
  public var readyLeader: Int? {
    var best: (index: Int, term: UInt64)?
    for i in cores.indices where cores[i]?.isReadyLeader == true {
      let term = cores[i]?.term ?? 0
      if best == nil || term > best!.term { best = (i, term) }
    }
    return best?.index
  }

  public func isUp(_ node: Int) -> Bool { cores[node] != nil }
  public func core(_ node: Int) -> RaftCore? { cores[node] }

  /// Crashes `node` now; it stays down until ``restart(_:)``.
  public mutating func crash(_ node: Int) {
    crashNode(node, reason: "crash", restartAfter: nil)
  }

  public mutating func restart(_ node: Int) {
    if cores[node] == nil { startNode(node) }
  }

  // MARK: - Events

  private mutating func handle(_ event: SimEvent) {
    switch event {
    case .tick(let i, let incarnation):
      guard nodes[i].incarnation == incarnation, cores[i] != nil else { return }
      cores[i]!.tick()
      afterInput(i)
      queue.schedule(.tick(node: i, incarnation: incarnation), at: now + parameters.tickMillis)
    case .deliver(let m, let from, let to):
      guard !blocked[from][to], cores[to] != nil else { return }
      if parameters.trace { trace.append("\(now) deliver \(m)") }
      cores[to]!.step(m)
      afterInput(to)
    case .clientIssue(let c):
      issue(client: c)
    case .clientTimeout(let c, let operation, let attempt):
      guard let pending = clients[c].pending, pending.operation == operation, pending.attempt == attempt else { return }
      retry(client: c)
    case .restart(let i):
      if cores[i] == nil { startNode(i) }
    case .healPartitions(let generation):
      if generation == partitionGeneration { healPartitions() }
    case .membershipChange:
      changeMembership()
      if faultsActive { queue.schedule(.membershipChange, at: now + UInt64(random.within(300...1_500))) }
    case .takeSnapshot(let i):
      takeSnapshot(i)
    }
  }

  private mutating func startNode(_ i: Int) {
    let disk = nodes[i].disk
    do {
      let core = try RaftCore(
        id: ids[i], options: optionsFor(i), bootstrap: bootstrap, randomSeed: random.next(),
        restoring: RaftPersistentState(hardState: disk.hardState, snapshot: disk.snapshot, entries: disk.entries))
      cores[i] = core
      nodes[i].kv = KVStateMachine()
      if let snap = disk.snapshot {
        guard let kv = try? KVStateMachine(snapshot: snap.data) else {
          violations.append("node \(ids[i]): persisted snapshot does not decode")
          return
        }
        nodes[i].kv = kv
      }
      nodes[i].applied = core.appliedIndex
      nodes[i].checkedCommit = core.commitIndex
      nodes[i].lastHandedIndex = core.lastIndex
      nodes[i].wasLeaderInTerm = 0
      nodes[i].incarnation += 1
      if parameters.trace { trace.append("\(now) start \(ids[i]) \(disk.hardState) last=\(core.lastIndex)") }
      queue.schedule(
        .tick(node: i, incarnation: nodes[i].incarnation),
        at: now + UInt64(random.within(1...Int(parameters.tickMillis))))
    } catch {
      violations.append("node \(ids[i]) cannot restart from its disk: \(error)")
    }
  }

  private func optionsFor(_ i: Int) -> RaftOptions {
    var o = parameters.options
    o.snapshotChunkBytes = snapshotChunk
    // Half the seeds keep a log tail before each snapshot (so followers a little behind catch up from the
    // log), half compact up to the snapshot (so snapshots are sent often). Chosen by the seed without a
    // random draw, so the other choices of a seed stay as they were.
    o.compactionTailEntries = parameters.seed % 2 == 0 ? 0 : 6
    if parameters.varyProtocolOptions {
      o.maxEntriesPerAppend = maxEntriesPerAppend
      o.maxInflightAppends = maxInflight
    }
    if !preVote { o.preVote = false }
    if !checkQuorum { o.checkQuorum = false }
    return o
  }

  private mutating func crashNode(_ i: Int, reason: String, restartAfter: UInt64?) {
    guard cores[i] != nil else { return }
    if parameters.trace { trace.append("\(now) \(reason) \(ids[i])") }
    cores[i] = nil
    nodes[i].unwrittenHardState = nil
    nodes[i].waitingWrites = [:]
    nodes[i].waitingReads = [:]
    nodes[i].readyReads = []
    nodes[i].failNextWrite = false
    if let restartAfter { queue.schedule(.restart(node: i), at: now + restartAfter) }
  }

  // MARK: - Faults

  private mutating func injectFault() {
    let n = ids.count
    switch random.below(100) {
    case 0..<30:
      let up = (0..<n).filter { cores[$0] != nil }
      let down = n - up.count
      if down < (n - 1) / 2 + (random.chance(0.1) ? 1 : 0), let victim = up.randomElement(using: &random) {
        crashNode(victim, reason: "crash", restartAfter: UInt64(random.within(20...1_500)))
      }
    case 30..<55:
      partitionGeneration += 1
      let side = (0..<n).map { _ in random.chance(0.5) }
      for a in 0..<n { for b in 0..<n where a != b { blocked[a][b] = side[a] != side[b] } }
      if parameters.trace { trace.append("\(now) partition \(side)") }
      queue.schedule(.healPartitions(generation: partitionGeneration), at: now + UInt64(random.within(100...2_000)))
    case 55..<70:
      partitionGeneration += 1
      let a = random.below(n)
      var b = random.below(n)
      if b == a { b = (a + 1) % n }
      blocked[a][b] = true
      if parameters.trace { trace.append("\(now) one-way block \(ids[a])->\(ids[b])") }
      queue.schedule(.healPartitions(generation: partitionGeneration), at: now + UInt64(random.within(100...2_000)))
    case 70..<85:
      let victim = random.below(n)
      if cores[victim] != nil {
        nodes[victim].failNextWrite = true
        if parameters.trace { trace.append("\(now) disk will fail on \(ids[victim])") }
      }
    default:
      healPartitions()
    }
  }

  private mutating func healPartitions() {
    for a in 0..<ids.count { for b in 0..<ids.count { blocked[a][b] = false } }
    if parameters.trace { trace.append("\(now) heal partitions") }
  }

  private mutating func healAndCheckLiveness() {
    faultsActive = false
    lossRate = 0
    duplicateRate = 0
    healPartitions()
    partitionGeneration += 1
    acceptingNewOperations = false
    for i in 0..<ids.count {
      nodes[i].failNextWrite = false
      if cores[i] == nil { startNode(i) }
    }
    let deadline = now + parameters.livenessBoundMillis
    while violations.isEmpty {
      if openOperations == 0 && readyLeader != nil { return }
      guard now <= deadline, stepOnce() else { break }
      if steps > parameters.steps * 50 {
        violations.append("runaway: \(steps) events without the cluster settling (a message storm?)")
        return
      }
    }
    if violations.isEmpty {
      let pending = clients.compactMap { $0.pending.map { operations[$0.operation].description } }
      violations.append(
        "liveness: \(parameters.livenessBoundMillis) ms after the faults healed, "
          + (readyLeader == nil
            ? "no leader has committed an entry of its term" : "operations still pending: \(pending)"))
    }
  }

  // MARK: - Network

  private mutating func send(_ m: RaftMessage) {
    guard let from = indexOf[m.from], let to = indexOf[m.to] else { return }
    if blocked[from][to] || random.chance(lossRate) { return }
    queue.schedule(.deliver(m, from: from, to: to), at: now + UInt64(random.within(delay)))
    if random.chance(duplicateRate) {
      queue.schedule(
        .deliver(m, from: from, to: to), at: now + UInt64(random.within(delay.lowerBound...delay.upperBound * 3)))
    }
  }

  // MARK: - Ready processing

  /// Runs the Ready loop of node `i` after an input, then checks the invariants.
  private mutating func afterInput(_ i: Int) {
    while cores[i] != nil {
      let ready = cores[i]!.ready()
      if ready.isEmpty { break }
      process(ready, at: i)
    }
    if cores[i] != nil {
      if let violation = cores[i]!.invariantViolation() { violations.append("core invariant: \(violation)") }
      checkNode(i)
    }
  }

  private mutating func process(_ ready: RaftReady, at i: Int) {
    // 1. Persist (or fail and crash: what was not persisted is lost).
    // A Ready that only moves the commit index needs no sync (RaftReady.mustSync): like RaftNode, the
    // simulated shell keeps that commit index in memory (lost in a crash) and writes it with the next write.
    if ready.mustSync && nodes[i].failNextWrite {
      for m in ready.messages { send(m) }
      crashNode(i, reason: "disk write failed on", restartAfter: UInt64(random.within(20...1_000)))
      return
    }
    if let snap = ready.snapshot {
      nodes[i].disk.snapshot = snap
      nodes[i].disk.entries = []
      nodes[i].lastHandedIndex = snap.metadata.index
    }
    if let first = ready.entries.first {
      // Leader Append-Only: a leader never rewrites entries it has already handed out.
      if ready.role == .leader && first.index <= nodes[i].lastHandedIndex {
        violations.append("leader append-only: leader \(ids[i]) rewrites its log from \(first.index)")
      }
      nodes[i].lastHandedIndex = ready.entries.last?.index ?? 0
      recordEntries(ready.entries, at: i)
      let base = (nodes[i].disk.snapshot?.metadata.index ?? 0) + 1
      let keep = Int(first.index) - Int(base)
      if keep >= 0 && keep <= nodes[i].disk.entries.count {
        nodes[i].disk.entries.removeSubrange(keep...)
        nodes[i].disk.entries.append(contentsOf: ready.entries)
      } else {
        violations.append("node \(ids[i]): entries from \(first.index) do not follow the persisted log at \(base)")
      }
    }
    if ready.mustSync {
      if let hs = ready.hardState ?? nodes[i].unwrittenHardState { nodes[i].disk.hardState = hs }
      nodes[i].unwrittenHardState = nil
    } else if let hs = ready.hardState {
      nodes[i].unwrittenHardState = hs
    }
    if faultsActive && random.chance(0.001) {
      // Crash after the write, before anything is sent.
      crashNode(i, reason: "crash after persisting", restartAfter: UInt64(random.within(20...1_000)))
      return
    }
    // 2. Send.
    for m in ready.messages { send(m) }
    for m in ready.messagesAfterPersist { send(m) }
    // 3. Apply.
    if let snap = ready.snapshot {
      guard let kv = try? KVStateMachine(snapshot: snap.data) else {
        violations.append("node \(ids[i]): received snapshot does not decode")
        return
      }
      nodes[i].kv = kv
      nodes[i].applied = snap.metadata.index
      snapshotsInstalled += 1
    }
    for entry in ready.committedEntries { apply(entry, at: i) }
    for rs in ready.readStates { nodes[i].readyReads.append(rs) }
    cores[i]!.advance(ready)
    serveReads(at: i)
    let snapshotBase = max(cores[i]!.firstIndex, (cores[i]!.snapshot?.metadata.index ?? 0) + 1)
    if nodes[i].applied >= snapshotBase + snapshotEvery && !nodes[i].snapshotScheduled {
      nodes[i].snapshotScheduled = true
      queue.schedule(.takeSnapshot(node: i), at: now + 1)
    }
  }

  private mutating func takeSnapshot(_ i: Int) {
    nodes[i].snapshotScheduled = false
    guard var core = cores[i] else { return }
    let index = nodes[i].applied
    guard index >= core.firstIndex, index > core.snapshot?.metadata.index ?? 0 else { return }
    do {
      let snap = try core.compact(upTo: index, snapshotData: nodes[i].kv.snapshotBytes())
      cores[i] = core
      // Persist the snapshot, then drop the covered entries (what the storage does).
      let oldBase = nodes[i].disk.snapshot?.metadata.index ?? 0
      nodes[i].disk.snapshot = snap
      let drop = Int(index - oldBase)
      if drop <= nodes[i].disk.entries.count {
        nodes[i].disk.entries.removeFirst(drop)
      } else {
        nodes[i].disk.entries = []
      }
    } catch {
      violations.append("node \(ids[i]): snapshot at applied index \(index) refused: \(error)")
    }
  }

  private mutating func apply(_ entry: RaftEntry, at i: Int) {
    if entry.index != nodes[i].applied + 1 {
      violations.append("node \(ids[i]) applied \(entry.index) after \(nodes[i].applied)")
      return
    }
    nodes[i].applied = entry.index
    // State Machine Safety: no two nodes apply different entries at one index.
    let fingerprint = Self.fingerprint(entry)
    let idx = Int(entry.index)
    while appliedFingerprint.count <= idx { appliedFingerprint.append(0) }
    if appliedFingerprint[idx] == 0 {
      appliedFingerprint[idx] = fingerprint
    } else if appliedFingerprint[idx] != fingerprint {
      violations.append("state machine safety: node \(ids[i]) applied a different entry \(entry) at \(entry.index)")
    }
    let applied = nodes[i].kv.apply(entry)
    if let applied, let refusal = applied.refusal {
      // The simulation keeps fewer sessions than the table's capacity and never reaches the expiry.
      violations.append("node \(ids[i]) refused a command at \(entry.index): \(refusal)")
    }
    // Answer the client whose proposal this node accepted at this index.
    if let waiting = nodes[i].waitingWrites.removeValue(forKey: entry.index) {
      let c = waiting.client
      if waiting.term == entry.term, let command = applied?.command, waiting.registration == command.isRegistration,
        waiting.registration || command.clientID == clients[c].session
      {
        if waiting.registration {
          // The session is open: the pending write is attempted again, now under the session.
          if clients[c].session == nil { clients[c].session = entry.index }
          retrySoon(client: c, operation: waiting.operation)
        } else {
          complete(client: c, operation: waiting.operation, readValue: nil)
        }
      } else {
        retrySoon(client: c, operation: waiting.operation)
      }
    }
  }

  private mutating func serveReads(at i: Int) {
    var remaining: [ReadState] = []
    for rs in nodes[i].readyReads {
      if rs.index > nodes[i].applied {
        remaining.append(rs)
        continue
      }
      guard let waiting = nodes[i].waitingReads.removeValue(forKey: rs.context) else { continue }
      complete(client: waiting.client, operation: waiting.operation, readValue: nodes[i].kv.values[waiting.key])
    }
    nodes[i].readyReads = remaining
  }

  // MARK: - Invariants

  private static func fingerprint(_ e: RaftEntry) -> UInt64 {
    var h: UInt64 = 0xcbf2_9ce4_8422_2325 ^ UInt64(e.kind.rawValue)
    for b in e.data { h = (h ^ UInt64(b)) &* 0x100_0000_01b3 }
    return h | 1
  }

  /// Log Matching: an entry identified by (index, term) has one content and one predecessor term
  /// across all nodes and all time, which by induction makes logs that share an entry identical
  /// up to it.
  private mutating func recordEntries(_ entries: [RaftEntry], at i: Int) {
    guard let core = cores[i] else { return }
    for e in entries {
      guard let prev = core.term(at: e.index - 1) else { continue }
      let record = EntryRecord(fingerprint: Self.fingerprint(e), previousTerm: prev)
      let key = EntryKey(index: e.index, term: e.term)
      if let existing = entryRecord[key] {
        if existing != record {
          violations.append(
            "log matching: node \(ids[i]) holds a different entry \(e) (or predecessor) than another node")
        }
      } else {
        entryRecord[key] = record
      }
    }
  }

  /// Checks Election Safety, Leader Completeness and commit consistency for node `i` after it
  /// handled an input.
  private mutating func checkNode(_ i: Int) {
    guard cores[i] != nil else { return }
    let becameLeader = cores[i]!.role == .leader && nodes[i].wasLeaderInTerm != cores[i]!.term
    let commitAdvanced = cores[i]!.commitIndex > nodes[i].checkedCommit
    guard becameLeader || commitAdvanced else { return }
    let core = cores[i]!
    if becameLeader {
      nodes[i].wasLeaderInTerm = core.term
      elections += 1
      if parameters.trace { trace.append("\(now) \(ids[i]) leads term \(core.term)") }
      // Election Safety: at most one leader per term.
      if let other = leaderOfTerm[core.term], other != i {
        violations.append("election safety: \(ids[other]) and \(ids[i]) both lead term \(core.term)")
      }
      leaderOfTerm[core.term] = i
      // Leader Completeness: the new leader holds every entry committed in an earlier term.
      let from = max(core.firstIndex, 1)
      if from < UInt64(committedTerms.count) {
        for index in from..<UInt64(committedTerms.count) {
          let t = committedTerms[Int(index)]
          if t != 0 && committedInTerm[Int(index)] < core.term && core.term(at: index) != t {
            violations.append(
              "leader completeness: \(ids[i]) leads term \(core.term) without committed entry \(index)@\(t)")
            break
          }
        }
      }
    }
    // Commits: one term per committed index; every leader of a term after the one in which it
    // was committed holds it. A node learns of a commit in its current term or later, so the
    // smallest term any node reports it in bounds the term it was committed in (the committing
    // leader reports it first, in its own term).
    if core.commitIndex > nodes[i].checkedCommit {
      var index = nodes[i].checkedCommit + 1
      while index <= core.commitIndex {
        if let t = core.term(at: index) {
          let k = Int(index)
          while committedTerms.count <= k {
            committedTerms.append(0)
            committedInTerm.append(UInt64.max)
          }
          if committedInTerm[k] > core.term { committedInTerm[k] = core.term }
          if committedTerms[k] == 0 {
            committedTerms[k] = t
            let commitTerm = committedInTerm[k]
            for j in cores.indices where j != i && cores[j]?.role == .leader {
              if let oc = cores[j], oc.term > commitTerm, index >= oc.firstIndex, oc.term(at: index) != t {
                violations.append(
                  "leader completeness: \(ids[j]) leads term \(oc.term) without committed \(index)@\(t)")
              }
            }
          } else if committedTerms[k] != t {
            violations.append(
              "state machine safety: \(ids[i]) committed \(index)@\(t) but \(index)@\(committedTerms[k]) committed before"
            )
          }
        }
        index += 1
      }
      nodes[i].checkedCommit = core.commitIndex
    }
  }

  // MARK: - Clients

  private mutating func issue(client c: Int) {
    guard acceptingNewOperations, clients[c].pending == nil else { return }
    let key = random.below(parameters.keys)
    let kind: RegisterOperation.Kind
    if random.chance(0.5) {
      clients[c].sequence += 1
      kind = .write(Int64(c) * 1_000_000 + Int64(clients[c].sequence))
    } else {
      kind = .read(nil)
    }
    historyClock += 1
    operations.append(
      SimOperation(client: c, key: key, kind: kind, sequence: clients[c].sequence, invoke: historyClock))
    clients[c].pending = SimClient.Pending(operation: operations.count - 1, attempt: 0)
    openOperations += 1
    attempt(client: c)
  }

  private mutating func attempt(client c: Int) {
    guard var pending = clients[c].pending else { return }
    pending.attempt += 1
    clients[c].pending = pending
    let op = operations[pending.operation]
    let target = clients[c].target
    queue.schedule(
      .clientTimeout(client: c, operation: pending.operation, attempt: pending.attempt),
      at: now + UInt64(20 * parameters.options.electionTicks) * parameters.tickMillis / 2)
    guard cores[target] != nil else { return }
    do {
      switch op.kind {
      case .write(let value):
        // A client opens its session through the log before its first write (thesis §6.3).
        let session = clients[c].session
        let data =
          session.map {
            KVStateMachine.encodePut(key: op.key, value: value, clientID: $0, sequence: op.sequence)
          } ?? KVStateMachine.encodeRegistration()
        let position = try cores[target]!.propose(data)
        nodes[target].waitingWrites[position.index] = SimNode.WaitingWrite(
          client: c, operation: pending.operation, term: position.term, registration: session == nil)
      case .read:
        var w = WireWriter(capacity: 16)
        w.writeVarint(UInt64(c))
        w.writeVarint(UInt64(pending.operation))
        w.writeVarint(UInt64(pending.attempt))
        try cores[target]!.readIndex(context: w.bytes)
        nodes[target].waitingReads[w.bytes] = SimNode.WaitingRead(client: c, operation: pending.operation, key: op.key)
      }
      afterInput(target)
    } catch .notLeader(let leader) {
      clients[c].target = leader.flatMap { indexOf[$0] } ?? random.below(ids.count)
      retrySoon(client: c, operation: pending.operation)
    } catch {
      retrySoon(client: c, operation: pending.operation)
    }
  }

  private mutating func retrySoon(client c: Int, operation: Int) {
    guard let pending = clients[c].pending, pending.operation == operation else { return }
    queue.schedule(
      .clientTimeout(client: c, operation: operation, attempt: pending.attempt),
      at: now + UInt64(random.within(5...30)))
  }

  private mutating func retry(client c: Int) {
    if random.chance(0.5) { clients[c].target = random.below(ids.count) }
    attempt(client: c)
  }

  private mutating func complete(client c: Int, operation: Int, readValue: Int64?) {
    guard let pending = clients[c].pending, pending.operation == operation else { return }
    historyClock += 1
    operations[operation].response = historyClock
    if case .read = operations[operation].kind { operations[operation].kind = .read(readValue) }
    clients[c].pending = nil
    openOperations -= 1
    if parameters.trace { trace.append("\(now) done \(operations[operation].description)") }
    queue.schedule(.clientIssue(client: c), at: now + UInt64(random.within(0...40)))
  }

  private mutating func checkHistory() {
    for key in 0..<parameters.keys {
      let history = operations.filter { $0.key == key }.map {
        RegisterOperation(client: $0.client, kind: $0.kind, invoke: $0.invoke, response: $0.response)
      }
      switch LinearizabilityChecker.check(history) {
      case .linearizable: continue
      case .notLinearizable:
        violations.append(
          "linearizability: history of key \(key) is not linearizable:\n  "
            + history.map(\.description).joined(separator: "\n  "))
      case .undecided:
        violations.append("linearizability: checker budget exceeded on key \(key) (\(history.count) operations)")
      }
    }
  }

  // MARK: - Membership

  private mutating func changeMembership() {
    guard let l = readyLeader, var core = cores[l] else { return }
    let config = core.configuration
    if ids.count < 5 || random.chance(0.3) {
      // Leadership transfer to a random other voter.
      guard let target = config.voters.sorted().filter({ $0 != ids[l] }).randomElement(using: &random) else { return }
      if parameters.trace { trace.append("\(now) transfer leadership \(ids[l]) -> \(target)") }
      try? core.transferLeadership(to: target)
      cores[l] = core
      afterInput(l)
      return
    }
    let outsiders = ids.filter { !config.members.contains($0) }
    let change: ConfigChange
    if let learner = config.learners.sorted().first {
      change = .promote(learner)
    } else if config.voters.count > 3 && random.chance(0.7) {
      guard let victim = config.voters.sorted().randomElement(using: &random) else { return }
      change = .remove(victim)
    } else if let newcomer = outsiders.randomElement(using: &random) {
      change = .addLearner(newcomer)
    } else {
      return
    }
    if parameters.trace { trace.append("\(now) propose \(change) on \(ids[l])") }
    _ = try? core.proposeConfigChange(change)
    cores[l] = core
    afterInput(l)
  }
}

// MARK: - Nodes and clients

struct SimDisk: Sendable {
  var hardState = HardState()
  var snapshot: RaftSnapshot?
  var entries: [RaftEntry] = []
}

struct SimNode: Sendable {
  struct WaitingWrite: Sendable {
    var client: Int
    var operation: Int
    var term: UInt64
    /// The proposal opens the client's session (the write follows once it is applied).
    var registration: Bool
  }

  struct WaitingRead: Sendable {
    var client: Int
    var operation: Int
    var key: Int
  }

  let id: NodeID
  var disk = SimDisk()
  var kv = KVStateMachine()
  var applied: UInt64 = 0
  var checkedCommit: UInt64 = 0
  var lastHandedIndex: UInt64 = 0
  var wasLeaderInTerm: UInt64 = 0
  var incarnation = 0
  var failNextWrite = false
  var snapshotScheduled = false
  /// A commit index from a Ready that needed no sync, not yet on `disk`.
  var unwrittenHardState: HardState?
  var waitingWrites: [UInt64: WaitingWrite] = [:]
  var waitingReads: [[UInt8]: WaitingRead] = [:]
  var readyReads: [ReadState] = []

  init(id: NodeID) { self.id = id }
}

struct SimClient: Sendable {
  struct Pending: Sendable {
    var operation: Int
    var attempt: Int
  }

  let id: Int
  var target: Int
  var sequence: UInt64 = 0
  /// The client's session id (the log index of its registration), once registered.
  var session: UInt64?
  var pending: Pending?

  init(id: Int, target: Int) {
    self.id = id
    self.target = target
  }
}

struct SimOperation: Sendable, CustomStringConvertible {
  var client: Int
  var key: Int
  var kind: RegisterOperation.Kind
  var sequence: UInt64
  var invoke: UInt64
  var response: UInt64?

  var description: String {
    "key \(key) " + RegisterOperation(client: client, kind: kind, invoke: invoke, response: response).description
  }
}
