import TealGossip
import TealGossipSim
import TealWire
import Testing

// MARK: - Refutation and precedence

@Suite struct SWIMIncarnationTests {
  @Test func aSuspicionOfThisNodeIsRefutedWithAHigherIncarnationSentToTheAccusers() throws {
    var core = try Fixture.core(size: 3)
    let out = core.receive(
      .gossip(updates: [Fixture.update(1, .suspect, incarnation: 0, by: 2)]), from: Fixture.id(3), now: .milliseconds(5)
    )
    #expect(core.myself.incarnation == 1)
    #expect(core.myself.status == .alive)
    #expect(core.statistics.refutations == 1)
    #expect(core.localHealth == 1, "Lifeguard: being suspected raises local health")
    let refutation = Fixture.update(1, .alive, incarnation: 1)
    let recipients = Fixture.sends(out).filter { $0.message.updates.contains(refutation) }.map(\.to)
    #expect(recipients.contains(Fixture.id(3)) && recipients.contains(Fixture.id(2)))
  }

  @Test func aStaleAccusationIsCorrectedWithoutRaisingTheIncarnationAgain() throws {
    var core = try Fixture.core(size: 3)
    _ = core.receive(.gossip(updates: [Fixture.update(1, .dead, incarnation: 0)]), from: Fixture.id(3), now: .zero)
    #expect(core.myself.incarnation == 1)
    let out = core.receive(
      .gossip(updates: [Fixture.update(1, .suspect, incarnation: 0)]), from: Fixture.id(2), now: .zero)
    #expect(core.myself.incarnation == 1)
    #expect(
      Fixture.sends(out).contains {
        $0.to == Fixture.id(2) && $0.message.updates.contains(Fixture.update(1, .alive, incarnation: 1))
      })
  }

  @Test func aSuspectReturnsToAliveOnlyWithAHigherIncarnation() throws {
    var core = try Fixture.core(size: 4)
    var out = core.receive(
      .gossip(updates: [Fixture.update(2, .suspect, incarnation: 0, by: 3)]), from: Fixture.id(3), now: .zero)
    #expect(core.member(Fixture.id(2))?.status == .suspect)
    #expect(Fixture.events(out) == [.statusChanged(Fixture.member(2, .suspect), previous: .alive)])
    _ = core.receive(.gossip(updates: [Fixture.update(2, .alive, incarnation: 0)]), from: Fixture.id(4), now: .zero)
    #expect(core.member(Fixture.id(2))?.status == .suspect, "alive at the same incarnation must not refute")
    out = core.receive(.gossip(updates: [Fixture.update(2, .alive, incarnation: 1)]), from: Fixture.id(2), now: .zero)
    #expect(core.member(Fixture.id(2))?.status == .alive)
    #expect(core.suspicionDeadline(of: Fixture.id(2)) == nil)
    #expect(Fixture.events(out) == [.statusChanged(Fixture.member(2, .alive, incarnation: 1), previous: .suspect)])
  }

  @Test func deadWinsAtEqualIncarnationAndOnlyAHigherIncarnationRevives() throws {
    var core = try Fixture.core(size: 3)
    // A death is believed from others only once the member is suspect here (see ForgeryTests).
    _ = core.receive(.gossip(updates: [Fixture.update(2, .suspect, incarnation: 3)]), from: Fixture.id(2), now: .zero)
    _ = core.receive(.gossip(updates: [Fixture.update(2, .dead, incarnation: 3)]), from: Fixture.id(3), now: .zero)
    #expect(core.member(Fixture.id(2))?.status == .dead)
    _ = core.receive(.gossip(updates: [Fixture.update(2, .alive, incarnation: 3)]), from: Fixture.id(3), now: .zero)
    _ = core.receive(.gossip(updates: [Fixture.update(2, .suspect, incarnation: 3)]), from: Fixture.id(3), now: .zero)
    #expect(core.member(Fixture.id(2))?.status == .dead)
    _ = core.receive(.gossip(updates: [Fixture.update(2, .alive, incarnation: 4)]), from: Fixture.id(2), now: .zero)
    #expect(core.member(Fixture.id(2))?.status == .alive)
  }

  @Test func aStaleSuspicionOfAnotherMemberIsAnsweredWithTheNewerRecord() throws {
    var core = try Fixture.core(size: 3)
    _ = core.receive(.gossip(updates: [Fixture.update(2, .alive, incarnation: 2)]), from: Fixture.id(2), now: .zero)
    let out = core.receive(
      .gossip(updates: [Fixture.update(2, .suspect, incarnation: 1, by: 3)]), from: Fixture.id(3), now: .zero)
    #expect(core.member(Fixture.id(2))?.status == .alive)
    #expect(
      Fixture.sends(out).contains {
        $0.to == Fixture.id(3) && $0.message.updates.contains(Fixture.update(2, .alive, incarnation: 2))
      })
  }

  @Test func newMetadataRaisesTheIncarnationAndReplacesTheOldRecordElsewhere() throws {
    var announcer = try SWIMCore(
      id: Fixture.id(2), metadata: Fixture.metadata(2), random: SplitMix64(seed: 1), now: .zero)
    var metadata = Fixture.metadata(2)
    metadata.raftRole = .leader
    metadata.raftTerm = 5
    let out = announcer.updateMetadata(metadata, now: .zero)
    #expect(announcer.myself.incarnation == 1)
    let update = try #require(Fixture.sends(out).isEmpty ? announcer.pendingBroadcasts.first?.update : nil)
    var observer = try Fixture.core(size: 3)
    let events = Fixture.events(observer.receive(.gossip(updates: [update]), from: Fixture.id(2), now: .zero))
    #expect(observer.member(Fixture.id(2))?.metadata.raftRole == .leader)
    #expect(events == [.metadataChanged(Member(id: Fixture.id(2), status: .alive, incarnation: 1, metadata: metadata))])
  }
}

