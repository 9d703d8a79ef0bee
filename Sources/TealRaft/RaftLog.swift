/// The in-memory log of one node: a compacted prefix (summarised by the snapshot's index and
/// term) followed by entries.
///
/// Invariants: `entries[i].index == snapshotIndex + 1 + i`; `snapshotIndex <= applied <=
/// committed`; `persisted <= lastIndex`; every entry below `unstableFrom` has been handed to the
/// shell for persisting.
struct RaftLog: Sendable {
  var snapshotIndex: UInt64 = 0
  var snapshotTerm: UInt64 = 0
  var entries: [RaftEntry] = []
  /// Highest index known committed.
  var committed: UInt64 = 0
  /// Highest index handed to the application to apply.
  var applied: UInt64 = 0
  /// Highest index known durable on this node's disk and matching this log.
  var persisted: UInt64 = 0
  /// First index not yet handed to the shell to persist.
  var unstableFrom: UInt64 = 1

  var firstIndex: UInt64 { snapshotIndex + 1 }
  var lastIndex: UInt64 { snapshotIndex + UInt64(entries.count) }
  var lastTerm: UInt64 { entries.last?.term ?? snapshotTerm }

  /// The term of the entry at `index`, or nil if it is compacted away or beyond the log.
  func term(at index: UInt64) -> UInt64? {
    if index == snapshotIndex { return snapshotTerm }
    if index < snapshotIndex || index > lastIndex { return nil }
    return entries[Int(index - snapshotIndex - 1)].term
  }

  /// The entry at `index`, which must be in `firstIndex...lastIndex`.
  func entry(at index: UInt64) -> RaftEntry {
    precondition(
      index > snapshotIndex && index <= lastIndex,
      "RaftLog.entry(at: \(index)) outside the log \(firstIndex)...\(lastIndex)")
    return entries[Int(index - snapshotIndex - 1)]
  }

  /// Entries from `from` through `through` (both in `firstIndex...lastIndex`).
  func slice(from: UInt64, through: UInt64) -> ArraySlice<RaftEntry> {
    if from > through { return [] }
    precondition(
      from > snapshotIndex && through <= lastIndex,
      "RaftLog.slice(\(from)...\(through)) outside the log \(firstIndex)...\(lastIndex)")
    return entries[Int(from - snapshotIndex - 1)...Int(through - snapshotIndex - 1)]
  }

  /// Moves the commit index up to `index`, which must be in the log. Never moves it back.
  mutating func commit(to index: UInt64) {
    precondition(index <= lastIndex, "RaftLog.commit(to: \(index)) beyond the last index \(lastIndex)")
    if index > committed { committed = index }
  }

  /// Entries from `from` limited by count and bytes (at least one entry if any exists).
  func slice(from: UInt64, maxCount: Int, maxBytes: Int) -> [RaftEntry] {
    if from > lastIndex || from <= snapshotIndex { return [] }
    var result: [RaftEntry] = []
    var bytes = 0
    var index = from
    while index <= lastIndex && result.count < maxCount {
      let e = entry(at: index)
      bytes += e.data.count + 16
      if !result.isEmpty && bytes > maxBytes { break }
      result.append(e)
      index += 1
    }
    return result
  }

  /// §5.4.1: a candidate's log is at least as up to date as this one.
  func isUpToDate(lastIndex candidateIndex: UInt64, lastTerm candidateTerm: UInt64) -> Bool {
    candidateTerm > lastTerm || (candidateTerm == lastTerm && candidateIndex >= lastIndex)
  }

  /// The largest index `i <= index` whose term is `<= term`, with that term: the furthest point
  /// at which two logs can still agree (used for fast back-off in both directions).
  /// Below the snapshot the terms are unknown: the answer is then `index` with term 0, which
  /// makes a leader fall back to sending its snapshot.
  func hint(atMost index: UInt64, term: UInt64) -> (index: UInt64, term: UInt64) {
    var i = min(index, lastIndex)
    if i < snapshotIndex { return (i, 0) }
    while i > snapshotIndex {
      let t = entry(at: i).term
      if t <= term { return (i, t) }
      i -= 1
    }
    if snapshotTerm <= term || snapshotIndex == 0 { return (snapshotIndex, snapshotTerm) }
    return (snapshotIndex - 1, 0)
  }

  /// Removes every entry at `index` and after.
  mutating func truncate(from index: UInt64) {
    guard index <= lastIndex, index > snapshotIndex else { return }
    entries.removeSubrange(Int(index - snapshotIndex - 1)...)
    unstableFrom = min(unstableFrom, index)
    persisted = min(persisted, index - 1)
  }

  mutating func append(_ entry: RaftEntry) {
    precondition(
      entry.index == lastIndex + 1 && entry.term >= lastTerm,
      "RaftLog.append(\(entry)) after \(lastIndex)@\(lastTerm): entries must be consecutive, terms never decrease")
    entries.append(entry)
  }

