// A linearizability checker for a register per key with read, write and compare-and-set on
// versions, over a recorded ``JepsenHistory``: Wing & Gong's search with Lowe's memoisation of
// (linearized set, state), run per key (linearizability is compositional). The search has a step
// and a time budget; when either runs out the verdict is `unknown`, never a pass.

import Foundation

/// The register of one key as the model sees it: its value (nil: the variable does not exist) and
/// its version (nil: not known, after a write whose answer was lost; 0: absent).
public struct RegisterState: Hashable, Sendable, CustomStringConvertible {
  public var value: String?
  public var version: UInt64?

  public init(value: String?, version: UInt64?) {
    self.value = value
    self.version = version
  }

  public static let absent = RegisterState(value: nil, version: 0)

  public var description: String { "\(value ?? "nil")@\(version.map(String.init) ?? "?")" }
}

/// The sequential specification of a variable (Docs/API.md, `/v1/variables`): versions are the log
/// indexes of the writes, so they only grow; a compare-and-set succeeds exactly when the current
/// version is the expected one (0: the variable does not exist) and a failed one names the current
/// version.
public enum RegisterModel {
  /// The states `operation` may leave when applied to `state`; empty when it cannot happen there.
  /// `owners` maps every version some answer named to its value (to read a failed compare-and-set's
  /// current version).
  static func step(_ state: RegisterState, _ operation: JepsenOperation, owners: [UInt64: String?]) -> [RegisterState] {
    switch (operation.kind, operation.outcome) {
    case (.read, .ok):
      let version = operation.version ?? 0
      guard state.value == operation.readValue else { return [] }
      if let known = state.version, known != version { return [] }
      return [RegisterState(value: state.value, version: version)]
    case (.write, .ok), (.cas, .ok):
      guard let version = operation.version else { return [] }
      if let known = state.version, version <= known { return [] }
      if operation.kind == .cas, matches(state, operation) == false { return [] }
      return [RegisterState(value: operation.value, version: version)]
    case (.write, .info):
      return [RegisterState(value: operation.value, version: nil)]
    case (.cas, .info):
      let applied = RegisterState(value: operation.value, version: nil)
      switch matches(state, operation) {
      case true?: return [applied]
      case false?: return [state]
      case nil: return [applied, state]
      }
    case (.cas, .fail):
      // A 409: the current version was `version`, not the expected one.
      guard let current = operation.version, current != operation.expectedVersion else { return [] }
      if current == 0 { return state.value == nil ? [RegisterState.absent] : [] }
      guard state.value != nil else { return [] }
      if let owner = owners[current] {
        // A version some answer named: the state must be that write's.
        guard owner == state.value, state.version == nil || state.version == current else { return [] }
        return [RegisterState(value: state.value, version: current)]
      }
      // A version no answer named: a write whose answer was lost made it (that write may have been
      // left out of the search as unobserved), so only "versions grow" can be checked.
      if let known = state.version, current <= known { return [] }
      return [state]
    case (.read, .fail), (.read, .info), (.write, .fail):
      // Filtered out before the search: no effect.
      return [state]
    }
  }

  /// Whether a compare-and-set's expectation holds in `state`; nil when it cannot be told (the
  /// version is unknown and the client did not say what value it expected).
  static func matches(_ state: RegisterState, _ operation: JepsenOperation) -> Bool? {
    let expected = operation.expectedVersion ?? 0
    if expected == 0 { return state.value == nil }
    guard state.value != nil else { return false }
    if let known = state.version { return known == expected }
    guard let value = operation.expectedValue else { return nil }
    return value == state.value
  }
}

/// The budget of one check: steps of the search (over every key) and wall time.
public struct CheckBudget: Sendable, Hashable {
  public var maximumSteps: Int
  public var maximumSeconds: Double

  public init(maximumSteps: Int = 50_000_000, maximumSeconds: Double = 120) {
    precondition(maximumSteps > 0 && maximumSeconds > 0, "a check budget must be positive")
    self.maximumSteps = maximumSteps
    self.maximumSeconds = maximumSeconds
  }
}

public enum CheckVerdict: String, Codable, Sendable, Hashable {
  case linearizable
  case notLinearizable = "not-linearizable"
  /// The budget ran out before the search decided: NOT a pass.
  case unknown
}

/// The verdict on one key.
public struct KeyCheck: Codable, Sendable, Hashable {
  public var key: String
  public var verdict: CheckVerdict
  /// Operations searched (after dropping failed ones, open reads and unobserved open writes).
  public var operations: Int
  public var steps: Int
  /// For `not-linearizable`: the operation no order could place, the longest prefix the search
  /// linearized (operation ids, in order) and the state after it. For `unknown`: which budget ran out.
  public var stuckAt: JepsenOperation?
  public var longestPrefix: [Int]?
  public var stateAfterPrefix: String?
  public var reason: String?
}

