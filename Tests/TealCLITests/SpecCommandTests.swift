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
    #expect(result.output.contains("weights: production blue 90/green 10"))
    #expect(result.output.contains("final status: SUCCESSFUL"))
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

  @Test func missingFileIsAClearError() throws {
    try #require(
      FileManager.default.isExecutableFile(atPath: tealExecutable), "no teal executable at \(tealExecutable)")
    let result = try run(tealExecutable, ["spec", "plan", "-f", "/no/such/spec.yaml"])
    #expect(result.status == 1)
    #expect(result.output.contains("cannot read spec file /no/such/spec.yaml"))
  }
}
