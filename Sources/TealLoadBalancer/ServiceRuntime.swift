// The per-service state shared by the actor and the event loops: one lock around the pure
// ServiceTraffic value plus the continuations of callers waiting for a revision to drain.

import CoreMetrics
import NIOConcurrencyHelpers
import NIOCore

/// Shared, lock-protected state of one service.
///
/// Why a lock and not the actor: every request reads the routing table and updates metrics; doing that
/// through the actor would cost two hops per request. The critical sections are a few dictionary
/// operations, so the lock is held for well under a microsecond.
final class ServiceRuntime: Sendable {
  /// What a drain waiter waits for: a revision or a target without requests in flight.
  enum IdleKey: Hashable, Sendable {
    case revision(String)
    case target(TargetAddress)
  }

  private struct Shared: Sendable {
    var traffic: ServiceTraffic
    /// The Prometheus series, updated at the same events as `traffic.metrics`.
    var series: ServiceSeries
    var drainWaiters: [IdleKey: [(id: Int, continuation: CheckedContinuation<Void, Never>)]] = [:]
    var nextWaiterID = 0

    /// Removes and returns the waiters of what just became idle.
    mutating func waiters(for idle: BecameIdle) -> [CheckedContinuation<Void, Never>] {
      var woken: [CheckedContinuation<Void, Never>] = []
      if let revision = idle.revision, let list = self.drainWaiters.removeValue(forKey: .revision(revision)) {
        woken += list.map(\.continuation)
      }
      if let target = idle.target, let list = self.drainWaiters.removeValue(forKey: .target(target)) {
        woken += list.map(\.continuation)
      }
      return woken
    }
  }

  let name: String
  private let shared: NIOLockedValueBox<Shared>
  /// Client connections accepted by this service's listeners, and the graceful stop's state.
  private let clients = NIOLockedValueBox(Clients())

  private struct Clients: Sendable {
    var channels: [ObjectIdentifier: any Channel] = [:]
    /// Set once a graceful stop began: every connection, even one accepted just now, closes at its
    /// next request boundary.
    var stopping = false
    /// Callers of ``waitUntilNoClients()``, resumed when the last connection closed.
    var waiters: [(id: Int, continuation: CheckedContinuation<Void, Never>)] = []
    var nextWaiterID = 0
  }

  init(name: String, traffic: ServiceTraffic, metricsFactory: any MetricsFactory = NOOPMetricsHandler.instance) {
    self.name = name
    self.shared = NIOLockedValueBox(
      Shared(traffic: traffic, series: ServiceSeries(service: name, factory: metricsFactory)))
  }

  // MARK: Data path

  func begin(_ role: ListenerRole) -> RouteChoice? {
    self.shared.withLockedValue { shared in
      let choice = shared.traffic.begin(role)
      if let choice {
        shared.series.group(role, choice.revision).requests.increment()
      } else {
        shared.series.recordNoHealthyTarget(role)
      }
      return choice
    }
  }

  /// Routes a request again after a failure on `failed`; wakes drain waiters of what it left idle.
  func retry(_ role: ListenerRole, failed: RouteChoice, excluding: Set<TargetAddress>) -> RouteChoice? {
    let (choice, waiters) = self.shared.withLockedValue { shared in
      let (choice, idle) = shared.traffic.retry(role, failed: failed, excluding: excluding)
      let failedSeries = shared.series.group(role, failed.revision)
      failedSeries.connectFailures.increment()
      if let choice {
        failedSeries.retries.increment()
        if choice.revision != failed.revision { shared.series.group(role, choice.revision).requests.increment() }
      }
      return (choice, shared.waiters(for: idle))
    }
    for waiter in waiters { waiter.resume() }
    return choice
  }

  func recordConnectFailure(_ choice: RouteChoice, _ role: ListenerRole) {
    self.shared.withLockedValue { shared in
      shared.traffic.recordConnectFailure(choice.target, role, revision: choice.revision)
      shared.series.group(role, choice.revision).connectFailures.increment()
    }
  }

  func recordStalledResponse(_ choice: RouteChoice, _ role: ListenerRole) {
    self.shared.withLockedValue { shared in
      shared.traffic.recordStalledResponse(role, revision: choice.revision)
      shared.series.group(role, choice.revision).stalledResponses.increment()
    }
  }

  func recordBadRequest() {
    self.shared.withLockedValue { shared in
      shared.traffic.recordBadRequest()
      shared.series.recordBadRequest()
    }
  }

  func finish(_ role: ListenerRole, _ choice: RouteChoice, status: Int?, byBalancer: Bool, nanoseconds: Int64) {
    let waiters = self.shared.withLockedValue { shared -> [CheckedContinuation<Void, Never>] in
      let idle = shared.traffic.finish(
        role, choice, status: status, byBalancer: byBalancer, nanoseconds: nanoseconds)
      shared.series.group(role, choice.revision).recordFinish(
        status: status, byBalancer: byBalancer, nanoseconds: nanoseconds)
      return shared.waiters(for: idle)
    }
    for waiter in waiters { waiter.resume() }
  }

  // MARK: Control path

