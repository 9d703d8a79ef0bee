// How a NodeConfiguration becomes the configuration of each part, and the lifecycle services that
// own the transport, Raft and gossip.

import Logging
import ServiceLifecycle
import TealConsensus
import TealGossip
import TealLoadBalancer
import TealMembership
import TealRaft
import TealTLS
import TealTasks
import TealTransport
import TealWire
import UnixSignals

enum NodeWiring {
  /// Raft's tick. RaftOptions count time in ticks; the election timeout is configured in
  /// milliseconds and converted here. 20 ms: RaftNode's ticker drops the ticks a stall makes it miss
  /// (a burst could expire election timers before queued heartbeats are read), so on a loaded machine
  /// a 5 ms tick lost most of its ticks and stretched a 1 s election timeout to several seconds; a
  /// 20 ms tick survives scheduling delays up to 20 ms and wakes each node 50 times a second, not 200.
  static let tickMilliseconds = 20

  static func transportConfiguration(_ configuration: NodeConfiguration, clusterID: String)
    -> PeerTransportConfiguration
  {
    var peers: [NodeID: PeerAddress] = [:]
    for (id, host) in configuration.peers where id != configuration.node {
      peers[id] = PeerAddress(host: host, port: configuration.peerPort)
    }
    return PeerTransportConfiguration(
      nodeID: configuration.node, listenHost: configuration.address, listenPort: configuration.peerPort, peers: peers,
      clusterID: clusterID)
  }

  static func raftConfiguration(_ configuration: NodeConfiguration, clusterID: String, logger: Logger)
    -> RaftNodeConfiguration
  {
    var options = RaftOptions()
    options.electionTicks = max(10, configuration.electionTimeoutMilliseconds / tickMilliseconds)
    options.heartbeatTicks = max(1, options.electionTicks / 6)
    let founders = configuration.bootstrap ? Set(configuration.peers.keys) : []
    var raft = RaftNodeConfiguration(
      id: configuration.node, bootstrap: RaftConfiguration(voters: founders),
      dataDirectory: configuration.dataDirectory, raft: options, tickInterval: .milliseconds(tickMilliseconds),
      logger: logger)
    // A write waits at most ClusterLog.writeTimeout; Raft's own bound is longer so that the
    // caller, not Raft, decides when to give up.
    raft.proposalTimeoutTicks = 10_000 / tickMilliseconds  // 10 s
    raft.readTimeoutTicks = 5_000 / tickMilliseconds  // 5 s
    // The data directory remembers its cluster: a directory of another cluster is refused, and a
    // node that joins (not a founder) never votes before it holds the leader's log.
    raft.clusterID = clusterID
    raft.join = !configuration.bootstrap
    return raft
  }

  /// The balancer's settings: each node starts its round robin at its own index among the sorted
  /// member ids, so the first requests to the three nodes of a cluster go to three different tasks.
  static func loadBalancerConfiguration(_ configuration: NodeConfiguration) -> LoadBalancerConfiguration {
    let index = configuration.peers.keys.sorted().firstIndex(of: configuration.node) ?? 0
    return LoadBalancerConfiguration(roundRobinSeed: UInt64(index))
  }

  static func memberMetadata(_ configuration: NodeConfiguration) -> MemberMetadata {
    MemberMetadata(
      peerAddress: HostPort(host: configuration.address, port: UInt16(configuration.peerPort)),
      apiPort: UInt16(configuration.apiPort), listenerPorts: [], version: TealVersion.current, raftRole: .follower,
      raftTerm: 0)
  }

  static func taskRunnerConfiguration(_ configuration: NodeConfiguration) -> TaskRunner.Configuration {
    // Tasks get an explicit environment: the runner's documented few variables of the node (PATH,
    // HOME, locale, time zone), their spec's, and what the node adds (see TaskReconciler).
    TaskRunner.Configuration(
      logDirectory: configuration.taskDirectory + "/logs", portRange: configuration.taskPortRange,
      ledgerPath: configuration.taskDirectory + "/tasks.ledger")
  }
}

/// The software version a node announces.
public enum TealVersion {
  public static let current = "0.2.0"
}

// MARK: - Lifecycle services

/// Owns the peer transport: listening and dialling until graceful shutdown, then closing.
struct TransportService: Service {
  let transport: PeerTransport

  func run() async throws {
    do { try await transport.start() } catch {
      throw NodeStartError.component("the peer listener", reason: "\(error)")
    }
    try? await gracefulShutdown()
    await transport.shutdown()
  }
}

/// Owns the Raft node and the log gateway: ticking until graceful shutdown, then handing
/// leadership away (if it leads) and closing the log.
///
/// Committed membership drives the transport: a node that leaves the Raft configuration is removed
/// from the transport's peers (its connections close); a node that joins it is added with the
/// address it announced or was added with (both replicated in ClusterState, so a node that starts
/// later learns them from the log), else the one in this node's configuration; gossip's authorised
/// member set follows it too.
struct RaftService: Service {
  let raft: RaftNode<ClusterStateMachine>
  let log: ClusterLog
  let observer: AppliedIndexObserver
  let transport: PeerTransport
  let membership: MembershipService
  let configuration: NodeConfiguration

