import ArgumentParser
import Foundation
import TealAPI
import TealClient
import TealDeploy

/// `teal service create|list|describe|scale|delete`.
struct Service: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Create, list, describe, scale and delete services.",
    subcommands: [Create.self, List.self, Describe.self, Scale.self, Delete.self]
  )

  struct Create: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Create a service from a spec (YAML or JSON, as `teal spec validate` reads it).")

    @Option(name: .shortAndLong, help: "The spec file (.yaml, .yml or .json).")
    var file: String

    @Option(name: .long, help: "Idempotency-Key of the write (default: a new UUID, kept across retries).")
    var idempotencyKey: String?

    @OptionGroup var options: APIOptions

    func run() async throws {
      // Checked here first: a bad spec is named with its file before anything is sent.
      _ = try loadSpec(file, json: options.json)
      let text = try String(contentsOfFile: file, encoding: .utf8)
      let contentType = file.hasSuffix(".json") ? APIContentType.json : APIContentType.yaml
      let client = try options.makeClient()
      let detail = try await calling {
        try await client.createService(spec: text, contentType: contentType, idempotencyKey: idempotencyKey)
      }
      await client.shutdown()
      if options.json { return try printJSON(detail) }
      print("created service \(detail.name), revision \(detail.currentRevision), \(detail.desiredCount) tasks desired")
    }
  }

  struct List: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List the services.")

    @OptionGroup var options: APIOptions

    func run() async throws {
      let client = try options.makeClient()
      let list = try await calling { try await client.services() }
      await client.shutdown()
      if options.json { return try printJSON(list) }
      if list.services.isEmpty { return print("no services") }
      print(
        table(
          ["NAME", "DESIRED", "RUNNING", "HEALTHY", "REVISION", "PRODUCTION", "TEST"],
          list.services.map {
            [
              $0.name, "\($0.desiredCount)", "\($0.runningCount)", "\($0.healthyCount)", $0.currentRevision,
              "\($0.productionPort)", "\($0.testPort)",
            ]
          }))
    }
  }

  struct Describe: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show a service: revisions, tasks and routes.")

    @Argument(help: "The service's name.")
    var name: String

    @OptionGroup var options: APIOptions

    func run() async throws {
      let client = try options.makeClient()
      let detail = try await calling { try await client.service(name) }
      await client.shutdown()
      if options.json { return try printJSON(detail) }
      print(describe(detail))
    }
  }

  struct Scale: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Set a service's desired number of tasks.")

    @Argument(help: "The service's name.")
    var name: String

    @Argument(help: "The desired number of tasks (0 or more).")
    var count: Int

    @Option(name: .long, help: "Idempotency-Key of the write (default: a new UUID, kept across retries).")
    var idempotencyKey: String?

    @OptionGroup var options: APIOptions

    func validate() throws {
      if count < 0 { throw ValidationError("the desired count must be 0 or more, got \(count)") }
    }

    func run() async throws {
      let client = try options.makeClient()
      let detail = try await calling { try await client.scale(name, to: count, idempotencyKey: idempotencyKey) }
      await client.shutdown()
      if options.json { return try printJSON(detail) }
      print("service \(detail.name): \(detail.desiredCount) tasks desired (\(detail.runningCount) running)")
    }
  }

  struct Delete: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Delete a service; by default waits until its tasks are drained and stopped and it is gone.")

    @Argument(help: "The service's name.")
    var name: String

    @Option(name: .long, help: "Idempotency-Key of the write (default: a new UUID, kept across retries).")
    var idempotencyKey: String?

    @Flag(name: .long, inversion: .prefixedNo, help: "Wait until the service is gone.")
    var wait = true

    @Option(name: .long, help: "How long to wait for the service to be gone, in seconds (1-3600).")
    var timeout = 60

    @OptionGroup var options: APIOptions

    func validate() throws {
      guard (1...3600).contains(timeout) else { throw ValidationError("--timeout must be 1-3600 seconds") }
    }

    func run() async throws {
      let client = try options.makeClient()
      let deletion: ServiceDeletion
      do { deletion = try await deleteAndWait(client) } catch {
        await client.shutdown()
        throw error
      }
      await client.shutdown()
      if options.json { return try printJSON(deletion) }
      switch deletion.status {
      case .deleted: print("deleted service \(name)")
      case .deleting:
        print("deleting service \(name): \(deletion.service?.tasks.count ?? 0) tasks draining and stopping")
      }
    }

    private func deleteAndWait(_ client: TealClient) async throws -> ServiceDeletion {
      var deletion = try await calling { try await client.deleteService(name, idempotencyKey: idempotencyKey) }
      guard wait else { return deletion }
      let deadline = ContinuousClock.now + .seconds(timeout)
      while deletion.status == .deleting {
        guard ContinuousClock.now < deadline else {
          throw CommandFailure(
            message: "service \(name) is still deleting after \(timeout) s: "
              + "\(deletion.service?.tasks.count ?? 0) tasks not yet stopped (see teal tasks --service \(name))")
        }
        try await Task.sleep(for: .milliseconds(250))
        do {
          deletion = ServiceDeletion(name: name, status: .deleting, service: try await client.service(name))
        } catch let error as TealClientError where error.status == 404 {
          deletion = ServiceDeletion(name: name, status: .deleted)
        }
      }
      return deletion
    }
  }
}

