// Throughput of PeerTransport between two nodes on loopback: mutual TLS against plain TCP.
//
//   swift run -c release TransportBenchmark [--seconds N] [--sizes 1024,65536] [--modes plain,tls] [--rounds N]
//
// For each frame size (1 KiB, 64 KiB) and each mode (TLS 1.3, plaintext), node n1 sends messages
// to n2 as fast as the bounded queue lets it for a fixed time; n2 counts what it receives. The
// figures are what n2 received per second. Results go to Docs/BENCHMARKS.md. The plaintext mode
// is not part of the public transport API: it is imported with @_spi(TransportBenchmarks).
// Each round measures every size in both modes back to back, so that each ratio comes from one
// run; the load average (/proc/loadavg) is printed before and after each round, since the other
// work on the machine moves the absolute figures.
import Foundation
import Logging
import NIOCore
import NIOPosix
import Synchronization
import TealTLS
@_spi(TransportBenchmarks) import TealTransport
import TealWire

func argument(_ name: String) -> String? { CommandLine.arguments.drop { $0 != name }.dropFirst().first }
let seconds = Double(argument("--seconds") ?? "") ?? 5
let sizes = (argument("--sizes") ?? "1024,65536").split(separator: ",").compactMap { Int($0) }
let modes = (argument("--modes") ?? "plain,tls").split(separator: ",").map(String.init)
let rounds = max(1, Int(argument("--rounds") ?? "") ?? 1)

/// The 1, 5 and 15 minute load averages, as the kernel reports them.
func loadAverage() -> String {
  guard let text = try? String(contentsOfFile: "/proc/loadavg", encoding: .utf8) else { return "unknown" }
  return text.split(separator: " ").prefix(3).joined(separator: " ")
}

final class Counter: Sendable {
  let messages = Atomic<Int>(0)
  let bytes = Atomic<Int>(0)
}

/// User plus system CPU time this process has used, in seconds.
func cpuSeconds() -> Double {
  var usage = rusage()
  getrusage(RUSAGE_SELF.rawValue, &usage)
  func seconds(_ t: timeval) -> Double { Double(t.tv_sec) + Double(t.tv_usec) / 1e6 }
  return seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

struct Measurement {
  var messagesPerSecond: Double
  var mebibytesPerSecond: Double
  /// CPU milliseconds (both nodes, all threads) per MiB delivered: robust to a busy machine.
  var cpuMillisecondsPerMebibyte: Double
}

func makeSecurity(_ mode: String, _ directory: CertificateDirectory, _ node: String) throws -> PeerSecurity {
  mode == "tls"
    ? .mutualTLS(try TLSContext(configuration: directory.configuration(for: NodeID(node)))) : .plaintextForBenchmarks
}

func measure(mode: String, size: Int, directory: CertificateDirectory) async throws -> Measurement {
  let counter = Counter()
  var logger = Logger(label: "bench")
  logger.logLevel = .error
  let group = MultiThreadedEventLoopGroup.singleton
  let receiver = PeerTransport(
    configuration: .init(nodeID: NodeID("n2"), listenHost: "127.0.0.1", listenPort: 0, peers: [:]),
    security: try makeSecurity(mode, directory, "n2"), group: group, logger: logger
  ) { _, _, payload in
    counter.messages.add(1, ordering: .relaxed)
    counter.bytes.add(payload.count, ordering: .relaxed)
  }
  let port = try await receiver.start()
  await receiver.addPeer(NodeID("n1"), address: PeerAddress(host: "127.0.0.1", port: 1))
  let sender = PeerTransport(
    configuration: .init(
      nodeID: NodeID("n1"), listenHost: "127.0.0.1", listenPort: 0,
      peers: [NodeID("n2"): PeerAddress(host: "127.0.0.1", port: port)]),
    security: try makeSecurity(mode, directory, "n1"), group: group, logger: logger
  ) { _, _, _ in }
  try await sender.start()
  while await sender.connectedPeers().isEmpty { try await Task.sleep(for: .milliseconds(5)) }

  let payload = [UInt8](repeating: 0x5a, count: size)
  // Warm up, then measure what arrives within the window.
  for _ in 0..<1000 { try await sender.sendWhenQueueHasRoom(payload, on: .test, to: NodeID("n2")) }
  let clock = ContinuousClock()
  let startMessages = counter.messages.load(ordering: .relaxed)
  let startBytes = counter.bytes.load(ordering: .relaxed)
  let start = clock.now
  let startCPU = cpuSeconds()
  let end = start + .milliseconds(Int(seconds * 1000))
  while clock.now < end {
    for _ in 0..<64 { try await sender.sendWhenQueueHasRoom(payload, on: .test, to: NodeID("n2")) }
  }
  let elapsed = clock.now - start
  let cpu = cpuSeconds() - startCPU
  let secondsElapsed = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
  let messages = counter.messages.load(ordering: .relaxed) - startMessages
  let bytes = counter.bytes.load(ordering: .relaxed) - startBytes
  await sender.shutdown()
  await receiver.shutdown()
  let mebibytes = Double(bytes) / 1_048_576
  return Measurement(
    messagesPerSecond: Double(messages) / secondsElapsed, mebibytesPerSecond: mebibytes / secondsElapsed,
    cpuMillisecondsPerMebibyte: cpu * 1000 / mebibytes)
}

let dir = FileManager.default.temporaryDirectory.appendingPathComponent("teal-bench-\(UUID().uuidString)").path
try CertificateDirectory.initialize(at: dir, nodes: [NodeID("n1"), NodeID("n2")])
defer { try? FileManager.default.removeItem(atPath: dir) }
let directory = CertificateDirectory(path: dir)

for round in 1...rounds {
  print("round \(round) of \(rounds), load average \(loadAverage())")
  print("frame        mode         messages/s        MiB/s   CPU ms/MiB   TLS/plain (MiB/s, CPU)")
  for size in sizes {
    var results: [String: Measurement] = [:]
    for mode in modes { results[mode] = try await measure(mode: mode, size: size, directory: directory) }
    let label = size % 1024 == 0 ? "\(size / 1024) KiB" : "\(size) B"
    for mode in modes {
      guard let result = results[mode] else { continue }
      let ratio =
        mode == "tls"
        ? results["plain"].map {
          String(
            format: "%.2f, %.2f", result.mebibytesPerSecond / $0.mebibytesPerSecond,
            result.cpuMillisecondsPerMebibyte / $0.cpuMillisecondsPerMebibyte)
        } ?? "" : ""
      let name = mode == "tls" ? "mTLS 1.3" : "plain TCP"
      print(
        String(
          format: "%-12@ %-10@ %12.0f %12.1f %12.2f", label as NSString, name as NSString, result.messagesPerSecond,
          result.mebibytesPerSecond, result.cpuMillisecondsPerMebibyte)
          + "   \(ratio)")
    }
  }
}
print("load average \(loadAverage())")
