// GossipBenchmark: detection time of a crashed member, false deaths under loss and with a
// one-way link, and the fault-storm liveness run, for Teal's SWIM defaults, in the deterministic
// simulation (all figures are simulated).
//
//   swift run -c release GossipBenchmark [--trials N] [--sizes 3,5,50] [--loss-seeds N]
//     [--loss-seconds S] [--storm-seeds N] [--memberlist]
//
// Method: see Docs/GOSSIP.md. Settings are `SWIMSettings()` as committed, fixed before the runs.
// Each crash trial is one seeded simulation: members join, converge, run two more probe periods
// plus a random phase, then one member crashes; the time until the first and until every live
// member declares it dead is recorded. The loss runs use independent message loss and no crash,
// each seed for `--loss-seconds`, and count deaths declared of live members.
import Foundation
import TealGossip
import TealGossipSim

struct Options {
  var trials = 1000
  var sizes = [3, 5, 50]
  var lossSeeds = 1000
  var lossSeconds = 60
  var stormSeeds = 0
  var memberlist = false

  init(arguments: [String]) {
    var iterator = arguments.dropFirst().makeIterator()
    while let argument = iterator.next() {
      switch argument {
      case "--trials": trials = iterator.next().flatMap(Int.init) ?? trials
      case "--loss-seeds": lossSeeds = iterator.next().flatMap(Int.init) ?? lossSeeds
      case "--loss-seconds": lossSeconds = iterator.next().flatMap(Int.init) ?? lossSeconds
      case "--storm-seeds": stormSeeds = iterator.next().flatMap(Int.init) ?? stormSeeds
      case "--memberlist": memberlist = true
      case "--sizes":
        sizes = iterator.next().map { $0.split(separator: ",").compactMap { Int($0) } } ?? sizes
      default:
        print(
          "usage: GossipBenchmark [--trials N] [--sizes 3,5,50] [--loss-seeds N] [--loss-seconds S] "
            + "[--storm-seeds N] [--memberlist]")
        exit(2)
      }
    }
  }
}

let options = Options(arguments: CommandLine.arguments)
var configurations: [(name: String, settings: SWIMSettings)] = [("teal defaults", SWIMSettings())]
if options.memberlist { configurations.append(("memberlist LAN", SWIMSettings.memberlistLAN)) }

func milliseconds(_ duration: Duration?) -> String {
  duration.map { String(DurationSummary.milliseconds($0)) } ?? "-"
}

func flush() { FileHandle.standardOutput.synchronizeFile() }

print("## Crash detection, simulated (LAN: 0.1-1 ms one way, no loss; seeds 1...\(options.trials))")
print(
  "| settings | members | first member p50 / p99 (ms) | every member p50 / p99 / max (ms) | undetected | false deaths |"
)
print("|---|---|---|---|---|---|")
for configuration in configurations {
  for size in options.sizes {
    var first: [Duration] = []
    var all: [Duration] = []
    var undetected = 0
    var falseDeaths = 0
    for trial in 1...options.trials {
      do {
        let result = try GossipExperiments.crashDetection(
          memberCount: size, settings: configuration.settings, seed: UInt64(trial))
        if let value = result.firstDetection { first.append(value) }
        if let value = result.allDetected { all.append(value) } else { undetected += 1 }
        falseDeaths += result.falsePositives
      } catch {
        print("trial \(trial) failed: \(error)")
        undetected += 1
      }
    }
    let firstSummary = DurationSummary(first)
    let allSummary = DurationSummary(all)
    print(
      "| \(configuration.name) | \(size) | \(milliseconds(firstSummary?.p50)) / \(milliseconds(firstSummary?.p99)) "
        + "| \(milliseconds(allSummary?.p50)) / \(milliseconds(allSummary?.p99)) / \(milliseconds(allSummary?.max)) "
        + "| \(undetected) | \(falseDeaths) |")
    flush()
  }
}

print("")
print(
  "## False deaths, simulated (no crash; seeds 1...\(options.lossSeeds), \(options.lossSeconds) s each)")
print("| settings | members | fault | simulated hours | deaths of live members | per hour | suspicions | refutations |")
print("|---|---|---|---|---|---|---|---|")
let faults: [(name: String, loss: Double, oneWay: Bool)] = [
  ("10% loss", 0.1, false), ("20% loss", 0.2, false), ("one-way link n1→n2", 0, true),
]
for configuration in configurations {
  for size in [3, 5] {
    for fault in faults {
      var deaths = 0
      var suspicions = 0
      var refutations = 0
      for seed in 1...options.lossSeeds {
        do {
          let outcome = try GossipExperiments.falsePositives(
            memberCount: size, settings: configuration.settings, lossRate: fault.loss,
            duration: .seconds(options.lossSeconds), seed: UInt64(seed), oneWayLink: fault.oneWay)
          deaths += outcome.falsePositives.count
          suspicions += outcome.suspicions
          refutations += outcome.refutations
        } catch {
          print("seed \(seed) failed: \(error)")
        }
      }
      let hours = Double(options.lossSeeds * options.lossSeconds) / 3600
      print(
        "| \(configuration.name) | \(size) | \(fault.name) | \(String(format: "%.1f", hours)) | \(deaths) "
          + "| \(String(format: "%.3f", Double(deaths) / hours)) | \(suspicions) | \(refutations) |")
      flush()
    }
  }
}

if options.stormSeeds > 0 {
  print("")
  print("## Fault storm and liveness, simulated (20 s of faults, a forger, signed records)")
  print(
    "| members | seeds | liveness failures | convergence after the faults p50 / p99 / max (ms) | invariant violations |"
  )
  print("|---|---|---|---|---|")
  for size in [3, 5] {
    var times: [Duration] = []
    var failures = 0
    var violations = 0
    for seed in 1...options.stormSeeds {
      do {
        let result = try GossipExperiments.faultStorm(memberCount: size, seed: UInt64(seed))
        if let time = result.convergedAfterFaults { times.append(time) } else { failures += 1 }
        violations += result.invariantViolations.count
      } catch {
        print("seed \(seed) failed: \(error)")
        failures += 1
      }
    }
    let summary = DurationSummary(times)
    print(
      "| \(size) | \(options.stormSeeds) | \(failures) | \(milliseconds(summary?.p50)) / \(milliseconds(summary?.p99)) "
        + "/ \(milliseconds(summary?.max)) | \(violations) |")
    flush()
  }
}
