import Foundation
import Logging
import NIOPosix
import TealGossip
import TealMembership
import TealTLS
import TealTransport
import TealWire
import Testing

// Issue 13: detection and false positives over the real TLS transport while Raft streams a
// snapshot on the same connections. Every member runs `MembershipService` with the default
// `SWIMSettings()`, signed records and the default `PeerTransportConfiguration` (2 s backoff
// ceiling) on loopback; n1 streams multi-MiB frames on `PeerChannel.raft` to n2 without pause
// (bulk lane, as a snapshot's chunks travel, but without Raft's flow control) for the whole run.
//
// The CI test is short (3 members, a few seconds of streaming, one crash). The measurement runs
// only with TEAL_GOSSIP_TLS_SNAPSHOT=1 (see Docs/GOSSIP.md, "Over the TLS transport"):
//   TEAL_GOSSIP_TLS_SNAPSHOT=1 [TEAL_GOSSIP_TLS_MEMBERS=4] [TEAL_GOSSIP_TLS_SECONDS=120]
//   [TEAL_GOSSIP_TLS_TRIALS=20] [TEAL_GOSSIP_TLS_FRAME_MIB=4 (0: no snapshot, the control run)]
//   swift test --filter GossipUnderSnapshotTests

private let environment = ProcessInfo.processInfo.environment

private func setting(_ name: String, _ fallback: Int) -> Int { environment[name].flatMap(Int.init) ?? fallback }

@Suite("Gossip over TLS while a snapshot streams", .serialized)
struct GossipUnderSnapshotTests {
  @Test func noFalseDeathWhileASnapshotStreamsAndACrashIsStillDetected() async throws {
    let cluster = try await SnapshotCluster.start(members: 3, frameBytes: 4 << 20)
    // Paced (at most 16 MiB/s) so that it does not starve the tests running beside it in CI;
    // each 4 MiB frame still fills the link's socket buffers ahead of the gossip frames.
    await cluster.startStreaming(pause: .milliseconds(250))
    try await Task.sleep(for: .seconds(4))  // a fixed soak: what happens in it is measured, not awaited
    let soak = await cluster.falseVerdicts()
    let streamed = await cluster.streamedBytes()
    let detection = try await cluster.crashAndMeasure(NodeID("n3"))
    let verdicts = await cluster.falseVerdicts()
    await cluster.shutdown()
    print(
      "snapshot streaming, 3 members: \(streamed >> 20) MiB in the 4 s soak; \(verdicts); crash of n3 detected by "
        + "every live member in \(detection.all.map(milliseconds) ?? "-") ms")

    #expect(streamed >= 8 << 20, "the snapshot did not stream: \(streamed) bytes")
    #expect(soak.deaths == 0, "live members declared dead while a snapshot streamed: \(soak)")
    #expect(verdicts.deaths == 0, "\(verdicts)")
    let all = try #require(detection.all, "n3's crash was not detected by every live member within 30 s")
    // Suspicion floor 3 s plus up to two probe rounds; generous for a loaded 2-core machine.
    #expect(all < .seconds(15))
  }

