// An in-memory file system that forgets what was not synced when it "crashes", for deterministic tests and
// simulations of a node losing power.

import Foundation
import TealStorage

/// An in-memory `StorageFileSystem` with a durability model: file contents become durable only through
/// `syncData`/`syncAll`, directory entries (creations, renames, deletions) only through `syncDirectory`.
///
/// `crash(using:)` models a power loss: every directory goes back to its last synced entries, and every file
/// to its last synced contents plus, if it was only appended to since, a random prefix of the unsynced bytes
/// (a torn write). Handles opened before the crash fail afterwards, as the process is gone.
/// `crashAfter(operations:)` arms a crash point: after that many more mutating operations, every operation
/// fails with `EIO` until `crash(using:)` is called, so a test can stop a `DurableLog` at any step of a write.
/// Directories are created durably at once. All randomness comes from the generator passed to `crash`.
///
/// By default a crash loses every unsynced directory change. With `.randomSubset`, each unsynced change
/// (a creation, a rename, an unlink) independently survives or not, in any combination, as a file system
/// that journals directory operations out of order may leave them: this is how several unlinks covered by
/// one directory `fsync` can leave a hole in a run of files.
public final class SimulatedFileSystem: StorageFileSystem, @unchecked Sendable {
  /// What a crash does with the directory changes made since the directory's last `syncDirectory`.
  public enum UnsyncedDirectoryChanges: Sendable, Hashable {
    /// All are lost: the directory shows its last synced entries.
    case lost
    /// Each change (one creation, rename or unlink) survives with probability 1/2, independently.
    case randomSubset
  }

  /// A file's bytes. The durable image is `current.prefix(durableLength)` unless `durableImage` is set, which
  /// happens when an unsynced change touched bytes below `durableLength` (an overwrite or a truncation), so
  /// that syncing appends costs no copy.
  final class Inode {
    var current: [UInt8] = []
    var durableLength = 0
    var durableImage: [UInt8]?
    /// Byte ranges a failed sync dropped: Linux marks such pages clean after a writeback error, so they stay
    /// readable but no later sync writes them, until they are written again (the "fsyncgate" behaviour).
    var lost: [Range<Int>] = []

    var durable: [UInt8] { durableImage ?? Array(current.prefix(durableLength)) }

    /// Keeps the durable image aside before `current` changes below `offset`.
    func preserveDurableImage(changingFrom offset: Int) {
      if offset < durableLength && durableImage == nil { durableImage = Array(current.prefix(durableLength)) }
    }

    func sync() {
      guard !lost.isEmpty else {
        durableLength = current.count
        durableImage = nil
        return
      }
      let old = durable
      var image = current
      for range in lost {
        for position in range where position < image.count {
          image[position] = position < old.count ? old[position] : 0
        }
      }
      durableImage = image
      durableLength = image.count
    }

    /// A failed sync: every byte not yet durable is dropped from the writeback (but stays readable).
    func failSync() {
      let old = durable
      var start: Int?
      for position in 0..<current.count {
        let differs = position >= old.count || old[position] != current[position]
        if differs && start == nil { start = position }
        if !differs, let first = start {
          lost.append(first..<position)
          start = nil
        }
      }
      if let first = start { lost.append(first..<current.count) }
      durableImage = old
      durableLength = old.count
    }

    /// `range` was written again: its bytes are dirty, so the next sync writes them.
    func rewrote(_ range: Range<Int>) {
      guard !lost.isEmpty else { return }
      lost = lost.flatMap { piece -> [Range<Int>] in
        guard piece.overlaps(range) else { return [piece] }
        var kept: [Range<Int>] = []
        if piece.lowerBound < range.lowerBound { kept.append(piece.lowerBound..<range.lowerBound) }
        if range.upperBound < piece.upperBound { kept.append(range.upperBound..<piece.upperBound) }
        return kept
      }
    }
  }

  private struct Directory {
    var current: [String: Inode] = [:]
    var durable: [String: Inode] = [:]
    /// The changes since the last sync, oldest first; each is applied whole or not at all by a crash.
    var pending: [[(name: String, inode: Inode?)]] = []

