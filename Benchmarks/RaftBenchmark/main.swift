// RaftBenchmark: failover time and commit throughput of RaftCore. Run in release mode:
//   swift run -c release RaftBenchmark [failover|throughput|sim|shellsim] [options]
// Results and method: Docs/RAFT.md.
import Foundation
import TealRaft
import TealRaftSim
import TealWire

// MARK: - Helpers

func cpuNanoseconds() -> UInt64 {
  var ts = timespec()
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts)
  return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}

func wallNanoseconds() -> UInt64 {
  var ts = timespec()
  clock_gettime(CLOCK_MONOTONIC, &ts)
  return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}

func percentile(_ sorted: [UInt64], _ p: Double) -> UInt64 {
  guard !sorted.isEmpty else { return 0 }
  let rank = Int((p / 100 * Double(sorted.count)).rounded(.up)) - 1
  return sorted[min(max(rank, 0), sorted.count - 1)]
}

func argument(_ name: String, default value: Int) -> Int {
  let args = CommandLine.arguments
  if let i = args.firstIndex(of: name), i + 1 < args.count, let v = Int(args[i + 1]) { return v }
  return value
}

// MARK: - (a) Failover from the simulation

/// Crashes the leader `crashes` times and measures simulated time until another node leads and
/// has committed an entry of its term (it can then commit clients' commands).
func failover(
  nodes: Int, crashes: Int, delay: ClosedRange<Int>, seed: UInt64,
  tickMillis: Int = RaftOptions.defaultTickMilliseconds
) {
  var p = SimulationParameters(seed: seed)
  p.nodeCount = nodes
  // Heartbeat 50 ms, election timeout randomized in [300, 600) ms, counted in ticks.
  p.options = RaftOptions()
  p.options.heartbeatTicks = 50 / tickMillis
  p.options.electionTicks = 300 / tickMillis
  p.tickMillis = UInt64(tickMillis)
  p.faults = false
  p.clients = 0
  p.membershipChanges = false
  p.networkDelayMillis = delay
  var sim = RaftSimulation(p)
  var random = SimRandom(seed: seed ^ 0xfeed)
  sim.run(until: 2_000)
  var samples: [UInt64] = []
  for _ in 0..<crashes {
    // Let the cluster run healthy for a while, then crash the leader at a random instant.
    sim.run(until: sim.now + UInt64(random.within(500...1_500)))
    guard let leader = sim.readyLeader else {
      print("no leader before a crash; stopping")
      break
    }
    let crashedAt = sim.now
    sim.crash(leader)
    while true {
      sim.stepOnce()
      if let l = sim.readyLeader, l != leader { break }
    }
    samples.append(sim.now - crashedAt)
    sim.restart(leader)
  }
  samples.sort()
  let mean = Double(samples.reduce(0, +)) / Double(max(samples.count, 1))
  print(
    "failover \(nodes) nodes, \(tickMillis) ms ticks, delay \(delay) ms, \(samples.count) crashes: p50 \(percentile(samples, 50)) ms, "
      + "p99 \(percentile(samples, 99)) ms, max \(samples.last ?? 0) ms, mean \(Int(mean)) ms")
  if !sim.violations.isEmpty { print("violations: \(sim.violations)") }
}

/// Runs a healthy cluster for `minutes` simulated minutes and counts leader elections beyond the
/// first one.
func spuriousElections(nodes: Int, minutes: Int, delay: ClosedRange<Int>, seed: UInt64) {
  var p = SimulationParameters(seed: seed)
  p.nodeCount = nodes
  p.options = RaftOptions()
  p.tickMillis = UInt64(RaftOptions.defaultTickMilliseconds)
  p.faults = false
  p.clients = 3
  p.membershipChanges = false
  p.networkDelayMillis = delay
  var sim = RaftSimulation(p)
  sim.run(until: UInt64(minutes) * 60_000)
  print(
    "healthy \(nodes) nodes, delay \(delay) ms, \(minutes) simulated minutes: \(sim.elections - 1) spurious elections"
      + (sim.violations.isEmpty ? "" : " violations: \(sim.violations)"))
}

// MARK: - (b) Commit throughput of RaftCore

/// Three RaftCores in one process, messages delivered at once, nothing written to disk: measures
/// the CPU cost of consensus itself per committed entry.
func throughput(entries total: Int, batch: Int, payload: Int) {
  let ids = [NodeID("n1"), NodeID("n2"), NodeID("n3")]
  let config = RaftConfiguration(voters: Set(ids))
  var options = RaftOptions()
  options.maxEntriesPerAppend = 1_024
  var cores: [RaftCore] = ids.enumerated().map { i, id in
    try! RaftCore(id: id, options: options, bootstrap: config, randomSeed: UInt64(i + 1))
  }
  var queue: [RaftMessage] = []
  var applied = 0
  func index(of id: NodeID) -> Int { id == ids[0] ? 0 : (id == ids[1] ? 1 : 2) }
  func drain(_ i: Int, _ cores: inout [RaftCore], _ queue: inout [RaftMessage], _ applied: inout Int) {
    while true {
      let r = cores[i].ready()
      if r.isEmpty { return }
      queue.append(contentsOf: r.messages)
      queue.append(contentsOf: r.messagesAfterPersist)
      if i == 0 { applied += r.committedEntries.lazy.filter { $0.kind == .command }.count }
      cores[i].advance(r)
    }
  }
  func deliverAll(_ cores: inout [RaftCore], _ queue: inout [RaftMessage], _ applied: inout Int) {
    var head = 0
    while head < queue.count {
      let m = queue[head]
      head += 1
      let to = index(of: m.to)
      cores[to].step(m)
      drain(to, &cores, &queue, &applied)
      if head > 4_096 {
        queue.removeFirst(head)
        head = 0
      }
    }
    queue.removeAll(keepingCapacity: true)
  }
  while cores[0].role != .leader {
    cores[0].tick()
    drain(0, &cores, &queue, &applied)
    deliverAll(&cores, &queue, &applied)
  }
  deliverAll(&cores, &queue, &applied)
  let data = [UInt8](repeating: 0x5A, count: payload)
  let startCPU = cpuNanoseconds()
  let startWall = wallNanoseconds()
  var proposed = 0
  while applied < total {
    for _ in 0..<min(batch, total - proposed) where proposed < total {
      _ = try! cores[0].propose(data)
      proposed += 1
    }
    drain(0, &cores, &queue, &applied)
    deliverAll(&cores, &queue, &applied)
  }
  let cpu = cpuNanoseconds() - startCPU
  let wall = wallNanoseconds() - startWall
  let rate = Double(total) / (Double(wall) / 1e9)
  print(
    "throughput 3 nodes, batch \(batch), \(payload)-byte entries: \(Int(rate)) entries/s, "
      + "\(cpu / UInt64(total)) ns CPU per entry (all three nodes), \(total) entries")
}

