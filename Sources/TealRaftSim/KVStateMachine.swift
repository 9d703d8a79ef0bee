import TealRaft
import TealWire

/// The application state machine of the simulation: a map of integer registers with client
/// sessions, so a retried write is applied once.
public struct KVStateMachine: Sendable, Hashable {
  public private(set) var values: [Int: Int64] = [:]
  public private(set) var sessions = ClientSessions(capacity: 64)

  public init() {}

  /// An empty state whose session table keeps at most `sessionCapacity` sessions (the least recently used
  /// is evicted beyond it).
  public init(sessionCapacity: Int) {
    sessions = ClientSessions(capacity: sessionCapacity)
  }

  /// The command that opens a client session.
  public static func encodeRegistration() -> [UInt8] { SessionCommand.registration.wireBytes() }

  /// One write command of session `clientID`: set `key` to `value`.
  public static func encodePut(key: Int, value: Int64, clientID: UInt64, sequence: UInt64) -> [UInt8] {
    var payload = WireWriter(capacity: 16)
    payload.writeVarint(UInt64(key))
    payload.writeSignedVarint(value)
    return SessionCommand(clientID: clientID, sequence: sequence, payload: payload.bytes).wireBytes()
  }

  /// What applying one command entry did.
  public struct Applied: Sendable, Hashable {
    public var command: SessionCommand
    /// Set when the command was refused (unknown or expired session): it did not take effect.
    public var refusal: SessionError?
  }

  /// Applies one committed command entry: a registration opens a session (its id is the entry's
  /// index); a write of a known session is applied at most once. Returns nil if the entry is not a
  /// valid command.
  @discardableResult
  public mutating func apply(_ entry: RaftEntry) -> Applied? {
    guard entry.kind == .command, let command = try? SessionCommand(wireBytes: entry.data) else { return nil }
    if command.isRegistration {
      sessions.register(at: entry.index)
      return Applied(command: command, refusal: nil)
    }
    switch sessions.check(command, at: entry.index) {
    case .apply:
      var reader = WireReader(command.payload)
      if let key = try? reader.readVarint("key"), let value = try? reader.readSignedVarint("value") {
        values[Int(key)] = value
      }
      sessions.record(command, response: [], at: entry.index)
    case .duplicate, .stale:
      break
    case .rejected(let error):
      return Applied(command: command, refusal: error)
    }
    return Applied(command: command, refusal: nil)
  }

  public func snapshotBytes() -> [UInt8] {
    var w = WireWriter(capacity: 64)
    w.writeVarint(values.count)
    for key in values.keys.sorted() {
      w.writeVarint(UInt64(key))
      w.writeSignedVarint(values[key] ?? 0)
    }
    sessions.encode(to: &w)
    return w.bytes
  }

  public init(snapshot bytes: [UInt8]) throws(WireError) {
    var r = WireReader(bytes)
    let count = try r.readCount("kv.count")
    for _ in 0..<count {
      let key = try r.readVarint("kv.key")
      values[Int(key)] = try r.readSignedVarint("kv.value")
    }
    sessions = try ClientSessions(from: &r)
    try r.expectEnd()
  }
}
