// A deterministic simulation of the real shell: RaftNode actors over DurableLog on SimulatedFileSystem.

import Logging
import TealConsensus
import TealRaft
import TealStorage
import TealStorageTesting
import TealWire

// MARK: - Parameters and report

/// The membership a shell simulation starts from. Nodes outside the founders join as learners and are
/// promoted one at a time (how a cluster grows from one node).
public enum ShellClusterShape: String, Sendable, CaseIterable {
  /// Founders {n0}; n1 and n2 are added as learners, then promoted.
  case oneVoter
  /// Founders {n0, n1}; n2 is added as a learner, then promoted.
  case twoVoters
  /// Founders {n0, n1, n2}.
  case threeVoters
}

/// What one shell simulation run does; everything else is drawn from the seed.
public struct ShellSimulationParameters: Sendable {
  public var seed: UInt64
  /// Events processed in the fault phase; then every fault heals and the run continues until every
  /// client operation has completed and the nodes agree (or the liveness bound is exceeded).
  public var steps: Int = 3_000
  /// nil lets the seed choose.
  public var shape: ShellClusterShape?
  public var clients: Int = 3
  public var keys: Int = 2
  /// Inject faults (crashes, power loss, storage crash points, partitions, pauses, loss, long delays).
  public var faults: Bool = true
  /// After healing, the cluster must be live again within this much simulated time.
  public var livenessBoundMillis: UInt64 = 20_000
  /// Record a human-readable trace of every event.
  public var trace: Bool = false

  public init(seed: UInt64) { self.seed = seed }
}

/// The outcome of one shell simulation run.
public struct ShellSimulationReport: Sendable {
  public var seed: UInt64
  public var shape: ShellClusterShape
  public var steps: Int
  public var simulatedMillis: UInt64
  public var violations: [String]
  public var leaders: Int
  public var crashes: Int
  public var storageCrashes: Int
  public var snapshotsRestored: Int
  public var operations: Int
  public var completedOperations: Int
  public var acknowledgedWrites: Int
  public var trace: [String]
}

// MARK: - Simulation

/// Runs three `RaftNode` actors (the production shell, with a manual runtime) over `DurableLog` on one
/// `SimulatedFileSystem` each, under a seeded event queue, and checks invariants after every event.
///
/// Each node's Ready processing, the storage write of each Ready, and the `persisted(readyID)` input that
/// follows it are separate events at seeded delays, so messages, ticks and proposals arrive between a Ready
/// and its durability, and several inputs go into one Ready. Faults: power loss at any moment (un-synced data
/// lost, appends torn at a random byte), crash points at any storage operation (writes, syncs, renames,
/// unlinks, at run time and during recovery), per-node clock drift, paused nodes (longer than the election
/// timeout), messages delayed past the election timeout, loss and duplication, symmetric, bridge and one-way
/// partitions, session tables smaller than the client count (clients re-register and retry with fresh
/// sequence numbers), learners and promotions from 1- and 2-voter clusters.
///
/// Invariants, after every event: RaftCore's `invariantViolation()` on the touched node; one leader per
/// term; at most one granted vote per (node, term) across incarnations; one state-machine hash per applied
/// index across nodes (also right after a snapshot restore); one entry per applied index, and an
/// acknowledged proposal's entry at its index; no node fails other than at a crash point. At the end: every
/// node converges to the same applied state within the liveness bound, and each key's client history is
/// linearizable (Wing & Gong).
public struct ShellSimulation {
  public let parameters: ShellSimulationParameters
  public let shape: ShellClusterShape
  public private(set) var now: UInt64 = 0
  public private(set) var steps = 0

  private var random: SimRandom
  private var queue = ShellEventQueue()
  private let recorder = ShellRecorder()
  private let logger = Logger(label: "teal.shellsim", factory: { _ in SwiftLogNoOpLogHandler() })
  private let ids: [NodeID]
  private let founders: RaftConfiguration
  private var nodes: [ShellNode] = []
  private var options = RaftOptions()
  private let tickMicros: UInt64 = 10_000
  private var sessionCapacity: Int
  private var snapshotThreshold: UInt64

  // Network
  private var blocked: [[Bool]]
  private var partitionGeneration = 0
  private var lossRate: Double
  private var duplicateRate: Double
  private var longDelayRate: Double
  private var maxDelayMicros: Int
  private var faultRate: Double
  private var faultsActive: Bool

  // Membership plan: the changes still to make, in order.
  private var plan: [ConfigChange] = []