public struct CheckReport: Codable, Sendable, Hashable {
  public var verdict: CheckVerdict
  public var keys: [KeyCheck]
  public var operations: Int
  public var steps: Int
  public var seconds: Double

  /// One line: the verdict, the counts and what failed.
  public var summary: String {
    var text =
      "\(verdict.rawValue): \(operations) operations on \(keys.count) keys, \(steps) steps, "
      + String(format: "%.3f s", seconds)
    for key in keys where key.verdict != .linearizable {
      text += "; \(key.key) \(key.verdict.rawValue)"
      if let stuck = key.stuckAt { text += " at \(stuck) after state \(key.stateAfterPrefix ?? "?")" }
      if let reason = key.reason { text += " (\(reason))" }
    }
    return text
  }
}

public enum LinearizabilityCheck {
  /// Checks every key of `history`; linearizable only if every key is, not-linearizable if any
  /// key is, else unknown (a budget ran out on some key).
  public static func check(_ history: JepsenHistory, budget: CheckBudget = CheckBudget()) -> CheckReport {
    let clock = ContinuousClock()
    let started = clock.now
    let deadline = started + .milliseconds(Int64(budget.maximumSeconds * 1000))
    var byKey: [String: [JepsenOperation]] = [:]
    for operation in history.operations { byKey[operation.key, default: []].append(operation) }
    var keys: [KeyCheck] = []
    var stepsLeft = budget.maximumSteps
    var total = 0
    for key in byKey.keys.sorted() {
      let result = checkKey(key, byKey[key] ?? [], stepsLeft: stepsLeft, deadline: deadline, clock: clock)
      stepsLeft = max(0, stepsLeft - result.steps)
      total += result.steps
      keys.append(result)
    }
    let verdict: CheckVerdict =
      keys.contains { $0.verdict == .notLinearizable }
      ? .notLinearizable : keys.allSatisfy { $0.verdict == .linearizable } ? .linearizable : .unknown
    let elapsed = clock.now - started
    let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
    return CheckReport(
      verdict: verdict, keys: keys, operations: keys.reduce(0) { $0 + $1.operations }, steps: total, seconds: seconds)
  }

  /// The operations the search needs: failed writes, failed and open reads and compare-and-sets
  /// that failed without a 409 have no effect; an
  /// open write or compare-and-set whose value no read and no compare-and-set ever saw may be
  /// placed last (after every other operation), so it cannot matter and is dropped too.
  static func relevant(_ operations: [JepsenOperation]) -> [JepsenOperation] {
    var seen: Set<String> = []
    for operation in operations {
      if operation.kind == .read, operation.outcome == .ok, let value = operation.readValue { seen.insert(value) }
      if operation.kind == .cas, let value = operation.expectedValue { seen.insert(value) }
    }
    return operations.filter { operation in
      switch (operation.kind, operation.outcome) {
      case (.read, .ok), (.write, .ok), (.cas, .ok): return true
      // A 409 names the current version; a compare-and-set refused before it was proposed
      // (not sent, no leader) names none and had no effect.
      case (.cas, .fail): return operation.version != nil
      case (.write, .info), (.cas, .info): return operation.value.map(seen.contains) ?? false
      case (.read, .fail), (.read, .info), (.write, .fail): return false
      }
    }
  }

  /// An event of the search's list: an operation's call or its return.
  private struct Event {
    var operation: Int
    var isCall: Bool
    var time: Int64
    var previous: Int
    var next: Int
    /// A call's return event (index in the list storage).
    var match: Int
  }

  /// A set of operation numbers as bits, hashable for the memo.
  private struct BitSet: Hashable {
    var words: [UInt64]
    init(count: Int) { words = [UInt64](repeating: 0, count: (count + 63) / 64) }
    mutating func insert(_ index: Int) { words[index >> 6] |= 1 << UInt64(index & 63) }
    mutating func remove(_ index: Int) { words[index >> 6] &= ~(1 << UInt64(index & 63)) }
  }

  private struct Memo: Hashable {
    var linearized: BitSet
    var state: RegisterState
  }

  private struct Frame {
    var call: Int
    var before: RegisterState
    var alternatives: [RegisterState]
  }

