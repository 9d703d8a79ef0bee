import Foundation

/// The real `teal` executable, built beside the test bundle by `swift build` / `swift test`.
let tealExecutable: String = {
  URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("teal").path
}()

/// The repository root, for the example specs.
let repositoryRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
  .deletingLastPathComponent().path
