import Foundation
import TealCluster
import TealDeploy
import TealWire

/// The spec every test starts from, decoded from its Codable form rather than built with the
/// deployment configuration's initializers: TealCluster treats that part as opaque, and its types
/// are TealDeploy's to change.
let baseSpec: ServiceSpec = {
  let json = """
    {"name": "web", "desiredCount": 3, "productionPort": 8000, "testPort": 8001,
     "task": {"command": "/usr/bin/teal-demo", "args": ["--port", "$PORT"], "env": {"MODE": "demo"}, "port": 0,
       "healthCheck": {"path": "/health", "interval": 5000, "timeout": 2000, "healthyThreshold": 2,
         "unhealthyThreshold": 3}},
     "deployment": {"strategy": "BLUE_GREEN", "bakeTime": 300000, "lifecycleHooks": [], "alarms": [],
       "circuitBreaker": {"enable": true, "rollback": true, "failureThreshold": 3, "scaleUpTimeout": 600000}}}
    """
  do {
    return try JSONDecoder().decode(ServiceSpec.self, from: Data(json.utf8))
  } catch {
    preconditionFailure("the base spec no longer decodes: \(error)")
  }
}()

/// A spec with the given name, count, listener ports, command and environment.
func makeSpec(
  _ name: String = "web", desiredCount: Int = 3, productionPort: Int = 8000, testPort: Int = 8001,
  command: String = "/usr/bin/teal-demo", env: [String: String] = ["MODE": "demo"]
) -> ServiceSpec {
  var spec = baseSpec
  spec.name = name
  spec.desiredCount = desiredCount
  spec.productionPort = productionPort
  spec.testPort = testPort
  spec.task.command = command
  spec.task.env = env
  return spec
}

func nodeInfo(_ id: String, _ number: Int) -> NodeInfo {
  NodeInfo(id: NodeID(id), address: "127.0.0.\(number)", apiURL: "http://127.0.0.\(number):7070", peerPort: 7000)
}

/// A state plus a log: applies commands at increasing indices, stamped by `proposer` in `term`.
struct Log {
  var state = ClusterState()
  var index: UInt64 = 0
  var term: UInt64 = 1
  var now: Int64 = 1_764_576_000_000  // 2025-12-01T08:00:00Z
  var proposer = NodeID("n1")

  init(state: ClusterState = ClusterState()) { self.state = state }

  @discardableResult
  mutating func apply(
    _ command: ClusterCommand, key: String? = nil, digest: String = "d", stampTerm: UInt64? = nil,
    at time: Int64? = nil, session: ClientSessionStamp? = nil
  ) -> ClusterResult {
    index += 1
    let entry = ClusterEntry(
      stamp: CommandStamp(now: LogTime(millisecondsSinceEpoch: time ?? now), node: proposer, term: stampTerm ?? term),
      idempotency: key.map { IdempotencyRecordKey(key: $0, bodyDigest: digest) }, session: session, command: command)
    // Every entry goes through its bytes, as it does through Raft.
    let decoded = try! ClusterEntry(decoding: entry.encode())
    precondition(decoded == entry, "entry did not round-trip: \(entry)")
    return state.apply(decoded, index: index, term: term)
  }

  /// Applies and requires `.ok`, returning the response.
  @discardableResult
  mutating func ok(_ command: ClusterCommand, key: String? = nil, digest: String = "d") -> ClusterResponse {
    let result = apply(command, key: key, digest: digest)
    guard case .ok(let response) = result else { preconditionFailure("\(command.name) failed: \(result)") }
    return response
  }

  mutating func advance(milliseconds: Int64) { now += milliseconds }

  /// `now` as a log time (what the leader's clock reads).
  var time: LogTime { LogTime(millisecondsSinceEpoch: now) }

  /// Announces n1...nN.
  mutating func announce(_ count: Int) {
    for number in 1...count { ok(.announceNode(nodeInfo("n\(number)", number))) }
  }

  /// Places a task and returns its id.
  mutating func place(_ service: String, on node: String, revision: Int = 1) -> String {
    guard case .taskPlaced(let id) = ok(.placeTask(service: service, revision: revision, node: NodeID(node))) else {
      preconditionFailure("placeTask did not answer taskPlaced")
    }
    return id
  }

  /// Reports the task running and healthy on its node.
  mutating func runHealthy(_ taskID: String, port: Int = 20_000) {
    let task = state.tasks[taskID]!
    let number = task.node.rawValue.dropFirst()
    ok(
      .taskReports(
        node: task.node,
        reports: [TaskReport(taskID: taskID, state: .running, healthy: true, address: "127.0.0.\(number)", port: port)]
      ))
  }

  /// Every up node reports the current generation of every service applied.
  mutating func allNodesApplyRoutes() {
    let generations = state.services.mapValues(\.routes.generation)
    for node in state.upNodes { ok(.routesApplied(node: node, generations: generations)) }
  }

  /// Executes the placement plan once.
  mutating func executePlan() {
    for command in Placement.plan(state, now: time) { ok(command) }
  }
}
