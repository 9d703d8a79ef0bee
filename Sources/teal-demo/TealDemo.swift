// teal-demo: a small HTTP service for the README, the tests and chaos runs.

import ArgumentParser
import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix

#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

/// The command line. Every knob also reads an environment variable, so a revision's `env` can set
/// it; a flag wins over its variable.
@main
struct TealDemo: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "teal-demo",
    abstract: "A small HTTP service that reports its version and task id, with failure knobs for chaos tests.",
    discussion: """
      Endpoints: GET / (version, task id, revision), GET /health (200, or 503 with --fail-health),
      POST /process (counts the uploaded bytes; 500 with --reject-uploads), GET|POST /control (the knobs,
      as JSON: {"failHealth":true,"errorRate":0.5,"latencyMs":100,"rejectUploads":true,"seed":7}).
      SIGTERM or SIGINT: stop accepting, finish the requests in flight, exit 0.
      """
  )

  @Option(help: "Port to listen on (0: any free port). Default: $PORT, else 8080.")
  var port: Int?

  @Option(help: "Address to bind. Default: $TEAL_DEMO_HOST, else $HOST (a Teal node sets it), else 127.0.0.1.")
  var host: String?

  @Option(name: .customLong("version"), help: "Version reported in responses. Default: $TEAL_DEMO_VERSION, else 1.0.0.")
  var serviceVersion: String?

  @Flag(help: "Answer /health with 503. Env: TEAL_DEMO_FAIL_HEALTH=1.")
  var failHealth = false

  @Option(help: "Fraction (0...1) of GET / and POST /process answered 500. Env: TEAL_DEMO_ERROR_RATE.")
  var errorRate: Double?

  @Option(help: "Seed of the error-rate generator. Env: TEAL_DEMO_SEED. Default: 1.")
  var seed: UInt64?

  @Option(help: "Milliseconds added before answering GET / and POST /process. Env: TEAL_DEMO_LATENCY_MS.")
  var latencyMs: Int?

  @Flag(help: "Answer POST /process with 500 (a broken green version). Env: TEAL_DEMO_REJECT_UPLOADS=1.")
  var rejectUploads = false

  @Option(help: "Seconds to wait for requests in flight after SIGTERM before exiting anyway.")
  var drainTimeout: Int = 10

  @Option(help: "Event loop threads.")
  var threads: Int = 1

  func run() throws {
    // Block SIGTERM and SIGINT before any thread exists: every thread inherits the mask, so the
    // signals stay pending until `sigwait` takes them (none is lost, none kills us mid-request).
    var stopSignals = sigset_t()
    sigemptyset(&stopSignals)
    sigaddset(&stopSignals, SIGTERM)
    sigaddset(&stopSignals, SIGINT)
    pthread_sigmask(SIG_BLOCK, &stopSignals, nil)

    let environment = ProcessInfo.processInfo.environment
    let knobs = DemoKnobs(
      failHealth: failHealth || Self.flag(environment["TEAL_DEMO_FAIL_HEALTH"]),
      errorRate: try errorRate ?? Self.parse(environment, "TEAL_DEMO_ERROR_RATE", as: Double.self) ?? 0,
      latencyMs: try latencyMs ?? Self.parse(environment, "TEAL_DEMO_LATENCY_MS", as: Int.self) ?? 0,
      rejectUploads: rejectUploads || Self.flag(environment["TEAL_DEMO_REJECT_UPLOADS"])
    )
    if let message = knobs.validationError() { throw ValidationError(message) }
    let seed = try seed ?? Self.parse(environment, "TEAL_DEMO_SEED", as: UInt64.self) ?? 1
    let port = try port ?? Self.parse(environment, "PORT", as: Int.self) ?? 8080
    guard (0...65535).contains(port) else { throw ValidationError("--port must be in 0...65535, got \(port)") }
    guard (1...64).contains(threads) else { throw ValidationError("--threads must be in 1...64, got \(threads)") }
    guard drainTimeout >= 0 else { throw ValidationError("--drain-timeout must not be negative") }
    let host = host ?? environment["TEAL_DEMO_HOST"] ?? environment["HOST"] ?? "127.0.0.1"
    let version = serviceVersion ?? environment["TEAL_DEMO_VERSION"] ?? "1.0.0"

    let server = DemoServer(
      host: host, port: port, threads: threads,
      identity: DemoIdentity(
        version: version, taskID: environment["TEAL_TASK_ID"], revision: environment["TEAL_REVISION"], port: port,
        pid: getpid()),
      control: DemoControl(knobs: knobs, seed: seed),
      drainTimeout: .seconds(Int64(drainTimeout)))
    try server.runUntilSignalled()
  }

  static func signalName(_ signal: Int32) -> String {
    signal == SIGTERM ? "SIGTERM" : signal == SIGINT ? "SIGINT" : "signal \(signal)"
  }

  private static func flag(_ value: String?) -> Bool {
    guard let value = value?.lowercased() else { return false }
    return ["1", "true", "yes", "on"].contains(value)
  }

  private static func parse<T: LosslessStringConvertible>(
    _ environment: [String: String], _ name: String, as type: T.Type
  ) throws -> T? {
    guard let text = environment[name], !text.isEmpty else { return nil }
    guard let value = T(text) else {
      throw ValidationError("environment variable \(name)='\(text)' is not a valid \(T.self)")
    }
    return value
  }
}

