// The versioned envelope of one command in the Raft log.
//
// Bytes: "TCE" (0x54 0x43 0x45), one version byte, then the JSON of the envelope's body (stamp,
// idempotency, session, command) with sorted keys. At most `ClusterEntry.maximumEncodedSize` bytes in all.

import Foundation
import TealWire

/// What a client's write carries so that a retry is applied once: the `Idempotency-Key` header and a
/// digest of the request (the node should digest method, path and body together, so that one key
/// reused for another request is told apart).
///
/// Invariant (checked on decode): `key` is 1...255 bytes of printable ASCII; `bodyDigest` is 1...128 bytes.
public struct IdempotencyRecordKey: Codable, Hashable, Sendable {
  public var key: String
  public var bodyDigest: String

  public init(key: String, bodyDigest: String) {
    self.key = key
    self.bodyDigest = bodyDigest
  }

  /// Longest accepted key, in bytes.
  public static let maximumKeyLength = 255
  /// Longest accepted body digest, in bytes (a SHA-256 hex digest is 64).
  public static let maximumDigestLength = 128

  /// Why the key cannot be used, or nil.
  public var problem: String? {
    let keyBytes = key.utf8
    if keyBytes.isEmpty { return "idempotency key must not be empty" }
    if keyBytes.count > Self.maximumKeyLength {
      return "idempotency key is \(keyBytes.count) bytes; at most \(Self.maximumKeyLength) allowed"
    }
    if keyBytes.contains(where: { $0 < 0x21 || $0 > 0x7e }) {
      return "idempotency key may contain only printable ASCII without spaces"
    }
    if bodyDigest.utf8.isEmpty || bodyDigest.utf8.count > Self.maximumDigestLength {
      return "idempotency body digest must be 1...\(Self.maximumDigestLength) bytes"
    }
    return nil
  }
}

/// A command's place in its client's session: `sequence` grows by one per new command; a retry
/// reuses the sequence of the command it retries. `clientID` is what `registerSession` answered.
public struct ClientSessionStamp: Codable, Hashable, Sendable {
  public var clientID: UInt64
  public var sequence: UInt64

  public init(clientID: UInt64, sequence: UInt64) {
    self.clientID = clientID
    self.sequence = sequence
  }
}

/// One entry of the replicated log: a stamped, optionally idempotent command.
public struct ClusterEntry: Hashable, Sendable {
  /// The envelope version this build writes and the only one it reads.
  public static let currentVersion: UInt8 = 1
  /// Largest encoded entry accepted (1 MiB): a service spec with a large environment fits easily;
  /// the node refuses bigger requests with 413 before proposing.
  public static let maximumEncodedSize = 1 << 20
  static let magic: [UInt8] = [0x54, 0x43, 0x45]

  public var version: UInt8
  public var stamp: CommandStamp
  public var idempotency: IdempotencyRecordKey?
  /// Set by a client that registered a session (`registerSession`): applied at most once per sequence.
  public var session: ClientSessionStamp?
  public var command: ClusterCommand

  public init(
    stamp: CommandStamp, idempotency: IdempotencyRecordKey? = nil, session: ClientSessionStamp? = nil,
    command: ClusterCommand, version: UInt8 = ClusterEntry.currentVersion
  ) {
    self.version = version
    self.stamp = stamp
    self.idempotency = idempotency
    self.session = session
    self.command = command
  }

  private struct Body: Codable {
    var stamp: CommandStamp
    var idempotency: IdempotencyRecordKey?
    var session: ClientSessionStamp?
    var command: ClusterCommand
  }

  /// The entry's bytes (may exceed `maximumEncodedSize`; `encodeChecked()` refuses that).
  public func encode() -> [UInt8] {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys]
    let json: Data
    do {
      json = try encoder.encode(Body(stamp: stamp, idempotency: idempotency, session: session, command: command))
    } catch {
      preconditionFailure("a ClusterEntry always encodes to JSON: \(error)")
    }
    return Self.magic + [version] + Array(json)
  }

  /// The entry's bytes, or `.tooLarge` when they exceed `maximumEncodedSize` (check before proposing).
  public func encodeChecked() throws(ClusterEntryError) -> [UInt8] {
    let bytes = encode()
    guard bytes.count <= Self.maximumEncodedSize else {
      throw .tooLarge(size: bytes.count, limit: Self.maximumEncodedSize)
    }
    return bytes
  }

  /// Decodes an entry; refuses oversized, foreign, unknown-version and malformed bytes.
  public init(decoding bytes: some Collection<UInt8>) throws(ClusterEntryError) {
    guard bytes.count <= Self.maximumEncodedSize else {
      throw .tooLarge(size: bytes.count, limit: Self.maximumEncodedSize)
    }
    let array = Array(bytes)
    guard array.count >= 4, Array(array[0..<3]) == Self.magic else { throw .notAnEntry }
    let version = array[3]
    guard version == Self.currentVersion else { throw .unsupportedVersion(version) }
    let body: Body
    do {
      body = try JSONDecoder().decode(Body.self, from: Data(array[4...]))
    } catch {
      throw .malformed(reason: ClusterEntryError.describe(error))
    }
    if let idempotency = body.idempotency, let problem = idempotency.problem { throw .malformed(reason: problem) }
    self.init(
      stamp: body.stamp, idempotency: body.idempotency, session: body.session, command: body.command,
      version: version)
  }
}

/// Why bytes are not a usable ``ClusterEntry``.
public enum ClusterEntryError: Error, Hashable, Sendable, CustomStringConvertible {
  case tooLarge(size: Int, limit: Int)
  /// The bytes do not start with the entry magic `TCE`.
  case notAnEntry
  case unsupportedVersion(UInt8)
  case malformed(reason: String)

  public var description: String {
    switch self {
    case .tooLarge(let size, let limit): return "cluster entry is \(size) bytes; at most \(limit) allowed"
    case .notAnEntry: return "not a cluster entry (missing the TCE header)"
    case .unsupportedVersion(let version):
      return
        "cluster entry version \(version) is not supported (this build reads version \(ClusterEntry.currentVersion))"
    case .malformed(let reason): return "malformed cluster entry: \(reason)"
    }
  }

  /// A short, stable description of a decoding error (the coding path and what was wrong).
  static func describe(_ error: any Error) -> String {
    guard let decodingError = error as? DecodingError else { return "\(error)" }
    func path(_ codingPath: [any CodingKey]) -> String {
      let text = codingPath.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }.joined(separator: ".")
      return text.isEmpty ? "(top level)" : text
    }
    switch decodingError {
    case .typeMismatch(_, let context), .valueNotFound(_, let context), .dataCorrupted(let context):
      return "\(path(context.codingPath)): \(context.debugDescription)"
    case .keyNotFound(let key, let context):
      return "\(path(context.codingPath + [key])): is missing"
    @unknown default:
      return "\(decodingError)"
    }
  }
}
