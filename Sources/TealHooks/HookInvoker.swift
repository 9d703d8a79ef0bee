// The hook invocation shell: carries out a deployment's `pendingHookCall` over HTTP or as a local
// command and returns the `HookResult` to propose as `DeploymentCommand.hookAnswered`.

import Foundation
import Logging
import NIOCore
import NIOPosix
import TealDeploy

/// Calls lifecycle hooks.
///
/// - HTTP: `POST url` with the `HookContext` as a JSON body; a 2xx answer whose JSON body has
///   `"hookStatus": "SUCCEEDED" | "FAILED" | "IN_PROGRESS"` decides (with IN_PROGRESS, an optional
///   `"callBackDelay"` in seconds, as ECS hooks return it). A refused connection is `unreachable`
///   (the engine retries it with backoff); non-2xx, non-JSON or an unknown status is FAILED with a
///   reason; no complete answer within the hook's timeout is `timedOut` (also retried).
/// - Command: `argv` runs with the context as JSON on stdin; exit 0 is SUCCEEDED, exit 3 is
///   IN_PROGRESS, any other exit, a signal or a program that cannot start is FAILED; still running
///   at the timeout: killed (SIGKILL) and `timedOut`. Stdout and stderr come back in
///   `HookResult.output`, truncated.
/// - PAUSE hooks are never called (the engine waits for an operator); invoking one is FAILED.
///
/// Every call returns a result; none throws.
public actor HookInvoker {
  private let group: any EventLoopGroup
  private let outputLimit: Int
  private let log: Logger

  /// - Parameters:
  ///   - group: event loops for HTTP hooks.
  ///   - outputLimit: bytes of response body / stdout / stderr kept in the result.
  public init(group: any EventLoopGroup, outputLimit: Int = 2048, logger: Logger = Logger(label: "teal.hooks")) {
    self.group = group
    self.outputLimit = outputLimit
    self.log = logger
    // A command that exits without reading its stdin must not kill the node with SIGPIPE.
    signal(SIGPIPE, SIG_IGN)
  }

  /// Calls the hook of `invocation` once and returns its result for the engine. `term` (the caller's
  /// Raft term, when it leads) is sent as the `x-teal-term` header of an HTTP hook and as `TEAL_TERM`
  /// in a command hook's environment, so a hook can refuse a deposed leader's late call.
  public func invoke(_ invocation: HookInvocation, term: UInt64? = nil) async -> HookResult {
    let body: [UInt8]
    do {
      let encoder = JSONEncoder()
      encoder.outputFormatting = [.sortedKeys]
      body = Array(try encoder.encode(invocation.context))
    } catch {
      return HookResult(answering: invocation, outcome: .failed(reason: "cannot encode hook context: \(error)"))
    }
    let (outcome, output, callBackDelay): (HookOutcome, String?, TimeSpan?)
    switch invocation.hook.action {
    case .http(let url, let timeout):
      (outcome, output, callBackDelay) = await HTTPHookClient.post(
        url: url, body: body, timeout: timeout, group: group, outputLimit: outputLimit,
        headers: term.map { [("x-teal-term", String($0))] } ?? [])
    case .command(let argv, let timeout):
      (outcome, output) = await CommandHookRunner.run(
        argv: argv, stdin: body, timeout: timeout, outputLimit: outputLimit,
        environment: term.map { ["TEAL_TERM": String($0)] } ?? [:])
      callBackDelay = nil
    case .pause:
      (outcome, output, callBackDelay) = (.failed(reason: "a PAUSE hook has nothing to call"), nil, nil)
    }
    log.info(
      "hook invoked",
      metadata: [
        "executionId": "\(invocation.context.executionId)", "stage": "\(invocation.context.lifecycleStage.rawValue)",
        "attempt": "\(invocation.context.attempt)", "outcome": "\(outcome)",
      ])
    return HookResult(answering: invocation, outcome: outcome, output: output, callBackDelay: callBackDelay)
  }
}

// MARK: - Response interpretation

/// Turns an HTTP hook's answer into an outcome.
enum HookResponseInterpreter {
  static func outcome(status: Int, body: [UInt8], outputLimit: Int) -> (HookOutcome, String?, TimeSpan?) {
    let text = truncated(body, limit: outputLimit)
    guard (200..<300).contains(status) else {
      return (.failed(reason: "hook answered HTTP \(status), expected 2xx"), text, nil)
    }
    guard let object = try? JSONSerialization.jsonObject(with: Data(body)) as? [String: Any] else {
      return (.failed(reason: "hook answered a body that is not a JSON object"), text, nil)
    }
    guard let status = object["hookStatus"] as? String else {
      return (.failed(reason: "hook answer has no string field hookStatus"), text, nil)
    }
    switch status {
    case "SUCCEEDED": return (.succeeded, text, nil)
    case "IN_PROGRESS":
      // ECS: callBackDelay in seconds; kept only when a whole number in 1...3600.
      let seconds = (object["callBackDelay"] as? NSNumber)?.doubleValue
      let delay = seconds.flatMap { $0 >= 1 && $0 <= 3600 && $0 == $0.rounded() ? TimeSpan.seconds(Int64($0)) : nil }
      return (.inProgress, text, delay)
    case "FAILED":
      let detail = (object["reason"] as? String).map { ": \($0)" } ?? ""
      return (.failed(reason: "hook returned FAILED\(detail)"), text, nil)
    default:
      return (
        .failed(reason: "hook answered unknown hookStatus \"\(status)\" (expected SUCCEEDED, FAILED or IN_PROGRESS)"),
        text, nil
      )
    }
  }

  static func truncated(_ bytes: [UInt8], limit: Int) -> String? {
    guard !bytes.isEmpty else { return nil }
    let kept = String(decoding: bytes.prefix(limit), as: UTF8.self)
    return bytes.count > limit ? kept + "...(truncated, \(bytes.count) bytes)" : kept
  }
}