  // Clients
  private var clients: [ShellClient] = []
  private var history: [[RegisterOperation]]
  private var historyClock: UInt64 = 0
  private var nextValue: Int64 = 1
  private var accepting = true
  private let mailbox = ShellMailbox()

  // Invariant bookkeeping
  private var leaderOfTerm: [UInt64: Int] = [:]
  private var grantedVote: [VoteKey: NodeID] = [:]
  private var crashes = 0
  private var storageCrashes = 0
  /// The highest commit index any node has reported so far (every index up to it is committed).
  private var highestCommit: UInt64 = 0

  private struct VoteKey: Hashable {
    var node: NodeID
    var term: UInt64
  }

  public init(_ parameters: ShellSimulationParameters) {
    self.parameters = parameters
    var random = SimRandom(seed: parameters.seed ^ 0x5EED_5E11)
    shape = parameters.shape ?? ShellClusterShape.allCases[random.below(3)]
    ids = (0..<3).map { NodeID("n\($0)") }
    switch shape {
    case .oneVoter:
      founders = RaftConfiguration(voters: [ids[0]])
      plan = [.addLearner(ids[1]), .addLearner(ids[2]), .promote(ids[1]), .promote(ids[2])]
    case .twoVoters:
      founders = RaftConfiguration(voters: [ids[0], ids[1]])
      plan = [.addLearner(ids[2]), .promote(ids[2])]
    case .threeVoters:
      founders = RaftConfiguration(voters: Set(ids))
    }
    options.electionTicks = 10
    options.heartbeatTicks = 2
    options.maxInflightAppends = [1, 8][random.below(2)]
    options.maxEntriesPerAppend = [1, 4, 16][random.below(3)]
    options.snapshotChunkBytes = [16, 256, 4096][random.below(3)]
    options.compactionTailEntries = [0, 4][random.below(2)]
    options.learnerCatchUpLag = 4
    snapshotThreshold = UInt64([6, 15, 40][random.below(3)])
    // Below the client count in half the seeds: sessions are evicted and clients must re-register.
    sessionCapacity = random.chance(0.5) ? max(parameters.clients - 1, 1) : 64
    faultsActive = parameters.faults
    lossRate = parameters.faults ? [0, 0.01, 0.05][random.below(3)] : 0
    duplicateRate = parameters.faults ? [0, 0.02][random.below(2)] : 0
    longDelayRate = parameters.faults ? [0, 0.005, 0.02][random.below(3)] : 0
    maxDelayMicros = [2_000, 5_000, 15_000][random.below(3)]
    faultRate = parameters.faults ? [0.003, 0.01, 0.02][random.below(3)] : 0
    blocked = Array(repeating: Array(repeating: false, count: 3), count: 3)
    history = Array(repeating: [], count: parameters.keys)
    self.random = random
    for _ in 0..<3 {
      // Clock drift: each node's tick lasts 10 ms scaled by up to +-20 %.
      let drift = parameters.faults ? [0, 5, 20][self.random.below(3)] : 0
      let period = Int(tickMicros) * (100 + self.random.within(-drift...drift)) / 100
      nodes.append(ShellNode(tickPeriod: UInt64(period)))
    }
    for i in 0..<3 { start(i) }
    for c in 0..<parameters.clients {
      clients.append(ShellClient(target: self.random.below(3)))
      queue.schedule(.clientIssue(client: c), at: UInt64(self.random.within(0...50_000)))
    }
    if !plan.isEmpty { queue.schedule(.membership, at: UInt64(self.random.within(50_000...300_000))) }
  }

  // MARK: Running

  public mutating func run() -> ShellSimulationReport {
    while steps < parameters.steps && recorder.violations.isEmpty {
      guard stepOnce() else { break }
      if faultsActive && random.chance(faultRate) { injectFault() }
    }
    if recorder.violations.isEmpty { healAndCheckLiveness() }
    if recorder.violations.isEmpty { checkHistory() }
    return report()
  }

  public func report() -> ShellSimulationReport {
    let all = history.flatMap { $0 }
    return ShellSimulationReport(
      seed: parameters.seed, shape: shape, steps: steps, simulatedMillis: now / 1_000,
      violations: recorder.violations, leaders: leaderOfTerm.count, crashes: crashes, storageCrashes: storageCrashes,
      snapshotsRestored: recorder.restores, operations: all.count,
      completedOperations: all.filter { $0.response != nil }.count,
      acknowledgedWrites: recorder.acknowledged.count, trace: recorder.trace)
  }

