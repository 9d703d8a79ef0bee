// The API over TLS, end to end: `teal cluster up --api-tls` starts three real nodes whose API is
// HTTPS with their node certificates, the CLI pins the cluster CA, and a client that trusts another
// CA (or speaks plain HTTP) gets nothing.

import Foundation
import TealTestSupport
import TealTraffic
import Testing

@Suite(
  "The API over TLS (teal cluster up --api-tls)", .serialized,
  .enabled(if: Binaries.missing == nil, "\(Binaries.missing ?? "")"))
struct APITLSTests {
  @Test(.timeLimit(.minutes(2)))
  func theCLIWorksOverTLSAndAClientTrustingAnotherCAOrPlainHTTPIsRefused() async throws {
    let dir = temporaryDirectory("api-tls")
    let addresses = ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
    let apiPort = try FreePorts.pick(on: addresses)
    let peerPort = try FreePorts.pick(on: addresses)
    // Whatever happens below, every node this test started is stopped (by the PIDs in the directory).
    defer { _ = try? run(Binaries.teal, ["cluster", "down", "--dir", dir, "--purge", "--timeout", "5"]) }

    let upLog = "\(dir).up.log"
    let up = try spawnInOwnGroup(
      Binaries.teal,
      ["cluster", "up", "--dir", dir, "--api-tls", "--api-port", "\(apiPort)", "--peer-port", "\(peerPort)"],
      logPath: upLog)
    defer { killGroup(up, startTime: nil) }
    let upExit = try await waitForChild(up, "teal cluster up --api-tls", timeout: .seconds(90))
    let upOutput = (try? String(contentsOfFile: upLog, encoding: .utf8)) ?? ""
    #expect(upExit == .exited(0), "\(upOutput)")
    #expect(upOutput.contains("endpoints: https://127.0.0.1:\(apiPort)"), "\(upOutput)")
    let clusterFile = try String(contentsOfFile: "\(dir)/cluster.yaml", encoding: .utf8)
    #expect(clusterFile.contains("https://127.0.0.2:\(apiPort)"), "\(clusterFile)")

    // The CLI, pinning <dir>/certs/ca.pem: a linearizable read and a write, through every node.
    let status = try run(Binaries.teal, ["cluster", "status", "--dir", dir, "--json"])
    #expect(status.status == 0, "\(status.output)")
    let members = try JSONSerialization.jsonObject(with: Data(status.output.utf8)) as? [String: Any]
    let apis = (members?["members"] as? [[String: Any]])?.compactMap { $0["api"] as? String } ?? []
    #expect(apis.count == 3 && apis.allSatisfy { $0.hasPrefix("https://") }, "\(status.output)")
    for address in addresses {
      let listed = try run(
        Binaries.teal, ["service", "list", "--endpoint", "https://\(address):\(apiPort)", "--dir", dir])
      #expect(listed.status == 0, "\(address): \(listed.output)")
    }

    // A client that trusts another CA is refused in the handshake, and says so; nothing was sent.
    let other = temporaryDirectory("api-tls-other-ca")
    #expect(try run(Binaries.teal, ["certs", "init", "--out", other, "--nodes", "n1"]).status == 0)
    let refused = try run(Binaries.teal, ["service", "list", "--dir", dir, "--ca", "\(other)/ca.pem"])
    #expect(refused.status != 0, "\(refused.output)")
    #expect(refused.output.contains("certificate verify failed"), "\(refused.output)")
    #expect(refused.output.contains("nothing was sent"), "\(refused.output)")

    // Plain HTTP to the TLS port gets no HTTP answer.
    let plain = try await HTTPConnection.connect(host: "127.0.0.1", port: apiPort, timeout: .seconds(3))
    defer { Task { await plain.close() } }
    await #expect(throws: (any Error).self) {
      _ = try await plain.request(method: .GET, path: "/health", headers: [], body: nil, timeout: .seconds(5))
    }

    // An http:// endpoint against the TLS cluster is refused before any connection is made.
    let mixed = try run(
      Binaries.teal,
      ["service", "list", "--endpoint", "http://127.0.0.1:\(apiPort)", "--endpoint", "https://127.0.0.2:\(apiPort)"])
    #expect(mixed.status != 0 && mixed.output.contains("mix http:// and https://"), "\(mixed.output)")

    // Rotation without a restart: credentials from a new CA replace certs/, then SIGHUP. Until the
    // signal the nodes present the old certificates (a client pinning the new CA is refused); after
    // it every new connection gets the new ones, and a client pinning the old CA is refused.
    let oldCA = "\(dir).old-ca.pem"
    try FileManager.default.copyItem(atPath: "\(dir)/certs/ca.pem", toPath: oldCA)
    let rotated = temporaryDirectory("api-tls-rotated")
    let issued = try run(
      Binaries.teal,
      ["certs", "init", "--out", rotated, "--nodes", "n1,n2,n3"]
        + addresses.enumerated().flatMap { ["--address", "n\($0.offset + 1)=\($0.element)"] })
    #expect(issued.status == 0, "\(issued.output)")
    for file in ["ca.pem", "ca.key", "n1.pem", "n1.key", "n2.pem", "n2.key", "n3.pem", "n3.key"] {
      let target = "\(dir)/certs/\(file)"
      try FileManager.default.removeItem(atPath: target)
      try FileManager.default.copyItem(atPath: "\(rotated)/\(file)", toPath: target)
      if file.hasSuffix(".key") {
        try FileManager.default.setAttributes([.posixPermissions: 0o600], ofItemAtPath: target)
      }
    }
    let beforeReload = try run(Binaries.teal, ["service", "list", "--dir", dir])
    #expect(beforeReload.status != 0, "still the old certificates before SIGHUP: \(beforeReload.output)")
    #expect(beforeReload.output.contains("certificate verify failed"), "\(beforeReload.output)")
    for index in 1...3 {
      let pidText = try String(contentsOfFile: "\(dir)/n\(index)/node.pid", encoding: .utf8)
      let pid = try #require(Int32(pidText.trimmingCharacters(in: .whitespacesAndNewlines)))
      #expect(kill(pid, SIGHUP) == 0, "SIGHUP to n\(index) (pid \(pid))")
    }
    for address in addresses {
      try await eventually("\(address) presenting the new certificate", within: 20) {
        try run(Binaries.teal, ["service", "list", "--endpoint", "https://\(address):\(apiPort)", "--dir", dir])
          .status == 0
      }
    }
    let stale = try run(Binaries.teal, ["service", "list", "--dir", dir, "--ca", oldCA])
    #expect(stale.status != 0 && stale.output.contains("certificate verify failed"), "\(stale.output)")

    let down = try run(Binaries.teal, ["cluster", "down", "--dir", dir, "--purge", "--json"])
    #expect(down.status == 0, "\(down.output)")
  }
}
