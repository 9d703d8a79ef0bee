// Measures ClusterState at a realistic size: apply throughput (bytes in, bytes out, as Raft calls
// it), placement planning, and snapshot size and time with full idempotency records.
// Run: swift run -c release ClusterBenchmark [services] [tasksPerService] [idempotencyKeys]
// Figures are CPU time of this process, so a loaded machine slows the run but not the figures much.

import Foundation
import TealCluster
import TealDeploy
import TealWire

let arguments = CommandLine.arguments.dropFirst().compactMap(Int.init)
let serviceCount = arguments.count > 0 ? arguments[0] : 100
let tasksPerService = arguments.count > 1 ? arguments[1] : 10
let idempotencyKeys = arguments.count > 2 ? arguments[2] : IdempotencyTable.defaultCapacity
let nodeCount = 5

@MainActor func spec(_ name: String, _ index: Int) -> ServiceSpec {
  let base = try! JSONDecoder().decode(
    ServiceSpec.self,
    from: Data(
      """
      {"name":"x","desiredCount":1,"productionPort":1,"testPort":2,
       "task":{"command":"/usr/bin/teal-demo","args":["--port","$PORT"],"env":{"MODE":"demo","LEVEL":"info"},"port":9000,
        "healthCheck":{"path":"/health","interval":5000,"timeout":2000,"healthyThreshold":2,"unhealthyThreshold":3}},
       "deployment":{"strategy":"BLUE_GREEN","bakeTime":300000,"lifecycleHooks":[],"alarms":[],
        "circuitBreaker":{"enable":true,"rollback":true,"failureThreshold":3,"scaleUpTimeout":600000}}}
      """.utf8))
  var result = base
  result.name = name
  result.desiredCount = tasksPerService
  result.productionPort = 10_000 + index * 2
  result.testPort = 10_001 + index * 2
  return result
}

var state = ClusterState()
var index: UInt64 = 0
var now: Int64 = 1_764_576_000_000
@MainActor func apply(_ command: ClusterCommand, key: String? = nil) -> ClusterResult {
  index += 1
  now += 1
  let entry = ClusterEntry(
    stamp: CommandStamp(now: LogTime(millisecondsSinceEpoch: now), node: NodeID("n1"), term: 1),
    idempotency: key.map { IdempotencyRecordKey(key: $0, bodyDigest: "digest") }, command: command)
  return try! ClusterResult(decoding: state.apply(bytes: entry.encode(), index: index, term: 1))
}

/// CPU seconds of this process spent in `body` (not wall time: the machine is shared).
@MainActor func seconds(_ body: () -> Void) -> Double {
  func cpu() -> Double {
    var time = timespec()
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &time)
    return Double(time.tv_sec) + Double(time.tv_nsec) / 1e9
  }
  let start = cpu()
  body()
  return cpu() - start
}

for number in 1...nodeCount {
  _ = apply(
    .announceNode(
      NodeInfo(
        id: NodeID("n\(number)"), address: "127.0.0.\(number)", apiURL: "http://127.0.0.\(number):7070", peerPort: 7000)
    ))
}
let setup = seconds {
  for offset in 0..<serviceCount { _ = apply(.createService(spec("svc-\(offset)", offset))) }
  for command in Placement.plan(state, now: state.logTime) { _ = apply(command) }
  for task in state.tasks.values.sorted(by: { $0.sequence < $1.sequence }) {
    _ = apply(
      .taskReports(
        node: task.node,
        reports: [TaskReport(taskID: task.id, state: .running, healthy: true, address: "127.0.0.1", port: 20_000)]))
  }
}
print(
  "state: \(nodeCount) nodes, \(state.services.count) services, \(state.tasks.count) tasks (setup \(String(format: "%.2f", setup)) s)"
)

let planTime = seconds { for _ in 0..<20 { _ = Placement.plan(state, now: state.logTime) } } / 20
print(String(format: "Placement.plan (converged): %.2f ms", planTime * 1000))

let reports = 5000
let tasks = state.tasks.values.sorted { $0.sequence < $1.sequence }
let reportTime = seconds {
  for round in 0..<reports {
    let task = tasks[round % tasks.count]
    _ = apply(
      .taskReports(
        node: task.node,
        reports: [
          TaskReport(taskID: task.id, state: .running, healthy: round % 2 == 1, address: "127.0.0.1", port: 20_000)
        ]))
  }
}
print(
  String(format: "apply taskReports (health flip, new routes generation): %.0f entries/s", Double(reports) / reportTime)
)

let routeTime = seconds {
  for round in 0..<reports {
    let name = "svc-\(round % serviceCount)"
    _ = apply(
      .routesApplied(
        node: NodeID("n\(1 + round % nodeCount)"), generations: [name: state.services[name]!.routes.generation]))
  }
}
print(String(format: "apply routesApplied: %.0f entries/s", Double(reports) / routeTime))

let keyed = min(idempotencyKeys, IdempotencyTable.defaultCapacity)
let keyTime = seconds {
  for number in 0..<keyed {
    _ = apply(
      .scaleService(service: "svc-\(number % serviceCount)", desiredCount: tasksPerService), key: "key-\(number)")
  }
}
print(
  String(
    format: "apply scaleService with a new idempotency key: %.0f entries/s (%d keys)", Double(keyed) / keyTime, keyed))

var bytes: [UInt8] = []
let snapshotTime = seconds { bytes = state.snapshot() }
var restored = ClusterState()
let restoreTime = seconds { restored = try! ClusterState(snapshot: bytes) }
precondition(restored == state, "restored state differs")
var hash = ""
let hashTime = seconds { hash = state.stateHash }
print(
  String(
    format: "snapshot: %.1f MB, write %.2f s, read %.2f s, stateHash %.2f s (%@…)", Double(bytes.count) / 1e6,
    snapshotTime, restoreTime, hashTime, String(hash.prefix(12))))
