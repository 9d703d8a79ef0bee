import TealGossip
import TealGossipSim
import TealWire

/// Builders shared by the gossip tests.
enum Fixture {
  static func id(_ index: Int) -> NodeID { GossipSimulation.nodeID(index) }

  /// The defaults with Lifeguard's own suspicion bounds, for tests of its formula.
  static var withoutSuspicionFloor: SWIMSettings {
    var settings = SWIMSettings()
    settings.minimumSuspicionTimeout = .zero
    return settings
  }

  static func metadata(_ index: Int) -> MemberMetadata { GossipSimulation.metadata(for: index) }

  static func member(_ index: Int, _ status: MemberStatus = .alive, incarnation: UInt64 = 0) -> Member {
    Member(id: id(index), status: status, incarnation: incarnation, metadata: metadata(index))
  }

  static func update(
    _ index: Int, _ status: MemberStatus = .alive, incarnation: UInt64 = 0, by suspecter: Int? = nil
  ) -> MemberUpdate {
    MemberUpdate(member: member(index, status, incarnation: incarnation), suspectedBy: suspecter.map(id))
  }

  /// Node `n1` that already knows members `n2...n<size>` as alive (learned from a push-pull).
  static func core(size: Int, settings: SWIMSettings = SWIMSettings(), seed: UInt64 = 7) throws -> SWIMCore {
    var core = try SWIMCore(
      id: id(1), metadata: metadata(1), settings: settings, random: SplitMix64(seed: seed), now: .zero)
    if size > 1 {
      let members = (2...size).map { update($0) }
      _ = core.receive(.pushPull(isResponse: true, isJoin: false, members: members), from: id(2), now: .zero)
    }
    return core
  }

  static func sends(_ directives: [SWIMDirective]) -> [(message: SWIMMessage, to: NodeID)] {
    directives.compactMap { directive in
      if case .send(let message, let to) = directive { return (message, to) }
      return nil
    }
  }

  static func events(_ directives: [SWIMDirective]) -> [MembershipEvent] {
    directives.compactMap { directive in
      if case .event(let event) = directive { return event }
      return nil
    }
  }

  /// Calls `tick` at every wakeup up to `deadline` and returns everything it produced.
  static func runTimers(_ core: inout SWIMCore, from start: Duration, until deadline: Duration) -> [SWIMDirective] {
    var out: [SWIMDirective] = []
    var now = start
    while let wakeup = core.nextWakeup, wakeup <= deadline {
      now = max(now, wakeup)
      out += core.tick(now: now)
    }
    return out
  }
}
