import Foundation
import TealTestSupport
import Testing

#if canImport(Glibc)
  import Glibc
#endif

/// `teal cluster` and the API commands, as far as they work without a running node: the files of
/// the cluster directory, and the errors.
@Suite("teal cluster and the API commands (the executable)")
struct ClusterCommandTests {
  private func read(_ path: String) throws -> String { try String(contentsOfFile: path, encoding: .utf8) }

  @Test func upWritesTheContractsLayout() throws {
    try #require(
      FileManager.default.isExecutableFile(atPath: tealExecutable), "no teal executable at \(tealExecutable)")
    let dir = temporaryDirectory("cluster")
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let result = try run(
      tealExecutable,
      [
        "cluster", "up", "--dir", dir, "--no-start", "--api-port", "17070", "--peer-port", "17000",
        "--election-timeout-ms", "3000", "--json",
      ])
    #expect(result.status == 0, "\(result.output)")
    #expect(
      result.output.contains(
        #""endpoints":["http://127.0.0.1:17070","http://127.0.0.2:17070","http://127.0.0.3:17070"]"#))

    // The token: 64 hex characters, mode 0600.
    let token = try read("\(dir)/token").trimmingCharacters(in: .newlines)
    #expect(token.count == 64 && token.allSatisfy(\.isHexDigit), "token '\(token)'")
    let attributes = try FileManager.default.attributesOfItem(atPath: "\(dir)/token")
    #expect((attributes[.posixPermissions] as? NSNumber)?.intValue == 0o600)

    // Certificates from one CA, node i's carrying 127.0.0.i.
    for index in 1...3 {
      let pem = "\(dir)/certs/n\(index).pem"
      #expect(try run(opensslPath, ["verify", "-CAfile", "\(dir)/certs/ca.pem", pem]).status == 0)
      let text = try run(opensslPath, ["x509", "-in", pem, "-noout", "-ext", "subjectAltName"]).output
      #expect(text.contains("IP Address:127.0.0.\(index)"), "\(text)")
    }

    #expect(
      try read("\(dir)/cluster.yaml") == """
        # Written by `teal cluster up`: the nodes of this local cluster (the CLI's default endpoints).
        nodes:
          - id: n1
            address: 127.0.0.1
            api: "http://127.0.0.1:17070"
            peerPort: 17000
          - id: n2
            address: 127.0.0.2
            api: "http://127.0.0.2:17070"
            peerPort: 17000
          - id: n3
            address: 127.0.0.3
            api: "http://127.0.0.3:17070"
            peerPort: 17000

        """)
    #expect(
      try read("\(dir)/n2/node.yaml") == """
        # Written by `teal cluster up`; read by `teal node start --config \(dir)/n2/node.yaml`.
        node: n2
        address: 127.0.0.2
        peerPort: 17000
        apiPort: 17070
        dataDir: "\(dir)/n2/data"
        taskDir: "\(dir)/n2/tasks"
        certDir: "\(dir)/certs"
        tokenFile: "\(dir)/token"
        peers:
          n1: 127.0.0.1
          n2: 127.0.0.2
          n3: 127.0.0.3
        bootstrap: true
        electionTimeoutMs: 3000

        """)
    for node in ["n1", "n2", "n3"] {
      var isDirectory: ObjCBool = false
      #expect(
        FileManager.default.fileExists(atPath: "\(dir)/\(node)/data", isDirectory: &isDirectory)
          && isDirectory.boolValue)
      #expect(FileManager.default.fileExists(atPath: "\(dir)/\(node)/tasks"))
    }

    // A second `up` keeps the files (same token) and refuses flags that contradict them.
    #expect(try run(tealExecutable, ["cluster", "up", "--dir", dir, "--no-start"]).status == 0)
    #expect(try read("\(dir)/token").trimmingCharacters(in: .newlines) == token)
    let contradicting = try run(tealExecutable, ["cluster", "up", "--dir", dir, "--no-start", "--nodes", "5"])
    #expect(contradicting.status == 1)
    #expect(contradicting.output.contains("holds a 3-node cluster, not 5"), "\(contradicting.output)")
  }

  @Test func downLeavesAProcessThatIsNotTheNodeAloneAndPurgeRemovesTheDirectory() throws {
    try #require(
      FileManager.default.isExecutableFile(atPath: tealExecutable), "no teal executable at \(tealExecutable)")
    let dir = temporaryDirectory("cluster")
    defer { try? FileManager.default.removeItem(atPath: dir) }
    #expect(try run(tealExecutable, ["cluster", "up", "--dir", dir, "--nodes", "3", "--no-start"]).status == 0)
    // A stale PID file naming a live process that is not the node (PIDs get reused).
    let bystander = Process()
    bystander.executableURL = URL(fileURLWithPath: "/bin/sleep")
    bystander.arguments = ["30"]
    try bystander.run()
    defer { bystander.terminate() }
    try "\(bystander.processIdentifier)\n".write(toFile: "\(dir)/n1/node.pid", atomically: true, encoding: .utf8)

    let down = try run(tealExecutable, ["cluster", "down", "--dir", dir, "--json"])
    #expect(down.status == 0, "\(down.output)")
    #expect(
      down.output.contains(#""notRunning":["n1","n2","n3"]"#) && down.output.contains(#""stopped":[]"#),
      "\(down.output)")
    #expect(bystander.isRunning)
    #expect(!FileManager.default.fileExists(atPath: "\(dir)/n1/node.pid"))
    #expect(FileManager.default.fileExists(atPath: "\(dir)/n1/node.yaml"))

    let purge = try run(tealExecutable, ["cluster", "down", "--dir", dir, "--purge"])
    #expect(purge.status == 0, "\(purge.output)")
    #expect(!FileManager.default.fileExists(atPath: dir))
    let again = try run(tealExecutable, ["cluster", "down", "--dir", dir])
    #expect(again.status == 1 && again.output.contains("no cluster in \(dir)"))
  }

  @Test func downRefusesADirectoryThatIsNotACluster() throws {
    try #require(
      FileManager.default.isExecutableFile(atPath: tealExecutable), "no teal executable at \(tealExecutable)")
    let dir = temporaryDirectory("cluster")
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: dir) }
    try "keep me".write(toFile: "\(dir)/precious", atomically: true, encoding: .utf8)
    let result = try run(tealExecutable, ["cluster", "down", "--dir", dir, "--purge"])
    #expect(result.status == 1 && result.output.contains("is not a teal cluster directory"), "\(result.output)")
    #expect(FileManager.default.fileExists(atPath: "\(dir)/precious"))
  }

  @Test func commandsWithoutAClusterSayHowToGetOne() throws {
    try #require(
      FileManager.default.isExecutableFile(atPath: tealExecutable), "no teal executable at \(tealExecutable)")
    let dir = temporaryDirectory("nocluster")
    for arguments in [
      ["cluster", "status"], ["service", "list"], ["tasks"], ["events", "web"], ["service", "describe", "web"],
    ] {
      let result = try run(tealExecutable, arguments + ["--dir", dir])
      #expect(result.status == 1, "\(arguments): \(result.output)")
      #expect(
        result.output == "Error: no cluster in \(dir) (no \(dir)/cluster.yaml): start one with "
          + "`teal cluster up --dir \(dir)` or give --endpoint URL\n", "\(arguments)")
    }
  }

  @Test func anUnreachableEndpointIsOneLineAndNonZero() throws {
    try #require(
      FileManager.default.isExecutableFile(atPath: tealExecutable), "no teal executable at \(tealExecutable)")
    // A port bound without listening refuses connections for as long as it is held.
    let socket = Glibc.socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(socket) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    _ = withUnsafePointer(to: &address) {
      $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
        bind(socket, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
      }
    }
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafeMutablePointer(to: &address) {
      $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(socket, $0, &length) }
    }
    let endpoint = "http://127.0.0.1:\(UInt16(bigEndian: address.sin_port))"
    let result = try run(tealExecutable, ["service", "scale", "web", "2", "--endpoint", endpoint])
    #expect(result.status == 1)
    #expect(result.output.split(separator: "\n").count == 1, "\(result.output)")
    #expect(result.output.hasPrefix("Error: cannot reach a Teal node (last tried \(endpoint): connection refused)"))
  }

  @Test func badArgumentsAreUsageErrorsNamingTheOption() throws {
    try #require(
      FileManager.default.isExecutableFile(atPath: tealExecutable), "no teal executable at \(tealExecutable)")
    let badURL = try run(tealExecutable, ["tasks", "--endpoint", "127.0.0.1:7070"])
    #expect(badURL.status == 64 && badURL.output.contains("--endpoint: invalid endpoint '127.0.0.1:7070'"))
    let badCount = try run(
      tealExecutable, ["cluster", "up", "--nodes", "0", "--no-start", "--dir", temporaryDirectory("x")])
    #expect(badCount.status == 64 && badCount.output.contains("--nodes must be 1, 3, 5 or 7, got 0"))
    let evenCount = try run(
      tealExecutable, ["cluster", "up", "--nodes", "4", "--no-start", "--dir", temporaryDirectory("x")])
    #expect(evenCount.status == 64 && evenCount.output.contains("--nodes must be 1, 3, 5 or 7, got 4"))
    let samePorts = try run(
      tealExecutable, ["cluster", "up", "--api-port", "7000", "--peer-port", "7000", "--dir", temporaryDirectory("x")])
    #expect(samePorts.status == 64 && samePorts.output.contains("must differ"))
    let negative = try run(tealExecutable, ["service", "scale", "web", "--", "-1"])
    #expect(negative.status == 64 && negative.output.contains("0 or more"), "\(negative.output)")
  }

  @Test func serviceCreateChecksTheSpecBeforeSendingAnything() throws {
    try #require(
      FileManager.default.isExecutableFile(atPath: tealExecutable), "no teal executable at \(tealExecutable)")
    let result = try run(
      tealExecutable, ["service", "create", "-f", "/no/such/spec.yaml", "--endpoint", "http://127.0.0.1:1"])
    #expect(result.status == 1 && result.output.contains("cannot read spec file /no/such/spec.yaml"))
  }

  @Test func aNodeThatFailsToStartIsReportedWithItsLog() throws {
    try #require(
      FileManager.default.isExecutableFile(atPath: tealExecutable), "no teal executable at \(tealExecutable)")
    let dir = temporaryDirectory("cluster")
    defer {
      _ = try? run(tealExecutable, ["cluster", "down", "--dir", dir, "--purge", "--timeout", "2"])
      try? FileManager.default.removeItem(atPath: dir)
    }
    #expect(try run(tealExecutable, ["cluster", "up", "--dir", dir, "--nodes", "1", "--no-start"]).status == 0)
    // A broken config: the node refuses it and exits; `up` says which node and where its log is.
    try "node: [unclosed\n".write(toFile: "\(dir)/n1/node.yaml", atomically: true, encoding: .utf8)
    let result = try run(tealExecutable, ["cluster", "up", "--dir", dir, "--wait", "30"])
    #expect(result.status == 1, "\(result.output)")
    #expect(result.output.contains("node n1 exited"), "\(result.output)")
    #expect(result.output.contains("see \(dir)/n1/node.log"))
  }

  /// A process that looks like `teal node start --config <dir>/<node>/node.yaml` in /proc (perl
  /// under the name `teal`), its PID recorded as the node's.
  /// With `ignoringTERM`, it also starts a "task": a child in its own session, its PID in
  /// `<node>/task.pid`.
  private func fakeNode(_ dir: String, _ node: String, ignoringTERM: Bool = false) throws -> Process {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/bin/bash")
    // Foundation's Process starts children with most signals blocked: unblock them, as a node has them.
    let unblock = "use POSIX; sigprocmask(SIG_SETMASK, POSIX::SigSet->new);"
    let task =
      " my $c = fork(); if ($c == 0) { POSIX::setsid(); sleep 60; exit 0 }"
      + " open(my $f, \">\", \"\(dir)/\(node)/task.pid\"); print $f $c; close($f);"
    let script = unblock + (ignoringTERM ? " $SIG{TERM}=\"IGNORE\";" + task + " sleep 60" : " sleep 60")
    process.arguments = [
      "-c", "exec -a teal /usr/bin/perl -e '\(script)' node start --config \(dir)/\(node)/node.yaml",
    ]
    try process.run()
    try "\(process.processIdentifier)\n".write(toFile: "\(dir)/\(node)/node.pid", atomically: true, encoding: .utf8)
    let pid = process.processIdentifier
    try waitUntil("the fake \(node) runs as teal") {
      let cmdline = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") ?? Data()
      return String(decoding: cmdline, as: UTF8.self).hasPrefix("teal\u{0}")
    }
    return process
  }

  private func waitUntil(_ what: String, within seconds: Double = 10, _ condition: () -> Bool) throws {
    let deadline = Date().addingTimeInterval(seconds)
    while !condition() {
      if Date() > deadline { throw TimedOut(what: what) }
      usleep(10_000)
    }
  }

  @Test func downStopsTheNodesWithSIGTERMAndKillsThoseThatIgnoreIt() throws {
    try #require(
      FileManager.default.isExecutableFile(atPath: tealExecutable), "no teal executable at \(tealExecutable)")
    try #require(FileManager.default.isExecutableFile(atPath: "/usr/bin/perl"), "no /usr/bin/perl for the fake nodes")
    let dir = temporaryDirectory("cluster")
    defer { try? FileManager.default.removeItem(atPath: dir) }
    #expect(try run(tealExecutable, ["cluster", "up", "--dir", dir, "--nodes", "3", "--no-start"]).status == 0)
    let polite = try fakeNode(dir, "n1")
    let stubborn = try fakeNode(dir, "n2", ignoringTERM: true)
    try waitUntil("the stubborn fake starts its task") { FileManager.default.fileExists(atPath: "\(dir)/n2/task.pid") }
    defer {
      polite.terminate()
      kill(stubborn.processIdentifier, SIGKILL)
    }
    let down = try run(tealExecutable, ["cluster", "down", "--dir", dir, "--timeout", "1", "--json"])
    #expect(down.status == 0, "\(down.output)")
    #expect(
      down.output.contains(#""killed":["n2"]"#) && down.output.contains(#""stopped":["n1","n2"]"#), "\(down.output)")
    try waitUntil("both fakes exit") { !polite.isRunning && !stubborn.isRunning }
    // The stubborn node's task, in its own session, went with it.
    let task = try #require(pid_t(try String(contentsOfFile: "\(dir)/n2/task.pid", encoding: .utf8)))
    try waitUntil("the killed node's task exits") {
      guard let stat = FileManager.default.contents(atPath: "/proc/\(task)/stat") else { return true }
      return String(decoding: stat, as: UTF8.self).contains(") Z")
    }
    #expect(polite.terminationReason == .uncaughtSignal && polite.terminationStatus == SIGTERM)
    #expect(stubborn.terminationStatus == SIGKILL)
    #expect(!FileManager.default.fileExists(atPath: "\(dir)/n1/node.pid"))
    #expect(FileManager.default.fileExists(atPath: "\(dir)/n1/node.yaml"), "down keeps the directory")
  }

  @Test func upOnARunningClusterSaysSoAndChangesNothing() throws {
    try #require(
      FileManager.default.isExecutableFile(atPath: tealExecutable), "no teal executable at \(tealExecutable)")
    try #require(FileManager.default.isExecutableFile(atPath: "/usr/bin/perl"), "no /usr/bin/perl for the fake nodes")
    let dir = temporaryDirectory("cluster")
    defer { try? FileManager.default.removeItem(atPath: dir) }
    #expect(try run(tealExecutable, ["cluster", "up", "--dir", dir, "--nodes", "3", "--no-start"]).status == 0)
    let nodes = [try fakeNode(dir, "n1"), try fakeNode(dir, "n2"), try fakeNode(dir, "n3")]
    defer { for node in nodes { node.terminate() } }
    let before = try String(contentsOfFile: "\(dir)/n1/node.pid", encoding: .utf8)
    let up = try run(tealExecutable, ["cluster", "up", "--dir", dir])
    #expect(up.status == 0, "\(up.output)")
    #expect(up.output.contains("n1 is running (pid \(nodes[0].processIdentifier))"), "\(up.output)")
    #expect(up.output.contains("already running; nothing changed"), "\(up.output)")
    #expect(try String(contentsOfFile: "\(dir)/n1/node.pid", encoding: .utf8) == before)
    #expect(nodes.allSatisfy { $0.isRunning })
  }
}

