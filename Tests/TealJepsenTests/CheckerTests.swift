// The linearizability checker on histories built by hand: what it must accept, what it must
// reject (a stale read above all), open ends, compare-and-set on versions, the JSON round trip,
// and a budget that runs out giving "unknown", never a pass.

import Foundation
import TealJepsen
import Testing

/// Builds operations with sequential ids; times in milliseconds.
private struct Builder {
  var operations: [JepsenOperation] = []

  mutating func add(
    _ process: Int, _ kind: JepsenOperation.Kind, key: String = "x", value: String? = nil, expect: UInt64? = nil,
    expectValue: String? = nil, stale: Bool = false, from start: Int64, to end: Int64?,
    _ outcome: JepsenOperation.Outcome = .ok, read: String? = nil, version: UInt64? = nil
  ) {
    operations.append(
      JepsenOperation(
        id: operations.count, process: process, node: "n\(process % 3 + 1)", key: key, kind: kind, value: value,
        expectedVersion: expect, expectedValue: expectValue, stale: stale, invokedAt: start * 1_000_000,
        completedAt: end.map { $0 * 1_000_000 }, outcome: outcome, readValue: read, version: version))
  }

  var history: JepsenHistory { JepsenHistory(operations: operations) }
}

@Suite("The Jepsen checker (Wing & Gong / Lowe, register per key)")
struct CheckerTests {
  @Test func aSequentialHistoryIsLinearizable() {
    var b = Builder()
    b.add(0, .read, from: 0, to: 1, read: nil, version: 0)
    b.add(0, .write, value: "a", from: 2, to: 3, version: 5)
    b.add(1, .read, from: 4, to: 5, read: "a", version: 5)
    b.add(1, .cas, value: "b", expect: 5, expectValue: "a", from: 6, to: 7, version: 9)
    b.add(2, .cas, value: "c", expect: 5, expectValue: "a", from: 8, to: 9, .fail, version: 9)
    b.add(2, .read, from: 10, to: 11, read: "b", version: 9)
    let report = LinearizabilityCheck.check(b.history)
    #expect(report.verdict == .linearizable, "\(report.summary)")
    #expect(report.operations == 6)
  }

  @Test func concurrentOperationsMayTakeEffectInEitherOrder() {
    var b = Builder()
    // Two overlapping writes, then reads that see the second-invoked one first... and stay there.
    b.add(0, .write, value: "a", from: 0, to: 10, version: 7)
    b.add(1, .write, value: "b", from: 1, to: 9, version: 6)
    b.add(2, .read, from: 11, to: 12, read: "a", version: 7)
    #expect(LinearizabilityCheck.check(b.history).verdict == .linearizable)
    // A read concurrent with a write may see either value.
    var c = Builder()
    c.add(0, .write, value: "a", from: 0, to: 2, version: 3)
    c.add(0, .write, value: "b", from: 3, to: 10, version: 4)
    c.add(1, .read, from: 4, to: 5, read: "a", version: 3)
    c.add(2, .read, from: 6, to: 7, read: "b", version: 4)
    #expect(LinearizabilityCheck.check(c.history).verdict == .linearizable)
  }

  @Test func aReadOfAnOverwrittenValueIsNotLinearizable() {
    var b = Builder()
    b.add(0, .write, value: "a", from: 0, to: 1, version: 3)
    b.add(0, .write, value: "b", from: 2, to: 3, version: 4)
    b.add(1, .read, from: 4, to: 5, read: "a", version: 3)
    let report = LinearizabilityCheck.check(b.history)
    #expect(report.verdict == .notLinearizable, "\(report.summary)")
    let key = report.keys[0]
    #expect(key.stuckAt?.id == 2, "\(report.summary)")
    #expect(key.longestPrefix == [0, 1])
    #expect(key.stateAfterPrefix == "b@4")
  }