  @discardableResult
  mutating func stepOnce() -> Bool {
    guard let (time, event) = queue.pop() else { return false }
    now = time
    recorder.now = time
    steps += 1
    handle(event)
    return true
  }

  private func note(_ text: @autoclosure () -> String) {
    if parameters.trace { recorder.trace.append("\(now)us \(text())") }
  }

  // MARK: Nodes

  private func configuration(_ i: Int) -> RaftNodeConfiguration {
    var c = RaftNodeConfiguration(
      id: ids[i], bootstrap: founders, dataDirectory: "/n\(i)", raft: options, tickInterval: nil, logger: logger)
    c.storage = StorageOptions(segmentSizeLimit: 2_048, fileSystem: nodes[i].fileSystem, logger: logger)
    c.snapshotThreshold = snapshotThreshold
    c.proposalTimeoutTicks = 150
    c.readTimeoutTicks = 150
    c.readRetryTicks = 10
    c.join = !founders.voters.contains(ids[i])
    c.randomSeed = parameters.seed &* 31 &+ UInt64(i) &* 1_000_003 &+ UInt64(nodes[i].incarnation)
    return c
  }

  /// Opens node `i` from its directory (a new incarnation). A crash point may be armed for recovery.
  private mutating func start(_ i: Int) {
    nodes[i].incarnation += 1
    recorder.lastApplied[i] = nil
    let armed = faultsActive && random.chance(0.1)
    if armed { nodes[i].fileSystem.crashAfter(operations: random.below(6)) }
    let stateMachine = ShellKV(node: i, sessionCapacity: sessionCapacity, recorder: recorder)
    do {
      let node = try RaftNode(
        configuration: configuration(i), stateMachine: stateMachine, network: nil,
        runtime: .manual(readNonce: random.next()))
      nodes[i].node = node
      nodes[i].processScheduled = false
      nodes[i].writeScheduled = false
      nodes[i].crashPointArmed = armed
      note("n\(i) started (incarnation \(nodes[i].incarnation))")
      queue.schedule(.tick(node: i, incarnation: nodes[i].incarnation), at: now + nodes[i].tickPeriod)
      node.assumeIsolated { $0.start() }
      afterInput(i)
    } catch {
      if armed {
        note("n\(i) failed to open at a crash point: \(error)")
        powerLoss(i, storage: true)
      } else {
        recorder.violation("n\(i) cannot reopen its directory: \(error)")
      }
    }
  }

  /// Power loss of node `i`: the process is gone and the disk keeps only what was synced (appends torn).
  private mutating func powerLoss(_ i: Int, storage: Bool) {
    if let node = nodes[i].node { node.assumeIsolated { $0.crash() } }
    nodes[i].node = nil
    nodes[i].crashPointArmed = false
    nodes[i].inbox = []
    nodes[i].pausedUntil = nil
    nodes[i].fileSystem.crash(using: &random)
    if storage { storageCrashes += 1 } else { crashes += 1 }
    let delay = UInt64(random.within(20_000...400_000))
    queue.schedule(.restart(node: i), at: now + delay)
    note("n\(i) lost power\(storage ? " at a storage crash point" : "")")
  }