  func withTraffic<Result>(_ body: (inout ServiceTraffic) -> Result) -> Result {
    self.shared.withLockedValue { body(&$0.traffic) }
  }

  var traffic: ServiceTraffic { self.shared.withLockedValue { $0.traffic } }

  /// Sets the gauges of the service's series and drops the series of what left the routes.
  func refreshSeries() {
    self.shared.withLockedValue { shared in shared.series.refresh(from: shared.traffic) }
  }

  /// Destroys every series of the service (it was removed from the balancer).
  func destroySeries() {
    self.shared.withLockedValue { $0.series.destroyAll() }
  }

  /// The generation of the routes in force.
  var appliedGeneration: UInt64 { self.shared.withLockedValue { $0.traffic.router.routes.generation } }

  /// Returns once `key` (a revision or a target) has no request in flight, or when the calling task
  /// is cancelled.
  func waitUntilIdle(_ key: IdleKey) async {
    let id = self.shared.withLockedValue { shared -> Int in
      shared.nextWaiterID += 1
      return shared.nextWaiterID
    }
    await withTaskCancellationHandler {
      await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
        let resumeNow = self.shared.withLockedValue { shared -> Bool in
          if Self.isIdle(key, shared.traffic) || Task.isCancelled { return true }
          shared.drainWaiters[key, default: []].append((id, continuation))
          return false
        }
        if resumeNow { continuation.resume() }
      }
    } onCancel: {
      let waiter = self.shared.withLockedValue { shared -> CheckedContinuation<Void, Never>? in
        guard let index = shared.drainWaiters[key]?.firstIndex(where: { $0.id == id }) else { return nil }
        return shared.drainWaiters[key]?.remove(at: index).continuation
      }
      waiter?.resume()
    }
  }

  /// Requests of `key` in flight now.
  func inFlight(_ key: IdleKey) -> Int {
    self.shared.withLockedValue { shared in
      switch key {
      case .revision(let revision): return shared.traffic.inFlight[revision] ?? 0
      case .target(let target): return shared.traffic.inFlightByTarget[target] ?? 0
      }
    }
  }

  private static func isIdle(_ key: IdleKey, _ traffic: ServiceTraffic) -> Bool {
    switch key {
    case .revision(let revision): return traffic.inFlight[revision] == nil
    case .target(let target): return traffic.inFlightByTarget[target] == nil
    }
  }

  // MARK: Client connections

  /// Registers a client connection; false (nothing registered) when `limit` are already open.
  func clientOpened(_ channel: any Channel, limit: Int) -> Bool {
    self.clients.withLockedValue { clients in
      guard clients.channels.count < limit else { return false }
      clients.channels[ObjectIdentifier(channel)] = channel
      return true
    }
  }

  func clientClosed(_ channel: any Channel) {
    let waiters = self.clients.withLockedValue { clients -> [CheckedContinuation<Void, Never>] in
      clients.channels.removeValue(forKey: ObjectIdentifier(channel))
      guard clients.channels.isEmpty else { return [] }
      defer { clients.waiters = [] }
      return clients.waiters.map(\.continuation)
    }
    for waiter in waiters { waiter.resume() }
  }

  /// Whether a graceful stop began (a connection opened now must close at its first request boundary).
  var isStopping: Bool { self.clients.withLockedValue { $0.stopping } }

  /// Starts the graceful stop: asks every open connection to close at its next request boundary
  /// (see ``ProxyServerHandler``), and every connection opened from now on too.
  func beginGracefulStop() {
    let channels = self.clients.withLockedValue { clients -> [any Channel] in
      clients.stopping = true
      return Array(clients.channels.values)
    }
    for channel in channels { channel.pipeline.fireUserInboundEventTriggered(GracefulCloseEvent()) }
  }

  /// Returns once no client connection is open, or when the calling task is cancelled.
  func waitUntilNoClients() async {
    let id = self.clients.withLockedValue { clients -> Int in
      clients.nextWaiterID += 1
      return clients.nextWaiterID
    }
    await withTaskCancellationHandler {
      await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
        let resumeNow = self.clients.withLockedValue { clients -> Bool in
          if clients.channels.isEmpty || Task.isCancelled { return true }
          clients.waiters.append((id, continuation))
          return false
        }
        if resumeNow { continuation.resume() }
      }
    } onCancel: {
      let waiter = self.clients.withLockedValue { clients -> CheckedContinuation<Void, Never>? in
        guard let index = clients.waiters.firstIndex(where: { $0.id == id }) else { return nil }
        return clients.waiters.remove(at: index).continuation
      }
      waiter?.resume()
    }
  }

  /// Client connections open now.
  var openClients: Int { self.clients.withLockedValue { $0.channels.count } }

  /// Closes every client connection at once (the end of a graceful stop's grace period).
  func closeAllClients() async {
    let channels = self.clients.withLockedValue { Array($0.channels.values) }
    for channel in channels { try? await channel.close() }
  }
}

/// Sent down a client connection's pipeline when its service stops gracefully: the connection
/// closes at its next request boundary.
struct GracefulCloseEvent: Sendable {}
