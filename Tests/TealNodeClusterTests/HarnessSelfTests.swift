// The harness's own machinery (process groups, signals, reaping, ledgers, ports), checked with
// teal-demo and /bin/sh as stand-ins so that it is known to work before the node lands.

import Foundation
import TealTestSupport
import TealTraffic
import Testing

#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

@Suite("LocalCluster machinery (no node needed)", .serialized)
struct HarnessSelfTests {
  @Test func freePortsBindOnEveryLoopbackAddressAndAreNotHandedOutTwice() throws {
    let hosts = ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
    let first = try FreePorts.pick(on: hosts)
    let second = try FreePorts.pick(on: hosts)
    #expect(first != second)
    for host in hosts { #expect(FreePorts.bindable(host: host, port: first) == first) }
    let range = try FreePorts.range(count: 10, on: ["0.0.0.0"])
    #expect(range.count == 10)
    #expect(!range.contains(first) && !range.contains(second))
  }

  @Test func aSpawnedProcessLeadsItsOwnGroupLogsToItsFileAndExitsOnSIGTERM() async throws {
    let demo = Binaries.tealDemo
    try #require(FileManager.default.isExecutableFile(atPath: demo), "no teal-demo at \(demo)")
    let log = temporaryDirectory("harness") + ".log"
    defer { try? FileManager.default.removeItem(atPath: log) }
    let port = try FreePorts.pick(on: ["127.0.0.1"])
    let pid = try spawnInOwnGroup(demo, ["--port", "\(port)"], logPath: log)
    defer { killGroup(pid, startTime: nil) }
    #expect(getpgid(pid) == pid)
    #expect(processStartTime(pid) != nil)
    try await waitUntil("teal-demo answers", timeout: .seconds(20)) {
      let connection = try await HTTPConnection.connect(host: "127.0.0.1", port: port)
      defer { Task { await connection.close() } }
      return try await connection.request(method: .GET, path: "/health").status == 200
    }
    #expect(reap(pid) == nil)
    kill(pid, SIGTERM)
    var exit: ChildExit?
    try await waitUntil("teal-demo exits", timeout: .seconds(20)) {
      exit = reap(pid)
      return exit != nil
    }
    #expect(exit == .exited(0))
    let text = try String(contentsOfFile: log, encoding: .utf8)
    #expect(text.contains("listening on 127.0.0.1:\(port)"), "\(text)")
  }

  @Test func killGroupKillsTheLeaderAndItsChildrenAndReapReportsTheSignal() async throws {
    let log = temporaryDirectory("harness") + ".log"
    defer { try? FileManager.default.removeItem(atPath: log) }
    // A group leader with a child that would outlive it: the child's pid is printed to the log.
    let pid = try spawnInOwnGroup("/bin/sh", ["-c", "sleep 300 & echo child $!; wait"], logPath: log)
    var child: pid_t = 0
    try await waitUntil("the child's pid in the log", timeout: .seconds(10)) {
      let text = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
      guard let line = text.split(separator: "\n").first(where: { $0.hasPrefix("child ") }),
        let value = pid_t(line.dropFirst(6))
      else { return false }
      child = value
      return true
    }
    #expect(getpgid(child) == pid)
    killGroup(pid, startTime: processStartTime(pid))
    var exit: ChildExit?
    try await waitUntil("the leader is reaped", timeout: .seconds(10)) {
      exit = reap(pid)
      return exit != nil
    }
    #expect(exit == .signalled(SIGKILL))
    try await waitUntil("the child is gone", timeout: .seconds(10)) {
      // A zombie child of init is reaped promptly; kill(pid, 0) fails once it is.
      kill(child, 0) != 0
        || (try? String(contentsOfFile: "/proc/\(child)/stat", encoding: .utf8))?.contains(") Z ")
          == true
    }
  }

  @Test func aStaleStartTimeSparesAProcessThatReusedThePID() throws {
    let me = getpid()
    let start = try #require(processStartTime(me))
    // A group named by our PID but recorded with another start time is not ours to kill.
    killGroup(me, startTime: start + 1)
    #expect(kill(me, 0) == 0)
  }

  @Test func theTaskLedgerIsReadAsGroupStartTimeAndTask() throws {
    let path = temporaryDirectory("ledger")
    defer { try? FileManager.default.removeItem(atPath: path) }
    try "4242 1234567 web.1.7\n\nbad line\n1 5 init-is-never-a-task\n77 0 api.2.1\n".write(
      toFile: path, atomically: true, encoding: .utf8)
    let entries = readTaskLedger(path)
    #expect(entries.map(\.group) == [4242, 77])
    #expect(entries.map(\.startTime) == [1_234_567, 0])
    #expect(entries.map(\.task) == ["web.1.7", "api.2.1"])
    #expect(readTaskLedger("/no/such/ledger").isEmpty)
  }

  @Test func theClusterLayoutHasCertificatesATokenAndOneConfigurationPerNode() throws {
    try #require(FileManager.default.isExecutableFile(atPath: Binaries.teal), "no teal at \(Binaries.teal)")
    let cluster = try LocalCluster(nodes: 3, electionTimeoutMs: 1500)
    defer { cluster.destroy() }
    let files = FileManager.default
    for name in ["ca.pem", "ca.key", "n1.pem", "n1.key", "n2.pem", "n3.key"] {
      #expect(files.fileExists(atPath: "\(cluster.directory)/certs/\(name)"), "\(name)")
    }
    let attributes = try files.attributesOfItem(atPath: "\(cluster.directory)/token")
    #expect((attributes[.posixPermissions] as? NSNumber)?.intValue == 0o600)
    #expect(cluster.token.count == 64 && cluster.token.allSatisfy(\.isHexDigit))
    let n2 = try String(contentsOfFile: cluster.node("n2").configPath, encoding: .utf8)
    for line in [
      "node: n2", "address: 127.0.0.2", "peerPort: \(cluster.peerPort)", "apiPort: \(cluster.apiPort)",
      "dataDir: \(cluster.directory)/n2/data", "taskDir: \(cluster.directory)/n2/tasks",
      "certDir: \(cluster.directory)/certs", "tokenFile: \(cluster.directory)/token", "  n1: 127.0.0.1",
      "  n3: 127.0.0.3", "bootstrap: true", "electionTimeoutMs: 1500",
    ] {
      #expect(n2.split(separator: "\n").contains(Substring(line)), "node.yaml lacks '\(line)':\n\(n2)")
    }
    #expect(!cluster.node("n1").taskPorts.overlaps(cluster.node("n2").taskPorts))
    let verify = try run(opensslPath, ["x509", "-noout", "-text", "-in", "\(cluster.directory)/certs/n3.pem"])
    #expect(verify.output.contains("127.0.0.3"), "n3's certificate lacks its address")
    cluster.destroy()
    #expect(!files.fileExists(atPath: cluster.directory))
  }
}
