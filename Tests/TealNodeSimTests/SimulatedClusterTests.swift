// The node's control plane as a whole cluster in one process (TealNodeTesting): the real Raft,
// ClusterLog, reconcilers and leader controllers over an in-memory network, simulated disks, a manual
// clock and in-memory tasks. Every wait is bounded in simulated time; a test takes seconds.

import Foundation
import TealCluster
import TealDeploy
import TealLoadBalancer
import TealNode
import TealNodeTesting
import TealWire
import Testing

/// A service spec (decoded from its Codable form, as a client would send it).
func simSpec(
  _ name: String = "web", desiredCount: Int = 3, version: String = "v1", strategy: String = "BLUE_GREEN",
  bakeMilliseconds: Int = 2000, canaryBakeMilliseconds: Int = 2000
) -> ServiceSpec {
  let json = """
    {"name": "\(name)", "desiredCount": \(desiredCount), "productionPort": 8000, "testPort": 8001,
     "task": {"command": "/usr/bin/teal-demo", "args": ["--port", "$PORT"], "env": {"VERSION": "\(version)"},
       "port": 0, "healthCheck": {"path": "/health", "interval": 1000, "timeout": 500, "healthyThreshold": 1,
         "unhealthyThreshold": 3}},
     "deployment": {"strategy": "\(strategy)", "bakeTime": \(bakeMilliseconds), "lifecycleHooks": [], "alarms": [],
       "canary": {"canaryPercent": 34, "canaryBakeTime": \(canaryBakeMilliseconds)},
       "circuitBreaker": {"enable": true, "rollback": true, "failureThreshold": 3, "scaleUpTimeout": 600000}}}
    """
  do {
    var spec = try JSONDecoder().decode(ServiceSpec.self, from: Data(json.utf8))
    if strategy != "CANARY" { spec.deployment.canary = nil }
    return spec
  } catch {
    preconditionFailure("the simulated spec does not decode: \(error)")
  }
}

extension SimulatedCluster {
  /// Boots the cluster and waits for a ready leader every running node agrees on.
  func startWithLeader() async throws -> NodeID {
    try await start()
    try await run(until: "a ready leader every node follows") { await self.agreedLeader() != nil }
    return try #require(await agreedLeader())
  }

  /// The ready leader, when every running node names it in the same term.
  func agreedLeader() async -> NodeID? {
    guard let leader = await leader() else { return nil }
    let views = await leaderships()
    guard let term = views[leader]?.term else { return nil }
    return views.values.allSatisfy({ $0.leader == leader && $0.term == term }) ? leader : nil
  }

  /// True when every running node applied the same index and holds the same state hash.
  func converged() async -> Bool {
    let hashes = await hashes()
    guard hashes.count == running.count, let first = hashes.values.first else { return false }
    return hashes.values.allSatisfy { $0.applied == first.applied && $0.hash == first.hash }
  }

  /// The leader's view of `service`'s tasks that should run and do, healthy, by node.
  func healthyTasks(of service: String, on node: NodeID) async -> [ClusterTask] {
    guard let state = await state(node) else { return [] }
    return state.tasks.values.filter {
      $0.service == service && $0.desired == .running && $0.state == .running && $0.healthy
    }
  }
}

@Suite("A simulated cluster (TealNodeTesting)")
struct SimulatedClusterTests {
  @Test("three nodes elect one leader, and every node announces itself up")
  func threeNodesElectALeader() async throws {
    let cluster = SimulatedCluster(nodes: 3, seed: 11)
    let leader = try await cluster.startWithLeader()
    #expect(cluster.ids.contains(leader))
    try await cluster.run(until: "every node announced and up") {
      guard let state = await cluster.state(leader) else { return false }
      return cluster.ids.allSatisfy { state.nodes[$0.rawValue]?.isUp == true }
    }
    // Exactly one node leads.
    let leaders = await cluster.leaderships().filter { $0.value.role == .leader }
    #expect(leaders.count == 1)
    #expect(cluster.clock.elapsed < .seconds(30))
    await cluster.shutdown()
  }

  @Test("a service created through a follower is committed on every node with equal state hashes, its tasks spread")
  func serviceThroughAFollower() async throws {
    let cluster = SimulatedCluster(nodes: 3, seed: 12)
    let leader = try await cluster.startWithLeader()
    let follower = try #require(cluster.ids.first { $0 != leader })
    let result = try await cluster.submit(.createService(simSpec()), through: follower)
    guard case .ok(.serviceCreated(let name, _)) = result else {
      Issue.record("createService answered \(result)")
      return
    }
    #expect(name == "web")
    try await cluster.run(until: "three healthy tasks of web, one per node") {
      let tasks = await cluster.healthyTasks(of: "web", on: leader)
      return tasks.count == 3 && Set(tasks.map(\.node)).count == 3
    }
    try await cluster.run(until: "every node applied the same state") { await cluster.converged() }
    let hashes = await cluster.hashes()
    #expect(Set(hashes.values.map(\.hash)).count == 1)
    for id in cluster.ids {
      let state = try #require(await cluster.state(id))
      #expect(state.services["web"] != nil, "web is missing on \(id)")
    }
    // Every node's balancer serves the three tasks (each on its own node's address).
    try await cluster.run(until: "every balancer routes to the three tasks") {
      cluster.ids.allSatisfy { cluster.balancer($0).productionTargets(of: "web").count == 3 }
    }
    let targets = cluster.balancer(leader).productionTargets(of: "web")
    #expect(Set(targets.map(\.host)) == ["127.0.0.1", "127.0.0.2", "127.0.0.3"])
    // Each node's in-memory runner runs exactly the task placed on it.
    for id in cluster.ids {
      let live = await cluster.tasks(id).liveTaskIDs
      let placed = await cluster.healthyTasks(of: "web", on: leader).filter { $0.node == id }.map(\.id)
      #expect(live == placed, "\(id) runs \(live), placed \(placed)")
    }
    await cluster.shutdown()
  }