// MARK: - Probing and suspicion

@Suite struct SWIMProbeTests {
  /// Runs timers until `core` pings someone; returns the time, target and sequence.
  static func firstPing(_ core: inout SWIMCore, after start: Duration = .zero) -> (
    Duration, NodeID, UInt64, SWIMMessage
  )? {
    var now = start
    for _ in 0..<100 {
      guard let wakeup = core.nextWakeup else { return nil }
      now = max(now, wakeup)
      for send in Fixture.sends(core.tick(now: now)) {
        if case .ping(let sequence, _) = send.message { return (now, send.to, sequence, send.message) }
      }
    }
    return nil
  }

  @Test func theSuspecterRemindsTheSuspectEveryPeriodUntilItRefutes() throws {
    let settings = SWIMSettings()
    var core = try Fixture.core(size: 3, settings: settings)
    let (start, target, _, _) = try #require(Self.firstPing(&core))
    _ = core.tick(now: start + settings.probeTimeout)
    let suspectedAt = start + settings.probeInterval
    _ = core.tick(now: suspectedAt)
    #expect(core.member(target)?.status == .suspect)
    func reminders(_ directives: [SWIMDirective]) -> Int {
      Fixture.sends(directives).filter { send in
        guard send.to == target, case .gossip(let updates) = send.message else { return false }
        return updates.first == MemberUpdate(member: core.member(target)!, suspectedBy: Fixture.id(1))
      }.count
    }
    #expect(reminders(core.tick(now: suspectedAt + settings.probeInterval)) == 1)
    #expect(reminders(core.tick(now: suspectedAt + settings.probeInterval * 2)) == 1)
    let refutation = Member(id: target, status: .alive, incarnation: 1, metadata: core.member(target)!.metadata)
    _ = core.receive(
      .gossip(updates: [MemberUpdate(member: refutation)]), from: target, now: suspectedAt + .milliseconds(450))
    #expect(core.member(target)?.status == .alive)
    #expect(reminders(core.tick(now: suspectedAt + settings.probeInterval * 3)) == 0)
  }

  @Test func aPingIsAnsweredWithAnAckOfTheSameSequence() throws {
    var core = try Fixture.core(size: 2)
    let out = core.receive(.ping(sequence: 77, updates: []), from: Fixture.id(2), now: .zero)
    let ack = try #require(Fixture.sends(out).first)
    #expect(ack.to == Fixture.id(2))
    guard case .ack(77, let target, _) = ack.message else {
      Issue.record("expected an ack, got \(ack.message)")
      return
    }
    #expect(target == Fixture.id(1))
  }

