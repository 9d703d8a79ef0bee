import ArgumentParser
import Foundation
import TealDeploy

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
      let spec = try loadSpec(file)
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
      abstract: "Rehearse the deployment a spec describes, in simulated time.",
      discussion: """
        Drives Teal's deployment engine through an ideal world (tasks healthy at once, hooks \
        answering SUCCEEDED, timers on time) and prints every stage, weight change, hook call and \
        wait, with its offset from the start. Nothing is run.
        """)

    @Option(name: .shortAndLong, help: "The spec file (.yaml, .yml or .json).")
    var file: String

    @OptionGroup var output: OutputOptions

    func run() throws {
      let spec = try loadSpec(file)
      let (steps, engine) = DeploymentRehearsal.run(spec: spec)
      if output.json {
        let items = steps.map {
          "{\"offsetMs\":\($0.offset.milliseconds),\"stage\":\($0.stage.map { "\"\($0.rawValue)\"" } ?? "null"),"
            + "\"text\":\"\(jsonEscaped($0.text))\"}"
        }
        print("{\"status\":\"\(engine.status.rawValue)\",\"steps\":[\(items.joined(separator: ","))]}")
      } else {
        print("Rehearsal of \(spec.name):1 -> \(spec.name):2 (\(spec.deployment.strategy.rawValue))")
        for step in steps { print(step) }
        print("final status: \(engine.status.rawValue)")
      }
    }
  }
}

func loadSpec(_ path: String) throws -> ServiceSpec {
  guard let data = FileManager.default.contents(atPath: path) else {
    throw CommandFailure(message: "cannot read spec file \(path)")
  }
  guard let text = String(data: data, encoding: .utf8) else {
    throw CommandFailure(message: "\(path) is not UTF-8 text")
  }
  do {
    return try ServiceSpec.parse(text, fileName: path)
  } catch {
    throw CommandFailure(message: error.description)
  }
}
