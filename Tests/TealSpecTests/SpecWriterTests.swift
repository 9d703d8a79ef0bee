import Foundation
import TealDeploy
import TealWire
import Testing

@testable import TealSpec

/// `SpecWriter.yaml` reads back as the same spec (examples, the fuzz's accepted mutations, random
/// valid specs with hostile strings), and `--set` overrides name what is wrong.
@Suite struct SpecWriterTests {
  static let iterations = ProcessInfo.processInfo.environment["TEAL_FUZZ_ITERATIONS"].flatMap(Int.init) ?? 3000
  static let seed = ProcessInfo.processInfo.environment["TEAL_FUZZ_SEED"].flatMap(UInt64.init) ?? 0x5EC_3217

  static func exampleFiles() throws -> [String] {
    try FileManager.default.contentsOfDirectory(atPath: examplesDirectory.path)
      .filter { $0.hasSuffix(".yaml") || $0.hasSuffix(".json") }.sorted()
  }

  func expectRoundTrip(_ spec: ServiceSpec, _ context: String) {
    let text = SpecWriter.yaml(spec)
    do {
      let back = try SpecParser.parse(text: text, format: .yaml)
      #expect(back == spec, "\(context): written as\n\(text)")
    } catch {
      Issue.record("\(context): the written spec does not parse: \(error)\n\(text)")
    }
  }

  @Test func everyExampleReadsBackAsTheSameSpec() throws {
    for file in try Self.exampleFiles() {
      expectRoundTrip(try loadSpec(examplesDirectory.appendingPathComponent(file).path), file)
    }
  }