// MARK: - Server

/// The listener, its connections, and the graceful stop.
///
/// Stop (SIGTERM/SIGINT): close the listener, then send every open connection
/// `ChannelShouldQuiesceEvent`: idle keep-alive connections close at once, a connection with a
/// request in flight closes right after its response (with `connection: close`). The process exits
/// 0 when every connection has closed, or after the drain timeout.
final class DemoServer: Sendable {
  let host: String
  let port: Int
  let threads: Int
  let identity: DemoIdentity
  let control: DemoControl
  let drainTimeout: TimeAmount
  private let connections = DemoConnections()

  init(
    host: String, port: Int, threads: Int, identity: DemoIdentity, control: DemoControl, drainTimeout: TimeAmount
  ) {
    self.host = host
    self.port = port
    self.threads = threads
    self.identity = identity
    self.control = control
    self.drainTimeout = drainTimeout
  }

  func runUntilSignalled() throws {
    let group = MultiThreadedEventLoopGroup(numberOfThreads: threads)
    defer { try? group.syncShutdownGracefully() }
    let connections = self.connections
    let control = self.control
    let boundIdentity = identity
    let listenerPort = port

    let bootstrap = ServerBootstrap(group: group)
      .serverChannelOption(.backlog, value: 1024)
      .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
      .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
      .childChannelOption(.maxMessagesPerRead, value: 16)
      .childChannelInitializer { channel in
        connections.add(channel)
        return channel.eventLoop.makeCompletedFuture {
          try channel.pipeline.syncOperations.configureHTTPServerPipeline(
            withPipeliningAssistance: true, withErrorHandling: true)
          var identity = boundIdentity
          if let local = channel.localAddress?.port { identity.port = local }
          try channel.pipeline.syncOperations.addHandler(DemoHTTPHandler(identity: identity, control: control))
        }
      }
    let listener: any Channel
    do {
      listener = try bootstrap.bind(host: host, port: listenerPort).wait()
    } catch {
      throw ValidationError("cannot listen on \(host):\(listenerPort): \(error)")
    }
    let actualPort = listener.localAddress?.port ?? listenerPort
    let knobs = control.current
    say(
      "teal-demo \(identity.version) listening on \(host):\(actualPort) task=\(identity.taskID ?? "-") "
        + "revision=\(identity.revision ?? "-") failHealth=\(knobs.failHealth) errorRate=\(knobs.errorRate) "
        + "latencyMs=\(knobs.latencyMs) rejectUploads=\(knobs.rejectUploads)")

    // SIGTERM and SIGINT are blocked in every thread (see `TealDemo.run`); wait for one here.
    var stopSignals = sigset_t()
    sigemptyset(&stopSignals)
    sigaddset(&stopSignals, SIGTERM)
    sigaddset(&stopSignals, SIGINT)
    var received: Int32 = 0
    while sigwait(&stopSignals, &received) != 0 {}

    say("teal-demo: \(TealDemo.signalName(received)) received, draining \(connections.count) connection(s)")
    try? listener.close().wait()
    let open = connections.all()
    for channel in open {
      channel.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
    }
    let allClosed = EventLoopFuture.andAllComplete(open.map(\.closeFuture), on: group.next())
    let drained = group.next().makePromise(of: Bool.self)
    allClosed.whenComplete { _ in drained.succeed(true) }
    group.next().scheduleTask(in: drainTimeout) { drained.succeed(false) }
    let clean = (try? drained.futureResult.wait()) ?? false
    say(clean ? "teal-demo: drained, exiting" : "teal-demo: drain timeout, exiting with connections open")
  }
}

/// Writes one line to stdout, unbuffered (the task runner's log sees it at once).
private func say(_ line: String) {
  let bytes = Array((line + "\n").utf8)
  bytes.withUnsafeBytes { buffer in
    var offset = 0
    while offset < buffer.count {
      let written = write(1, buffer.baseAddress! + offset, buffer.count - offset)
      if written <= 0 { return }
      offset += written
    }
  }
}

/// The open connections, so a stop can quiesce them.
final class DemoConnections: @unchecked Sendable {
  private let lock = NSLock()
  private var channels: [ObjectIdentifier: any Channel] = [:]

  func add(_ channel: any Channel) {
    let key = ObjectIdentifier(channel)
    lock.lock()
    channels[key] = channel
    lock.unlock()
    channel.closeFuture.whenComplete { _ in
      self.lock.lock()
      self.channels[key] = nil
      self.lock.unlock()
    }
  }

  func all() -> [any Channel] {
    lock.lock()
    defer { lock.unlock() }
    return Array(channels.values)
  }

  var count: Int {
    lock.lock()
    defer { lock.unlock() }
    return channels.count
  }
}
