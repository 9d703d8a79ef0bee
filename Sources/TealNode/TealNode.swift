// TealNode: one node process. This file only builds the parts and wires them into one
// ServiceGroup; each part lives in its own file (Consensus/, Control/, Reconcile/, API/).

import Foundation
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle
import TealCluster
import TealConsensus
import TealGossip
import TealHooks
import TealLoadBalancer
import TealMembership
import TealMetrics
import TealRaft
import TealTasks
import TealTransport
import TealWire

/// A node: peer transport (mutual TLS) → Raft over the WAL → ClusterState; gossip; the leader's
/// controllers; every node's task and route reconcilers; the HTTP API.
///
/// Start order is the ServiceGroup's order below; on SIGTERM or SIGINT the group stops them in
/// reverse: the API stops accepting requests, the node control hands leadership away and drains
/// this node's tasks through the log (routes first, then processes), gossip leaves, Raft closes its
/// log, the transport closes its connections. SIGKILL loses nothing acknowledged: everything is
/// recovered from the data directory on the next start.
public enum TealNode {
  public static func run(
    configuration: NodeConfiguration, clock: NodeClock = .system, logger baseLogger: Logger
  ) async throws {
    var logger = baseLogger
    logger[metadataKey: "node"] = "\(configuration.node)"
    try configuration.validate()
    let tls = try NodeResources.tlsContext(for: configuration)
    let token = try NodeResources.token(for: configuration)
    try NodeResources.checkIdentityNotLost(configuration)
    // Before anything writes there: a joining node with an empty data directory must not turn out to
    // be a voter already (RaftService).
    let joinedEmpty =
      !configuration.bootstrap
      && ((try? FileManager.default.contentsOfDirectory(atPath: configuration.dataDirectory))?.isEmpty ?? true)
    try NodeResources.makeDirectory(configuration.dataDirectory)
    try NodeResources.makeDirectory(configuration.taskDirectory)

    let group = MultiThreadedEventLoopGroup(numberOfThreads: System.coreCount)
    let clusterID = try NodeResources.clusterID(for: configuration)
    // One registry per node (no global MetricsSystem): GET /metrics renders it.
    let metrics = NodeMetrics(registry: NodeMetricsRegistry())
    var transportConfiguration = NodeWiring.transportConfiguration(configuration, clusterID: clusterID)
    transportConfiguration.metricsFactory = metrics.factory
    let transport = PeerTransport(
      configuration: transportConfiguration, security: .mutualTLS(tls), group: group, logger: logger)

    let observer = AppliedIndexObserver()
    let raft: RaftNode<ClusterStateMachine>
    do {
      var raftConfiguration = NodeWiring.raftConfiguration(configuration, clusterID: clusterID, logger: logger)
      raftConfiguration.storage.fileSystem = TimedFileSystem(
        base: raftConfiguration.storage.fileSystem, factory: metrics.factory)
      raft = try RaftNode(
        configuration: raftConfiguration, stateMachine: ClusterStateMachine(observer: observer), network: transport)
    } catch {
      throw NodeStartError.component("the Raft log in \(configuration.dataDirectory)", reason: "\(error)")
    }
    transport.setHandler(raft.messageHandler, for: .raft)

    // Gossip records are signed with the node's key and verified against the cluster CA; only the
    // founding members (then the committed Raft membership) may appear in the member table.
    let authenticator: CertificateRecordAuthenticator
    do { authenticator = try CertificateRecordAuthenticator(configuration: tls.configuration) } catch {
      throw NodeStartError.component("gossip record signing", reason: "\(error)")
    }
    let membership = try MembershipService(
      id: configuration.node, metadata: NodeWiring.memberMetadata(configuration), sender: transport, logger: logger,
      authenticator: authenticator, authorizedMembers: Set(configuration.peers.keys))
    transport.setHandler(membership.messageHandler, for: .gossip)

    let log = ClusterLog(
      node: configuration.node, raft: raft, observer: observer, sender: transport, clock: clock, logger: logger,
      metrics: metrics)
    transport.setHandler({ from, _, payload in await log.receive(from: from, payload: payload) }, for: .control)

    let balancer = LoadBalancer(
      configuration: NodeWiring.loadBalancerConfiguration(configuration), eventLoopGroup: group, logger: logger,
      metricsFactory: metrics.factory)
    // Before the runner signals a task, this node's balancer stops routing to it and lets its
    // requests in flight finish (bounded): a task is never stopped under a request of this node.
    let address = configuration.address
    let tasks = TaskRunner(
      configuration: NodeWiring.taskRunnerConfiguration(configuration), eventLoopGroup: group, logger: logger,
      deregister: { info in
        _ = await balancer.deregister(
          TargetAddress(host: address, port: info.port), deregistrationDelay: RouteReconciler.deregistrationDelay)
      })
    var hookLogger = logger
    hookLogger[metadataKey: "component"] = "hooks"
    let control = NodeControl(
      configuration: configuration, log: log,
      environment: NodeControlEnvironment(
        clock: clock, executor: TaskControlExecutor(), tasks: ProcessTasks(tasks), balancer: BalancerRoutes(balancer),
        gossip: membership, hooks: HookInvoker(group: MultiThreadedEventLoopGroup.singleton, logger: hookLogger)),
      logger: logger)
    let apiTLS = configuration.apiTLS ? ReloadableTLSContext(try NodeResources.apiTLSContext(for: configuration)) : nil
    let api = APIServer(
      configuration: configuration, token: token,
      tls: apiTLS, log: log,
      control: control, logger: logger, metrics: metrics)
    metrics.installCollectors(
      node: configuration.node, raft: raft, transport: transport, membership: membership, log: log, balancer: balancer)

    let services: [any Service] = [
      TransportService(transport: transport),
      CredentialReloader(configuration: configuration, transport: transport, api: apiTLS, logger: logger),
      RaftService(
        raft: raft, log: log, observer: observer, transport: transport, membership: membership,
        configuration: configuration, joinedEmpty: joinedEmpty),
      MembershipRunner(membership: membership, seeds: configuration.peers.keys.filter { $0 != configuration.node }),
      control,
      MetricsEventRecorder(metrics: metrics, membership: membership, tasks: tasks, log: log),
      api.application(),
    ]
    let serviceGroup = ServiceGroup(
      configuration: ServiceGroupConfiguration(
        services: services.map {
          ServiceGroupConfiguration.ServiceConfiguration(
            service: $0, successTerminationBehavior: .gracefullyShutdownGroup,
            failureTerminationBehavior: .gracefullyShutdownGroup)
        },
        gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
    logger.info(
      "node starting",
      metadata: [
        "address": "\(configuration.address)", "peerPort": "\(configuration.peerPort)",
        "apiPort": "\(configuration.apiPort)",
      ])
    try await serviceGroup.run()
    try? await group.shutdownGracefully()
    logger.info("node stopped")
  }
}
