// The scale simulation's long run and the cost of a commit and of a snapshot by number of services
// (issue 18, item 4; results in Docs/BENCHMARKS.md, "Scale in simulation").
//
//   swift run -c release ScaleSimBenchmark seeds [count] [first] [--small]
//   swift run -c release ScaleSimBenchmark cost [services ...]

import Foundation
import TealNodeTesting

let arguments = Array(CommandLine.arguments.dropFirst())

func loadAverage() -> String {
  (try? String(contentsOfFile: "/proc/loadavg", encoding: .utf8))?.split(separator: " ").prefix(3).joined(
    separator: " ") ?? "unknown"
}

func runSeeds(_ options: [String]) async {
  let numbers = options.compactMap { UInt64($0) }
  let count = numbers.count > 0 ? Int(numbers[0]) : 100
  let first = numbers.count > 1 ? numbers[1] : 1
  let small = options.contains("--small")
  let verbose = options.contains("--verbose")
  print("scale simulation: \(count) seeds from \(first), \(small ? "small" : "full") shape; load \(loadAverage())")
  let started = ContinuousClock.now
  var failed: [UInt64] = []
  var walls: [Double] = []
  var entries = 0
  var outcomes: [String: Int] = [:]
  var surprises = 0
  for seed in first..<(first + UInt64(count)) {
    let scenario = small ? ScaleScenario.small(seed: seed) : ScaleScenario.full(seed: seed)
    var progress: (@Sendable (String) -> Void)?
    if verbose { progress = { @Sendable line in print(line) } }
    let simulation = ScaleSimulation(scenario, progress: progress)
    do {
      let report = try await simulation.run()
      print(report)
      print("  load \(loadAverage())")
      if !report.passed { failed.append(seed) }
      walls.append(report.wallSeconds)
      entries += report.entries
      surprises += report.surprises.count
      for (status, n) in report.outcomes { outcomes[status, default: 0] += n }
    } catch {
      print("seed \(seed): the harness failed: \(error)")
      failed.append(seed)
    }
  }
  let total = started.duration(to: .now)
  let sorted = walls.sorted()
  let median = sorted.isEmpty ? 0 : sorted[sorted.count / 2]
  print(
    "summary: \(count) seeds, \(failed.count) failed\(failed.isEmpty ? "" : " (\(failed.map(String.init).joined(separator: ", ")))"); "
      + String(
        format: "wall %.0f s in all, per seed median %.1f s, max %.1f s; ", Double(total.components.seconds),
        median, sorted.last ?? 0)
      + "\(entries) entries checked; outcomes "
      + outcomes.keys.sorted().map { "\($0) \(outcomes[$0] ?? 0)" }.joined(separator: ", ")
      + "; \(surprises) rolled back although set up to succeed; load \(loadAverage())")
  if !failed.isEmpty { exit(1) }
}

switch arguments.first {
case "seeds": await runSeeds(Array(arguments.dropFirst()))
case "cost": runCost(Array(arguments.dropFirst()))
default:
  print("usage: ScaleSimBenchmark seeds [count] [first] [--small] [--verbose] | cost [services ...]")
  exit(2)
}