  /// After an input to node `i`: send what it sent, schedule its Ready processing and pending write,
  /// and check it.
  private mutating func afterInput(_ i: Int) {
    guard let node = nodes[i].node else { return }
    let incarnation = nodes[i].incarnation
    let (sent, needsProcessing, pending, running, failure, violation, status, jobs, durable) = node.assumeIsolated {
      n -> (
        [RaftMessage], Bool, (readyID: UInt64, written: Bool)?, Bool, String?, String?, RaftNodeStatus, Int,
        (term: UInt64, vote: String?)?
      ) in
      let status = n.status
      return (
        n.takeSentMessages(), n.needsProcessing, n.pendingWriteState, status.isRunning, status.failure,
        n.coreInvariantViolation, status, n.queuedJobs, n.durableTermAndVote
      )
    }
    deliverMail()
    for message in sent {
      checkDurability(of: message, durable: durable)
      send(message, from: i)
    }
    if let violation { recorder.violation("n\(i) core invariant: \(violation)") }
    if jobs > 0 { recorder.violation("n\(i) has \(jobs) jobs queued on its manual executor (an unstructured task)") }
    if !running {
      if nodes[i].crashPointArmed {
        note("n\(i) stopped at a storage crash point: \(failure ?? "-")")
        powerLoss(i, storage: true)
      } else {
        recorder.violation("n\(i) stopped on its own: \(failure ?? "no failure given")")
      }
      return
    }
    highestCommit = max(highestCommit, status.commitIndex)
    if parameters.trace {
      let seen =
        "\(status.role) in term \(status.term), commit \(status.commitIndex), voters "
        + "\(node.assumeIsolated { $0.membership.voters.map(\.rawValue).sorted() })"
      if nodes[i].lastSeen != seen {
        nodes[i].lastSeen = seen
        note("n\(i) is \(seen)")
      }
    }
    // Election safety counts a leadership once its term is durable. A node that wins an election and loses
    // power before its new term is written restarts in the older term and may then vote in the newer one
    // (seed 1950 of the 10,000-seed run: a 1-voter leader re-elected itself in term 4 alone, lost power,
    // and granted n1 its vote in term 4); until its term is durable it sends nothing, which the durable
    // term check below enforces, so that leadership never existed for anyone else.
    if status.role == .leader, durable?.term == status.term {
      if let other = leaderOfTerm[status.term], other != i {
        recorder.violation("election safety: n\(i) and n\(other) both lead term \(status.term)")
      }
      leaderOfTerm[status.term] = i
    }
    if needsProcessing && !nodes[i].processScheduled {
      nodes[i].processScheduled = true
      queue.schedule(.process(node: i, incarnation: incarnation), at: now + UInt64(random.within(0...1_000)))
    }
    if let pending, !pending.written, !nodes[i].writeScheduled {
      nodes[i].writeScheduled = true
      queue.schedule(
        .write(node: i, incarnation: incarnation, readyID: pending.readyID),
        at: now + UInt64(random.within(0...4_000)))
    }
  }

  // MARK: Events

  private mutating func handle(_ event: ShellEvent) {
    if let i = event.node, let until = nodes[i].pausedUntil {
      if until > now {
        // A paused process does nothing until it resumes; its ticker skips the missed ticks (one tick
        // chain, so one tick at resume), received messages wait in its socket buffer.
        queue.schedule(event, at: until)
        return
      }
      nodes[i].pausedUntil = nil
      note("n\(i) resumed")
    }
    switch event {
    case .tick(let i, let incarnation):
      guard incarnation == nodes[i].incarnation, let node = nodes[i].node else { return }
      node.assumeIsolated { $0.tick() }
      queue.schedule(.tick(node: i, incarnation: incarnation), at: now + nodes[i].tickPeriod)
      afterInput(i)
    case .process(let i, let incarnation):
      guard incarnation == nodes[i].incarnation, let node = nodes[i].node else { return }
      nodes[i].processScheduled = false
      node.assumeIsolated { $0.processReadies() }
      afterInput(i)
    case .write(let i, let incarnation, let readyID):
      guard incarnation == nodes[i].incarnation, let node = nodes[i].node else { return }
      nodes[i].writeScheduled = false
      if faultsActive && random.chance(0.02) {
        // Power loss between a Ready and its fsync.
        powerLoss(i, storage: false)
        return
      }
      let written = node.assumeIsolated { $0.writePendingReady() }
      if written == readyID {
        queue.schedule(
          .persisted(node: i, incarnation: incarnation, readyID: readyID), at: now + UInt64(random.within(0...2_000)))
      }
      afterInput(i)
    case .persisted(let i, let incarnation, let readyID):
      guard incarnation == nodes[i].incarnation, let node = nodes[i].node else { return }
      node.assumeIsolated { $0.persisted(readyID) }
      afterInput(i)
    case .deliver(let message, let to):
      guard let node = nodes[to].node else { return }
      node.assumeIsolated { $0.receive(from: message.from, payload: message.wireBytes()) }
      afterInput(to)
    case .restart(let i):
      guard nodes[i].node == nil else { return }
      start(i)
    case .heal(let generation):
      guard generation == partitionGeneration else { return }
      healPartitions()
    case .clientIssue(let c):
      issue(c)
    case .clientTimeout(let c, let attempt):
      guard clients[c].attempt == attempt, clients[c].operation != nil else { return }
      note("c\(c) timed out")
      retry(c, elsewhere: true)
    case .clientRetry(let c, let attempt):
      guard clients[c].attempt == attempt, clients[c].operation != nil else { return }
      attemptOperation(c)
    case .membership:
      membershipStep()
    case .crashPoint(let i):
      guard nodes[i].node != nil else { return }
      nodes[i].crashPointArmed = true
      nodes[i].fileSystem.crashAfter(operations: random.below(12))
      note("n\(i) crash point armed")
    }
  }