  static func checkKey(
    _ key: String, _ all: [JepsenOperation], stepsLeft: Int, deadline: ContinuousClock.Instant, clock: ContinuousClock
  ) -> KeyCheck {
    let operations = relevant(all)
    var owners: [UInt64: String?] = [:]
    for operation in operations where operation.outcome == .ok {
      guard let version = operation.version else { continue }
      owners[version] = operation.kind == .read ? operation.readValue : operation.value
    }
    // Events sorted by time; at equal times calls first (they may be concurrent).
    var points: [(time: Int64, isCall: Bool, operation: Int)] = []
    for (index, operation) in operations.enumerated() {
      points.append((operation.invokedAt, true, index))
      points.append((operation.completedAt ?? Int64.max, false, index))
    }
    points.sort { a, b in
      if a.time != b.time { return a.time < b.time }
      if a.isCall != b.isCall { return a.isCall }
      return a.operation < b.operation
    }
    // Storage: 0 is the head sentinel; events at 1...n.
    var events = [Event(operation: -1, isCall: false, time: Int64.min, previous: -1, next: 1, match: -1)]
    var callOf = [Int](repeating: -1, count: operations.count)
    for (position, point) in points.enumerated() {
      let index = position + 1
      events.append(
        Event(
          operation: point.operation, isCall: point.isCall, time: point.time, previous: index - 1,
          next: position + 1 < points.count ? index + 1 : -1, match: -1))
      if point.isCall { callOf[point.operation] = index }
    }
    for index in events.indices.dropFirst() where !events[index].isCall {
      events[callOf[events[index].operation]].match = index
    }
    if points.isEmpty { events[0].next = -1 }

    func lift(_ call: Int) {
      for index in [call, events[call].match] {
        let previous = events[index].previous
        let next = events[index].next
        events[previous].next = next
        if next >= 0 { events[next].previous = previous }
      }
    }
    func unlift(_ call: Int) {
      for index in [events[call].match, call] {
        let previous = events[index].previous
        let next = events[index].next
        events[previous].next = index
        if next >= 0 { events[next].previous = index }
      }
    }

    var state = RegisterState.absent
    var linearized = BitSet(count: operations.count)
    var memo: Set<Memo> = []
    var stack: [Frame] = []
    var steps = 0
    var best: (depth: Int, prefix: [Int], state: RegisterState, stuck: Int?) = (0, [], .absent, nil)
    var entry = events[0].next

    /// Applies the first alternative not seen before; false when every one was.
    func tryApply(_ call: Int, before: RegisterState, _ alternatives: [RegisterState]) -> Bool {
      let operation = events[call].operation
      var rest = alternatives
      while !rest.isEmpty {
        let next = rest.removeFirst()
        var candidate = linearized
        candidate.insert(operation)
        if memo.insert(Memo(linearized: candidate, state: next)).inserted {
          stack.append(Frame(call: call, before: before, alternatives: rest))
          linearized = candidate
          state = next
          lift(call)
          return true
        }
      }
      return false
    }

    while events[0].next >= 0 {
      steps += 1
      if steps >= stepsLeft || (steps & 1023 == 0 && clock.now > deadline) {
        let which = steps >= stepsLeft ? "the step budget" : "the time budget"
        return KeyCheck(
          key: key, verdict: .unknown, operations: operations.count, steps: steps, stuckAt: nil, longestPrefix: nil,
          stateAfterPrefix: nil, reason: "\(which) ran out after \(steps) steps (\(stack.count) linearized)")
      }
      if entry >= 0, events[entry].isCall {
        let before = state
        let alternatives = RegisterModel.step(state, operations[events[entry].operation], owners: owners)
        if tryApply(entry, before: before, alternatives) {

          entry = events[0].next
        } else {
          entry = events[entry].next
        }
        continue
      }
      // A return whose operation is not linearized yet (or the end of the list): backtrack.
      if entry >= 0, best.stuck == nil || stack.count > best.depth {
        best = (stack.count, stack.map { operations[events[$0.call].operation].id }, state, events[entry].operation)
      }
      guard let frame = stack.popLast() else {
        let stuck = best.stuck.map { operations[$0] }
        return KeyCheck(
          key: key, verdict: .notLinearizable, operations: operations.count, steps: steps, stuckAt: stuck,
          longestPrefix: best.prefix, stateAfterPrefix: best.state.description, reason: nil)
      }
      let operation = events[frame.call].operation
      linearized.remove(operation)
      state = frame.before
      unlift(frame.call)
      if tryApply(frame.call, before: frame.before, frame.alternatives) {
        entry = events[0].next
      } else {
        entry = events[frame.call].next
      }
    }
    return KeyCheck(
      key: key, verdict: .linearizable, operations: operations.count, steps: steps, stuckAt: nil, longestPrefix: nil,
      stateAfterPrefix: nil, reason: nil)
  }
}
