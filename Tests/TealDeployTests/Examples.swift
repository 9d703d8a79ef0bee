import Foundation
import TealDeploy
import TealSpec

/// Deploy/examples, located from this file.
let examplesDirectory = URL(fileURLWithPath: #filePath)
  .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
  .appendingPathComponent("Deploy/examples")

/// Reads and parses a spec file the way the CLI does.
func loadSpec(_ path: String) throws -> ServiceSpec {
  try SpecParser.parse(String(contentsOfFile: path, encoding: .utf8), fileName: path)
}

/// Parses a YAML spec.
func parseYAML(_ text: String) throws -> ServiceSpec { try SpecParser.parse(text: text, format: .yaml) }
