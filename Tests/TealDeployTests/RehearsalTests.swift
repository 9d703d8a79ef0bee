import Testing

@testable import TealDeploy

@Suite("Deployment rehearsal (dry run)")
struct RehearsalTests {
  func weights(_ steps: [DeploymentRehearsal.Step]) -> [String] {
    steps.filter { $0.text.hasPrefix("weights:") }.map(\.text)
  }

  @Test func canaryRehearsalShiftsCanaryPercentThenTheRestAndSucceeds() {
    let (steps, engine) = DeploymentRehearsal.run(spec: makeSpec(.CANARY))
    #expect(engine.status == .SUCCESSFUL)
    let production = weights(steps).map { $0.components(separatedBy: ", test").first ?? $0 }
    #expect(production.contains("weights: production blue 90/green 10"))
    #expect(production.last == "weights: production blue 0/green 100")
    // Canary bake (2m) and bake time (5m) are waited out in simulated time.
    #expect(steps.last.map { $0.offset >= .minutes(7) } == true)
    #expect(steps.contains { $0.text == "stop web:1" })
  }

  @Test func linearRehearsalStepsByStepPercent() {
    let (steps, engine) = DeploymentRehearsal.run(spec: makeSpec(.LINEAR))
    #expect(engine.status == .SUCCESSFUL)
    let greens = weights(steps).compactMap { text -> String? in
      text.hasPrefix("weights: production")
        ? String(text.split(separator: ",")[0].split(separator: "/").last ?? "") : nil
    }
    #expect(greens.suffix(4) == ["green 25", "green 50", "green 75", "green 100"])
  }

  @Test func rehearsalCallsEachConfiguredHookOnceAtItsStage() {
    let (steps, _) = DeploymentRehearsal.run(spec: makeSpec(.BLUE_GREEN, hooks: [httpHook(hookableStages)]))
    let hookStages = steps.filter { $0.text.hasPrefix("call hook") }.compactMap(\.stage)
    #expect(hookStages == hookableStages)
  }
}

extension String {
  fileprivate func components(separatedBy separator: String) -> [String] {
    var parts: [String] = []
    var rest = Substring(self)
    while let range = rest.range(of: separator) {
      parts.append(String(rest[..<range.lowerBound]))
      rest = rest[range.upperBound...]
    }
    parts.append(String(rest))
    return parts
  }
}