  @Test func readsThatGoBackInTimeAreNotLinearizableEvenWhenEachIsConcurrentWithAWrite() {
    var b = Builder()
    b.add(0, .write, value: "a", from: 0, to: 1, version: 3)
    b.add(0, .write, value: "b", from: 2, to: 20, version: 4)
    b.add(1, .read, from: 3, to: 4, read: "b", version: 4)
    b.add(2, .read, from: 5, to: 6, read: "a", version: 3)
    #expect(LinearizabilityCheck.check(b.history).verdict == .notLinearizable)
  }

  @Test func aStaleReadFromAPartitionedFollowerFailsTheCheck() {
    // The shape of the real run's stale demonstration: an acknowledged write, then a `?stale=true`
    // read through the partitioned follower that still has the value before it.
    var b = Builder()
    b.add(0, .write, value: "before", from: 0, to: 5, version: 10)
    b.add(1, .read, from: 6, to: 7, read: "before", version: 10)
    b.add(0, .write, value: "after", from: 8, to: 12, version: 11)
    b.add(2, .read, stale: true, from: 13, to: 14, read: "before", version: 10)
    let report = LinearizabilityCheck.check(b.history)
    #expect(report.verdict == .notLinearizable)
    #expect(report.keys[0].stuckAt?.stale == true)
    // Without the stale read the same history passes.
    let linear = JepsenHistory(operations: b.operations.filter { !$0.stale })
    #expect(LinearizabilityCheck.check(linear).verdict == .linearizable)
  }

  @Test func anOpenWriteMayTakeEffectLateOrNever() {
    var late = Builder()
    late.add(0, .write, value: "a", from: 0, to: 1, version: 3)
    late.add(1, .write, value: "lost?", from: 2, to: nil, .info)
    late.add(2, .read, from: 5, to: 6, read: "a", version: 3)
    late.add(2, .read, from: 7, to: 8, read: "lost?", version: 8)
    late.add(2, .read, from: 9, to: 10, read: "lost?", version: 8)
    #expect(LinearizabilityCheck.check(late.history).verdict == .linearizable)
    var never = Builder()
    never.add(0, .write, value: "a", from: 0, to: 1, version: 3)
    never.add(1, .write, value: "lost", from: 2, to: nil, .info)
    never.add(2, .read, from: 5, to: 6, read: "a", version: 3)
    #expect(LinearizabilityCheck.check(never.history).verdict == .linearizable)
    // But once seen, it cannot be unseen.
    never.add(2, .read, from: 7, to: 8, read: "lost", version: 8)
    never.add(2, .read, from: 9, to: 10, read: "a", version: 3)
    #expect(LinearizabilityCheck.check(never.history).verdict == .notLinearizable)
    // Nor can an open write take effect before it was invoked.
    var early = Builder()
    early.add(0, .read, from: 0, to: 1, read: "later", version: 4)
    early.add(1, .write, value: "later", from: 2, to: nil, .info)
    #expect(LinearizabilityCheck.check(early.history).verdict == .notLinearizable)
    // A compare-and-set refused before it was proposed (no 409, no version) has no effect.
    var refused = Builder()
    refused.add(0, .write, value: "a", from: 0, to: 1, version: 3)
    refused.add(1, .cas, value: "b", expect: 3, expectValue: "a", from: 2, to: 3, .fail)
    refused.add(2, .read, from: 4, to: 5, read: "a", version: 3)
    #expect(LinearizabilityCheck.check(refused.history).verdict == .linearizable)
    // A failed write never took effect.
    var failed = Builder()
    failed.add(0, .write, value: "refused", from: 0, to: 1, .fail)
    failed.add(1, .read, from: 2, to: 3, read: "refused", version: 2)
    #expect(LinearizabilityCheck.check(failed.history).verdict == .notLinearizable)
  }

