// What the traffic generator records: every request, and exact counts per target.

import NIOConcurrencyHelpers

#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

/// A listener the generator sends requests to.
public struct TrafficTarget: Sendable, Hashable, Comparable, CustomStringConvertible {
  public var host: String
  public var port: Int

  public init(host: String, port: Int) {
    self.host = host
    self.port = port
  }

  public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }

  public static func < (lhs: TrafficTarget, rhs: TrafficTarget) -> Bool {
    (lhs.host, lhs.port) < (rhs.host, rhs.port)
  }
}

/// How a request ended: a complete response (any status), or a failure.
public enum TrafficOutcome: Sendable, Hashable {
  case status(Int)
  case failure(TrafficFailure)

  /// A complete response with a 2xx status.
  public var isOK: Bool {
    if case .status(let code) = self { return (200..<300).contains(code) }
    return false
  }
}

/// One request the generator made.
public struct TrafficRecord: Sendable, Hashable {
  /// The order in which requests finished, from 0, across all clients.
  public var sequence: Int
  public var target: TrafficTarget
  /// The client (0..<clientsPerTarget) of this target that sent it.
  public var client: Int
  /// The connection it went over: unique per generator; a client that reconnects gets a new one.
  /// Nil when connecting failed.
  public var connection: Int?
  public var method: String
  /// When the request started (before connecting, if the client had to connect first).
  public var startedAt: ContinuousClock.Instant
  /// The same moment on the wall clock, in nanoseconds since 1970 (UTC), to compare with logs.
  public var startedAtWallNanoseconds: Int64
  public var outcome: TrafficOutcome
  /// From the start until the response was complete, or the failure was known.
  public var latency: Duration
  /// Response headers `x-teal-revision`, `x-teal-generation`, `x-teal-node` (nil when absent).
  public var revision: String?
  public var generation: Int?
  public var node: String?
}

/// Exact counts for one target. Counts cover every finished request, also those whose record the
/// bounded record list dropped.
public struct TrafficSummary: Sendable, Hashable {
  /// Requests that finished, whatever the outcome (`ok + errorResponses + failed`).
  public var sent = 0
  /// Complete responses with a 2xx status.
  public var ok = 0
  /// Complete responses with any other status.
  public var errorResponses = 0
  /// Responses by status code.
  public var statuses: [Int: Int] = [:]
  /// Requests without a complete response, by kind.
  public var failures: [TrafficFailure: Int] = [:]
  /// Complete responses by their `x-teal-revision` header ("-" when absent).
  public var servedByRevision: [String: Int] = [:]
  /// Complete responses by their `x-teal-node` header ("-" when absent).
  public var servedByNode: [String: Int] = [:]
  /// Requests by method.
  public var byMethod: [String: Int] = [:]
  /// Connections opened.
  public var connections = 0

  public init() {}

  /// Requests without a complete response.
  public var failed: Int { failures.values.reduce(0, +) }
  /// Requests that did not get a 2xx response.
  public var notOK: Int { sent - ok }

  mutating func add(_ record: TrafficRecord) {
    sent += 1
    byMethod[record.method, default: 0] += 1
    switch record.outcome {
    case .status(let code):
      if (200..<300).contains(code) { ok += 1 } else { errorResponses += 1 }
      statuses[code, default: 0] += 1
      servedByRevision[record.revision ?? "-", default: 0] += 1
      servedByNode[record.node ?? "-", default: 0] += 1
    case .failure(let kind):
      failures[kind, default: 0] += 1
    }
  }

  /// One line: `sent 120 ok 118 failed 2 (connectRefused 2) by revision web:1=118`.
  public var line: String {
    var text = "sent \(sent) ok \(ok)"
    if errorResponses > 0 {
      text += " error responses \(errorResponses) ("
      text +=
        statuses.filter { !(200..<300).contains($0.key) }.sorted { $0.key < $1.key }.map { "\($0.key): \($0.value)" }
        .joined(separator: ", ") + ")"
    }
    text += " failed \(failed)"
    if failed > 0 {
      text +=
        " ("
        + failures.sorted { $0.key.rawValue < $1.key.rawValue }.map { "\($0.key) \($0.value)" }
        .joined(separator: ", ") + ")"
    }
    if !servedByRevision.isEmpty {
      text +=
        " by revision "
        + servedByRevision.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }
        .joined(separator: " ")
    }
    return text
  }
}