  /// Follower side of AppendEntries once `prevIndex`/`prevTerm` matched: skips entries already
  /// present, truncates at the first conflict and appends the rest. Returns the index of the
  /// first entry written (nil if nothing changed), or `.failure` if a conflict falls at or below
  /// the commit index (which Raft's safety rules forbid; the message is then ignored).
  mutating func merge(_ new: [RaftEntry]) -> Result<UInt64?, ConflictBelowCommit> {
    for (offset, e) in new.enumerated() {
      if e.index <= snapshotIndex { continue }
      if let existing = term(at: e.index), existing == e.term { continue }
      if e.index <= committed { return .failure(ConflictBelowCommit(index: e.index)) }
      truncate(from: e.index)
      precondition(
        e.index == lastIndex + 1 && e.term >= lastTerm,
        "RaftLog.merge: entry \(e) does not follow \(lastIndex)@\(lastTerm)")
      entries.append(contentsOf: new[offset...])
      return .success(e.index)
    }
    return .success(nil)
  }

  struct ConflictBelowCommit: Error {
    var index: UInt64
  }

  /// Drops entries up to and including `index` (which must be in the log).
  mutating func compact(upTo index: UInt64) {
    guard index > snapshotIndex, let t = term(at: index) else { return }
    entries.removeSubrange(..<Int(index - snapshotIndex))
    snapshotIndex = index
    snapshotTerm = t
  }

  /// Replaces the whole log with a snapshot's position.
  mutating func restore(index: UInt64, term: UInt64) {
    entries = []
    snapshotIndex = index
    snapshotTerm = term
    committed = index
    applied = index
    persisted = 0
    unstableFrom = index + 1
  }
}

/// What the leader knows about one follower's log (thesis §3.5 and etcd's flow control).
///
/// States: `probe` sends one append at a time until the match point is found; `replicate`
/// streams appends optimistically up to `maxInflight` unacknowledged messages (and `maxBytes`
/// unacknowledged bytes); `snapshot` sends InstallSnapshot chunks and nothing else.
struct Progress: Sendable {
  enum State: Sendable { case probe, replicate, snapshot }

  /// Highest index known replicated on the follower.
  var match: UInt64 = 0
  /// Next index to send.
  var next: UInt64
  var state: State = .probe
  /// In probe state: an append is outstanding; cleared by its response, or by a heartbeat
  /// response once it has been outstanding for a heartbeat interval (it may have been lost).
  var probeSent = false
  /// The leader's tick count when the outstanding probe was sent.
  var probeSentAt: UInt64 = 0
  /// In replicate state: the unacknowledged appends, oldest first.
  var inflight: [Inflight] = []
  /// Bytes of `inflight` (entry data plus 16 bytes per entry).
  var inflightBytes = 0

  /// One unacknowledged append: its last index, its size and the leader's tick count when it was sent.
  struct Inflight: Sendable {
    var index: UInt64
    var bytes: Int
    var sentAt: UInt64
  }
  /// Whether the follower answered since the last check-quorum round.
  var recentActive = false
  /// Highest ReadIndex round the follower confirmed.
  var readAck: UInt64 = 0
  /// In snapshot state: the snapshot being sent and how many bytes the follower holds.
  var snapshotIndex: UInt64 = 0
  var snapshotOffset: UInt64 = 0

  init(next: UInt64) { self.next = next }

  mutating func becomeProbe() {
    state = .probe
    probeSent = false
    inflight.removeAll()
    inflightBytes = 0
    next = match + 1
  }

  mutating func becomeReplicate() {
    state = .replicate
    inflight.removeAll()
    inflightBytes = 0
    next = match + 1
  }

  func isPaused(maxInflight: Int, maxBytes: Int) -> Bool {
    switch state {
    case .probe: probeSent
    case .replicate: inflight.count >= maxInflight || (!inflight.isEmpty && inflightBytes >= maxBytes)
    case .snapshot: true
    }
  }

  /// Records an append sent in replicate state.
  mutating func sent(lastIndex: UInt64, bytes: Int, at tick: UInt64) {
    inflight.append(Inflight(index: lastIndex, bytes: bytes, sentAt: tick))
    inflightBytes += bytes
  }

  /// Frees in-flight slots for appends acknowledged up to `index`.
  mutating func acknowledge(upTo index: UInt64) {
    var drop = 0
    while drop < inflight.count && inflight[drop].index <= index {
      inflightBytes -= inflight[drop].bytes
      drop += 1
    }
    if drop > 0 { inflight.removeFirst(drop) }
  }

  /// True when the oldest unacknowledged append was sent at least `ticks` ago: it (or its
  /// acknowledgement) was probably lost, so replication restarts from the match point.
  func isStalled(now: UInt64, after ticks: UInt64) -> Bool {
    guard state == .replicate, let oldest = inflight.first else { return false }
    return now >= oldest.sentAt + ticks
  }
}
