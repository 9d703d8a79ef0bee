// A size-capped, rotating log file written with plain POSIX calls.

#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

/// An append-only log file that never grows past `policy.maxFileBytes`.
///
/// Invariants: the live file at `path` holds at most `maxFileBytes` bytes; older content lives in
/// `path.1` (newest) ... `path.<rotatedFiles>` (oldest); anything older is deleted. Not thread-safe:
/// exactly one thread (the task's watcher) writes to it.
final class TaskLogFile {
  let path: String
  private let policy: TaskLogPolicy
  private var descriptor: Int32
  private var size: Int

  /// Opens (creating or appending to) the live file.
  init(path: String, policy: TaskLogPolicy) throws(TaskLogFileError) {
    self.path = path
    self.policy = policy
    self.descriptor = -1
    self.size = 0
    try openLive()
  }

  deinit {
    if descriptor >= 0 { _ = close(descriptor) }
  }

  /// Appends `bytes`, rotating first whenever the live file would pass the cap. A chunk larger
  /// than the cap is split over several files. Write errors are dropped: losing log lines must
  /// never stop a task.
  func append(_ bytes: UnsafeRawBufferPointer) {
    var offset = 0
    while offset < bytes.count {
      if size >= policy.maxFileBytes {
        rotate()
      }
      let room = policy.maxFileBytes - size
      let chunk = min(room, bytes.count - offset)
      guard descriptor >= 0, let base = bytes.baseAddress else { return }
      let written = writeFully(descriptor, base + offset, chunk)
      if written <= 0 { return }
      size += written
      offset += written
    }
  }

  func closeFile() {
    if descriptor >= 0 {
      _ = close(descriptor)
      descriptor = -1
    }
  }

  // MARK: Private

  private func openLive() throws(TaskLogFileError) {
    let fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
    if fd < 0 {
      throw TaskLogFileError(path: path, reason: String(cString: strerror(errno)))
    }
    var info = stat()
    size = fstat(fd, &info) == 0 ? Int(info.st_size) : 0
    descriptor = fd
  }

  private func rotate() {
    closeFile()
    if policy.rotatedFiles == 0 {
      _ = unlink(path)
    } else {
      _ = unlink("\(path).\(policy.rotatedFiles)")
      var index = policy.rotatedFiles - 1
      while index >= 1 {
        _ = rename("\(path).\(index)", "\(path).\(index + 1)")
        index -= 1
      }
      _ = rename(path, "\(path).1")
    }
    do {
      try openLive()
    } catch {
      descriptor = -1
    }
  }
}

/// A log file could not be opened.
struct TaskLogFileError: Error {
  var path: String
  var reason: String
}

/// Writes all of `count` bytes unless the descriptor fails; returns the bytes written.
private func writeFully(_ fd: Int32, _ pointer: UnsafeRawPointer, _ count: Int) -> Int {
  var done = 0
  while done < count {
    let result = write(fd, pointer + done, count - done)
    if result < 0 {
      if errno == EINTR { continue }
      break
    }
    if result == 0 { break }
    done += result
  }
  return done
}
