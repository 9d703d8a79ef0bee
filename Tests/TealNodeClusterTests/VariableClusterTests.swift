// Variables on three real `teal node start` processes: compare-and-set writers racing through all
// three nodes, and linearizable reads through every node while the leader is paused (SIGSTOP) and
// then killed (SIGKILL). Skipped while the built `teal` has no `node start`.

import Foundation
import NIOConcurrencyHelpers
import NIOHTTP1
import TealTestSupport
import TealTraffic
import Testing

/// `{"path", "value", "version"}` (`value` absent in a DELETE answer).
struct VariableBodyView: Decodable, Equatable {
  var path: String
  var value: String?
  var version: UInt64
}

/// A 409 `version_mismatch`: the error and the current version.
struct VersionMismatchView: Decodable, Equatable {
  var error: ErrorView.Detail
  var version: UInt64
}

/// What one write came back with: 200 and the new version, or 409 and the current one.
struct VariableWriteOutcome: Equatable {
  var won: Bool
  var version: UInt64
}

extension LocalCluster {
  /// `PUT /v1/variables/{path}[?cas=]` through `nodes` (the first that answers; on a 503 or no answer
  /// the next, with the same Idempotency-Key, until `timeout`).
  func putVariable(
    _ path: String, value: String, cas: UInt64?, through nodes: [String], timeout: Duration = .seconds(20)
  ) async throws -> VariableWriteOutcome {
    let key = UUID().uuidString
    let target = "/v1/variables/\(path)" + (cas.map { "?cas=\($0)" } ?? "")
    let body = #"{"value":"\#(value)"}"#
    let deadline = ContinuousClock.now + timeout
    var attempt = 0
    var last = "no attempt"
    while ContinuousClock.now < deadline {
      let node = nodes[attempt % nodes.count]
      attempt += 1
      let response: HTTPResponse
      do { response = try await api(node).send(.PUT, target, body: body, idempotencyKey: key) } catch {
        last = "\(error)"
        try await Task.sleep(for: .milliseconds(50))
        continue
      }
      switch response.status {
      case 200:
        let view = try decode(VariableBodyView.self, response, what: "PUT \(target) on \(node)")
        return VariableWriteOutcome(won: true, version: view.version)
      case 409:
        let view = try decode(VersionMismatchView.self, response, what: "PUT \(target) on \(node)")
        #expect(view.error.code == "version_mismatch", "\(view)")
        return VariableWriteOutcome(won: false, version: view.version)
      case 503: last = "\(node): 503 \(response.text)"
      default: throw APIError(description: "PUT \(target) on \(node): \(response.status) \(response.text)")
      }
      try await Task.sleep(for: .milliseconds(50))
    }
    throw APIError(description: "PUT \(target) got no answer within \(timeout); last: \(last)")
  }
}

@Suite(
  "Variables on a cluster of real nodes", .serialized,
  .enabled(if: Binaries.missing == nil, "\(Binaries.missing ?? "")"))
