import ArgumentParser
import Foundation
import TealAPI
import TealClient

#if canImport(Glibc)
  import Glibc
#endif

/// `teal cluster up|down|status`: a local cluster, each node a background process on 127.0.0.i.
struct Cluster: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Run a local cluster (nodes on 127.0.0.1, 127.0.0.2, ...) or show a cluster's state.",
    subcommands: [
      Up.self, Down.self, Status.self, Members.self, AddNode.self, RemoveNode.self, ReplaceNode.self,
    ]
  )

  struct Up: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Start a local cluster in the background; return once it has a leader and every node is up.",
      discussion: """
        A new directory gets certificates (certs/), a token (mode 0600), cluster.yaml and each node's \
        node.yaml, data/ and tasks/. Node i binds 127.0.0.i with the same ports on every node; it runs \
        as `teal node start --config DIR/nI/node.yaml`, logging to DIR/nI/node.log, its PID in \
        DIR/nI/node.pid. On an existing directory, `up` starts the nodes that are not running (with \
        their data) and changes nothing when all are.
        """)

    @Option(name: .long, help: "Number of nodes of a new cluster: 1, 3, 5 or 7. Default: 3.")
    var nodes: Int?

    @Option(name: .long, help: "The cluster directory.")
    var dir: String = ".teal"

    @Option(name: .long, help: "Peer (Raft, gossip) port of every node of a new cluster. Default: 7000.")
    var peerPort: Int?

    @Option(name: .long, help: "API port of every node of a new cluster. Default: 7070.")
    var apiPort: Int?

    @Option(name: .long, help: "Election timeout of a new cluster's nodes, in milliseconds (node default if absent).")
    var electionTimeoutMs: Int?

    @Option(name: .long, help: "Seconds to wait for a leader with every node up.")
    var wait: Int = 60

    @Flag(name: .long, help: "Write the directory's files only; start no node.")
    var noStart = false

    @Flag(
      name: .long,
      help: "Serve a new cluster's API over TLS (https://, node certificates; the CLI pins <dir>/certs/ca.pem).")
    var apiTls = false

    @Flag(name: .long, help: "Print machine-readable JSON instead of text.")
    var json = false

    func validate() throws {
      if let nodes, !ClusterPlan.allowedNodeCounts.contains(nodes) {
        throw ValidationError(
          "--nodes must be 1, 3, 5 or 7, got \(nodes) (an odd count: an even one adds a voter to every quorum "
            + "without tolerating one more failure; more than 7 only slows every commit)")
      }
      for (name, port) in [("--peer-port", peerPort), ("--api-port", apiPort)] {
        if let port, !(1...65535).contains(port) { throw ValidationError("\(name) must be in 1...65535, got \(port)") }
      }
      if let peerPort, let apiPort, peerPort == apiPort {
        throw ValidationError("--peer-port and --api-port must differ, both are \(peerPort)")
      }
      if let electionTimeoutMs, !(100...60_000).contains(electionTimeoutMs) {
        throw ValidationError("--election-timeout-ms must be in 100...60000, got \(electionTimeoutMs)")
      }
      if !(1...3600).contains(wait) { throw ValidationError("--wait must be in 1...3600 seconds, got \(wait)") }
    }

    func run() async throws {
      let result = try await clusterUp(
        ClusterUpRequest(
          dir: dir, nodes: nodes, peerPort: peerPort, apiPort: apiPort, electionTimeoutMs: electionTimeoutMs,
          wait: .seconds(wait), start: !noStart, apiTLS: apiTls),
        log: json ? { _ in } : progress)
      if json { try printJSON(result) }
    }
  }

  struct Down: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Stop the local cluster's nodes (SIGTERM, then SIGKILL after --timeout); keep their data.")

    @Option(name: .long, help: "The cluster directory.")
    var dir: String = ".teal"

    @Option(name: .long, help: "Seconds to wait after SIGTERM before SIGKILL.")
    var timeout: Int = 10

    @Flag(name: .long, help: "Also remove the cluster directory (data, certificates, token).")
    var purge = false

    @Flag(name: .long, help: "Print machine-readable JSON instead of text.")
    var json = false

    func validate() throws {
      if !(0...3600).contains(timeout) {
        throw ValidationError("--timeout must be in 0...3600 seconds, got \(timeout)")
      }
    }

    func run() async throws {
      let layout = ClusterLayout(dir: dir)
      guard FileManager.default.fileExists(atPath: layout.dir) else {
        throw CommandFailure(message: "no cluster in \(dir) (no such directory)")
      }
      let ids = try nodeIDs(in: layout)
      if ids.isEmpty, !FileManager.default.fileExists(atPath: layout.certDir) {
        throw CommandFailure(
          message: "\(dir) is not a teal cluster directory (no cluster.yaml, node or certs directory)")
      }
      var running: [(id: String, pid: pid_t)] = []
      var notRunning: [String] = []
      for id in ids {
        if let pid = runningPID(layout, id) { running.append((id, pid)) } else { notRunning.append(id) }
      }
      if !json { for process in running { progress("stopping \(process.id) (pid \(process.pid))") } }
      let killed = await stopNodes(running, timeout: .seconds(timeout))
      // Tasks still alive after their node stopped (a node killed earlier leaves its tasks running
      // until it restarts): a stopped cluster runs nothing, and --purge would delete the ledger that
      // names them. Only groups whose leader is still the process the ledger recorded are killed.
      var orphanTasks: [String] = []
      for id in ids {
        for (group, task) in liveTaskGroups(layout, id) {
          kill(-group, SIGKILL)
          orphanTasks.append(task)
        }
      }
      if !json, !orphanTasks.isEmpty {
        progress("killed \(orphanTasks.count) task(s) left by stopped nodes: \(orphanTasks.joined(separator: ", "))")
      }
      for id in ids { try? FileManager.default.removeItem(atPath: layout.pidFile(id)) }
      if purge {
        do { try FileManager.default.removeItem(atPath: layout.dir) } catch {
          throw CommandFailure(message: "cannot remove \(layout.dir): \(error.localizedDescription)")
        }
      }
      let result = ClusterDownResult(
        dir: layout.dir, stopped: running.map(\.id), killed: killed, notRunning: notRunning,
        killedTasks: orphanTasks, purged: purge)
      if json {
        try printJSON(result)
      } else {
        for id in killed { print("\(id) did not stop within \(timeout) s: killed") }
        if !notRunning.isEmpty { print("not running: \(notRunning.joined(separator: ", "))") }
        print(
          purge
            ? "removed \(layout.dir)"
            : "stopped \(running.count) node(s); data kept in \(layout.dir) (`teal cluster up --dir \(dir)` restarts it)"
        )
      }
    }
  }

  struct Status: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Show the cluster's members, leader, term and indexes (any node answers).")

    @OptionGroup var options: APIOptions

    @Flag(name: .long, help: "Read the answering node's own state instead of a linearizable read.")
    var stale = false

    func run() async throws {
      let client = try options.makeClient()
      var note: String?
      let status = try await calling { () async throws -> ClusterStatus in
        do {
          return try await client.clusterStatus(stale: stale)
        } catch let error as TealClientError where error.status == 503 && !stale {
          // No leader (an election, or no quorum): a node's own view is what there is to show.
          let answer = try await client.clusterStatus(stale: true)
          note = "no leader answers (\(error.apiError?.message ?? "503")); this is one node's own view"
          return answer
        }
      }
      await client.shutdown()
      if options.json {
        try printJSON(status)
        return
      }
      if let note { print(note) }
      print(
        "leader \(status.leader ?? "none")  term \(status.term)  commit \(status.commitIndex)  "
          + "applied \(status.appliedIndex)")
      print(
        table(
          ["ID", "ADDRESS", "STATE", "ROLE", "API"],
          status.members.map { [$0.id, $0.address, $0.state.rawValue, $0.role.rawValue, $0.api] }))
    }
  }
}

