// The file system seam: `DurableLog` does all its I/O through these protocols, so tests (and the
// consensus shell's tests) can inject write and sync failures.

import Foundation

#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

// MARK: - Protocols

/// A file opened by a `StorageFileSystem`. Used from one owner at a time (not `Sendable`).
public protocol StorageFile: AnyObject {
  /// The path the file was opened at.
  var path: String { get }
  /// The current length in bytes.
  func size() throws(StorageError) -> Int64
  /// Reads up to `count` bytes at `offset`; fewer only at end of file.
  func read(at offset: Int64, count: Int) throws(StorageError) -> [UInt8]
  /// Writes all of `bytes` at `offset` (no durability until `syncData`).
  func write(_ bytes: [UInt8], at offset: Int64) throws(StorageError)
  /// Makes the file's data and length durable (`fdatasync`).
  func syncData() throws(StorageError)
  /// Makes the file's data and all its metadata durable (`fsync`).
  func syncAll() throws(StorageError)
  /// Cuts the file to `length` bytes.
  func truncate(to length: Int64) throws(StorageError)
  /// Takes an exclusive advisory lock (`flock`) without waiting; throws `directoryLocked` if it is held.
  func lockExclusively() throws(StorageError)
  /// Closes the file. Further calls fail.
  func close()
}

/// The directory and file operations `DurableLog` needs.
public protocol StorageFileSystem: Sendable {
  /// Creates `path` (and its parents) if it does not exist.
  func createDirectory(_ path: String) throws(StorageError)
  /// The names (not paths) of the entries of directory `path`.
  func listDirectory(_ path: String) throws(StorageError) -> [String]
  /// Opens `path` for reading and writing, creating it (empty) if `create` is true and it does not exist.
  func openFile(_ path: String, create: Bool) throws(StorageError) -> any StorageFile
  /// Atomically replaces `destination` with `source` (`rename(2)`).
  func rename(_ source: String, to destination: String) throws(StorageError)
  /// Deletes the file at `path`.
  func removeFile(_ path: String) throws(StorageError)
  /// Makes the directory's entries (creations, renames, deletions) durable (`fsync` of the directory).
  func syncDirectory(_ path: String) throws(StorageError)
}

// MARK: - POSIX implementation

/// The real file system, through POSIX calls (`open`, `pwrite`, `fdatasync`, `rename`, `fsync`).
public struct PosixFileSystem: StorageFileSystem {
  public init() {}

  /// Creates missing directories one level at a time and `fsync`s the parent of each one created, so that a
  /// new data directory cannot vanish in a crash after the log inside it has been synced.
  public func createDirectory(_ path: String) throws(StorageError) {
    if mkdir(path, 0o755) == 0 {
      try syncDirectory(parentDirectory(of: path))
      return
    }
    switch errno {
    case EEXIST:
      var status = stat()
      guard stat(path, &status) == 0, (status.st_mode & S_IFMT) == S_IFDIR else {
        throw .io(operation: "mkdir (a file that is not a directory is in the way)", path: path, errno: EEXIST)
      }
    case ENOENT:
      let parent = parentDirectory(of: path)
      guard parent != path else { throw .io(operation: "mkdir", path: path, errno: ENOENT) }
      try createDirectory(parent)
      guard mkdir(path, 0o755) == 0 || errno == EEXIST else { throw .io(operation: "mkdir", path: path, errno: errno) }
      try syncDirectory(parent)
    default:
      throw .io(operation: "mkdir", path: path, errno: errno)
    }
  }

  private func parentDirectory(of path: String) -> String {
    var trimmed = Substring(path)
    while trimmed.count > 1 && trimmed.hasSuffix("/") { trimmed = trimmed.dropLast() }
    guard let slash = trimmed.lastIndex(of: "/") else { return "." }
    let parent = trimmed[..<slash]
    return parent.isEmpty ? "/" : String(parent)
  }

  public func listDirectory(_ path: String) throws(StorageError) -> [String] {
    guard let directory = opendir(path) else { throw .io(operation: "opendir", path: path, errno: errno) }
    defer { closedir(directory) }
    var names: [String] = []
    while let entry = readdir(directory) {
      let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
        String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
      }
      if name != "." && name != ".." { names.append(name) }
    }
    return names
  }

  public func openFile(_ path: String, create: Bool) throws(StorageError) -> any StorageFile {
    let flags = O_RDWR | O_CLOEXEC | (create ? O_CREAT : 0)
    let descriptor = retryingInterrupts { open(path, flags, 0o644) }
    guard descriptor >= 0 else { throw .io(operation: "open", path: path, errno: errno) }
    return PosixFile(path: path, descriptor: descriptor)
  }

  public func rename(_ source: String, to destination: String) throws(StorageError) {
    guard Foundation.rename(source, destination) == 0 else {
      throw .io(operation: "rename to \(destination)", path: source, errno: errno)
    }
  }

  public func removeFile(_ path: String) throws(StorageError) {
    guard unlink(path) == 0 else { throw .io(operation: "unlink", path: path, errno: errno) }
  }

  public func syncDirectory(_ path: String) throws(StorageError) {
    let descriptor = retryingInterrupts { open(path, O_RDONLY | O_CLOEXEC | O_DIRECTORY) }
    guard descriptor >= 0 else { throw .io(operation: "open directory", path: path, errno: errno) }
    defer { _ = Foundation.close(descriptor) }
    guard retryingInterrupts({ fsync(descriptor) }) == 0 else {
      throw .io(operation: "fsync directory", path: path, errno: errno)
    }
  }
}

