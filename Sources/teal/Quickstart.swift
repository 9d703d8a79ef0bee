import ArgumentParser
import Foundation
import TealAPI
import TealClient
import TealDeploy
import TealSpec

#if canImport(Glibc)
  import Glibc
#endif

/// `teal quickstart`: a local three-node cluster, the demo service on it, every node's production
/// listener answering, then a demo deployment (the next teal-demo version, CANARY, short bake) shown
/// in the watch view. Re-runnable: a running cluster and an existing service are reused, and each run
/// deploys the next version.
struct Quickstart: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Start a local 3-node cluster, run the demo service on it and show every node serving it.",
    discussion: """
      Runs `teal cluster up` (3 nodes in --dir), creates the service `demo` (3 tasks of teal-demo, \
      found next to this teal executable; production port 8080, test port 8081), waits until its \
      tasks are healthy, then requests http://127.0.0.i:8080/ on every node and prints who answered. \
      Then deploys the next version of teal-demo (TEAL_DEMO_VERSION 1.0.0 → 2.0.0 on the first run) \
      as a CANARY deployment (20 % for 5 s, then all; bake time 10 s), follows it in the watch view \
      and asks every node again. --no-deploy stops before the deployment.
      """)

  @Option(name: .long, help: "The cluster directory.")
  var dir: String = ".teal"

  @Option(name: .long, help: "Seconds to wait for the cluster, then for the demo's tasks.")
  var wait: Int = 90

  @Flag(inversion: .prefixedNo, help: "Run the demo deployment once the service serves.")
  var deploy = true

  func validate() throws {
    if !(1...3600).contains(wait) { throw ValidationError("--wait must be in 1...3600 seconds, got \(wait)") }
  }

  static let serviceName = "demo"
  static let productionPort = 8080
  static let testPort = 8081
  static let taskCount = 3

  func run() async throws {
    let demo = try locateDemo()
    let spec = Self.demoSpec(executable: demo)
    let up = try await clusterUp(
      ClusterUpRequest(
        dir: dir, nodes: nil, peerPort: nil, apiPort: nil, electionTimeoutMs: nil, wait: .seconds(wait), start: true),
      log: progress)
    let layout = ClusterLayout(dir: dir)
    let endpoints = try up.endpoints.map { try Endpoint(url: $0) }
    var configuration = TealClientConfiguration(endpoints: endpoints, token: try readToken(dir: dir))
    configuration.security = try clientSecurity(for: endpoints, dir: dir)
    configuration.maxAttempts = 4
    let client = TealClient(configuration: configuration)
    defer { Task { await client.shutdown() } }

    // The service: created once, reused after.
    let specPath = "\(layout.dir)/demo.yaml"
    try writeFile(specPath, spec)
    do {
      let detail = try await client.createService(spec: spec)
      progress("created service \(detail.name) (\(detail.currentRevision)) from \(specPath)")
    } catch let error as TealClientError where error.status == 409 {
      progress("service \(Self.serviceName) exists; reusing it")
    } catch let error as TealClientError {
      throw CommandFailure(message: "cannot create the demo service: \(error)")
    }

    // Its tasks, healthy.
    let tasks = try await waitForHealthyTasks(client, within: .seconds(wait))
    progress(taskTable(tasks))

    // Every node's production listener.
    progress("")
    var failures = 0
    for endpoint in up.endpoints {
      guard let host = try? Endpoint(url: endpoint).host else { continue }
      let url = "http://\(host):\(Self.productionPort)/"
      do {
        progress("\(url) -> \(try await askListener(host: host))")
      } catch {
        failures += 1
        progress("\(url) -> no answer: \(error)")
      }
    }
    if failures > 0 {
      throw CommandFailure(message: "\(failures) of \(up.endpoints.count) production listeners did not answer")
    }
    var demoRun: (id: String, version: String)?
    if deploy {
      demoRun = try await demoDeployment(client, endpoints: up.endpoints, localSpec: spec)
    }
    let id = demoRun?.id ?? "ID"
    let version = Self.nextVersion(after: demoRun?.version ?? "1.0.0")
    progress(
      """

      Try next:
        teal deployment describe \(id)       stages, weights, hooks, bake, controller
        teal deployment list
        teal deploy demo --set task.env.TEAL_DEMO_VERSION=\(version) --watch
                                            the next version, followed live (CANARY, 10 s bake)
        teal chaos kill-leader --at BAKE_TIME+6s
                                            from a second terminal while that deployment runs: kills
                                            the leader 6 s into bake time; a new leader finishes it
                                            on the same bake deadline, as the watch shows
        teal deployment rollback|pause|continue|promote ID
        teal cluster status                 members, leader, term
        teal service describe demo          revisions, tasks, routes
        teal tasks --service demo
        curl http://127.0.0.2:\(Self.productionPort)/           any node serves the service
        teal service scale demo 5
        teal events demo
        teal cluster down                   stop the nodes, keep the data (--purge removes \(dir))
      """)
  }

  /// The demo deployment: the next teal-demo version as CANARY (20 % for 5 s) with a 10 s bake,
  /// submitted with `--set`'s machinery (SpecWriter) and followed in the watch view; then every
  /// node's listener asked again. Returns the deployment's id and the version it deployed.
  private func demoDeployment(
    _ client: TealClient, endpoints: [String], localSpec: String
  ) async throws -> (id: String, version: String) {
    // The serving spec (so that a re-run deploys the version after the one serving), else ours.
    var serving = try SpecParser.parse(text: localSpec, format: .yaml)
    if let text = try? await client.servingSpec(Self.serviceName),
      let parsed = try? SpecParser.parse(text: text, format: .yaml)
    {
      serving = parsed
    }
    let current = serving.task.env["TEAL_DEMO_VERSION"] ?? "1.0.0"
    let next = Self.nextVersion(after: current)
    let sets = [
      "task.env.TEAL_DEMO_VERSION=\(next)", "deployment.strategy=CANARY", "deployment.canary.canaryPercent=20",
      "deployment.canary.canaryBakeTime=5s", "deployment.bakeTime=10s",
    ]
    let spec: ServiceSpec
    do {
      var overrides: [SpecOverride] = []
      for text in sets { overrides.append(try SpecOverride(parsing: text)) }
      spec = try SpecWriter.applying(overrides, to: serving)
    } catch {
      throw CommandFailure(message: "the demo deployment's spec: \(error)")
    }
    progress("")
    progress("deploying teal-demo \(current) → \(next): CANARY 20 % for 5 s, then 100 %; bake time 10 s")
    progress("  (as `teal deploy demo \(sets.map { "--set \($0)" }.joined(separator: " ")) --watch`)")
    let view: DeploymentView
    do {
      view = try await client.deploy(Self.serviceName, spec: SpecWriter.yaml(spec), supersede: true)
    } catch let error as TealClientError where error.status == 404 {
      throw CommandFailure(
        message: "\(error); do these nodes run deployments? (`teal quickstart --no-deploy` skips the demo deployment)")
    } catch let error as TealClientError {
      throw CommandFailure(message: "cannot start the demo deployment: \(error)")
    }
    let options = try APIOptions.parse(["--dir", dir] + endpoints.flatMap { ["--endpoint", $0] })
    // Bounded, so that a stuck deployment cannot hold the quickstart forever (it takes about 25 s).
    let code = try await watchDeployment(view.id, options: options, first: view, timeout: .seconds(180))
    guard code == 0 else {
      throw CommandFailure(message: "the demo deployment \(view.id) did not succeed (exit status \(code))")
    }
    progress("")
    for endpoint in endpoints {
      guard let host = try? Endpoint(url: endpoint).host else { continue }
      let url = "http://\(host):\(Self.productionPort)/"
      do {
        progress("\(url) -> \(try await askListener(host: host))")
      } catch {
        progress("\(url) -> no answer: \(error)")
      }
    }
    return (view.id, next)
  }

  /// `1.0.0` → `2.0.0`; anything else → `2.0.0`.
  static func nextVersion(after version: String) -> String {
    let major = version.split(separator: ".").first.flatMap { Int($0) } ?? 1
    return "\(major + 1).0.0"
  }

  /// The demo service's spec: teal-demo on its node's address (`HOST`) and a free port the node gives
  /// it in `PORT` (no `task.port`), so any number of demo tasks can share a node; checked on /health.
  static func demoSpec(executable: String) -> String {
    """
    # The demo service of `teal quickstart` (fields: Docs/DEPLOYMENTS.md).
    name: \(serviceName)
    desiredCount: \(taskCount)
    productionPort: \(productionPort)
    testPort: \(testPort)
    task:
      command: \(yamlQuoted(executable))
      args: []
      env:
        TEAL_DEMO_VERSION: "1.0.0"
      healthCheck:
        path: /health
        interval: 1s
        timeout: 1s
        healthyThreshold: 1
        unhealthyThreshold: 3
    deployment:
      strategy: BLUE_GREEN
      bakeTime: 1m

    """
  }

  /// teal-demo next to this teal; built with `swift build --product teal-demo` when missing and the
  /// current directory is Teal's package (as after `swift run teal quickstart` in a fresh clone).
  private func locateDemo() throws -> String {
    let directory = URL(fileURLWithPath: currentExecutable()).deletingLastPathComponent().path
    let path = "\(directory)/teal-demo"
    if FileManager.default.isExecutableFile(atPath: path) { return path }
    let package = FileManager.default.currentDirectoryPath + "/Package.swift"
    guard FileManager.default.fileExists(atPath: package) else {
      throw CommandFailure(
        message: "teal-demo is not next to teal in \(directory); build it (`swift build --product teal-demo`)")
    }
    var arguments = ["swift", "build", "--product", "teal-demo"]
    if directory.hasSuffix("/release") { arguments += ["-c", "release"] }
    progress("building teal-demo (\(arguments.joined(separator: " ")))")
    let status = try runForeground(arguments)
    guard status == 0, FileManager.default.isExecutableFile(atPath: path) else {
      throw CommandFailure(
        message:
          "`\(arguments.joined(separator: " "))` \(status == 0 ? "did not produce \(path)" : "failed (status \(status))")"
      )
    }
    return path
  }

  private func waitForHealthyTasks(_ client: TealClient, within: Duration) async throws -> [TaskView] {
    let clock = ContinuousClock()
    let deadline = clock.now + within
    var lastReport = ""
    while true {
      let tasks = try await calling { try await client.tasks(service: Self.serviceName) }.tasks
      let healthy = tasks.filter { $0.desired == .running && $0.state == .running && $0.healthy }
      if healthy.count >= Self.taskCount { return healthy }
      let report = "demo: \(healthy.count) of \(Self.taskCount) tasks healthy (\(tasks.count) placed)"
      if report != lastReport {
        progress(report)
        lastReport = report
      }
      if clock.now >= deadline {
        throw CommandFailure(message: "\(report) after \(within); see `teal tasks --service demo` and the nodes' logs")
      }
      try await Task.sleep(for: .milliseconds(500))
    }
  }

  /// GET / on a node's production listener; retried for a while (its routes may still be applying).
  private func askListener(host: String) async throws -> String {
    var configuration = TealClientConfiguration(endpoints: [Endpoint(host: host, port: Self.productionPort)])
    configuration.maxAttempts = 10
    configuration.maxBackoff = .seconds(1)
    configuration.overallTimeout = .seconds(20)
    configuration.requestTimeout = .seconds(5)
    let client = TealClient(configuration: configuration)
    defer { Task { await client.shutdown() } }
    let response = try await client.send(TealRequest(method: .GET, path: "/"))
    let identity = try JSONSerialization.jsonObject(with: response.body) as? [String: Any] ?? [:]
    let version = identity["version"].map { "\($0)" } ?? "?"
    let task = identity["taskId"].map { "\($0)" } ?? response.headers["x-teal-task-id"] ?? "?"
    let port = identity["port"].map { ", port \($0)" } ?? ""
    return "teal-demo \(version), task \(task)\(port)"
  }
}

/// Runs a program found on PATH in the foreground, output to ours; returns its exit status.
func runForeground(_ arguments: [String]) throws -> Int32 {
  let argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
  defer { for pointer in argv { free(pointer) } }
  var pid: pid_t = 0
  let spawned = posix_spawnp(&pid, arguments[0], nil, nil, argv, environ)
  guard spawned == 0 else {
    throw CommandFailure(message: "cannot run \(arguments[0]): \(String(cString: strerror(spawned)))")
  }
  var status: Int32 = 0
  while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
  return (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
}
