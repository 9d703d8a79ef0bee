import Foundation
import TealDeploy
import TealWire
import Testing

@testable import TealCluster

@Suite struct SnapshotTests {
  /// A state with several services, nodes, tasks in every desired state, events and idempotency records.
  static func busyState() -> ClusterState {
    var log = Log()
    log.announce(4)
    for (offset, name) in ["web", "api", "db", "cache", "queue"].enumerated() {
      log.ok(
        .createService(
          makeSpec(
            name, desiredCount: 4, productionPort: 8000 + offset * 2, testPort: 8001 + offset * 2,
            env: ["A": "1", "B": "2", "C": "3", "ZED": "\(offset)"])), key: "create-\(name)", digest: name)
    }
    log.executePlan()
    for task in log.state.tasks.keys.sorted() { log.runHealthy(task) }
    log.allNodesApplyRoutes()
    log.ok(.scaleService(service: "web", desiredCount: 1))
    log.executePlan()
    log.ok(
      .registerRevision(service: "api", spec: makeSpec("api", productionPort: 8002, testPort: 8003, command: "/v2")))
    return log.state
  }

  /// The same dictionary rebuilt in reverse key order with a much larger capacity: another iteration order.
  static func shuffled<Value>(_ dictionary: [String: Value]) -> [String: Value] {
    var copy: [String: Value] = [:]
    copy.reserveCapacity(4096)
    for key in dictionary.keys.sorted(by: >) { copy[key] = dictionary[key] }
    return copy
  }

  @Test func equalStatesWithDifferentDictionaryOrdersWriteIdenticalBytes() {
    let state = Self.busyState()
    var other = state
    other.services = Self.shuffled(state.services).mapValues { service in
      var service = service
      service.revisions = service.revisions.map { revision in
        var spec = revision.revision.spec
        spec.task.env = Self.shuffled(spec.task.env)
        return ClusterRevision(revision: Revision(id: revision.id, spec: spec), createdAt: revision.createdAt)
      }
      return service
    }
    other.tasks = Self.shuffled(state.tasks)
    other.nodes = Self.shuffled(state.nodes).mapValues { node in
      var node = node
      node.routesApplied = Self.shuffled(node.routesApplied)
      return node
    }
    #expect(other == state)
    #expect(Array(other.tasks.keys) != Array(state.tasks.keys), "the test needs two different iteration orders")
    #expect(other.snapshot() == state.snapshot())
    #expect(other.stateHash == state.stateHash)
  }

  @Test func snapshotRoundTrips() throws {
    let state = Self.busyState()
    let bytes = state.snapshot()
    let restored = try ClusterState(snapshot: bytes)
    #expect(restored == state)
    #expect(restored.snapshot() == bytes)
    #expect(restored.idempotency.record(for: "create-web") == state.idempotency.record(for: "create-web"))
    // The restored state goes on exactly like the original.
    var original = Log(state: state)
    var copy = Log(state: restored)
    original.index = state.appliedIndex
    copy.index = restored.appliedIndex
    original.ok(.nodeDown(node: NodeID("n2"), incarnation: 3))
    copy.ok(.nodeDown(node: NodeID("n2"), incarnation: 3))
    original.executePlan()
    copy.executePlan()
    #expect(original.state.stateHash == copy.state.stateHash)
  }

  @Test func snapshotOfAnEmptyStateIsStable() throws {
    #expect(ClusterState().snapshot() == ClusterState().snapshot())
    #expect(try ClusterState(snapshot: ClusterState().snapshot()) == ClusterState())
  }