/// Progress lines of long commands appear as they happen, also through a pipe.
func progress(_ line: String) {
  print(line)
  fflush(nil)
}

/// The node ids of a cluster directory: cluster.yaml's, else the `nI` directories holding a node.yaml.
func nodeIDs(in layout: ClusterLayout) throws -> [String] {
  if let nodes = try layout.readClusterFile() { return nodes.map(\.id) }
  let entries = (try? FileManager.default.contentsOfDirectory(atPath: layout.dir)) ?? []
  return entries.filter { FileManager.default.fileExists(atPath: layout.configFile($0)) }.sorted()
}

struct ClusterDownResult: Codable {
  var dir: String
  var stopped: [String]
  var killed: [String]
  var notRunning: [String]
  /// Tasks of stopped nodes that were still running and were killed.
  var killedTasks: [String]
  var purged: Bool
}

struct ClusterUpRequest {
  var dir: String
  var nodes: Int?
  var peerPort: Int?
  var apiPort: Int?
  var electionTimeoutMs: Int?
  var wait: Duration
  var start: Bool
  /// Serve the API over TLS (https://, the node certificates; the CLI pins certs/ca.pem).
  var apiTLS = false
}

struct ClusterUpResult: Codable {
  var dir: String
  var endpoints: [String]
  /// Nodes this call started.
  var started: [String]
  /// Nodes that were running already.
  var alreadyRunning: [String]
  /// Whether this call created the directory's files.
  var created: Bool
  /// The status that ended the wait (absent with --no-start or when all were running).
  var status: ClusterStatus?
}