  /// Nothing leaves a node that depends on a term or vote not yet durable (issue 9's first item): every
  /// message but pre-votes carries at most the durable term, and a vote granted in the durable term is the
  /// durable vote.
  private func checkDurability(of message: RaftMessage, durable: (term: UInt64, vote: String?)?) {
    guard let durable else { return }
    switch message.body {
    case .preVote, .preVoteResponse: return
    case .voteResponse(granted: true):
      // A grant in an older term than the durable one is safe (the node never votes in that term again):
      // several inputs may go into one Ready, and its write makes the newest term and vote durable.
      if message.term > durable.term || (message.term == durable.term && durable.vote != message.to.rawValue) {
        recorder.violation(
          "\(message.from) granted its vote in term \(message.term) to \(message.to) before it was durable "
            + "(durable term \(durable.term), vote \(durable.vote ?? "-"))")
      }
    default:
      if message.term > durable.term {
        recorder.violation(
          "\(message.from) sent \(message) before its term was durable (durable term \(durable.term))")
      }
    }
  }

  // MARK: Network

  private mutating func send(_ message: RaftMessage, from i: Int) {
    if case .voteResponse(granted: true) = message.body {
      let key = VoteKey(node: message.from, term: message.term)
      if let earlier = grantedVote[key], earlier != message.to {
        recorder.violation(
          "\(message.from) granted its vote in term \(message.term) to \(earlier) and to \(message.to)")
      }
      grantedVote[key] = message.to
    }
    guard let to = ids.firstIndex(of: message.to) else { return }
    note("send \(message)")
    if blocked[i][to] || random.chance(lossRate) { return }
    var copies = 1
    if random.chance(duplicateRate) { copies = 2 }
    for _ in 0..<copies {
      var delay = UInt64(random.within(100...maxDelayMicros))
      if random.chance(longDelayRate) {
        // Past the election timeout.
        delay = UInt64(options.electionTicks) * tickMicros * UInt64(random.within(15...30)) / 10
      }
      queue.schedule(.deliver(message, to: to), at: now + delay)
    }
  }

  private mutating func healPartitions() {
    partitionGeneration += 1
    for a in 0..<3 { for b in 0..<3 { blocked[a][b] = false } }
    note("partitions healed")
  }

  private mutating func injectFault() {
    let i = random.below(3)
    switch random.below(10) {
    case 0, 1:
      guard nodes[i].node != nil else { return }
      powerLoss(i, storage: false)
    case 2, 3:
      guard nodes[i].node != nil else { return }
      queue.schedule(.crashPoint(node: i), at: now)
    case 4:
      // Symmetric: one node cut off from the other two.
      healPartitions()
      for j in 0..<3 where j != i {
        blocked[i][j] = true
        blocked[j][i] = true
      }
      note("n\(i) partitioned")
      queue.schedule(.heal(generation: partitionGeneration), at: now + UInt64(random.within(200_000...2_000_000)))
    case 5:
      // Bridge: the two others cannot talk to each other; `i` talks to both.
      healPartitions()
      let others = (0..<3).filter { $0 != i }
      blocked[others[0]][others[1]] = true
      blocked[others[1]][others[0]] = true
      note("bridge partition through n\(i)")
      queue.schedule(.heal(generation: partitionGeneration), at: now + UInt64(random.within(200_000...2_000_000)))
    case 6:
      // One way: i's messages to j are lost, j's reach i.
      healPartitions()
      let j = (i + 1 + random.below(2)) % 3
      blocked[i][j] = true
      note("one-way cut n\(i) -> n\(j)")
      queue.schedule(.heal(generation: partitionGeneration), at: now + UInt64(random.within(200_000...2_000_000)))
    case 7:
      // Paused longer than the election timeout (a stopped process, a long GC, a VM migration).
      guard nodes[i].node != nil, nodes[i].pausedUntil == nil else { return }
      let timeout = UInt64(options.electionTicks) * tickMicros
      nodes[i].pausedUntil = now + timeout * UInt64(random.within(12...40)) / 10
      note("n\(i) paused")
    default:
      // A snapshot now (compaction) on a running node.
      guard let node = nodes[i].node else { return }
      node.assumeIsolated { $0.compactNow() }
      afterInput(i)
    }
  }

