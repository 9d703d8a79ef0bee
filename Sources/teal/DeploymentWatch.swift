import Foundation
import TealAPI
import TealCLIViews
import TealClient

#if canImport(Glibc)
  import Glibc
#endif

/// How often the watch polls the deployment.
let watchPollInterval = Duration.milliseconds(250)

/// Follows deployment `id` until it reaches a final status; returns the exit status for it
/// (`DeploymentWatcher.exitCode(forFinal:)`). `first`: a view already in hand (from `teal deploy`).
///
/// Each poll is `GET /v1/deployments/{id}` through a client that moves between the cluster's nodes;
/// when that fails (the node died, no leader yet) the poll asks again for any node's own state
/// (`stale=true`), so the view keeps moving through an election. Errors are reported once per
/// outage; after `giveUpAfter` without any answer the watch fails. 404 and 401 fail at once. With
/// `timeout`, a deployment not finished by then fails the watch (it goes on in the cluster).
func watchDeployment(
  _ id: String, options: APIOptions, first: DeploymentView? = nil, giveUpAfter: Duration = .seconds(60),
  timeout: Duration? = nil
) async throws -> Int32 {
  let endpoints = try options.endpoints()
  var configuration = TealClientConfiguration(endpoints: endpoints, token: try options.token())
  configuration.security = try options.security(for: endpoints)
  // Short, so that a dead node costs one poll, not thirty seconds.
  configuration.connectTimeout = .milliseconds(500)
  configuration.requestTimeout = .seconds(2)
  configuration.overallTimeout = .seconds(3)
  configuration.maxAttempts = 3
  configuration.maxBackoff = .milliseconds(250)
  let client = TealClient(configuration: configuration)
  defer { Task { await client.shutdown() } }

  let environment = ProcessInfo.processInfo.environment
  let mode: DeploymentWatcher.Mode
  if options.json {
    mode = .json
  } else if isatty(STDOUT_FILENO) != 0 {
    let color = environment["NO_COLOR"] == nil && environment["TERM"] != "dumb"
    let size = terminalSize()
    mode = .terminal(style: RenderStyle(color: color), width: size.columns, height: size.rows)
  } else {
    mode = .plain
  }
  var watcher = DeploymentWatcher(mode: mode)
  let clock = ContinuousClock()
  var lastAnswer = clock.now
  let deadline = timeout.map { clock.now + $0 }

  func emit(_ output: WatchOutput) {
    if !output.stdout.isEmpty { writeOut(output.stdout) }
    if !output.stderr.isEmpty { writeError(output.stderr) }
  }
  func finish(_ view: DeploymentView) -> Int32? {
    guard view.isFinished, let code = DeploymentWatcher.exitCode(forFinal: view.status) else { return nil }
    if code != 0 {
      writeError("deployment \(view.id) ended \(view.status)\(view.reason.map { ": \($0)" } ?? "")\n")
    }
    return code
  }

  if let first {
    emit(watcher.received(first, now: Date()))
    if let code = finish(first) { return code }
  }
  while true {
    let started = clock.now
    do {
      let (view, node, stale) = try await fetchDeployment(id, client: client)
      lastAnswer = clock.now
      emit(watcher.received(view, from: node, stale: stale, now: Date()))
      if let code = finish(view) { return code }
    } catch let error as TealClientError where error.status == 404 || error.status == 401 || error.status == 403 {
      throw CommandFailure(message: error.description)
    } catch {
      emit(watcher.failed(shortReason(error), now: Date()))
      if clock.now - lastAnswer > giveUpAfter {
        throw CommandFailure(message: "no node answered for \(giveUpAfter): \(error)")
      }
    }
    if let deadline, let timeout, clock.now >= deadline {
      let state = watcher.last.map { "\($0.status)\($0.stage.map { " at \($0)" } ?? "")" } ?? "unknown"
      throw CommandFailure(
        message:
          "deployment \(id) did not finish within \(timeout) (\(state)); it goes on: `teal deployment watch \(id)`")
    }
    let next = started + watchPollInterval
    if next > clock.now { try await Task.sleep(until: next, clock: clock) }
  }
}

/// The deployment, the node that answered, and whether it is that node's own (stale) state.
private func fetchDeployment(_ id: String, client: TealClient) async throws -> (DeploymentView, String?, Bool) {
  let path = APIPath.deployment(id)
  do {
    let response = try await client.send(TealRequest(method: .GET, path: path))
    return (try response.decode(DeploymentView.self), response.node, false)
  } catch let error as TealClientError where error.status == 404 || error.status == 401 || error.status == 403 {
    throw error
  } catch {
    // No linearizable answer (no leader yet, or the nodes tried are gone): any node's own state.
    guard let response = try? await client.send(TealRequest(method: .GET, path: APIPath.stale(path))),
      let view = try? response.decode(DeploymentView.self)
    else { throw error }
    return (view, response.node, true)
  }
}

/// The first clause of an error, for the one-line outage note.
private func shortReason(_ error: any Error) -> String {
  let text: String
  switch error {
  case TealClientError.notSent(let endpoint, let reason): text = "\(endpoint): \(reason)"
  case TealClientError.outcomeUnknown(let endpoint, let reason, _): text = "\(endpoint): \(reason)"
  case let error as TealClientError:
    if let api = error.apiError { text = "\(api.code.rawValue): \(api.message)" } else { text = error.description }
  default: text = "\(error)"
  }
  return text.count > 120 ? String(text.prefix(117)) + "..." : text
}

/// The terminal's size (else `COLUMNS` and `LINES`, else 100 by 50). Read once: the watch does not
/// follow a resize.
private func terminalSize() -> (columns: Int, rows: Int) {
  var size = winsize()
  if ioctl(STDOUT_FILENO, UInt(TIOCGWINSZ), &size) == 0, size.ws_col > 0, size.ws_row > 0 {
    return (Int(size.ws_col), Int(size.ws_row))
  }
  let environment = ProcessInfo.processInfo.environment
  return (environment["COLUMNS"].flatMap(Int.init) ?? 100, environment["LINES"].flatMap(Int.init) ?? 50)
}