    mutating func change(_ operation: [(name: String, inode: Inode?)]) {
      for (name, inode) in operation { current[name] = inode }
      pending.append(operation)
    }
  }

  private let lock = NSLock()
  private var directories: [String: Directory] = [:]
  private var lockedInodes: Set<ObjectIdentifier> = []
  /// Bumped by every crash; handles of an older epoch fail.
  private var epoch = 0
  private var remainingOperations: Int?
  private var mutatingOperations = 0
  /// File syncs still to fail as a writeback error would (see `failNextFileSyncs`); read under `lock`.
  fileprivate var failingSyncs = 0

  public init() {}

  /// The number of mutating operations (writes, syncs, truncations, renames, removals, file creations) so far.
  public var mutatingOperationCount: Int { lock.withLock { mutatingOperations } }

  /// After `operations` more mutating operations succeed, all further operations fail with `EIO` (the
  /// process has "died") until `crash(using:)`. `nil` disarms.
  public func crashAfter(operations: Int?) {
    lock.withLock { remainingOperations = operations }
  }

  /// Makes the next `count` file syncs (`syncData`/`syncAll`) fail with `EIO` as Linux fails them after a
  /// writeback error: the unsynced bytes stay readable but are dropped from the writeback, so no later sync
  /// makes them durable unless they are written again, and a crash loses them.
  public func failNextFileSyncs(_ count: Int = 1) {
    lock.withLock { failingSyncs = count }
  }

  /// Loses every unsynced change, keeping a random prefix of unsynced appends, and invalidates open handles.
  /// `directoryChanges` says what becomes of unsynced directory changes.
  public func crash(
    using generator: inout some RandomNumberGenerator, directoryChanges: UnsyncedDirectoryChanges = .lost
  ) {
    lock.withLock {
      epoch += 1
      remainingOperations = nil
      lockedInodes.removeAll()
      var survivors: Set<ObjectIdentifier> = []
      for path in directories.keys.sorted() {
        guard var directory = directories[path] else { continue }
        if directoryChanges == .randomSubset {
          for operation in directory.pending where Bool.random(using: &generator) {
            for (name, inode) in operation { directory.durable[name] = inode }
          }
        }
        directory.current = directory.durable
        directory.pending = []
        directories[path] = directory
        // In name order, so that a given generator always tears the same files the same way.
        for name in directory.durable.keys.sorted() {
          guard let inode = directory.durable[name], survivors.insert(ObjectIdentifier(inode)).inserted else {
            continue
          }
          inode.lost = []
          if let image = inode.durableImage {
            inode.current = image
          } else {
            let kept = Int.random(in: 0...(inode.current.count - inode.durableLength), using: &generator)
            inode.current.removeSubrange((inode.durableLength + kept)...)
          }
          inode.sync()
        }
      }
    }
  }

  /// The current (not necessarily durable) contents of the file at `path`, if it exists.
  public func contents(of path: String) -> [UInt8]? {
    lock.withLock {
      let (parent, name) = split(path)
      return directories[parent]?.current[name]?.current
    }
  }

  // MARK: StorageFileSystem

  public func createDirectory(_ path: String) throws(StorageError) {
    try locked { () throws(StorageError) in
      try checkAlive(mutating: false, "mkdir", path)
      if directories[normalized(path)] == nil { directories[normalized(path)] = Directory() }
    }
  }

  public func listDirectory(_ path: String) throws(StorageError) -> [String] {
    try locked { () throws(StorageError) in
      try checkAlive(mutating: false, "opendir", path)
      guard let directory = directories[normalized(path)] else {
        throw .io(operation: "opendir", path: path, errno: ENOENT)
      }
      return Array(directory.current.keys)
    }
  }