  @Test func aMissedAckLeadsToIndirectProbesThenSuspicionThenDeathAtTheSuspicionTimeout() throws {
    let settings = SWIMSettings()
    var core = try Fixture.core(size: 3, settings: settings)
    let (start, target, _, _) = try #require(Self.firstPing(&core))
    let helper = target == Fixture.id(2) ? Fixture.id(3) : Fixture.id(2)

    let indirect = Fixture.sends(core.tick(now: start + settings.probeTimeout))
    #expect(indirect.count == 1)
    #expect(indirect.first?.to == helper)
    if case .pingRequest(_, let requested, _) = indirect.first?.message {
      #expect(requested == target)
    } else {
      Issue.record("expected a ping request")
    }

    let periodEnd = start + settings.probeInterval
    let verdict = core.tick(now: periodEnd)
    #expect(core.member(target)?.status == .suspect)
    #expect(
      Fixture.events(verdict).contains(
        .statusChanged(
          Member(id: target, status: .suspect, incarnation: 0, metadata: core.member(target)!.metadata),
          previous: .alive)))
    #expect(
      Fixture.sends(verdict).contains {
        $0.to == target && $0.message.updates.contains { $0.member.id == target && $0.member.status == .suspect }
      }, "buddy system: the suspect is told at once")

    // Three members cannot produce independent confirmations: the shortest timeout applies.
    let deadline = try #require(core.suspicionDeadline(of: target))
    #expect(deadline == periodEnd + core.minSuspicionTimeout)
    #expect(core.minSuspicionTimeout == settings.minimumSuspicionTimeout, "the floor, above α · interval")
    _ = core.tick(now: deadline - .milliseconds(1))
    #expect(core.member(target)?.status == .suspect)
    let death = core.tick(now: deadline)
    #expect(core.member(target)?.status == .dead)
    #expect(
      Fixture.events(death).contains {
        if case .statusChanged(let member, .suspect) = $0 {
          member.id == target && member.status == .dead
        } else {
          false
        }
      })
  }

  @Test func anAckDuringThePeriodKeepsTheTargetAlive() throws {
    var core = try Fixture.core(size: 3)
    let (start, target, sequence, _) = try #require(Self.firstPing(&core))
    _ = core.receive(.ack(sequence: sequence, target: target, updates: []), from: target, now: start + .milliseconds(1))
    _ = core.tick(now: start + core.settings.probeInterval)
    #expect(core.member(target)?.status == .alive)
    #expect(core.statistics.probesFailed == 0)
  }

  @Test func aRelayedAckFromAHelperCountsAsSuccess() throws {
    var core = try Fixture.core(size: 3)
    let (start, target, sequence, _) = try #require(Self.firstPing(&core))
    let helper = target == Fixture.id(2) ? Fixture.id(3) : Fixture.id(2)
    _ = core.tick(now: start + core.settings.probeTimeout)
    _ = core.receive(
      .ack(sequence: sequence, target: target, updates: []), from: helper, now: start + .milliseconds(100))
    _ = core.tick(now: start + core.settings.probeInterval)
    #expect(core.member(target)?.status == .alive)
  }

  @Test func aHelperRelaysTheAckOrAnswersNackWhenTheTargetIsSilent() throws {
    var helper = try Fixture.core(size: 3)
    let relayed = Fixture.sends(
      helper.receive(.pingRequest(sequence: 5, target: Fixture.id(3), updates: []), from: Fixture.id(2), now: .zero))
    let ping = try #require(relayed.first)
    #expect(ping.to == Fixture.id(3))
    guard case .ping(let relaySequence, _) = ping.message else {
      Issue.record("expected a ping")
      return
    }
    let forwarded = Fixture.sends(
      helper.receive(
        .ack(sequence: relaySequence, target: Fixture.id(3), updates: []), from: Fixture.id(3), now: .milliseconds(2)))
    #expect(forwarded.count == 1)
    if case .ack(5, let target, _) = forwarded.first?.message {
      #expect(target == Fixture.id(3))
    } else {
      Issue.record("expected ack 5")
    }

    _ = helper.receive(
      .pingRequest(sequence: 6, target: Fixture.id(3), updates: []), from: Fixture.id(2), now: .milliseconds(10))
    let nacks = Fixture.sends(helper.tick(now: .milliseconds(10) + helper.settings.probeTimeout)).filter {
      if case .nack(6, _, _) = $0.message { true } else { false }
    }
    #expect(nacks.map(\.to) == [Fixture.id(2)])
  }

  @Test func probingASuspectCarriesItsSuspicionEvenWhenNothingElseIsLeftToGossip() throws {
    var core = try Fixture.core(size: 3)
    _ = core.receive(.gossip(updates: [Fixture.update(2, .suspect, by: 3)]), from: Fixture.id(3), now: .zero)
    for sequence in 0..<40 {
      _ = core.receive(.ping(sequence: UInt64(sequence), updates: []), from: Fixture.id(3), now: .zero)
    }
    #expect(core.pendingBroadcasts.isEmpty)
    var now = Duration.zero
    var pingToSuspect: SWIMMessage?
    while pingToSuspect == nil, let next = Self.firstPing(&core, after: now) {
      now = next.0 + .milliseconds(1)
      if next.1 == Fixture.id(2) { pingToSuspect = next.3 }
    }
    let ping = try #require(pingToSuspect)
    #expect(ping.updates.first?.member.id == Fixture.id(2))
    #expect(ping.updates.first?.member.status == .suspect)
  }
}

