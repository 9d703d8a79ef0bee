// The per-service state shared by the actor and the event loops: one lock around the pure
// ServiceTraffic value plus the continuations of callers waiting for a revision to drain.

import NIOConcurrencyHelpers
import NIOCore

/// Shared, lock-protected state of one service.
///
/// Why a lock and not the actor: every request reads the routing table and updates metrics; doing that
/// through the actor would cost two hops per request. The critical sections are a few dictionary
/// operations, so the lock is held for well under a microsecond.
final class ServiceRuntime: Sendable {
  private struct Shared: Sendable {
    var traffic: ServiceTraffic
    var drainWaiters: [String: [(id: Int, continuation: CheckedContinuation<Void, Never>)]] = [:]
    var nextWaiterID = 0
  }

  let name: String
  private let shared: NIOLockedValueBox<Shared>
  /// Client connections accepted by this service's listeners, closed at shutdown.
  private let clients = NIOLockedValueBox<[ObjectIdentifier: any Channel]>([:])

  init(name: String, traffic: ServiceTraffic) {
    self.name = name
    self.shared = NIOLockedValueBox(Shared(traffic: traffic))
  }

  // MARK: Data path

  func begin(_ role: ListenerRole) -> RouteChoice? {
    self.shared.withLockedValue { $0.traffic.begin(role) }
  }

  func retry(_ role: ListenerRole, failed: RouteChoice) -> RouteChoice? {
    self.shared.withLockedValue { $0.traffic.retry(role, failed: failed) }
  }

  func recordConnectFailure(_ target: TargetAddress) {
    self.shared.withLockedValue { $0.traffic.recordConnectFailure(target) }
  }

  func recordBadRequest() {
    self.shared.withLockedValue { $0.traffic.recordBadRequest() }
  }

  func finish(_ role: ListenerRole, _ choice: RouteChoice, status: Int?, nanoseconds: Int64) {
    let waiters = self.shared.withLockedValue { shared -> [(id: Int, continuation: CheckedContinuation<Void, Never>)] in
      guard shared.traffic.finish(role, choice, status: status, nanoseconds: nanoseconds) else { return [] }
      return shared.drainWaiters.removeValue(forKey: choice.revision) ?? []
    }
    for waiter in waiters { waiter.continuation.resume() }
  }

  // MARK: Control path

  func withTraffic<Result>(_ body: (inout ServiceTraffic) -> Result) -> Result {
    self.shared.withLockedValue { body(&$0.traffic) }
  }

  var traffic: ServiceTraffic { self.shared.withLockedValue { $0.traffic } }

  /// Returns once `revision` has no request in flight, or when the calling task is cancelled.
  func waitUntilIdle(_ revision: String) async {
    let id = self.shared.withLockedValue { shared -> Int in
      shared.nextWaiterID += 1
      return shared.nextWaiterID
    }
    await withTaskCancellationHandler {
      await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
        let resumeNow = self.shared.withLockedValue { shared -> Bool in
          if shared.traffic.inFlight[revision] == nil || Task.isCancelled { return true }
          shared.drainWaiters[revision, default: []].append((id, continuation))
          return false
        }
        if resumeNow { continuation.resume() }
      }
    } onCancel: {
      let waiter = self.shared.withLockedValue { shared -> CheckedContinuation<Void, Never>? in
        guard let index = shared.drainWaiters[revision]?.firstIndex(where: { $0.id == id }) else { return nil }
        return shared.drainWaiters[revision]?.remove(at: index).continuation
      }
      waiter?.resume()
    }
  }

  // MARK: Client connections

  func clientOpened(_ channel: any Channel) {
    self.clients.withLockedValue { $0[ObjectIdentifier(channel)] = channel }
  }

  func clientClosed(_ channel: any Channel) {
    _ = self.clients.withLockedValue { $0.removeValue(forKey: ObjectIdentifier(channel)) }
  }

  func closeAllClients() async {
    let channels = self.clients.withLockedValue { Array($0.values) }
    for channel in channels { try? await channel.close() }
  }
}
