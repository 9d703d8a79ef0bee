import ArgumentParser
import Foundation
import TealAPI
import TealClient
import TealTLS
import TealWire
import Yams

#if canImport(Glibc)
  import Glibc
#endif

// `teal cluster members|add-node|remove-node|replace-node`: membership changes through the API
// (POST / DELETE /v1/cluster/members) and, on a local cluster directory, the node's files and
// process (Docs/OPERATIONS.md "Adding, removing and replacing a node").

/// The CLI side of one membership change: talks to the API, and on a local cluster (a `--dir`
/// holding cluster.yaml and no `--endpoint`) writes and starts the node too.
struct MembershipSession {
  let options: APIOptions
  let client: TealClient
  let layout: ClusterLayout
  /// Whether the command manages local files and processes.
  let isLocal: Bool
  let quiet: Bool

  init(options: APIOptions, quiet: Bool) throws {
    self.options = options
    self.client = try options.makeClient()
    self.layout = ClusterLayout(dir: options.dir)
    self.isLocal = options.endpoint.isEmpty && FileManager.default.fileExists(atPath: layout.clusterFile)
    self.quiet = quiet
  }

  func say(_ line: String) { if !quiet { progress(line) } }

  // MARK: API

  func add(id: String, address: String, peerPort: Int?, apiPort: Int?) async throws -> MembershipView {
    try await calling {
      try await client.addMember(MemberAddRequest(id: id, address: address, peerPort: peerPort, apiPort: apiPort))
    }
  }

  func remove(id: String) async throws -> MembershipView {
    try await calling { try await client.removeMember(id) }
  }

  /// Polls the membership until `done` holds with no change in flight; fails when the last change of
  /// `id` ended with an error, or after `timeout`.
  func waitFor(
    _ what: String, id: String, timeout: Duration, _ done: (MembershipView) -> Bool
  ) async throws -> MembershipView {
    let clock = ContinuousClock()
    let deadline = clock.now + timeout
    var last = "no answer yet"
    while true {
      do {
        let view = try await client.members()
        if view.change == nil, let outcome = view.last, outcome.id == id, let error = outcome.error {
          throw CommandFailure(message: "\(outcome.action) \(id) failed: \(error)")
        }
        if view.change == nil && done(view) { return view }
        let roles = view.members.map { "\($0.id)=\($0.role.rawValue)" }.joined(separator: ",")
        last = "members \(roles)" + (view.change.map { ", in flight: \($0.action) \($0.id)" } ?? "")
      } catch let failure as CommandFailure {
        throw failure
      } catch {
        last = "\(error)"
      }
      if clock.now >= deadline {
        throw CommandFailure(
          message: "\(what) did not happen within \(timeout) (last: \(last)); the change stays in flight: "
            + "`teal cluster members` shows it, `teal cluster remove-node \(id)` aborts an add")
      }
      try await Task.sleep(for: .milliseconds(250))
    }
  }

  // MARK: Local files and processes

  func clusterNodes() throws -> [ClusterFileNode] {
    guard let nodes = try layout.readClusterFile() else {
      throw CommandFailure(message: "no cluster in \(layout.dir) (no \(layout.clusterFile))")
    }
    return nodes
  }