  @Test func theWrittenTextReadsLikeASpecAPersonWrites() throws {
    let spec = try parseYAML(
      """
      name: web
      desiredCount: 4
      productionPort: 8080
      testPort: 8081
      task:
        command: /usr/local/bin/teal-demo
        args: ["--port", "9000"]
        env: {VERSION: "3", A_B: "x y"}
        port: 9000
        healthCheck: {interval: 2s, timeout: 1s}
      deployment:
        strategy: CANARY
        bakeTime: 15m
        canary: {canaryPercent: 12.5, canaryBakeTime: 5m}
        lifecycleHooks:
          - stages: [PRODUCTION_TRAFFIC_SHIFT]
            http: {url: "http://127.0.0.1:9100/hooks/check", timeout: 20s}
            callBackDelay: 15s
            hookDetails: {team: web, retries: 3, tags: [a, "1"]}
        alarms:
          - name: canary-5xx
            metric: http5xxRate
            threshold: 0.01
            window: 2m
        circuitBreaker: {failureThreshold: 2}
      """)
    #expect(
      SpecWriter.yaml(spec) == """
        name: web
        desiredCount: 4
        productionPort: 8080
        testPort: 8081
        task:
          command: /usr/local/bin/teal-demo
          args: ["--port", "9000"]
          env:
            A_B: "x y"
            VERSION: "3"
          port: 9000
          healthCheck:
            interval: 2s
            timeout: 1s
        deployment:
          strategy: CANARY
          bakeTime: 15m
          canary:
            canaryPercent: 12.5
            canaryBakeTime: 5m
          lifecycleHooks:
            - stages: [PRODUCTION_TRAFFIC_SHIFT]
              http:
                url: "http://127.0.0.1:9100/hooks/check"
                timeout: 20s
              callBackDelay: 15s
              hookDetails: {"retries": 3, "tags": ["a", "1"], "team": "web"}
          alarms:
            - name: canary-5xx
              metric: http5xxRate
              threshold: 0.01
              window: 2m
          circuitBreaker:
            failureThreshold: 2

        """)
  }

  /// The specs the fuzz's mutations keep valid (the same mutations and inputs as SpecFuzzTests).
  @Test func everyAcceptedMutationOfTheExamplesReadsBack() throws {
    let examples = try Self.exampleFiles().map { name in
      (
        try String(contentsOf: examplesDirectory.appendingPathComponent(name), encoding: .utf8),
        SpecFormat(fileName: name)
      )
    }
    var random = SplitMix64(seed: Self.seed)
    var accepted = 0
    for iteration in 0..<Self.iterations {
      let (original, format) = examples[random.below(examples.count)]
      var text = original
      for _ in 0...random.below(4) { text = SpecFuzzTests.mutate(text, &random) }
      guard let spec = try? SpecParser.parse(text: text, format: format) else { continue }
      accepted += 1
      expectRoundTrip(spec, "mutation \(iteration) (TEAL_FUZZ_SEED=\(Self.seed))")
    }
    #expect(accepted > 0)
    print("spec writer: \(accepted) of \(Self.iterations) mutations accepted, each read back")
  }

  @Test func randomValidSpecsWithHostileStringsReadBack() {
    var random = SplitMix64(seed: Self.seed)
    for iteration in 0..<max(200, Self.iterations / 5) {
      let spec = RandomSpec.make(&random)
      // A spec the generator gets wrong (one the rules refuse) fails here too, with the rule.
      expectRoundTrip(spec, "random spec \(iteration) (TEAL_FUZZ_SEED=\(Self.seed))")
    }
  }

  // MARK: Overrides

  static let base = """
    name: demo
    desiredCount: 3
    productionPort: 8080
    testPort: 8081
    task:
      command: /bin/teal-demo
      env: {TEAL_DEMO_VERSION: "1.0.0"}
      healthCheck: {}
    deployment:
      strategy: BLUE_GREEN
      bakeTime: 1m
      lifecycleHooks:
        - stages: [POST_TEST_TRAFFIC_SHIFT]
          pause: true
    """

  func apply(_ sets: String...) throws(SpecErrors) -> ServiceSpec {
    var overrides: [SpecOverride] = []
    for text in sets { overrides.append(try SpecOverride(parsing: text)) }
    return try SpecWriter.applying(overrides, to: try parseYAML(Self.base))
  }

  func failure(_ sets: String...) -> [String] {
    do {
      var overrides: [SpecOverride] = []
      for text in sets { overrides.append(try SpecOverride(parsing: text)) }
      let spec = try SpecWriter.applying(overrides, to: try parseYAML(Self.base))
      Issue.record("expected an error, got \(spec)")
      return []
    } catch {
      return error.errors.map(\.description)
    }
  }

  @Test func overridesSetScalarsEnvironmentAndStrategy() throws {
    let spec = try apply(
      "task.env.TEAL_DEMO_VERSION=2.0.0", "task.env.EXTRA=3", "desiredCount=4", "deployment.strategy=CANARY",
      "deployment.canary.canaryPercent=20", "deployment.canary.canaryBakeTime=5s", "deployment.bakeTime=10s",
      "deployment.lifecycleHooks[0].callBackDelay=2s")
    #expect(spec.task.env == ["TEAL_DEMO_VERSION": "2.0.0", "EXTRA": "3"])
    #expect(spec.desiredCount == 4)
    #expect(spec.deployment.strategy == .CANARY)
    #expect(spec.deployment.canary == CanaryConfiguration(canaryPercent: 20, canaryBakeTime: .seconds(5)))
    #expect(spec.deployment.bakeTime == .seconds(10))
    #expect(spec.deployment.lifecycleHooks[0].callBackDelay == .seconds(2))
    // The circuit breaker's default stays derived from the new desired count.
    #expect(spec.deployment.circuitBreaker == .default(desiredCount: 4))
  }

  @Test func changingTheStrategyDropsTheOtherStrategiesSections() throws {
    let canary = try apply("deployment.strategy=CANARY", "deployment.canary.canaryPercent=20")
    let linear = try SpecWriter.applying(
      [
        SpecOverride(keyPath: "deployment.strategy", value: "LINEAR"),
        SpecOverride(keyPath: "deployment.linear", value: "{stepPercent: 25, stepBakeTime: 1s}"),
      ], to: canary)
    #expect(linear.deployment.canary == nil)
    #expect(linear.deployment.linear == LinearConfiguration(stepPercent: 25, stepBakeTime: .seconds(1)))
  }

  @Test func anEmptyValueOrNullRemovesAFieldAndListsTakeIndexes() throws {
    let spec = try apply("task.env.TEAL_DEMO_VERSION=", "deployment.lifecycleHooks[0]=null", "task.args[0]=--port")
    #expect(spec.task.env.isEmpty)
    #expect(spec.deployment.lifecycleHooks.isEmpty)
    #expect(spec.task.args == ["--port"])
    let quoted = try apply("task.env.TEAL_DEMO_VERSION=\"3\"", "task.args=[a, \"b c\", 4]")
    #expect(quoted.task.env["TEAL_DEMO_VERSION"] == "3")
    #expect(quoted.task.args == ["a", "b c", "4"])
  }

  @Test func aListItemCanBeAppendedAndAJSONSpecOverridden() throws {
    let spec = try apply(
      "deployment.lifecycleHooks[1]={stages: [PRE_SCALE_UP], command: {argv: [/bin/check, \"a b\"]}}",
      "deployment.lifecycleHooks[0].stages[1]=POST_PRODUCTION_TRAFFIC_SHIFT")
    #expect(spec.deployment.lifecycleHooks.count == 2)
    #expect(spec.deployment.lifecycleHooks[0].stages == [.POST_TEST_TRAFFIC_SHIFT, .POST_PRODUCTION_TRAFFIC_SHIFT])
    #expect(spec.deployment.lifecycleHooks[1].action == .command(argv: ["/bin/check", "a b"], timeout: .seconds(30)))
    let json = try loadSpec(examplesDirectory.appendingPathComponent("web-canary.json").path)
    let changed = try SpecWriter.applying(
      [SpecOverride(keyPath: "deployment.canary.canaryPercent", value: "12.5")], to: json)
    var expected = json
    expected.deployment.canary?.canaryPercent = 12.5
    #expect(changed == expected)
  }

  @Test func aKeyOutsideTheGrammarIsNamedWithTheAllowedFields() {
    let errors = failure("deployment.strategi=CANARY")
    #expect(errors.count == 1)
    #expect(errors.first?.hasPrefix("deployment.strategi: unknown field (allowed here: strategy, bakeTime") == true)
    #expect(failure("desiredCont=4").first?.hasPrefix("desiredCont: unknown field") == true)
    #expect(failure("task.healthCheck.intervall=2s").first?.hasPrefix("task.healthCheck.intervall: unknown") == true)
  }

  @Test func aValueTheRulesRefuseGetsTheParsersErrorWithItsFieldPath() {
    #expect(failure("desiredCount=many") == ["desiredCount: must be an integer, got many"])
    #expect(failure("desiredCount=\"4\"") == ["desiredCount: must be an integer, got \"4\""])
    #expect(
      failure("deployment.strategy=CANARY", "deployment.canary.canaryPercent=150") == [
        "deployment.canary.canaryPercent: must be in 0.1...100, got 150"
      ])
    #expect(failure("deployment.strategy=CANARY") == ["deployment.canary: is required when strategy is CANARY"])
    #expect(
      failure("deployment.strategy=ROLLING") == [
        "deployment.strategy: must be one of BLUE_GREEN, CANARY, LINEAR, STEPS, got ROLLING"
      ])
  }

  @Test func malformedKeyPathsAndPathsThroughScalarsAreNamed() {
    #expect(failure("=4") == ["--set: expected key=value, got \"=4\""])
    #expect(failure("task..env=1").first?.contains("needs a field name") == true)
    #expect(failure("task.args[x]=1") == ["task.args[x]: [x] is not a list index (0, 1, ...)"])
    #expect(
      failure("task.command.path=/x") == [
        "task.command.path: task.command is a scalar, not a mapping; it has no field path"
      ])
    #expect(
      failure("deployment.lifecycleHooks[3].pause=true") == [
        "deployment.lifecycleHooks[3].pause: deployment.lifecycleHooks has 1 item; index 3 is out of range (1 appends one)"
      ])
    #expect(failure("task.env.X=[unclosed").first?.hasPrefix("task.env.X: the value \"[unclosed\" is not YAML") == true)
  }
}

