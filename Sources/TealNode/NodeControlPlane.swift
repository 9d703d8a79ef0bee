// NodeControlPlane: a node's replicated log and control loops without its sockets, processes or
// signals, for TealNodeTesting's whole cluster in one process.

import Logging
import TealCluster
import TealConsensus
import TealRaft
import TealStorage
import TealWire

/// One node's consensus and control plane, built from injected parts: RaftNode<ClusterState> over
/// the given file system and peer network (ticked by the owner: no internal ticker), the node's
/// ``ClusterLog`` (propose here, forward from a follower over the network's control channel), and the
/// node's control loops (``NodeControl``: reconcilers on every node, the leader's controllers) over
/// `environment`. The same types `TealNode.run` wires around the real transport, disk, processes
/// and balancer; what differs is only what the environment hands them.
///
/// Lifecycle: ``start()`` opens Raft and follows leadership; ``runControl()`` runs the control loops
/// until its task is cancelled (a crash) or ``stop()`` closed the log; ``stop()`` closes the log and
/// Raft without handing leadership away (a crash, or the end of a test).
public final class NodeControlPlane: Sendable {
  public let node: NodeID
  let raft: RaftNode<ClusterStateMachine>
  let log: ClusterLog
  let observer: AppliedIndexObserver
  let control: NodeControl

  /// - Parameters:
  ///   - configuration: the node's configuration; only its id, address, ports, peers (the founding
  ///     members), bootstrap flag and election timeout are used.
  ///   - fileSystem: where the Raft log lives (under `configuration.dataDirectory`).
  ///   - network: where Raft and control messages to peers go; deliver inbound ones to ``messageHandler``.
  ///   - randomSeed: seeds Raft's election timeouts.
  ///   - onApplied: told of every entry this node applies, with the state after it (see
  ///     ``AppliedEntryObserver``); for invariant checks.
  /// - Throws: ``NodeStartError/component(_:reason:)`` when the Raft log cannot be opened.
  public init(
    configuration: NodeConfiguration, fileSystem: any StorageFileSystem, network: any PeerMessageSender,
    environment: NodeControlEnvironment, randomSeed: UInt64, logger baseLogger: Logger,
    onApplied: AppliedEntryObserver? = nil
  ) throws(NodeStartError) {
    var logger = baseLogger
    logger[metadataKey: "node"] = "\(configuration.node)"
    node = configuration.node
    observer = AppliedIndexObserver()
    var raftConfiguration = NodeWiring.raftConfiguration(configuration, clusterID: "teal-simulated", logger: logger)
    raftConfiguration.tickInterval = nil
    raftConfiguration.randomSeed = randomSeed
    raftConfiguration.storage.fileSystem = fileSystem
    do {
      raft = try RaftNode(
        configuration: raftConfiguration, stateMachine: ClusterStateMachine(observer: observer, onApplied: onApplied),
        network: network)
    } catch {
      throw .component("the Raft log in \(configuration.dataDirectory)", reason: "\(error)")
    }
    log = ClusterLog(
      node: configuration.node, raft: raft, observer: observer, sender: network, clock: environment.clock,
      logger: logger)
    control = NodeControl(configuration: configuration, log: log, environment: environment, logger: logger)
  }

  /// Delivers one inbound message: Raft's to Raft, control messages (forwarded proposals, their
  /// answers, traffic reports) to the log; gossip is not simulated here (the environment's gossip
  /// view stands in for it).
  public var messageHandler: PeerMessageHandler {
    let raftHandler = raft.messageHandler
    let log = log
    return { from, channel, payload in
      switch channel {
      case .raft: await raftHandler(from, channel, payload)
      case .control: await log.receive(from: from, payload: payload)
      default: break
      }
    }
  }

  /// Starts Raft (re-applying what the log holds) and the log's leadership tracking.
  public func start() async {
    await raft.start()
    await log.start()
  }

  /// One Raft tick.
  public func tick() async { await raft.tick() }

  /// Runs the node's control loops until the calling task is cancelled; then, as at a node's
  /// shutdown, drains (which gives up at once once ``stop()`` closed the log).
  public func runControl() async { try? await control.run() }

  /// Closes the log and Raft, without a leadership transfer (as a crash would leave them).
  public func stop() async {
    await log.stop()
    await raft.stop(transferringLeadership: false)
    observer.finish()
  }

  /// The applied ClusterState.
  public func state() async -> ClusterState { await log.localState() }

  public func leadership() async -> LeadershipState { await log.currentLeadership }

  public func raftStatus() async -> RaftNodeStatus { await raft.status }

  /// Submits a command as the API does (forwarded to the leader from a follower), answered once
  /// applied here.
  public func submit(_ command: ClusterCommand, idempotency: IdempotencyRecordKey? = nil) async throws(SubmitError)
    -> ClusterResult
  {
    try await log.submit(command, idempotency: idempotency)
  }
}
