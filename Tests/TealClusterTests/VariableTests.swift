import Foundation
import TealDeploy
import TealWire
import Testing

@testable import TealCluster

/// Variables: versions are modify indexes, compare-and-set, the limits, listing and snapshots.
@Suite struct VariableTests {
  static func rejection(_ result: ClusterResult) -> ClusterRejection? {
    if case .rejected(let rejection) = result { return rejection }
    return nil
  }

  @Test func aPutIsVersionedByItsLogIndexAndAnotherPutMovesTheVersion() {
    var log = Log()
    log.announce(1)
    #expect(
      log.ok(.putVariable(path: "hooks/web/token", value: "s3cret", cas: nil))
        == .variableWritten(path: "hooks/web/token", version: 2))
    #expect(log.state.variable("hooks/web/token") == ClusterVariable(value: "s3cret", version: 2))
    log.ok(.registerSession)
    #expect(
      log.ok(.putVariable(path: "hooks/web/token", value: "", cas: nil))
        == .variableWritten(path: "hooks/web/token", version: 4))
    #expect(log.state.variable("hooks/web/token") == ClusterVariable(value: "", version: 4))
    #expect(log.state.variables.totalBytes == "hooks/web/token".utf8.count)
  }

  @Test func compareAndSetCreatesOnlyAtZeroAndWritesOnlyOverTheExpectedVersion() {
    var log = Log()
    #expect(log.ok(.putVariable(path: "a", value: "1", cas: 0)) == .variableWritten(path: "a", version: 1))
    // cas 0 = create only: the variable exists, so the answer carries its version.
    let taken = Self.rejection(log.apply(.putVariable(path: "a", value: "2", cas: 0)))
    #expect(taken?.code == .versionMismatch && taken?.version == 1 && taken?.field == "cas")
    #expect(taken?.message == "variable a is at version 1, not version 0")
    #expect(log.ok(.putVariable(path: "a", value: "3", cas: 1)) == .variableWritten(path: "a", version: 3))
    let stale = Self.rejection(log.apply(.putVariable(path: "a", value: "4", cas: 1)))
    #expect(stale?.code == .versionMismatch && stale?.version == 3)
    #expect(log.state.variable("a") == ClusterVariable(value: "3", version: 3))
    // A version of a missing variable: current is 0.
    let missing = Self.rejection(log.apply(.putVariable(path: "b", value: "x", cas: 7)))
    #expect(missing?.code == .versionMismatch && missing?.version == 0)
    #expect(missing?.message == "variable b does not exist (version 0), not version 7")
    #expect(log.state.variable("b") == nil)
  }

  @Test func deleteRemovesAndAnswersTheVersionItHadWithOptionalCompareAndSet() {
    var log = Log()
    log.ok(.putVariable(path: "cfg/x", value: "v", cas: nil))
    let wrong = Self.rejection(log.apply(.deleteVariable(path: "cfg/x", cas: 9)))
    #expect(wrong?.code == .versionMismatch && wrong?.version == 1)
    #expect(log.state.variable("cfg/x") != nil)
    #expect(log.ok(.deleteVariable(path: "cfg/x", cas: 1)) == .variableDeleted(path: "cfg/x", version: 1))
    #expect(log.state.variable("cfg/x") == nil && log.state.variables.totalBytes == 0)
    #expect(Self.rejection(log.apply(.deleteVariable(path: "cfg/x", cas: nil)))?.code == .notFound)
    #expect(Self.rejection(log.apply(.deleteVariable(path: "cfg/x", cas: 0)))?.code == .notFound)
    #expect(Self.rejection(log.apply(.deleteVariable(path: "cfg/x", cas: 1)))?.version == 0)
    log.ok(.putVariable(path: "cfg/y", value: "v", cas: nil))
    #expect(log.ok(.deleteVariable(path: "cfg/y", cas: nil)) == .variableDeleted(path: "cfg/y", version: 7))
  }

  @Test func aRetryWithTheSameIdempotencyKeyGetsTheFirstAnswerEvenAfterAnotherWrite() {
    var log = Log()
    let first = log.apply(.putVariable(path: "a", value: "1", cas: 0), key: "k1", digest: "put-a-1")
    log.ok(.putVariable(path: "a", value: "2", cas: nil))
    #expect(log.apply(.putVariable(path: "a", value: "1", cas: 0), key: "k1", digest: "put-a-1") == first)
    #expect(log.state.variable("a") == ClusterVariable(value: "2", version: 2))
  }

  @Test(arguments: [
    ("", "must not be empty"),
    ("/a", "must not start with '/'"),
    ("a/", "must not end with '/'"),
    ("a//b", "must not contain an empty segment ('//')"),
    ("a/../b", "must not contain a '.' or '..' segment"),
    ("./a", "must not contain a '.' or '..' segment"),
    ("a b", "may contain only A-Z, a-z, 0-9, '.', '_', '-' and '/'"),
    ("a%2Fb", "may contain only A-Z, a-z, 0-9, '.', '_', '-' and '/'"),
    ("café", "may contain only A-Z, a-z, 0-9, '.', '_', '-' and '/'"),
    (String(repeating: "x", count: 257), "is 257 bytes; the path limit is 256 bytes"),
  ])
  func badPathsAreRefusedNamingTheRule(path: String, problem: String) {
    var log = Log()
    let put = Self.rejection(log.apply(.putVariable(path: path, value: "v", cas: nil)))
    #expect(put?.code == .badRequest && put?.field == "path")
    #expect(put?.message == "variable path \"\(path)\" \(problem)")
    #expect(Self.rejection(log.apply(.deleteVariable(path: path, cas: nil)))?.code == .badRequest)
    #expect(log.state.variables.count == 0)
  }

  @Test func goodPathsAreAccepted() {
    for path in ["a", "A-Z_0.9", "hooks/web/pre-traffic.token", "a/.b/c..", String(repeating: "y", count: 256)] {
      #expect(VariableTable.pathProblem(path) == nil, "\(path)")
    }
  }

  @Test func aValueAboveSixtyFourKiBIsRefusedNamingTheLimit() {
    var log = Log()
    let limit = VariableTable.maximumValueBytes
    #expect(limit == 65_536)
    log.ok(.putVariable(path: "big", value: String(repeating: "v", count: limit), cas: nil))
    // Bytes, not characters: "é" is two bytes of UTF-8.
    let over = Self.rejection(
      log.apply(.putVariable(path: "big", value: String(repeating: "é", count: limit / 2 + 1), cas: nil)))
    #expect(over?.code == .tooLarge && over?.field == "value")
    #expect(over?.message == "variable big: value is 65538 bytes; the value limit is 65536 bytes (64 KiB)")
    #expect(log.state.variable("big")?.version == 1)
  }

  @Test func theCountLimitRefusesANewPathButNotAnUpdate() {
    var state = ClusterState()
    let stamp = CommandStamp(now: .zero, node: NodeID("n1"), term: 1)
    for number in 0..<VariableTable.maximumCount {
      let result = state.apply(
        ClusterEntry(stamp: stamp, command: .putVariable(path: "v/\(number)", value: "", cas: nil)),
        index: UInt64(number + 1), term: 1)
      precondition(result.isOK, "put \(number): \(result)")
    }
    let index = UInt64(VariableTable.maximumCount)
    let refused = Self.rejection(
      state.apply(
        ClusterEntry(stamp: stamp, command: .putVariable(path: "v/new", value: "", cas: nil)), index: index + 1,
        term: 1))
    #expect(refused?.code == .conflict)
    #expect(
      refused?.message
        == "the cluster holds 10000 variables, the variable count limit (10000); delete some first")
    #expect(
      state.apply(
        ClusterEntry(stamp: stamp, command: .putVariable(path: "v/7", value: "again", cas: nil)), index: index + 2,
        term: 1
      ).isOK)
    #expect(state.variables.count == VariableTable.maximumCount)
  }

  @Test func theTotalBytesLimitRefusesAWriteThatWouldPassIt() {
    var log = Log()
    let value = String(repeating: "v", count: VariableTable.maximumValueBytes)
    // 255 full values and their paths fit in 16 MiB; the 256th does not (its path adds bytes).
    for number in 0..<255 { log.ok(.putVariable(path: "p\(number)", value: value, cas: nil)) }
    let refused = Self.rejection(log.apply(.putVariable(path: "p255", value: value, cas: nil)))
    #expect(refused?.code == .conflict && refused?.field == "value")
    #expect(refused?.message.contains("the total variable bytes limit is 16777216 (16 MiB)") == true, "\(refused!)")
    #expect(log.state.variable("p255") == nil)
    // Shrinking one makes room.
    log.ok(.putVariable(path: "p0", value: "", cas: nil))
    log.ok(.putVariable(path: "p255", value: value, cas: nil))
    #expect(log.state.variables.totalBytes <= VariableTable.maximumTotalBytes)
  }

  @Test func listingsAreSortedFilteredByPrefixAndPaged() {
    var log = Log()
    for path in ["b/2", "a", "b/1", "b/10", "c", "b"] { log.ok(.putVariable(path: path, value: "x", cas: nil)) }
    let all = log.state.variables()
    #expect(all.variables.map(\.path) == ["a", "b", "b/1", "b/10", "b/2", "c"] && all.next == nil)
    #expect(all.variables.first == ClusterVariableSummary(path: "a", version: 2))
    let first = log.state.variables(prefix: "b/", limit: 2)
    #expect(first.variables.map(\.path) == ["b/1", "b/10"] && first.next == "b/10")
    let second = log.state.variables(prefix: "b/", after: first.next, limit: 2)
    #expect(second.variables.map(\.path) == ["b/2"] && second.next == nil)
    #expect(log.state.variables(prefix: "zzz").variables.isEmpty)
  }

  @Test func snapshotsWithVariablesAreCanonicalAndRoundTrip() throws {
    var one = Log()
    var other = Log()
    let paths = (0..<200).map { "svc/\($0 * 7919 % 200)/key" }
    for path in paths { one.ok(.putVariable(path: path, value: "value of \(path)", cas: nil)) }
    // The same variables written in another order, with the same versions: another dictionary order.
    other.state.variables.reserveCapacity(4096)
    for (offset, path) in paths.enumerated().reversed() {
      other.state.variables.set(path, ClusterVariable(value: "value of \(path)", version: UInt64(offset + 1)))
    }
    other.state.appliedIndex = one.state.appliedIndex
    other.state.logTime = one.state.logTime
    #expect(Array(other.state.variables.entries.keys) != Array(one.state.variables.entries.keys))
    #expect(other.state.snapshot() == one.state.snapshot())
    let bytes = one.state.snapshot()
    #expect(bytes[3] == 2)
    let restored = try ClusterState(snapshot: bytes)
    #expect(restored == one.state && restored.snapshot() == bytes)
    #expect(restored.variables.totalBytes == one.state.variables.totalBytes)
    let text = String(decoding: bytes[4...], as: UTF8.self)
    #expect(
      text.contains(#""variables":{"svc\/0\/key":{"value":"value of svc\/0\/key","version":"#), "\(text.prefix(200))")
  }

  @Test func aVersionOneSnapshotWithoutVariablesIsStillRead() throws {
    var log = Log()
    log.announce(2)
    log.ok(.createService(makeSpec()))
    var json = try JSONSerialization.jsonObject(with: Data(log.state.snapshot()[4...])) as! [String: Any]
    json["variables"] = nil
    let v1 = [0x54, 0x43, 0x53, 1] + Array(try JSONSerialization.data(withJSONObject: json, options: [.sortedKeys]))
    let restored = try ClusterState(snapshot: v1)
    #expect(restored == log.state)
    #expect(restored.variables.count == 0)
    #expect(throws: ClusterSnapshotError.unsupportedVersion(3)) {
      try ClusterState(snapshot: [0x54, 0x43, 0x53, 3] + v1[4...])
    }
  }

  @Test func aSnapshotBreakingAVariableRuleIsRefused() throws {
    var log = Log()
    log.ok(.putVariable(path: "ok", value: "v", cas: nil))
    var bad = log.state
    bad.variables.set("/bad", ClusterVariable(value: "v", version: 1))
    #expect(throws: ClusterSnapshotError.malformed(reason: "variable path \"/bad\" must not start with '/'")) {
      try ClusterState(snapshot: bad.snapshot())
    }
    var future = log.state
    future.variables.set("ok", ClusterVariable(value: "v", version: 99))
    #expect(throws: ClusterSnapshotError.malformed(reason: "variable ok: version 99 is not in 1...1")) {
      try ClusterState(snapshot: future.snapshot())
    }
  }
}
