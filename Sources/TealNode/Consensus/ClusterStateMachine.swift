// The adapter between RaftNode and the pure ClusterState: decodes entries, applies them, and tells
// the node's shells that the applied index moved.

import Foundation
import NIOConcurrencyHelpers
import TealCluster
import TealConsensus
import TealWire

/// `ClusterState` as RaftNode's replicated state machine.
///
/// `apply` decodes the entry and hands it to ``ClusterState/apply(_:index:term:)``; an entry that
/// does not decode (written by a newer version, or corrupt) is answered with a rejection on every
/// node alike, so replicas never diverge. The result handed back to the proposer is the applied
/// index (8 bytes, little-endian) followed by the encoded ``ClusterResult``: a follower that forwarded
/// the write waits until it has applied that index itself before it answers its client.
struct ClusterStateMachine: ReplicatedStateMachine {
  private(set) var state: ClusterState
  /// The last index applied (or covered by the restored snapshot); saved with the snapshot.
  private(set) var appliedIndex: UInt64 = 0
  /// Shared with the node's shells; told of every applied index. Not part of the replicated state.
  let observer: AppliedIndexObserver

  init(state: ClusterState = ClusterState(), observer: AppliedIndexObserver) {
    self.state = state
    self.observer = observer
  }

  mutating func apply(_ command: [UInt8], index: UInt64, term: UInt64) -> [UInt8] {
    let result: ClusterResult
    do {
      let entry = try ClusterEntry(decoding: command)
      result = state.apply(entry, index: index, term: term)
    } catch {
      result = .rejected(ClusterRejection(code: .badRequest, message: "undecodable log entry: \(error)"))
    }
    appliedIndex = index
    observer.applied(index)
    return AppliedResult(index: index, result: result).encoded()
  }

  /// The applied index (8 bytes) followed by ClusterState's canonical snapshot.
  func snapshot() -> [UInt8] {
    var writer = WireWriter()
    writer.writeFixed(appliedIndex)
    writer.write(state.snapshot())
    return writer.bytes
  }

  mutating func restore(from snapshot: [UInt8]) throws {
    var reader = WireReader(snapshot)
    let index = try reader.readFixed64("snapshot.appliedIndex")
    state = try ClusterState(snapshot: try reader.readBytes("snapshot.state"))
    try reader.expectEnd()
    appliedIndex = index
    observer.restored(index)
  }
}

/// What RaftNode hands back to the proposer of one entry.
struct AppliedResult: Sendable {
  var index: UInt64
  var result: ClusterResult

  func encoded() -> [UInt8] {
    var writer = WireWriter()
    writer.writeFixed(index)
    writer.write(ClusterWire.encode(result))
    return writer.bytes
  }

  init(index: UInt64, result: ClusterResult) {
    self.index = index
    self.result = result
  }

  init(decoding bytes: [UInt8]) throws {
    var reader = WireReader(bytes)
    index = try reader.readFixed64("applied.index")
    result = try ClusterWire.decode(ClusterResult.self, from: try reader.readBytes("applied.result"))
  }
}

/// The applied index, readable from any task, with waiters and a change stream.
///
/// Written only from RaftNode's executor (inside `apply` and `restore`); read by the API (to answer a
/// forwarded write only once this node applied it) and by the reconcilers (to wake on every change).
final class AppliedIndexObserver: Sendable {
  private struct Waiter {
    var index: UInt64
    var continuation: CheckedContinuation<Bool, Never>
  }
  private struct State {
    var applied: UInt64 = 0
    var waiters: [Int: Waiter] = [:]
    var nextWaiter = 0
    var subscribers: [Int: AsyncStream<UInt64>.Continuation] = [:]
    var nextSubscriber = 0
  }
  private let box = NIOLockedValueBox(State())

  /// Bound on concurrent waiters (one per in-flight forwarded write): beyond it `wait` answers false
  /// at once, and the API answers 503.
  static let maximumWaiters = 16_384

  var appliedIndex: UInt64 { box.withLockedValue { $0.applied } }

  func applied(_ index: UInt64) { advance(to: index) }
  func restored(_ index: UInt64) { advance(to: index) }

  private func advance(to index: UInt64) {
    let (ready, subscribers) = box.withLockedValue {
      state -> ([CheckedContinuation<Bool, Never>], [AsyncStream<UInt64>.Continuation]) in
      guard index > state.applied else { return ([], []) }
      state.applied = index
      var ready: [CheckedContinuation<Bool, Never>] = []
      for (key, waiter) in state.waiters where waiter.index <= index {
        ready.append(waiter.continuation)
        state.waiters[key] = nil
      }
      return (ready, Array(state.subscribers.values))
    }
    for continuation in ready { continuation.resume(returning: true) }
    for subscriber in subscribers { subscriber.yield(index) }
  }

  /// Waits until `index` is applied here or `timeout` passes; true if it was applied.
  func wait(forIndex index: UInt64, timeout: Duration) async -> Bool {
    if appliedIndex >= index { return true }
    let key: Int? = box.withLockedValue { state in
      guard state.waiters.count < Self.maximumWaiters else { return nil }
      state.nextWaiter += 1
      return state.nextWaiter
    }
    guard let key else { return false }
    let timer = Task {
      try? await Task.sleep(for: timeout)
      self.expire(key)
    }
    defer { timer.cancel() }
    return await withCheckedContinuation { continuation in
      let resumeNow = box.withLockedValue { state -> Bool in
        if state.applied >= index { return true }
        state.waiters[key] = Waiter(index: index, continuation: continuation)
        return false
      }
      if resumeNow { continuation.resume(returning: true) }
    }
  }

  private func expire(_ key: Int) {
    let waiter = box.withLockedValue { $0.waiters.removeValue(forKey: key) }
    waiter?.continuation.resume(returning: false)
  }

  /// A stream of applied indexes; it keeps only the newest (a slow reader sees the latest, not every one).
  func changes() -> AsyncStream<UInt64> {
    let (stream, continuation) = AsyncStream.makeStream(of: UInt64.self, bufferingPolicy: .bufferingNewest(1))
    let key = box.withLockedValue { state -> Int in
      state.nextSubscriber += 1
      state.subscribers[state.nextSubscriber] = continuation
      return state.nextSubscriber
    }
    continuation.onTermination = { [weak self] _ in
      _ = self?.box.withLockedValue { $0.subscribers.removeValue(forKey: key) }
    }
    continuation.yield(appliedIndex)
    return stream
  }

  /// Ends every stream and releases every waiter (the node is stopping).
  func finish() {
    let (waiters, subscribers) = box.withLockedValue { state in
      let result = (Array(state.waiters.values), Array(state.subscribers.values))
      state.waiters = [:]
      state.subscribers = [:]
      return result
    }
    for waiter in waiters { waiter.continuation.resume(returning: false) }
    for subscriber in subscribers { subscriber.finish() }
  }
}

/// JSON for the Codable values the node passes through Raft results and the control channel.
enum ClusterWire {
  static func encode<T: Encodable>(_ value: T) -> [UInt8] {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys]
    do { return Array(try encoder.encode(value)) } catch {
      preconditionFailure("encoding \(T.self) cannot fail: \(error)")
    }
  }

  static func decode<T: Decodable>(_ type: T.Type, from bytes: [UInt8]) throws -> T {
    try JSONDecoder().decode(type, from: Data(bytes))
  }
}