/// `teal cluster up`: creates the directory when needed, starts the nodes not running, waits for a
/// leader with every node up.
func clusterUp(_ request: ClusterUpRequest, log: (String) -> Void) async throws -> ClusterUpResult {
  let layout = ClusterLayout(dir: request.dir)
  var created = false
  let members: [ClusterFileNode]
  if let existing = try layout.readClusterFile() {
    members = existing
    try checkCompatible(request, existing: existing, layout: layout)
  } else {
    let plan = ClusterPlan(
      nodes: request.nodes ?? 3, peerPort: request.peerPort ?? 7000, apiPort: request.apiPort ?? 7070,
      electionTimeoutMs: request.electionTimeoutMs, apiTLS: request.apiTLS)
    _ = try writeCluster(plan, layout: layout)
    members = plan.members
    created = true
    log("created a \(plan.nodes)-node cluster in \(layout.dir)")
  }
  let endpoints = members.map(\.api)
  guard request.start else {
    return ClusterUpResult(
      dir: layout.dir, endpoints: endpoints, started: [], alreadyRunning: [], created: created, status: nil)
  }

  var alreadyRunning: [String] = []
  var started: [(id: String, pid: pid_t)] = []
  for member in members {
    if let pid = runningPID(layout, member.id) {
      alreadyRunning.append(member.id)
      log("\(member.id) is running (pid \(pid))")
    } else {
      try? FileManager.default.removeItem(atPath: layout.pidFile(member.id))
      let pid = try spawnNode(layout, member.id)
      started.append((member.id, pid))
      log("started \(member.id) on \(member.address) (pid \(pid), log \(layout.logFile(member.id)))")
    }
  }
  if started.isEmpty {
    log("the cluster in \(layout.dir) is already running; nothing changed")
    printEndpoints(endpoints, log: log)
    return ClusterUpResult(
      dir: layout.dir, endpoints: endpoints, started: [], alreadyRunning: alreadyRunning, created: created,
      status: nil)
  }

  let status = try await waitForCluster(members: members, layout: layout, spawned: started, within: request.wait)
  log("leader \(status.leader ?? "?"), term \(status.term), \(status.members.count) members up")
  printEndpoints(endpoints, log: log)
  return ClusterUpResult(
    dir: layout.dir, endpoints: endpoints, started: started.map(\.id), alreadyRunning: alreadyRunning,
    created: created, status: status)
}

private func printEndpoints(_ endpoints: [String], log: (String) -> Void) {
  log("endpoints: \(endpoints.joined(separator: " "))")
}

