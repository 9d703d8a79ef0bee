import ArgumentParser
import Foundation
import TealAPI
import TealCLIViews
import TealClient
import TealDeploy
import TealSpec

/// `teal deploy SERVICE -f SPEC.yaml | --set key=value ... [--supersede] [--watch] [--json]`.
struct Deploy: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Deploy a new revision of a service: register its spec and start the blue/green deployment.",
    discussion: """
      The new spec is -f's file, or the serving spec (GET /v1/services/SERVICE/spec) with --set's \
      changes, or -f's file with --set's changes. --set takes a dotted key path as the spec file \
      names it and a YAML value: task.env.VERSION=v2, desiredCount=4, deployment.strategy=CANARY, \
      deployment.canary.canaryPercent=20, deployment.lifecycleHooks[0].callBackDelay=5s; an empty \
      value removes the field. Prints the deployment's id on standard output. With --watch, follows \
      it like `teal deployment watch` and exits as it does (0 SUCCESSFUL, 2 ROLLBACK_SUCCESSFUL, \
      3 STOPPED, 4 ROLLBACK_FAILED, 1 errors).
      """)

  @Argument(help: "The service to deploy.")
  var service: String

  @Option(name: .shortAndLong, help: "The new spec file (.yaml, .yml or .json).")
  var file: String?

  @Option(
    name: .customLong("set"),
    help: ArgumentHelp("Change one field of the spec (repeatable), e.g. task.env.VERSION=v2.", valueName: "key=value"))
  var sets: [String] = []

  @Flag(name: .long, help: "Roll back a deployment of the service in progress first.")
  var supersede = false

  @Flag(name: .long, help: "Follow the deployment until it ends (as `teal deployment watch`).")
  var watch = false

  @Option(name: .long, help: "Idempotency-Key of the write (default: a new UUID, kept across retries).")
  var idempotencyKey: String?

  @OptionGroup var options: APIOptions

  func validate() throws {
    if file == nil && sets.isEmpty {
      throw ValidationError(
        "give the new spec with -f SPEC.yaml, changes to the serving spec with --set key=value, or both")
    }
  }

  func run() async throws {
    let overrides = try parseOverrides(sets)
    let client = try options.makeClient()
    defer { Task { await client.shutdown() } }
    let (text, contentType) = try await newSpec(overrides, client: client)
    let view = try await calling {
      try await client.deploy(
        service, spec: text, contentType: contentType, supersede: supersede, idempotencyKey: idempotencyKey)
    }
    if watch {
      if !options.json {
        writeError("deployment \(view.id) started: \(view.blue) → \(view.green) (\(view.strategy))\n")
      }
      let code = try await watchDeployment(view.id, options: options, first: view)
      if code != 0 { throw ExitCode(code) }
      return
    }
    if options.json { return try printJSON(view) }
    writeOut("\(view.id)\n")
    writeError(
      "deployment \(view.id) started: \(view.blue) → \(view.green) (\(view.strategy)); "
        + "follow it with `teal deployment watch \(view.id)`\n")
  }

  /// The text to submit and its content type.
  private func newSpec(_ overrides: [SpecOverride], client: TealClient) async throws -> (String, String) {
    let base: ServiceSpec
    if let file {
      base = try loadSpec(file, json: options.json)
      if overrides.isEmpty {
        guard base.name == service else {
          throw CommandFailure(message: "\(file) is the spec of service \(base.name), not \(service)")
        }
        // As written, comments and all.
        let text = try String(contentsOfFile: file, encoding: .utf8)
        return (text, file.lowercased().hasSuffix(".json") ? APIContentType.json : APIContentType.yaml)
      }
    } else {
      let serving = try await calling { try await client.servingSpec(service) }
      do {
        base = try SpecParser.parse(text: serving, format: .yaml)
      } catch {
        throw CommandFailure(
          message: "the serving spec of \(service) from the cluster does not parse: \(error.errors[0])")
      }
    }
    let spec: ServiceSpec
    do {
      spec = try SpecWriter.applying(overrides, to: base)
    } catch {
      throw CommandFailure(message: "--set: " + error.errors.map(\.description).joined(separator: "; "))
    }
    guard spec.name == service else {
      throw CommandFailure(message: "the new spec is of service \(spec.name), not \(service)")
    }
    if spec == base { throw CommandFailure(message: "--set changes nothing in the spec of \(service)") }
    return (SpecWriter.yaml(spec), APIContentType.yaml)
  }
}

func parseOverrides(_ sets: [String]) throws -> [SpecOverride] {
  var overrides: [SpecOverride] = []
  for text in sets {
    do { overrides.append(try SpecOverride(parsing: text)) } catch {
      throw CommandFailure(message: error.errors[0].description)
    }
  }
  return overrides
}

