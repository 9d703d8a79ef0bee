// The LoadBalancer actor: one per node. It owns the listeners, the health-check loops and the control
// operations (routes, weights, draining). The request path never enters the actor: it runs on the
// event loops against each service's lock-protected ServiceTraffic.

import CoreMetrics
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import TealHealth

// MARK: - Configuration

/// Settings shared by every listener of a load balancer.
public struct LoadBalancerConfiguration: Hashable, Sendable {
  /// A connect to a target that takes longer fails (and is retried once on another target).
  public var connectTimeout: Duration
  /// A target that has not started its response this long after the request was routed gets a 504.
  public var responseTimeout: Duration
  /// Request headers larger than this (any single field, or all together) get a 431.
  public var maxRequestHeaderBytes: Int
  /// Idle keep-alive connections kept per target and event loop.
  public var maxIdleConnectionsPerTarget: Int
  /// Value of the `X-Forwarded-Proto` header set on forwarded requests.
  public var forwardedProto: String
  /// A pooled connection idle this long is closed and never reused. Keep it below the keep-alive
  /// timeout of every target (Node.js 5 s, gunicorn 2 s, Apache 5 s, nginx 75 s): the balancer must
  /// close an idle connection before the target does, or a request written as the target closes is lost.
  public var upstreamIdleTimeout: Duration
  /// A pooled connection older than this is closed instead of reused (bounds how long a connection
  /// to a target lives, e.g. across a target's own reconfiguration).
  public var upstreamMaxAge: Duration
  /// How many times one request may be sent again after a failure before any response byte: a
  /// failed connect (any method), or a reset of an idempotent request without a body.
  public var maxRetries: Int
  /// A request head not complete this long after its first byte gets 408 and the connection closes
  /// (a slowloris client).
  public var headerReadTimeout: Duration
  /// A client keep-alive connection with no new request for this long is closed.
  public var clientIdleTimeout: Duration
  /// A request body that sends nothing for this long gets 408 (the connection closes).
  public var bodyIdleTimeout: Duration
  /// A response body from a target that sends nothing for this long, once the response has started,
  /// is cut: the client connection closes (the client can tell the body is incomplete; nothing is
  /// retried, part of the response went out) and `TargetGroupMetrics.stalledResponses` counts it.
  /// Measured between two reads of the target's response, so a long download that keeps moving is
  /// never cut.
  public var responseBodyIdleTimeout: Duration
  /// Open client connections per service (both listeners together); one more gets 503 at once
  /// and is closed.
  public var maxClientConnections: Int
  /// Addresses (IP literals, as the socket reports them) of proxies in front of the balancer whose
  /// `x-forwarded-for` is kept and appended to. From anyone else the header is replaced by the
  /// client's address: a client could otherwise claim any address.
  public var trustedProxies: Set<String>
  /// Where the weighted round robin starts (see ``WeightedRouter/init(routes:healthyTargets:seed:)``).
  /// Give every node another value, e.g. its index among the cluster's members (0, 1, 2: the first
  /// requests of three nodes then go to three different tasks) or a stable hash of its id; 0, the
  /// default, starts at the first group and target. The same seed always gives the same sequence.
  public var roundRobinSeed: UInt64

