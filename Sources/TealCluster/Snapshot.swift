// Snapshots of ClusterState: versioned and canonical.
//
// Bytes: "TCS" (0x54 0x43 0x53), one version byte, then the state as JSON with sorted keys. Every
// dictionary in the state is keyed by String and every other collection is an array in a defined
// order, so two processes holding equal states write byte-identical snapshots (Swift seeds hashing
// per process; nothing here depends on hash order).

import Foundation
import TealDeploy

extension ClusterState {
  /// The snapshot format version this build writes. Version 2 added `variables`; version 1
  /// snapshots (without it) are still read, as holding no variables.
  public static let snapshotVersion: UInt8 = 2
  /// The versions this build reads.
  public static let readableSnapshotVersions: ClosedRange<UInt8> = 1...2
  static let snapshotMagic: [UInt8] = [0x54, 0x43, 0x53]

  /// The canonical bytes of the whole state.
  public func snapshot() -> [UInt8] {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys]
    do {
      return Self.snapshotMagic + [Self.snapshotVersion] + Array(try encoder.encode(self))
    } catch {
      preconditionFailure("a ClusterState always encodes to JSON: \(error)")
    }
  }

  /// Restores a state from `snapshot()` bytes.
  public init(snapshot bytes: some Collection<UInt8>) throws(ClusterSnapshotError) {
    let array = Array(bytes)
    guard array.count >= 4, Array(array[0..<3]) == Self.snapshotMagic else { throw .notASnapshot }
    guard Self.readableSnapshotVersions.contains(array[3]) else { throw .unsupportedVersion(array[3]) }
    let state: ClusterState
    do {
      state = try JSONDecoder().decode(ClusterState.self, from: Data(array[4...]))
    } catch {
      throw .malformed(reason: ClusterEntryError.describe(error))
    }
    if let problem = state.invariantViolation() { throw .malformed(reason: problem) }
    self = state
  }

  /// Lowercase hex SHA-256 of `snapshot()`: equal exactly when two states are equal.
  public var stateHash: String { SHA256.hexDigest(snapshot()) }

  /// The first broken invariant, or nil. Checked on restore (a snapshot is input from disk or a peer).
  public func invariantViolation() -> String? {
    for name in services.keys.sorted() {
      guard let service = services[name] else { continue }
      if service.name != name { return "service stored under \(name) is named \(service.name)" }
      var previous = 0
      for revision in service.revisions {
        guard revision.id == RevisionID(service: name, number: revision.id.number), revision.id.number > previous
        else { return "service \(name): revision \(revision.id) is out of order (after \(name):\(previous))" }
        previous = revision.id.number
      }
      if service.revisions.isEmpty { return "service \(name) has no revision" }
      if service.revision(service.currentRevision) == nil {
        return "service \(name): current revision \(service.currentRevision) is not registered"
      }
      if let loops = service.crashLoops {
        if loops.isEmpty { return "service \(name): empty crash loops are written as none" }
        for key in loops.keys.sorted() {
          guard let number = Int(key), service.revision(number) != nil, String(number) == key else {
            return "service \(name): crash loop of revision \(key), which is not registered"
          }
          guard let loop = loops[key], (1...CrashLoop.maximumCrashes).contains(loop.crashes) else {
            return "service \(name): crash loop of revision \(key) counts outside 1...\(CrashLoop.maximumCrashes)"
          }
        }
      }
    }
    for id in nodes.keys.sorted() where nodes[id]?.info.id.rawValue != id {
      return "node stored under \(id) has another id"
    }
    for id in tasks.keys.sorted() {
      guard let task = tasks[id] else { continue }
      if task.id != id { return "task stored under \(id) is named \(task.id)" }
      if id != "\(task.service).\(task.revision.number).\(task.sequence)" {
        return "task \(id): id does not match service, revision and sequence \(task.sequence)"
      }
      guard let service = services[task.service], service.revision(task.revision.number) != nil,
        task.revision.service == task.service
      else { return "task \(id): revision \(task.revision) is not registered" }
      guard let node = nodes[task.node.rawValue], node.isUp else { return "task \(id): node \(task.node) is not up" }
      if task.sequence > taskSequence { return "task \(id): sequence \(task.sequence) above \(taskSequence)" }
      if (task.desired == .running) != (task.drainGeneration == nil) {
        return
          "task \(id): desired \(task.desired.rawValue) with drain generation \(String(describing: task.drainGeneration))"
      }
    }
    if let problem = variables.invariantViolation(appliedIndex: appliedIndex) { return problem }
    var indexed: [String: Set<String>] = [:]
    for task in tasks.values { indexed[task.service, default: []].insert(task.id) }
    if indexed != taskIDsByService { return "the task index disagrees with the tasks" }
    return nil
  }
}

/// Why bytes are not a usable snapshot of ``ClusterState``.
public enum ClusterSnapshotError: Error, Hashable, Sendable, CustomStringConvertible {
  /// The bytes do not start with the snapshot magic `TCS`.
  case notASnapshot
  case unsupportedVersion(UInt8)
  case malformed(reason: String)

  public var description: String {
    switch self {
    case .notASnapshot: return "not a cluster state snapshot (missing the TCS header)"
    case .unsupportedVersion(let version):
      return
        "cluster state snapshot version \(version) is not supported (this build reads versions \(ClusterState.readableSnapshotVersions.lowerBound)...\(ClusterState.readableSnapshotVersions.upperBound))"
    case .malformed(let reason): return "malformed cluster state snapshot: \(reason)"
    }
  }
}
