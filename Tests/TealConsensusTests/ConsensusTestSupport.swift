import Foundation
import Logging
import TealConsensus
import TealRaft
import TealStorage
import TealTestSupport
import TealTransportTesting
import TealWire
import Testing

// MARK: - Application state machine

/// Records every applied command with its log index and term; the result of a command is its log index.
struct CommandLog: ReplicatedStateMachine, Hashable {
  private(set) var indexes: [UInt64] = []
  private(set) var terms: [UInt64] = []
  private(set) var commands: [[UInt8]] = []

  mutating func apply(_ command: [UInt8], index: UInt64, term: UInt64) -> [UInt8] {
    indexes.append(index)
    terms.append(term)
    commands.append(command)
    var result = WireWriter(capacity: 8)
    result.writeVarint(index)
    return result.bytes
  }

  func snapshot() -> [UInt8] {
    var w = WireWriter(capacity: 64)
    w.writeVarint(commands.count)
    for ((index, term), command) in zip(zip(indexes, terms), commands) {
      w.writeVarint(index)
      w.writeVarint(term)
      w.write(command)
    }
    return w.bytes
  }

  mutating func restore(from snapshot: [UInt8]) throws {
    var r = WireReader(snapshot)
    let count = try r.readCount("count")
    var indexes: [UInt64] = []
    var terms: [UInt64] = []
    var commands: [[UInt8]] = []
    for _ in 0..<count {
      indexes.append(try r.readVarint("index"))
      terms.append(try r.readVarint("term"))
      commands.append(try r.readBytes("command"))
    }
    try r.expectEnd()
    self.indexes = indexes
    self.terms = terms
    self.commands = commands
  }

  var commandStrings: [String] { commands.map { String(decoding: $0, as: UTF8.self) } }

  /// The command applied at log index `index`, if any.
  func command(at index: UInt64) -> String? {
    indexes.firstIndex(of: index).map { String(decoding: commands[$0], as: UTF8.self) }
  }

  static func index(fromResult result: [UInt8]) -> UInt64? {
    var r = WireReader(result)
    return try? r.readVarint("index")
  }
}

typealias Node = RaftNode<CommandLog>

// MARK: - A local cluster

/// Fast timeouts for tests: 10 ms ticks, election timeout 150-300 ms, heartbeat every 30 ms.
func testRaftOptions() -> RaftOptions {
  var options = RaftOptions()
  options.electionTicks = 15
  options.heartbeatTicks = 3
  return options
}

func quietLogger() -> Logger {
  Logger(label: "test.consensus", factory: { _ in SwiftLogNoOpLogHandler() })
}

/// A temporary directory removed on deinit.
final class TemporaryDirectory: Sendable {
  let path: String

  init(_ prefix: String = "teal-consensus") throws {
    path = FileManager.default.temporaryDirectory.appendingPathComponent("\(prefix)-\(UUID().uuidString)").path
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
  }

  deinit { try? FileManager.default.removeItem(atPath: path) }

  func child(_ name: String) -> String { path + "/" + name }
}

/// Three (or more) RaftNodes over an ``InMemoryPeerNetwork``, each with its own data directory.
final class LocalCluster: @unchecked Sendable {
  let ids: [NodeID]
  let directory: TemporaryDirectory
  let network = InMemoryPeerNetwork()
  private let lock = NSLock()
  private var nodes: [NodeID: Node] = [:]
  private let tune: @Sendable (inout RaftNodeConfiguration) -> Void

  init(
    size: Int = 3, tune: @escaping @Sendable (inout RaftNodeConfiguration) -> Void = { _ in }
  ) throws {
    ids = (1...size).map { NodeID("n\($0)") }
    directory = try TemporaryDirectory()
    self.tune = tune
  }

  func configuration(for id: NodeID) -> RaftNodeConfiguration {
    var configuration = RaftNodeConfiguration(
      id: id, bootstrap: RaftConfiguration(voters: Set(ids)), dataDirectory: directory.child(id.rawValue),
      raft: testRaftOptions(), tickInterval: .milliseconds(10), logger: quietLogger())
    configuration.randomSeed = UInt64(ids.firstIndex(of: id) ?? 0) &+ 0x5eed
    tune(&configuration)
    return configuration
  }

  /// Opens node `id` from its directory (new or existing), attaches it to the network and starts it.
  /// `beforeStart` sees the node before it is reachable (to subscribe to its streams).
  @discardableResult
  func start(
    _ id: NodeID, adjust: (inout RaftNodeConfiguration) -> Void = { _ in },
    beforeStart: (Node) async -> Void = { _ in }
  ) async throws -> Node {
    var configuration = configuration(for: id)
    adjust(&configuration)
    let node = try Node(configuration: configuration, stateMachine: CommandLog(), network: network.sender(for: id))
    await beforeStart(node)
    lock.withLock { nodes[id] = node }
    await network.register(id, handler: node.messageHandler)
    await node.start()
    return node
  }

  func startAll() async throws {
    for id in ids { try await start(id) }
  }

  /// Stops node `id` as a crash would look to the others: no leadership transfer, log closed, unreachable.
  func kill(_ id: NodeID) async {
    await network.unregister(id)
    await node(id)?.stop(transferringLeadership: false)
  }

  func stopAll() async {
    for id in ids { await kill(id) }
  }

  func node(_ id: NodeID) -> Node? { lock.withLock { nodes[id] } }

  var runningNodes: [Node] {
    get async {
      var result: [Node] = []
      for node in lock.withLock({ Array(nodes.values) }) where await node.status.isRunning { result.append(node) }
      return result
    }
  }

  /// The running leader with the highest term, if any.
  func leader() async -> Node? {
    var best: (Node, UInt64)?
    for node in await runningNodes {
      let status = await node.status
      if status.role == .leader && status.term >= (best?.1 ?? 0) { best = (node, status.term) }
    }
    return best?.0
  }

  func waitForLeader(within seconds: Double = 10) async throws -> Node {
    try await eventually("a leader to be elected", within: seconds) { await self.leader() != nil }
    guard let leader = await leader() else { throw TimedOut(what: "a leader") }
    return leader
  }

  /// Proposes `command` to whichever node leads, retrying on refusals, until acknowledged or `seconds` pass.
  /// Returns the log index the command was applied at.
  @discardableResult
  func propose(_ command: String, within seconds: Double = 10) async throws -> UInt64 {
    let deadline = ContinuousClock.now + .milliseconds(Int(seconds * 1000))
    var lastError: (any Error)?
    while ContinuousClock.now < deadline {
      if let leader = await leader() {
        do {
          let result = try await leader.propose(Array(command.utf8))
          guard let index = CommandLog.index(fromResult: result) else { throw TimedOut(what: "a decodable result") }
          return index
        } catch {
          lastError = error
        }
      }
      try await Task.sleep(for: .milliseconds(10))
    }
    throw TimedOut(what: "proposal \(command) to be acknowledged (last error: \(String(describing: lastError)))")
  }

  /// Waits until every running node has applied the same commands, and at least `count` of them.
  func waitForConvergence(count: Int, within seconds: Double = 10) async throws -> [CommandLog] {
    try await eventually("all running nodes to apply the same \(count)+ commands", within: seconds) {
      let states = await self.states()
      guard let first = states.first, first.commands.count >= count else { return false }
      return states.allSatisfy { $0 == first }
    }
    return await states()
  }

  func states() async -> [CommandLog] {
    var result: [CommandLog] = []
    for node in await runningNodes { result.append(await node.currentState) }
    return result
  }
}

// MARK: - Polling
