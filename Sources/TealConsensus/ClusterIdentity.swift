// The cluster id a data directory belongs to: written once, checked at every start.

import TealStorage

/// Keeps the file `cluster-id` in a node's data directory: the id of the cluster whose log the directory
/// holds. A node refuses to start on a directory of another cluster (a mistyped path, a disk moved between
/// clusters) instead of mixing two clusters' terms and votes.
enum ClusterIdentity {
  static let fileName = "cluster-id"
  /// Longest accepted id, in UTF-8 bytes.
  static let maximumLength = 128

  /// Checks `id` is usable: 1 to 128 printable ASCII characters, no spaces.
  static func validate(_ id: String) throws(RaftNodeError) {
    let bytes = Array(id.utf8)
    guard !bytes.isEmpty, bytes.count <= maximumLength, bytes.allSatisfy({ $0 > 0x20 && $0 < 0x7f }) else {
      throw .invalidRequest(
        "clusterID \"\(id)\" must be 1 to \(maximumLength) printable ASCII characters without spaces")
    }
  }

  /// Ensures `directory` belongs to cluster `id`: a directory without the file gets it (durably: temporary
  /// file, fsync, rename, directory fsync); one with another id is refused.
  static func ensure(_ id: String, in directory: String, fileSystem: any StorageFileSystem) throws(RaftNodeError) {
    let path = directory.hasSuffix("/") ? directory + fileName : directory + "/" + fileName
    do {
      if let existing = try read(path, fileSystem: fileSystem) {
        guard existing == id else {
          throw RaftNodeError.invalidPersistentState(
            "\(path): the data directory belongs to cluster \"\(existing)\", not to \"\(id)\"")
        }
        return
      }
      let temporary = path + ".tmp"
      let file = try fileSystem.openFile(temporary, create: true)
      do {
        try file.truncate(to: 0)
        try file.write(Array((id + "\n").utf8), at: 0)
        try file.syncAll()
      } catch {
        file.close()
        throw error
      }
      file.close()
      try fileSystem.rename(temporary, to: path)
      try fileSystem.syncDirectory(directory)
    } catch let error as RaftNodeError {
      throw error
    } catch let error as StorageError {
      throw .storage(error)
    } catch {
      throw .invalidPersistentState("\(path): \(error)")
    }
  }

  /// The id stored at `path`, nil if there is no such file.
  private static func read(_ path: String, fileSystem: any StorageFileSystem) throws -> String? {
    let directory = String(path[..<(path.lastIndex(of: "/") ?? path.startIndex)])
    guard try fileSystem.listDirectory(directory.isEmpty ? "." : directory).contains(fileName) else { return nil }
    let file = try fileSystem.openFile(path, create: false)
    defer { file.close() }
    let size = try file.size()
    guard size <= Int64(maximumLength + 1) else {
      throw RaftNodeError.invalidPersistentState("\(path): \(size) bytes, not a cluster id")
    }
    let text = String(decoding: try file.read(at: 0, count: Int(size)), as: UTF8.self)
    return text.hasSuffix("\n") ? String(text.dropLast()) : text
  }
}