  public init(
    connectTimeout: Duration = .seconds(2), responseTimeout: Duration = .seconds(60),
    maxRequestHeaderBytes: Int = 32 * 1024, maxIdleConnectionsPerTarget: Int = 64, forwardedProto: String = "http",
    upstreamIdleTimeout: Duration = .seconds(1), upstreamMaxAge: Duration = .seconds(60), maxRetries: Int = 2,
    headerReadTimeout: Duration = .seconds(10), clientIdleTimeout: Duration = .seconds(60),
    bodyIdleTimeout: Duration = .seconds(30), responseBodyIdleTimeout: Duration = .seconds(10),
    maxClientConnections: Int = 10_000, trustedProxies: Set<String> = [],
    roundRobinSeed: UInt64 = 0
  ) {
    self.roundRobinSeed = roundRobinSeed
    self.headerReadTimeout = headerReadTimeout
    self.clientIdleTimeout = clientIdleTimeout
    self.bodyIdleTimeout = bodyIdleTimeout
    self.responseBodyIdleTimeout = responseBodyIdleTimeout
    self.maxClientConnections = max(1, maxClientConnections)
    self.trustedProxies = trustedProxies
    self.connectTimeout = connectTimeout
    self.responseTimeout = responseTimeout
    self.maxRequestHeaderBytes = maxRequestHeaderBytes
    self.maxIdleConnectionsPerTarget = maxIdleConnectionsPerTarget
    self.forwardedProto = forwardedProto
    self.upstreamIdleTimeout = upstreamIdleTimeout
    self.upstreamMaxAge = upstreamMaxAge
    self.maxRetries = max(0, maxRetries)
  }
}

/// One service's listeners and health checks.
public struct ServiceConfiguration: Hashable, Sendable {
  /// Unique per load balancer; used in metrics labels and error messages.
  public var name: String
  /// Address the production listener binds to.
  public var listenHost: String
  /// Address the test listener binds to: the node's own address (default loopback), never every
  /// interface by default, since it reaches revisions before they take production traffic.
  public var testListenHost: String
  /// Production listener port; 0 picks a free port (see ``ServiceListeners``).
  public var productionPort: Int
  /// Test listener port; 0 picks a free port.
  public var testPort: Int
  public var healthCheck: HealthCheckConfiguration

  public init(
    name: String, listenHost: String = "0.0.0.0", testListenHost: String = "127.0.0.1", productionPort: Int,
    testPort: Int, healthCheck: HealthCheckConfiguration = HealthCheckConfiguration()
  ) {
    self.name = name
    self.listenHost = listenHost
    self.testListenHost = testListenHost
    self.productionPort = productionPort
    self.testPort = testPort
    self.healthCheck = healthCheck
  }
}

/// The ports a service's listeners are bound to.
public struct ServiceListeners: Hashable, Sendable {
  public var productionPort: Int
  public var testPort: Int

  public func port(for role: ListenerRole) -> Int {
    role == .production ? self.productionPort : self.testPort
  }
}

/// How a drain ended.
public enum DrainOutcome: Hashable, Sendable {
  /// No request of the revision is in flight any more; its tasks can be stopped.
  case drained
  /// The deregistration delay passed first; this many requests were still in flight.
  case deregistrationDelayExpired(inFlight: Int)
}

/// Why a listener could not be opened.
public struct ListenerError: Error, CustomStringConvertible {
  public var service: String
  public var role: ListenerRole
  public var address: String
  public var underlying: String

  public var description: String {
    "service '\(self.service)': cannot listen on \(self.address) for the \(self.role.rawValue) listener: "
      + self.underlying
  }
}

// MARK: - Actor

