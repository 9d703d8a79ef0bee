import TealWire

/// A command tagged with its client session (thesis §6.3): `sequence` increases by one for each
/// new command of `clientID`; a retry reuses the sequence number of the command it retries.
///
/// A session is opened through the log: the ``registration`` command (client id 0, sequence 0)
/// opens a session whose id is the log index of that entry; the client then numbers its commands
/// 1, 2, ... under that id.
public struct SessionCommand: Sendable, Hashable, WireCodable {
  public var clientID: UInt64
  public var sequence: UInt64
  public var payload: [UInt8]

  public init(clientID: UInt64, sequence: UInt64, payload: [UInt8]) {
    self.clientID = clientID
    self.sequence = sequence
    self.payload = payload
  }

  /// The command that opens a new session; its id is the log index it is applied at.
  public static let registration = SessionCommand(clientID: 0, sequence: 0, payload: [])

  /// True for the ``registration`` command.
  public var isRegistration: Bool { clientID == 0 }

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

/// Why a command of a client session is refused.
public enum SessionError: Error, Sendable, Hashable, CustomStringConvertible {
  /// The session was never registered, or it expired (unused for `expiryEntries` log entries, or
  /// evicted as the least recently used beyond `capacity`). Its earlier commands may or may not
  /// have taken effect; the client must register a new session.
  case unknownSession(clientID: UInt64)
  /// A command's sequence number is 0 (reserved for the registration).
  case invalidSequence(clientID: UInt64)

  public var description: String {
    switch self {
    case .unknownSession(let id):
      "client session \(id) is unknown or expired; register a new session (the outcome of its earlier commands "
        + "is unknown)"
    case .invalidSequence(let id): "client session \(id): command sequence numbers start at 1"
    }
  }
}

/// The session table an application state machine keeps so that every command is applied at
/// most once, even when a client retries it through another leader (thesis §6.3).
///
/// Use while applying a committed `SessionCommand` at log index `index`:
/// ```
/// if command.isRegistration { let id = sessions.register(at: index); reply(id); return }
/// switch sessions.check(command, at: index) {
/// case .apply: let response = execute(command.payload); sessions.record(command, response: response, at: index)
/// case .duplicate(let response): reply(response)   // applied before: same answer, no effect
/// case .stale: reply(error)                         // older than the last one: the client moved on
/// case .rejected(let error): reply(error)           // unknown or expired session: NOT executed
/// }
/// ```
/// Sessions are only created by ``register(at:)``, so a command whose session is gone is refused
/// rather than applied again. They expire deterministically, by log time (the log index, the same
/// on every replica, never a local clock): a session unused for `expiryEntries` entries expires,
/// and beyond `capacity` sessions the least recently used one is evicted. The table is part of
/// the replicated state: include it in snapshots (it is `WireCodable`). Each client keeps one
/// command outstanding at a time.
///
/// Cost: `register`, `record` and `check` are O(1) amortized (sessions are kept in order of last
/// use, which is log order; expired ones are dropped from the front).
public struct ClientSessions: Sendable, Hashable, WireCodable {
  public struct Session: Sendable, Hashable {
    /// 0 right after registration.
    public var lastSequence: UInt64
    public var lastResponse: [UInt8]
    /// The log index of the session's last command (or of its registration).
    public var lastIndex: UInt64
  }

  public enum Outcome: Sendable, Hashable {
    /// New command: execute it, then ``record(_:response:at:)``.
    case apply
    /// Already applied: answer with the saved response and do not execute again.
    case duplicate(response: [UInt8])
    /// Older than the client's last command; its answer is gone. Do not execute.
    case stale
    /// The session is unknown or expired (or the command malformed). Do not execute.
    case rejected(SessionError)
  }

  public private(set) var sessions: [UInt64: Session] = [:]
  /// Most sessions kept; beyond it the least recently used is evicted.
  public let capacity: Int
  /// A session unused for more than this many log entries expires.
  public let expiryEntries: UInt64
  /// (lastIndex, clientID) in increasing lastIndex order; entries whose lastIndex is no longer
  /// the session's are stale and skipped. Rebuilt when more than half of it is stale.
  private var order: [(index: UInt64, clientID: UInt64)] = []
  private var orderStart = 0
  /// The highest log index seen (registrations, records and checks); log time never goes back.
  public private(set) var now: UInt64 = 0

  public init(capacity: Int = 10_000, expiryEntries: UInt64 = 1 << 20) {
    self.capacity = max(capacity, 1)
    self.expiryEntries = max(expiryEntries, 1)
  }