// MARK: - Simulation volume

/// Runs `seeds` seeds from `first` through `run` (one seed's steps and violations), printing
/// progress every `progressEvery` seeds, each violating seed with its replay command, and the total
/// with wall and CPU time: the loop of both simulations below.
func runSeeds(
  _ name: String, seeds: Int, first: Int, progressEvery: Int, replay: (variable: String, suite: String),
  _ run: (Int) -> (steps: Int, violations: [String], label: String)
) {
  let start = wallNanoseconds()
  let cpuStart = cpuNanoseconds()
  var totalSteps = 0
  var failures = 0
  for seed in first..<(first + seeds) {
    let report = run(seed)
    totalSteps += report.steps
    if (seed - first + 1) % progressEvery == 0 {
      print("  \(seed - first + 1) seeds, \(failures) violations so far")
      fflush(nil)
    }
    if !report.violations.isEmpty {
      failures += 1
      print("seed \(seed)\(report.label) violated: \(report.violations.joined(separator: "\n"))")
      print("replay: \(replay.variable)=\(seed) swift test --filter \(replay.suite)")
      fflush(nil)
    }
  }
  let seconds = Double(wallNanoseconds() - start) / 1e9
  let cpu = Double(cpuNanoseconds() - cpuStart) / 1e9
  print(
    "(\(String(format: "%.1f", seconds)) s wall, \(String(format: "%.1f", cpu)) s CPU, "
      + "\(String(format: "%.1f", Double(seeds) / seconds)) seeds/s)")
  print("\(name) \(seeds) seeds, \(totalSteps) steps, \(failures) violations")
}

func simulate(seeds: Int, first: Int, steps: Int) {
  runSeeds(
    "simulated", seeds: seeds, first: first, progressEvery: 10_000, replay: ("TEAL_SIM_SEED", "SimulationTests")
  ) { seed in
    var p = SimulationParameters(seed: UInt64(seed))
    p.steps = steps
    var sim = RaftSimulation(p)
    let report = sim.run()
    return (report.steps, report.violations, "")
  }
}

/// The shell simulation (RaftNode over DurableLog on SimulatedFileSystem), one thread.
func simulateShell(seeds: Int, first: Int, steps: Int) {
  runSeeds(
    "shell-simulated", seeds: seeds, first: first, progressEvery: 1_000,
    replay: ("TEAL_SHELL_SIM_SEED", "ShellSimulationTests")
  ) { seed in
    var p = ShellSimulationParameters(seed: UInt64(seed))
    p.steps = steps
    var sim = ShellSimulation(p)
    let report = sim.run()
    return (report.steps, report.violations, " (\(report.shape))")
  }
}

// MARK: - Main

let mode = CommandLine.arguments.dropFirst().first ?? "all"
switch mode {
case "failover":
  failover(
    nodes: argument("--nodes", default: 3), crashes: argument("--crashes", default: 1_000), delay: 1...2, seed: 1,
    tickMillis: argument("--tick", default: RaftOptions.defaultTickMilliseconds))
case "throughput":
  throughput(entries: argument("--entries", default: 200_000), batch: argument("--batch", default: 64), payload: 128)
case "sim":
  simulate(
    seeds: argument("--seeds", default: 100_000), first: argument("--first", default: 1),
    steps: argument("--steps", default: 2_000))
case "shellsim" where CommandLine.arguments.contains("--trace"):
  var p = ShellSimulationParameters(seed: UInt64(argument("--trace", default: 1)))
  p.steps = argument("--steps", default: 3_000)
  p.trace = true
  var sim = ShellSimulation(p)
  let report = sim.run()
  print(report.trace.joined(separator: "\n"))
  print("violations: \(report.violations)")
case "shellsim":
  simulateShell(
    seeds: argument("--seeds", default: 10_000), first: argument("--first", default: 1),
    steps: argument("--steps", default: 3_000))
default:
  for nodes in [3, 5] {
    failover(nodes: nodes, crashes: 1_000, delay: 1...2, seed: 1)
  }
  failover(nodes: 3, crashes: 1_000, delay: 1...2, seed: 1, tickMillis: 10)
  failover(nodes: 3, crashes: 1_000, delay: 1...20, seed: 2)
  spuriousElections(nodes: 3, minutes: 60, delay: 1...2, seed: 3)
  spuriousElections(nodes: 5, minutes: 60, delay: 1...20, seed: 4)
  for batch in [1, 16, 256] {
    throughput(entries: 100_000, batch: batch, payload: 128)
  }
}
