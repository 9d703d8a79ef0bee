// MARK: - Settings

/// The tunables of SWIM with Lifeguard. The defaults target a LAN cluster of 3 to 50 nodes whose
/// gossip travels over already-open TLS connections (round trips well under a millisecond); see
/// Docs/GOSSIP.md for the rationale of each value.
public struct SWIMSettings: Sendable, Hashable {
  /// Time between two probes of this node (one protocol period), before the local health
  /// multiplier scales it.
  public var probeInterval: Duration = .milliseconds(200)
  /// How long a direct probe waits for its ack before asking others to probe indirectly, before
  /// the local health multiplier scales it. Must be shorter than `probeInterval`.
  public var probeTimeout: Duration = .milliseconds(80)
  /// How many members are asked to probe a member that missed its direct probe (k).
  public var indirectProbeCount: Int = 3
  /// α: the shortest suspicion lasts `α · max(1, log10 n) · probeInterval`.
  public var suspicionMultiplier: Double = 4
  /// The floor of every suspicion timeout. It must exceed the peer transport's worst-case
  /// reconnect (its backoff ceiling, 2 s by default, plus a connect and handshake), so that a
  /// member whose links are down for one reconnect can still refute. Zero disables the floor.
  public var minimumSuspicionTimeout: Duration = .seconds(3)
  /// β: the longest suspicion (no independent confirmation) is β times the shortest.
  public var suspicionMaxMultiplier: Double = 3
  /// Lifeguard's K: independent confirmations that shrink a suspicion to its shortest. Clusters
  /// too small to produce K confirmations (n − 2 < K) use the shortest timeout directly.
  public var expectedConfirmations: Int = 2
  /// Lifeguard's local health multiplier saturates here; probe interval and timeout scale by
  /// `1 + localHealth`.
  public var maxLocalHealth: Int = 8
  /// λ: each update is piggybacked `λ · ceil(log10(n + 1))` times.
  public var retransmitMultiplier: Int = 4
  /// Largest total encoded size of the updates piggybacked on one probe message.
  public var maxPiggybackBytes: Int = 1024
  /// How many random members receive a death, suspicion, refutation or metadata change at once,
  /// besides the piggybacked dissemination.
  public var urgentFanout: Int = 2
  /// Time between two push-pull full-state exchanges with a random member.
  public var pushPullInterval: Duration = .seconds(5)
  /// Time between two push-pulls offered to a random member held dead (not left) or unreachable,
  /// so that the two sides of a healed partition find each other again.
  public var reconnectInterval: Duration = .seconds(2)
  /// Time between two join attempts through the seeds, until one answers.
  public var joinRetryInterval: Duration = .seconds(1)
  /// How long a dead member stays in the list (as a tombstone that stops stale gossip from
  /// resurrecting it) before it is forgotten.
  public var deadMemberRetention: Duration = .seconds(3600)
  /// When true, a suspicion that times out makes the member `unreachable` and only `confirmDead`
  /// makes it `dead`; when false (default) it becomes `dead` at once.
  public var holdUnreachableUntilConfirmed: Bool = false
  /// The largest incarnation rise this node believes from anyone but the member itself: a relayed
  /// record (or a claim about this node) further above the incarnation known is dropped, so that
  /// one forged number cannot push a member out of reach of its own refutations. Records signed by
  /// the member (see `SWIMRecordAuthenticator`) are exempt. `UInt64.max` is never accepted.
  public var maxIncarnationJump: UInt64 = 1 << 16
  /// The most members the table holds (tombstones included); news of further ids is dropped.
  public var maxMembers: Int = 1024
  /// The most messages one sender may have handled per second; the rest are dropped whole (a
  /// LAN member sends well under 50 to any one member).
  public var maxMessagesPerSenderPerSecond: Int = 200

  public init() {}

  /// hashicorp/memberlist's `DefaultLANConfig` timing, in this implementation: 1 s probe interval,
  /// 500 ms probe timeout, 3 indirect checks, suspicion multiplier 4 (4 s minimum for small
  /// clusters), maximum 6 times that, retransmit multiplier 4, 30 s push-pull. memberlist's
  /// separate 200 ms gossip tick has no equivalent here; `urgentFanout` stands in for it.
  public static var memberlistLAN: SWIMSettings {
    var settings = SWIMSettings()
    settings.probeInterval = .seconds(1)
    settings.probeTimeout = .milliseconds(500)
    settings.indirectProbeCount = 3
    settings.suspicionMultiplier = 4
    settings.suspicionMaxMultiplier = 6
    settings.expectedConfirmations = 2
    settings.maxLocalHealth = 8
    settings.retransmitMultiplier = 4
    settings.urgentFanout = 3
    settings.pushPullInterval = .seconds(30)
    settings.reconnectInterval = .seconds(30)
    settings.minimumSuspicionTimeout = .zero
    return settings
  }

  /// Fails with a message naming the first setting that is out of range.
  public func validate() throws(SWIMSettingsError) {
    func fail(_ field: String, _ reason: String) -> SWIMSettingsError {
      SWIMSettingsError(field: field, reason: reason)
    }
    if probeInterval <= .zero { throw fail("probeInterval", "must be positive") }
    if probeTimeout <= .zero || probeTimeout >= probeInterval {
      throw fail("probeTimeout", "must be positive and shorter than probeInterval")
    }
    if indirectProbeCount < 0 { throw fail("indirectProbeCount", "must not be negative") }
    if !(suspicionMultiplier >= 1) { throw fail("suspicionMultiplier", "must be at least 1") }
    if minimumSuspicionTimeout < .zero { throw fail("minimumSuspicionTimeout", "must not be negative") }
    if !(suspicionMaxMultiplier >= 1) { throw fail("suspicionMaxMultiplier", "must be at least 1") }
    if expectedConfirmations < 0 { throw fail("expectedConfirmations", "must not be negative") }
    if maxLocalHealth < 0 { throw fail("maxLocalHealth", "must not be negative") }
    if retransmitMultiplier < 1 { throw fail("retransmitMultiplier", "must be at least 1") }
    if maxPiggybackBytes < 256 { throw fail("maxPiggybackBytes", "must be at least 256") }
    if urgentFanout < 0 { throw fail("urgentFanout", "must not be negative") }
    if pushPullInterval <= .zero { throw fail("pushPullInterval", "must be positive") }
    if reconnectInterval <= .zero { throw fail("reconnectInterval", "must be positive") }
    if joinRetryInterval <= .zero { throw fail("joinRetryInterval", "must be positive") }
    if deadMemberRetention <= .zero { throw fail("deadMemberRetention", "must be positive") }
    if maxIncarnationJump < 1 { throw fail("maxIncarnationJump", "must be at least 1") }
    if maxMembers < 1 { throw fail("maxMembers", "must be at least 1") }
    if maxMessagesPerSenderPerSecond < 1 { throw fail("maxMessagesPerSenderPerSecond", "must be at least 1") }
  }
}

/// A setting out of range, naming the field.
public struct SWIMSettingsError: Error, Hashable, Sendable, CustomStringConvertible {
  public let field: String
  public let reason: String

  public init(field: String, reason: String) {
    self.field = field
    self.reason = reason
  }

  public var description: String { "invalid gossip setting \(field): \(reason)" }
}

// MARK: - Randomness
