import Foundation
import Testing

@testable import TealRaftSim

/// The deterministic simulation of the real shell (RaftNode over DurableLog on SimulatedFileSystem; see
/// Docs/RAFT.md). CI runs `defaultSeeds` seeds; `TEAL_SIM_SEEDS=N` runs N (as for SimulationTests),
/// `TEAL_SHELL_SIM_SEED=S` replays one seed with a trace, `TEAL_SIM_FIRST_SEED` moves the range.
@Suite struct ShellSimulationTests {
  static let defaultSeeds = 200
  /// Fault-phase events per seed in CI (`TEAL_SIM_STEPS` changes it; RaftBenchmark's long run uses 3,000).
  static let defaultSteps = 1_500
  static let replayCommand = "swift test --filter ShellSimulationTests"

  static func environment(_ name: String) -> UInt64? { SimulationTests.environment(name) }

  @Test func simulatedShellClustersKeepEveryInvariantAndLinearizability() async throws {
    if let seed = Self.environment("TEAL_SHELL_SIM_SEED") {
      var parameters = ShellSimulationParameters(seed: seed)
      // The same fault phase as the seed had in the multi-seed run, so that a failure replays.
      parameters.steps = Int(Self.environment("TEAL_SIM_STEPS") ?? UInt64(Self.defaultSteps))
      parameters.trace = true
      var simulation = ShellSimulation(parameters)
      let report = simulation.run()
      if let path = ProcessInfo.processInfo.environment["TEAL_SIM_TRACE_FILE"] {
        try report.trace.joined(separator: "\n").write(toFile: path, atomically: true, encoding: .utf8)
      } else if !report.violations.isEmpty {
        print(report.trace.suffix(300).joined(separator: "\n"))
      }
      print(Self.summary(report))
      #expect(report.violations.isEmpty, "\(report.violations.joined(separator: "\n"))")
      return
    }
    let seeds = Self.environment("TEAL_SIM_SEEDS") ?? UInt64(Self.defaultSeeds)
    let first = Self.environment("TEAL_SIM_FIRST_SEED") ?? 1
    let (reports, failures) = await Self.run(seeds: seeds, first: first)
    for failure in failures.prefix(5) {
      print("seed \(failure.seed) (\(failure.shape)) violated: \(failure.violations.joined(separator: "\n"))")
      print("replay: TEAL_SHELL_SIM_SEED=\(failure.seed) \(Self.replayCommand)")
    }
    print(
      "shell-simulated \(seeds) seeds, \(reports.steps) steps, \(reports.crashes) power losses, "
        + "\(reports.storageCrashes) storage crash points, \(reports.restores) snapshot restores, "
        + "\(reports.acknowledged) acknowledged writes, \(failures.count) violations")
    #expect(failures.isEmpty, "failing seeds: \(failures.map(\.seed))")
  }

  @Test func everyShapeRunsAndIsAPureFunctionOfItsSeed() {
    for shape in ShellClusterShape.allCases {
      var parameters = ShellSimulationParameters(seed: 7)
      parameters.shape = shape
      parameters.trace = true
      var a = ShellSimulation(parameters)
      var b = ShellSimulation(parameters)
      let first = a.run()
      let second = b.run()
      #expect(first.violations.isEmpty, "\(shape): \(first.violations)")
      #expect(first.trace == second.trace, "\(shape): two runs of one seed differ")
      #expect(first.acknowledgedWrites > 0, "\(shape): no write was acknowledged")
    }
  }

  struct Totals: Sendable {
    var steps = 0
    var crashes = 0
    var storageCrashes = 0
    var restores = 0
    var acknowledged = 0
  }

  static func run(seeds: UInt64, first: UInt64) async -> (Totals, [ShellSimulationReport]) {
    let steps = Int(environment("TEAL_SIM_STEPS") ?? UInt64(defaultSteps))
    let workers: UInt64 = 2
    return await withTaskGroup(of: (Totals, [ShellSimulationReport]).self) { group in
      for worker in 0..<workers {
        group.addTask {
          var totals = Totals()
          var failures: [ShellSimulationReport] = []
          var seed = first + worker
          while seed < first + seeds {
            var parameters = ShellSimulationParameters(seed: seed)
            parameters.steps = steps
            var simulation = ShellSimulation(parameters)
            let report = simulation.run()
            totals.steps += report.steps
            totals.crashes += report.crashes
            totals.storageCrashes += report.storageCrashes
            totals.restores += report.snapshotsRestored
            totals.acknowledged += report.acknowledgedWrites
            if !report.violations.isEmpty { failures.append(report) }
            seed += workers
          }
          return (totals, failures)
        }
      }
      var totals = Totals()
      var failures: [ShellSimulationReport] = []
      for await (t, f) in group {
        totals.steps += t.steps
        totals.crashes += t.crashes
        totals.storageCrashes += t.storageCrashes
        totals.restores += t.restores
        totals.acknowledged += t.acknowledged
        failures += f
      }
      return (totals, failures.sorted { $0.seed < $1.seed })
    }
  }

  static func summary(_ r: ShellSimulationReport) -> String {
    "seed \(r.seed) (\(r.shape)): \(r.steps) steps, \(r.simulatedMillis) ms simulated, \(r.leaders) leaders, "
      + "\(r.crashes) power losses, \(r.storageCrashes) storage crash points, \(r.snapshotsRestored) restores, "
      + "\(r.completedOperations)/\(r.operations) operations, \(r.acknowledgedWrites) acknowledged, "
      + "\(r.violations.count) violations"
  }
}