  /// Whether this node joins (`bootstrap: false`) with a data directory that was empty at start:
  /// if the first configuration it then receives already lists it as a voter, its identity lost its
  /// data (a new node first learns a configuration in which it is a learner: it is promoted only
  /// after it acknowledged the entry that added it) and must not vote again.
  let joinedEmpty: Bool

  func run() async throws {
    await raft.start()
    await log.start()
    let changes = await raft.membershipChanges()
    let refusal = await withTaskGroup(of: String?.self) { group in
      group.addTask { await self.follow(changes) }
      group.addTask {
        try? await gracefulShutdown()
        return nil
      }
      let first = await group.next() ?? nil
      group.cancelAll()
      return first
    }
    await log.stop()
    await raft.stop(transferringLeadership: refusal == nil)
    observer.finish()
    if let refusal { throw NodeStartError.component("the Raft identity \(configuration.node)", reason: refusal) }
  }

  /// Follows the committed membership (see the type's documentation) until the stream ends; returns
  /// why this node must stop, if it must.
  private func follow(_ changes: AsyncStream<RaftConfiguration>) async -> String? {
    var known = Set(configuration.peers.keys)
    var firstConfiguration = true
    for await configurationChange in changes {
      // A joining node knows no configuration until the leader's log or snapshot reaches it
      // (its bootstrap configuration is empty): until then it keeps its configured peers, the
      // nodes it accepts the leader's connections from.
      guard !configurationChange.voters.isEmpty else { continue }
      // Only the first configuration tells: a new node first learns one in which it is a learner
      // (it is promoted only after it acknowledged the entry that added it).
      defer { firstConfiguration = false }
      if joinedEmpty && firstConfiguration && configurationChange.voters.contains(configuration.node) {
        // Stop at once: Raft may not vote again under this identity, in this run or any later one
        // (the directory now holds the leader's log, so the marker keeps the refusal).
        await raft.stop(transferringLeadership: false)
        NodeResources.markIdentityLost(configuration)
        return
          "\(configuration.node) started with an empty data directory (\(configuration.dataDirectory)) but the "
          + "cluster has it as a voter: its data is lost and it may have voted or acknowledged entries before, so it "
          + "must not vote under this id again; replace it with `teal cluster replace-node \(configuration.node)`"
      }
      let members = configurationChange.members
      for gone in known.subtracting(members) where gone != configuration.node { await transport.removePeer(gone) }
      for new in members.subtracting(known) where new != configuration.node {
        // The address a member announced or was added with (replicated in ClusterState), else
        // the static configuration's (a founder that has not announced itself yet).
        let state = await log.localState()
        let address = state.memberAddress(new)
        if let host = address?.address ?? configuration.peers[new] {
          let port = address?.peerPort ?? configuration.peerPort
          await transport.addPeer(new, address: PeerAddress(host: host, port: port))
        }
      }
      known = members
      // Gossip admits exactly the committed members (and never forgets them).
      await membership.setAuthorizedMembers(members.union([configuration.node]))
      await membership.addConfiguredPeers(members.subtracting([configuration.node]).sorted())
    }
    return nil
  }
}

/// Owns gossip: joins through the other founding members, leaves gracefully at shutdown.
struct MembershipRunner: Service {
  let membership: MembershipService
  let seeds: [NodeID]

  func run() async throws {
    await membership.start(seeds: seeds.sorted())
    try? await gracefulShutdown()
    await membership.leave()
  }
}

/// Reloads the node's TLS credentials (its certificate and key, and the cluster CA) on SIGHUP,
/// without a restart: new connections use them; a file that no longer loads is logged and the old
/// credentials stay.
struct CredentialReloader: Service {
  let configuration: NodeConfiguration
  let transport: PeerTransport
  /// The API server's context when the API runs over TLS.
  let api: ReloadableTLSContext?
  let logger: Logger

  func run() async throws {
    let signals = await UnixSignalsSequence(trapping: .sighup)
    // The sequence ends when graceful shutdown begins, so the group's stop never waits on it.
    for await _ in signals.cancelOnGracefulShutdown() {
      // Both contexts are read before either is installed: a bad file changes neither.
      do {
        let context = try NodeResources.tlsContext(for: configuration)
        let apiContext = try api.map { _ in
          try NodeResources.apiTLSContext(from: context, configuration: configuration)
        }
        await transport.updateSecurity(.mutualTLS(context))
        if let api, let apiContext { api.replace(with: apiContext) }
        logger.notice(
          "TLS credentials reloaded",
          metadata: ["certDir": "\(configuration.certificateDirectory)", "api": "\(api != nil)"])
      } catch {
        logger.error("TLS credentials not reloaded; keeping the old ones", metadata: ["error": "\(error)"])
      }
    }
  }
}
