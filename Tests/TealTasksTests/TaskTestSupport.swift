// Helpers for the task-runner tests: temp dirs, event recording, /proc inspection, a tiny HTTP client.

import Foundation
import TealTasks
import Testing

#if canImport(Glibc)
  import Glibc
#endif

// MARK: - Temp directory

/// A fresh directory under the system temp dir, removed by `remove()`.
struct TaskTestDirectory {
  let path: String

  init() throws {
    let template = NSTemporaryDirectory() + "teal-tasks-XXXXXX"
    var bytes = Array(template.utf8CString)
    guard let created = mkdtemp(&bytes) else {
      throw TaskTestFailure("mkdtemp failed: \(String(cString: strerror(errno)))")
    }
    path = String(cString: created)
  }

  func file(_ name: String) -> String { "\(path)/\(name)" }

  func remove() {
    try? FileManager.default.removeItem(atPath: path)
  }
}

struct TaskTestFailure: Error, CustomStringConvertible {
  var description: String
  init(_ description: String) { self.description = description }
}

/// Free helpers of the task tests, in a namespace so they never clash with other tests of the module.
enum TaskTestKit {}

// MARK: - Polling

extension TaskTestKit {
  /// Polls `condition` every 10 ms until it holds or `timeout` passes; returns whether it held.
  static func eventually(
    timeout: Duration = .seconds(10), _ condition: () async throws -> Bool
  ) async rethrows -> Bool {
    let clock = ContinuousClock()
    let deadline = clock.now + timeout
    while clock.now < deadline {
      if try await condition() { return true }
      try? await Task.sleep(for: .milliseconds(10))
    }
    return try await condition()
  }
}

// MARK: - Events

/// Collects a runner's events in the background so tests can wait for a state.
actor TaskEventLog {
  private(set) var events: [TaskEvent] = []
  private(set) var finished = false
  private var reader: Task<Void, Never>?

  static func recording(_ runner: TaskRunner) async -> TaskEventLog {
    let log = TaskEventLog()
    let stream = await runner.events()
    await log.startReading(stream)
    return log
  }

  private func startReading(_ stream: AsyncStream<TaskEvent>) {
    reader = Task { [weak self] in
      for await event in stream {
        await self?.append(event)
      }
      await self?.markFinished()
    }
  }

  private func append(_ event: TaskEvent) { events.append(event) }
  private func markFinished() { finished = true }

  func states(of taskID: String) -> [TaskState] {
    events.filter { $0.taskID == taskID }.map(\.state)
  }

  /// Waits until a state of `taskID` matches; returns it, or nil after the timeout.
  func waitForState(
    of taskID: String, timeout: Duration = .seconds(10), where matches: @Sendable (TaskState) -> Bool
  ) async -> TaskState? {
    let clock = ContinuousClock()
    let deadline = clock.now + timeout
    while clock.now < deadline {
      if let state = states(of: taskID).first(where: matches) { return state }
      try? await Task.sleep(for: .milliseconds(10))
    }
    return states(of: taskID).first(where: matches)
  }

  func waitUntilFinished(timeout: Duration = .seconds(5)) async -> Bool {
    let clock = ContinuousClock()
    let deadline = clock.now + timeout
    while !finished && clock.now < deadline {
      try? await Task.sleep(for: .milliseconds(10))
    }
    return finished
  }
}

extension TaskState {
  var isHealthy: Bool { self == .healthy }
  var isUnhealthy: Bool {
    if case .unhealthy = self { return true }
    return false
  }
  var exitInfo: TaskExit? {
    if case .exited(let exit) = self { return exit }
    return nil
  }
}

// MARK: - /proc

