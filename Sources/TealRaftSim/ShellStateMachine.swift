// The shell simulation's application state machine and the recorder that checks it across nodes.

import TealConsensus
import TealRaft
import TealWire

/// FNV-1a, 64 bits: a deterministic fingerprint (Swift's `Hasher` is seeded per process).
struct Fingerprint {
  private(set) var value: UInt64 = 0xcbf2_9ce4_8422_2325

  mutating func add(_ bytes: [UInt8]) {
    for byte in bytes {
      value ^= UInt64(byte)
      value = value &* 0x0000_0100_0000_01b3
    }
  }

  mutating func add(_ word: UInt64) {
    var w = word
    for _ in 0..<8 {
      value ^= w & 0xff
      value = value &* 0x0000_0100_0000_01b3
      w >>= 8
    }
  }

  static func of(_ bytes: [UInt8]) -> UInt64 {
    var f = Fingerprint()
    f.add(bytes)
    return f.value
  }
}

/// What every replica's state machine reports as it applies and restores, checked across nodes and
/// incarnations: one state per applied index, one entry per index. The simulation runs on one thread.
final class ShellRecorder: @unchecked Sendable {
  private(set) var violations: [String] = []
  /// The state fingerprint after applying the commands up to each index (keyed by the last command's index).
  private var stateAt: [UInt64: (hash: UInt64, node: Int)] = [:]
  /// The (term, command fingerprint) applied at each index.
  private var entryAt: [UInt64: (term: UInt64, fingerprint: UInt64, node: Int)] = [:]
  /// Indexes whose proposal was acknowledged to a client, with the command's fingerprint.
  private(set) var acknowledged: [UInt64: UInt64] = [:]
  /// The highest command index each node applied or restored in its current incarnation.
  var lastApplied: [Int: UInt64] = [:]
  var restores = 0
  var trace: [String] = []
  var now: UInt64 = 0

  func violation(_ text: String) {
    if violations.count < 20 { violations.append("t=\(now)us: \(text)") }
  }

  func applied(node: Int, index: UInt64, term: UInt64, command: [UInt8], stateHash: UInt64) {
    let fingerprint = Fingerprint.of(command)
    if let previous = lastApplied[node], index <= previous {
      violation("n\(node) applied index \(index) after \(previous)")
    }
    lastApplied[node] = index
    if let known = entryAt[index] {
      if known.term != term || known.fingerprint != fingerprint {
        let acked = acknowledged[index] != nil ? " (an acknowledged proposal lost)" : ""
        violation(
          "state machine safety: n\(node) applied \(index)@\(term) but n\(known.node) applied \(index)@\(known.term)"
            + acked)
      }
    } else {
      entryAt[index] = (term, fingerprint, node)
      if let ack = acknowledged[index], ack != fingerprint {
        violation("no acknowledged proposal lost: n\(node) applied another command at acknowledged index \(index)")
      }
    }
    record(node: node, index: index, hash: stateHash, how: "applying")
  }

  func restored(node: Int, index: UInt64, stateHash: UInt64) {
    restores += 1
    lastApplied[node] = index
    record(node: node, index: index, hash: stateHash, how: "restoring a snapshot")
  }

  func acknowledge(index: UInt64, command: [UInt8]) {
    let fingerprint = Fingerprint.of(command)
    acknowledged[index] = fingerprint
    if let known = entryAt[index], known.fingerprint != fingerprint {
      violation("no acknowledged proposal lost: index \(index) acknowledged with another command than applied")
    }
  }

  private func record(node: Int, index: UInt64, hash: UInt64, how: String) {
    guard index > 0 else { return }
    if let known = stateAt[index] {
      if known.hash != hash {
        violation(
          "state-machine hash differs at index \(index): n\(node) after \(how) vs n\(known.node)")
      }
    } else {
      stateAt[index] = (hash, node)
    }
  }
}

/// `KVStateMachine` as a `ReplicatedStateMachine`, fingerprinting its state (values, sessions, and a chain
/// over every applied command) at every applied index and after every restore.
struct ShellKV: ReplicatedStateMachine {
  var kv: KVStateMachine
  /// Chains (index, term, command) of every command applied, so equal hashes mean equal histories.
  var chain: UInt64 = 0
  var lastCommandIndex: UInt64 = 0
  let node: Int
  let recorder: ShellRecorder

  init(node: Int, sessionCapacity: Int, recorder: ShellRecorder) {
    self.kv = KVStateMachine(sessionCapacity: sessionCapacity)
    self.node = node
    self.recorder = recorder
  }

  var stateHash: UInt64 {
    var f = Fingerprint()
    f.add(kv.snapshotBytes())
    f.add(chain)
    f.add(lastCommandIndex)
    return f.value
  }

  /// The result: byte 0 is 0 (applied, or a duplicate), 1 (refused: unknown or expired session) or 2 (not a
  /// command); then the index as a varint (a registration's session id).
  mutating func apply(_ command: [UInt8], index: UInt64, term: UInt64) -> [UInt8] {
    let applied = kv.apply(RaftEntry(term: term, index: index, kind: .command, data: command))
    var chained = Fingerprint()
    chained.add(chain)
    chained.add(index)
    chained.add(term)
    chained.add(command)
    chain = chained.value
    lastCommandIndex = index
    recorder.applied(node: node, index: index, term: term, command: command, stateHash: stateHash)
    var w = WireWriter(capacity: 12)
    w.writeVarint(applied == nil ? 2 : (applied?.refusal == nil ? 0 : 1))
    w.writeVarint(index)
    return w.bytes
  }

  func snapshot() -> [UInt8] {
    var w = WireWriter(capacity: 64)
    w.writeFixed(chain)
    w.writeVarint(lastCommandIndex)
    w.write(kv.snapshotBytes())
    return w.bytes
  }

  mutating func restore(from snapshot: [UInt8]) throws {
    var r = WireReader(snapshot)
    chain = try r.readFixed64("chain")
    lastCommandIndex = try r.readVarint("lastCommandIndex")
    kv = try KVStateMachine(snapshot: try r.readBytes("kv"))
    try r.expectEnd()
    recorder.restored(node: node, index: lastCommandIndex, stateHash: stateHash)
  }
}