// MARK: - Lifeguard

@Suite struct LifeguardTests {
  @Test func independentConfirmationsShrinkTheSuspicionTimeoutFromMaximumToMinimum() throws {
    var core = try Fixture.core(size: 6, settings: Fixture.withoutSuspicionFloor)
    let suspected = Fixture.id(2)
    _ = core.receive(.gossip(updates: [Fixture.update(2, .suspect, by: 3)]), from: Fixture.id(3), now: .zero)
    let minimum = core.minSuspicionTimeout
    let maximum = core.maxSuspicionTimeout
    #expect(maximum == minimum * 3)
    #expect(core.suspicionDeadline(of: suspected) == maximum)
    _ = core.receive(.gossip(updates: [Fixture.update(2, .suspect, by: 4)]), from: Fixture.id(4), now: .milliseconds(1))
    let afterOne = try #require(core.suspicionDeadline(of: suspected))
    // log(2)/log(3) of the way from maximum to minimum.
    let expected = maximum - SWIMCore.multiply(maximum - minimum, by: 0.630_929_753_571_457_4)
    #expect(abs(Double((afterOne - expected).components.attoseconds)) < 2e9)
    _ = core.receive(.gossip(updates: [Fixture.update(2, .suspect, by: 4)]), from: Fixture.id(5), now: .milliseconds(2))
    #expect(core.suspicionDeadline(of: suspected) == afterOne, "the same suspecter twice is one confirmation")
    _ = core.receive(.gossip(updates: [Fixture.update(2, .suspect, by: 5)]), from: Fixture.id(5), now: .milliseconds(3))
    #expect(core.suspicionDeadline(of: suspected) == minimum)
  }

  @Test func aFailedProbeWithoutNacksRaisesLocalHealthAndStretchesTheNextProbe() throws {
    let settings = SWIMSettings()
    var core = try Fixture.core(size: 5, settings: settings)
    let (start, _, _, _) = try #require(SWIMProbeTests.firstPing(&core))
    _ = core.tick(now: start + settings.probeTimeout)  // three ping requests, no nack will come
    let end = start + settings.probeInterval
    let out = Fixture.sends(core.tick(now: end))
    #expect(core.localHealth == 3, "one per missing nack")
    let next = try #require(out.first { if case .ping = $0.message { true } else { false } })
    guard case .ping(let sequence, _) = next.message else { return }
    func pingRequests(_ directives: [SWIMDirective]) -> Int {
      Fixture.sends(directives).filter { if case .pingRequest = $0.message { true } else { false } }.count
    }
    let scaledTimeout = settings.probeTimeout * 4
    #expect(pingRequests(core.tick(now: end + scaledTimeout - .milliseconds(1))) == 0, "timeouts scale by 1 + health")
    #expect(pingRequests(core.tick(now: end + scaledTimeout)) > 0)
    _ = core.receive(.ack(sequence: sequence, target: next.to, updates: []), from: next.to, now: end + scaledTimeout)
    _ = core.tick(now: end + settings.probeInterval * 4)
    #expect(core.localHealth == 2, "a successful probe lowers local health by one")
  }

  @Test func aFailedProbeWhoseHelpersAllNackLeavesLocalHealthUnchanged() throws {
    let settings = SWIMSettings()
    var core = try Fixture.core(size: 5, settings: settings)
    let (start, target, sequence, _) = try #require(SWIMProbeTests.firstPing(&core))
    let requests = Fixture.sends(core.tick(now: start + settings.probeTimeout))
    #expect(requests.count == 3)
    for request in requests {
      _ = core.receive(
        .nack(sequence: sequence, target: target, updates: []), from: request.to, now: start + .milliseconds(150))
    }
    _ = core.tick(now: start + settings.probeInterval)
    #expect(core.localHealth == 0)
    #expect(core.member(target)?.status == .suspect)
  }

