// GossipBenchmark: detection time of a crashed member and false positives under loss, for Teal's
// SWIM defaults beside hashicorp/memberlist's LAN timing, in the deterministic simulation.
//
//   swift run -c release GossipBenchmark [--trials N] [--loss-minutes M] [--sizes 3,5,50]
//
// Method: see Docs/GOSSIP.md. Each trial is one seeded simulation: members join, converge, run
// two more probe periods plus a random phase, then one member crashes; the time until the first
// and until every live member declares it dead is recorded. The loss runs use 10% independent
// message loss and no crash, and count deaths declared of live members.
import Foundation
import TealGossip
import TealGossipSim

struct Options {
  var trials = 200
  var lossMinutes = 30
  var sizes = [3, 5, 50]

  init(arguments: [String]) {
    var iterator = arguments.dropFirst().makeIterator()
    while let argument = iterator.next() {
      switch argument {
      case "--trials": trials = iterator.next().flatMap(Int.init) ?? trials
      case "--loss-minutes": lossMinutes = iterator.next().flatMap(Int.init) ?? lossMinutes
      case "--sizes":
        sizes = iterator.next().map { $0.split(separator: ",").compactMap { Int($0) } } ?? sizes
      default:
        print("usage: GossipBenchmark [--trials N] [--loss-minutes M] [--sizes 3,5,50]")
        exit(2)
      }
    }
  }
}

let options = Options(arguments: CommandLine.arguments)
let configurations: [(name: String, settings: SWIMSettings)] = [
  ("teal defaults", SWIMSettings()),
  ("memberlist LAN", SWIMSettings.memberlistLAN),
]

func milliseconds(_ duration: Duration?) -> String {
  duration.map { String(DurationSummary.milliseconds($0)) } ?? "-"
}

print("## Crash detection (LAN: 0.1-1 ms one way, no loss; \(options.trials) seeds per row)")
print("| settings | members | first member p50 / p99 (ms) | every member p50 / p99 / max (ms) | undetected |")
print("|---|---|---|---|---|")
for configuration in configurations {
  for size in options.sizes {
    var first: [Duration] = []
    var all: [Duration] = []
    var undetected = 0
    for trial in 1...options.trials {
      do {
        let result = try GossipExperiments.crashDetection(
          memberCount: size, settings: configuration.settings, seed: UInt64(trial))
        if let value = result.firstDetection { first.append(value) }
        if let value = result.allDetected { all.append(value) } else { undetected += 1 }
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
        + "| \(undetected) |")
  }
}

print("")
print("## Crash detection at 10% message loss (\(max(1, options.trials / 4)) seeds per row)")
print("| settings | members | every member p50 / p99 / max (ms) | undetected | false positives |")
print("|---|---|---|---|---|")
for configuration in configurations {
  for size in options.sizes {
    var all: [Duration] = []
    var undetected = 0
    var falsePositives = 0
    for trial in 1...max(1, options.trials / 4) {
      do {
        let result = try GossipExperiments.crashDetection(
          memberCount: size, settings: configuration.settings, network: NetworkConditions(lossRate: 0.1),
          seed: UInt64(trial))
        if let value = result.allDetected { all.append(value) } else { undetected += 1 }
        falsePositives += result.falsePositives
      } catch {
        print("trial \(trial) failed: \(error)")
        undetected += 1
      }
    }
    let summary = DurationSummary(all)
    print(
      "| \(configuration.name) | \(size) | \(milliseconds(summary?.p50)) / \(milliseconds(summary?.p99)) "
        + "/ \(milliseconds(summary?.max)) | \(undetected) | \(falsePositives) |")
  }
}

print("")
print("## False positives at 10% message loss, no crash (\(options.lossMinutes) simulated minutes per row)")
print("| settings | members | deaths of live members | suspicions raised | refutations | messages/s per member |")
print("|---|---|---|---|---|---|")
for configuration in configurations {
  for size in options.sizes {
    do {
      let outcome = try GossipExperiments.falsePositives(
        memberCount: size, settings: configuration.settings, lossRate: 0.1,
        duration: .seconds(60 * options.lossMinutes), seed: UInt64(size))
      print(
        "| \(configuration.name) | \(size) | \(outcome.falsePositives.count) | \(outcome.suspicions) "
          + "| \(outcome.refutations) | \(String(format: "%.1f", outcome.messagesPerMemberPerSecond)) |")
    } catch {
      print("| \(configuration.name) | \(size) | failed: \(error) | | |")
    }
  }
}
