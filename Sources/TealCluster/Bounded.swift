// The two bounded tables of ClusterState: the event history and the idempotency records. Both
// compare, hash and encode by their logical content (oldest first), never by storage layout.

// MARK: Event history

/// The newest `capacity` events, oldest first. Appending to a full history drops the oldest.
public struct EventHistory: Codable, Hashable, Sendable {
  /// Events kept: the newest 10,000.
  public static let defaultCapacity = 10_000

  public let capacity: Int
  /// Ring storage; `start` is the oldest element once the ring is full.
  private var storage: [ClusterEvent] = []
  private var start = 0

  public init(capacity: Int = EventHistory.defaultCapacity) {
    precondition(capacity > 0, "an event history needs a positive capacity, got \(capacity)")
    self.capacity = capacity
  }

  public var count: Int { storage.count }

  /// All kept events, oldest first.
  public var events: [ClusterEvent] {
    Array(storage[start...] + storage[..<start])
  }

  public mutating func append(_ event: ClusterEvent) {
    if storage.count < capacity {
      storage.append(event)
    } else {
      storage[start] = event
      start = (start + 1) % capacity
    }
  }

  private enum CodingKeys: String, CodingKey { case capacity, events }

  public init(from decoder: any Decoder) throws {
    let container = try decoder.container(keyedBy: CodingKeys.self)
    capacity = try container.decode(Int.self, forKey: .capacity)
    guard capacity > 0 else {
      throw DecodingError.dataCorruptedError(
        forKey: .capacity, in: container, debugDescription: "must be positive, got \(capacity)")
    }
    let events = try container.decode([ClusterEvent].self, forKey: .events)
    guard events.count <= capacity else {
      throw DecodingError.dataCorruptedError(
        forKey: .events, in: container, debugDescription: "holds \(events.count) events, more than capacity \(capacity)"
      )
    }
    storage = events
  }

  public func encode(to encoder: any Encoder) throws {
    var container = encoder.container(keyedBy: CodingKeys.self)
    try container.encode(capacity, forKey: .capacity)
    try container.encode(events, forKey: .events)
  }

  public static func == (lhs: EventHistory, rhs: EventHistory) -> Bool {
    lhs.capacity == rhs.capacity && lhs.events == rhs.events
  }

  public func hash(into hasher: inout Hasher) {
    hasher.combine(capacity)
    hasher.combine(events)
  }
}

// MARK: Idempotency records

/// One recorded write: the request's digest, the first answer and when the record expires.
public struct IdempotencyRecord: Codable, Hashable, Sendable {
  public var bodyDigest: String
  public var result: ClusterResult
  public var recordedAt: LogTime
  public var expiresAt: LogTime
  /// Insertion order (the table's counter when recorded): eviction goes oldest first.
  public var sequence: UInt64
}

/// Key → first answer of the writes that carried an `Idempotency-Key`.
///
/// Bounds: at most `capacity` keys (100,000 by default; recording one more evicts the oldest), each
/// kept for `retentionMilliseconds` of log time (24 h). Log time never runs backwards and every
/// record lives equally long, so insertion order is expiry order and both evictions take the oldest.
public struct IdempotencyTable: Codable, Hashable, Sendable {
  public static let defaultCapacity = 100_000
  public static let defaultRetentionMilliseconds: Int64 = 24 * 3_600_000

  public let capacity: Int
  public let retentionMilliseconds: Int64
  public private(set) var records: [String: IdempotencyRecord] = [:]
  private var nextSequence: UInt64 = 0
  /// Keys in insertion order from `head` on (a queue; compacted as it drains).
  private var order: [String] = []
  private var head = 0

  public init(
    capacity: Int = IdempotencyTable.defaultCapacity,
    retentionMilliseconds: Int64 = IdempotencyTable.defaultRetentionMilliseconds
  ) {
    precondition(capacity > 0, "an idempotency table needs a positive capacity, got \(capacity)")
    precondition(retentionMilliseconds > 0, "idempotency retention must be positive, got \(retentionMilliseconds)")
    self.capacity = capacity
    self.retentionMilliseconds = retentionMilliseconds
  }

  public var count: Int { records.count }

  public func record(for key: String) -> IdempotencyRecord? { records[key] }

  /// Drops every record whose `expiresAt` is at or before `now`.
  public mutating func expire(now: LogTime) {
    while head < order.count, let oldest = records[order[head]], oldest.expiresAt <= now {
      removeOldest()
    }
  }

  /// Records the first answer for `key` (which must not be recorded yet), evicting the oldest record
  /// when the table is full.
  public mutating func insert(key: String, bodyDigest: String, result: ClusterResult, now: LogTime) {
    precondition(records[key] == nil, "idempotency key \(key) is already recorded")
    while records.count >= capacity { removeOldest() }
    records[key] = IdempotencyRecord(
      bodyDigest: bodyDigest, result: result, recordedAt: now,
      expiresAt: now.adding(milliseconds: retentionMilliseconds), sequence: nextSequence)
    nextSequence += 1
    order.append(key)
  }