struct VariableClusterTests {
  @Test(.timeLimit(.minutes(2)))
  func casWritersThroughAllNodesHaveOneWinnerPerVersionAndReadsNeverGoBackWhileTheLeaderChanges() async throws {
    try await withCluster { cluster in
      let ids = cluster.ids
      // MARK: Rounds: six writers (two per node) race with the same expected version.
      let writers = (0..<6).map { ids[$0 % ids.count] }
      var expected: UInt64 = 0
      var lastValue = ""
      for round in 0..<4 {
        let cas = expected
        let outcomes = try await withThrowingTaskGroup(of: (Int, VariableWriteOutcome).self) { group in
          for (index, node) in writers.enumerated() {
            group.addTask {
              let outcome = try await cluster.putVariable(
                "cas/counter", value: "r\(round)-w\(index)", cas: cas,
                through: [node] + ids.filter { $0 != node })
              return (index, outcome)
            }
          }
          var all: [(Int, VariableWriteOutcome)] = []
          for try await outcome in group { all.append(outcome) }
          return all
        }
        let winners = outcomes.filter(\.1.won)
        #expect(winners.count == 1, "round \(round) (cas \(expected)): \(outcomes)")
        guard let winner = winners.first else { return }
        #expect(winner.1.version > expected)
        // Every loser was told the winner's version.
        for (index, outcome) in outcomes where !outcome.won {
          #expect(outcome.version == winner.1.version, "round \(round): writer \(index) saw \(outcome.version)")
        }
        expected = winner.1.version
        lastValue = "r\(round)-w\(winner.0)"
      }
      for id in ids {
        let view = try await cluster.api(id).get("/v1/variables/cas/counter", as: VariableBodyView.self)
        #expect(view == VariableBodyView(path: "cas/counter", value: lastValue, version: expected), "on \(id)")
      }

      // MARK: Free-running: each writer reads the version, then writes with it; the wins form one chain.
      let wins = try await withThrowingTaskGroup(of: [(cas: UInt64, version: UInt64)].self) { group in
        for (index, node) in writers.enumerated() {
          group.addTask {
            var won: [(cas: UInt64, version: UInt64)] = []
            for attempt in 0..<4 {
              let current = try await cluster.api(node).get("/v1/variables/cas/counter", as: VariableBodyView.self)
              let outcome = try await cluster.putVariable(
                "cas/counter", value: "free-w\(index)-\(attempt)", cas: current.version, through: [node])
              if outcome.won { won.append((current.version, outcome.version)) }
            }
            return won
          }
        }
        var all: [(cas: UInt64, version: UInt64)] = []
        for try await won in group { all += won }
        return all
      }.sorted { $0.version < $1.version }
      #expect(!wins.isEmpty)
      #expect(Set(wins.map(\.cas)).count == wins.count, "two writers won over one version: \(wins)")
      let start = expected
      var chain = start
      for win in wins {
        #expect(win.cas == chain, "a win over \(win.cas) does not follow version \(chain): \(wins)")
        chain = win.version
      }

      // MARK: Linearizable reads while the leader is paused, then killed.
      let leader = try await cluster.waitForLeader()
      let acknowledged = NIOLockedValueBox<UInt64>(0)
      let avoided = NIOLockedValueBox<Set<String>>([])
      let violations = NIOLockedValueBox<[String]>([])
      let reads = NIOLockedValueBox<[String: Int]>([:])
      let stop = NIOLockedValueBox(false)
      func waitForAcknowledged(_ count: UInt64, after: UInt64, _ what: String) async throws {
        try await waitUntil("\(count) writes acknowledged \(what)", timeout: .seconds(20)) {
          acknowledged.withLockedValue { $0 } >= after + count
        }
      }
      func newLeader(among nodes: [String], excluding old: String) async throws -> String {
        var found = ""
        try await waitUntil("a leader other than \(old) among \(nodes)", timeout: .seconds(20)) {
          var seen: Set<String> = []
          for id in nodes { seen.insert(try await cluster.api(id).cluster().leader ?? "") }
          guard seen.count == 1, let only = seen.first, !only.isEmpty, only != old else { return false }
          found = only
          return true
        }
        return found
      }

      try await withThrowingTaskGroup(of: Void.self) { group in
        group.addTask {
          var number = 0
          while !stop.withLockedValue({ $0 }) {
            number += 1
            let usable = ids.filter { !avoided.withLockedValue({ $0 }).contains($0) }
            let nodes = [usable[number % usable.count]] + usable.filter { $0 != usable[number % usable.count] }
            let outcome = try await cluster.putVariable("lin/x", value: "\(number)", cas: nil, through: nodes)
            acknowledged.withLockedValue { $0 = max($0, outcome.version) }
          }
        }
        for id in ids {
          group.addTask {
            while !stop.withLockedValue({ $0 }) {
              let floor = acknowledged.withLockedValue { $0 }
              guard let response = try? await cluster.api(id).send(.GET, "/v1/variables/lin/x") else {
                try await Task.sleep(for: .milliseconds(20))
                continue
              }
              switch response.status {
              case 200:
                let view = try decode(VariableBodyView.self, response, what: "GET lin/x on \(id)")
                if view.version < floor {
                  violations.withLockedValue {
                    $0.append("\(id) read version \(view.version) after \(floor) was acknowledged")
                  }
                }
                reads.withLockedValue { $0[id, default: 0] += 1 }
              case 404 where floor > 0:
                violations.withLockedValue {
                  $0.append("\(id) found no variable after version \(floor) was acknowledged")
                }
              default:
                try await Task.sleep(for: .milliseconds(20))
              }
            }
          }
        }

        try await waitForAcknowledged(10, after: 0, "before the pause")
        // Pause the leader past the election timeout: the other two elect a new one.
        avoided.withLockedValue { $0 = [leader] }
        try cluster.sigstop(leader)
        let others = ids.filter { $0 != leader }
        let second = try await newLeader(among: others, excluding: leader)
        try await waitForAcknowledged(10, after: acknowledged.withLockedValue { $0 }, "under \(second)")
        // The paused leader resumes, still believing it leads: its reads must not go back.
        let readsBefore = reads.withLockedValue { $0[leader, default: 0] }
        try cluster.sigcont(leader)
        avoided.withLockedValue { $0 = [] }
        try await waitUntil("reads through the resumed \(leader)", timeout: .seconds(20)) {
          reads.withLockedValue { $0[leader, default: 0] } >= readsBefore + 5
        }
        // Then kill the new leader: the resumed node and the third elect another.
        avoided.withLockedValue { $0 = [second] }
        try await cluster.kill9(second)
        let survivors = ids.filter { $0 != second }
        let third = try await newLeader(among: survivors, excluding: second)
        try await waitForAcknowledged(10, after: acknowledged.withLockedValue { $0 }, "under \(third)")
        stop.withLockedValue { $0 = true }
        try await group.waitForAll()
      }
      #expect(violations.withLockedValue { $0 }.isEmpty, "\(violations.withLockedValue { $0 })")
      let counted = reads.withLockedValue { $0 }
      #expect(ids.allSatisfy { counted[$0, default: 0] > 0 }, "reads per node: \(counted)")
      let last = acknowledged.withLockedValue { $0 }
      for id in ids where cluster.isRunning(id) {
        let view = try await cluster.api(id).get("/v1/variables/lin/x", as: VariableBodyView.self)
        #expect(view.version >= last, "\(id) ends at \(view.version), below \(last)")
      }
    }
  }
}
