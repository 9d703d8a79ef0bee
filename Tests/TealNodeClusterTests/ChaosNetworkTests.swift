// `teal chaos partition` against real nodes: the nftables rules cut exactly what they say. A
// one-way cut (`--from`) leaves the peer's own connections working, so its messages still arrive;
// a full partition stops every peer message; both are undone when the command ends.

import Foundation
import TealTestSupport
import Testing

/// Whether nftables can be used here (the executable exists and this user may list tables).
enum NFTables {
  static let executable = ["/usr/sbin/nft", "/sbin/nft", "/usr/bin/nft"].first {
    FileManager.default.isExecutableFile(atPath: $0)
  }
  static let unusable: String? = {
    guard let executable else { return "nftables is not installed (no nft)" }
    guard let listed = try? run(executable, ["list", "tables"]), listed.status == 0 else {
      return "nft list tables fails here (nftables needs root or CAP_NET_ADMIN)"
    }
    return nil
  }()

  /// Whether the cluster directory's table (named in the command's JSON output) still exists.
  static func hasTable(_ name: String) -> Bool {
    guard let executable else { return false }
    return (try? run(executable, ["list", "table", "inet", name]))?.status == 0
  }
}

@Suite(
  "Network faults on real nodes (teal chaos partition, nftables)", .serialized,
  .enabled(if: Binaries.missing == nil, "\(Binaries.missing ?? "")"),
  .enabled(if: NFTables.unusable == nil, "\(NFTables.unusable ?? "")"))
struct ChaosNetworkTests {
  struct Written: Decodable { var version: UInt64 }

  @Test(.timeLimit(.minutes(2)))
  func aOneWayCutLetsThePeersMessagesInAndAFullPartitionStopsThemUntilHealed() async throws {
    try await withCluster { cluster in
      let leader = try await cluster.waitForLeader()
      let follower = cluster.followers(of: leader)[0]
      func applied(_ id: String) async throws -> UInt64 {
        try await cluster.api(id).get("/v1/cluster/state?stale=true", as: StateDigestView.self).appliedIndex
      }
      /// Three writes through the leader; the log index of the last.
      func write(_ prefix: String) async throws -> UInt64 {
        var version: UInt64 = 0
        for index in 1...3 {
          version = try await cluster.api(leader).call(
            .PUT, "/v1/variables/\(prefix)/\(index)", body: #"{"value": "v"}"#, as: Written.self
          ).version
        }
        return version
      }
      /// Starts `teal chaos partition` and waits until its rules are in place; returns its PID,
      /// its log and the table it named.
      func partition(_ arguments: [String], log: String) async throws -> (pid_t, String) {
        let pid = try cluster.spawnTeal(
          ["chaos", "partition", follower] + arguments + ["--for", "8s", "--dir", cluster.directory, "--json"],
          log: log)
        var table = ""
        try await waitUntil("the partition is installed", timeout: .seconds(20)) {
          guard let line = jsonLines(log).first(where: { $0["action"] as? String == "partition" }) else {
            return false
          }
          table = line["table"] as? String ?? ""
          return true
        }
        #expect(NFTables.hasTable(table), "no nftables table \(table) while the fault is on")
        return (pid, table)
      }

      // One way: the follower's own connections to the leader are cut; the leader's connections to
      // the follower are not, so its appends (and commit index) still arrive and are applied.
      let oneWayLog = "\(cluster.directory)/one-way.log"
      let (oneWay, oneWayTable) = try await partition(["--from", leader], log: oneWayLog)
      defer { killGroup(oneWay, startTime: nil) }
      let firstTarget = try await write("one-way")
      try await waitUntil("\(follower) applies the writes made during the one-way cut", timeout: .seconds(6)) {
        try await applied(follower) >= firstTarget
      }
      let oneWayExit = try await waitForChild(oneWay, "teal chaos partition --from", timeout: .seconds(30))
      #expect(oneWayExit == .exited(0), "\((try? String(contentsOfFile: oneWayLog, encoding: .utf8)) ?? "")")
      #expect(!NFTables.hasTable(oneWayTable), "the table outlived the one-way cut")

      // Full partition: nothing reaches the follower until the rules are gone, then it catches up.
      let fullLog = "\(cluster.directory)/partition.log"
      let (full, fullTable) = try await partition([], log: fullLog)
      defer { killGroup(full, startTime: nil) }
      let secondTarget = try await write("partition")
      let clock = ContinuousClock()
      let window = clock.now + .seconds(3)
      while clock.now < window {
        let seen = try await applied(follower)
        #expect(seen < secondTarget, "\(follower) applied \(seen) ≥ \(secondTarget) while partitioned")
        try await Task.sleep(for: .milliseconds(200))
      }
      let fullExit = try await waitForChild(full, "teal chaos partition", timeout: .seconds(30))
      #expect(fullExit == .exited(0), "\((try? String(contentsOfFile: fullLog, encoding: .utf8)) ?? "")")
      #expect(!NFTables.hasTable(fullTable), "the table outlived the partition")
      try await waitUntil("\(follower) catches up after the partition", timeout: .seconds(20)) {
        try await applied(follower) >= secondTarget
      }

      // Interrupted: SIGINT to the command removes the rules at once.
      let interruptedLog = "\(cluster.directory)/partition-interrupted.log"
      let interrupted = try cluster.spawnTeal(
        ["chaos", "partition", follower, "--for", "60s", "--dir", cluster.directory, "--json"], log: interruptedLog)
      defer { killGroup(interrupted, startTime: nil) }
      var table = ""
      try await waitUntil("the interrupted partition is installed", timeout: .seconds(20)) {
        table = jsonLines(interruptedLog).first { $0["action"] as? String == "partition" }?["table"] as? String ?? ""
        return !table.isEmpty
      }
      #expect(NFTables.hasTable(table))
      kill(interrupted, SIGINT)
      let interruptedExit = try await waitForChild(interrupted, "the interrupted partition", timeout: .seconds(10))
      #expect(interruptedExit == .exited(128 + SIGINT))
      #expect(!NFTables.hasTable(table), "SIGINT left the table \(table) in place")
      #expect(jsonLines(interruptedLog).contains { $0["interrupted"] as? Bool == true })
    }
  }
}
