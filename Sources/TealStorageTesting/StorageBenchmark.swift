// Append throughput measurement with real fdatasync; called from a test gated by TEAL_STORAGE_BENCH=1 and
// usable from benchmark programs.

import TealStorage

/// The result of one `StorageBenchmark.measureAppends` run.
public struct AppendBenchmarkResult: Sendable, Hashable, CustomStringConvertible {
  /// Entries per `append` call.
  public var batchSize: Int
  /// Payload bytes per entry.
  public var entrySize: Int
  /// `append` calls made (each one `fdatasync`).
  public var appendCalls: Int
  /// WAL bytes written (record framing and entry headers included).
  public var walBytes: Int64
  /// Wall-clock time of the appends.
  public var seconds: Double
  /// Durations of single `append` calls, in microseconds: median, 99th percentile and maximum.
  public var p50AppendMicroseconds: Double
  public var p99AppendMicroseconds: Double
  public var maxAppendMicroseconds: Double

  public var appendsPerSecond: Double { Double(appendCalls) / seconds }
  public var entriesPerSecond: Double { Double(appendCalls * batchSize) / seconds }
  /// Payload megabytes (10^6 bytes) per second.
  public var payloadMegabytesPerSecond: Double { Double(appendCalls * batchSize * entrySize) / seconds / 1e6 }
  /// WAL megabytes (10^6 bytes) per second, framing included.
  public var walMegabytesPerSecond: Double { Double(walBytes) / seconds / 1e6 }
  /// Mean duration of one `append` call, in microseconds.
  public var meanAppendMicroseconds: Double { seconds / Double(appendCalls) * 1e6 }

  public var description: String {
    func format(_ value: Double) -> String { String(Int(value.rounded())) }
    return "batch \(batchSize) x \(entrySize) B: \(format(appendsPerSecond)) appends/s, "
      + "\(format(entriesPerSecond)) entries/s, payload \(String(payloadMegabytesPerSecond.rounded(toPlaces: 2))) MB/s, "
      + "WAL \(String(walMegabytesPerSecond.rounded(toPlaces: 2))) MB/s, append mean \(format(meanAppendMicroseconds)) us "
      + "p50 \(format(p50AppendMicroseconds)) us p99 \(format(p99AppendMicroseconds)) us max \(format(maxAppendMicroseconds)) us"
  }
}

extension Double {
  fileprivate func rounded(toPlaces places: Int) -> Double {
    var scale = 1.0
    for _ in 0..<places { scale *= 10 }
    return (self * scale).rounded() / scale
  }
}

/// Measures `DurableLog.append` with real `fdatasync` on the disk holding a directory.
public enum StorageBenchmark {
  /// Opens a fresh log in `directory` (which should not exist or be empty), appends batches of `batchSize`
  /// entries of `entrySize` payload bytes with a hard state update in each, and keeps going until both
  /// `minimumCalls` appends are done and `minimumSeconds` have passed. The directory is left behind.
  public static func measureAppends(
    directory: String, batchSize: Int, entrySize: Int, minimumCalls: Int = 50, minimumSeconds: Double = 1.0,
    options: StorageOptions = StorageOptions()
  ) throws(StorageError) -> AppendBenchmarkResult {
    guard batchSize > 0, entrySize >= 0, minimumCalls > 0 else {
      throw .invalidArgument("benchmark needs batchSize > 0, entrySize >= 0 and minimumCalls > 0")
    }
    let log = try DurableLog(directory: directory, options: options)
    defer { log.close() }
    let payload = [UInt8](repeating: 0xAB, count: entrySize)
    let clock = ContinuousClock()
    let start = clock.now
    var calls = 0
    var nextIndex = log.lastIndex + 1
    var elapsed = 0.0
    var latencies: [Double] = []
    while calls < minimumCalls || elapsed < minimumSeconds {
      var batch: [StoredEntry] = []
      batch.reserveCapacity(batchSize)
      for offset in 0..<UInt64(batchSize) {
        batch.append(StoredEntry(index: nextIndex + offset, term: 1, kind: 0, payload: payload))
      }
      nextIndex += UInt64(batchSize)
      let callStart = clock.now
      try log.append(entries: batch, hardState: StoredHardState(term: 1, vote: "n1", commit: nextIndex - 1))
      latencies.append(microseconds(clock.now - callStart))
      calls += 1
      elapsed = microseconds(clock.now - start) / 1e6
    }
    latencies.sort()
    return AppendBenchmarkResult(
      batchSize: batchSize, entrySize: entrySize, appendCalls: calls, walBytes: log.walBytesWritten,
      seconds: elapsed, p50AppendMicroseconds: latencies[latencies.count / 2],
      p99AppendMicroseconds: latencies[min(latencies.count - 1, latencies.count * 99 / 100)],
      maxAppendMicroseconds: latencies[latencies.count - 1])
  }

  private static func microseconds(_ duration: Duration) -> Double {
    Double(duration.components.seconds) * 1e6 + Double(duration.components.attoseconds) / 1e12
  }
}
