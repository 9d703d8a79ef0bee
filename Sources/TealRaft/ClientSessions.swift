import TealWire

/// A command tagged with its client session (thesis §6.3): `sequence` increases by one for each
/// new command of `clientID`; a retry reuses the sequence number of the command it retries.
public struct SessionCommand: Sendable, Hashable, WireCodable {
  public var clientID: UInt64
  public var sequence: UInt64
  public var payload: [UInt8]

  public init(clientID: UInt64, sequence: UInt64, payload: [UInt8]) {
    self.clientID = clientID
    self.sequence = sequence
    self.payload = payload
  }

  public func encode(to writer: inout WireWriter) {
    writer.writeVarint(clientID)
    writer.writeVarint(sequence)
    writer.write(payload)
  }

  public init(from reader: inout WireReader) throws(WireError) {
    clientID = try reader.readVarint("command.clientID")
    sequence = try reader.readVarint("command.sequence")
    payload = try reader.readBytes("command.payload")
  }
}

/// The session table an application state machine keeps so that every command is applied at
/// most once, even when a client retries it through another leader (thesis §6.3).
///
/// Use while applying a committed `SessionCommand` at log index `index`:
/// ```
/// switch sessions.check(command) {
/// case .apply: let response = execute(command.payload); sessions.record(command, response: response, at: index)
/// case .duplicate(let response): reply(response)   // applied before: same answer, no effect
/// case .stale: reply(error)                         // older than the last one: the client moved on
/// }
/// ```
/// It is part of the replicated state: include it in snapshots (it is `WireCodable`). Sessions
/// are evicted deterministically (least recently used by log index) beyond `capacity`, so every
/// replica evicts the same ones. Each client keeps one command outstanding at a time.
public struct ClientSessions: Sendable, Hashable, WireCodable {
  public struct Session: Sendable, Hashable {
    public var lastSequence: UInt64
    public var lastResponse: [UInt8]
    public var lastIndex: UInt64
  }

  public enum Outcome: Sendable, Hashable {
    /// New command: execute it, then ``record(_:response:at:)``.
    case apply
    /// Already applied: answer with the saved response and do not execute again.
    case duplicate(response: [UInt8])
    /// Older than the client's last command; its answer is gone. Do not execute.
    case stale
  }

  public private(set) var sessions: [UInt64: Session] = [:]
  public let capacity: Int

  public init(capacity: Int = 10_000) { self.capacity = max(capacity, 1) }

  public func check(_ command: SessionCommand) -> Outcome {
    guard let session = sessions[command.clientID] else { return .apply }
    if command.sequence > session.lastSequence { return .apply }
    if command.sequence == session.lastSequence { return .duplicate(response: session.lastResponse) }
    return .stale
  }

  public mutating func record(_ command: SessionCommand, response: [UInt8], at index: UInt64) {
    sessions[command.clientID] = Session(lastSequence: command.sequence, lastResponse: response, lastIndex: index)
    if sessions.count > capacity,
      let oldest = sessions.min(by: { ($0.value.lastIndex, $0.key) < ($1.value.lastIndex, $1.key) })
    {
      sessions[oldest.key] = nil
    }
  }

  public func encode(to writer: inout WireWriter) {
    writer.writeVarint(capacity)
    writer.writeVarint(sessions.count)
    for key in sessions.keys.sorted() {
      guard let s = sessions[key] else { continue }
      writer.writeVarint(key)
      writer.writeVarint(s.lastSequence)
      writer.write(s.lastResponse)
      writer.writeVarint(s.lastIndex)
    }
  }

  public init(from reader: inout WireReader) throws(WireError) {
    capacity = max(try reader.readCount("sessions.capacity"), 1)
    let count = try reader.readCount("sessions.count")
    for _ in 0..<count {
      let key = try reader.readVarint("session.clientID")
      let seq = try reader.readVarint("session.lastSequence")
      let response = try reader.readBytes("session.lastResponse")
      let index = try reader.readVarint("session.lastIndex")
      sessions[key] = Session(lastSequence: seq, lastResponse: response, lastIndex: index)
    }
  }
}