  @Test(.enabled(if: environment["TEAL_GOSSIP_TLS_SNAPSHOT"] != nil))
  func measureDetectionAndFalsePositivesWhileASnapshotStreams() async throws {
    let members = setting("TEAL_GOSSIP_TLS_MEMBERS", 4)
    let seconds = setting("TEAL_GOSSIP_TLS_SECONDS", 120)
    let trials = setting("TEAL_GOSSIP_TLS_TRIALS", 20)
    let frameBytes = setting("TEAL_GOSSIP_TLS_FRAME_MIB", 4) << 20
    print("load before: \(loadAverage())")
    let cluster = try await SnapshotCluster.start(members: members, frameBytes: frameBytes)
    await cluster.startStreaming()

    // (a) No crash: false suspicions and deaths while the snapshot streams.
    let soakStart = ContinuousClock.now
    let bytesBefore = await cluster.streamedBytes()
    try await Task.sleep(for: .seconds(seconds))
    let soakBytes = await cluster.streamedBytes() - bytesBefore
    let soakTime = ContinuousClock.now - soakStart
    let soak = await cluster.falseVerdicts()
    let rate = Double(soakBytes) / 1_048_576 / soakTime.seconds
    print(
      "soak: \(members) members, \(seconds) s, streamed \(soakBytes >> 20) MiB (\(String(format: "%.0f", rate)) MiB/s) "
        + "in \(frameBytes >> 20) MiB frames n1→n2; \(soak)")

    // (b) Crashes: alternately the last member (not in the streaming pair) and n2 (the
    // snapshot's receiver); each is restarted and rejoins before the next trial.
    var results: [NodeID: [SnapshotCluster.Detection]] = [:]
    for trial in 1...trials {
      let victim = trial % 2 == 1 ? NodeID("n\(members)") : NodeID("n2")
      try await Task.sleep(for: .milliseconds(Int.random(in: 500...1500)))
      let detection = try await cluster.crashAndMeasure(victim)
      results[victim, default: []].append(detection)
      print(
        "trial \(trial): \(victim) first \(detection.first.map(milliseconds) ?? "-") ms, "
          + "all \(detection.all.map(milliseconds) ?? "-") ms")
      try await cluster.restart(victim)
    }
    let verdicts = await cluster.falseVerdicts()
    let statistics = await cluster.statistics()
    await cluster.shutdown()
    for (victim, detections) in results.sorted(by: { $0.key < $1.key }) {
      let first = detections.compactMap(\.first).sorted()
      let all = detections.compactMap(\.all).sorted()
      print(
        "detection of \(victim) (\(detections.count) crashes, \(detections.count - all.count) undetected): "
          + "first p50 \(percentile(first, 0.5)) ms, every member p50 \(percentile(all, 0.5)) / "
          + "p99 \(percentile(all, 0.99)) / max \(percentile(all, 1)) ms")
    }
    print("whole run: \(verdicts); suspicions raised \(statistics.suspicions), refutations \(statistics.refutations)")
    print("load after: \(loadAverage())")
    #expect(soak.deaths == 0)
    #expect(verdicts.deaths == 0)
  }
}

private func milliseconds(_ duration: Duration) -> String { String(Int(duration.seconds * 1000)) }

private func percentile(_ sorted: [Duration], _ fraction: Double) -> String {
  guard !sorted.isEmpty else { return "-" }
  let index = min(sorted.count - 1, Int((Double(sorted.count) * fraction).rounded(.up)) - 1)
  return milliseconds(sorted[max(0, index)])
}

