import TealCluster
import TealNodeTesting
import Testing

@Suite("ManualClock")
struct ManualClockTests {
  @Test("a sleeper wakes only once the clock is advanced past its deadline")
  func sleeperWakesOnAdvance() async throws {
    let clock = ManualClock(wallStart: 1_000)
    let woke = Task {
      try await clock.sleep(for: .seconds(2))
      return clock.elapsed
    }
    // Poll until the sleep is registered, then move time in two steps.
    while clock.sleeperCount == 0 { await Task.yield() }
    clock.advance(by: .seconds(1))
    #expect(clock.sleeperCount == 1)
    clock.advance(by: .seconds(1))
    #expect(try await woke.value == .seconds(2))
    #expect(clock.now() == LogTime(millisecondsSinceEpoch: 3_000))
    #expect(clock.sleeperCount == 0)
  }

  @Test("a cancelled sleeper throws at once and is forgotten")
  func cancelledSleeperThrows() async {
    let clock = ManualClock()
    let sleeper = Task { try await clock.sleep(for: .seconds(60)) }
    while clock.sleeperCount == 0 { await Task.yield() }
    sleeper.cancel()
    let result = await sleeper.result
    #expect(throws: CancellationError.self) { try result.get() }
    #expect(clock.sleeperCount == 0)
  }

  @Test("the monotonic instant moves with the time advanced, not with real time")
  func monotonicFollowsAdvance() {
    let clock = ManualClock()
    let start = clock.monotonicNow
    clock.advance(by: .milliseconds(250))
    #expect(start.duration(to: clock.monotonicNow) == .milliseconds(250))
  }
}