  // MARK: Membership

  /// Proposes the next change of the plan on the leader; a change the leader's membership already has
  /// and has committed is dropped from the plan. (A change only appended may still be lost: before, the plan
  /// dropped an `addLearner` a deposed leader had appended and never replicated, and then proposed
  /// `promote` of a node the new leader never had as a member, forever; seeds 241, 410, 1485.)
  private mutating func membershipStep() {
    guard !plan.isEmpty else { return }
    queue.schedule(.membership, at: now + UInt64(random.within(100_000...400_000)))
    guard
      let leader = (0..<3).first(where: { i in nodes[i].node?.assumeIsolated { $0.status.role == .leader } ?? false }),
      let node = nodes[leader].node
    else { return }
    let (membership, committed) = node.assumeIsolated { ($0.membership, $0.membershipIndex <= $0.status.commitIndex) }
    while committed, let change = plan.first {
      switch change {
      case .addLearner(let n) where membership.members.contains(n): plan.removeFirst()
      case .promote(let n) where membership.voters.contains(n): plan.removeFirst()
      default: break
      }
      if plan.first == change { break }
    }
    guard let change = plan.first else { return }
    note("n\(leader) proposes \(change)")
    node.assumeIsolated { n in n.proposeConfigChange(change) { _ in } }
    afterInput(leader)
  }

  // MARK: Clients

  private mutating func issue(_ c: Int) {
    guard accepting, clients[c].operation == nil else { return }
    let key = random.below(parameters.keys)
    historyClock += 1
    let isWrite = clients[c].session == nil || random.chance(0.6)
    if clients[c].session == nil {
      clients[c].operation = ShellOperation(kind: .register, key: key, historyIndex: nil)
    } else if isWrite {
      let value = nextValue
      nextValue += 1
      clients[c].sequence += 1
      history[key].append(RegisterOperation(client: c, kind: .write(value), invoke: historyClock, response: nil))
      clients[c].operation = ShellOperation(
        kind: .write(value, sequence: clients[c].sequence), key: key, historyIndex: history[key].count - 1)
    } else {
      history[key].append(RegisterOperation(client: c, kind: .read(nil), invoke: historyClock, response: nil))
      clients[c].operation = ShellOperation(kind: .read, key: key, historyIndex: history[key].count - 1)
    }
    attemptOperation(c)
  }

  private mutating func attemptOperation(_ c: Int) {
    guard let operation = clients[c].operation else { return }
    clients[c].attempt += 1
    let attempt = clients[c].attempt
    queue.schedule(.clientTimeout(client: c, attempt: attempt), at: now + 2_000_000)
    let target = clients[c].target
    guard let node = nodes[target].node else { return }
    let mailbox = self.mailbox
    switch operation.kind {
    case .register:
      let command = KVStateMachine.encodeRegistration()
      node.assumeIsolated { n in
        n.propose(command) { mailbox.proposals.append((c, attempt, command, $0)) }
      }
    case .write(let value, let sequence):
      guard let session = clients[c].session else { return }
      let command = KVStateMachine.encodePut(key: operation.key, value: value, clientID: session, sequence: sequence)
      node.assumeIsolated { n in
        n.propose(command) { mailbox.proposals.append((c, attempt, command, $0)) }
      }
    case .read:
      let key = operation.key
      // Every index committed anywhere before the read began must be in the state it returns.
      let floor = highestCommit
      node.assumeIsolated { n in
        n.linearizableRead { result in
          switch result {
          case .success:
            let (value, applied) = n.assumeIsolated { ($0.currentState.kv.values[key], $0.status.appliedIndex) }
            mailbox.reads.append((c, attempt, .success(ShellRead(value: value, applied: applied, floor: floor))))
          case .failure(let error):
            mailbox.reads.append((c, attempt, .failure(error)))
          }
        }
      }
    }
    afterInput(target)
  }

  /// Handles the outcomes the nodes reported since the last look.
  private mutating func deliverMail() {
    while !mailbox.isEmpty {
      let proposals = mailbox.proposals
      let reads = mailbox.reads
      mailbox.proposals = []
      mailbox.reads = []
      for (c, attempt, command, result) in proposals where clients[c].attempt == attempt {
        completeProposal(c, command: command, result: result)
      }
      for (c, attempt, result) in reads where clients[c].attempt == attempt {
        completeRead(c, result: result)
      }
    }
  }

