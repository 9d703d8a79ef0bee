// Issue 17's membership tests (item 5): real `teal node start` processes, changed with the CLI's
// `teal cluster replace-node | remove-node | add-node` on the harness's cluster directory (its
// layout is `teal cluster up`'s) and the API's /v1/cluster/members.

import Foundation
import NIOConcurrencyHelpers
import NIOHTTP1
import TealTestSupport
import Testing

#if canImport(Glibc)
  import Glibc
#endif

/// `GET /v1/cluster/members`.
struct MembershipViewBody: Decodable, Sendable {
  struct Member: Decodable, Sendable {
    var id: String
    var role: String
    var address: String
    var state: String
  }
  struct Change: Decodable, Sendable {
    var action: String
    var id: String
    var error: String?
  }
  var members: [Member]
  var change: Change?
  var last: Change?
  var removed: [String]

  var voters: Set<String> { Set(members.filter { $0.role == "voter" }.map(\.id)) }
}

/// Runs the `teal` CLI and waits for it without blocking a thread (Foundation's `Process` missed
/// the CLI's exit here once, leaving it a zombie and the test waiting forever): output to a file,
/// exit polled with `waitpid(WNOHANG)`, at most `timeout`.
func runTeal(_ arguments: [String], timeout: Duration = .seconds(90)) async throws -> (status: Int32, output: String) {
  let outputPath = temporaryDirectory("cli") + ".log"
  defer { try? FileManager.default.removeItem(atPath: outputPath) }
  let pid = try spawnInOwnGroup(Binaries.teal, arguments, logPath: outputPath)
  defer { SpawnedProcesses.untrack(group: pid) }
  let deadline = ContinuousClock.now + timeout
  while ContinuousClock.now < deadline {
    if let exit = reap(pid) {
      let output = (try? String(contentsOfFile: outputPath, encoding: .utf8)) ?? ""
      switch exit {
      case .exited(let code): return (code, output)
      case .signalled(let signal): return (128 + signal, output)
      }
    }
    try await Task.sleep(for: .milliseconds(50))
  }
  kill(pid, SIGKILL)
  _ = waitpid(pid, nil, 0)
  throw SpawnError(description: "teal \(arguments.joined(separator: " ")) did not exit within \(timeout)")
}

/// Writes that are acknowledged or not: `PUT /v1/services/{name}/scale` to the count it has, each with
/// its own Idempotency-Key, through the given nodes in turn. A write whose outcome is unknown is
/// retried with the same key until it is acknowledged. Each acknowledged write left an idempotency
/// record in the committed state; ``verifyNothingLost(through:)`` checks every one is still there.
final class AcknowledgedWriter: Sendable {
  private struct State {
    var acknowledged: [String] = []
    var acknowledgedAt: [ContinuousClock.Instant] = []
    var failures = 0
    var stop = false
  }
  private let state = NIOLockedValueBox(State())
  let service: String
  let desiredCount: Int

  init(service: String, desiredCount: Int) {
    self.service = service
    self.desiredCount = desiredCount
  }

  var acknowledged: [String] { state.withLockedValue { $0.acknowledged } }
  var failures: Int { state.withLockedValue { $0.failures } }

  func stop() { state.withLockedValue { $0.stop = true } }

  /// The longest time without an acknowledged write between `from` and the last acknowledgement.
  func longestGap(since from: ContinuousClock.Instant) -> Duration {
    let times = [from] + state.withLockedValue { $0.acknowledgedAt }.filter { $0 >= from }
    return zip(times, times.dropFirst()).map { $0.0.duration(to: $0.1) }.max() ?? .zero
  }

  func acknowledgements(since from: ContinuousClock.Instant) -> Int {
    state.withLockedValue { $0.acknowledgedAt }.filter { $0 >= from }.count
  }

