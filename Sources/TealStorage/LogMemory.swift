// The in-memory image of the log, shared by WAL replay and the live `DurableLog`, so that replaying the
// records a `DurableLog` wrote always rebuilds exactly the log it had.

/// A contiguous run of entries that continues the log after `(baseIndex, baseTerm)`.
///
/// Invariants: `entries[k].index == baseIndex + 1 + k`; terms never decrease, starting from `baseTerm`;
/// `entrySegments[k]` is the sequence number of the WAL segment holding the record that wrote `entries[k]`.
struct LogMemory {
  private(set) var baseIndex: UInt64
  private(set) var baseTerm: UInt64
  private(set) var entries: [StoredEntry] = []
  private(set) var entrySegments: [UInt64] = []
  /// The latest hard state written, or nil if no record carried one.
  var hardState: StoredHardState?

  init(baseIndex: UInt64, baseTerm: UInt64) {
    self.baseIndex = baseIndex
    self.baseTerm = baseTerm
  }

  var lastIndex: UInt64 { baseIndex + UInt64(entries.count) }
  var lastTerm: UInt64 { entries.last?.term ?? baseTerm }

  /// The term at `index` if the log knows it: the base or one of its entries.
  func term(at index: UInt64) -> UInt64? {
    if index == baseIndex { return baseTerm }
    guard index > baseIndex, index <= lastIndex else { return nil }
    return entries[Int(index - baseIndex - 1)].term
  }

  /// Applies a rebase: if the log holds `term` at `index`, the entries after `index` are dropped; otherwise
  /// every entry is dropped and the log continues after `(index, term)`.
  mutating func rebase(index: UInt64, term: UInt64) {
    if self.term(at: index) == term {
      let keep = Int(index - baseIndex)
      entries.removeSubrange(keep...)
      entrySegments.removeSubrange(keep...)
    } else {
      entries.removeAll()
      entrySegments.removeAll()
      baseIndex = index
      baseTerm = term
    }
  }

  /// Makes the log continue after `(index, term)`, a snapshot's position: if the log holds `term` at `index`,
  /// the entries up to it are dropped and the later ones kept; otherwise every entry is dropped.
  mutating func compact(through index: UInt64, term: UInt64) {
    if index == baseIndex && term == baseTerm { return }
    if index > baseIndex, self.term(at: index) == term {
      let drop = Int(index - baseIndex)
      entries.removeSubrange(..<drop)
      entrySegments.removeSubrange(..<drop)
    } else {
      entries.removeAll()
      entrySegments.removeAll()
    }
    baseIndex = index
    baseTerm = term
  }

  /// Why `entry` cannot follow the current last entry, or nil if it can.
  func problemAppending(_ entry: StoredEntry, after previousTerm: UInt64, previousIndex: UInt64) -> String? {
    if entry.index != previousIndex + 1 {
      if entry.index <= previousIndex {
        return "entry index \(entry.index) goes backwards (the log's last index is \(previousIndex)) "
          + "without a truncation record"
      }
      return "index gap: entry index \(entry.index) follows last index \(previousIndex)"
    }
    if entry.term < previousTerm {
      return "entry \(entry.index) has term \(entry.term), lower than the term \(previousTerm) before it"
    }
    return nil
  }

  /// Appends `entry`, written in segment `segment`; returns why not if it does not continue the log.
  mutating func append(_ entry: StoredEntry, segment: UInt64) -> String? {
    if let problem = problemAppending(entry, after: lastTerm, previousIndex: lastIndex) { return problem }
    entries.append(entry)
    entrySegments.append(segment)
    return nil
  }

  /// Applies one update record written in `segment`; returns why not if its entries do not continue the log.
  mutating func apply(_ update: LogUpdate, segment: UInt64) -> String? {
    if let rebase = update.rebase { self.rebase(index: rebase.index, term: rebase.term) }
    for entry in update.entries {
      if let problem = append(entry, segment: segment) { return problem }
    }
    if let hardState = update.hardState { self.hardState = hardState }
    return nil
  }
}
