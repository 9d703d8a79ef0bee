import TealRaft
import TealWire

/// A hand-driven cluster for unit and scenario tests: messages wait in a queue until delivered,
/// links can be cut, and every Ready is persisted, sent and applied in the documented order.
struct TestCluster {
  var cores: [NodeID: RaftCore] = [:]
  var disks: [NodeID: RaftPersistentState] = [:]
  var applied: [NodeID: [RaftEntry]] = [:]
  var readStates: [NodeID: [ReadState]] = [:]
  var installedSnapshots: [NodeID: [SnapshotMetadata]] = [:]
  var queue: [RaftMessage] = []
  var cut: Set<[NodeID]> = []
  var down: Set<NodeID> = []
  var delivered: [RaftMessage] = []
  let bootstrap: RaftConfiguration
  let options: RaftOptions

  static func defaultOptions() -> RaftOptions {
    var o = RaftOptions()
    o.electionTicks = 10
    o.heartbeatTicks = 2
    return o
  }

  init(_ voters: [String], learners: [String] = [], others: [String] = [], options: RaftOptions = defaultOptions()) {
    self.options = options
    bootstrap = RaftConfiguration(voters: Set(voters.map { NodeID($0) }), learners: Set(learners.map { NodeID($0) }))
    for (i, name) in (voters + learners + others).enumerated() {
      let id = NodeID(name)
      cores[id] = try! RaftCore(id: id, options: options, bootstrap: bootstrap, randomSeed: UInt64(i + 1))
      disks[id] = RaftPersistentState()
      applied[id] = []
    }
  }

  subscript(_ name: String) -> RaftCore {
    get { cores[NodeID(name)]! }
    set { cores[NodeID(name)] = newValue }
  }

  var ids: [NodeID] { cores.keys.sorted() }

  var leaders: [NodeID] { ids.filter { cores[$0]?.role == .leader && !down.contains($0) } }

  // MARK: Driving

  /// Runs the Ready loop of `id`: persist, send, apply, advance.
  mutating func process(_ id: NodeID) {
    guard var core = cores[id], !down.contains(id) else { return }
    while true {
      let ready = core.ready()
      if ready.isEmpty { break }
      var disk = disks[id]!
      if let snap = ready.snapshot {
        disk.snapshot = snap
        disk.entries = []
        applied[id] = []
        installedSnapshots[id, default: []].append(snap.metadata)
      }
      if let first = ready.entries.first {
        disk.entries.removeAll { $0.index >= first.index }
        disk.entries.append(contentsOf: ready.entries)
      }
      if let hs = ready.hardState { disk.hardState = hs }
      disks[id] = disk
      queue.append(contentsOf: ready.messages)
      queue.append(contentsOf: ready.messagesAfterPersist)
      applied[id]!.append(contentsOf: ready.committedEntries)
      readStates[id, default: []].append(contentsOf: ready.readStates)
      core.advance(ready)
      core.checkInvariants()
    }
    cores[id] = core
  }

  mutating func processAll() {
    for id in ids { process(id) }
  }

  mutating func tick(_ name: String, times: Int = 1) {
    let id = NodeID(name)
    for _ in 0..<times {
      cores[id]!.tick()
      process(id)
    }
  }

  mutating func tickAll(times: Int = 1) {
    for _ in 0..<times {
      for id in ids where !down.contains(id) {
        cores[id]!.tick()
        process(id)
      }
    }
  }

  /// Advances time on every live node one tick at a time, delivering all messages after each.
  mutating func runTicks(_ times: Int) {
    for _ in 0..<times {
      tickAll()
      stabilize()
    }
  }

  /// Delivers one queued message, honouring cut links and crashed nodes.
  mutating func deliver(_ m: RaftMessage) {
    guard !cut.contains([m.from, m.to]), !down.contains(m.to), !down.contains(m.from), cores[m.to] != nil else {
      return
    }
    delivered.append(m)
    cores[m.to]!.step(m)
    process(m.to)
  }

  /// Delivers messages until none are left (bounded).
  mutating func stabilize(maxMessages: Int = 100_000) {
    processAll()
    var count = 0
    while !queue.isEmpty && count < maxMessages {
      let m = queue.removeFirst()
      deliver(m)
      count += 1
    }
  }

  /// Delivers only the queued messages matching `filter`, keeping the others queued.
  mutating func deliver(where filter: (RaftMessage) -> Bool) {
    let selected = queue.filter(filter)
    queue.removeAll(where: filter)
    for m in selected { deliver(m) }
  }

  mutating func dropQueued() { queue.removeAll() }

  /// Ticks `name` until it starts a campaign, then delivers everything.
  mutating func campaign(_ name: String) {
    let id = NodeID(name)
    var guardCount = 0
    while cores[id]!.role == .follower && guardCount < 10 * options.electionTicks {
      cores[id]!.tick()
      guardCount += 1
    }
    process(id)
    stabilize()
  }

  mutating func isolate(_ name: String) {
    let id = NodeID(name)
    for other in ids where other != id {
      cut.insert([id, other])
      cut.insert([other, id])
    }
  }

  mutating func partition(_ groups: [[String]]) {
    cut = []
    for a in groups {
      for b in groups where a != b {
        for x in a { for y in b { cut.insert([NodeID(x), NodeID(y)]) } }
      }
    }
  }

  mutating func heal() { cut = [] }

  /// Crashes `name`: volatile state is lost, the disk is kept.
  mutating func crash(_ name: String) {
    down.insert(NodeID(name))
  }

  mutating func restart(_ name: String, seed: UInt64 = 99) {
    let id = NodeID(name)
    down.remove(id)
    cores[id] = try! RaftCore(
      id: id, options: options, bootstrap: bootstrap, randomSeed: seed, restoring: disks[id]!)
    applied[id] = []
  }

  @discardableResult
  mutating func propose(_ name: String, _ text: String) throws(RaftError) -> ProposalPosition {
    let id = NodeID(name)
    let position = try cores[id]!.propose(Array(text.utf8))
    process(id)
    return position
  }

  /// The application commands `name` has applied, as text.
  func appliedCommands(_ name: String) -> [String] {
    applied[NodeID(name)]!.filter { $0.kind == .command }.map { String(decoding: $0.data, as: UTF8.self) }
  }

  /// The log of `name` as "index@term" strings, from its first in-memory index.
  func logDescription(_ name: String) -> [String] {
    let core = cores[NodeID(name)]!
    guard core.lastIndex >= core.firstIndex else { return [] }
    return (core.firstIndex...core.lastIndex).map { "\($0)@\(core.term(at: $0)!)" }
  }
}
