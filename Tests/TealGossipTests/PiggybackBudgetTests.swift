import TealGossip
import TealGossipSim
import TealWire
import Testing

// Issue 13, defect 8: the piggyback budget. Failed before its fix.

@Suite struct PiggybackBudgetTests {
  static func large(_ index: Int, incarnation: UInt64 = 1) -> MemberUpdate {
    var member = Fixture.member(index, incarnation: incarnation)
    member.metadata.listenerPorts = Array(1000..<1600)
    return MemberUpdate(member: member)
  }

  @Test func anUpdateLargerThanTheBudgetIsStillSent() throws {
    var core = try Fixture.core(size: 3)
    let big = Self.large(2)
    #expect(big.wireBytes().count > core.settings.maxPiggybackBytes)
    _ = core.receive(.gossip(updates: [big]), from: Fixture.id(2), now: .zero)
    var carried = 0
    for sequence in 0..<10 {
      let out = core.receive(.ping(sequence: UInt64(sequence), updates: []), from: Fixture.id(3), now: .zero)
      carried += Fixture.sends(out).filter { $0.message.updates.contains(big) }.count
    }
    #expect(carried == core.retransmitLimit)
    #expect(core.pendingBroadcasts.isEmpty)
  }

  @Test func theBuddyNoticeAndExplicitUpdatesCountAgainstTheBudget() throws {
    var core = try Fixture.core(size: 60)
    // Fill the queue with news, and make n2 a suspect so that probing it carries a notice.
    for index in 3...60 {
      _ = core.receive(.gossip(updates: [Fixture.update(index, incarnation: 1)]), from: Fixture.id(index), now: .zero)
    }
    _ = core.receive(.gossip(updates: [Fixture.update(2, .suspect, by: 3)]), from: Fixture.id(3), now: .zero)
    var checked = 0
    for _ in 0..<400 {
      guard let wakeup = core.nextWakeup else { break }
      for send in Fixture.sends(core.tick(now: wakeup)) where send.message.updates.count > 1 {
        if case .pushPull = send.message { continue }  // a full list, not a piggyback
        let size = send.message.updates.reduce(0) { $0 + $1.wireBytes().count }
        #expect(size <= core.settings.maxPiggybackBytes, "\(send.message.updates.count) updates")
        checked += 1
      }
    }
    #expect(checked > 0)
  }
}
