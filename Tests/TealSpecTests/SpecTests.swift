import Foundation
import TealDeploy
import Testing

@testable import TealSpec

/// Deploy/examples, located from this file.
let examplesDirectory = URL(fileURLWithPath: #filePath)
  .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
  .appendingPathComponent("Deploy/examples")

/// Reads and parses a spec file the way the CLI does.
func loadSpec(_ path: String) throws -> ServiceSpec {
  try SpecParser.parse(String(contentsOfFile: path, encoding: .utf8), fileName: path)
}

func parseYAML(_ text: String) throws(SpecErrors) -> ServiceSpec { try SpecParser.parse(text: text, format: .yaml) }
func parseJSON(_ text: String) throws(SpecErrors) -> ServiceSpec { try SpecParser.parse(text: text, format: .json) }

/// The errors of `text` as `path: message` lines (no locations), or [] when it parses.
func errors(yaml text: String) -> [String] {
  do {
    _ = try parseYAML(text)
    return []
  } catch {
    return error.errors.map { "\($0.path): \($0.message)" }
  }
}

func errors(json text: String) -> [String] {
  do {
    _ = try parseJSON(text)
    return []
  } catch {
    return error.errors.map { "\($0.path): \($0.message)" }
  }
}

/// A valid spec that the bad-spec cases each break in one place.
let baseSpecYAML = """
  name: web
  desiredCount: 3
  productionPort: 8080
  testPort: 8081
  task:
    command: /bin/demo
    args: ["--port", "9000"]
    env:
      MODE: blue
    port: 9000
    healthCheck:
      path: /health
      interval: 5s
      timeout: 2s
      healthyThreshold: 2
      unhealthyThreshold: 3
  deployment:
    strategy: CANARY
    bakeTime: 5m
    canary:
      canaryPercent: 10
      canaryBakeTime: 2m
    lifecycleHooks:
      - stages: [POST_TEST_TRAFFIC_SHIFT]
        http:
          url: http://127.0.0.1:9100/hook
          timeout: 10s
        callBackDelay: 30s
        timeoutAction: ROLLBACK
    alarms:
      - name: errors
        metric: http5xxRate
        threshold: 0.05
        window: 1m
        evaluateDuring: [BAKE_TIME]
    circuitBreaker:
      enable: true
      rollback: true
      failureThreshold: 3
      scaleUpTimeout: 5m
  """

struct BadSpec: CustomTestStringConvertible, Sendable {
  var replace: String
  var with: String
  var error: String
  var testDescription: String { error }
}

@Suite struct SpecTests {
  @Test func everyExampleInDeployExamplesParses() throws {
    let files = try FileManager.default.contentsOfDirectory(atPath: examplesDirectory.path)
      .filter { $0.hasSuffix(".yaml") || $0.hasSuffix(".json") }.sorted()
    #expect(files.count >= 4)
    for required in ["web-blue-green.yaml", "web-canary.yaml", "web-linear.yaml"] { #expect(files.contains(required)) }
    for file in files {
      #expect(throws: Never.self, "\(file)") {
        _ = try loadSpec(examplesDirectory.appendingPathComponent(file).path)
      }
    }
  }

  @Test func jsonAndYAMLExamplesOfTheSameSpecAreEqualAndHaveTheSameDigest() throws {
    let yaml = try loadSpec(examplesDirectory.appendingPathComponent("web-canary.yaml").path)
    let json = try loadSpec(examplesDirectory.appendingPathComponent("web-canary.json").path)
    #expect(yaml == json)
    #expect(Revision.digest(of: yaml) == Revision.digest(of: json))
  }

  @Test func exampleValuesAreReadAsWritten() throws {
    let spec = try loadSpec(examplesDirectory.appendingPathComponent("web-linear.yaml").path)
    #expect(spec.deployment.strategy == .LINEAR)
    #expect(spec.deployment.linear == LinearConfiguration(stepPercent: 25, stepBakeTime: .minutes(2)))
    #expect(spec.task.healthCheck.path == "/ready")
    #expect(spec.task.healthCheck.interval == .seconds(5))  // default
    #expect(spec.deployment.alarms.first?.name == "latencyP99")
    #expect(spec.deployment.alarms.first?.evaluateDuring == AlarmConfiguration.defaultStages)
    #expect(spec.deployment.lifecycleHooks.first?.callBackDelay == .seconds(30))
    #expect(spec.deployment.productionWeightSteps.map(\.greenBasisPoints) == [2500, 5000, 7500, 10_000])
  }

  @Test func baseSpecOfTheBadSpecCasesIsValid() throws {
    let spec = try parseYAML(baseSpecYAML)
    #expect(spec.deployment.canary?.canaryPercent == 10)
  }

  @Test func durationsParseWithUnitsAndRejectOtherForms() {
    #expect(TimeSpan(parsing: "500ms") == .milliseconds(500))
    #expect(TimeSpan(parsing: "30s") == .seconds(30))
    #expect(TimeSpan(parsing: "5m") == .minutes(5))
    #expect(TimeSpan(parsing: "1h") == .hours(1))
    #expect(Rules.spanOrOverflow("99999999999999s") == .some(nil), "well-formed but too large")
    #expect(Rules.spanOrOverflow("5d") == nil)
    for bad in ["", "s", "10", "-5s", "1.5s", "5 m", "5d", "ms", "9999999999s"] {
      #expect(TimeSpan(parsing: bad) == nil, "\(bad)")
    }
    #expect(TimeSpan.seconds(90).description == "90s")
    #expect(TimeSpan.minutes(60).description == "1h")
  }

  static let badSpecs: [BadSpec] = [
    BadSpec(
      replace: "canaryPercent: 10", with: "canaryPercent: 150",
      error: "deployment.canary.canaryPercent: must be in 0.1...100, got 150"),
    BadSpec(
      replace: "canaryPercent: 10", with: "canaryPercent: 0.05",
      error: "deployment.canary.canaryPercent: must be in 0.1...100, got 0.05"),
    BadSpec(
      replace: "canaryPercent: 10", with: "canaryPercent: 12.345",
      error: "deployment.canary.canaryPercent: must be a multiple of 0.1, got 12.345"),
    BadSpec(
      replace: "canaryPercent: 10", with: "canaryPercent: 10.25",
      error: "deployment.canary.canaryPercent: must be a multiple of 0.1, got 10.25"),
    BadSpec(
      replace: "canaryBakeTime: 2m", with: "canaryBakeTime: 25h",
      error: "deployment.canary.canaryBakeTime: must be in 0s...24h, got 25h"),
    BadSpec(
      replace: "desiredCount: 3", with: "desiredCount: 99999999999999999999999",
      error: "desiredCount: must be in 1...1000, got 99999999999999999999999"),
    BadSpec(
      replace: "bakeTime: 5m", with: "bakeTime: 1000h",
      error: "deployment.bakeTime: must be in 0s...24h, got 1000h"),
    BadSpec(
      replace: "bakeTime: 5m", with: "bakeTime: 99999999999999999999s",
      error: "deployment.bakeTime: must be in 0s...24h, got 99999999999999999999s"),
    BadSpec(
      replace: "threshold: 0.05", with: "threshold: 1e999",
      error: "deployment.alarms[0].threshold: is out of range, got 1e999"),
    BadSpec(
      replace: "threshold: 0.05", with: "threshold: .inf",
      error: "deployment.alarms[0].threshold: must be a number, got .inf"),
    BadSpec(
      replace: "\n  port: 9000", with: "\n  port: 8081",
      error:
        "task.port: must differ from the service's listener ports (productionPort 8080, testPort 8081), got 8081"),
    BadSpec(
      replace: "evaluateDuring: [BAKE_TIME]", with: "evaluateDuring: [BAKE_TIME, BAKE_TIME]",
      error: "deployment.alarms[0].evaluateDuring[1]: repeats stage BAKE_TIME"),
    BadSpec(
      replace: "canaryPercent: 10", with: "canaryPercent: ten",
      error: "deployment.canary.canaryPercent: must be a number, got ten"),
    BadSpec(
      replace: "canaryPercent: 10", with: "canaryPct: 10",
      error: "deployment.canary.canaryPct: unknown field (allowed here: canaryPercent, canaryBakeTime)"),
    BadSpec(
      replace: "name: web\n", with: "",
      error: "name: is required"),
    BadSpec(
      replace: "name: web", with: "name: Web_1",
      error: "name: must be 1 to 63 lowercase letters, digits or '-', starting with a letter, got \"Web_1\""),
    BadSpec(
      replace: "desiredCount: 3", with: "desiredCount: 0",
      error: "desiredCount: must be in 1...1000, got 0"),
    BadSpec(
      replace: "desiredCount: 3", with: "desiredCount: \"3\"",
      error: "desiredCount: must be an integer, got \"3\""),
    BadSpec(
      replace: "desiredCount: 3", with: "desiredCount: 2.5",
      error: "desiredCount: must be an integer, got 2.5"),
    BadSpec(
      replace: "productionPort: 8080", with: "productionPort: 70000",
      error: "productionPort: must be in 1...65535, got 70000"),
    BadSpec(
      replace: "testPort: 8081", with: "testPort: 8080",
      error: "testPort: must differ from productionPort (8080)"),
    BadSpec(
      replace: "testPort: 8081", with: "testPort: 8081\nreplicas: 2",
      error: "replicas: unknown field (allowed here: name, desiredCount, productionPort, testPort, task, deployment)"),
    BadSpec(
      replace: "command: /bin/demo", with: "command: \"\"",
      error: "task.command: must not be empty"),
    BadSpec(
      replace: "args: [\"--port\", \"9000\"]", with: "args: \"--port 9000\"",
      error: "task.args: must be a list, got a string"),
    BadSpec(
      replace: "MODE: blue", with: "1MODE: blue",
      error: "task.env.1MODE: variable names must match [A-Za-z_][A-Za-z0-9_]*"),
    BadSpec(
      replace: "\n  port: 9000", with: "\n  port: 65536",
      error: "task.port: must be in 0...65535, got 65536"),
    BadSpec(
      replace: "path: /health", with: "path: health",
      error: "task.healthCheck.path: must start with '/', got \"health\""),
    BadSpec(
      replace: "interval: 5s", with: "interval: 5",
      error: "task.healthCheck.interval: must be a duration like 500ms, 30s, 5m or 1h, got 5"),
    BadSpec(
      replace: "timeout: 2s\n    healthyThreshold", with: "timeout: 10s\n    healthyThreshold",
      error: "task.healthCheck.timeout: must not exceed interval (5s), got 10s"),
    BadSpec(
      replace: "healthyThreshold: 2", with: "healthyThreshold: 11",
      error: "task.healthCheck.healthyThreshold: must be in 1...10, got 11"),
    BadSpec(
      replace: "healthCheck:", with: "healthcheck:",
      error: "task.healthcheck: unknown field (allowed here: command, args, env, port, healthCheck)"),
    BadSpec(
      replace: "strategy: CANARY", with: "strategy: ROLLING",
      error: "deployment.strategy: must be one of BLUE_GREEN, CANARY, LINEAR, STEPS, got ROLLING"),
    BadSpec(
      replace: "strategy: CANARY", with: "strategy: LINEAR",
      error: "deployment.linear: is required when strategy is LINEAR"),
    BadSpec(
      replace: "strategy: CANARY", with: "strategy: BLUE_GREEN",
      error: "deployment.canary: is only allowed when strategy is CANARY, not BLUE_GREEN"),
    BadSpec(
      replace: "bakeTime: 5m", with: "bakeTime: 3d",
      error: "deployment.bakeTime: must be a duration like 500ms, 30s, 5m or 1h, got 3d"),
    BadSpec(
      replace: "bakeTime: 5m", with: "bakeTime: 49h",
      error: "deployment.bakeTime: must be in 0s...24h, got 49h"),
    BadSpec(
      replace: "stages: [POST_TEST_TRAFFIC_SHIFT]", with: "stages: [BAKE_TIME]",
      error:
        "deployment.lifecycleHooks[0].stages[0]: BAKE_TIME is not hookable (hooks cannot run at SCALE_UP, BAKE_TIME or CLEAN_UP)"
    ),
    BadSpec(
      replace: "stages: [POST_TEST_TRAFFIC_SHIFT]", with: "stages: [AFTER_ALLOW_TRAFFIC]",
      error:
        "deployment.lifecycleHooks[0].stages[0]: must be one of RECONCILE_SERVICE, PRE_SCALE_UP, SCALE_UP, POST_SCALE_UP, TEST_TRAFFIC_SHIFT, POST_TEST_TRAFFIC_SHIFT, PRODUCTION_TRAFFIC_SHIFT, POST_PRODUCTION_TRAFFIC_SHIFT, BAKE_TIME, CLEAN_UP, got AFTER_ALLOW_TRAFFIC"
    ),
    BadSpec(
      replace: "stages: [POST_TEST_TRAFFIC_SHIFT]", with: "stages: []",
      error: "deployment.lifecycleHooks[0].stages: must name at least one stage"),
    BadSpec(
      replace: "stages: [POST_TEST_TRAFFIC_SHIFT]", with: "stages: [PRE_SCALE_UP, PRE_SCALE_UP]",
      error: "deployment.lifecycleHooks[0].stages[1]: repeats stage PRE_SCALE_UP"),
    BadSpec(
      replace: "url: http://127.0.0.1:9100/hook", with: "url: https://example.com/hook",
      error: "deployment.lifecycleHooks[0].http.url: must be a plain http:// URL, got \"https://example.com/hook\""),
    BadSpec(
      replace: "      http:\n        url: http://127.0.0.1:9100/hook\n        timeout: 10s\n", with: "",
      error: "deployment.lifecycleHooks[0]: must have one of http, command or pause"),
    BadSpec(
      replace: "      callBackDelay: 30s", with: "      command:\n        argv: [/bin/true]\n      callBackDelay: 30s",
      error: "deployment.lifecycleHooks[0]: must have only one of http, command or pause, got http, command"),
    BadSpec(
      replace: "      callBackDelay: 30s", with: "      callBackDelay: 0s",
      error: "deployment.lifecycleHooks[0].callBackDelay: must be in 1s...1h, got 0s"),
    BadSpec(
      replace: "timeoutAction: ROLLBACK", with: "timeoutAction: IGNORE",
      error: "deployment.lifecycleHooks[0].timeoutAction: must be one of ROLLBACK, CONTINUE, got IGNORE"),
    BadSpec(
      replace: "        timeout: 10s", with: "        timeout: 20m",
      error: "deployment.lifecycleHooks[0].http.timeout: must be in 100ms...15m, got 20m"),
    BadSpec(
      replace: "metric: http5xxRate", with: "metric: cpu",
      error: "deployment.alarms[0].metric: must be one of http5xxRate, latencyP99, got cpu"),
    BadSpec(
      replace: "threshold: 0.05", with: "threshold: 5",
      error: "deployment.alarms[0].threshold: must be a fraction in 0...1 (0.05 = 5 %) for http5xxRate, got 5"),
    BadSpec(
      replace: "threshold: 0.05", with: "threshold: -1\n      metric2: x",
      error:
        "deployment.alarms[0].metric2: unknown field (allowed here: name, metric, threshold, window, evaluateDuring, "
        + "minimumRequests, evaluationPeriods, datapointsToAlarm, rollback)"),
    BadSpec(
      replace: "window: 1m", with: "window: 2h",
      error: "deployment.alarms[0].window: must be in 1s...1h, got 2h"),
    BadSpec(
      replace: "evaluateDuring: [BAKE_TIME]", with: "evaluateDuring: BAKE_TIME",
      error: "deployment.alarms[0].evaluateDuring: must be a list, got a scalar"),
    BadSpec(
      replace: "      evaluateDuring: [BAKE_TIME]",
      with: "      evaluateDuring: [BAKE_TIME]\n    - name: errors\n      metric: latencyP99\n      threshold: 100",
      error: "deployment.alarms[1].name: duplicates alarm name \"errors\""),
    BadSpec(
      replace: "enable: true", with: "enable: yes",
      error: "deployment.circuitBreaker.enable: must be true or false, got yes"),
    BadSpec(
      replace: "failureThreshold: 3", with: "failureThreshold: 0",
      error: "deployment.circuitBreaker.failureThreshold: must be in 1...200, got 0"),
    BadSpec(
      replace: "scaleUpTimeout: 5m", with: "scaleUpTimeout: 1s",
      error: "deployment.circuitBreaker.scaleUpTimeout: must be in 10s...2h, got 1s"),
    BadSpec(
      replace: "deployment:\n", with: "deployment:\n  strategy: LINEAR\n",
      error: "deployment.strategy: is given more than once"),
    BadSpec(
      replace: "circuitBreaker:\n    enable: true\n    rollback: true\n    failureThreshold: 3\n    scaleUpTimeout: 5m",
      with: "circuitBreaker: true",
      error:
        "deployment.circuitBreaker: must be a mapping with fields enable, rollback, failureThreshold, scaleUpTimeout, "
        + "healthFloorGrace, got a scalar"
    ),
    BadSpec(
      replace: "scaleUpTimeout: 5m", with: "scaleUpTimeout: 5m\n    healthFloorGrace: 2h",
      error: "deployment.circuitBreaker.healthFloorGrace: must be in 0s...1h, got 2h"),
    BadSpec(
      replace: "env:\n    MODE: blue", with: "env: MODE=blue",
      error: "task.env: must be a mapping of variable names to strings, got a scalar"),
  ]

  @Test(arguments: badSpecs) func badSpecIsRejectedWithTheFieldAndTheRule(_ bad: BadSpec) {
    let yaml = "\n" + baseSpecYAML
    #expect(yaml.contains(bad.replace), "the case must change the base spec")
    let broken = yaml.replacingOccurrences(of: bad.replace, with: bad.with)
    #expect(errors(yaml: broken).first == bad.error, "\(errors(yaml: broken))")
  }

  @Test func aTaskPortOfZeroOrNoneLetsTheNodeAssignOne() throws {
    #expect(try parseYAML(baseSpecYAML.replacingOccurrences(of: "\n  port: 9000", with: "\n  port: 0")).task.port == 0)
    #expect(try parseYAML(baseSpecYAML.replacingOccurrences(of: "\n  port: 9000", with: "")).task.port == 0)
  }

  @Test func badSpecCasesNumberAtLeastThirty() { #expect(Self.badSpecs.count >= 30) }

  @Test func malformedDocumentsAreRejectedAsDocumentErrors() {
    for (text, prefix) in [
      ("name: [unclosed", "(document): invalid YAML"), ("", "(document): is empty"),
      ("- a\n- b", "(document): must be a mapping"),
    ] {
      #expect(errors(yaml: text).first?.hasPrefix(prefix) == true, "\(errors(yaml: text))")
    }
    #expect(errors(json: "name: web").first?.hasPrefix("(document): invalid JSON") == true)
  }

  @Test func jsonUsesTheSameRulesAsYAML() {
    #expect(
      errors(json: #"{"name": "web", "desiredCount": "3"}"#).contains("desiredCount: must be an integer, got \"3\""))
  }

  @Test func errorsOfASpecFileNameTheFileAndTheLine() throws {
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("teal-spec-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: directory) }
    let file = directory.appendingPathComponent("bad.yaml")
    let text = baseSpecYAML.replacingOccurrences(of: "desiredCount: 3", with: "desiredCount: -1")
    try text.write(to: file, atomically: true, encoding: .utf8)
    let error = #expect(throws: SpecErrors.self) { try loadSpec(file.path) }
    #expect(error?.errors.count == 1)
    #expect(error?.errors.first?.description == "\(file.path):2:15: desiredCount: must be in 1...1000, got -1")
    let json = #expect(throws: SpecErrors.self) { try SpecParser.parse("name: web", fileName: "x.json") }
    #expect(json?.errors.first?.file == "x.json")
    #expect(json?.errors.first?.description.hasPrefix("x.json:1:1: (document): invalid JSON: ") == true)
  }

  // MARK: All errors, locations, limits

  @Test func everyErrorOfAFileIsReportedInDocumentOrder() {
    let broken = baseSpecYAML.replacingOccurrences(of: "desiredCount: 3", with: "desiredCount: 0")
      .replacingOccurrences(of: "path: /health", with: "path: health")
      .replacingOccurrences(of: "canaryPercent: 10", with: "canaryPercent: 150")
      .replacingOccurrences(of: "window: 1m", with: "window: 2h")
    #expect(
      errors(yaml: broken) == [
        "desiredCount: must be in 1...1000, got 0",
        "task.healthCheck.path: must start with '/', got \"health\"",
        "deployment.canary.canaryPercent: must be in 0.1...100, got 150",
        "deployment.alarms[0].window: must be in 1s...1h, got 2h",
      ])
  }

  @Test func jsonSyntaxErrorsHaveLineAndColumn() {
    let text = "{\n  \"name\": \"web\",\n  \"desiredCount\": 3,,\n}"
    let error = #expect(throws: SpecErrors.self) { try parseJSON(text) }
    #expect(error?.errors.first?.location == SpecLocation(line: 3, column: 21))
    #expect(error?.errors.first?.message == "invalid JSON: expected a string key")
    let unterminated = #expect(throws: SpecErrors.self) { try parseJSON("{\"name\": \"web") }
    #expect(unterminated?.errors.first?.message == "invalid JSON: unterminated string")
  }

  @Test func fieldErrorsOfJSONSpecsHaveLineAndColumn() throws {
    let json = try String(contentsOf: examplesDirectory.appendingPathComponent("web-canary.json"), encoding: .utf8)
    let broken = json.replacingOccurrences(of: "\"desiredCount\": 4", with: "\"desiredCount\": 4000")
    #expect(broken != json)
    let error = #expect(throws: SpecErrors.self) { try parseJSON(broken) }
    let first = try #require(error?.errors.first)
    #expect(first.path == "desiredCount")
    #expect(first.location?.line == json.components(separatedBy: "\n").firstIndex { $0.contains("desiredCount") }! + 1)
  }

  @Test func theDefaultFailureThresholdIsDerivedFromTheDesiredCountAsECSDoes() throws {
    let withoutBreaker = baseSpecYAML.replacingOccurrences(
      of: "  circuitBreaker:\n    enable: true\n    rollback: true\n    failureThreshold: 3\n    scaleUpTimeout: 5m",
      with: "")
    #expect(withoutBreaker != baseSpecYAML)
    for (count, threshold) in [(3, 3), (10, 5), (11, 6), (1000, 200)] {
      let spec = try parseYAML(
        withoutBreaker.replacingOccurrences(of: "desiredCount: 3", with: "desiredCount: \(count)"))
      #expect(spec.deployment.circuitBreaker.failureThreshold == threshold, "\(count)")
    }
  }

  @Test func healthFloorGraceIsReadAndOnlyANonDefaultOneEntersTheDigest() throws {
    let base = try parseYAML(baseSpecYAML)
    #expect(base.deployment.circuitBreaker.healthFloorGrace == CircuitBreakerConfiguration.defaultHealthFloorGrace)
    #expect(!Revision.canonicalEncoding(of: base).contains("healthFloorGrace"), "digests from before it stay")
    func with(_ grace: String) throws -> ServiceSpec {
      try parseYAML(
        baseSpecYAML.replacingOccurrences(
          of: "scaleUpTimeout: 5m", with: "scaleUpTimeout: 5m\n    healthFloorGrace: \(grace)"))
    }
    #expect(Revision.digest(of: try with("60s")) == Revision.digest(of: base))
    let zero = try with("0s")
    #expect(zero.deployment.circuitBreaker.healthFloorGrace == .zero)
    #expect(Revision.digest(of: zero) != Revision.digest(of: base))
    #expect(try parseYAML(SpecWriter.yaml(zero)) == zero)
    #expect(SpecWriter.yaml(zero).contains("healthFloorGrace: 0s"))
  }

  @Test func linearStepsBelowThreePercentAndLongPlansAreRefused() {
    let linear = baseSpecYAML.replacingOccurrences(of: "strategy: CANARY", with: "strategy: LINEAR")
      .replacingOccurrences(
        of: "canary:\n    canaryPercent: 10\n    canaryBakeTime: 2m", with: "linear:\n    stepPercent: 2")
    #expect(errors(yaml: linear) == ["deployment.linear.stepPercent: must be in 3...100, got 2"])
    let long = linear.replacingOccurrences(of: "stepPercent: 2", with: "stepPercent: 3\n    stepBakeTime: 2h")
    #expect(errors(yaml: long) == ["deployment: plans 3965m of production steps and bake time; the limit is 48h"])
  }

  @Test func hostileDocumentsAreRefusedQuicklyWithoutCrashing() {
    let nested = String(repeating: "[", count: 10_000)
    let deepBlock = (0..<200).map { String(repeating: " ", count: $0) + "a:" }.joined(separator: "\n")
    let compactSequences = String(repeating: "- ", count: 2_000) + "x"
    let aliasBomb = """
      a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
      b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
      c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
      d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
      e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
      f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
      g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
      """
    let cases: [(String, SpecFormat, String)] = [
      (nested, .yaml, "nests deeper than 32 levels"),
      ("name: " + nested, .yaml, "nests deeper than 32 levels"),
      (nested, .json, "invalid JSON: nests deeper than 32 levels"),
      (deepBlock, .yaml, "is indented or nested deeper than column 96"),
      (compactSequences, .yaml, "is indented or nested deeper than column 96"),
      (aliasBomb, .yaml, "has more than 20000 values (aliases counted as expanded)"),
      (String(repeating: "a", count: SpecLimits.maximumBytes + 1), .yaml, "is 262145 bytes; the limit is 262144"),
      (String(repeating: "*a ", count: 100), .yaml, "has more than 64 anchors and aliases"),
    ]
    for (text, format, message) in cases {
      let started = ContinuousClock.now
      let error = #expect(throws: SpecErrors.self) { try SpecParser.parse(text: text, format: format) }
      #expect(error?.errors.first?.message == message, "\(String(text.prefix(40))): \(error?.description ?? "")")
      #expect(ContinuousClock.now - started < .seconds(5))
    }
  }

  @Test func theDeepestDocumentTheLimitsAdmitIsReadWithoutOverflowingTheStack() {
    // Flow nesting at the limit, inside block nesting at the limit, parsed on a small-stack thread.
    var lines: [String] = []
    for level in 0..<47 { lines.append(String(repeating: " ", count: level * 2) + "k\(level):") }
    lines.append(
      String(repeating: " ", count: 94) + String(repeating: "[", count: 32) + String(repeating: "]", count: 32))
    let text = lines.joined(separator: "\n")
    final class Box: @unchecked Sendable { var message: String? }
    let box = Box()
    let done = DispatchSemaphore(value: 0)
    let thread = Thread {
      box.message = errors(yaml: text).first
      done.signal()
    }
    thread.stackSize = 512 * 1024
    thread.start()
    done.wait()
    // Yams composed about 80 levels on a 512 KB stack; our own bound then refuses the document.
    #expect(box.message == "(document): nests deeper than 32 levels", "\(box.message ?? "nil")")
  }
}

@Suite struct DocumentationTests {
  @Test func theFullSpecInDocsDeploymentsParsesAndEqualsTheCanaryExample() throws {
    let docs = examplesDirectory.deletingLastPathComponent().deletingLastPathComponent()
      .appendingPathComponent("Docs/DEPLOYMENTS.md")
    let text = try String(contentsOf: docs, encoding: .utf8)
    let blocks = text.components(separatedBy: "```yaml\n").dropFirst().compactMap {
      $0.components(separatedBy: "```").first
    }
    let fullSpecs = blocks.filter { $0.hasPrefix("name:") }
    #expect(fullSpecs.count == 1)
    let documented = try parseYAML(try #require(fullSpecs.first))
    let example = try loadSpec(examplesDirectory.appendingPathComponent("web-canary.yaml").path)
    #expect(documented == example)
  }
}
