// RouteReconciler: makes this node's load balancer serve the routes ClusterState committed, and
// reports each generation once it is applied and the targets it removed are drained.

import Logging
import TealCluster
import TealLoadBalancer
import TealWire

/// Runs on every node. For each service in ClusterState: opens its production and test listeners on
/// this node's address (once), installs the committed routes whenever their generation moves, waits
/// until the targets that generation removed have no request in flight (bounded by
/// ``deregistrationDelay``), and then reports `routesApplied` for it. Services that are gone have
/// their listeners closed.
///
/// The balancer keeps serving the last routes it applied while no leader exists: nothing here
/// waits for the control plane before traffic flows.
actor RouteReconciler {
  private let node: NodeID
  private let address: String
  private let log: any ProposalSink
  private let balancer: any NodeRouteBalancing
  private let logger: Logger

  /// How long a removed target may keep requests in flight before its generation is reported anyway.
  static let deregistrationDelay: Duration = .seconds(10)

  /// The generation installed per service on this node.
  private var installed: [String: UInt64] = [:]
  /// The targets installed per service.
  private var installedTargets: [String: Set<TargetAddress>] = [:]
  /// Services whose listeners could not be opened (port taken): retried on every pass.
  private var listenerFailures: [String: String] = [:]

  init(node: NodeID, address: String, log: any ProposalSink, balancer: any NodeRouteBalancing, logger: Logger) {
    self.node = node
    self.address = address
    self.log = log
    self.balancer = balancer
    self.logger = logger
  }

  func run(wakeups: AsyncStream<Void>) async {
    for await _ in wakeups {
      guard !Task.isCancelled else { return }
      await reconcile()
    }
  }

  func reconcile() async {
    let state = await log.localState()
    var applied: [String: UInt64] = [:]
    for name in state.services.keys.sorted() {
      guard let service = state.services[name] else { continue }
      let routes = Self.balancerRoutes(service.routes)
      let targets = Set(routes.targetGroups.flatMap(\.targets))
      if installed[name] == nil {
        do {
          try await balancer.addService(
            ServiceConfiguration(
              name: name, listenHost: address, testListenHost: address, productionPort: service.productionPort,
              testPort: service.testPort),
            routes: routes)
          listenerFailures[name] = nil
        } catch {
          if listenerFailures[name] == nil {
            logger.error("cannot open the service's listeners", metadata: ["service": "\(name)", "error": "\(error)"])
          }
          listenerFailures[name] = "\(error)"
          continue
        }
      } else if installed[name] != service.routes.generation {
        do { try await balancer.setRoutes(routes, forService: name) } catch {
          logger.error("routes refused by the balancer", metadata: ["service": "\(name)", "error": "\(error)"])
          continue
        }
        // Report the generation only once the targets it removed have no request in flight here.
        let removed = (installedTargets[name] ?? []).subtracting(targets)
        await withTaskGroup(of: Void.self) { group in
          for target in removed {
            group.addTask { await self.balancer.deregister(target, deregistrationDelay: Self.deregistrationDelay) }
          }
        }
      }
      installed[name] = service.routes.generation
      installedTargets[name] = targets
      let reported = state.nodes[node.rawValue]?.routesApplied[name] ?? 0
      if reported < service.routes.generation { applied[name] = service.routes.generation }
    }
    for name in installed.keys where state.services[name] == nil {
      await balancer.removeService(name)
      installed[name] = nil
      installedTargets[name] = nil
    }
    guard !applied.isEmpty, state.nodes[node.rawValue] != nil else { return }
    do { _ = try await log.submit(.routesApplied(node: node, generations: applied)) } catch {
      logger.debug("routesApplied not committed yet", metadata: ["error": "\(error)"])
    }
  }

  /// The committed routes in the balancer's terms: one target group per revision, weights in basis
  /// points (the balancer's weights are relative, so 10,000 and 100 % route alike).
  static func balancerRoutes(_ routes: TealCluster.ServiceRoutes) -> TealLoadBalancer.ServiceRoutes {
    var groups: [String: [TargetAddress]] = [:]
    for target in routes.targets {
      groups[target.revision.description, default: []].append(TargetAddress(host: target.address, port: target.port))
    }
    for revision in routes.production.keys where groups[revision.description] == nil {
      groups[revision.description] = []
    }
    for revision in routes.test.keys where groups[revision.description] == nil { groups[revision.description] = [] }
    let targetGroups = groups.keys.sorted().map { TargetGroup(revision: $0, targets: groups[$0] ?? []) }
    return TealLoadBalancer.ServiceRoutes(
      generation: routes.generation, targetGroups: targetGroups,
      productionWeights: Dictionary(uniqueKeysWithValues: routes.production.map { ($0.key.description, $0.value) }),
      testWeights: Dictionary(uniqueKeysWithValues: routes.test.map { ($0.key.description, $0.value) }))
  }
}