private func loadAverage() -> String {
  (try? String(contentsOfFile: "/proc/loadavg", encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines)
    ?? "unknown"
}

extension Duration {
  fileprivate var seconds: Double {
    let (seconds, attoseconds) = components
    return Double(seconds) + Double(attoseconds) / 1e18
  }
}

/// Counts the bytes the snapshot's receiver got.
private actor ByteCounter {
  private(set) var bytes = 0
  func add(_ count: Int) { bytes += count }
}

/// Every status change every member observed, with the time its subscriber saw it.
private actor StatusLog {
  struct Entry {
    let at: ContinuousClock.Instant
    let observer: NodeID
    let member: NodeID
    let status: MemberStatus
  }
  private(set) var entries: [Entry] = []
  func record(_ entry: Entry) { entries.append(entry) }
}

/// Members on loopback over mutual TLS, one of which streams a snapshot to another.
private actor SnapshotCluster {
  struct Node {
    let transport: PeerTransport
    let service: MembershipService
    let port: Int
  }

  struct Detection {
    /// From the crash to the first live member, and to every live member, holding it dead.
    var first: Duration?
    var all: Duration?
  }

  struct Verdicts: CustomStringConvertible {
    /// Status changes of a live member to suspect, and to dead or unreachable, over all observers.
    var suspicions = 0
    var deaths = 0
    /// False suspicions by the member suspected.
    var suspected: [NodeID: Int] = [:]
    var description: String {
      let byMember = suspected.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")
      return "false suspicions \(suspicions) [\(byMember)], false deaths \(deaths) (over all observers)"
    }
  }

  let ids: [NodeID]
  let frameBytes: Int
  private let directory: String
  private let certificates: CertificateDirectory
  private let logger: Logger
  private var nodes: [NodeID: Node] = [:]
  private let log = StatusLog()
  private let received = ByteCounter()
  private var streamer: Task<Void, Never>?
  /// When each member was down (killed, until it rejoined): verdicts about it then are true.
  private var downtimes: [NodeID: [(from: ContinuousClock.Instant, to: ContinuousClock.Instant?)]] = [:]
  private var retiredStatistics: [SWIMStatistics] = []

  private init(members: Int, frameBytes: Int) throws {
    ids = (1...members).map { NodeID("n\($0)") }
    self.frameBytes = frameBytes
    directory = FileManager.default.temporaryDirectory.appendingPathComponent("teal-gossip-snapshot-\(UUID())").path
    try CertificateDirectory.initialize(at: directory, nodes: ids)
    certificates = CertificateDirectory(path: directory)
    var logger = Logger(label: "test.gossip.snapshot")
    logger.logLevel = environment["TEAL_TEST_LOG"] == nil ? .critical : .info
    self.logger = logger
  }

  static func start(members: Int, frameBytes: Int) async throws -> SnapshotCluster {
    let cluster = try SnapshotCluster(members: members, frameBytes: frameBytes)
    try await cluster.startAll()
    return cluster
  }

  private func startAll() async throws {
    for id in ids { nodes[id] = try await makeNode(id) }
    for (id, node) in nodes {
      for (other, peer) in nodes where other != id {
        await node.transport.addPeer(other, address: PeerAddress(host: "127.0.0.1", port: peer.port))
      }
    }
    for id in ids { await nodes[id]!.service.start(seeds: id == ids[0] ? [] : [ids[0]]) }
    try await waitUntilAllSeeAllAlive()
  }

  private func makeNode(_ id: NodeID) async throws -> Node {
    let tls = try certificates.configuration(for: id)
    let transport = PeerTransport(
      configuration: PeerTransportConfiguration(nodeID: id, listenHost: "127.0.0.1", listenPort: 0, peers: [:]),
      security: .mutualTLS(try TLSContext(configuration: tls)), group: MultiThreadedEventLoopGroup.singleton,
      logger: logger)
    let port = try await transport.start()
    let service = try MembershipService(
      id: id,
      metadata: MemberMetadata(
        peerAddress: HostPort(host: "127.0.0.1", port: UInt16(port)), apiPort: 8080, version: "test"),
      settings: SWIMSettings(), sender: transport, logger: logger,
      authenticator: try CertificateRecordAuthenticator(configuration: tls), authorizedMembers: Set(ids))
    transport.setHandler(service.messageHandler, for: .gossip)
    if id == ids[1] {
      let received = received
      transport.setHandler({ _, _, payload in await received.add(payload.count) }, for: .raft)
    }
    let events = await service.subscribe()
    let log = log
    // Detached, so that the time is taken when the event arrives, not when this actor is free.
    Task.detached {
      for await event in events {
        guard case .statusChanged(let member, _) = event else { continue }
        await log.record(.init(at: .now, observer: id, member: member.id, status: member.status))
      }
    }
    return Node(transport: transport, service: service, port: port)
  }

  /// n1 sends `frameBytes` frames on the Raft channel to n2 as fast as its queue admits (or
  /// with `pause` after each), and keeps retrying while n2 is down.
  func startStreaming(pause: Duration? = nil) {
    guard frameBytes > 0 else { return }  // the control run: no snapshot
    let frame = [UInt8](repeating: 0x5a, count: frameBytes)
    let sender = nodes[ids[0]]!.transport
    let receiver = ids[1]
    streamer = Task {
      while !Task.isCancelled {
        do {
          try await sender.sendWhenQueueHasRoom(frame, on: .raft, to: receiver)
          if let pause { try? await Task.sleep(for: pause) }
        } catch {
          if case .shutDown = error as? PeerSendError { return }
          try? await Task.sleep(for: .milliseconds(50))
        }
      }
    }
  }

  func streamedBytes() async -> Int { await received.bytes }

  /// Stops `victim`'s transport abruptly (its connections close, nothing queued is sent) and
  /// measures until every live member holds it dead (at most 30 s).
  func crashAndMeasure(_ victim: NodeID) async throws -> Detection {
    let node = nodes[victim]!
    let crashed = ContinuousClock.now
    downtimes[victim, default: []].append((crashed, nil))
    await node.transport.shutdown()
    retiredStatistics.append(await node.service.statistics)
    await node.service.stop()
    let observers = ids.filter { $0 != victim }
    let deadline = crashed + .seconds(30)
    var detection = Detection()
    while ContinuousClock.now < deadline {
      let verdicts = await log.entries.filter { $0.member == victim && $0.status == .dead && $0.at >= crashed }
      var firstBy: [NodeID: ContinuousClock.Instant] = [:]
      for entry in verdicts where firstBy[entry.observer] == nil { firstBy[entry.observer] = entry.at }
      detection.first = firstBy.values.min().map { $0 - crashed }
      if observers.allSatisfy({ firstBy[$0] != nil }) {
        detection.all = firstBy.values.max().map { $0 - crashed }
        break
      }
      try await Task.sleep(for: .milliseconds(20))
    }
    return detection
  }

  /// Starts `victim` again (new transport and port, new incarnation from the wall clock) and
  /// waits until every member sees every other alive.
  func restart(_ victim: NodeID) async throws {
    let node = try await makeNode(victim)
    nodes[victim] = node
    for (id, other) in nodes where id != victim {
      await node.transport.addPeer(id, address: PeerAddress(host: "127.0.0.1", port: other.port))
      await other.transport.addPeer(victim, address: PeerAddress(host: "127.0.0.1", port: node.port))
    }
    await node.service.start(seeds: ids.filter { $0 != victim })
    try await waitUntilAllSeeAllAlive()
    if var spans = downtimes[victim], let last = spans.indices.last {
      spans[last].to = .now
      downtimes[victim] = spans
    }
  }

  private func waitUntilAllSeeAllAlive() async throws {
    let deadline = ContinuousClock.now + .seconds(60)
    while ContinuousClock.now < deadline {
      var converged = true
      for node in nodes.values {
        let members = await node.service.snapshot().members
        if members.count != ids.count - 1 || members.contains(where: { $0.status != .alive }) { converged = false }
      }
      if converged { return }
      try await Task.sleep(for: .milliseconds(20))
    }
    throw SnapshotClusterError.notConverged
  }

  /// Verdicts about members that were up at the time.
  func falseVerdicts() async -> Verdicts {
    var verdicts = Verdicts()
    for entry in await log.entries {
      let wasDown = (downtimes[entry.member] ?? []).contains { span in
        entry.at >= span.from && span.to.map { entry.at <= $0 } ?? true
      }
      if wasDown { continue }
      switch entry.status {
      case .suspect:
        verdicts.suspicions += 1
        verdicts.suspected[entry.member, default: 0] += 1
      case .dead, .unreachable: verdicts.deaths += 1
      case .alive: break
      }
    }
    return verdicts
  }

  func statistics() async -> (suspicions: Int, refutations: Int) {
    var all = retiredStatistics
    for node in nodes.values { all.append(await node.service.statistics) }
    return (all.reduce(0) { $0 + $1.suspicionsRaised }, all.reduce(0) { $0 + $1.refutations })
  }

  func shutdown() async {
    streamer?.cancel()
    for node in nodes.values {
      await node.service.stop()
      await node.transport.shutdown()
    }
    await streamer?.value
    try? FileManager.default.removeItem(atPath: directory)
  }
}

private enum SnapshotClusterError: Error { case notConverged }
