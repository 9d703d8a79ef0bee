// The cost of one commit and of a snapshot by number of services: ClusterState with 5 nodes,
// `services` services of 2 tasks each (placed, reported running and healthy, routes applied on
// every node) and one service in ten with a deployment in flight (waiting in a canary step or
// in bake, so it stays there). Every entry goes through its bytes, as Raft hands it over. Times are
// CPU time of this process (the machine is shared), per operation.

import Foundation
import TealCluster
import TealDeploy
import TealWire

/// CPU seconds of this process.
func cpuSeconds() -> Double {
  var time = timespec()
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &time)
  return Double(time.tv_sec) + Double(time.tv_nsec) / 1e9
}

/// A ClusterState driven by hand: every entry stamped by n1 in term 1, a millisecond apart.
struct CostState {
  var state = ClusterState()
  var index: UInt64 = 0
  var now: Int64 = 1_767_225_600_000
  let nodes = (1...5).map { NodeID("n\($0)") }

  @discardableResult
  mutating func apply(_ command: ClusterCommand) -> ClusterResult {
    index += 1
    now += 1
    let entry = ClusterEntry(
      stamp: CommandStamp(now: LogTime(millisecondsSinceEpoch: now), node: nodes[0], term: 1), command: command)
    do {
      return try ClusterResult(decoding: state.apply(bytes: entry.encode(), index: index, term: 1))
    } catch {
      preconditionFailure("an applied result does not decode: \(error)")
    }
  }

  /// Builds the state: nodes, services, their tasks healthy and routed, the deployments in flight.
  init(services: Int) {
    for (offset, node) in nodes.enumerated() {
      apply(
        .announceNode(
          NodeInfo(
            id: node, address: "127.0.0.\(offset + 1)", apiURL: "http://127.0.0.\(offset + 1):7070", peerPort: 7000)))
    }
    for index in 0..<services {
      let spec = ScaleCost.spec(index, version: "v1", deploying: false)
      guard case .ok = apply(.createService(spec)) else { preconditionFailure("createService \(spec.name) refused") }
    }
    converge(rounds: 3)
    for index in stride(from: 0, to: services, by: 10) {
      let spec = ScaleCost.spec(index, version: "v2", deploying: true)
      guard case .ok = apply(.submitDeployment(service: spec.name, spec: spec, supersede: false)) else {
        preconditionFailure("submitDeployment \(spec.name) refused")
      }
    }
    converge(rounds: 12)
  }

  /// Rounds of what the nodes and the leader would do: placement, task reports (running and
  /// healthy), stopped tasks, routes applied on every node, due wake-ups; a second passes per round.
  mutating func converge(rounds: Int) {
    for _ in 0..<rounds {
      for command in Placement.plan(state, now: state.logTime) { apply(command) }
      for (offset, node) in nodes.enumerated() {
        let reports = state.tasks(on: node).filter { $0.desired == .running && !($0.state == .running && $0.healthy) }
          .map {
            TaskReport(taskID: $0.id, state: .running, healthy: true, address: "127.0.0.\(offset + 1)", port: 20_000)
          }
        if !reports.isEmpty { apply(.taskReports(node: node, reports: reports)) }
      }
      for task in state.tasks.values.sorted(by: { $0.id < $1.id }) where task.desired == .stopping {
        apply(.taskStopped(node: task.node, taskID: task.id))
      }
      for node in nodes {
        var generations: [String: UInt64] = [:]
        for (name, service) in state.services
        where (state.nodes[node.rawValue]?.routesApplied[name] ?? 0) < service.routes.generation {
          generations[name] = service.routes.generation
        }
        if !generations.isEmpty { apply(.routesApplied(node: node, generations: generations)) }
      }
      for deployment in state.allDeployments() where deployment.isActive {
        if let wake = deployment.nextWakeup, wake.millisecondsSinceEpoch <= now {
          apply(.deploymentWakeUp(service: deployment.service, deploymentID: deployment.id))
        }
      }
      now += 1000
    }
  }
}

enum ScaleCost {
  /// Service `index`: 2 tasks; the deployed spec (v2) is CANARY with an hour's canary bake (every
  /// other one) or BLUE_GREEN with an hour's bake, so the deployment stays in flight.
  static func spec(_ index: Int, version: String, deploying: Bool) -> ServiceSpec {
    let canary = deploying && (index / 10) % 2 == 0
    var configuration = DeploymentConfiguration(
      strategy: canary ? .CANARY : .BLUE_GREEN, bakeTime: .hours(1), abortScaleDownDelay: .seconds(1))
    if canary { configuration.canary = CanaryConfiguration(canaryPercent: 10, canaryBakeTime: .hours(1)) }
    return ServiceSpec(
      name: String(format: "svc-%05d", index), desiredCount: 2, productionPort: 10_000 + 2 * index,
      testPort: 10_001 + 2 * index,
      task: TaskSpec(
        command: "/usr/bin/teal-demo", args: ["--port", "$PORT"], env: ["VERSION": version, "MODE": "demo"],
        port: 9000,
        healthCheck: HealthCheckConfiguration(
          path: "/health", interval: .seconds(5), timeout: .seconds(2), healthyThreshold: 2, unhealthyThreshold: 3)),
      deployment: configuration)
  }
}

struct CostRow {
  var services: Int
  var tasks: Int
  var events: Int
  var deployments: String
  var wakeUp: Double
  var healthFlip: Double
  var scale: Double
  var liveness: Double
  var snapshotBytes: Int
  var encode: Double
  var decode: Double
}