  public func openFile(_ path: String, create: Bool) throws(StorageError) -> any StorageFile {
    let (inode, currentEpoch) = try locked { () throws(StorageError) -> (Inode, Int) in
      let (parent, name) = split(path)
      guard var directory = directories[parent] else { throw .io(operation: "open", path: path, errno: ENOENT) }
      if let inode = directory.current[name] {
        try checkAlive(mutating: false, "open", path)
        return (inode, epoch)
      }
      guard create else { throw .io(operation: "open", path: path, errno: ENOENT) }
      try checkAlive(mutating: true, "open", path)
      let inode = Inode()
      directory.change([(name, inode)])
      directories[parent] = directory
      return (inode, epoch)
    }
    return SimulatedFile(path: path, inode: inode, epoch: currentEpoch, fileSystem: self)
  }

  public func rename(_ source: String, to destination: String) throws(StorageError) {
    try locked { () throws(StorageError) in
      try checkAlive(mutating: true, "rename", source)
      let (sourceParent, sourceName) = split(source)
      let (destinationParent, destinationName) = split(destination)
      guard let inode = directories[sourceParent]?.current[sourceName], directories[destinationParent] != nil else {
        throw .io(operation: "rename to \(destination)", path: source, errno: ENOENT)
      }
      if sourceParent == destinationParent {
        directories[sourceParent]?.change([(sourceName, nil), (destinationName, inode)])
      } else {
        directories[sourceParent]?.change([(sourceName, nil)])
        directories[destinationParent]?.change([(destinationName, inode)])
      }
    }
  }

  public func removeFile(_ path: String) throws(StorageError) {
    try locked { () throws(StorageError) in
      try checkAlive(mutating: true, "unlink", path)
      let (parent, name) = split(path)
      guard directories[parent]?.current[name] != nil else { throw .io(operation: "unlink", path: path, errno: ENOENT) }
      directories[parent]?.change([(name, nil)])
    }
  }

  public func syncDirectory(_ path: String) throws(StorageError) {
    try locked { () throws(StorageError) in
      try checkAlive(mutating: true, "fsync directory", path)
      guard var directory = directories[normalized(path)] else {
        throw .io(operation: "fsync directory", path: path, errno: ENOENT)
      }
      directory.durable = directory.current
      directory.pending = []
      directories[normalized(path)] = directory
    }
  }

  // MARK: Internals (called with the lock held, or taking it)

  private func locked<T>(_ body: () throws(StorageError) -> T) throws(StorageError) -> T {
    lock.lock()
    defer { lock.unlock() }
    return try body()
  }

  /// Fails if a crash point has been reached; counts the operation if it mutates.
  private func checkAlive(mutating: Bool, _ operation: String, _ path: String) throws(StorageError) {
    if let remaining = remainingOperations, remaining <= 0 {
      throw .io(operation: "\(operation) (simulated crash)", path: path, errno: EIO)
    }
    guard mutating else { return }
    mutatingOperations += 1
    if let remaining = remainingOperations { remainingOperations = remaining - 1 }
  }

  /// Runs `body` on `inode` if `epoch` is current and no crash point is reached.
  fileprivate func withInode<T>(
    _ inode: Inode, epoch handleEpoch: Int, mutating: Bool, _ operation: String, _ path: String,
    _ body: (Inode) throws(StorageError) -> T
  ) throws(StorageError) -> T {
    try locked { () throws(StorageError) -> T in
      guard handleEpoch == epoch else {
        throw .io(operation: "\(operation) (handle from before a simulated crash)", path: path, errno: EBADF)
      }
      try checkAlive(mutating: mutating, operation, path)
      return try body(inode)
    }
  }

  fileprivate func lockInode(_ inode: Inode, epoch handleEpoch: Int, path: String) throws(StorageError) {
    try withInode(inode, epoch: handleEpoch, mutating: false, "flock", path) { (inode) throws(StorageError) in
      guard lockedInodes.insert(ObjectIdentifier(inode)).inserted else { throw .directoryLocked(path: path) }
    }
  }

  /// Releases a lock taken through a handle of `handleEpoch`; locks of handles from before a crash are gone.
  fileprivate func unlockInode(_ inode: Inode, epoch handleEpoch: Int) {
    lock.withLock {
      guard handleEpoch == epoch else { return }
      _ = lockedInodes.remove(ObjectIdentifier(inode))
    }
  }

