// RaftNode: the shell actor that drives RaftCore with real time, the durable log and the peer network.

import Logging
import TealRaft
import TealStorage
import TealWire

/// One running Raft node: RaftCore (pure) + DurableLog (fdatasync'd WAL) + a peer network + the application
/// state machine.
///
/// How a Ready is processed (always in this order, with no suspension point in between, so a Ready is never
/// interleaved with another input):
/// 1. `messages` are queued to the network at once (a leader's appends travel while it writes its own log).
/// 2. Without a snapshot in the Ready, committed entries are applied in order, completing the proposals
///    waiting for them (RaftCore hands out only entries an earlier Ready made durable, so they need not wait
///    for this Ready's write); read states are recorded and reads whose index has been applied complete.
/// 3. If the Ready must be synced (`mustSync`: a snapshot, entries, a new term or vote), the snapshot, the
///    entries and the hard state are written to the DurableLog with one `fdatasync`. A Ready that only moves
///    the commit index writes nothing: the commit index is recorded with the next synced write.
/// 4. Only then are `messagesAfterPersist` (votes, append acknowledgements) queued: nothing is promised to a
///    peer before it is durable.
/// 5. A received snapshot is restored into the state machine, then (in that case) step 2 runs.
/// 6. `RaftCore.advance` is called, and the log is compacted if it grew past the snapshot threshold (in
///    entries or in bytes).
///
/// Failure: if step 2 throws (a disk error), the node stops at once with ``RaftNodeError/storage(_:)``; the
/// messages of step 3 are never sent and waiting proposals fail. The directory can then be reopened by a new
/// `RaftNode` (recovery repairs a torn tail).
///
/// Inputs (ticks, messages, proposals, reads) only change RaftCore; Readys are processed by one scheduled job
/// after them, so proposals arriving together share one Ready and one `fdatasync` (group commit).
///
/// The actor runs on a thread of its own (``NodeExecutor``) because DurableLog blocks on `fdatasync`.
public actor RaftNode<StateMachine: ReplicatedStateMachine> {
  /// This node's id.
  public nonisolated let id: NodeID
  private nonisolated let executor: NodeExecutor?
  private nonisolated let manualExecutor: ManualNodeExecutor?

  public nonisolated var unownedExecutor: UnownedSerialExecutor {
    if let executor { return executor.asUnownedSerialExecutor() }
    return manualExecutor!.asUnownedSerialExecutor()
  }

  private let configuration: RaftNodeConfiguration
  private let logger: Logger
  private var core: RaftCore
  /// nil once the node stopped (the log is closed).
  private var log: DurableLog?
  private var stateMachine: StateMachine
  private var outbox: PeerOutbox?
  /// Manual runtime: the messages sent since the owner last took them.
  private var collectedMessages: [RaftMessage] = []
  private let isManual: Bool
  private var appliedIndex: UInt64

  private var tickCount = 0
  /// A commit index handed out by a Ready that needed no sync; written with the next synced write.
  private var unwrittenHardState: HardState?
  /// Bytes of command data applied since the latest snapshot (for `snapshotThresholdBytes`).
  private var appliedBytesSinceSnapshot = 0
  private var tickerTask: Task<Void, Never>?
  private var processingScheduled = false
  private var isRunning = true
  private var failure: RaftNodeError?
  private var leadership: LeadershipState
  private var leadershipSubscribers = Subscribers<LeadershipState>()
  /// The configuration as of `appliedIndex` (committed): the snapshot's, then each applied
  /// configuration entry's.
  private var appliedConfiguration: RaftConfiguration
  private var membershipSubscribers = Subscribers<RaftConfiguration>()
  private var snapshotSubscribers = Subscribers<UInt64>()
  /// Inbound messages dropped because they did not decode or were misaddressed.
  private var rejectedInbound = 0

  /// How a waiting caller is told the outcome: a continuation's resume, or a manual runtime owner's callback.
  private struct Completion<Value: Sendable> {
    let body: (Result<Value, RaftNodeError>) -> Void
    func resume(returning result: Result<Value, RaftNodeError>) { body(result) }
  }

  /// A Ready handed out by RaftCore whose write is not yet known to be durable (at most one: the next Ready
  /// is taken only after `persisted(readyID)`).
  private struct PendingWrite {
    var id: UInt64
    var ready: RaftReady
    var written: Bool
  }

  private var pendingWrite: PendingWrite?
  private var nextReadyID: UInt64 = 0

  private struct PendingProposal {
    var term: UInt64
    var deadline: Int
    var completion: Completion<[UInt8]>
  }

  private struct PendingRead {
    var deadline: Int
    var lastRequested: Int
    /// The read index once the leader confirmed it.
    var index: UInt64?
    var completion: Completion<Void>
  }

  private struct TransferWaiter {
    var deadline: Int
    var completion: Completion<Void>
  }

  /// Proposals waiting to be applied, by log index (rarely more than one per index: only after this node
  /// led in two terms and reused a position).
  private var proposals: [UInt64: [PendingProposal]] = [:]
  private var reads: [UInt64: PendingRead] = [:]
  private var nextReadID: UInt64 = 0
  /// Drawn at random for each incarnation and put in every ReadIndex context next to the read id (which
  /// restarts at 1): an answer meant for a previous incarnation of this node never completes a read.
  private let readNonce: UInt64
  private var transferWaiters: [TransferWaiter] = []

  // MARK: - Start

  /// Opens (or creates) the data directory, restores the state machine from the latest snapshot and
  /// restarts RaftCore from the durable log. Committed entries after the snapshot are re-applied once the
  /// node runs. Call ``start()`` to begin ticking.
  ///
  /// - Parameters:
  ///   - stateMachine: the application state in its initial (empty) form; it is replaced by the snapshot's
  ///     state if the directory holds one.
  ///   - network: where outbound Raft messages go (a `PeerTransport`, or a fake in tests). Inbound ones
  ///     come in through ``receive(from:payload:)`` or ``messageHandler``.
  /// - Throws: ``RaftNodeError/storage(_:)`` if the log cannot be opened or recovered,
  ///   ``RaftNodeError/invalidPersistentState(_:)`` if its contents are not a valid Raft state, and
  ///   ``RaftNodeError/stateMachine(_:)`` if the snapshot does not restore.
  public init(
    configuration: RaftNodeConfiguration, stateMachine: StateMachine, network: any PeerMessageSender
  ) throws(RaftNodeError) {
    try self.init(configuration: configuration, stateMachine: stateMachine, network: network, runtime: .threads)
  }

  /// Opens the node as ``init(configuration:stateMachine:network:)`` does, run by `runtime`. With a manual
  /// runtime `network` is not used: outbound messages are collected (``takeSentMessages()``).
  package init(
    configuration: RaftNodeConfiguration, stateMachine: StateMachine, network: (any PeerMessageSender)?,
    runtime: RaftNodeRuntime
  ) throws(RaftNodeError) {
    var logger = configuration.logger
    logger[metadataKey: "node"] = "\(configuration.id)"
    if let clusterID = configuration.clusterID { try ClusterIdentity.validate(clusterID) }
    let log: DurableLog
    do {
      log = try DurableLog(directory: configuration.dataDirectory, options: configuration.storage)
    } catch {
      throw .storage(error)
    }
    if let clusterID = configuration.clusterID {
      do {
        try ClusterIdentity.ensure(
          clusterID, in: configuration.dataDirectory, fileSystem: configuration.storage.fileSystem)
      } catch {
        log.close()
        throw error
      }
    }
    let state: RaftPersistentState
    do {
      state = try StorageMapping.persistentState(of: log)
    } catch {
      log.close()
      throw error
    }
    var machine = stateMachine
    if let snapshot = state.snapshot {
      do {
        try machine.restore(from: snapshot.data)
      } catch {
        throw .stateMachine(
          "cannot restore the snapshot at index \(snapshot.metadata.index) in \(configuration.dataDirectory): \(error)")
      }
    }
    let core: RaftCore
    do {
      core = try RaftCore(
        id: configuration.id, options: configuration.raft, bootstrap: configuration.bootstrap,
        randomSeed: configuration.randomSeed ?? UInt64.random(in: 0...UInt64.max), restoring: state,
        joining: configuration.join)
    } catch {
      throw .invalidPersistentState("\(configuration.dataDirectory): \(error)")
    }
    self.id = configuration.id
    switch runtime.kind {
    case .threads:
      self.executor = NodeExecutor(name: "teal-raft-\(configuration.id)")
      self.manualExecutor = nil
      self.readNonce = UInt64.random(in: 0...UInt64.max)
      self.isManual = false
    case .manual(let manual, let nonce):
      self.executor = nil
      self.manualExecutor = manual
      self.readNonce = nonce
      self.isManual = true
    }
    self.configuration = configuration
    self.logger = logger
    self.core = core
    self.log = log
    self.stateMachine = machine
    self.outbox =
      runtime.isManual
      ? nil : network.map { PeerOutbox(sender: $0, limit: configuration.outboundQueueLimit, logger: logger) }
    self.appliedIndex = core.appliedIndex
    self.leadership = LeadershipState(role: core.role, leader: core.leader, term: core.term)
    self.appliedConfiguration = state.snapshot?.metadata.configuration ?? configuration.bootstrap
    logger.info(
      "raft node opened",
      metadata: [
        "directory": "\(configuration.dataDirectory)", "term": "\(core.term)", "commit": "\(core.commitIndex)",
        "lastIndex": "\(core.lastIndex)", "snapshot": "\(state.snapshot?.metadata.index ?? 0)",
      ])
  }

  deinit {
    tickerTask?.cancel()
    executor?.shutdown()
  }

  /// Starts the internal ticker (if the configuration has a tick interval) and processes what the restart
  /// made ready (re-applying committed entries).
  public func start() {
    guard isRunning else { return }
    if !isManual, tickerTask == nil, let interval = configuration.tickInterval {
      tickerTask = Task.detached { [weak self] in
        let clock = ContinuousClock()
        var next = clock.now.advanced(by: interval)
        while !Task.isCancelled {
          do {
            try await clock.sleep(until: next)
          } catch {
            return
          }
          guard let node = self else { return }
          await node.tick()
          next = next.advanced(by: interval)
          // Fell behind (a stall): skip the missed ticks rather than firing a burst of them, which could
          // expire election timers before the queued heartbeats are processed.
          let now = clock.now
          if now > next { next = now.advanced(by: interval) }
        }
      }
    }
    scheduleProcessing()
  }

  // MARK: - Inputs

  /// Advances logical time by one tick (the internal ticker calls this; tests without one call it directly).
  public func tick() {
    guard isRunning else { return }
    tickCount += 1
    core.tick()
    expireRequests()
    scheduleProcessing()
  }

  /// Handles a Raft message from `sender` (as authenticated by the transport). A message that does not
  /// decode, claims another sender, or is addressed to another node is logged and dropped.
  public func receive(from sender: NodeID, payload: [UInt8]) {
    guard isRunning else { return }
    let message: RaftMessage
    do {
      message = try RaftMessage(wireBytes: payload)
    } catch {
      rejectInbound("malformed Raft message", from: sender, detail: "\(error) (\(payload.count) bytes)")
      return
    }
    guard message.from == sender else {
      rejectInbound("Raft message claims another sender", from: sender, detail: "claims \(message.from)")
      return
    }
    guard message.to == id else {
      rejectInbound("Raft message for another node", from: sender, detail: "addressed to \(message.to)")
      return
    }
    core.step(message)
    scheduleProcessing()
  }

  /// A transport handler that passes `.raft` messages to ``receive(from:payload:)`` and ignores other channels.
  public nonisolated var messageHandler: PeerMessageHandler {
    { [weak self] from, channel, payload in
      guard channel == .raft else { return }
      await self?.receive(from: from, payload: payload)
    }
  }

  // MARK: - Client API

  /// Proposes `command` and returns the state machine's result once the command is committed and applied on
  /// this node.
  ///
  /// Only the leader accepts proposals. Errors: ``RaftNodeError/notLeader(leader:)`` (with the leader's id
  /// when known) and ``RaftNodeError/retryLater(_:)`` before anything is proposed;
  /// ``RaftNodeError/proposalDropped(index:term:)`` when another leader's entry took the position (the
  /// command did not take effect); ``RaftNodeError/timedOut(operation:ticks:)``,
  /// ``RaftNodeError/outcomeUnknown(index:reason:)`` (at once when this node stops leading the proposal's
  /// term before the entry is applied) and ``RaftNodeError/stopped(reason:)`` when the outcome is unknown;
  /// ``RaftNodeError/invalidRequest(_:)`` for a command over `maxCommandBytes`.
  ///
  /// Cancelling the calling task does not withdraw a proposal once accepted: the call still returns when
  /// its outcome is known or after `proposalTimeoutTicks`.
  public func propose(_ command: [UInt8]) async throws(RaftNodeError) -> [UInt8] {
    try ensureRunning()
    guard command.count <= configuration.maxCommandBytes else {
      throw .invalidRequest(
        "the command has \(command.count) bytes, over maxCommandBytes (\(configuration.maxCommandBytes))")
    }
    let position = try submitProposal(command)
    return try await awaitApplication(of: position)
  }

  /// Checks `command` and hands it to RaftCore.
  private func submitProposal(_ command: [UInt8]) throws(RaftNodeError) -> ProposalPosition {
    try ensureProposalRoom()
    do {
      return try core.propose(command)
    } catch {
      throw RaftNodeError.refused(error)
    }
  }

  /// Proposes a membership change (one voter at a time; a new voter joins as a learner first) and returns
  /// once it is applied here. Errors as for ``propose(_:)``, plus ``RaftNodeError/invalidRequest(_:)``.
  public func proposeConfigChange(_ change: ConfigChange) async throws(RaftNodeError) {
    try ensureRunning()
    let position = try submitConfigChange(change)
    _ = try await awaitApplication(of: position)
  }

  private func submitConfigChange(_ change: ConfigChange) throws(RaftNodeError) -> ProposalPosition {
    try ensureProposalRoom()
    do {
      return try core.proposeConfigChange(change)
    } catch {
      throw RaftNodeError.refused(error)
    }
  }

  /// Waits until the state machine reflects every write committed before this call began (ReadIndex,
  /// thesis §6.4): afterwards, reading ``currentState`` is linearizable. Works on followers too (the request
  /// is forwarded to the leader). Lost requests are re-sent every `readRetryTicks`; fails with
  /// ``RaftNodeError/timedOut(operation:ticks:)`` after `readTimeoutTicks` (e.g. while no leader exists).
  public func linearizableRead() async throws(RaftNodeError) {
    try ensureRunning()
    let result = await withCheckedContinuation { (continuation: Continuation<Void>) in
      startRead(Completion { continuation.resume(returning: $0) })
    }
    try result.get()
  }

  private typealias Continuation<Value: Sendable> = CheckedContinuation<Result<Value, RaftNodeError>, Never>

  private func startRead(_ completion: Completion<Void>) {
    nextReadID += 1
    let readID = nextReadID
    reads[readID] = PendingRead(
      deadline: tickCount + configuration.readTimeoutTicks, lastRequested: tickCount, index: nil,
      completion: completion)
    requestReadIndex(readID)
  }

  /// Hands leadership to `target` (default: the most up-to-date other voter) and returns once this node is
  /// no longer leader. Proposals are refused meanwhile. Fails with ``RaftNodeError/timedOut(operation:ticks:)``
  /// if no transfer happened within two election timeouts.
  public func transferLeadership(to target: NodeID? = nil) async throws(RaftNodeError) {
    try ensureRunning()
    guard core.role == .leader else { throw .notLeader(leader: core.leader) }
    guard let chosen = target ?? bestTransferTarget() else {
      throw .invalidRequest("there is no other voter to hand leadership to")
    }
    if chosen == id { return }
    do {
      try core.transferLeadership(to: chosen)
    } catch {
      throw RaftNodeError.refused(error)
    }
    scheduleProcessing()
    let result = await withCheckedContinuation { (continuation: Continuation<Void>) in
      transferWaiters.append(
        TransferWaiter(
          deadline: tickCount + 2 * configuration.raft.electionTicks,
          completion: Completion { continuation.resume(returning: $0) }))
    }
    try result.get()
  }

  /// Stops the node: hands leadership over first if this node leads and `transferringLeadership` (so the
  /// cluster need not wait for an election timeout), then stops ticking and sending, fails waiting calls
  /// with ``RaftNodeError/stopped(reason:)`` and closes the durable log. Idempotent.
  public func stop(transferringLeadership: Bool = true) async {
    guard isRunning else { return }
    if transferringLeadership && core.role == .leader && core.configuration.voters.count > 1 {
      do {
        try await transferLeadership(to: nil)
      } catch {
        logger.info("leadership transfer before stopping failed", metadata: ["error": "\(error)"])
      }
    }
    shutdown(failure: nil)
  }

  /// The node's role, term, leader and indexes now. A stopped node reports itself as a follower with no
  /// leader.
  public var status: RaftNodeStatus {
    RaftNodeStatus(
      id: id, role: isRunning ? core.role : .follower, term: core.term, leader: isRunning ? core.leader : nil,
      commitIndex: core.commitIndex, appliedIndex: appliedIndex, lastIndex: core.lastIndex,
      snapshotIndex: core.snapshot?.metadata.index ?? 0, isRunning: isRunning, failure: failure?.description,
      pendingProposals: proposals.count, pendingReads: reads.count)
  }

  /// The application state after the last applied entry. Linearizable after ``linearizableRead()``.
  public var currentState: StateMachine { stateMachine }

  /// The current membership (including uncommitted changes, which take effect when appended).
  public var membership: RaftConfiguration { core.configuration }

  /// The committed membership: the configuration in effect at the applied index.
  public var committedMembership: RaftConfiguration { appliedConfiguration }

  /// The index of the entry that set ``membership`` (0 for the bootstrap configuration).
  public var membershipIndex: UInt64 { core.configurationIndex }

  /// The highest log index `peer` has acknowledged, while this node leads (nil otherwise, or when
  /// `peer` is not a member). 0 until the peer answered an AppendEntries or installed a snapshot.
  public func replicatedIndex(of peer: NodeID) -> UInt64? {
    core.role == .leader ? core.replication(of: peer)?.match : nil
  }

  /// A stream of leadership states: the current one at once, then every change of role, leader, term or
  /// readiness (``LeadershipState/isReady`` turns true once this leader applied its term's no-op). It keeps
  /// the newest 64 undelivered values and finishes when the node stops.
  public func leadershipChanges() -> AsyncStream<LeadershipState> {
    leadershipSubscribers.subscribe(current: leadership, open: isRunning)
  }

  /// A stream of committed membership configurations: the current committed one at once, then each one
  /// whose configuration entry this node applied (or that came with an installed snapshot), in log order.
  /// Drive the transport's peer list from it. It keeps the newest 64 undelivered values (a slow consumer
  /// misses intermediate ones, never the latest) and finishes when the node stops.
  public func membershipChanges() -> AsyncStream<RaftConfiguration> {
    membershipSubscribers.subscribe(current: appliedConfiguration, open: isRunning)
  }

  /// A stream of the indexes of snapshots this node installed from the leader. When a value arrives, the
  /// state machine's ``ReplicatedStateMachine/restore(from:)`` has already replaced its whole state with the
  /// snapshot's (state up to that index); an owner that keeps state derived from the state machine must
  /// rebuild it. The restore at start (from the data directory) is not announced: it happens in `init`.
  /// Keeps the newest 64 undelivered values; finishes when the node stops.
  public func snapshotInstalls() -> AsyncStream<UInt64> {
    snapshotSubscribers.subscribe(current: nil, open: isRunning)
  }

  /// Snapshots the state machine at the applied index now and compacts the log up to it (as the automatic
  /// `snapshotThreshold` does). Returns at once if nothing was applied since the latest snapshot. Throws
  /// ``RaftNodeError/stopped(reason:)`` if the node is stopped and ``RaftNodeError/storage(_:)`` if the
  /// snapshot cannot be written (the node then stops).
  public func takeSnapshot() async throws(RaftNodeError) {
    try ensureRunning()
    try snapshotNow()
  }

  // MARK: - Ready processing

  private func scheduleProcessing() {
    guard isRunning, !processingScheduled else { return }
    processingScheduled = true
    // A manual runtime's owner sees `needsProcessing` and calls processReadies() when it chooses.
    guard !isManual else { return }
    Task.detached { [weak self] in await self?.processReadies() }
  }

  /// Drains RaftCore's Readys (advancing may commit more, which produces another Ready). Stops at a Ready
  /// whose write is not yet durable: the next Ready is taken after its `persisted(readyID)`.
  package func processReadies() {
    processingScheduled = false
    while isRunning && pendingWrite == nil {
      let ready = core.ready()
      noteLeadership()
      if ready.isEmpty { break }
      handle(ready)
    }
    if isRunning { noteLeadership() }
  }

  private func handle(_ ready: RaftReady) {
    for message in ready.messages { send(message) }
    if ready.snapshot == nil { applyCommitted(ready) }
    nextReadyID += 1
    let readyID = nextReadyID
    guard ready.mustSync else {
      if let hardState = ready.hardState { unwrittenHardState = hardState }
      finish(ready)
      return
    }
    pendingWrite = PendingWrite(id: readyID, ready: ready, written: false)
    // Production writes at once and learns it is durable at once; a manual runtime's owner does both later.
    guard !isManual else { return }
    guard writePendingReady() != nil else { return }
    persisted(readyID)
  }

  /// Manual runtime: true when inputs left RaftCore with work that `processReadies()` would take.
  package var needsProcessing: Bool { isRunning && processingScheduled && pendingWrite == nil }

  /// The Ready waiting for its write (`written` false) or for `persisted(readyID)` (`written` true).
  package var pendingWriteState: (readyID: UInt64, written: Bool)? {
    pendingWrite.map { ($0.id, $0.written) }
  }

  /// Writes the pending Ready's snapshot, entries and hard state with one `fdatasync` and returns its id, or
  /// nil if there is nothing to write or the write failed (the node then stopped, as on any disk error).
  @discardableResult
  package func writePendingReady() -> UInt64? {
    guard isRunning, var write = pendingWrite, !write.written else { return nil }
    do {
      try persist(write.ready)
    } catch {
      fail(error)
      return nil
    }
    write.written = true
    pendingWrite = write
    return write.id
  }

  /// The input that says Ready `readyID` is durable: its `messagesAfterPersist` (votes, acknowledgements) go
  /// out, a received snapshot is installed, and RaftCore advances. Ignored unless `readyID` is the written
  /// pending Ready.
  package func persisted(_ readyID: UInt64) {
    guard isRunning, let write = pendingWrite, write.id == readyID, write.written else { return }
    pendingWrite = nil
    finish(write.ready)
    scheduleProcessing()
  }

  /// Steps 4-6 of a Ready, once its write is durable (or when it needed none).
  private func finish(_ ready: RaftReady) {
    for message in ready.messagesAfterPersist { send(message) }
    if let snapshot = ready.snapshot {
      install(snapshot)
      guard isRunning else { return }
      applyCommitted(ready)
    }
    core.advance(ready)
    compactIfNeeded()
  }

  private func applyCommitted(_ ready: RaftReady) {
    for entry in ready.committedEntries { apply(entry) }
    for readState in ready.readStates { recordReadIndex(readState) }
    completeReads()
  }

  /// Writes the Ready's snapshot, entries and hard state (or the newest unwritten one); returns once they are
  /// durable.
  private func persist(_ ready: RaftReady) throws(RaftNodeError) {
    guard let log else { throw .stopped(reason: "the durable log is closed") }
    var ready = ready
    if ready.hardState == nil { ready.hardState = unwrittenHardState }
    unwrittenHardState = nil
    do {
      try StorageMapping.persist(ready, to: log)
    } catch {
      throw .storage(error)
    }
  }

  private func install(_ snapshot: RaftSnapshot) {
    let index = snapshot.metadata.index
    do {
      try stateMachine.restore(from: snapshot.data)
    } catch {
      fail(.stateMachine("cannot restore the snapshot at index \(index) received from the leader: \(error)"))
      return
    }
    appliedIndex = index
    appliedBytesSinceSnapshot = 0
    noteAppliedConfiguration(snapshot.metadata.configuration)
    snapshotSubscribers.yield(index)
    for position in proposals.keys.sorted() where position <= index {
      for pending in proposals.removeValue(forKey: position) ?? [] {
        pending.completion.resume(
          returning: .failure(
            .outcomeUnknown(index: position, reason: "this node installed a snapshot covering index \(index)")))
      }
    }
    logger.info("installed snapshot", metadata: ["index": "\(index)", "term": "\(snapshot.metadata.term)"])
  }

  private func apply(_ entry: RaftEntry) {
    var result: [UInt8] = []
    switch entry.kind {
    case .command:
      result = stateMachine.apply(entry.data, index: entry.index, term: entry.term)
      appliedBytesSinceSnapshot += entry.data.count
    case .configuration:
      guard let configuration = try? RaftConfiguration(wireBytes: entry.data) else {
        preconditionFailure("\(id): the committed configuration entry at index \(entry.index) does not decode")
      }
      noteAppliedConfiguration(configuration)
    case .noop:
      break
    }
    appliedIndex = entry.index
    guard let waiting = proposals.removeValue(forKey: entry.index) else { return }
    for pending in waiting {
      if pending.term == entry.term {
        pending.completion.resume(returning: .success(result))
      } else {
        pending.completion.resume(returning: .failure(.proposalDropped(index: entry.index, term: pending.term)))
      }
    }
  }

  private func compactIfNeeded() {
    guard isRunning, let log else { return }
    let byEntries =
      configuration.snapshotThreshold > 0 && appliedIndex >= log.snapshotIndex + configuration.snapshotThreshold
    let byBytes =
      configuration.snapshotThresholdBytes > 0 && appliedBytesSinceSnapshot >= configuration.snapshotThresholdBytes
    guard byEntries || byBytes else { return }
    do {
      try snapshotNow()
    } catch {
      // snapshotNow stopped the node already.
    }
  }

  /// Snapshots the state machine at `appliedIndex`, compacts RaftCore's log and saves the snapshot (which
  /// deletes the covered segments). A no-op when nothing was applied since the latest snapshot.
  private func snapshotNow() throws(RaftNodeError) {
    guard let log else { throw .stopped(reason: failure?.description) }
    guard appliedIndex > max(log.snapshotIndex, core.snapshot?.metadata.index ?? 0) else { return }
    let snapshot: RaftSnapshot
    do {
      snapshot = try core.compact(upTo: appliedIndex, snapshotData: stateMachine.snapshot())
      appliedBytesSinceSnapshot = 0
    } catch {
      preconditionFailure("\(id): RaftCore refused a snapshot at the applied index \(appliedIndex): \(error)")
    }
    do {
      try log.saveSnapshot(metadata: StorageMapping.storedMetadata(snapshot.metadata), data: snapshot.data)
    } catch {
      let failure = RaftNodeError.storage(error)
      fail(failure)
      throw failure
    }
    logger.debug("snapshot taken; log compacted", metadata: ["index": "\(snapshot.metadata.index)"])
  }

  // MARK: - Waiting callers

  private func ensureRunning() throws(RaftNodeError) {
    guard isRunning else { throw .stopped(reason: failure?.description) }
  }

  /// Refuses a proposal while `maxPendingProposals` log positions already have a proposal waiting.
  private func ensureProposalRoom() throws(RaftNodeError) {
    guard proposals.count < configuration.maxPendingProposals else {
      throw .retryLater(
        "\(proposals.count) proposals are waiting to be applied, the limit maxPendingProposals "
          + "(\(configuration.maxPendingProposals))")
    }
  }

  private func awaitApplication(of position: ProposalPosition) async throws(RaftNodeError) -> [UInt8] {
    scheduleProcessing()
    let result = await withCheckedContinuation { (continuation: Continuation<[UInt8]>) in
      waitForApplication(of: position, Completion { continuation.resume(returning: $0) })
    }
    return try result.get()
  }

  private func waitForApplication(of position: ProposalPosition, _ completion: Completion<[UInt8]>) {
    proposals[position.index, default: []].append(
      PendingProposal(
        term: position.term, deadline: tickCount + configuration.proposalTimeoutTicks, completion: completion))
  }

  private func requestReadIndex(_ readID: UInt64) {
    reads[readID]?.lastRequested = tickCount
    var context = WireWriter(capacity: 16)
    context.writeFixed(readNonce)
    context.writeFixed(readID)
    do {
      try core.readIndex(context: context.bytes)
    } catch {
      // No leader known yet, or a new leader not ready to serve reads: retried after readRetryTicks.
      return
    }
    scheduleProcessing()
  }

  private func recordReadIndex(_ readState: ReadState) {
    var reader = WireReader(readState.context)
    guard let nonce = try? reader.readFixed64("readNonce"), nonce == readNonce,
      let readID = try? reader.readFixed64("readID"), reader.isAtEnd, reads[readID] != nil
    else { return }
    if reads[readID]?.index == nil { reads[readID]?.index = readState.index }
  }

  private func completeReads() {
    for (readID, read) in reads.sorted(by: { $0.key < $1.key }) {
      guard let index = read.index, index <= appliedIndex else { continue }
      reads[readID] = nil
      read.completion.resume(returning: .success(()))
    }
  }

  /// Times out proposals, reads and transfers whose deadline passed, and re-sends unanswered read requests.
  private func expireRequests() {
    for (index, waiting) in proposals.sorted(by: { $0.key < $1.key }) {
      let (expired, live) = (waiting.filter { $0.deadline <= tickCount }, waiting.filter { $0.deadline > tickCount })
      guard !expired.isEmpty else { continue }
      proposals[index] = live.isEmpty ? nil : live
      for pending in expired {
        pending.completion.resume(
          returning: .failure(
            .timedOut(operation: "the proposal at index \(index)", ticks: configuration.proposalTimeoutTicks)))
      }
    }
    for (readID, read) in reads.sorted(by: { $0.key < $1.key }) {
      if read.deadline <= tickCount {
        reads[readID] = nil
        read.completion.resume(
          returning: .failure(.timedOut(operation: "the linearizable read", ticks: configuration.readTimeoutTicks)))
      } else if read.index == nil && tickCount - read.lastRequested >= configuration.readRetryTicks {
        requestReadIndex(readID)
      }
    }
    if transferWaiters.contains(where: { $0.deadline <= tickCount }) {
      let expired = transferWaiters.filter { $0.deadline <= tickCount }
      transferWaiters.removeAll { $0.deadline <= tickCount }
      for waiter in expired {
        waiter.completion.resume(
          returning: .failure(
            .timedOut(operation: "the leadership transfer", ticks: 2 * configuration.raft.electionTicks)))
      }
    }
  }

  private func bestTransferTarget() -> NodeID? {
    core.configuration.voters.filter { $0 != id }
      .max { (core.replication(of: $0)?.match ?? 0, $1.rawValue) < (core.replication(of: $1)?.match ?? 0, $0.rawValue) }
  }

  /// Publishes a change of role, leader, term or readiness, and fails the proposals that can no longer
  /// complete here: a node that is not (or no longer) the leader of a proposal's term cannot tell whether the
  /// entry will commit, so they fail at once with ``RaftNodeError/outcomeUnknown(index:reason:)``.
  private func noteLeadership() {
    let isLeader = core.role == .leader
    let state = LeadershipState(
      role: core.role, leader: core.leader, term: core.term,
      isReady: isLeader && appliedIndex >= core.termStartIndex)
    guard state != leadership else { return }
    let previous = leadership
    leadership = state
    logger.info(
      "leadership changed",
      metadata: [
        "role": "\(state.role)", "term": "\(state.term)", "leader": "\(state.leader?.rawValue ?? "-")",
        "ready": "\(state.isReady)",
      ])
    leadershipSubscribers.yield(state)
    if let leader = state.leader, leader != previous.leader || state.term != previous.term {
      // Reads refused (no leader known) or forwarded to a leader that is gone are asked again at once
      // instead of after readRetryTicks.
      for (readID, read) in reads.sorted(by: { $0.key < $1.key }) where read.index == nil { requestReadIndex(readID) }
    }
    if previous.role == .leader && (!isLeader || state.term != previous.term) {
      failProposals(notOfTerm: isLeader ? state.term : nil, steppedDownFrom: previous.term)
    }
    if state.role != .leader && !transferWaiters.isEmpty {
      let waiters = transferWaiters
      transferWaiters = []
      for waiter in waiters { waiter.completion.resume(returning: .success(())) }
    }
  }

  /// Fails every waiting proposal whose term is not `term` (all of them when `term` is nil).
  private func failProposals(notOfTerm term: UInt64?, steppedDownFrom oldTerm: UInt64) {
    for (index, waiting) in proposals.sorted(by: { $0.key < $1.key }) {
      let (failed, kept) = (waiting.filter { $0.term != term }, waiting.filter { $0.term == term })
      guard !failed.isEmpty else { continue }
      proposals[index] = kept.isEmpty ? nil : kept
      for pending in failed {
        pending.completion.resume(
          returning: .failure(
            .outcomeUnknown(
              index: index, reason: "this node stopped leading term \(oldTerm) before the entry was applied")))
      }
    }
  }

  private func noteAppliedConfiguration(_ configuration: RaftConfiguration) {
    guard configuration != appliedConfiguration else { return }
    appliedConfiguration = configuration
    membershipSubscribers.yield(configuration)
  }

  private func send(_ message: RaftMessage) {
    if isManual {
      collectedMessages.append(message)
    } else {
      outbox?.send(message)
    }
  }

  private func rejectInbound(_ what: String, from sender: NodeID, detail: String) {
    rejectedInbound += 1
    if rejectedInbound <= 10 || rejectedInbound.isMultiple(of: 1_000) {
      logger.warning(
        "dropping \(what)", metadata: ["from": "\(sender)", "detail": "\(detail)", "rejected": "\(rejectedInbound)"])
    }
  }

  // MARK: - Manual runtime (deterministic simulation)

  /// The messages sent since the last call, in order (manual runtime; empty otherwise).
  package func takeSentMessages() -> [RaftMessage] {
    defer { collectedMessages = [] }
    return collectedMessages
  }

  /// ``propose(_:)`` without suspending: `completion` gets the outcome (at once if refused).
  package func propose(_ command: [UInt8], completion: @escaping (Result<[UInt8], RaftNodeError>) -> Void) {
    do throws(RaftNodeError) {
      try ensureRunning()
      guard command.count <= configuration.maxCommandBytes else {
        throw .invalidRequest("the command has \(command.count) bytes, over maxCommandBytes")
      }
      let position = try submitProposal(command)
      scheduleProcessing()
      waitForApplication(of: position, Completion(body: completion))
    } catch {
      completion(.failure(error))
    }
  }

  /// ``proposeConfigChange(_:)`` without suspending.
  package func proposeConfigChange(_ change: ConfigChange, completion: @escaping (Result<Void, RaftNodeError>) -> Void)
  {
    do throws(RaftNodeError) {
      try ensureRunning()
      let position = try submitConfigChange(change)
      scheduleProcessing()
      waitForApplication(of: position, Completion { completion($0.map { _ in () }) })
    } catch {
      completion(.failure(error))
    }
  }

  /// ``linearizableRead()`` without suspending: `completion` is called on the node's executor, so reading
  /// ``currentState`` in it (through `assumeIsolated`) gives a linearizable view.
  package func linearizableRead(completion: @escaping (Result<Void, RaftNodeError>) -> Void) {
    guard isRunning else {
      completion(.failure(.stopped(reason: failure?.description)))
      return
    }
    startRead(Completion(body: completion))
  }

  /// Power loss: the process is gone. Nothing more is written (not even the unwritten commit index) and no
  /// waiting caller is told anything; the owner reopens the directory with a new node.
  package func crash() {
    proposals = [:]
    reads = [:]
    transferWaiters = []
    shutdown(failure: .stopped(reason: "crashed"), flushing: false)
  }

  /// ``takeSnapshot()`` without suspending (a storage failure stops the node).
  package func compactNow() {
    guard isRunning else { return }
    try? snapshotNow()
  }

  /// The term and vote of the last hard state written to the DurableLog (every write is synced), nil once
  /// stopped.
  package var durableTermAndVote: (term: UInt64, vote: String?)? {
    log.map { ($0.hardState.term, $0.hardState.vote) }
  }

  /// RaftCore's first broken invariant, if any.
  package var coreInvariantViolation: String? { core.invariantViolation() }

  /// The manual executor's count of jobs enqueued by `async` calls (0 when nothing called in asynchronously).
  package nonisolated var queuedJobs: Int { manualExecutor?.queuedJobs ?? 0 }

  // MARK: - Stopping

  private func fail(_ error: RaftNodeError) {
    logger.critical("raft node stopping after a failure", metadata: ["error": "\(error)"])
    shutdown(failure: error)
  }

  private func shutdown(failure: RaftNodeError?, flushing: Bool = true) {
    guard isRunning else { return }
    isRunning = false
    self.failure = failure
    tickerTask?.cancel()
    tickerTask = nil
    outbox?.close()
    collectedMessages = []
    pendingWrite = nil
    if flushing, failure == nil, let hardState = unwrittenHardState, let log {
      // Best effort: the commit index is only an optimisation for the next start.
      try? log.append(entries: [], hardState: StorageMapping.stored(hardState))
    }
    unwrittenHardState = nil
    log?.close()
    log = nil
    let stopped = RaftNodeError.stopped(reason: failure?.description)
    let waitingProposals = proposals.values.flatMap { $0 }
    proposals = [:]
    for pending in waitingProposals { pending.completion.resume(returning: .failure(stopped)) }
    let waitingReads = reads.values
    reads = [:]
    for read in waitingReads { read.completion.resume(returning: .failure(stopped)) }
    let waiters = transferWaiters
    transferWaiters = []
    for waiter in waiters { waiter.completion.resume(returning: .failure(stopped)) }
    leadershipSubscribers.finish()
    membershipSubscribers.finish()
    snapshotSubscribers.finish()
    logger.info("raft node stopped", metadata: ["failure": "\(failure?.description ?? "none")"])
  }
}

/// The continuations of one kind of stream a node offers; each buffers the newest 64 undelivered values.
struct Subscribers<Value: Sendable> {
  private var continuations: [Int: AsyncStream<Value>.Continuation] = [:]
  private var nextID = 0

  /// A new stream that starts with `current` (if any); already finished when `open` is false.
  mutating func subscribe(current: Value?, open: Bool) -> AsyncStream<Value> {
    let (stream, continuation) = AsyncStream<Value>.makeStream(bufferingPolicy: .bufferingNewest(64))
    if let current { continuation.yield(current) }
    if open {
      continuations[nextID] = continuation
      nextID += 1
    } else {
      continuation.finish()
    }
    return stream
  }

  mutating func yield(_ value: Value) {
    for (key, continuation) in continuations {
      if case .terminated = continuation.yield(value) { continuations[key] = nil }
    }
  }

  mutating func finish() {
    for continuation in continuations.values { continuation.finish() }
    continuations = [:]
  }
}
