/// One operation on a single register, as a client saw it.
///
/// `invoke` and `response` are points of one global clock (strictly increasing per event). A
/// missing `response` means the client never learned the outcome (timeout): the operation may
/// have taken effect at any point after `invoke`, or never.
public struct RegisterOperation: Sendable, Hashable, CustomStringConvertible {
  public enum Kind: Sendable, Hashable {
    case write(Int64)
    /// A read that returned `value` (nil: the register was never written).
    case read(Int64?)
  }

  public var client: Int
  public var kind: Kind
  public var invoke: UInt64
  public var response: UInt64?

  public init(client: Int, kind: Kind, invoke: UInt64, response: UInt64?) {
    self.client = client
    self.kind = kind
    self.invoke = invoke
    self.response = response
  }

  public var description: String {
    let end = response.map(String.init) ?? "open"
    switch kind {
    case .write(let v): return "c\(client) write(\(v)) [\(invoke), \(end)]"
    case .read(let v): return "c\(client) read -> \(v.map(String.init) ?? "nil") [\(invoke), \(end)]"
    }
  }
}

/// Checks that a history of register operations is linearizable: there is a total order of the
/// operations that respects real time (an operation that responded before another was invoked
/// comes first) in which every read returns the latest write.
///
/// The search is Wing & Gong's, with Lowe's memoisation of (set of linearized operations, register
/// value), as in Horn & Kroening's and Porcupine's checkers. Run it per key: registers are
/// independent, so a history is linearizable if and only if each key's sub-history is.
public enum LinearizabilityChecker {
  public enum Verdict: Sendable, Hashable {
    case linearizable
    case notLinearizable
    /// The search exceeded its step budget (never observed on simulation histories).
    case undecided
  }

  /// True when `history` (one register, initially unwritten) is linearizable.
  public static func isLinearizable(_ history: [RegisterOperation]) -> Bool {
    check(history) == .linearizable
  }

  /// Decides whether `history` (one register, initially unwritten) is linearizable. Reads
  /// without a response are ignored (they have no effect); writes without one have an open end.
  public static func check(_ history: [RegisterOperation], budget maxSteps: Int = 10_000_000) -> Verdict {
    let ops = history.filter { op in
      if case .read = op.kind, op.response == nil { return false }
      return true
    }
    if ops.isEmpty { return .linearizable }
    // Events: call and return of each operation, sorted by time; returns of open operations last.
    struct Event {
      var op: Int
      var isCall: Bool
      var time: UInt64
    }
    var events: [Event] = []
    events.reserveCapacity(ops.count * 2)
    for (i, op) in ops.enumerated() {
      events.append(Event(op: i, isCall: true, time: op.invoke))
      events.append(Event(op: i, isCall: false, time: op.response ?? UInt64.max))
    }
    // Ties: a call before a return at the same time would order them as concurrent; the clock is
    // strictly increasing so ties occur only between open ends, which are all returns.
    events.sort { ($0.time, $0.isCall ? 0 : 1, $0.op) < ($1.time, $1.isCall ? 0 : 1, $1.op) }

    // Doubly linked list over events; index events.count is the head sentinel.
    let n = events.count
    let head = n
    var next = [Int](repeating: -1, count: n + 1)
    var prev = [Int](repeating: -1, count: n + 1)
    var matchingReturn = [Int](repeating: -1, count: ops.count)
    for i in 0..<n {
      next[i] = i + 1 < n ? i + 1 : -1
      prev[i] = i == 0 ? head : i - 1
      if !events[i].isCall { matchingReturn[events[i].op] = i }
    }
    next[head] = n > 0 ? 0 : -1

    func lift(_ call: Int) {
      let ret = matchingReturn[events[call].op]
      for e in [call, ret] {
        let p = prev[e]
        let q = next[e]
        next[p] = q
        if q >= 0 { prev[q] = p }
      }
    }
    func unlift(_ call: Int) {
      let ret = matchingReturn[events[call].op]
      for e in [ret, call] {
        let p = prev[e]
        let q = next[e]
        next[p] = e
        if q >= 0 { prev[q] = e }
      }
    }

    struct CacheKey: Hashable {
      var bits: [UInt64]
      var state: Int64?
    }
    var linearized = [UInt64](repeating: 0, count: (ops.count + 63) / 64)
    var cache: Set<CacheKey> = []
    var stack: [(call: Int, state: Int64?)] = []
    var state: Int64? = nil
    var entry = next[head]
    var budget = maxSteps

    while next[head] != -1 {
      budget -= 1
      if budget == 0 { return .undecided }
      guard entry >= 0 else { return .notLinearizable }
      let event = events[entry]
      if event.isCall {
        let op = ops[event.op]
        var newState = state
        var legal = true
        switch op.kind {
        case .write(let v): newState = v
        case .read(let v): legal = v == state
        }
        if legal {
          linearized[event.op / 64] |= 1 << UInt64(event.op % 64)
          if cache.insert(CacheKey(bits: linearized, state: newState)).inserted {
            stack.append((entry, state))
            state = newState
            lift(entry)
            entry = next[head]
            continue
          }
          linearized[event.op / 64] &= ~(1 << UInt64(event.op % 64))
        }
        entry = next[entry]
      } else {
        // A return reached with its call not linearized: backtrack.
        guard let top = stack.popLast() else { return .notLinearizable }
        state = top.state
        let op = events[top.call].op
        linearized[op / 64] &= ~(1 << UInt64(op % 64))
        unlift(top.call)
        entry = next[top.call]
      }
    }
    return .linearizable
  }
}