  /// Issues `id`'s certificate from the cluster CA (unless it exists) and writes its node.yaml as a
  /// joining node, from `template`'s configuration (ports, certificate and token paths, timeouts).
  func layOut(id: String, address: String, template: String, members: [ClusterFileNode]) throws {
    let node = try parseNodeID(id, option: "ID")
    if !FileManager.default.fileExists(atPath: "\(layout.certDir)/\(id).pem") {
      do {
        try CertificateDirectory(path: layout.certDir).addNode(node, addresses: [address])
        say("issued a certificate for \(id) (\(address)) from the cluster CA in \(layout.certDir)")
      } catch {
        throw CommandFailure(message: "cannot issue a certificate for \(id): \(error)")
      }
    }
    guard let data = FileManager.default.contents(atPath: layout.configFile(template)),
      let fields = try? Yams.load(yaml: String(decoding: data, as: UTF8.self)) as? [String: Any]
    else { throw CommandFailure(message: "cannot read \(layout.configFile(template)) (the template for \(id))") }
    for path in [layout.nodeDir(id), layout.dataDir(id), layout.taskDir(id)] {
      do { try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true) } catch {
        throw CommandFailure(message: "cannot create \(path): \(error.localizedDescription)")
      }
    }
    var text = """
      # Written by `teal cluster add-node`: a node that joins the cluster (bootstrap: false); it waits
      # for the leader to add it as a learner and send it the log.
      node: \(id)
      address: \(address)
      dataDir: \(yamlQuoted(layout.dataDir(id)))
      taskDir: \(yamlQuoted(layout.taskDir(id)))
      peers:

      """
    for member in members where member.id != id { text += "  \(member.id): \(member.address)\n" }
    text += "  \(id): \(address)\nbootstrap: false\n"
    for key in ["peerPort", "apiPort", "certDir", "tokenFile", "electionTimeoutMs", "taskPortRange"] {
      guard let value = fields[key] else { continue }
      text += "\(key): \(value is String ? yamlQuoted("\(value)") : "\(value)")\n"
    }
    try writeFile(layout.configFile(id), text)
  }

  func writeClusterFile(_ nodes: [ClusterFileNode]) throws {
    try writeFile(layout.clusterFile, clusterFileText(nodes))
  }

  func start(_ id: String) throws {
    try? FileManager.default.removeItem(atPath: layout.pidFile(id))
    let pid = try spawnNode(layout, id)
    say("started \(id) (pid \(pid), log \(layout.logFile(id)))")
  }

  func stopIfRunning(_ id: String) async {
    guard let pid = runningPID(layout, id) else { return }
    say("stopping \(id) (pid \(pid))")
    _ = await stopNodes([(id, pid)], timeout: .seconds(15))
    try? FileManager.default.removeItem(atPath: layout.pidFile(id))
  }

  /// The removed node's credentials leave the cluster directory (its id is refused by every node
  /// anyway: it is no member and never admitted again).
  func deleteCredentials(_ id: String) {
    for path in ["\(layout.certDir)/\(id).pem", "\(layout.certDir)/\(id).key"] {
      try? FileManager.default.removeItem(atPath: path)
    }
  }
}

/// The default id of the node that replaces `id`: the next identity generation, `n3` → `n3-g2` →
/// `n3-g3`, skipping ids in `taken`. Never the old id: a node whose data is gone must not vote
/// under an identity that may have voted before.
func replacementID(for id: String, taken: Set<String>) -> String {
  var base = id
  var generation = 1
  if let range = id.range(of: "-g", options: .backwards), let number = Int(id[range.upperBound...]), number >= 2,
    String(number) == id[range.upperBound...]
  {
    base = String(id[..<range.lowerBound])
    generation = number
  }
  while true {
    generation += 1
    let candidate = "\(base)-g\(generation)"
    if !taken.contains(candidate) { return candidate }
  }
}

func printMembership(_ view: MembershipView) {
  print(
    table(
      ["ID", "ROLE", "ADDRESS", "STATE", "API"],
      view.members.map { [$0.id, $0.role.rawValue, $0.address, $0.state, $0.api] }))
  if let change = view.change {
    print("in flight: \(change.action) \(change.id) since \(shortTime(change.requestedAt))")
  }
  if let last = view.last {
    print("last change: \(last.action) \(last.id)" + (last.error.map { " failed: \($0)" } ?? " done"))
  }
  if !view.removed.isEmpty { print("removed (never admitted again): \(view.removed.joined(separator: ", "))") }
}

extension Cluster {
  struct Members: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Show the Raft members (voters, learners), the membership change in flight and the last one.")

    @OptionGroup var options: APIOptions