  @Test func localHealthSaturatesAtItsMaximum() throws {
    var core = try Fixture.core(size: 3)
    for incarnation in 0..<20 {
      _ = core.receive(
        .gossip(updates: [Fixture.update(1, .suspect, incarnation: UInt64(incarnation))]), from: Fixture.id(2),
        now: .zero)
    }
    #expect(core.localHealth == core.settings.maxLocalHealth)
  }
}

// MARK: - Dissemination, join, leave

@Suite struct SWIMDisseminationTests {
  @Test func eachUpdateIsPiggybackedLambdaTimesCeilLog10NPlusOneTimes() throws {
    var core = try Fixture.core(size: 3)
    _ = core.receive(.gossip(updates: [Fixture.update(9)]), from: Fixture.id(2), now: .zero)
    #expect(core.clusterSize == 4)
    #expect(core.retransmitLimit == 4)
    var carried = 0
    for sequence in 0..<20 {
      let out = core.receive(.ping(sequence: UInt64(sequence), updates: []), from: Fixture.id(3), now: .zero)
      carried += Fixture.sends(out).filter { $0.message.updates.contains(Fixture.update(9)) }.count
    }
    #expect(carried == 4)
    let large = try Fixture.core(size: 50)
    #expect(large.retransmitLimit == 8)
  }

  @Test func piggybackedUpdatesStayWithinThePayloadCapAndAllGoOutEventually() throws {
    var core = try Fixture.core(size: 200)
    var seen: Set<NodeID> = []
    for sequence in 0..<100 {
      let out = core.receive(.ping(sequence: UInt64(sequence), updates: []), from: Fixture.id(2), now: .zero)
      for send in Fixture.sends(out) {
        var size = 0
        for update in send.message.updates { size += update.wireBytes().count }
        #expect(size <= core.settings.maxPiggybackBytes)
        #expect(!send.message.updates.isEmpty || core.pendingBroadcasts.isEmpty)
        seen.formUnion(send.message.updates.map(\.member.id))
      }
    }
    #expect(seen.count == 199)
  }