extension JSONValue {
  var nonNull: JSONValue? { self == .null ? nil : self }
}

/// Random specs that the rules accept, with strings full of what YAML treats specially.
enum RandomSpec {
  static let pieces = [
    "a", "Z", "0", "9", " ", "  ", "\"", "'", "\\", "#", ": ", ":", "-", "- ", "?", "&", "*", "!", "|", ">", "%", "@",
    "`", "[", "]", "{", "}", ",", "\n", "\t", "\r", "\u{0}", "\u{7F}", "\u{85}", "\u{A0}", "\u{2028}", "\u{2029}",
    "\u{FEFF}", "\u{FFFE}", "é", "🙂", "null", "~", "true", "0x1f", ".inf", "1e3", "---", "...", "<<", "\u{1B}[0m",
  ]

  /// Never starting with U+FEFF: Yams drops a leading byte order mark from every scalar, so no YAML
  /// spec has one (a JSON spec can; SpecWriter documents that it cannot write it back).
  static func string(_ random: inout SplitMix64, maxPieces: Int = 8) -> String {
    let text = (0..<random.below(maxPieces + 1)).map { _ in pieces[random.below(pieces.count)] }.joined()
    return text.hasPrefix("\u{FEFF}") ? "a" + text : text
  }

  static func nonEmpty(_ random: inout SplitMix64) -> String {
    let text = string(&random)
    return text.isEmpty ? "x" : text
  }