  /// Opens a new session for the registration command applied at `index`; returns its id (`index`).
  @discardableResult
  public mutating func register(at index: UInt64) -> UInt64 {
    precondition(index > 0 && sessions[index] == nil, "ClientSessions: session \(index) registered twice")
    advance(to: index)
    sessions[index] = Session(lastSequence: 0, lastResponse: [], lastIndex: index)
    order.append((index, index))
    evictBeyondCapacity()
    return index
  }

  /// What to do with `command`, applied at log index `index` (sessions unused for longer than
  /// `expiryEntries` before `index` have expired).
  public func check(_ command: SessionCommand, at index: UInt64) -> Outcome {
    guard command.sequence > 0 else { return .rejected(.invalidSequence(clientID: command.clientID)) }
    guard let session = sessions[command.clientID], !isExpired(session, at: max(index, now)) else {
      return .rejected(.unknownSession(clientID: command.clientID))
    }
    if command.sequence > session.lastSequence { return .apply }
    if command.sequence == session.lastSequence { return .duplicate(response: session.lastResponse) }
    return .stale
  }

  /// Records that `command` (checked `.apply`) was executed at `index` with `response`.
  public mutating func record(_ command: SessionCommand, response: [UInt8], at index: UInt64) {
    precondition(index >= now, "ClientSessions: record at index \(index) after log time \(now)")
    advance(to: index)
    guard let session = sessions[command.clientID] else {
      preconditionFailure("ClientSessions: record for session \(command.clientID), which is not registered")
    }
    precondition(
      command.sequence > session.lastSequence,
      "ClientSessions: session \(command.clientID) records sequence \(command.sequence) after \(session.lastSequence)")
    sessions[command.clientID] = Session(lastSequence: command.sequence, lastResponse: response, lastIndex: index)
    order.append((index, command.clientID))
    compactOrderIfNeeded()
  }

  private func isExpired(_ session: Session, at index: UInt64) -> Bool {
    index > session.lastIndex && index - session.lastIndex > expiryEntries
  }

  /// Moves log time to `index` and drops the sessions that expired by then.
  private mutating func advance(to index: UInt64) {
    if index > now { now = index }
    while orderStart < order.count {
      let (lastIndex, clientID) = order[orderStart]
      guard let session = sessions[clientID], session.lastIndex == lastIndex else {
        orderStart += 1
        continue
      }
      guard isExpired(session, at: now) else { break }
      sessions[clientID] = nil
      orderStart += 1
    }
  }

  private mutating func evictBeyondCapacity() {
    while sessions.count > capacity && orderStart < order.count {
      let (lastIndex, clientID) = order[orderStart]
      orderStart += 1
      if sessions[clientID]?.lastIndex == lastIndex { sessions[clientID] = nil }
    }
    compactOrderIfNeeded()
  }

  private mutating func compactOrderIfNeeded() {
    guard order.count - orderStart > 2 * sessions.count + 16 || orderStart > order.count / 2 else { return }
    order = order[orderStart...].filter { sessions[$0.clientID]?.lastIndex == $0.index }
    orderStart = 0
  }

  public static func == (a: ClientSessions, b: ClientSessions) -> Bool {
    a.sessions == b.sessions && a.capacity == b.capacity && a.expiryEntries == b.expiryEntries && a.now == b.now
  }

  public func hash(into hasher: inout Hasher) {
    hasher.combine(sessions)
    hasher.combine(capacity)
    hasher.combine(expiryEntries)
    hasher.combine(now)
  }

  public func encode(to writer: inout WireWriter) {
    writer.writeVarint(capacity)
    writer.writeVarint(expiryEntries)
    writer.writeVarint(now)
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
    expiryEntries = max(try reader.readVarint("sessions.expiryEntries"), 1)
    now = try reader.readVarint("sessions.now")
    let count = try reader.readCount("sessions.count")
    for _ in 0..<count {
      let key = try reader.readVarint("session.clientID")
      let seq = try reader.readVarint("session.lastSequence")
      let response = try reader.readBytes("session.lastResponse")
      let index = try reader.readVarint("session.lastIndex")
      sessions[key] = Session(lastSequence: seq, lastResponse: response, lastIndex: index)
    }
    order = sessions.map { (index: $0.value.lastIndex, clientID: $0.key) }.sorted {
      ($0.index, $0.clientID) < ($1.index, $1.clientID)
    }
  }
}
