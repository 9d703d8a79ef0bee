import Foundation
import Testing

@testable import TealRaft
@testable import TealRaftSim

/// Deterministic simulation (see Docs/RAFT.md). CI runs `defaultSeeds` seeds; `TEAL_SIM_SEEDS=N`
/// runs N, `TEAL_SIM_SEED=S` replays one seed with a trace, `TEAL_SIM_STEPS=K` changes the steps.
@Suite struct SimulationTests {
  static let defaultSeeds = 500
  static let defaultSteps = 2_000
  static let replayCommand = "swift test --filter SimulationTests"

  static func environment(_ name: String) -> UInt64? {
    ProcessInfo.processInfo.environment[name].flatMap { UInt64($0) }
  }

  @Test func simulatedClustersKeepEveryRaftInvariantAndLinearizability() async throws {
    let steps = Int(Self.environment("TEAL_SIM_STEPS") ?? UInt64(Self.defaultSteps))
    if let seed = Self.environment("TEAL_SIM_SEED") {
      var parameters = SimulationParameters(seed: seed)
      parameters.steps = steps
      parameters.trace = true
      var simulation = RaftSimulation(parameters)
      let report = simulation.run()
      if let path = ProcessInfo.processInfo.environment["TEAL_SIM_TRACE_FILE"] {
        try report.trace.joined(separator: "\n").write(toFile: path, atomically: true, encoding: .utf8)
      } else if !report.violations.isEmpty {
        print(report.trace.suffix(400).joined(separator: "\n"))
      }
      print(Self.summary(report))
      #expect(report.violations.isEmpty, "\(report.violations.joined(separator: "\n"))")
      return
    }
    let seeds = Self.environment("TEAL_SIM_SEEDS") ?? UInt64(Self.defaultSeeds)
    let base = Self.environment("TEAL_SIM_FIRST_SEED") ?? 1
    let workers = 2
    let results = await withTaskGroup(of: (steps: Int, failures: [SimulationReport]).self) { group in
      for worker in 0..<workers {
        group.addTask {
          var total = 0
          var failures: [SimulationReport] = []
          var seed = base + UInt64(worker)
          while seed < base + seeds {
            var parameters = SimulationParameters(seed: seed)
            parameters.steps = steps
            var simulation = RaftSimulation(parameters)
            let report = simulation.run()
            total += report.steps
            if !report.violations.isEmpty { failures.append(report) }
            seed += UInt64(workers)
          }
          return (total, failures)
        }
      }
      var all: [(steps: Int, failures: [SimulationReport])] = []
      for await r in group { all.append(r) }
      return all
    }
    let totalSteps = results.reduce(0) { $0 + $1.steps }
    let failures = results.flatMap(\.failures).sorted { $0.seed < $1.seed }
    for failure in failures.prefix(5) {
      print("seed \(failure.seed) violated: \(failure.violations.joined(separator: "\n"))")
      let stepsPart = steps == Self.defaultSteps ? "" : "TEAL_SIM_STEPS=\(steps) "
      print("replay: TEAL_SIM_SEED=\(failure.seed) \(stepsPart)\(Self.replayCommand)")
    }
    print("simulated \(seeds) seeds, \(totalSteps) steps, \(failures.count) violations")
    #expect(failures.isEmpty, "failing seeds: \(failures.map(\.seed))")
  }

  static func summary(_ r: SimulationReport) -> String {
    "seed \(r.seed): \(r.nodeCount) nodes, \(r.steps) steps, \(r.simulatedMillis) ms simulated, "
      + "\(r.elections) leaders, commit \(r.committedIndex), \(r.completedOperations)/\(r.operations) operations, "
      + "\(r.snapshotsInstalled) snapshots installed, \(r.violations.count) violations"
  }
}