  private func normalized(_ path: String) -> String {
    var trimmed = Substring(path)
    while trimmed.count > 1 && trimmed.hasSuffix("/") { trimmed = trimmed.dropLast() }
    return String(trimmed)
  }

  private func split(_ path: String) -> (directory: String, name: String) {
    let path = normalized(path)
    guard let slash = path.lastIndex(of: "/") else { return (".", path) }
    let directory = path[..<slash]
    return (directory.isEmpty ? "/" : String(directory), String(path[path.index(after: slash)...]))
  }
}

/// A handle on a `SimulatedFileSystem` inode.
private final class SimulatedFile: StorageFile {
  let path: String
  private let inode: SimulatedFileSystem.Inode
  private let epoch: Int
  private let fileSystem: SimulatedFileSystem
  private var isOpen = true
  private var holdsLock = false

  init(path: String, inode: SimulatedFileSystem.Inode, epoch: Int, fileSystem: SimulatedFileSystem) {
    self.path = path
    self.inode = inode
    self.epoch = epoch
    self.fileSystem = fileSystem
  }

  private func access<T>(mutating: Bool, _ operation: String, _ body: (SimulatedFileSystem.Inode) -> T)
    throws(StorageError) -> T
  {
    guard isOpen else { throw .io(operation: operation, path: path, errno: EBADF) }
    return try fileSystem.withInode(inode, epoch: epoch, mutating: mutating, operation, path) {
      (inode) throws(StorageError) in body(inode)
    }
  }

  func size() throws(StorageError) -> Int64 {
    try access(mutating: false, "fstat") { Int64($0.current.count) }
  }

  func read(at offset: Int64, count: Int) throws(StorageError) -> [UInt8] {
    try access(mutating: false, "pread") { inode in
      let start = min(Int(offset), inode.current.count)
      return Array(inode.current[start..<min(start + count, inode.current.count)])
    }
  }

  func write(_ bytes: [UInt8], at offset: Int64) throws(StorageError) {
    try access(mutating: true, "pwrite") { inode in
      let start = Int(offset)
      inode.preserveDurableImage(changingFrom: start)
      if inode.current.count < start + bytes.count {
        inode.current.append(contentsOf: [UInt8](repeating: 0, count: start + bytes.count - inode.current.count))
      }
      inode.current.replaceSubrange(start..<start + bytes.count, with: bytes)
      inode.rewrote(start..<start + bytes.count)
    }
  }

  func syncData() throws(StorageError) { try sync("fdatasync") }

  func syncAll() throws(StorageError) { try sync("fsync") }

  private func sync(_ operation: String) throws(StorageError) {
    let fileSystem = fileSystem
    let failed = try access(mutating: true, operation) { inode -> Bool in
      guard fileSystem.failingSyncs > 0 else {
        inode.sync()
        return false
      }
      fileSystem.failingSyncs -= 1
      inode.failSync()
      return true
    }
    if failed { throw .io(operation: "\(operation) (simulated writeback error)", path: path, errno: EIO) }
  }

  func truncate(to length: Int64) throws(StorageError) {
    try access(mutating: true, "ftruncate") { inode in
      let length = Int(length)
      inode.preserveDurableImage(changingFrom: length)
      inode.rewrote(length..<Int.max)
      if inode.current.count > length {
        inode.current.removeSubrange(length...)
      } else {
        inode.current.append(contentsOf: [UInt8](repeating: 0, count: length - inode.current.count))
      }
    }
  }

  func lockExclusively() throws(StorageError) {
    guard isOpen else { throw .io(operation: "flock", path: path, errno: EBADF) }
    try fileSystem.lockInode(inode, epoch: epoch, path: path)
    holdsLock = true
  }

  func close() {
    guard isOpen else { return }
    isOpen = false
    if holdsLock { fileSystem.unlockInode(inode, epoch: epoch) }
  }

  deinit { close() }
}