  @Test func compareAndSetFollowsVersions() {
    // Two compare-and-sets over the same version cannot both win.
    var twice = Builder()
    twice.add(0, .write, value: "a", from: 0, to: 1, version: 3)
    twice.add(1, .cas, value: "b", expect: 3, expectValue: "a", from: 2, to: 5, version: 4)
    twice.add(2, .cas, value: "c", expect: 3, expectValue: "a", from: 2, to: 5, version: 5)
    #expect(LinearizabilityCheck.check(twice.history).verdict == .notLinearizable)
    // A 409 must name the version that was current (here: that of a write not invoked yet).
    var mismatch = Builder()
    mismatch.add(0, .write, value: "a", from: 0, to: 1, version: 3)
    mismatch.add(1, .cas, value: "b", expect: 2, from: 2, to: 3, .fail, version: 7)
    mismatch.add(0, .write, value: "later", from: 4, to: 5, version: 7)
    #expect(LinearizabilityCheck.check(mismatch.history).verdict == .notLinearizable)
    // A 409 while the expected version is current is impossible.
    var wrong = Builder()
    wrong.add(0, .write, value: "a", from: 0, to: 1, version: 3)
    wrong.add(1, .cas, value: "b", expect: 3, from: 2, to: 3, .fail, version: 3)
    #expect(LinearizabilityCheck.check(wrong.history).verdict == .notLinearizable)
    // cas=0 creates only when absent.
    var create = Builder()
    create.add(0, .cas, value: "first", expect: 0, from: 0, to: 1, version: 2)
    create.add(1, .cas, value: "second", expect: 0, from: 2, to: 3, .fail, version: 2)
    create.add(1, .read, from: 4, to: 5, read: "first", version: 2)
    #expect(LinearizabilityCheck.check(create.history).verdict == .linearizable)
    // A 409 naming the version of a write whose answer was lost (never read): that write took
    // effect; only a version below the known one is impossible.
    var lost = Builder()
    lost.add(0, .write, value: "a", from: 0, to: 1, version: 3)
    lost.add(1, .write, value: "unread", from: 2, to: nil, .info)
    lost.add(2, .cas, value: "b", expect: 3, expectValue: "a", from: 4, to: 5, .fail, version: 9)
    lost.add(2, .write, value: "c", from: 6, to: 7, version: 12)
    #expect(LinearizabilityCheck.check(lost.history).verdict == .linearizable)
    lost.add(2, .cas, value: "d", expect: 3, expectValue: "a", from: 8, to: 9, .fail, version: 10)
    #expect(LinearizabilityCheck.check(lost.history).verdict == .notLinearizable)
    // Versions only grow.
    var backwards = Builder()
    backwards.add(0, .write, value: "a", from: 0, to: 1, version: 9)
    backwards.add(0, .write, value: "b", from: 2, to: 3, version: 8)
    #expect(LinearizabilityCheck.check(backwards.history).verdict == .notLinearizable)
  }

  @Test func anOpenCompareAndSetOverAnUnknownVersionMayOrMayNotApply() {
    var b = Builder()
    b.add(0, .write, value: "a", from: 0, to: nil, .info)
    b.add(1, .read, from: 1, to: 2, read: "a", version: 4)
    b.add(1, .cas, value: "b", expect: 4, expectValue: "a", from: 3, to: nil, .info)
    b.add(2, .read, from: 10, to: 11, read: "b", version: 6)
    #expect(LinearizabilityCheck.check(b.history).verdict == .linearizable)
  }

  @Test func keysAreCheckedIndependently() {
    var b = Builder()
    b.add(0, .write, key: "x", value: "a", from: 0, to: 1, version: 3)
    b.add(0, .write, key: "y", value: "b", from: 2, to: 3, version: 4)
    b.add(1, .read, key: "x", from: 4, to: 5, read: "a", version: 3)
    b.add(1, .read, key: "y", from: 4, to: 5, read: nil, version: 0)
    let report = LinearizabilityCheck.check(b.history)
    #expect(report.verdict == .notLinearizable)
    #expect(report.keys.map(\.verdict) == [.linearizable, .notLinearizable])
  }

