import TealGossip
import TealGossipSim
import TealWire
import Testing

// Issue 13, defect 1: incarnation overflow. Failed before its fix.

@Suite struct IncarnationBoundTests {
  @Test func anAccusationAtTheLargestIncarnationIsIgnoredInsteadOfTrapping() throws {
    var core = try Fixture.core(size: 3)
    for status in [MemberStatus.suspect, .dead, .unreachable] {
      _ = core.receive(
        .gossip(updates: [Fixture.update(1, status, incarnation: .max, by: 2)]), from: Fixture.id(2), now: .zero)
    }
    _ = core.receive(.gossip(updates: [Fixture.update(1, .alive, incarnation: .max)]), from: Fixture.id(2), now: .zero)
    _ = core.receive(
      .gossip(updates: [Fixture.update(1, .alive, incarnation: .max - 1)]), from: Fixture.id(2), now: .zero)
    #expect(core.myself.incarnation == 0)
    #expect(core.myself.status == .alive)
  }

  @Test func anIncarnationJumpBeyondTheBoundIsIgnoredUnlessTheMemberMadeItItself() throws {
    var core = try Fixture.core(size: 3)
    let jump = core.settings.maxIncarnationJump
    // About this node: a claim far above anything it issued is not refuted.
    _ = core.receive(
      .gossip(updates: [Fixture.update(1, .suspect, incarnation: jump + 1, by: 2)]), from: Fixture.id(2), now: .zero)
    #expect(core.myself.incarnation == 0)
    // Within the bound it is refuted as before.
    _ = core.receive(
      .gossip(updates: [Fixture.update(1, .suspect, incarnation: jump, by: 2)]), from: Fixture.id(2), now: .zero)
    #expect(core.myself.incarnation == jump + 1)
    // About another member: relayed by a third node, a far jump is dropped...
    _ = core.receive(
      .gossip(updates: [Fixture.update(2, .dead, incarnation: jump + 1)]), from: Fixture.id(3), now: .zero)
    #expect(core.member(Fixture.id(2))?.incarnation == 0)
    // ...but the member itself may announce it (a restart that starts from the wall clock).
    _ = core.receive(
      .gossip(updates: [Fixture.update(2, .alive, incarnation: jump * 4)]), from: Fixture.id(2), now: .zero)
    #expect(core.member(Fixture.id(2))?.incarnation == jump * 4)
    #expect(core.member(Fixture.id(2))?.status == .alive)
  }
}
