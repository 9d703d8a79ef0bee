// Append throughput with real fdatasync; runs only with TEAL_STORAGE_BENCH=1 (figures in Docs/STORAGE.md).

import Foundation
import TealStorageTesting
import Testing

@testable import TealStorage

@Suite("Storage benchmark (TEAL_STORAGE_BENCH=1)")
struct StorageBenchmarkTests {
  @Test(
    "appends per second and MB/s with fdatasync for batches of 1, 16 and 256 entries of 256 B",
    .enabled(if: ProcessInfo.processInfo.environment["TEAL_STORAGE_BENCH"] == "1"))
  func appendThroughput() throws {
    for batchSize in [1, 16, 256] {
      let result = try withTemporaryDirectory { directory in
        try StorageBenchmark.measureAppends(
          directory: directory + "/bench", batchSize: batchSize, entrySize: 256, minimumCalls: 200,
          minimumSeconds: 3, options: quietOptions())
      }
      print("TEAL_STORAGE_BENCH \(result)")
      #expect(result.appendCalls >= 200)
      #expect(result.walBytes > Int64(result.appendCalls * batchSize * 256))
    }
  }
}