  private mutating func completeProposal(_ c: Int, command: [UInt8], result: Result<[UInt8], RaftNodeError>) {
    guard let operation = clients[c].operation else { return }
    switch result {
    case .success(let bytes):
      var r = WireReader(bytes)
      let status = (try? r.readVarint("status")) ?? 2
      let index = (try? r.readVarint("index")) ?? 0
      if status == 1 {
        // The session was evicted or expired: the write's outcome is unknown (it stays open in the
        // history); register again and go on with a fresh operation and sequence numbers.
        note("c\(c) session \(clients[c].session ?? 0) refused; re-registering")
        clients[c].session = nil
        clients[c].sequence = 0
        clients[c].operation = nil
        schedule(c)
        return
      }
      recorder.acknowledge(index: index, command: command)
      historyClock += 1
      switch operation.kind {
      case .register:
        clients[c].session = index
        clients[c].sequence = 0
      case .write:
        if let h = operation.historyIndex { history[operation.key][h].response = historyClock }
      case .read:
        break
      }
      clients[c].operation = nil
      schedule(c)
    case .failure(let error):
      if case .notLeader(let leader?) = error, let l = ids.firstIndex(of: leader) {
        clients[c].target = l
        retry(c, elsewhere: false)
      } else {
        retry(c, elsewhere: true)
      }
    }
  }

  private mutating func completeRead(_ c: Int, result: Result<ShellRead, RaftNodeError>) {
    guard let operation = clients[c].operation, let h = operation.historyIndex else { return }
    switch result {
    case .success(let read):
      if read.applied < read.floor {
        recorder.violation(
          "read freshness: c\(c)'s read returned the state at applied index \(read.applied), but index "
            + "\(read.floor) was committed before the read began")
      }
      historyClock += 1
      history[operation.key][h].kind = .read(read.value)
      history[operation.key][h].response = historyClock
      clients[c].operation = nil
      schedule(c)
    case .failure:
      retry(c, elsewhere: true)
    }
  }

  private mutating func schedule(_ c: Int) {
    queue.schedule(.clientIssue(client: c), at: now + UInt64(random.within(1_000...30_000)))
  }

  /// Tries the operation again (the same sequence number: sessions deduplicate), after a short pause.
  private mutating func retry(_ c: Int, elsewhere: Bool) {
    if elsewhere { clients[c].target = random.below(3) }
    clients[c].attempt += 1
    queue.schedule(
      .clientRetry(client: c, attempt: clients[c].attempt), at: now + UInt64(random.within(5_000...40_000)))
  }

  // MARK: Healing and liveness

  private mutating func healAndCheckLiveness() {
    faultsActive = false
    accepting = false
    lossRate = 0
    duplicateRate = 0
    longDelayRate = 0
    healPartitions()
    for i in 0..<3 {
      nodes[i].pausedUntil = nil
      if nodes[i].node == nil {
        start(i)
      } else if nodes[i].crashPointArmed {
        nodes[i].crashPointArmed = false
        nodes[i].fileSystem.crashAfter(operations: nil)
      }
    }
    let deadline = now + parameters.livenessBoundMillis * 1_000
    var settledSince: UInt64?
    while recorder.violations.isEmpty {
      if now > deadline {
        let pending = clients.enumerated().filter { $0.element.operation != nil }.map { "c\($0.offset)" }
        recorder.violation(
          "liveness: not settled \(parameters.livenessBoundMillis) ms after healing (pending: \(pending), plan: "
            + "\(plan), applied: \(appliedIndexes()))")
        return
      }
      if settled() {
        if settledSince == nil { settledSince = now }
        if now - settledSince! > 200_000 { break }
      } else {
        settledSince = nil
      }
      guard stepOnce() else { break }
    }
    accepting = false
    // Every node holds the state of every acknowledged proposal.
    let maxAcked = recorder.acknowledged.keys.max() ?? 0
    for i in 0..<3 where (recorder.lastApplied[i] ?? 0) < maxAcked && plan.isEmpty {
      recorder.violation("n\(i) applied up to \(recorder.lastApplied[i] ?? 0), below acknowledged \(maxAcked)")
    }
  }

  private func appliedIndexes() -> [UInt64] {
    (0..<3).map { nodes[$0].node?.assumeIsolated { $0.status.appliedIndex } ?? 0 }
  }

