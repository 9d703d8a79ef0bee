import Foundation

/// Runs a command to completion with stdin from /dev/null; returns its exit status and output.
func run(_ executable: String, _ arguments: [String]) throws -> (status: Int32, output: String) {
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
let opensslPath: String = {
  for candidate in ["/usr/bin/openssl", "/usr/local/bin/openssl"]
  where FileManager.default.isExecutableFile(atPath: candidate) {
    return candidate
  }
  return "/usr/bin/openssl"
}()

func temporaryDirectory(_ label: String) -> String {
  FileManager.default.temporaryDirectory.appendingPathComponent("teal-\(label)-\(UUID().uuidString)").path
}