  static func span(_ random: inout SplitMix64, _ range: ClosedRange<Int64>) -> TimeSpan {
    // Round units and odd milliseconds alike.
    let value = range.lowerBound + Int64(random.below(Int(range.upperBound - range.lowerBound + 1)))
    switch random.below(3) {
    case 0: return TimeSpan(milliseconds: max(range.lowerBound, value / 1000 * 1000))
    default: return TimeSpan(milliseconds: value)
    }
  }

  static func stages(_ random: inout SplitMix64, from all: [LifecycleStage]) -> [LifecycleStage] {
    var chosen = all.filter { _ in random.below(3) == 0 }
    if chosen.isEmpty { chosen = [all[random.below(all.count)]] }
    if random.below(2) == 0 { chosen.reverse() }
    return chosen
  }

  static func json(_ random: inout SplitMix64, depth: Int) -> JSONValue {
    switch random.below(depth > 3 ? 4 : 6) {
    case 0: return .null
    case 1: return .bool(random.below(2) == 0)
    case 2:
      let numbers: [Double] = [0, -1, 3, 0.25, 1e300, -2.5e-7, 123_456_789_012, Double(random.below(100_000)) / 7]
      return .number(numbers[random.below(numbers.count)])
    case 3: return .string(string(&random))
    case 4: return .array((0..<random.below(4)).map { _ in json(&random, depth: depth + 1) })
    default:
      return .object(
        sorting: (0..<random.below(4)).map { _ in (string(&random, maxPieces: 3), json(&random, depth: depth + 1)) })
    }
  }