    func run() async throws {
      let client = try options.makeClient()
      let view = try await calling { try await client.members() }
      await client.shutdown()
      if options.json { try printJSON(view) } else { printMembership(view) }
    }
  }

  struct AddNode: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      commandName: "add-node",
      abstract: "Add a node: it joins as a learner and becomes a voter once it has caught up.",
      discussion: """
        On a local cluster directory (--dir with cluster.yaml, no --endpoint) this also issues the \
        node's certificate from the cluster CA, writes DIR/ID/node.yaml (bootstrap: false), starts \
        the node and adds it to cluster.yaml. Against --endpoint it only asks the cluster to add the \
        node: start it yourself with `teal node start --config FILE --join`. Waits until the node is \
        a voter unless --no-wait. One membership change at a time.
        """)

    @Argument(help: "The new node's id; never one that was removed.") var id: String
    @Option(name: .long, help: "The IP address the node binds (its certificate carries it).") var address: String
    @Option(name: .long, help: "Its peer port. Default: the answering node's.") var peerPort: Int?
    @Option(name: .long, help: "Its API port. Default: the answering node's.") var apiPort: Int?
    @Option(name: .long, help: "Seconds to wait until it is a voter.") var wait: Int = 120
    @Flag(name: .long, help: "Return once the change is accepted.") var noWait = false
    @OptionGroup var options: APIOptions

    func validate() throws {
      _ = try parseNodeID(id, option: "ID")
      guard isIPAddressLiteral(address) else {
        throw ValidationError("--address: '\(address)' is not an IPv4 or IPv6 address literal")
      }
      if !(1...3600).contains(wait) { throw ValidationError("--wait must be in 1...3600 seconds, got \(wait)") }
    }

    func run() async throws {
      let session = try MembershipSession(options: options, quiet: options.json)
      defer { Task { [client = session.client] in await client.shutdown() } }
      let view = try await addNode(
        session, id: id, address: address, peerPort: peerPort, apiPort: apiPort, template: nil,
        wait: noWait ? nil : .seconds(wait))
      if options.json { try printJSON(view) } else { printMembership(view) }
    }
  }

  struct RemoveNode: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      commandName: "remove-node",
      abstract: "Remove a member (the leader hands leadership away first); its id is never admitted again.",
      discussion: """
        Refused for the last voter and while another change is in flight; removing a node that is \
        still being added aborts that add. On a local cluster directory the node's process is \
        stopped once it is removed, it leaves cluster.yaml and its certificate and key are deleted \
        (its directory, with its log, stays).
        """)

    @Argument(help: "The member's id.") var id: String
    @Option(name: .long, help: "Seconds to wait until it is removed.") var wait: Int = 60
    @OptionGroup var options: APIOptions

    func validate() throws {
      _ = try parseNodeID(id, option: "ID")
      if !(1...3600).contains(wait) { throw ValidationError("--wait must be in 1...3600 seconds, got \(wait)") }
    }

    func run() async throws {
      let session = try MembershipSession(options: options, quiet: options.json)
      defer { Task { [client = session.client] in await client.shutdown() } }
      let view = try await removeNode(session, id: id, wait: .seconds(wait))
      if options.json { try printJSON(view) } else { printMembership(view) }
    }
  }

  struct ReplaceNode: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      commandName: "replace-node",
      abstract: "Replace a node (e.g. whose disk died) by a new identity on the same address.",
      discussion: """
        The replacement gets a new node id (default: the next generation, n3 -> n3-g2) and a new \
        certificate, joins as a learner, is promoted once caught up; then the old id is removed and \
        never admitted again. A node whose data is gone never votes under its old identity. On a \
        local cluster directory the old process is stopped first (the new one binds its address) \
        and cluster.yaml lists the new id in its place.
        """)

    @Argument(help: "The member to replace.") var id: String
    @Option(name: .long, help: "The replacement's id. Default: the next generation of ID.") var newID: String?
    @Option(name: .long, help: "The replacement's address. Default: the old node's.") var address: String?
    @Option(name: .long, help: "Seconds to wait for each step.") var wait: Int = 120
    @OptionGroup var options: APIOptions

    func validate() throws {
      _ = try parseNodeID(id, option: "ID")
      if let newID { _ = try parseNodeID(newID, option: "--new-id") }
      if let address, !isIPAddressLiteral(address) {
        throw ValidationError("--address: '\(address)' is not an IPv4 or IPv6 address literal")
      }
      if !(1...3600).contains(wait) { throw ValidationError("--wait must be in 1...3600 seconds, got \(wait)") }
    }

    func run() async throws {
      let session = try MembershipSession(options: options, quiet: options.json)
      defer { Task { [client = session.client] in await client.shutdown() } }
      let before = try await calling { try await session.client.members() }
      guard let old = before.members.first(where: { $0.id == id }) else {
        throw CommandFailure(
          message: "no member \(id); the members are \(before.members.map(\.id).joined(separator: ", "))")
      }
      let taken = Set(before.members.map(\.id) + before.removed)
      let replacement = newID ?? replacementID(for: id, taken: taken)
      guard !taken.contains(replacement) else {
        throw CommandFailure(message: "\(replacement) is a member or was removed; choose another --new-id")
      }
      guard let host = address ?? (old.address.isEmpty ? nil : old.address) else {
        throw CommandFailure(message: "no address is known for \(id); give --address")
      }
      session.say("replacing \(id) by \(replacement) at \(host)")
      if session.isLocal { await session.stopIfRunning(id) }
      _ = try await addNode(
        session, id: replacement, address: host, peerPort: old.peerPort, apiPort: nil, template: id,
        wait: .seconds(wait))
      let view = try await removeNode(session, id: id, wait: .seconds(wait))
      if options.json { try printJSON(view) } else { printMembership(view) }
    }
  }
}

