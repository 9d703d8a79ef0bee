/// Capped exponential backoff with jitter for reconnecting to a peer.
///
/// The delay before attempt `n` (n = 0 after the first failure) is drawn uniformly from
/// `[ceiling/2, ceiling]` where `ceiling = min(maximum, initial * multiplier^n)`: half the
/// ceiling keeps retries from hammering a dead peer, the random half keeps a cluster that lost a
/// node from reconnecting in lockstep.
public struct Backoff: Sendable, Equatable {
  public var initialMilliseconds: Int
  public var maximumMilliseconds: Int
  public var multiplier: Int

  public init(initialMilliseconds: Int = 50, maximumMilliseconds: Int = 2_000, multiplier: Int = 2) {
    self.initialMilliseconds = max(1, initialMilliseconds)
    self.maximumMilliseconds = max(self.initialMilliseconds, maximumMilliseconds)
    self.multiplier = max(1, multiplier)
  }

  /// The upper bound of the delay after `failures` consecutive failures (1 or more).
  public func ceilingMilliseconds(afterFailures failures: Int) -> Int {
    var ceiling = initialMilliseconds
    var n = 1
    while n < failures && ceiling < maximumMilliseconds {
      ceiling =
        ceiling.multipliedReportingOverflow(by: multiplier).overflow ? maximumMilliseconds : ceiling * multiplier
      n += 1
    }
    return min(ceiling, maximumMilliseconds)
  }

  /// A delay after `failures` consecutive failures, drawn with `generator`.
  public func delayMilliseconds(afterFailures failures: Int, using generator: inout some RandomNumberGenerator) -> Int {
    let ceiling = ceilingMilliseconds(afterFailures: failures)
    return Int.random(in: (ceiling / 2)...ceiling, using: &generator)
  }
}
