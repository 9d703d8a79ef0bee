import COpenSSL

/// An error from OpenSSL, with the reason text of every entry of the thread's error queue.
public struct OpenSSLError: Error, Equatable, Sendable, CustomStringConvertible {
  /// What Teal was doing when OpenSSL failed, e.g. "load certificate from n1.pem".
  public let operation: String
  /// OpenSSL's reason strings, oldest first (may be empty when OpenSSL gave no reason).
  public let reasons: [String]

  public init(operation: String, reasons: [String]) {
    self.operation = operation
    self.reasons = reasons
  }

  public var description: String {
    reasons.isEmpty ? "\(operation) failed" : "\(operation) failed: \(reasons.joined(separator: "; "))"
  }

  /// Drains this thread's OpenSSL error queue into an error for `operation`.
  static func drain(_ operation: String) -> OpenSSLError {
    OpenSSLError(operation: operation, reasons: drainReasons())
  }

  /// Empties the thread's error queue, returning each entry's text.
  static func drainReasons() -> [String] {
    var reasons: [String] = []
    while true {
      let code = ERR_get_error()
      if code == 0 { break }
      var buffer = [CChar](repeating: 0, count: 256)
      ERR_error_string_n(code, &buffer, buffer.count)
      reasons.append(String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))
    }
    return reasons
  }

  /// Clears stale entries so the next failure reports only its own reasons.
  static func clearQueue() { ERR_clear_error() }
}

/// Runs `body` and throws an ``OpenSSLError`` for `operation` if it returns a value below 1.
@inline(__always)
func check(_ operation: @autoclosure () -> String, _ result: Int32) throws(OpenSSLError) {
  if result < 1 { throw OpenSSLError.drain(operation()) }
}

/// Unwraps a pointer that OpenSSL returned, throwing ``OpenSSLError`` for `operation` if it is nil.
@inline(__always)
func check<T>(_ operation: @autoclosure () -> String, _ pointer: T?) throws(OpenSSLError) -> T {
  guard let pointer else { throw OpenSSLError.drain(operation()) }
  return pointer
}
