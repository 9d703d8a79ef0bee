import TealGossip
import TealGossipSim
import TealWire
import Testing

// Issue 13, defect 5: late timers and slow links must not make false deaths. Each test failed
// before its fix.

@Suite struct LateTimerTests {
  @Test func aLateTickGivesTheIndirectProbesTheirFullWindowBeforeJudging() throws {
    var core = try Fixture.core(size: 3)
    let (start, target, _, _) = try #require(SWIMProbeTests.firstPing(&core))
    let late = start + core.settings.probeInterval + .milliseconds(120)
    let requests = Fixture.sends(core.tick(now: late)).compactMap { send -> (NodeID, UInt64)? in
      if case .pingRequest(let sequence, target, _) = send.message { return (send.to, sequence) }
      return nil
    }
    let (helper, sequence) = try #require(requests.first)
    #expect(core.member(target)?.status == .alive, "judged in the same call as the ping requests")
    _ = core.receive(.ack(sequence: sequence, target: target, updates: []), from: helper, now: late + .milliseconds(5))
    _ = Fixture.runTimers(&core, from: late, until: late + core.settings.probeInterval)
    #expect(core.member(target)?.status == .alive)
  }

  @Test func theShortestSuspicionOutlastsATransportReconnect() throws {
    let settings = SWIMSettings()
    // PeerTransport's default backoff ceiling is 2 s; a reconnect also needs a connect and a
    // TLS handshake.
    #expect(settings.minimumSuspicionTimeout > .seconds(2))
    for size in [3, 5, 10, 50] {
      let core = try Fixture.core(size: size)
      #expect(core.minSuspicionTimeout >= settings.minimumSuspicionTimeout)
    }
  }
}