/// `teal tasks [--service S] [--node N]`.
struct Tasks: AsyncParsableCommand {
  static let configuration = CommandConfiguration(abstract: "List tasks, of one service or node if given.")

  @Option(name: .long, help: "Only this service's tasks.")
  var service: String?

  @Option(name: .long, help: "Only the tasks placed on this node.")
  var node: String?

  @OptionGroup var options: APIOptions

  func run() async throws {
    let client = try options.makeClient()
    let list = try await calling { try await client.tasks(service: service, node: node) }
    await client.shutdown()
    if options.json { return try printJSON(list) }
    if list.tasks.isEmpty { return print("no tasks") }
    print(taskTable(list.tasks))
  }
}

/// `teal events [SERVICE]`.
struct Events: AsyncParsableCommand {
  static let configuration = CommandConfiguration(abstract: "Show the cluster's event history, oldest first.")

  @Argument(help: "Only this service's events.")
  var service: String?

  @Option(name: .long, help: "Only events after this index.")
  var after: UInt64?

  @Option(name: .long, help: "At most this many events.")
  var limit: Int?

  @OptionGroup var options: APIOptions

  func validate() throws {
    if let limit, limit < 1 { throw ValidationError("--limit must be 1 or more, got \(limit)") }
  }

  func run() async throws {
    let client = try options.makeClient()
    let list = try await calling { try await client.events(service: service, after: after, limit: limit) }
    await client.shutdown()
    if options.json { return try printJSON(list) }
    if list.events.isEmpty { return print("no events") }
    print(
      table(
        ["INDEX", "TIME", "SERVICE", "KIND", "MESSAGE"],
        list.events.map { ["\($0.index)", shortTime($0.time), $0.service ?? "-", $0.kind, $0.message] }))
  }
}

func taskTable(_ tasks: [TaskView]) -> String {
  table(
    ["ID", "SERVICE", "REVISION", "NODE", "DESIRED", "STATE", "HEALTHY", "ADDRESS", "STARTED"],
    tasks.map {
      [
        $0.id, $0.service, $0.revision, $0.node, $0.desired.rawValue, $0.state.rawValue, $0.healthy ? "yes" : "no",
        $0.port > 0 ? "\($0.address):\($0.port)" : "-", $0.startedAt.map(shortTime) ?? "-",
      ]
    })
}

func describe(_ detail: ServiceDetail) -> String {
  var lines = [
    "service \(detail.name)",
    "  revision \(detail.currentRevision); tasks desired \(detail.desiredCount), running \(detail.runningCount), "
      + "healthy \(detail.healthyCount)",
    "  listeners: production :\(detail.productionPort), test :\(detail.testPort)",
    "",
    "revisions:",
  ]
  for revision in detail.revisions {
    lines.append("  \(revision.id)  created \(shortTime(revision.createdAt))  digest \(revision.digest)")
  }
  func weights(_ split: [String: Double]) -> String {
    split.isEmpty
      ? "none"
      : split.sorted { $0.key < $1.key }.map {
        "\($0.key) \($0.value.formatted(.number.precision(.fractionLength(0...2))))%"
      }
      .joined(separator: ", ")
  }
  lines += [
    "",
    "routes (generation \(detail.routes.generation)): production \(weights(detail.routes.production)); "
      + "test \(weights(detail.routes.test))",
  ]
  for target in detail.routes.targets {
    lines.append("  \(target.task) on \(target.node) at \(target.address):\(target.port) (\(target.revision))")
  }
  lines += ["", "tasks:", detail.tasks.isEmpty ? "  none" : taskTable(detail.tasks)]
  return lines.joined(separator: "\n")
}