/// Median of `repeats` runs of `body`, each timed in CPU seconds.
func medianCPU(_ repeats: Int, _ body: () -> Void) -> Double {
  var times: [Double] = []
  for _ in 0..<repeats {
    let start = cpuSeconds()
    body()
    times.append(cpuSeconds() - start)
  }
  return times.sorted()[times.count / 2]
}

func measure(services: Int, operations: Int) -> CostRow {
  var built = CostState(services: services)
  var stages: [String: Int] = [:]
  for deployment in built.state.allDeployments() {
    stages["\(deployment.status) \(deployment.stage?.rawValue ?? "-")", default: 0] += 1
  }
  let inFlight = stages.keys.sorted().map { "\(stages[$0] ?? 0) \($0)" }.joined(separator: ", ")
  // A deployment step: a wake-up of a deploying service (through the engine and the service's
  // derived state); a service update: one task's health flips (a new routes generation, the
  // deployment fed); a request: a scale of a service that is not deploying.
  let deploying = built.state.allDeployments().filter(\.isActive)
  guard let target = deploying.first else { preconditionFailure("no deployment in flight at \(services) services") }
  guard let flipped = built.state.tasks(service: target.service).first(where: { $0.isRoutable }) else {
    preconditionFailure("no routable task of \(target.service)")
  }
  let quiet = String(format: "svc-%05d", 1)
  // The snapshot first, of the state as built (the commits below add events to its history).
  let events = built.state.history.events.count
  let bytes = built.state.snapshot()
  let encode = medianCPU(5) { _ = built.state.snapshot() }
  let decode = medianCPU(5) {
    do { _ = try ClusterState(snapshot: bytes) } catch {
      preconditionFailure("the snapshot does not restore: \(error)")
    }
  }
  let wakeUp = medianCPU(3) {
    for _ in 0..<operations { built.apply(.deploymentWakeUp(service: target.service, deploymentID: target.id)) }
  }
  var healthy = true
  let flip = medianCPU(3) {
    for _ in 0..<operations {
      healthy.toggle()
      built.apply(
        .taskReports(
          node: flipped.node,
          reports: [
            TaskReport(
              taskID: flipped.id, state: .running, healthy: healthy, address: flipped.address, port: flipped.port)
          ]))
    }
  }
  var count = 2
  let scale = medianCPU(3) {
    for _ in 0..<operations {
      count = count == 2 ? 3 : 2
      built.apply(.scaleService(service: quiet, desiredCount: count))
    }
  }
  // A liveness change re-derives every service: one nodeDown on a uniquely held copy each time (a
  // state decoded from the snapshot, so the measurement pays no copy-on-write of a shared state).
  var liveness: [Double] = []
  for _ in 0..<3 {
    var copy = CostState(services: 0)
    do { copy.state = try ClusterState(snapshot: bytes) } catch { preconditionFailure("\(error)") }
    copy.index = built.index
    copy.now = built.now
    let start = cpuSeconds()
    copy.apply(.nodeDown(node: NodeID("n5"), incarnation: 2))
    liveness.append(cpuSeconds() - start)
  }
  return CostRow(
    services: services, tasks: built.state.tasks.count, events: events, deployments: inFlight,
    wakeUp: wakeUp / Double(operations), healthFlip: flip / Double(operations), scale: scale / Double(operations),
    liveness: liveness.sorted()[1], snapshotBytes: bytes.count, encode: encode, decode: decode)
}

func runCost(_ options: [String]) {
  let sizes = options.compactMap(Int.init)
  let counts = sizes.isEmpty ? [10, 100, 500, 1000, 2000] : sizes
  let operations = 500
  print("cluster state cost: 5 nodes, 2 tasks per service, 1 service in 10 deploying; CPU time; load \(loadAverage())")
  var rows: [CostRow] = []
  for services in counts {
    let row = measure(services: services, operations: operations)
    rows.append(row)
    print(
      String(
        format:
          "%5d services, %5d tasks, %5d events: wake-up %.1f µs, health flip %.1f µs, scale %.1f µs, nodeDown %.2f ms; "
          + "snapshot %.2f MB, encode %.1f ms, decode+validate %.1f ms",
        row.services, row.tasks, row.events, row.wakeUp * 1e6, row.healthFlip * 1e6, row.scale * 1e6,
        row.liveness * 1e3,
        Double(row.snapshotBytes) / 1e6, row.encode * 1e3, row.decode * 1e3) + " (deployments: \(row.deployments))")
  }
  // Growth: the exponent k of cost ~ services^k between the smallest and largest size above 10.
  let fitted = rows.filter { $0.services >= 100 }
  if let first = fitted.first, let last = fitted.last, last.services > first.services {
    let span = log(Double(last.services) / Double(first.services))
    func k(_ a: Double, _ b: Double) -> String { String(format: "%.2f", log(b / a) / span) }
    print(
      "growth from \(first.services) to \(last.services) services (cost ~ services^k): wake-up k=\(k(first.wakeUp, last.wakeUp)), "
        + "health flip k=\(k(first.healthFlip, last.healthFlip)), scale k=\(k(first.scale, last.scale)), "
        + "nodeDown k=\(k(first.liveness, last.liveness)), snapshot bytes k=\(k(Double(first.snapshotBytes), Double(last.snapshotBytes))), "
        + "encode k=\(k(first.encode, last.encode)), decode k=\(k(first.decode, last.decode))")
  }
  print("load \(loadAverage())")
}