  func run(through apis: [NodeAPI]) async {
    var turn = 0
    while !state.withLockedValue({ $0.stop }) && !Task.isCancelled {
      let key = "load-\(UUID().uuidString)"
      while !state.withLockedValue({ $0.stop }) && !Task.isCancelled {
        let api = apis[turn % apis.count]
        turn += 1
        let response = try? await api.send(
          .PUT, "/v1/services/\(service)/scale", body: #"{"desiredCount": \#(desiredCount)}"#, idempotencyKey: key)
        if response?.status == 200 {
          state.withLockedValue {
            $0.acknowledged.append(key)
            $0.acknowledgedAt.append(.now)
          }
          // About 30 writes a second: load, but few enough to verify each one afterwards.
          try? await Task.sleep(for: .milliseconds(30))
          break
        }
        state.withLockedValue { $0.failures += 1 }
        try? await Task.sleep(for: .milliseconds(50))
      }
    }
  }

  /// Every acknowledged key is in the committed idempotency table: the same key with another body
  /// (same meaning, other bytes) is refused with 422 `idempotency_mismatch`. A lost write would be
  /// applied instead (200).
  func verifyNothingLost(through api: NodeAPI) async throws {
    for key in acknowledged {
      let response = try await api.send(
        .PUT, "/v1/services/\(service)/scale", body: #"{"desiredCount":\#(desiredCount) }"#, idempotencyKey: key)
      #expect(response.status == 422, "acknowledged write \(key): \(response.status) \(response.text)")
      if response.status != 422 { return }
    }
  }
}

extension LocalCluster {
  func members(via id: String) async throws -> MembershipViewBody {
    try await api(id).get("/v1/cluster/members", as: MembershipViewBody.self)
  }

  /// Every node of `ids` at the same applied index with the same state hash.
  func waitForIdenticalState(_ ids: [String], timeout: Duration = .seconds(30)) async throws {
    try await waitUntil("identical state on \(ids)", timeout: timeout) {
      var digests: [StateDigestView] = []
      for id in ids { digests.append(try await api(id).get("/v1/cluster/state", as: StateDigestView.self)) }
      return Set(digests.map(\.appliedIndex)).count == 1 && Set(digests.map(\.stateHash)).count == 1
    }
  }
}

@Suite(
  "Membership changes (real processes)", .serialized,
  .enabled(if: Binaries.missing == nil, "\(Binaries.missing ?? "")"))
struct MembershipClusterTests {
  @Test(.timeLimit(.minutes(2)))
  func replacingAWipedNodeUnderLoadKeepsEveryAcknowledgedWriteAndEndsWithThreeVoters() async throws {
    try await withCluster { cluster in
      let ports = try ServicePorts(cluster)
      _ = try await cluster.api("n1").call(
        .POST, "/v1/services", body: DemoSpecs.yaml(name: "load", desiredCount: 1, ports: ports),
        contentType: "application/yaml", expect: 201, as: ServiceDetailView.self)
      _ = try await cluster.api("n1").call(
        .PUT, "/v1/services/load/scale", body: #"{"desiredCount": 0}"#, as: ServiceDetailView.self)

      // n3's disk dies: the process is gone and so is its data directory.
      try await cluster.kill9("n3", withTasks: true)
      try FileManager.default.removeItem(atPath: "\(cluster.node("n3").directory)/data")

      let writer = AcknowledgedWriter(service: "load", desiredCount: 0)
      let load = Task { await writer.run(through: [cluster.api("n1"), cluster.api("n2")]) }
      defer {
        writer.stop()
        load.cancel()
      }
      try await waitUntil("writes acknowledged before the replacement", timeout: .seconds(20)) {
        writer.acknowledged.count >= 5
      }

      let replaceStarted = ContinuousClock.now
      let replaced = try await runTeal(["cluster", "replace-node", "n3", "--dir", cluster.directory, "--wait", "60"])
      let replaceTook = replaceStarted.duration(to: .now)
      try cluster.adoptJoined("n3-g2", address: cluster.node("n3").address)
      #expect(replaced.status == 0, "replace-node: \(replaced.output)")
      try await waitUntil("writes acknowledged after the replacement", timeout: .seconds(20)) {
        writer.acknowledgements(since: replaceStarted.advanced(by: replaceTook)) >= 5
      }
      writer.stop()
      await load.value

      let final = ["n1", "n2", "n3-g2"]
      for id in final {
        let view = try await cluster.members(via: id)
        #expect(view.voters == Set(final), "\(id): \(view.members.map { "\($0.id)=\($0.role)" })")
        #expect(view.members.allSatisfy { $0.role == "voter" })
        #expect(view.removed == ["n3"])
        #expect(view.change == nil)
      }
      // The cluster kept serving writes through the replacement.
      #expect(writer.acknowledgements(since: replaceStarted) >= 10)
      #expect(writer.longestGap(since: replaceStarted) < .seconds(10), "\(writer.longestGap(since: replaceStarted))")
      try await cluster.waitForIdenticalState(final)
      try await writer.verifyNothingLost(through: cluster.api("n3-g2"))
      // The old identity is gone for good: its credentials left the cluster directory and its id is refused.
      #expect(!FileManager.default.fileExists(atPath: "\(cluster.directory)/certs/n3.pem"))
      let again = try await cluster.api("n1").send(
        .POST, "/v1/cluster/members", body: #"{"id": "n3", "address": "127.0.0.3"}"#)
      #expect(again.status == 409, "\(again.text)")
      print(
        "replace-node n3 -> n3-g2 under load: \(replaceTook), \(writer.acknowledged.count) writes acknowledged, "
          + "\(writer.failures) retried, longest gap \(writer.longestGap(since: replaceStarted))")
    }
  }

  @Test(.timeLimit(.minutes(2)))
  func fiveNodesRemoveTheLeaderAndAddANodeOneChangeAtATime() async throws {
    try await withCluster(nodes: 5) { cluster in
      let leader = try await cluster.waitForLeader()
      let others = cluster.followers(of: leader)

      // Removing the leader: it hands leadership away first; the others elect among themselves.
      let removed = try await runTeal(["cluster", "remove-node", leader, "--dir", cluster.directory, "--wait", "60"])
      #expect(removed.status == 0, "remove-node \(leader): \(removed.output)")
      let newLeader = try await cluster.waitForLeader(among: others, expectUp: 4)
      #expect(newLeader != leader)
      var view = try await cluster.members(via: others[0])
      #expect(view.voters == Set(others))
      #expect(view.removed == [leader])

      // One change at a time: while n6's add is in flight (n6 is not started, so it cannot catch
      // up), every other change is refused with 409, and removing n6 aborts the add.
      let address = cluster.node(leader).address
      let api = cluster.api(newLeader)
      let add = try await api.send(.POST, "/v1/cluster/members", body: #"{"id": "n6", "address": "\#(address)"}"#)
      #expect(add.status == 202, "\(add.text)")
      let second = try await api.send(.POST, "/v1/cluster/members", body: #"{"id": "n7", "address": "127.0.0.9"}"#)
      #expect(second.status == 409, "\(second.text)")
      #expect(second.text.contains("in flight"))
      let removal = try await api.send(.DELETE, "/v1/cluster/members/\(others[0])")
      #expect(removal.status == 409, "\(removal.text)")
      let abort = try await api.send(.DELETE, "/v1/cluster/members/n6")
      #expect(abort.status == 202, "\(abort.text)")
      try await waitUntil("the aborted add of n6 to finish") {
        let view = try await cluster.members(via: newLeader)
        return view.change == nil && view.removed.contains("n6")
      }

      // A new node on the removed leader's address, under a new id, becomes the fifth voter.
      let added = try await runTeal([
        "cluster", "add-node", "n8", "--address", address, "--dir", cluster.directory, "--wait", "60",
      ])
      try cluster.adoptJoined("n8", address: address)
      #expect(added.status == 0, "add-node n8: \(added.output)")
      let final = others + ["n8"]
      for id in final {
        view = try await cluster.members(via: id)
        #expect(view.voters == Set(final), "\(id): \(view.members.map { "\($0.id)=\($0.role)" })")
      }
      try await cluster.waitForIdenticalState(final)

    }
  }
}
