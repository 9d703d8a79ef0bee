/// SplitMix64: the small, fast, seedable generator every pure core draws from (Raft's election
/// timeouts, SWIM's probe order) and the simulations and tests use. Deterministic for a given
/// seed, so a run replays exactly. Not for secrets.
public struct SplitMix64: RandomNumberGenerator, Sendable, Hashable {
  public private(set) var state: UInt64

  public init(seed: UInt64) { state = seed }

  public mutating func next() -> UInt64 {
    state &+= 0x9E37_79B9_7F4A_7C15
    var z = state
    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
    z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
    return z ^ (z >> 31)
  }

  /// A value in `0..<bound` (`bound` > 0), by modulo: cheap, and its small bias is irrelevant
  /// for simulation choices.
  public mutating func below(_ bound: Int) -> Int {
    Int(next() % UInt64(bound))
  }
}