/// The node's load balancer: per service, a production and a test listener proxying HTTP/1.1 to
/// weighted target groups.
///
/// Invariants:
/// - Routes are replaced atomically (one lock acquisition): a request is routed either entirely by
///   the old or entirely by the new table; requests already routed finish on their target.
/// - Only targets that passed the load balancer's own health checks receive requests.
/// - A revision removed from the routes receives no new request; ``drain(revision:ofService:deregistrationDelay:)``
///   returns once its in-flight requests have ended or the delay has passed.
public actor LoadBalancer {
  private struct Service {
    var configuration: ServiceConfiguration
    var runtime: ServiceRuntime
    var listeners: [ListenerRole: any Channel]
    var healthLoop: Task<Void, Never>
  }

  public let configuration: LoadBalancerConfiguration
  private let group: any EventLoopGroup
  private let logger: Logger
  private let pools: UpstreamPools
  private var services: [String: Service] = [:]
  /// Services with a control call running, and the calls waiting for their turn (in order).
  private var controlBusy: Set<String> = []
  private var controlWaiters: [String: [CheckedContinuation<Void, Never>]] = [:]
  /// The runtimes, readable without entering the actor (metrics scraping, alarms).
  private let runtimes = NIOLockedValueBox<[String: ServiceRuntime]>([:])
  /// Where the Prometheus series go (see ``LoadBalancerSeries``).
  private let metricsFactory: any MetricsFactory

  /// - Parameter metricsFactory: the swift-metrics factory the balancer's series are made with
  ///   (the node's registry); by default they go nowhere.
  public init(
    configuration: LoadBalancerConfiguration = LoadBalancerConfiguration(),
    eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
    logger: Logger = Logger(label: "teal.loadbalancer"),
    metricsFactory: any MetricsFactory = NOOPMetricsHandler.instance
  ) {
    self.metricsFactory = metricsFactory
    self.configuration = configuration
    self.group = eventLoopGroup
    self.logger = logger
    self.pools = UpstreamPools(
      maxIdlePerTarget: configuration.maxIdleConnectionsPerTarget,
      connectTimeout: TimeAmount(configuration.connectTimeout),
      idleTimeout: TimeAmount(configuration.upstreamIdleTimeout), maxAge: TimeAmount(configuration.upstreamMaxAge))
  }

  // MARK: Services

  /// Opens the production and test listeners of a service and installs its first routes. New targets
  /// are probed once before the routes take effect, so the first request already sees healthy targets.
  /// - Returns: the bound ports (useful when the configuration asked for port 0).
  @discardableResult
  public func addService(_ service: ServiceConfiguration, routes: ServiceRoutes) async throws -> ServiceListeners {
    guard self.services[service.name] == nil else { throw RoutesError.serviceExists(service.name) }
    guard isHeaderToken(self.configuration.forwardedProto) else {
      throw RoutesError.invalidForwardedProto(self.configuration.forwardedProto)
    }
    try routes.validate()
    let runtime = ServiceRuntime(
      name: service.name,
      traffic: ServiceTraffic(
        routes: .empty, healthyThreshold: service.healthCheck.healthyThreshold,
        unhealthyThreshold: service.healthCheck.unhealthyThreshold, roundRobinSeed: self.configuration.roundRobinSeed),
      metricsFactory: self.metricsFactory)
    await self.installProbed(routes, runtime: runtime, healthCheck: service.healthCheck)

    var listeners: [ListenerRole: any Channel] = [:]
    do {
      for role in ListenerRole.allCases {
        let port = role == .production ? service.productionPort : service.testPort
        listeners[role] = try await self.bind(service: service, role: role, port: port, runtime: runtime)
      }
    } catch {
      for channel in listeners.values { try? await channel.close() }
      throw error
    }
    let healthLoop = Self.startHealthLoop(runtime: runtime, healthCheck: service.healthCheck, group: self.group)
    self.services[service.name] = Service(
      configuration: service, runtime: runtime, listeners: listeners, healthLoop: healthLoop)
    self.runtimes.withLockedValue { $0[service.name] = runtime }
    self.logger.info(
      "service listening",
      metadata: [
        "service": "\(service.name)",
        "production": "\(listeners[.production]?.localAddress?.port ?? 0)",
        "test": "\(listeners[.test]?.localAddress?.port ?? 0)",
      ])
    return ServiceListeners(
      productionPort: listeners[.production]?.localAddress?.port ?? 0,
      testPort: listeners[.test]?.localAddress?.port ?? 0)
  }

  /// Replaces a service's routes (target groups and both listeners' weights) in one atomic step.
  /// Targets not seen before are probed once first. Revisions that disappear start draining; use
  /// ``waitUntilDrained(revision:ofService:deregistrationDelay:)`` to learn when they are idle.
  ///
  /// Control calls of one service (`setRoutes`, `setWeights`, `drain`'s route change) run one at a
  /// time, in the order they were made: a call made while another one probes waits for it, so no
  /// call installs routes computed before a later call. Routes whose `generation` is below the one
  /// applied are not installed.
  /// - Returns: the generation applied after the call: `routes.generation`, or a greater one when
  ///   newer routes were applied first (these routes were then ignored).
  @discardableResult
  public func setRoutes(_ routes: ServiceRoutes, forService name: String) async throws -> UInt64 {
    guard self.services[name] != nil else { throw RoutesError.unknownService(name) }
    try routes.validate()
    try await self.lockControl(name)
    defer { self.unlockControl(name) }
    guard let service = self.services[name] else { throw RoutesError.unknownService(name) }
    let applied = service.runtime.appliedGeneration
    guard routes.generation >= applied else { return applied }
    await self.installProbed(routes, runtime: service.runtime, healthCheck: service.configuration.healthCheck)
    return routes.generation
  }

  /// Changes only the weights, keeping the target groups. `test` nil keeps the test weights.
  /// `generation` nil keeps the applied generation; a generation below it is ignored.
  /// - Returns: the generation applied after the call.
  @discardableResult
  public func setWeights(
    forService name: String, production: [String: Int], test: [String: Int]? = nil, generation: UInt64? = nil
  ) async throws -> UInt64 {
    guard self.services[name] != nil else { throw RoutesError.unknownService(name) }
    try await self.lockControl(name)
    defer { self.unlockControl(name) }
    guard let service = self.services[name] else { throw RoutesError.unknownService(name) }
    var routes = service.runtime.traffic.router.routes
    if let generation {
      guard generation >= routes.generation else { return routes.generation }
      routes.generation = generation
    }
    routes.productionWeights = production
    if let test { routes.testWeights = test }
    try routes.validate()
    service.runtime.withTraffic { $0.install(routes) }
    return routes.generation
  }

  /// The generation of the routes in force (0 before the first routes with a generation).
  public func appliedGeneration(ofService name: String) throws -> UInt64 {
    guard let service = self.services[name] else { throw RoutesError.unknownService(name) }
    return service.runtime.appliedGeneration
  }

  /// The routes currently installed.
  public func routes(ofService name: String) throws -> ServiceRoutes {
    guard let service = self.services[name] else { throw RoutesError.unknownService(name) }
    return service.runtime.traffic.router.routes
  }

  /// Targets currently receiving traffic (healthy by the load balancer's checks).
  public func healthyTargets(ofService name: String) throws -> Set<TargetAddress> {
    guard let service = self.services[name] else { throw RoutesError.unknownService(name) }
    return service.runtime.traffic.router.healthyTargets
  }

  /// Removes `revision`'s target group from the routes (its targets get no new request) and waits
  /// until its in-flight requests have ended, or until `deregistrationDelay` has passed. The route
  /// change is a control call like `setWeights` (same order and `generation` rules); the wait is not
  /// (other control calls proceed meanwhile).
  public func drain(
    revision: String, ofService name: String, generation: UInt64? = nil, deregistrationDelay: Duration
  ) async throws -> DrainOutcome {
    guard self.services[name] != nil else { throw RoutesError.unknownService(name) }
    try await self.lockControl(name)
    do {
      defer { self.unlockControl(name) }
      guard let service = self.services[name] else { throw RoutesError.unknownService(name) }
      var routes = service.runtime.traffic.router.routes
      if generation.map({ $0 >= routes.generation }) ?? true {
        if let generation { routes.generation = generation }
        routes.targetGroups.removeAll { $0.revision == revision }
        routes.productionWeights[revision] = nil
        routes.testWeights[revision] = nil
        service.runtime.withTraffic { $0.install(routes) }
      }
    }
    return try await self.waitUntilDrained(
      revision: revision, ofService: name, deregistrationDelay: deregistrationDelay)
  }

  /// Waits until no request of `revision` is in flight, or until `deregistrationDelay` has passed.
  public func waitUntilDrained(revision: String, ofService name: String, deregistrationDelay: Duration) async throws
    -> DrainOutcome
  {
    guard let service = self.services[name] else { throw RoutesError.unknownService(name) }
    let runtime = service.runtime
    let drained = await Self.waitUntilIdle(.revision(revision), of: runtime, atMost: deregistrationDelay)
    let inFlight = runtime.inFlight(.revision(revision))
    if drained || inFlight == 0 {
      let keep = self.routedTargets()
      await self.pools.forEach { $0.closeIdle(except: keep) }
      return .drained
    }
    return .deregistrationDelayExpired(inFlight: inFlight)
  }

  /// Takes one target out of routing in every service that routes to it, and waits until its
  /// requests in flight have ended (or `deregistrationDelay` has passed); then closes the idle pooled
  /// connections to it. The target gets no new request from the moment this is called, whatever its
  /// health and whatever routes are set later, until it leaves the routes of its services. This is
  /// what the task runner calls before it sends SIGTERM to a task (see `TaskRunner.init(deregister:)`).
  ///
  /// Returns `.drained` also for a target no service routes to.
  public func deregister(_ target: TargetAddress, deregistrationDelay: Duration) async -> DrainOutcome {
    let runtimes = self.services.values.map(\.runtime).filter { runtime in
      runtime.withTraffic { $0.deregister(target) }
    }
    let deadline = ContinuousClock.now + deregistrationDelay
    var inFlight = 0
    for runtime in runtimes {
      let remaining = max(.zero, deadline - ContinuousClock.now)
      _ = await Self.waitUntilIdle(.target(target), of: runtime, atMost: remaining)
      inFlight += runtime.inFlight(.target(target))
    }
    await self.pools.forEach { $0.closeIdle(to: target) }
    return inFlight == 0 ? .drained : .deregistrationDelayExpired(inFlight: inFlight)
  }

  /// Whether `key` became idle within `delay`.
  private static func waitUntilIdle(_ key: ServiceRuntime.IdleKey, of runtime: ServiceRuntime, atMost delay: Duration)
    async -> Bool
  {
    await withTaskGroup(of: Bool.self) { group in
      group.addTask {
        await runtime.waitUntilIdle(key)
        return !Task.isCancelled
      }
      group.addTask {
        try? await Task.sleep(for: delay)
        return false
      }
      let first = await group.next() ?? false
      group.cancelAll()
      return first
    }
  }

  /// How long ``shutdown(gracePeriod:)`` and ``removeService(_:gracePeriod:)`` wait by default for
  /// the requests in flight before they cut the connections still open.
  public static let defaultGracePeriod = Duration.seconds(10)

  /// Stops a service gracefully: its listeners stop accepting at once (new connections are refused),
  /// requests in flight finish and are answered with `connection: close`, idle keep-alive
  /// connections close at a request boundary without a reset (a request whose first bytes already
  /// arrived is served first). Returns once every client connection of the service has closed, or
  /// when `gracePeriod` has passed; connections still open then are closed outright. Then its health
  /// checks stop and idle pooled connections to targets no other service routes to are closed.
  /// If the calling task is cancelled, the wait ends at once and the open connections are cut.
  public func removeService(_ name: String, gracePeriod: Duration = LoadBalancer.defaultGracePeriod) async {
    guard let service = self.services.removeValue(forKey: name) else { return }
    await self.stop([service], gracePeriod: gracePeriod)
    let keep = self.routedTargets()
    await self.pools.forEach { $0.closeIdle(except: keep) }
  }

  /// Stops every service gracefully, all at once and within one `gracePeriod` (see
  /// ``removeService(_:gracePeriod:)``), then closes every pooled connection. `gracePeriod: .zero`
  /// closes everything at once. The event loop group is the caller's and stays running.
  public func shutdown(gracePeriod: Duration = LoadBalancer.defaultGracePeriod) async {
    let services = Array(self.services.values)
    self.services = [:]
    await self.stop(services, gracePeriod: gracePeriod)
    await self.pools.forEach { $0.closeAll() }
  }

  /// The graceful stop of `services`, already taken out of `self.services`.
  private func stop(_ services: [Service], gracePeriod: Duration) async {
    for service in services {
      // No new connection from here on; accepted connections go on.
      for channel in service.listeners.values { try? await channel.close() }
      service.runtime.beginGracefulStop()
    }
    let started = ContinuousClock.now
    let closedInTime = await withTaskGroup(of: Bool.self) { group in
      group.addTask {
        for service in services { await service.runtime.waitUntilNoClients() }
        return !Task.isCancelled
      }
      group.addTask {
        try? await Task.sleep(for: gracePeriod)
        return false
      }
      let first = await group.next() ?? false
      group.cancelAll()
      return first
    }
    var cut = 0
    for service in services {
      cut += service.runtime.openClients
      await service.runtime.closeAllClients()
      self.runtimes.withLockedValue { runtimes in
        // The same name may have been added again while this one stopped.
        guard runtimes[service.configuration.name] === service.runtime else { return }
        runtimes[service.configuration.name] = nil
        // Not when the name was added again: its new runtime shares the registry's series.
        service.runtime.destroySeries()
      }
      service.healthLoop.cancel()
      await service.healthLoop.value
    }
    self.logger.info(
      "listeners closed",
      metadata: [
        "services": "\(services.map(\.configuration.name).sorted())",
        "after": "\(ContinuousClock.now - started)",
        "connectionsCut": "\(closedInTime ? 0 : cut)",
      ])
  }

  // MARK: Metrics

  /// A snapshot of every service's metrics. Cheap and callable from anywhere (no actor hop).
  public nonisolated func metrics() -> LoadBalancerMetrics {
    let runtimes = self.runtimes.withLockedValue { $0 }
    var snapshot = LoadBalancerMetrics()
    for (name, runtime) in runtimes {
      let traffic = runtime.traffic
      var metrics = traffic.metrics
      for target in traffic.allTargets { metrics.targetHealth[target] = traffic.router.healthyTargets.contains(target) }
      snapshot.services[name] = metrics
    }
    return snapshot
  }

  /// Brings the gauges of the Prometheus series up to date (requests in flight, target health) and
  /// drops the series of revisions and targets that left the routes. Call before each exposition
  /// (the node's registry does); counters and histograms are recorded as requests go.
  public nonisolated func collectMetrics() {
    for runtime in self.runtimes.withLockedValue({ Array($0.values) }) { runtime.refreshSeries() }
  }

  // MARK: Control order

  /// Control calls that may wait per service for the one running; one more is refused with
  /// ``RoutesError/tooManyPendingControlCalls(service:limit:)``.
  public static let maxPendingControlCalls = 64

  /// Waits until no other control call of `name` runs (first come, first served).
  private func lockControl(_ name: String) async throws {
    guard self.controlBusy.contains(name) else {
      self.controlBusy.insert(name)
      return
    }
    guard self.controlWaiters[name, default: []].count < Self.maxPendingControlCalls else {
      throw RoutesError.tooManyPendingControlCalls(service: name, limit: Self.maxPendingControlCalls)
    }
    await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
      self.controlWaiters[name, default: []].append(continuation)
    }
  }

  /// Hands the turn of `name` to the next waiting control call, if any.
  private func unlockControl(_ name: String) {
    precondition(self.controlBusy.contains(name), "unlockControl(\(name)) without lockControl")
    if var waiters = self.controlWaiters[name], !waiters.isEmpty {
      let next = waiters.removeFirst()
      self.controlWaiters[name] = waiters.isEmpty ? nil : waiters
      next.resume()
    } else {
      self.controlBusy.remove(name)
    }
  }

  // MARK: Internals

  private func routedTargets() -> Set<TargetAddress> {
    var targets = Set<TargetAddress>()
    for service in self.services.values { targets.formUnion(service.runtime.traffic.allTargets) }
    return targets
  }

  /// Probes targets new to `runtime` once, then installs `routes` and the probe results together.
  private func installProbed(_ routes: ServiceRoutes, runtime: ServiceRuntime, healthCheck: HealthCheckConfiguration)
    async
  {
    let known = runtime.traffic.allTargets
    let fresh = Set(routes.targetGroups.flatMap(\.targets)).subtracting(known)
    let results = await Self.probe(Array(fresh), healthCheck: healthCheck, group: self.group)
    runtime.withTraffic { traffic in
      traffic.install(routes)
      for (target, passed) in results { traffic.recordProbe(target, passed: passed) }
    }
  }

  private static func probe(
    _ targets: [TargetAddress], healthCheck: HealthCheckConfiguration, group: any EventLoopGroup
  )
    async -> [(TargetAddress, Bool)]
  {
    await withTaskGroup(of: (TargetAddress, Bool).self) { tasks in
      for target in targets {
        tasks.addTask {
          let failure = await HealthProber(group: group).probe(
            healthCheck.probe, host: target.host, port: target.port, timeout: healthCheck.timeout)
          return (target, failure == nil)
        }
      }
      var results: [(TargetAddress, Bool)] = []
      for await result in tasks { results.append(result) }
      return results
    }
  }

  private static func startHealthLoop(
    runtime: ServiceRuntime, healthCheck: HealthCheckConfiguration, group: any EventLoopGroup
  ) -> Task<Void, Never> {
    Task {
      while !Task.isCancelled {
        let targets = Array(runtime.traffic.allTargets)
        let results = await Self.probe(targets, healthCheck: healthCheck, group: group)
        guard !Task.isCancelled else { return }
        runtime.withTraffic { traffic in
          let current = traffic.allTargets
          for (target, passed) in results where current.contains(target) {
            traffic.recordProbe(target, passed: passed)
          }
        }
        try? await Task.sleep(for: healthCheck.interval)
      }
    }
  }

  private func bind(service: ServiceConfiguration, role: ListenerRole, port: Int, runtime: ServiceRuntime)
    async throws -> any Channel
  {
    let settings = ProxySettings(
      role: role, responseTimeout: TimeAmount(self.configuration.responseTimeout),
      forwardedProto: self.configuration.forwardedProto, maxRetries: self.configuration.maxRetries,
      responseBodyIdleTimeout: TimeAmount(self.configuration.responseBodyIdleTimeout),
      maxClientConnections: self.configuration.maxClientConnections,
      trustedProxies: self.configuration.trustedProxies)
    let timeoutSettings = ClientTimeoutSettings(
      headerRead: TimeAmount(self.configuration.headerReadTimeout),
      idle: TimeAmount(self.configuration.clientIdleTimeout), bodyIdle: TimeAmount(self.configuration.bodyIdleTimeout))
    let host = role == .production ? service.listenHost : service.testListenHost
    var decoderLimits = NIOHTTPDecoderLimitConfiguration()
    decoderLimits.maxHeaderFieldSize = self.configuration.maxRequestHeaderBytes
    decoderLimits.maxHeaderListSize = self.configuration.maxRequestHeaderBytes
    let limits = decoderLimits
    let pools = self.pools
    do {
      return try await ServerBootstrap(group: self.group)
        .serverChannelOption(.backlog, value: 1024)
        .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
        .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
        .childChannelInitializer { channel in
          channel.eventLoop.makeCompletedFuture {
            let pool = pools.pool(on: channel.eventLoop)
            let timeouts = ClientTimeoutHandler(settings: timeoutSettings)
            try channel.pipeline.syncOperations.addHandler(timeouts)
            try channel.pipeline.syncOperations.configureHTTPServerPipeline(
              withPipeliningAssistance: true, withErrorHandling: false,
              // Header bytes reaching the encoder were parsed by llhttp or validated in ServiceRoutes
              // and LoadBalancerConfiguration, so the per-message validator is skipped (hot path).
              withOutboundHeaderValidation: false, withEncoderConfiguration: ProxyServerHandler.encoderConfiguration,
              withDecoderLimitConfiguration: limits)
            try channel.pipeline.syncOperations.addHandler(
              ProxyServerHandler(runtime: runtime, settings: settings, pool: pool, timeouts: timeouts))
          }
        }
        .bind(host: host, port: port)
        .get()
    } catch {
      throw ListenerError(
        service: service.name, role: role, address: "\(host):\(port)", underlying: "\(error)")
    }
  }
}