  @Test func aCheckThatRunsOutOfBudgetSaysUnknownNeverPass() {
    // Many concurrent writes, all open, and reads that pin the last write: a search with a large
    // space, well past a tiny budget.
    var b = Builder()
    for index in 0..<40 { b.add(index, .write, value: "v\(index)", from: 0, to: nil, .info) }
    for index in 0..<40 { b.add(100 + index, .read, from: 1, to: 2, read: "v\(index)", version: 100) }
    let tiny = LinearizabilityCheck.check(b.history, budget: CheckBudget(maximumSteps: 50, maximumSeconds: 60))
    #expect(tiny.verdict == .unknown, "\(tiny.summary)")
    #expect(tiny.keys[0].reason?.contains("step budget") == true)
    // The same history with a valid answer and a tiny budget: still unknown, not linearizable.
    var fine = Builder()
    for index in 0..<200 {
      fine.add(
        index % 8, .write, value: "w\(index)", from: Int64(index * 2), to: Int64(index * 2 + 3),
        version: UInt64(index + 1))
    }
    let short = LinearizabilityCheck.check(fine.history, budget: CheckBudget(maximumSteps: 20, maximumSeconds: 60))
    #expect(short.verdict == .unknown)
    #expect(LinearizabilityCheck.check(fine.history).verdict == .linearizable)
    // A time budget too: the verdict is unknown, with the time budget named.
    // (Not linearizable: the last read's value was never written, which only the whole search finds.)
    var wide = Builder()
    for index in 0..<60 { wide.add(index, .write, value: "v\(index)", from: 0, to: nil, .info) }
    for index in 0..<60 { wide.add(100 + index, .read, from: 1, to: 2, read: "v\(index)", version: 100) }
    wide.add(200, .read, from: 3, to: 4, read: "never written", version: 100)
    let timed = LinearizabilityCheck.check(
      wide.history, budget: CheckBudget(maximumSteps: Int.max, maximumSeconds: 0.05))
    #expect(timed.verdict == .unknown, "\(timed.summary)")
    #expect(timed.keys[0].reason?.contains("time budget") == true)
  }

  @Test func theHistoryRoundTripsThroughJSON() throws {
    var b = Builder()
    b.add(0, .write, value: "a", from: 0, to: nil, .info)
    b.add(1, .read, stale: true, from: 1, to: 2, read: nil, version: 0)
    let history = JepsenHistory(
      operations: b.operations, faults: [JepsenFault(kind: "pause", nodes: ["n1"], startedAt: 5, endedAt: 9)],
      notes: ["seed": "7"])
    let data = try history.encoded()
    let back = try JepsenHistory.decode(data)
    #expect(back.operations == history.operations)
    #expect(back.faults == history.faults)
    #expect(back.notes == history.notes)
    let text = String(decoding: data, as: UTF8.self)
    #expect(text.contains(#""outcome":"info""#))
    #expect(!text.contains("completedAt\":null"), "an open end is an absent completedAt")
  }
}

/// `TEAL_JEPSEN_CHECK=history.json swift test --filter RecordedHistoryCheck`: checks a history a
/// run wrote (TEAL_JEPSEN_HISTORY) again, and prints the report.
@Suite("A recorded history, checked again")
struct RecordedHistoryCheck {
  static let path = ProcessInfo.processInfo.environment["TEAL_JEPSEN_CHECK"]

  @Test(.enabled(if: path != nil, "set TEAL_JEPSEN_CHECK to a history's JSON"))
  func checkTheRecordedHistory() throws {
    let history = try JepsenHistory.decode(Data(contentsOf: URL(fileURLWithPath: Self.path ?? "")))
    let report = LinearizabilityCheck.check(history)
    print(
      "\(Self.path ?? ""): \(history.operations.count) operations, \(history.faults.count) faults; \(report.summary)")
    #expect(report.verdict == .linearizable, "\(report.summary)")
  }
}
