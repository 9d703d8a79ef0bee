import Foundation

// Helpers shared by the test targets: running a command, temporary directories, polling a
// condition with a deadline. Test code only (the seedable generator is TealWire.SplitMix64).

/// Runs a command to completion with stdin from /dev/null; returns its exit status and output.
public func run(_ executable: String, _ arguments: [String]) throws -> (status: Int32, output: String) {
  let process = Process()
  process.executableURL = URL(fileURLWithPath: executable)
  process.arguments = arguments
  let pipe = Pipe()
  process.standardOutput = pipe
  process.standardError = pipe
  process.standardInput = FileHandle.nullDevice
  try process.run()
  let data = pipe.fileHandleForReading.readDataToEndOfFile()
  process.waitUntilExit()
  return (process.terminationStatus, String(decoding: data, as: UTF8.self))
}

/// The `openssl` command line, which CI installs (`.ci/run`).
public let opensslPath: String = {
  for candidate in ["/usr/bin/openssl", "/usr/local/bin/openssl"]
  where FileManager.default.isExecutableFile(atPath: candidate) {
    return candidate
  }
  return "/usr/bin/openssl"
}()

/// A fresh path under the system's temporary directory; not created.
public func temporaryDirectory(_ label: String) -> String {
  FileManager.default.temporaryDirectory.appendingPathComponent("teal-\(label)-\(UUID().uuidString)").path
}

public struct TimedOut: Error, CustomStringConvertible {
  public let what: String
  public init(what: String) { self.what = what }
  public var description: String { "timed out waiting for \(what)" }
}

/// Polls `condition` every 10 ms until it holds or `seconds` pass; throws ``TimedOut`` then.
public func eventually(
  _ what: String, within seconds: Double = 10, _ condition: @Sendable () async throws -> Bool
) async throws {
  let deadline = ContinuousClock.now + .milliseconds(Int(seconds * 1000))
  while ContinuousClock.now < deadline {
    if try await condition() { return }
    try await Task.sleep(for: .milliseconds(10))
  }
  if try await condition() { return }
  throw TimedOut(what: what)
}
