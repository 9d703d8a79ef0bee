import Foundation

/// The real `teal` executable, built beside the test bundle by `swift build` / `swift test`.
let tealExecutable: String = {
  URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("teal").path
}()

/// The repository root, for the example specs.
let repositoryRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
  .deletingLastPathComponent().path

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

let opensslPath = "/usr/bin/openssl"

func temporaryDirectory(_ label: String) -> String {
  FileManager.default.temporaryDirectory.appendingPathComponent("teal-\(label)-\(UUID().uuidString)").path
}
