// Local command hooks: JSON on stdin, the exit status decides, a timeout kills the process.

import Foundation
import TealDeploy

enum CommandHookRunner {
  /// Exit status meaning IN_PROGRESS (call again after callBackDelay).
  static let inProgressExitStatus: Int32 = 3

  static func run(
    argv: [String], stdin input: [UInt8], timeout: TimeSpan, outputLimit: Int, environment: [String: String] = [:]
  ) async -> (HookOutcome, String?) {
    await withCheckedContinuation { continuation in
      let thread = Thread {
        continuation.resume(
          returning: runBlocking(
            argv: argv, input: input, timeout: timeout, outputLimit: outputLimit, environment: environment))
      }
      thread.start()
    }
  }

  /// Bytes read from one pipe: the first `limit` are kept, the rest only counted.
  struct Capture {
    var bytes: [UInt8] = []
    var total = 0
    var ended = false
    let limit: Int

    mutating func append(_ chunk: ArraySlice<UInt8>) {
      total += chunk.count
      let room = limit - bytes.count
      if room > 0 { bytes += chunk.prefix(room) }
    }

    var text: String {
      let kept = String(decoding: bytes, as: UTF8.self)
      return total > bytes.count ? kept + "...(truncated, \(total) bytes)" : kept
    }
  }

  /// Reads whatever `fd` (non-blocking) has now; marks `ended` at end of file.
  static func drain(_ fd: Int32, into capture: inout Capture) {
    var buffer = [UInt8](repeating: 0, count: 16 * 1024)
    while !capture.ended {
      let count = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
      if count > 0 {
        capture.append(buffer[0..<count])
      } else if count == 0 {
        capture.ended = true
      } else {
        if errno == EINTR { continue }
        if errno != EAGAIN && errno != EWOULDBLOCK { capture.ended = true }
        return
      }
    }
  }

  static func runBlocking(
    argv: [String], input: [UInt8], timeout: TimeSpan, outputLimit: Int, environment: [String: String] = [:]
  ) -> (HookOutcome, String?) {
    guard let program = argv.first, !program.isEmpty else { return (.failed(reason: "empty command argv"), nil) }
    let process = Process()
    if program.contains("/") {
      process.executableURL = URL(fileURLWithPath: program)
      process.arguments = Array(argv.dropFirst())
    } else {
      process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
      process.arguments = argv
    }
    if !environment.isEmpty {
      process.environment = ProcessInfo.processInfo.environment.merging(environment) { _, added in added }
    }
    let stdinPipe = Pipe()
    let stdoutPipe = Pipe()
    let stderrPipe = Pipe()
    process.standardInput = stdinPipe
    process.standardOutput = stdoutPipe
    process.standardError = stderrPipe
    var stdout = Capture(limit: outputLimit)
    var stderr = Capture(limit: outputLimit)
    let exited = DispatchSemaphore(value: 0)
    process.terminationHandler = { _ in exited.signal() }
    do {
      try process.run()
    } catch {
      return (.failed(reason: "cannot start \(program): \(error.localizedDescription)"), nil)
    }
    try? stdinPipe.fileHandleForWriting.write(contentsOf: Data(input))
    try? stdinPipe.fileHandleForWriting.close()

    // One loop reads both pipes (poll, non-blocking) until the process exits or the timeout
    // passes, then drains what is left for a short while (a grandchild may keep a pipe open).
    let outFD = stdoutPipe.fileHandleForReading.fileDescriptor
    let errFD = stderrPipe.fileHandleForReading.fileDescriptor
    for fd in [outFD, errFD] { _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) }
    let deadline = DispatchTime.now() + .milliseconds(Int(timeout.milliseconds))
    var timedOut = false
    var exitedAt: DispatchTime?
    while true {
      // A pipe at end of file is left out (-1), or poll would return at once forever.
      var fds = [
        pollfd(fd: stdout.ended ? -1 : outFD, events: Int16(POLLIN), revents: 0),
        pollfd(fd: stderr.ended ? -1 : errFD, events: Int16(POLLIN), revents: 0),
      ]
      _ = poll(&fds, 2, 20)
      drain(outFD, into: &stdout)
      drain(errFD, into: &stderr)
      if exitedAt == nil, exited.wait(timeout: .now()) == .success { exitedAt = .now() }
      if let exitedAt {
        if (stdout.ended && stderr.ended) || DispatchTime.now() > exitedAt + .milliseconds(200) { break }
      } else if DispatchTime.now() >= deadline {
        timedOut = true
        kill(process.processIdentifier, SIGKILL)
        exited.wait()
        exitedAt = .now()
      }
    }

    let output = "stdout: \(stdout.text)\nstderr: \(stderr.text)"
    if timedOut { return (.timedOut, output) }
    switch process.terminationReason {
    case .uncaughtSignal:
      return (.failed(reason: "\(program) was killed by signal \(process.terminationStatus)"), output)
    case .exit:
      switch process.terminationStatus {
      case 0: return (.succeeded, output)
      case inProgressExitStatus: return (.inProgress, output)
      case let status: return (.failed(reason: "\(program) exited with status \(status)"), output)
      }
    @unknown default:
      return (.failed(reason: "\(program) ended for an unknown reason"), output)
    }
  }
}
