// A file system wrapper that fails on command, for tests of the storage and of the consensus shell.

import Foundation
import TealStorage

/// Wraps another `StorageFileSystem` and makes chosen operations fail with `EIO`, as a dying disk would.
///
/// Faults are armed and disarmed at any time from any thread (the state is behind a lock). A write that runs
/// out of `writeBudget` writes the bytes that fit and then fails, leaving a torn record on disk, exactly like a
/// crash in the middle of a `pwrite`.
public final class FaultInjectingFileSystem: StorageFileSystem, @unchecked Sendable {
  /// Which operations fail.
  public struct Faults: Sendable, Hashable {
    /// Bytes that writes may still store; a write that needs more stores what fits and fails. `nil`: no limit.
    public var writeBudget: Int?
    /// `fdatasync` and `fsync` of files fail.
    public var failFileSyncs: Bool
    /// Only `fdatasync` of files fails (WAL appends), not `fsync` (snapshot files).
    public var failDataSyncs: Bool
    /// `rename` fails (nothing is renamed).
    public var failRenames: Bool
    /// `fsync` of directories fails.
    public var failDirectorySyncs: Bool
    /// File creation (`open` with create of a file that does not exist) fails.
    public var failFileCreation: Bool
    /// Bytes the disk has left, `nil`: no limit. A write that grows a file uses them up; one that needs more
    /// stores what fits and fails with `ENOSPC`. Removing a file (by its last name) or truncating one gives
    /// its bytes back.
    public var freeSpace: Int64?

    public init(
      writeBudget: Int? = nil, failFileSyncs: Bool = false, failRenames: Bool = false,
      failDirectorySyncs: Bool = false, failFileCreation: Bool = false, failDataSyncs: Bool = false,
      freeSpace: Int64? = nil
    ) {
      self.freeSpace = freeSpace
      self.writeBudget = writeBudget
      self.failFileSyncs = failFileSyncs
      self.failDataSyncs = failDataSyncs
      self.failRenames = failRenames
      self.failDirectorySyncs = failDirectorySyncs
      self.failFileCreation = failFileCreation
    }

    /// No faults.
    public static let none = Faults()
  }

  private let base: any StorageFileSystem
  private let lock = NSLock()
  private var armedFaults = Faults.none
  private var counts: [String: Int] = [:]

  public init(wrapping base: any StorageFileSystem = PosixFileSystem()) {
    self.base = base
  }

  /// The faults currently armed.
  public var faults: Faults {
    get { lock.withLock { armedFaults } }
    set { lock.withLock { armedFaults = newValue } }
  }

  /// How many times `operation` ("write", "syncData", "syncAll", "rename", "syncDirectory", ...) was attempted.
  public func count(of operation: String) -> Int {
    lock.withLock { counts[operation, default: 0] }
  }

  /// Records an attempt of `operation` and returns the faults in force for it.
  fileprivate func attempt(_ operation: String) -> Faults {
    lock.withLock {
      counts[operation, default: 0] += 1
      return armedFaults
    }
  }

  /// Takes up to `wanted` bytes from the write budget, and the `growth` of the file from the free space;
  /// returns how many bytes may be written and the error number if not all of them.
  fileprivate func spendWriteBudget(_ wanted: Int, growing growth: Int64, fileSize: Int64, offset: Int64) -> (
    allowed: Int, errno: Int32
  ) {
    lock.withLock {
      counts["write", default: 0] += 1
      var allowed = wanted
      var failure = EIO
      if let budget = armedFaults.writeBudget {
        allowed = min(budget, wanted)
        armedFaults.writeBudget = budget - allowed
      }
      if let free = armedFaults.freeSpace, growth > free {
        // Only the bytes up to the end of the file plus the free space fit.
        let fitting = Int(max(0, fileSize + free - offset))
        if fitting < allowed {
          allowed = fitting
          failure = ENOSPC
        }
      }
      if let free = armedFaults.freeSpace {
        let grown = max(0, offset + Int64(allowed) - fileSize)
        armedFaults.freeSpace = free - grown
      }
      return (allowed, failure)
    }
  }

  /// Gives `bytes` back to the free space, if it is limited.
  fileprivate func release(_ bytes: Int64) {
    lock.withLock {
      if let free = armedFaults.freeSpace { armedFaults.freeSpace = free + max(0, bytes) }
    }
  }

  public func createDirectory(_ path: String) throws(StorageError) {
    try base.createDirectory(path)
  }

  public func listDirectory(_ path: String) throws(StorageError) -> [String] {
    try base.listDirectory(path)
  }

  public func openFile(_ path: String, create: Bool) throws(StorageError) -> any StorageFile {
    if attempt("openFile").failFileCreation && create {
      guard let existing = try? base.openFile(path, create: false) else {
        throw .io(operation: "open (injected fault)", path: path, errno: EIO)
      }
      return FaultInjectingFile(base: existing, owner: self)
    }
    return FaultInjectingFile(base: try base.openFile(path, create: create), owner: self)
  }

  public func rename(_ source: String, to destination: String) throws(StorageError) {
    if attempt("rename").failRenames {
      throw .io(operation: "rename to \(destination) (injected fault)", path: source, errno: EIO)
    }
    try base.rename(source, to: destination)
  }

  public func removeFile(_ path: String) throws(StorageError) {
    _ = attempt("removeFile")
    let size = (try? base.openFile(path, create: false)).flatMap { file -> Int64? in
      defer { file.close() }
      return try? file.size()
    }
    try base.removeFile(path)
    if let size { release(size) }
  }

  public func syncDirectory(_ path: String) throws(StorageError) {
    if attempt("syncDirectory").failDirectorySyncs {
      throw .io(operation: "fsync directory (injected fault)", path: path, errno: EIO)
    }
    try base.syncDirectory(path)
  }
}

/// A file whose writes and syncs consult the owning `FaultInjectingFileSystem`.
private final class FaultInjectingFile: StorageFile {
  private let base: any StorageFile
  private let owner: FaultInjectingFileSystem

  init(base: any StorageFile, owner: FaultInjectingFileSystem) {
    self.base = base
    self.owner = owner
  }

  var path: String { base.path }

  func size() throws(StorageError) -> Int64 { try base.size() }

  func read(at offset: Int64, count: Int) throws(StorageError) -> [UInt8] {
    try base.read(at: offset, count: count)
  }

  func write(_ bytes: [UInt8], at offset: Int64) throws(StorageError) {
    let size = try base.size()
    let growth = max(0, offset + Int64(bytes.count) - size)
    let (allowed, failure) = owner.spendWriteBudget(bytes.count, growing: growth, fileSize: size, offset: offset)
    if allowed < bytes.count {
      if allowed > 0 { try base.write(Array(bytes.prefix(allowed)), at: offset) }
      throw .io(operation: "pwrite (injected fault after \(allowed) bytes)", path: path, errno: failure)
    }
    try base.write(bytes, at: offset)
  }

  func syncData() throws(StorageError) {
    let faults = owner.attempt("syncData")
    if faults.failFileSyncs || faults.failDataSyncs {
      throw .io(operation: "fdatasync (injected fault)", path: path, errno: EIO)
    }
    try base.syncData()
  }

  func syncAll() throws(StorageError) {
    if owner.attempt("syncAll").failFileSyncs {
      throw .io(operation: "fsync (injected fault)", path: path, errno: EIO)
    }
    try base.syncAll()
  }

  func truncate(to length: Int64) throws(StorageError) {
    let size = try base.size()
    try base.truncate(to: length)
    owner.release(size - length)
  }

  func lockExclusively() throws(StorageError) { try base.lockExclusively() }

  func close() { base.close() }
}