  @Test func badSnapshotsAreRefusedWithAClearError() {
    let good = ClusterState().snapshot()
    #expect(throws: ClusterSnapshotError.notASnapshot) { try ClusterState(snapshot: [UInt8]()) }
    #expect(throws: ClusterSnapshotError.notASnapshot) { try ClusterState(snapshot: Array("hello".utf8)) }
    #expect(throws: ClusterSnapshotError.unsupportedVersion(9)) {
      try ClusterState(snapshot: Array(good[0..<3]) + [9] + Array(good[4...]))
    }
    #expect(throws: ClusterSnapshotError.self) { try ClusterState(snapshot: Array(good.dropLast(3))) }
    do {
      _ = try ClusterState(snapshot: Array(good.dropLast(3)))
    } catch {
      #expect(error.description.hasPrefix("malformed cluster state snapshot: "))
    }
  }

  @Test func corruptedSnapshotsAreRefusedOrRestoreAUsableStateNeverACrash() {
    var log = Log()
    log.announce(2)
    log.ok(.createService(makeSpec(desiredCount: 2)), key: "k", digest: "d")
    log.executePlan()
    log.runHealthy("web.1.1")
    let good = log.state.snapshot()
    var random = SplitMix64(seed: 7)
    var restored = 0
    for _ in 0..<300 {
      var bytes = good
      for _ in 0...random.below(2) { bytes[4 + random.below(bytes.count - 4)] ^= UInt8(1 + random.below(255)) }
      guard var state = try? ClusterState(snapshot: bytes) else { continue }
      restored += 1
      // A state that passed the checks keeps working: plan, apply, snapshot again.
      var next = Log(state: state)
      next.index = state.appliedIndex
      for command in Placement.plan(state, now: state.logTime) { next.apply(command) }
      next.apply(.nodeDown(node: NodeID("n1"), incarnation: 9))
      state = next.state
      _ = state.snapshot()
    }
    #expect(restored < 300)  // most flips break the JSON or an invariant
  }

  @Test func snapshotBreakingAnInvariantIsRefused() throws {
    var log = Log()
    log.announce(1)
    log.ok(.createService(makeSpec()))
    _ = log.place("web", on: "n1")
    var broken = log.state
    broken.nodes["n1"]?.liveness = .down  // a task on a node that is down
    do {
      _ = try ClusterState(snapshot: broken.snapshot())
      Issue.record("a snapshot with a task on a down node was accepted")
    } catch {
      #expect(error == .malformed(reason: "task web.1.1: node n1 is not up"))
    }
  }
}

@Suite struct EntryEncodingTests {
  static let stamp = CommandStamp(now: LogTime(millisecondsSinceEpoch: 1234), node: NodeID("n2"), term: 7)

  @Test func everyCommandRoundTrips() throws {
    let commands: [ClusterCommand] = [
      .createService(makeSpec()),
      .registerRevision(service: "web", spec: makeSpec(command: "/v2")),
      .scaleService(service: "web", desiredCount: 2),
      .deleteService(service: "web"),
      .announceNode(nodeInfo("n1", 1)),
      .taskReports(
        node: NodeID("n1"),
        reports: [
          TaskReport(taskID: "web.1.1", state: .exited(code: -9), healthy: false),
          TaskReport(taskID: "web.1.2", state: .running, healthy: true, address: "127.0.0.1", port: 20_000),
        ]),
      .routesApplied(node: NodeID("n1"), generations: ["web": 4, "api": 9]),
      .taskStopped(node: NodeID("n1"), taskID: "web.1.1"),
      .drainNode(node: NodeID("n3")),
      .placeTask(service: "web", revision: 1, node: NodeID("n2")),
      .retireTask(taskID: "web.1.2", reason: "scaled down"),
      .nodeDown(node: NodeID("n2"), incarnation: 3),
      .nodeUp(node: NodeID("n2"), incarnation: 4),
      .submitDeployment(service: "web", spec: makeSpec(command: "/v2"), supersede: true),
      .deploymentAction(service: "web", deploymentID: "web-7", action: .continue),
      .hookAnswered(
        service: "web", deploymentID: "web-7",
        result: HookResult(executionId: "web-7:POST_SCALE_UP:0:0:FORWARD", attempt: 2, outcome: .inProgress)),
      .deploymentWakeUp(service: "web", deploymentID: "web-7"),
      .deploymentMetrics(
        service: "web", deploymentID: "web-7",
        sample: MetricSample(
          at: Instant(millisecondsSinceEpoch: 5), requestCount: 10, http5xxCount: 1, latencyP99Milliseconds: 2.5)),
      .putVariable(path: "hooks/web/token", value: "a \"quoted\" é\n", cas: 0),
      .putVariable(path: "a", value: "", cas: nil),
      .deleteVariable(path: "a", cas: 12),
      .deleteVariable(path: "a", cas: nil),
    ]
    for command in commands {
      let entry = ClusterEntry(
        stamp: Self.stamp, idempotency: IdempotencyRecordKey(key: "key-1", bodyDigest: "abc"), command: command)
      let bytes = try entry.encodeChecked()
      #expect(Array(bytes.prefix(4)) == [0x54, 0x43, 0x45, 1])
      #expect(try ClusterEntry(decoding: bytes) == entry)
      #expect(entry.encode() == bytes, "encoding is stable")
    }
  }

  @Test func resultsRoundTrip() throws {
    let results: [ClusterResult] = [
      .ok(.serviceCreated(service: "web", revision: RevisionID(service: "web", number: 1))),
      .ok(.reportsApplied(accepted: 2, ignored: 1)),
      .rejected(ClusterRejection(code: .invalidSpec, message: "bad", field: "testPort")),
      .ok(.variableWritten(path: "a/b", version: 9)),
      .ok(.variableDeleted(path: "a/b", version: 9)),
      .rejected(ClusterRejection(code: .versionMismatch, message: "no", field: "cas", version: 4)),
    ]
    for result in results { #expect(try ClusterResult(decoding: result.encode()) == result) }
    // A rejection without a version writes no version key (results recorded before variables read the same).
    #expect(
      !String(decoding: ClusterResult.rejected(ClusterRejection(code: .notFound, message: "x")).encode(), as: UTF8.self)
        .contains("version"))
    #expect(throws: ClusterEntryError.self) { try ClusterResult(decoding: Array("{}".utf8)) }
    #expect(ClusterRejection.Code.idempotencyMismatch.rawValue == "idempotency_mismatch")
  }