extension TaskTestKit {
  /// The state letter (`R`, `S`, `Z`, ...) and parent pid of a process, from `/proc/<pid>/stat`.
  static func processStatus(_ pid: Int32) -> (state: Character, parent: Int32)? {
    guard let text = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
      let closing = text.lastIndex(of: ")")
    else { return nil }
    let fields = text[text.index(after: closing)...].split(separator: " ")
    guard fields.count >= 2, let state = fields[0].first, let parent = Int32(fields[1]) else { return nil }
    return (state, parent)
  }

  /// True when `/proc/<pid>` exists (a zombie still exists).
  static func processExists(_ pid: Int32) -> Bool {
    FileManager.default.fileExists(atPath: "/proc/\(pid)")
  }

  /// True while the process runs: it exists and is not a zombie. A killed grandchild is reparented to
  /// init (or a subreaper) and stays a zombie until that process reaps it, which is not our job.
  static func processIsRunning(_ pid: Int32) -> Bool {
    guard let status = processStatus(pid) else { return false }
    return status.state != "Z" && status.state != "X"
  }

  /// Pids of this process's children that are zombies (state `Z`).
  static func zombieChildrenOfThisProcess() -> [Int32] {
    let me = getpid()
    let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
    return entries.compactMap(Int32.init).filter { pid in
      guard let status = processStatus(pid) else { return false }
      return status.parent == me && status.state == "Z"
    }
  }
}

// MARK: - HTTP client

/// A minimal blocking HTTP/1.1 client for tests: one request per connection (`Connection: close`).
struct TaskTestHTTPResponse {
  var status: Int
  var headers: [String: String]
  var body: String
}

extension TaskTestKit {
  static func httpRequest(
    port: Int, method: String = "GET", path: String, body: String = "", timeoutSeconds: Int = 5
  ) throws -> TaskTestHTTPResponse {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw TaskTestFailure("socket failed") }
    defer { _ = close(fd) }
    var timeout = timeval(tv_sec: timeoutSeconds, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = in_port_t(UInt16(port).bigEndian)
    address.sin_addr = in_addr(s_addr: inet_addr("127.0.0.1"))
    let connected = withUnsafePointer(to: &address) { pointer in
      pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
        connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
      }
    }
    guard connected == 0 else {
      throw TaskTestFailure("connect to 127.0.0.1:\(port) failed: \(String(cString: strerror(errno)))")
    }
    let request =
      "\(method) \(path) HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\nConnection: close\r\n"
      + "Content-Length: \(body.utf8.count)\r\n\r\n\(body)"
    let bytes = Array(request.utf8)
    var sent = 0
    while sent < bytes.count {
      let result = bytes[sent...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
      guard result > 0 else { throw TaskTestFailure("send failed: \(String(cString: strerror(errno)))") }
      sent += result
    }
    var received: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 4096)
    while true {
      let count = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
      if count > 0 {
        received.append(contentsOf: buffer[0..<count])
      } else if count == 0 {
        break
      } else {
        throw TaskTestFailure("recv failed: \(String(cString: strerror(errno)))")
      }
    }
    let text = String(decoding: received, as: UTF8.self)
    guard let split = text.range(of: "\r\n\r\n") else { throw TaskTestFailure("no response head in '\(text)'") }
    let headLines = text[..<split.lowerBound].split(separator: "\r\n")
    guard let statusLine = headLines.first else { throw TaskTestFailure("empty response") }
    let statusParts = statusLine.split(separator: " ")
    guard statusParts.count >= 2, let status = Int(statusParts[1]) else {
      throw TaskTestFailure("bad status line '\(statusLine)'")
    }
    var headers: [String: String] = [:]
    for line in headLines.dropFirst() {
      guard let colon = line.firstIndex(of: ":") else { continue }
      let name = line[..<colon].lowercased()
      headers[name] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
    }
    return TaskTestHTTPResponse(status: status, headers: headers, body: String(text[split.upperBound...]))
  }

  /// Runs a blocking call off the cooperative pool.
  static func offPool<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
      Thread {
        continuation.resume(with: Result { try body() })
      }.start()
    }
  }
}
