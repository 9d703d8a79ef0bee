import TealRaft
import TealWire

/// The application state machine of the simulation: a map of integer registers with client
/// sessions, so a retried write is applied once.
public struct KVStateMachine: Sendable, Hashable {
  public private(set) var values: [Int: Int64] = [:]
  public private(set) var sessions = ClientSessions(capacity: 64)

  public init() {}

  /// One write command: set `key` to `value`.
  public static func encodePut(key: Int, value: Int64, clientID: UInt64, sequence: UInt64) -> [UInt8] {
    var payload = WireWriter(capacity: 16)
    payload.writeVarint(UInt64(key))
    payload.writeSignedVarint(value)
    return SessionCommand(clientID: clientID, sequence: sequence, payload: payload.bytes).wireBytes()
  }

  /// Applies one committed command entry. Returns the session command it carried (nil if the
  /// entry is not a valid command).
  @discardableResult
  public mutating func apply(_ entry: RaftEntry) -> SessionCommand? {
    guard entry.kind == .command, let command = try? SessionCommand(wireBytes: entry.data) else { return nil }
    switch sessions.check(command) {
    case .apply:
      var reader = WireReader(command.payload)
      if let key = try? reader.readVarint("key"), let value = try? reader.readSignedVarint("value") {
        values[Int(key)] = value
      }
      sessions.record(command, response: [], at: entry.index)
    case .duplicate, .stale:
      break
    }
    return command
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
