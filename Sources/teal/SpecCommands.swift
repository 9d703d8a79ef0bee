import ArgumentParser
import Foundation
import TealDeploy
import TealSpec

/// `teal spec validate|plan`: check a service spec, and rehearse the deployment it describes.
struct Spec: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Validate a service spec, or rehearse the deployment it describes.",
    subcommands: [Validate.self, Plan.self]
  )

  struct Validate: ParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Check a service spec (YAML or JSON); print its revision digest.")

    @Option(name: .shortAndLong, help: "The spec file (.yaml, .yml or .json).")
    var file: String

    @OptionGroup var output: OutputOptions

    func run() throws {
      let spec = try loadSpec(file, json: output.json)
      let digest = Revision.digest(of: spec)
      if output.json {
        print(
          "{\"service\":\"\(jsonEscaped(spec.name))\",\"strategy\":\"\(spec.deployment.strategy.rawValue)\","
            + "\"digest\":\"\(digest)\"}")
      } else {
        print("\(file): valid")
        print("service \(spec.name), \(spec.desiredCount) tasks, strategy \(spec.deployment.strategy.rawValue)")
        print("digest \(digest)")
      }
    }
  }

  struct Plan: ParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Rehearse the deployment a spec describes, in simulated time, also its failure paths.",
      discussion: """
        Drives Teal's deployment engine through a simulated three-node world (tasks healthy after \
        2 s, routes applied after 100 ms, hooks answering SUCCEEDED after 1 s) and prints every \
        stage, routes generation, hook call and wait, with its offset from the start, then the \
        worst-case duration. --fail-hook, --alarm-at and --kill-leader-at rehearse what the engine \
        does when a hook fails, an alarm fires or the leader dies at a stage. A simulated operator \
        continues PAUSE hooks after one minute. Nothing is run.
        """)

    @Option(name: .shortAndLong, help: "The spec file (.yaml, .yml or .json).")
    var file: String

    @Option(name: .customLong("fail-hook"), help: "Hooks at this stage answer FAILED.")
    var failHook: [String] = []

    @Option(name: .customLong("alarm-at"), help: "An alarm fires (100 % 5xx) when the deployment reaches this stage.")
    var alarmAt: [String] = []

    @Option(name: .customLong("kill-leader-at"), help: "The leader dies when the deployment reaches this stage.")
    var killLeaderAt: [String] = []

    @Option(name: .customLong("outage"), help: "How long a killed leader's cluster has no leader (e.g. 10s).")
    var outage: String = "10s"

    @OptionGroup var output: OutputOptions

    func run() throws {
      let spec = try loadSpec(file, json: output.json)
      var scenario = SimulationScenario()
      for text in failHook { scenario.faults[try stage(text, "--fail-hook")] = .failHook }
      for text in alarmAt { scenario.faults[try stage(text, "--alarm-at")] = .alarm }
      for text in killLeaderAt { scenario.killLeaderAt.insert(try stage(text, "--kill-leader-at")) }
      guard let span = TimeSpan(parsing: outage) else {
        throw CommandFailure(message: "--outage: must be a duration like 500ms, 30s, 5m or 1h, got \(outage)")
      }
      scenario.outage = span
      if !alarmAt.isEmpty && spec.deployment.alarms.isEmpty {
        throw CommandFailure(message: "--alarm-at: the spec has no alarms")
      }
      let green = Revision(id: RevisionID(service: spec.name, number: 2), spec: spec)
      let blue = BlueRevision(revision: RevisionID(service: spec.name, number: 1), desiredCount: spec.desiredCount)
      let result = SimulatedWorld.run(green: green, blue: blue, scenario: scenario)
      let deployment = result.deployment
      let end = deployment.history.last?.at ?? result.start
      let worstCase = spec.deployment.worstCaseDuration
      if output.json {
        let items = deployment.history.map {
          "{\"offsetMs\":\(($0.at - result.start).milliseconds),"
            + "\"stage\":\($0.stage.map { "\"\($0.rawValue)\"" } ?? "null"),"
            + "\"status\":\"\($0.status.rawValue)\",\"text\":\"\(jsonEscaped($0.message))\"}"
        }
        print(
          "{\"status\":\"\(deployment.status.rawValue)\",\"durationMs\":\((end - result.start).milliseconds),"
            + "\"worstCaseMs\":\(worstCase.milliseconds),\"hookCalls\":\(result.hookCalls.count),"
            + "\"steps\":[\(items.joined(separator: ","))]}")
      } else {
        print("Rehearsal of \(blue.revision) -> \(green.id) (\(spec.deployment.strategy.rawValue)) on 3 nodes")
        var crashes = result.crashes[...]
        for event in deployment.history {
          while let crash = crashes.first, crash <= event.at {
            print(line(crash - result.start, nil, "leader killed: in-flight hook calls and reports lost"))
            crashes = crashes.dropFirst()
          }
          print(line(event.at - result.start, event.stage, relative(event.message, to: result.start)))
        }
        print("final status: \(deployment.status.rawValue)\(deployment.reason.map { " (\($0))" } ?? "")")
        print("duration \(format(end - result.start)); worst case \(format(worstCase))")
      }
    }

    /// Absolute log times in a message (`@1303200ms`) as offsets from the start (`+5m3.2s`).
    func relative(_ message: String, to start: Instant) -> String {
      Instant.rewritingInstants(in: message) { "+" + format($0 - start) }
    }

    func stage(_ text: String, _ option: String) throws -> LifecycleStage {
      guard let stage = LifecycleStage(rawValue: text) else {
        let all = LifecycleStage.allCases.map(\.rawValue).joined(separator: ", ")
        throw CommandFailure(message: "\(option): must be one of \(all), got \(text)")
      }
      return stage
    }

    func line(_ offset: TimeSpan, _ stage: LifecycleStage?, _ text: String) -> String {
      let time = "+" + format(offset)
      let stageText = stage?.rawValue ?? "-"
      return time.padding(toLength: 10, withPad: " ", startingAt: 0) + " "
        + stageText.padding(toLength: 30, withPad: " ", startingAt: 0) + " " + text
    }

    /// `2.1s`, `5m3.2s`, `1h20m`: hours, minutes, then seconds with up to three decimals.
    func format(_ span: TimeSpan) -> String {
      let milliseconds = max(0, span.milliseconds)
      let hours = milliseconds / 3_600_000
      let minutes = milliseconds % 3_600_000 / 60_000
      let rest = milliseconds % 60_000
      var text = ""
      if hours > 0 { text += "\(hours)h" }
      if minutes > 0 { text += "\(minutes)m" }
      if rest > 0 || text.isEmpty {
        text += rest % 1000 == 0 ? "\(rest / 1000)s" : "\(Double(rest) / 1000)s"
      }
      return text
    }
  }
}

/// Reads and parses a spec file. On errors, prints all of them (as `{"errors": [...]}` with
/// `json`, else one per line on stderr) and exits with status 1.
func loadSpec(_ path: String, json: Bool) throws -> ServiceSpec {
  guard let data = FileManager.default.contents(atPath: path) else {
    throw CommandFailure(message: "cannot read spec file \(path)")
  }
  guard let text = String(data: data, encoding: .utf8) else {
    throw CommandFailure(message: "\(path) is not UTF-8 text")
  }
  do {
    return try SpecParser.parse(text, fileName: path)
  } catch {
    if json {
      let encoder = JSONEncoder()
      encoder.outputFormatting = [.sortedKeys]
      let body = (try? encoder.encode(error)).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
      print(body)
    } else {
      let lines = error.errors.map { "error: \($0)\n" }.joined()
      FileHandle.standardError.write(Data(lines.utf8))
    }
    throw ExitCode(1)
  }
}