@Suite struct MembershipCommandTests {
  @Test func certsAddTakesTheIdAndACLusterDirectory() throws {
    try #require(
      FileManager.default.isExecutableFile(atPath: tealExecutable), "no teal executable at \(tealExecutable)")
    let dir = temporaryDirectory("cluster")
    defer { try? FileManager.default.removeItem(atPath: dir) }
    #expect(try run(tealExecutable, ["cluster", "up", "--dir", dir, "--no-start"]).status == 0)
    let added = try run(tealExecutable, ["certs", "add", "n4", "--dir", dir, "--address", "127.0.0.4", "--json"])
    #expect(added.status == 0, "\(added.output)")
    #expect(added.output.contains("\(dir)/certs/n4.pem"), "\(added.output)")
    #expect(try run(opensslPath, ["verify", "-CAfile", "\(dir)/certs/ca.pem", "\(dir)/certs/n4.pem"]).status == 0)
    let missing = try run(tealExecutable, ["certs", "add", "--dir", dir])
    #expect(missing.status == 64 && missing.output.contains("give the node id"), "\(missing.output)")
  }

  @Test func membershipCommandsRefuseBadArgumentsBeforeCallingAnyNode() throws {
    try #require(
      FileManager.default.isExecutableFile(atPath: tealExecutable), "no teal executable at \(tealExecutable)")
    let badAddress = try run(tealExecutable, ["cluster", "add-node", "n4", "--address", "node4.example"])
    #expect(badAddress.status == 64 && badAddress.output.contains("is not an IPv4 or IPv6 address literal"))
    let badID = try run(tealExecutable, ["cluster", "remove-node", "N4"])
    #expect(badID.status == 64, "\(badID.output)")
    let join = try run(tealExecutable, ["node", "start", "--join", "--bootstrap", "true", "--node", "n1"])
    #expect(join.status == 1 && join.output.contains("--join contradicts --bootstrap true"), "\(join.output)")
  }
}