  @Test("a node that gossip declares dead is committed down and its tasks are replaced on the others")
  func nodeDownTasksReplaced() async throws {
    let cluster = SimulatedCluster(nodes: 3, seed: 13)
    let leader = try await cluster.startWithLeader()
    _ = try await cluster.submit(.createService(simSpec()), through: leader)
    try await cluster.run(until: "three healthy tasks, one per node") {
      let tasks = await cluster.healthyTasks(of: "web", on: leader)
      return tasks.count == 3 && Set(tasks.map(\.node)).count == 3
    }
    let victim = try #require(cluster.ids.first { $0 != leader })
    await cluster.crash(victim)
    try await cluster.run(until: "\(victim) committed down") {
      await cluster.state(leader)?.nodes[victim.rawValue]?.isUp == false
    }
    try await cluster.run(until: "three healthy tasks on the two live nodes") {
      let tasks = await cluster.healthyTasks(of: "web", on: leader)
      return tasks.count == 3 && tasks.allSatisfy { $0.node != victim }
    }
    let state = try #require(await cluster.state(leader))
    let survivors = cluster.ids.filter { $0 != victim }
    #expect(Set(state.tasks.values.filter { $0.desired == .running }.map(\.node)).isSubset(of: Set(survivors)))
    // The survivors' balancers no longer route to the dead node.
    try await cluster.run(until: "no balancer routes to \(victim)") {
      survivors.allSatisfy { node in
        let targets = cluster.balancer(node).productionTargets(of: "web")
        return targets.count == 3 && !targets.contains { $0.host == cluster.configuration(victim).address }
      }
    }
    await cluster.shutdown()
  }

  @Test(
    "a deployment survives its controller's leader crashing mid-bake and succeeds under the new leader",
    arguments: ["BLUE_GREEN", "CANARY"])
  func deploymentSurvivesLeaderCrash(strategy: String) async throws {
    let cluster = SimulatedCluster(nodes: 3, seed: strategy == "CANARY" ? 15 : 14)
    let leader = try await cluster.startWithLeader()
    _ = try await cluster.submit(.createService(simSpec()), through: leader)
    try await cluster.run(until: "three healthy tasks of revision 1") {
      await cluster.healthyTasks(of: "web", on: leader).count == 3
    }
    let green = simSpec(version: "v2", strategy: strategy, bakeMilliseconds: 3000, canaryBakeMilliseconds: 2000)
    let follower = try #require(cluster.ids.first { $0 != leader })
    let answer = try await cluster.submit(
      .submitDeployment(service: "web", spec: green, supersede: false), through: follower)
    guard case .ok(.deploymentSubmitted(_, let id, let revision)) = answer else {
      Issue.record("submitDeployment answered \(answer)")
      return
    }
    #expect(revision.number == 2)
    // Mid-bake (the canary's or the final one), the controller's leader crashes.
    let bakeStage: LifecycleStage = strategy == "CANARY" ? .PRODUCTION_TRAFFIC_SHIFT : .BAKE_TIME
    try await cluster.run(until: "the deployment bakes in \(bakeStage)") {
      guard let deployment = await cluster.state(leader)?.deployment(id: id), deployment.stage == bakeStage,
        case .waiting = deployment.gate
      else { return false }
      return true
    }
    let before = try #require(await cluster.state(leader)?.deployment(id: id))
    #expect(before.isActive)
    await cluster.crash(leader)
    try await cluster.run(until: "a new leader") {
      guard let next = await cluster.agreedLeader() else { return false }
      return next != leader
    }
    let next = try #require(await cluster.agreedLeader())
    try await cluster.run(until: "the deployment is SUCCESSFUL", within: .seconds(120)) {
      guard let state = await cluster.state(next) else { return false }
      return state.pastDeployments["web"]?.contains { $0.id == id && $0.status == .SUCCESSFUL } == true
        || state.deployment(id: id)?.status == .SUCCESSFUL
    }
    // Green serves: three healthy tasks of revision 2 on the two live nodes, blue gone.
    try await cluster.run(until: "three healthy revision-2 tasks and no revision-1 task") {
      guard let state = await cluster.state(next) else { return false }
      let running = state.tasks.values.filter { $0.service == "web" && $0.desired == .running }
      return running.count == 3 && running.allSatisfy { $0.revision.number == 2 && $0.healthy && $0.node != leader }
    }
    let service = try #require(await cluster.state(next)?.services["web"])
    #expect(service.currentRevision == 2)
    try await cluster.run(until: "the survivors agree") { await cluster.converged() }
    await cluster.shutdown()
  }
}