/// Flags that contradict the existing directory are refused rather than ignored.
private func checkCompatible(_ request: ClusterUpRequest, existing: [ClusterFileNode], layout: ClusterLayout) throws {
  let recreate = "; `teal cluster down --purge --dir \(request.dir)` first to make a new one"
  if let nodes = request.nodes, nodes != existing.count {
    throw CommandFailure(message: "\(layout.dir) holds a \(existing.count)-node cluster, not \(nodes)\(recreate)")
  }
  if let peerPort = request.peerPort, existing.contains(where: { $0.peerPort != peerPort }) {
    throw CommandFailure(
      message: "\(layout.dir) holds a cluster with peer port \(existing[0].peerPort), not \(peerPort)\(recreate)")
  }
  if let apiPort = request.apiPort, existing.contains(where: { (try? Endpoint(url: $0.api))?.port != apiPort }) {
    throw CommandFailure(
      message: "\(layout.dir) holds a cluster with API endpoint \(existing[0].api), not port \(apiPort)\(recreate)")
  }
  if request.apiTLS, existing.contains(where: { (try? Endpoint(url: $0.api))?.scheme != .https }) {
    throw CommandFailure(message: "\(layout.dir) holds a cluster whose API is plain HTTP, not TLS\(recreate)")
  }
  if let timeout = request.electionTimeoutMs, layout.electionTimeout(of: existing[0].id) != timeout {
    let current = layout.electionTimeout(of: existing[0].id).map { "\($0) ms" } ?? "the node default"
    throw CommandFailure(
      message: "\(layout.dir) holds a cluster with election timeout \(current), not \(timeout) ms\(recreate)")
  }
}

/// Polls `/v1/cluster` until some node reports a leader and every node up; fails early when a node
/// this call started exits.
private func waitForCluster(
  members: [ClusterFileNode], layout: ClusterLayout, spawned: [(id: String, pid: pid_t)], within: Duration
) async throws -> ClusterStatus {
  let endpoints = try members.map { try Endpoint(url: $0.api) }
  var configuration = TealClientConfiguration(endpoints: endpoints, token: try readToken(dir: layout.dir))
  configuration.security = try clientSecurity(for: endpoints, dir: layout.dir)
  configuration.connectTimeout = .milliseconds(500)
  configuration.requestTimeout = .seconds(2)
  configuration.overallTimeout = .seconds(3)
  configuration.maxAttempts = members.count
  let client = TealClient(configuration: configuration)
  defer { Task { await client.shutdown() } }
  let ids = Set(members.map(\.id))
  let clock = ContinuousClock()
  let deadline = clock.now + within
  var last = "no node answered yet"
  while true {
    for process in spawned {
      var status: Int32 = 0
      if waitpid(process.pid, &status, WNOHANG) == process.pid {
        let how = (status & 0x7f) == 0 ? "with status \((status >> 8) & 0xff)" : "on signal \(status & 0x7f)"
        let line = lastLogLine(layout, process.id).map { ": \($0)" } ?? ""
        try? FileManager.default.removeItem(atPath: layout.pidFile(process.id))
        throw CommandFailure(
          message: "node \(process.id) exited \(how) during startup; see \(layout.logFile(process.id))\(line)"
            + " (`teal cluster down --dir \(layout.dir)` stops the others)")
      }
    }
    do {
      let status = try await client.clusterStatus()
      let up = Set(status.members.filter { $0.state == .up }.map(\.id))
      if status.leader != nil, ids.isSubset(of: up) { return status }
      last =
        "leader \(status.leader ?? "none"), up: \(up.sorted().joined(separator: ","))"
        + (ids.subtracting(up).isEmpty ? "" : ", not yet: \(ids.subtracting(up).sorted().joined(separator: ","))")
    } catch {
      last = "\(error)"
    }
    if clock.now >= deadline {
      throw CommandFailure(
        message: "the cluster had no leader with every node up within \(within) (last: \(last)); the nodes keep "
          + "running, see \(layout.dir)/n*/node.log; `teal cluster down --dir \(layout.dir)` stops them")
    }
    try await Task.sleep(for: .milliseconds(200))
  }
}