  /// Every client idle, the membership plan done, and all nodes at one applied index with a leader.
  private func settled() -> Bool {
    guard plan.isEmpty, clients.allSatisfy({ $0.operation == nil }) else { return false }
    let statuses = (0..<3).compactMap { nodes[$0].node?.assumeIsolated { $0.status } }
    guard statuses.count == 3, statuses.contains(where: { $0.role == .leader }) else { return false }
    return Set(statuses.map(\.appliedIndex)).count == 1 && Set(statuses.map(\.commitIndex)).count == 1
  }

  private mutating func checkHistory() {
    for (key, operations) in history.enumerated() {
      switch LinearizabilityChecker.check(operations) {
      case .linearizable: break
      case .notLinearizable:
        recorder.violation("linearizability: the history of key \(key) is not linearizable: \(operations)")
      case .undecided:
        recorder.violation("linearizability: undecided for key \(key) (\(operations.count) operations)")
      }
    }
  }
}

// MARK: - Pieces

struct ShellNode {
  let fileSystem = SimulatedFileSystem()
  var node: RaftNode<ShellKV>?
  var incarnation = 0
  let tickPeriod: UInt64
  var processScheduled = false
  var writeScheduled = false
  var crashPointArmed = false
  var pausedUntil: UInt64?
  var inbox: [RaftMessage] = []
  /// For the trace: the role, term, commit index and voters last reported.
  var lastSeen = ""

  init(tickPeriod: UInt64) { self.tickPeriod = tickPeriod }
}

struct ShellOperation {
  enum Kind {
    case register
    case write(Int64, sequence: UInt64)
    case read
  }

  var kind: Kind
  var key: Int
  var historyIndex: Int?
}

struct ShellClient {
  var target: Int
  var session: UInt64?
  var sequence: UInt64 = 0
  var operation: ShellOperation?
  var attempt = 0
}

/// Outcomes the nodes report through completion callbacks, collected until the simulation looks.
final class ShellMailbox: @unchecked Sendable {
  var proposals: [(client: Int, attempt: Int, command: [UInt8], result: Result<[UInt8], RaftNodeError>)] = []
  var reads: [(client: Int, attempt: Int, result: Result<ShellRead, RaftNodeError>)] = []

  var isEmpty: Bool { proposals.isEmpty && reads.isEmpty }
}

/// What a completed read saw: the key's value, the reading node's applied index, and the highest index
/// committed anywhere when the read began (the applied index must be at or above it).
struct ShellRead {
  var value: Int64?
  var applied: UInt64
  var floor: UInt64
}

enum ShellEvent {
  case tick(node: Int, incarnation: Int)
  case process(node: Int, incarnation: Int)
  case write(node: Int, incarnation: Int, readyID: UInt64)
  case persisted(node: Int, incarnation: Int, readyID: UInt64)
  case deliver(RaftMessage, to: Int)
  case restart(node: Int)
  case heal(generation: Int)
  case clientIssue(client: Int)
  case clientTimeout(client: Int, attempt: Int)
  case clientRetry(client: Int, attempt: Int)
  case membership
  case crashPoint(node: Int)

  /// The node whose process handles the event (deferred while it is paused).
  var node: Int? {
    switch self {
    case .tick(let n, _), .process(let n, _), .write(let n, _, _), .persisted(let n, _, _): n
    case .deliver(_, let to): to
    default: nil
    }
  }

}

/// (time, insertion order) min-heap of shell events: equal times keep FIFO order.
struct ShellEventQueue {
  private var heap: [(time: UInt64, order: UInt64, event: ShellEvent)] = []
  private var counter: UInt64 = 0

  mutating func schedule(_ event: ShellEvent, at time: UInt64) {
    counter += 1
    heap.append((time, counter, event))
    var child = heap.count - 1
    while child > 0 {
      let parent = (child - 1) / 2
      if less(child, parent) {
        heap.swapAt(child, parent)
        child = parent
      } else {
        break
      }
    }
  }

  mutating func pop() -> (UInt64, ShellEvent)? {
    guard !heap.isEmpty else { return nil }
    heap.swapAt(0, heap.count - 1)
    let top = heap.removeLast()
    var parent = 0
    while true {
      let left = 2 * parent + 1
      guard left < heap.count else { break }
      var child = left
      if left + 1 < heap.count && less(left + 1, left) { child = left + 1 }
      guard less(child, parent) else { break }
      heap.swapAt(child, parent)
      parent = child
    }
    return (top.time, top.event)
  }

  private func less(_ a: Int, _ b: Int) -> Bool {
    heap[a].time < heap[b].time || (heap[a].time == heap[b].time && heap[a].order < heap[b].order)
  }
}