/// `teal deployment list|describe|watch|stop|rollback|pause|continue|promote|retry`.
struct DeploymentCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "deployment",
    abstract: "List, describe, watch and steer deployments.",
    subcommands: [
      List.self, Describe.self, Watch.self, Stop.self, Rollback.self, Pause.self, Continue.self, Promote.self,
      Retry.self,
    ])

  struct List: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List active and recent deployments, newest first.")

    @Option(name: .long, help: "Only this service's deployments.")
    var service: String?

    @OptionGroup var options: APIOptions

    func run() async throws {
      let client = try options.makeClient()
      let list = try await calling { try await client.deployments(service: service) }
      await client.shutdown()
      if options.json { return try printJSON(list) }
      if list.deployments.isEmpty { return print("no deployments") }
      print(
        table(
          ["ID", "SERVICE", "STATUS", "STAGE", "REVISIONS", "CREATED", "UPDATED"],
          DeploymentRendering.listRows(list.deployments)))
    }
  }

  struct Describe: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Show a deployment: stages, weights, tasks, hooks, bake time, controller.")

    @Argument(help: "The deployment's id, e.g. web-42.")
    var id: String

    @OptionGroup var options: APIOptions

    func run() async throws {
      let client = try options.makeClient()
      let view = try await calling { try await client.deployment(id) }
      await client.shutdown()
      if options.json { return try printJSON(view) }
      print(DeploymentRendering.lines(view, now: Date()).joined(separator: "\n"))
    }
  }

  struct Watch: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Follow a deployment live until it ends.",
      discussion: """
        Polls the deployment every 250 ms. On a terminal, redraws the view in place; piped, prints \
        a line for each change; with --json, prints the deployment (as `describe --json`) once per \
        change, one object per line. Keeps polling, through every known node, when the node it \
        talks to dies, and says so in one line; gives up after --give-up-after without any answer. \
        Exit status: 0 SUCCESSFUL, 2 ROLLBACK_SUCCESSFUL, 3 STOPPED, 4 ROLLBACK_FAILED, 1 errors \
        (no such deployment, no answer, not finished within --timeout).
        """)

    @Argument(help: "The deployment's id, e.g. web-42.")
    var id: String

    @Option(name: .long, help: "Seconds without any answer before giving up.")
    var giveUpAfter: Int = 60

    @Option(name: .long, help: "Fail (exit 1) if the deployment has not finished after this many seconds.")
    var timeout: Int?

    @OptionGroup var options: APIOptions

    func validate() throws {
      if !(1...3600).contains(giveUpAfter) {
        throw ValidationError("--give-up-after must be in 1...3600 seconds, got \(giveUpAfter)")
      }
      if let timeout, timeout < 1 { throw ValidationError("--timeout must be 1 or more seconds, got \(timeout)") }
    }

    func run() async throws {
      let code = try await watchDeployment(
        id, options: options, giveUpAfter: .seconds(giveUpAfter), timeout: timeout.map { .seconds($0) })
      if code != 0 { throw ExitCode(code) }
    }
  }

  struct Stop: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Stop a deployment: roll back to blue, as ECS's stop (STOP_REQUESTED, then ROLLBACK_SUCCESSFUL).")
    @Argument(help: "The deployment's id.") var id: String
    @OptionGroup var action: ActionOptions
    func run() async throws { try await runAction(.stop, id: id, action) }
  }

  struct Rollback: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Roll a deployment back to blue (final status ROLLBACK_SUCCESSFUL).")
    @Argument(help: "The deployment's id.") var id: String
    @OptionGroup var action: ActionOptions
    func run() async throws { try await runAction(.rollback, id: id, action) }
  }

  struct Pause: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Hold a deployment where it is; its waits are extended by the pause (alarms still roll back).")
    @Argument(help: "The deployment's id.") var id: String
    @OptionGroup var action: ActionOptions
    func run() async throws { try await runAction(.pause, id: id, action) }
  }

  struct Continue: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "End a pause, or release a PAUSE hook.")
    @Argument(help: "The deployment's id.") var id: String
    @OptionGroup var action: ActionOptions
    func run() async throws { try await runAction(.continue, id: id, action) }
  }

  struct Promote: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Skip the remaining production steps and bake time.")
    @Argument(help: "The deployment's id.") var id: String
    @OptionGroup var action: ActionOptions
    func run() async throws { try await runAction(.promote, id: id, action) }
  }

  struct Retry: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Start a new deployment of the same revisions as a rolled-back or stopped one; prints its id.")
    @Argument(help: "The deployment's id.") var id: String
    @OptionGroup var action: ActionOptions
    func run() async throws { try await runAction(.retry, id: id, action) }
  }
}

/// The options of the action commands.
struct ActionOptions: ParsableArguments {
  @Flag(name: .long, help: "Then follow the deployment until it ends (as `teal deployment watch`).")
  var watch = false

  @Option(name: .long, help: "Idempotency-Key of the write (default: a new UUID, kept across retries).")
  var idempotencyKey: String?

  @OptionGroup var options: APIOptions
}

func runAction(_ action: DeploymentActionName, id: String, _ arguments: ActionOptions) async throws {
  let options = arguments.options
  let client = try options.makeClient()
  let view = try await calling {
    try await client.deployment(id, action: action, idempotencyKey: arguments.idempotencyKey)
  }
  await client.shutdown()
  if arguments.watch {
    let code = try await watchDeployment(view.id, options: options, first: view)
    if code != 0 { throw ExitCode(code) }
    return
  }
  if options.json { return try printJSON(view) }
  if action == .retry {
    writeOut("\(view.id)\n")
    writeError("retry of \(id) started deployment \(view.id): \(view.blue) → \(view.green)\n")
  } else {
    print(
      "deployment \(view.id): \(action.rawValue) accepted; status \(view.status)\(view.stage.map { " at \($0)" } ?? "")"
    )
  }
}

/// Unbuffered writes, so that the watch's output and earlier lines stay in order when piped.
func writeOut(_ text: String) { FileHandle.standardOutput.write(Data(text.utf8)) }
func writeError(_ text: String) { FileHandle.standardError.write(Data(text.utf8)) }
