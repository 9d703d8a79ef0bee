import Foundation
import TealTestSupport
import Testing

@Suite("teal spec (the executable)")
struct SpecCommandTests {
  @Test func planRehearsesTheCanaryExampleToSuccess() throws {
    try #require(
      FileManager.default.isExecutableFile(atPath: tealExecutable), "no teal executable at \(tealExecutable)")
    let result = try run(tealExecutable, ["spec", "plan", "-f", "\(repositoryRoot)/Deploy/examples/web-canary.yaml"])
    #expect(result.status == 0, "\(result.output)")
    #expect(result.output.contains("production blue 90/green 10"))
    #expect(result.output.contains("final status: SUCCESSFUL"))
    #expect(result.output.contains("worst case"))
  }

  @Test func validatePrintsTheSameDigestForTheYAMLAndJSONCanaryExamples() throws {
    try #require(
      FileManager.default.isExecutableFile(atPath: tealExecutable), "no teal executable at \(tealExecutable)")
    let yaml = try run(
      tealExecutable, ["spec", "validate", "--json", "-f", "\(repositoryRoot)/Deploy/examples/web-canary.yaml"])
    let json = try run(
      tealExecutable, ["spec", "validate", "--json", "-f", "\(repositoryRoot)/Deploy/examples/web-canary.json"])
    #expect(yaml.status == 0 && json.status == 0)
    #expect(yaml.output.contains("\"digest\":\""))
    #expect(yaml.output == json.output)
  }

  @Test func invalidSpecNamesTheFileFieldAndRule() throws {
    try #require(
      FileManager.default.isExecutableFile(atPath: tealExecutable), "no teal executable at \(tealExecutable)")
    let path = temporaryDirectory("spec") + ".yaml"
    defer { try? FileManager.default.removeItem(atPath: path) }
    let original = try String(contentsOfFile: "\(repositoryRoot)/Deploy/examples/web-canary.yaml", encoding: .utf8)
    let broken = original.replacingOccurrences(of: "canaryPercent: 10", with: "canaryPercent: 150")
    #expect(broken != original, "the example no longer contains 'canaryPercent: 10'")
    try broken.write(toFile: path, atomically: true, encoding: .utf8)
    let result = try run(tealExecutable, ["spec", "validate", "-f", path])
    #expect(result.status == 1)
    #expect(result.output.contains("deployment.canary.canaryPercent: must be in 0.1...100, got 150"))
    #expect(result.output.contains(path))
  }

  @Test func planRehearsesAFailedHookAndAKilledLeader() throws {
    try #require(
      FileManager.default.isExecutableFile(atPath: tealExecutable), "no teal executable at \(tealExecutable)")
    let example = "\(repositoryRoot)/Deploy/examples/web-canary.yaml"
    let failed = try run(tealExecutable, ["spec", "plan", "-f", example, "--fail-hook", "PRODUCTION_TRAFFIC_SHIFT"])
    #expect(failed.status == 0, "\(failed.output)")
    #expect(failed.output.contains("final status: ROLLBACK_SUCCESSFUL"))
    let killed = try run(tealExecutable, ["spec", "plan", "-f", example, "--kill-leader-at", "BAKE_TIME"])
    #expect(killed.output.contains("leader killed"))
    #expect(killed.output.contains("final status: SUCCESSFUL"))
    let bad = try run(tealExecutable, ["spec", "plan", "-f", example, "--alarm-at", "SOON"])
    #expect(bad.status != 0)
    #expect(bad.output.contains("--alarm-at: must be one of RECONCILE_SERVICE"))
  }

  @Test func validateReportsEveryErrorAndAsJSONWithJSON() throws {
    try #require(
      FileManager.default.isExecutableFile(atPath: tealExecutable), "no teal executable at \(tealExecutable)")
    let path = temporaryDirectory("spec") + ".yaml"
    defer { try? FileManager.default.removeItem(atPath: path) }
    let original = try String(contentsOfFile: "\(repositoryRoot)/Deploy/examples/web-canary.yaml", encoding: .utf8)
    let broken = original.replacingOccurrences(of: "canaryPercent: 10", with: "canaryPercent: 150")
      .replacingOccurrences(of: "desiredCount: 4", with: "desiredCount: 99999999999999999999999")
    try broken.write(toFile: path, atomically: true, encoding: .utf8)
    let text = try run(tealExecutable, ["spec", "validate", "-f", path])
    #expect(text.status == 1)
    #expect(text.output.contains("desiredCount: must be in 1...1000, got 99999999999999999999999"))
    #expect(text.output.contains("deployment.canary.canaryPercent: must be in 0.1...100, got 150"))
    let json = try run(tealExecutable, ["spec", "validate", "--json", "-f", path])
    #expect(json.status == 1)
    let object = try JSONSerialization.jsonObject(with: Data(json.output.utf8)) as? [String: Any]
    let errors = try #require(object?["errors"] as? [[String: Any]])
    #expect(errors.count == 2)
    #expect(errors.first?["path"] as? String == "desiredCount")
    #expect((errors.first?["location"] as? [String: Any])?["line"] as? Int == 4)
  }

  @Test func validateSurvivesHostileFiles() throws {
    try #require(
      FileManager.default.isExecutableFile(atPath: tealExecutable), "no teal executable at \(tealExecutable)")
    let directory = temporaryDirectory("hostile")
    try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: directory) }
    let bomb = (0..<8).map { level in
      level == 0
        ? "a0: &a0 [x,x,x,x,x,x,x,x,x]"
        : "a\(level): &a\(level) [" + Array(repeating: "*a\(level - 1)", count: 9).joined(separator: ",") + "]"
    }.joined(separator: "\n")
    let files = [
      ("nested.yaml", String(repeating: "[", count: 10_000)), ("bomb.yaml", bomb),
      ("nested.json", String(repeating: "[", count: 10_000)),
    ]
    for (name, text) in files {
      let path = "\(directory)/\(name)"
      try text.write(toFile: path, atomically: true, encoding: .utf8)
      let result = try run(tealExecutable, ["spec", "validate", "-f", path])
      #expect(result.status == 1, "\(name): \(result.output)")
      #expect(result.output.contains("(document):"), "\(name): \(result.output)")
    }
  }

  @Test func missingFileIsAClearError() throws {
    try #require(
      FileManager.default.isExecutableFile(atPath: tealExecutable), "no teal executable at \(tealExecutable)")
    let result = try run(tealExecutable, ["spec", "plan", "-f", "/no/such/spec.yaml"])
    #expect(result.status == 1)
    #expect(result.output.contains("cannot read spec file /no/such/spec.yaml"))
  }
}
