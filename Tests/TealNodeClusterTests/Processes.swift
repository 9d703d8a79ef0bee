// The built executables the cluster suite runs (the process helpers are TealTestSupport's).

import Foundation
import TealTestSupport

/// The built executables, beside the test bundle (`swift build --build-tests` / `swift test`).
enum Binaries {
  static let directory = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().path
  static let teal = "\(directory)/teal"
  static let tealDemo = "\(directory)/teal-demo"

  /// Why the cluster suite cannot run, or nil when it can: both executables exist and `teal node
  /// start --help` exits 0 and describes `--config`.
  static let missing: String? = {
    let files = FileManager.default
    guard files.isExecutableFile(atPath: teal) else { return "no teal executable at \(teal)" }
    guard files.isExecutableFile(atPath: tealDemo) else { return "no teal-demo executable at \(tealDemo)" }
    // ArgumentParser answers `--help` with the nearest command's help and exit 0, so the status
    // alone does not tell: `node start`'s help names its `--config` option.
    guard let help = try? run(teal, ["node", "start", "--help"]), help.status == 0,
      help.output.contains("--config")
    else {
      return "\(teal) has no `node start` subcommand yet (`teal node start --help` does not describe it)"
    }
    return nil
  }()
}