/// The records kept and the counts, at one moment.
public struct TrafficSnapshot: Sendable {
  /// The most recent ``TrafficConfiguration/maximumRecords`` records, in `sequence` order.
  public var records: [TrafficRecord]
  /// Records dropped from the front of the list to keep it within its bound.
  public var droppedRecords: Int
  /// Exact counts per target (every configured target is present).
  public var summaries: [TrafficTarget: TrafficSummary]
  /// Requests sent and not finished yet.
  public var inFlight: Int

  /// All targets' counts added up.
  public var total: TrafficSummary {
    var sum = TrafficSummary()
    for summary in summaries.values {
      sum.sent += summary.sent
      sum.ok += summary.ok
      sum.errorResponses += summary.errorResponses
      sum.connections += summary.connections
      sum.statuses.merge(summary.statuses, uniquingKeysWith: +)
      sum.failures.merge(summary.failures, uniquingKeysWith: +)
      sum.servedByRevision.merge(summary.servedByRevision, uniquingKeysWith: +)
      sum.servedByNode.merge(summary.servedByNode, uniquingKeysWith: +)
      sum.byMethod.merge(summary.byMethod, uniquingKeysWith: +)
    }
    return sum
  }

  /// One line per target, for a test failure message or a tool's output.
  public var report: String {
    summaries.sorted { $0.key < $1.key }.map { "\($0.key): \($0.value.line)" }.joined(separator: "\n")
  }
}

/// The shared, locked store of records and counts. The record list is a ring of at most
/// `capacity` entries: the oldest is dropped first.
final class TrafficRecorder: Sendable {
  private struct State {
    var ring: [TrafficRecord] = []
    var head = 0
    var dropped = 0
    var nextSequence = 0
    var nextConnection = 0
    var inFlight = 0
    var summaries: [TrafficTarget: TrafficSummary]
  }

  private let capacity: Int
  private let state: NIOLockedValueBox<State>

  init(capacity: Int, targets: [TrafficTarget]) {
    precondition(capacity >= 1, "the record list holds at least one record")
    self.capacity = capacity
    var summaries: [TrafficTarget: TrafficSummary] = [:]
    for target in targets { summaries[target] = TrafficSummary() }
    state = NIOLockedValueBox(State(summaries: summaries))
  }

  func connectionOpened(_ target: TrafficTarget) -> Int {
    state.withLockedValue { state in
      state.summaries[target, default: TrafficSummary()].connections += 1
      state.nextConnection += 1
      return state.nextConnection - 1
    }
  }

  func requestStarted() { state.withLockedValue { $0.inFlight += 1 } }

  /// Stores a finished request; `sequence` is assigned here.
  func requestFinished(_ make: (Int) -> TrafficRecord) {
    state.withLockedValue {
      $0.inFlight -= 1
      let record = make($0.nextSequence)
      $0.nextSequence += 1
      $0.summaries[record.target, default: TrafficSummary()].add(record)
      if $0.ring.count < capacity {
        $0.ring.append(record)
      } else {
        $0.ring[$0.head] = record
        $0.head = ($0.head + 1) % capacity
        $0.dropped += 1
      }
    }
  }

  func snapshot() -> TrafficSnapshot {
    state.withLockedValue {
      let ordered = Array($0.ring[$0.head...] + $0.ring[..<$0.head])
      return TrafficSnapshot(
        records: ordered, droppedRecords: $0.dropped, summaries: $0.summaries, inFlight: $0.inFlight)
    }
  }
}

/// Nanoseconds since 1970 on the wall clock.
func wallClockNanoseconds() -> Int64 {
  var now = timespec()
  clock_gettime(CLOCK_REALTIME, &now)
  return Int64(now.tv_sec) * 1_000_000_000 + Int64(now.tv_nsec)
}