/// Adds `id` (see ``Cluster/AddNode``); `template` names the local node whose configuration the new
/// one copies (default: the first of cluster.yaml).
func addNode(
  _ session: MembershipSession, id: String, address: String, peerPort: Int?, apiPort: Int?, template: String?,
  wait: Duration?
) async throws -> MembershipView {
  var localNodes: [ClusterFileNode] = []
  if session.isLocal {
    // Refuse before any file is written: an id that is a member or was removed, a change in flight.
    let current = try await calling { try await session.client.members() }
    if current.removed.contains(id) {
      throw CommandFailure(
        message: "node id \(id) was removed from this cluster and is never admitted again; give the node a new id")
    }
    if current.members.contains(where: { $0.id == id }) { throw CommandFailure(message: "\(id) is already a member") }
    if let change = current.change {
      throw CommandFailure(
        message: "a membership change is in flight (\(change.action) \(change.id)); one change at a time")
    }
    localNodes = try session.clusterNodes()
    guard !localNodes.contains(where: { $0.id == id }) else {
      throw CommandFailure(message: "\(id) is already in \(session.layout.clusterFile)")
    }
    let source =
      template.flatMap { name in localNodes.contains { $0.id == name } ? name : nil } ?? localNodes[0].id
    try session.layOut(id: id, address: address, template: source, members: localNodes)
  }
  var view = try await session.add(id: id, address: address, peerPort: peerPort, apiPort: apiPort)
  session.say("\(id) is being added as a learner")
  if session.isLocal {
    let added = view.members.first { $0.id == id }
    let templatePort = (try? Endpoint(url: localNodes[0].api))?.port ?? 7070
    let host = address.contains(":") ? "[\(address)]" : address
    let api = added?.api.isEmpty == false ? added!.api : "http://\(host):\(apiPort ?? templatePort)"
    let port = added?.peerPort ?? peerPort ?? localNodes[0].peerPort
    try session.start(id)
    try session.writeClusterFile(localNodes + [ClusterFileNode(id: id, address: address, api: api, peerPort: port)])
  }
  if let wait {
    view = try await session.waitFor("\(id) becoming a voter", id: id, timeout: wait) { view in
      view.members.contains { $0.id == id && $0.role == .voter }
    }
    session.say("\(id) is a voter")
  }
  return view
}

/// Removes `id` (see ``Cluster/RemoveNode``) and waits until it is gone.
func removeNode(_ session: MembershipSession, id: String, wait: Duration) async throws -> MembershipView {
  _ = try await session.remove(id: id)
  session.say("removing \(id)")
  let view = try await session.waitFor("the removal of \(id)", id: id, timeout: wait) { view in
    !view.members.contains { $0.id == id }
  }
  session.say("\(id) is removed")
  if session.isLocal {
    await session.stopIfRunning(id)
    let nodes = try session.clusterNodes()
    if nodes.contains(where: { $0.id == id }) { try session.writeClusterFile(nodes.filter { $0.id != id }) }
    session.deleteCredentials(id)
  }
  return view
}

func isIPAddressLiteral(_ text: String) -> Bool {
  var v4 = in_addr()
  var v6 = in6_addr()
  return inet_pton(AF_INET, text, &v4) == 1 || inet_pton(AF_INET6, text, &v6) == 1
}
