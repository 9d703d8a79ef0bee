// The adapter between RaftNode and the pure ClusterState: decodes entries, applies them, and tells
// the node's shells that the applied index moved.

import NIOConcurrencyHelpers
import TealCluster
import TealConsensus
import TealWire

/// `ClusterState` as RaftNode's replicated state machine.
///
/// `apply` hands the entry's bytes to ``ClusterState/apply(bytes:index:term:)`` (which also answers an
/// entry that does not decode, identically on every node) and tells the node's shells that the
/// applied index moved. The result handed back to the proposer is the applied index (8 bytes,
/// little-endian) followed by the encoded ``ClusterResult``: a follower that forwarded the write
/// waits until it has applied that index itself before it answers its client. Snapshots are
/// ClusterState's own (they carry its applied index).
struct ClusterStateMachine: ReplicatedStateMachine {
  private(set) var state: ClusterState
  /// Shared with the node's shells; told of every applied index. Not part of the replicated state.
  let observer: AppliedIndexObserver
  /// Told of every applied entry with the state after it (TealNodeTesting's invariant checks; nil in
  /// a node).
  let onApplied: AppliedEntryObserver?

  init(state: ClusterState = ClusterState(), observer: AppliedIndexObserver, onApplied: AppliedEntryObserver? = nil) {
    self.state = state
    self.observer = observer
    self.onApplied = onApplied
  }

  mutating func apply(_ command: [UInt8], index: UInt64, term: UInt64) -> [UInt8] {
    let result = state.apply(bytes: command, index: index, term: term)
    onApplied?(AppliedEntry(index: index, term: term, bytes: command, result: result), state)
    observer.applied(index)
    var writer = WireWriter()
    writer.writeFixed(index)
    writer.write(result)
    return writer.bytes
  }

  func snapshot() -> [UInt8] { state.snapshot() }

  mutating func restore(from snapshot: [UInt8]) throws {
    try state.restore(from: snapshot)
    observer.restored(state.appliedIndex)
  }
}

/// One entry as a node applied it: its log index, the term of its Raft entry, its bytes and the
/// encoded ``ClusterResult`` that `apply` answered.
public struct AppliedEntry: Sendable {
  public var index: UInt64
  public var term: UInt64
  public var bytes: [UInt8]
  public var result: [UInt8]
}

/// Told of every entry a node applies, with the state after it. It runs on the node's Raft executor
/// inside `apply`: it must be quick, and must not keep `state` beyond the call (a kept copy would make
/// the next apply copy the whole state).
public typealias AppliedEntryObserver = @Sendable (AppliedEntry, ClusterState) -> Void

/// What RaftNode hands back to the proposer of one entry (see ``ClusterStateMachine``).
struct AppliedResult: Sendable {
  var index: UInt64
  /// The encoded ``ClusterResult``.
  var result: [UInt8]

  init(decoding bytes: [UInt8]) throws {
    var reader = WireReader(bytes)
    index = try reader.readFixed64("applied.index")
    result = try reader.readBytes("applied.result")
    try reader.expectEnd()
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