  private mutating func removeOldest() {
    precondition(head < order.count, "idempotency queue is empty while \(records.count) records remain")
    records[order[head]] = nil
    head += 1
    if head > 1024 && head * 2 > order.count {
      order.removeFirst(head)
      head = 0
    }
  }

  private enum CodingKeys: String, CodingKey { case capacity, retentionMilliseconds, records, nextSequence }

  public init(from decoder: any Decoder) throws {
    let container = try decoder.container(keyedBy: CodingKeys.self)
    capacity = try container.decode(Int.self, forKey: .capacity)
    retentionMilliseconds = try container.decode(Int64.self, forKey: .retentionMilliseconds)
    records = try container.decode([String: IdempotencyRecord].self, forKey: .records)
    nextSequence = try container.decode(UInt64.self, forKey: .nextSequence)
    guard capacity > 0, retentionMilliseconds > 0, records.count <= capacity else {
      throw DecodingError.dataCorruptedError(
        forKey: .records, in: container,
        debugDescription:
          "\(records.count) records do not fit capacity \(capacity) / retention \(retentionMilliseconds) ms")
    }
    guard records.values.allSatisfy({ $0.sequence < nextSequence }) else {
      throw DecodingError.dataCorruptedError(
        forKey: .nextSequence, in: container, debugDescription: "a record's sequence is not below \(nextSequence)")
    }
    order = records.sorted { $0.value.sequence < $1.value.sequence }.map(\.key)
  }

  public func encode(to encoder: any Encoder) throws {
    var container = encoder.container(keyedBy: CodingKeys.self)
    try container.encode(capacity, forKey: .capacity)
    try container.encode(retentionMilliseconds, forKey: .retentionMilliseconds)
    try container.encode(records, forKey: .records)
    try container.encode(nextSequence, forKey: .nextSequence)
  }

  public static func == (lhs: IdempotencyTable, rhs: IdempotencyTable) -> Bool {
    lhs.capacity == rhs.capacity && lhs.retentionMilliseconds == rhs.retentionMilliseconds
      && lhs.nextSequence == rhs.nextSequence && lhs.records == rhs.records
  }

  public func hash(into hasher: inout Hasher) {
    hasher.combine(capacity)
    hasher.combine(nextSequence)
    hasher.combine(records.count)
  }
}

// MARK: Client sessions

/// One registered client session: its last command's sequence and answer.
public struct ClientSession: Codable, Hashable, Sendable {
  /// 0 until the session's first command.
  public var lastSequence: UInt64
  public var lastResult: ClusterResult?
  /// Log index of the registration or of the last command: eviction takes the smallest.
  public var lastIndex: UInt64
  public var lastUsed: LogTime
}

/// Client sessions (Raft thesis §6.3), for clients that prefer them to idempotency keys: each command
/// of a session is applied at most once, and a session that is gone is reported as gone
/// (`unknown_session`), never silently forgotten.
///
/// Bounds: at most `capacity` sessions (10,000 by default; registering one more evicts the least
/// recently used, by log index); a session unused for `idleMilliseconds` of log time (24 h) is gone.
public struct ClientSessionTable: Codable, Hashable, Sendable {
  public static let defaultCapacity = 10_000
  public static let defaultIdleMilliseconds: Int64 = 24 * 3_600_000

  public let capacity: Int
  public let idleMilliseconds: Int64
  /// By client id in decimal (String keys keep the snapshot canonical).
  public private(set) var sessions: [String: ClientSession] = [:]

  public init(
    capacity: Int = ClientSessionTable.defaultCapacity,
    idleMilliseconds: Int64 = ClientSessionTable.defaultIdleMilliseconds
  ) {
    precondition(capacity > 0, "a session table needs a positive capacity, got \(capacity)")
    precondition(idleMilliseconds > 0, "session idle time must be positive, got \(idleMilliseconds)")
    self.capacity = capacity
    self.idleMilliseconds = idleMilliseconds
  }

  public var count: Int { sessions.count }

  /// The live session `clientID` at log time `now`, or nil if it is unknown or idle too long.
  public func session(_ clientID: UInt64, now: LogTime) -> ClientSession? {
    guard let session = sessions[String(clientID)], session.lastUsed.adding(milliseconds: idleMilliseconds) > now
    else { return nil }
    return session
  }

  mutating func register(clientID: UInt64, index: UInt64, now: LogTime) {
    precondition(sessions[String(clientID)] == nil, "client session \(clientID) registered twice")
    while sessions.count >= capacity {
      guard
        let oldest = sessions.min(by: { ($0.value.lastIndex, $0.key) < ($1.value.lastIndex, $1.key) })?.key
      else { break }
      sessions[oldest] = nil
    }
    sessions[String(clientID)] = ClientSession(lastSequence: 0, lastResult: nil, lastIndex: index, lastUsed: now)
  }

  mutating func record(clientID: UInt64, sequence: UInt64, result: ClusterResult, index: UInt64, now: LogTime) {
    sessions[String(clientID)] = ClientSession(
      lastSequence: sequence, lastResult: result, lastIndex: index, lastUsed: now)
  }

  mutating func remove(_ clientID: UInt64) { sessions[String(clientID)] = nil }
}