  @Test func joinSendsToEverySeedAndRetriesUntilOneAnswers() throws {
    let settings = SWIMSettings()
    var joiner = try SWIMCore(
      id: Fixture.id(5), metadata: Fixture.metadata(5), settings: settings, random: SplitMix64(seed: 2), now: .zero)
    let first = Fixture.sends(joiner.join(seeds: [Fixture.id(1), Fixture.id(2), Fixture.id(5)], now: .zero))
    #expect(first.map(\.to) == [Fixture.id(1), Fixture.id(2)])
    #expect(joiner.isJoining)
    let retry = Fixture.sends(joiner.tick(now: settings.joinRetryInterval)).filter {
      if case .pushPull(false, true, _) = $0.message { true } else { false }
    }
    #expect(retry.count == 2)

    var seed = try Fixture.core(size: 3)
    guard case .pushPull(_, _, let joinState) = first[0].message else {
      Issue.record("expected push-pull")
      return
    }
    let answer = seed.receive(
      .pushPull(isResponse: false, isJoin: true, members: joinState), from: Fixture.id(5), now: .zero)
    #expect(Fixture.events(answer).contains(.joined(Fixture.member(5))))
    let response = try #require(
      Fixture.sends(answer).first { if case .pushPull(true, _, _) = $0.message { true } else { false } })
    let learned = Fixture.events(joiner.receive(response.message, from: Fixture.id(1), now: .milliseconds(1)))
    #expect(!joiner.isJoining)
    #expect(Set(joiner.members.map(\.id)) == [Fixture.id(1), Fixture.id(2), Fixture.id(3)])
    #expect(learned.count == 3)
  }

  @Test func aGracefulLeaveIsToldToEveryMemberAtOnceAndMarksItDead() throws {
    var leaver = try Fixture.core(size: 4)
    let out = Fixture.sends(leaver.leave(now: .zero))
    #expect(Set(out.map(\.to)) == [Fixture.id(2), Fixture.id(3), Fixture.id(4)])
    #expect(leaver.nextWakeup == nil)
    #expect(leaver.receive(.ping(sequence: 1, updates: []), from: Fixture.id(2), now: .zero).isEmpty)

    var observer = try SWIMCore(
      id: Fixture.id(2), metadata: Fixture.metadata(2), random: SplitMix64(seed: 3), now: .zero)
    _ = observer.receive(.gossip(updates: [Fixture.update(1)]), from: Fixture.id(1), now: .zero)
    let events = Fixture.events(observer.receive(out[0].message, from: Fixture.id(1), now: .milliseconds(1)))
    let departed = try #require(observer.member(Fixture.id(1)))
    #expect(departed.status == .dead && departed.leftGracefully)
    #expect(events == [.statusChanged(departed, previous: .alive)])
  }

  @Test func heldUnreachableMembersBecomeDeadOnlyWhenConfirmed() throws {
    var settings = SWIMSettings()
    settings.holdUnreachableUntilConfirmed = true
    var core = try Fixture.core(size: 3, settings: settings)
    _ = core.receive(.gossip(updates: [Fixture.update(2, .suspect, by: 3)]), from: Fixture.id(3), now: .zero)
    let deadline = try #require(core.suspicionDeadline(of: Fixture.id(2)))
    _ = core.tick(now: deadline)
    #expect(core.member(Fixture.id(2))?.status == .unreachable)
    _ = core.tick(now: deadline + .seconds(60))
    #expect(core.member(Fixture.id(2))?.status == .unreachable)
    let out = core.confirmDead(Fixture.id(2), now: deadline + .seconds(61))
    #expect(core.member(Fixture.id(2))?.status == .dead)
    #expect(Fixture.events(out).count == 1)
  }

  @Test func deadMembersAreForgottenWhenTheirTombstoneExpires() throws {
    var core = try Fixture.core(size: 3)
    _ = core.confirmDead(Fixture.id(2), now: .seconds(1))
    let out = Fixture.runTimers(&core, from: .seconds(1), until: .seconds(1) + core.settings.deadMemberRetention)
    #expect(core.member(Fixture.id(2)) == nil)
    #expect(
      Fixture.events(out).contains { if case .removed(let member) = $0 { member.id == Fixture.id(2) } else { false } })
  }

  @Test func failedMembersAreOfferedAPushPullSoThatHealedPartitionsMerge() throws {
    var core = try Fixture.core(size: 3)
    _ = core.receive(.gossip(updates: [Fixture.update(2, .dead)]), from: Fixture.id(3), now: .zero)
    // n3 never answers either, so it dies too and both compete for the reconnect attempts.
    let out = Fixture.runTimers(&core, from: .zero, until: core.settings.reconnectInterval * 10)
    #expect(
      Fixture.sends(out).contains {
        if case .pushPull(false, false, _) = $0.message { $0.to == Fixture.id(2) } else { false }
      })
  }

  @Test func aMessageFromAnUnknownSenderTriggersAPushPullAtMostOncePerPeriod() throws {
    var core = try Fixture.core(size: 2)
    let stranger = Fixture.id(7)
    func pushPulls(_ directives: [SWIMDirective]) -> Int {
      Fixture.sends(directives).filter {
        if case .pushPull(false, _, _) = $0.message { $0.to == stranger } else { false }
      }
      .count
    }
    #expect(pushPulls(core.receive(.ping(sequence: 1, updates: []), from: stranger, now: .milliseconds(10))) == 1)
    #expect(pushPulls(core.receive(.ping(sequence: 2, updates: []), from: stranger, now: .milliseconds(20))) == 0)
    let later = .milliseconds(10) + core.settings.probeInterval
    #expect(pushPulls(core.receive(.ping(sequence: 3, updates: []), from: stranger, now: later)) == 1)
    _ = core.receive(.gossip(updates: [Fixture.update(7)]), from: Fixture.id(2), now: later)
    #expect(pushPulls(core.receive(.ping(sequence: 4, updates: []), from: stranger, now: later * 3)) == 0)
  }

  @Test func invalidSettingsAreRejectedNamingTheField() {
    var settings = SWIMSettings()
    settings.probeTimeout = .seconds(5)
    #expect(throws: SWIMSettingsError(field: "probeTimeout", reason: "must be positive and shorter than probeInterval"))
    {
      try settings.validate()
    }
    #expect(throws: Never.self) { try SWIMSettings.memberlistLAN.validate() }
  }
}