/// A file descriptor owned by one `DurableLog`.
final class PosixFile: StorageFile {
  let path: String
  private var descriptor: Int32

  init(path: String, descriptor: Int32) {
    self.path = path
    self.descriptor = descriptor
  }

  deinit { close() }

  private func openDescriptor(_ operation: String) throws(StorageError) -> Int32 {
    guard descriptor >= 0 else { throw .io(operation: operation, path: path, errno: EBADF) }
    return descriptor
  }

  func size() throws(StorageError) -> Int64 {
    let descriptor = try openDescriptor("fstat")
    var status = stat()
    guard fstat(descriptor, &status) == 0 else { throw .io(operation: "fstat", path: path, errno: errno) }
    return Int64(status.st_size)
  }

  func read(at offset: Int64, count: Int) throws(StorageError) -> [UInt8] {
    let descriptor = try openDescriptor("pread")
    var buffer = [UInt8](repeating: 0, count: count)
    var done = 0
    var failure: Int32 = 0
    buffer.withUnsafeMutableBytes { raw in
      while done < count {
        let result = pread(descriptor, raw.baseAddress! + done, count - done, off_t(offset) + off_t(done))
        if result < 0 {
          if errno == EINTR { continue }
          failure = errno
          return
        }
        if result == 0 { return }
        done += result
      }
    }
    if failure != 0 { throw .io(operation: "pread", path: path, errno: failure) }
    if done < count { buffer.removeLast(count - done) }
    return buffer
  }

  func write(_ bytes: [UInt8], at offset: Int64) throws(StorageError) {
    let descriptor = try openDescriptor("pwrite")
    var done = 0
    var failure: Int32 = 0
    bytes.withUnsafeBytes { raw in
      while done < raw.count {
        let result = pwrite(descriptor, raw.baseAddress! + done, raw.count - done, off_t(offset) + off_t(done))
        if result < 0 {
          if errno == EINTR { continue }
          failure = errno
          return
        }
        done += result
      }
    }
    if failure != 0 { throw .io(operation: "pwrite", path: path, errno: failure) }
  }

  func syncData() throws(StorageError) {
    let descriptor = try openDescriptor("fdatasync")
    #if os(Linux)
      let result = retryingInterrupts { fdatasync(descriptor) }
    #else
      let result = retryingInterrupts { fcntl(descriptor, F_FULLFSYNC) }
    #endif
    guard result == 0 else { throw .io(operation: "fdatasync", path: path, errno: errno) }
  }

  func syncAll() throws(StorageError) {
    let descriptor = try openDescriptor("fsync")
    #if os(Linux)
      let result = retryingInterrupts { fsync(descriptor) }
    #else
      let result = retryingInterrupts { fcntl(descriptor, F_FULLFSYNC) }
    #endif
    guard result == 0 else { throw .io(operation: "fsync", path: path, errno: errno) }
  }

  func truncate(to length: Int64) throws(StorageError) {
    let descriptor = try openDescriptor("ftruncate")
    guard retryingInterrupts({ ftruncate(descriptor, off_t(length)) }) == 0 else {
      throw .io(operation: "ftruncate", path: path, errno: errno)
    }
  }

  func lockExclusively() throws(StorageError) {
    let descriptor = try openDescriptor("flock")
    guard retryingInterrupts({ flock(descriptor, LOCK_EX | LOCK_NB) }) == 0 else {
      if errno == EWOULDBLOCK { throw .directoryLocked(path: path) }
      throw .io(operation: "flock", path: path, errno: errno)
    }
  }

  func close() {
    if descriptor >= 0 {
      _ = Foundation.close(descriptor)
      descriptor = -1
    }
  }
}

/// Repeats a system call while it fails with `EINTR`.
private func retryingInterrupts(_ call: () -> Int32) -> Int32 {
  while true {
    let result = call()
    if result == -1 && errno == EINTR { continue }
    return result
  }
}
