// The demo service's failure knobs, shared by all connections and changed at runtime by /control.

import Foundation
import TealWire

/// The behaviour a chaos test can switch on and off.
///
/// Invariants: `errorRate` is in 0...1 and `latencyMs` in 0...60000 (the control endpoint rejects
/// other values with 400, the flags at startup).
struct DemoKnobs: Codable, Sendable, Equatable {
  /// `/health` answers 503 instead of 200.
  var failHealth: Bool
  /// The fraction of `GET /` and `POST /process` requests answered 500 (drawn from the seeded generator).
  var errorRate: Double
  /// Added before answering `GET /` and `POST /process`.
  var latencyMs: Int
  /// `POST /process` answers 500 "uploads are refused by this version".
  var rejectUploads: Bool

  static let maximumLatencyMs = 60_000

  /// Checks the ranges; the message names the field.
  func validationError() -> String? {
    if !(0...1).contains(errorRate) || errorRate.isNaN { return "errorRate must be between 0 and 1, got \(errorRate)" }
    if !(0...Self.maximumLatencyMs).contains(latencyMs) {
      return "latencyMs must be between 0 and \(Self.maximumLatencyMs), got \(latencyMs)"
    }
    return nil
  }
}

/// A partial update posted to `/control`: only the fields present change. `seed` restarts the error generator.
struct DemoKnobsUpdate: Codable, Sendable {
  var failHealth: Bool?
  var errorRate: Double?
  var latencyMs: Int?
  var rejectUploads: Bool?
  var seed: UInt64?
}

/// The knobs and the error generator behind one lock: every connection reads them per request.
final class DemoControl: @unchecked Sendable {
  private let lock = NSLock()
  private var knobs: DemoKnobs
  /// Seeded, so an error rate gives the same sequence per seed.
  private var random: SplitMix64
  private var inFlightRequests = 0

  init(knobs: DemoKnobs, seed: UInt64) {
    self.knobs = knobs
    self.random = SplitMix64(seed: seed)
  }

  var current: DemoKnobs {
    lock.lock()
    defer { lock.unlock() }
    return knobs
  }

  /// Applies `update` atomically; returns the new knobs, or the validation error (nothing changes then).
  func apply(_ update: DemoKnobsUpdate) -> Result<DemoKnobs, DemoControlError> {
    lock.lock()
    defer { lock.unlock() }
    var next = knobs
    if let value = update.failHealth { next.failHealth = value }
    if let value = update.errorRate { next.errorRate = value }
    if let value = update.latencyMs { next.latencyMs = value }
    if let value = update.rejectUploads { next.rejectUploads = value }
    if let message = next.validationError() { return .failure(DemoControlError(message: message)) }
    knobs = next
    if let seed = update.seed { random = SplitMix64(seed: seed) }
    return .success(next)
  }

  /// Requests between their head and their response's end, `/control` excluded.
  var inFlight: Int {
    lock.lock()
    defer { lock.unlock() }
    return inFlightRequests
  }

  func requestStarted() {
    lock.lock()
    inFlightRequests += 1
    lock.unlock()
  }

  func requestFinished() {
    lock.lock()
    inFlightRequests -= 1
    lock.unlock()
  }

  /// Draws whether this request fails, by the current error rate. Also returns the latency to add.
  func decide() -> (fail: Bool, latencyMs: Int) {
    lock.lock()
    defer { lock.unlock() }
    let draw = Double(random.next() >> 11) / Double(1 << 53)
    return (knobs.errorRate > 0 && draw < knobs.errorRate, knobs.latencyMs)
  }
}

struct DemoControlError: Error {
  var message: String
}