  static func make(_ random: inout SplitMix64) -> ServiceSpec {
    let names = ["web", "null", "true", "y", "a-1", "x" + String(repeating: "9", count: 62)]
    let desiredCount = 1 + random.below(1000)
    let productionPort = 1 + random.below(65535)
    var testPort = 1 + random.below(65535)
    if testPort == productionPort { testPort = productionPort == 1 ? 2 : productionPort - 1 }
    var port = random.below(2) == 0 ? 0 : 1 + random.below(65535)
    if port == productionPort || port == testPort { port = 0 }
    var env: [String: String] = [:]
    let envNames = ["VERSION", "_", "null", "TRUE", "a1", "X_Y"]
    for _ in 0..<random.below(4) { env[envNames[random.below(envNames.count)]] = string(&random) }
    let interval = span(&random, 1000...300_000)
    let health = HealthCheckConfiguration(
      path: "/" + string(&random), interval: interval, timeout: span(&random, 100...interval.milliseconds),
      healthyThreshold: 1 + random.below(10), unhealthyThreshold: 1 + random.below(10))
    let task = TaskSpec(
      command: nonEmpty(&random), args: (0..<random.below(4)).map { _ in string(&random) }, env: env, port: port,
      healthCheck: health)

    let strategy = DeploymentStrategy.allCases[random.below(4)]
    var canary: CanaryConfiguration?
    var linear: LinearConfiguration?
    var steps: StepsConfiguration?
    switch strategy {
    case .CANARY:
      canary = CanaryConfiguration(
        canaryPercent: Double(1 + random.below(1000)) / 10, canaryBakeTime: span(&random, 0...3_600_000))
    case .LINEAR:
      linear = LinearConfiguration(
        stepPercent: Double(30 + random.below(971)) / 10, stepBakeTime: span(&random, 0...600_000))
    case .STEPS:
      var tenths = Set((0..<random.below(5)).map { _ in 1 + random.below(999) })
      tenths.insert(1000)
      steps = StepsConfiguration(
        percents: tenths.sorted().map { Double($0) / 10 }, stepBakeTime: span(&random, 0...600_000))
    case .BLUE_GREEN: break
    }
    let hookable = LifecycleStage.allCases.filter(\.isHookable)
    let hooks = (0..<random.below(4)).map { _ -> LifecycleHookConfiguration in
      let stages = stages(&random, from: hookable)
      let action: HookAction
      switch random.below(3) {
      case 0:
        action = .http(
          url: "http://" + nonEmpty(&random).replacingOccurrences(of: " ", with: "_"),
          timeout: span(&random, 100...900_000))
      case 1:
        action = .command(
          argv: [nonEmpty(&random)] + (0..<random.below(3)).map { _ in string(&random) },
          timeout: span(&random, 100...900_000))
      default: action = .pause
      }
      return LifecycleHookConfiguration(
        stages: stages, action: action, callBackDelay: span(&random, 1000...3_600_000),
        timeoutAction: HookTimeoutAction.allCases[random.below(2)],
        overallTimeout: .minutes(Int64(1 + random.below(1440))),
        everyStep: stages.contains(.PRODUCTION_TRAFFIC_SHIFT) && random.below(2) == 0,
        // A null hookDetails reads as none.
        hookDetails: random.below(2) == 0 ? nil : json(&random, depth: 0).nonNull)
    }
    var alarmNames: Set<String> = []
    var alarms: [AlarmConfiguration] = []
    for _ in 0..<random.below(4) {
      let metric = AlarmMetric.allCases[random.below(2)]
      let name = random.below(3) == 0 ? metric.rawValue : nonEmpty(&random)
      guard alarmNames.insert(name).inserted else { continue }
      let periods = 1 + random.below(60)
      alarms.append(
        AlarmConfiguration(
          name: name, metric: metric,
          threshold: metric == .http5xxRate
            ? Double(random.below(1000)) / 1000 : Double(1 + random.below(600_000)) / Double(1 + random.below(3)),
          window: span(&random, 1000...3_600_000),
          evaluateDuring: random.below(2) == 0
            ? AlarmConfiguration.defaultStages : stages(&random, from: LifecycleStage.allCases),
          minimumRequests: 1 + random.below(1_000_000), evaluationPeriods: periods,
          datapointsToAlarm: 1 + random.below(periods), rollback: random.below(2) == 0))
    }
    let breaker =
      random.below(2) == 0
      ? CircuitBreakerConfiguration.default(desiredCount: desiredCount)
      : CircuitBreakerConfiguration(
        enable: random.below(2) == 0, rollback: random.below(2) == 0, failureThreshold: 1 + random.below(200),
        scaleUpTimeout: span(&random, 10_000...7_200_000))
    let deployment = DeploymentConfiguration(
      strategy: strategy, bakeTime: span(&random, 0...3_600_000), canary: canary, linear: linear, steps: steps,
      lifecycleHooks: hooks, alarms: alarms, circuitBreaker: breaker,
      abortScaleDownDelay: span(&random, 0...3_600_000),
      progressDeadline: random.below(2) == 0 ? nil : span(&random, 60_000...259_200_000))
    return ServiceSpec(
      name: names[random.below(names.count)], desiredCount: desiredCount, productionPort: productionPort,
      testPort: testPort, task: task, deployment: deployment)
  }
}