  @Test func garbageIsRefusedNeverACrash() {
    #expect(throws: ClusterEntryError.notAnEntry) { try ClusterEntry(decoding: [UInt8]()) }
    #expect(throws: ClusterEntryError.notAnEntry) { try ClusterEntry(decoding: [0x54, 0x43]) }
    #expect(throws: ClusterEntryError.notAnEntry) { try ClusterEntry(decoding: Array("{\"stamp\":1}".utf8)) }
    var random = SplitMix64(seed: 42)
    let valid = ClusterEntry(stamp: Self.stamp, command: .createService(makeSpec())).encode()
    for round in 0..<2000 {
      var bytes: [UInt8]
      if round % 2 == 0 {
        bytes = (0..<random.below(64)).map { _ in UInt8(truncatingIfNeeded: random.next()) }
      } else {
        bytes = valid  // a valid entry with a few bytes flipped or cut
        for _ in 0...random.below(3) { bytes[4 + random.below(bytes.count - 4)] ^= UInt8(1 + random.below(255)) }
        if random.below(2) == 0 { bytes = Array(bytes.prefix(4 + random.below(bytes.count - 4))) }
      }
      do {
        _ = try ClusterEntry(decoding: bytes)
      } catch {
        #expect(!error.description.isEmpty)
      }
    }
  }

  @Test func unknownVersionIsNamed() {
    var bytes = ClusterEntry(stamp: Self.stamp, command: .deleteService(service: "web")).encode()
    bytes[3] = 2
    #expect(throws: ClusterEntryError.unsupportedVersion(2)) { try ClusterEntry(decoding: bytes) }
    #expect(
      ClusterEntryError.unsupportedVersion(2).description
        == "cluster entry version 2 is not supported (this build reads version 1)")
  }

  @Test func malformedBodyNamesThePath() {
    let json = #"{"command":{"nodeDown":{"node":"N_1","incarnation":1}},"stamp":{"node":"n1","now":1,"term":1}}"#
    do {
      _ = try ClusterEntry(decoding: [0x54, 0x43, 0x45, 1] + Array(json.utf8))
      Issue.record("invalid node id accepted")
    } catch {
      guard case .malformed(let reason) = error else {
        Issue.record("wrong error \(error)")
        return
      }
      #expect(reason == "invalid node id 'N_1': may contain only a-z, 0-9 and '-'")
    }
  }

  @Test func badIdempotencyKeyIsRefused() {
    for key in ["", String(repeating: "k", count: 256), "has space"] {
      let bytes = ClusterEntry(
        stamp: Self.stamp, idempotency: IdempotencyRecordKey(key: key, bodyDigest: "d"),
        command: .deleteService(service: "web")
      ).encode()
      #expect(throws: ClusterEntryError.self) { try ClusterEntry(decoding: bytes) }
    }
  }

  @Test func oversizedEntriesAreRefused() {
    let huge = ClusterEntry(
      stamp: Self.stamp, command: .createService(makeSpec(env: ["BIG": String(repeating: "x", count: 1 << 20)])))
    #expect(throws: ClusterEntryError.self) { try huge.encodeChecked() }
    let bytes = huge.encode()
    #expect(throws: ClusterEntryError.tooLarge(size: bytes.count, limit: ClusterEntry.maximumEncodedSize)) {
      try ClusterEntry(decoding: bytes)
    }
  }

  @Test func undecodableLogEntryIsRejectedIdenticallyAndAdvancesTheIndex() throws {
    var state = ClusterState()
    let before = state
    let answer = try ClusterResult(decoding: state.apply(bytes: [1, 2, 3], index: 1, term: 1))
    guard case .rejected(let rejection) = answer else {
      Issue.record("garbage applied")
      return
    }
    #expect(rejection.code == .badRequest)
    #expect(state.appliedIndex == 1)
    state.appliedIndex = 0
    #expect(state == before)
    let big = [0x54, 0x43, 0x45, 1] + [UInt8](repeating: 0x20, count: ClusterEntry.maximumEncodedSize)
    var other = ClusterState()
    guard case .rejected(let tooLarge) = try ClusterResult(decoding: other.apply(bytes: big, index: 1, term: 1)) else {
      Issue.record("oversized entry applied")
      return
    }
    #expect(tooLarge.code == .tooLarge)
  }
}
