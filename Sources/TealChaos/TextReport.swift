// The report as text: the verdict first, then the checks, the timeline, the deployment, the
// faults and the requests per listener.

import Foundation

extension ChaosReport {
  /// Seconds from the start of the run, `12.3`.
  func offset(_ date: Date) -> String { formatNumber(date.timeIntervalSince(startedAt), digits: 1) }

  /// Every event of the run in time order: (date, line).
  public func timeline() -> [(at: Date, text: String)] {
    var events: [(Date, String)] = []
    for deployment in deployments {
      for stage in deployment.stages { events.append((stage.enteredAt, "\(deployment.id) entered \(stage.stage)")) }
      var last: Double?
      for weight in deployment.weights where weight.productionGreen != last {
        events.append((weight.at, "\(deployment.id) production \(formatNumber(weight.productionGreen)) % green"))
        last = weight.productionGreen
      }
      for controller in deployment.controllers {
        events.append((controller.at, "\(deployment.id) controller \(controller.node) (term \(controller.term))"))
      }
    }
    for fault in faults {
      if let start = fault.startedAt {
        events.append((start, "fault \(fault.index): \(fault.summary)" + (fault.node.map { " on \($0)" } ?? "")))
      }
      if let end = fault.endedAt { events.append((end, "fault \(fault.index) over")) }
    }
    for leader in leaders {
      events.append(
        (leader.at, leader.leader.map { "leader \($0) (term \(leader.term))" } ?? "no leader (term \(leader.term))"))
    }
    return events.sorted { $0.0 < $1.0 }.map { (at: $0.0, text: $0.1) }
  }

  /// The report as text, for a terminal.
  public func text() -> String {
    var lines: [String] = []
    let verdict =
      passed ? "PASSED: the outcome is the expected one" : "FAILED: the outcome differs from the expectation"
    lines.append("chaos run \(scenario): \(verdict)")
    lines.append(
      "  \(formatDate(startedAt)) to \(formatDate(endedAt)) (\(formatNumber(seconds, digits: 1)) s)"
        + (seed.map { ", seed \($0)" } ?? ""))
    lines.append("")
    lines.append("checks")
    for check in checks {
      lines.append(
        "  \(check.passed ? "ok  " : "FAIL") \(check.name): expected \(check.expected), observed \(check.observed)")
    }
    lines.append("")
    lines.append("timeline (seconds from the start)")
    for event in timeline() { lines.append("  \(pad(offset(event.at), 7)) \(event.text)") }
    for deployment in deployments {
      lines.append("")
      lines.append(
        "deployment \(deployment.id): \(deployment.status) (\(deployment.strategy), \(deployment.blue) → \(deployment.green))"
          + (deployment.reason.map { ": \($0)" } ?? ""))
      var bake = "  bake: configured \(formatNumber(deployment.bake.configuredSeconds)) s"
      if let observed = deployment.bake.observedSeconds, let deviation = deployment.bake.deviationSeconds {
        bake += ", observed \(formatNumber(observed)) s (\(deviation >= 0 ? "+" : "")\(formatNumber(deviation)) s)"
      } else {
        bake += ", not observed"
      }
      lines.append(bake)
      if deployment.hooks.isEmpty { lines.append("  hooks: none") }
      for hook in deployment.hooks {
        lines.append(
          "  hook \(hook.stage) \(hook.executionId): \(hook.calls) call\(hook.calls == 1 ? "" : "s"), "
            + (hook.result ?? "no result"))
      }
      lines.append(
        "  controllers: "
          + deployment.controllers.map { "\($0.node) (term \($0.term)) from \(offset($0.at)) s" }.joined(
            separator: ", "))
    }
    lines.append("")
    lines.append("faults")
    if faults.isEmpty { lines.append("  none") }
    for fault in faults {
      var line = "  \(fault.index) \(fault.summary) [\(fault.origin), at \(fault.trigger)]"
      if let error = fault.error {
        line += ": NOT MADE: \(error)"
      } else if let start = fault.startedAt {
        line += ": \(fault.node ?? "-")" + (fault.term.map { " (term \($0))" } ?? "") + " at \(offset(start)) s"
        if let end = fault.endedAt { line += ", over at \(offset(end)) s" }
      }
      lines.append(line)
      if let leader = fault.newLeader, let time = fault.timeToLeaderSeconds {
        lines.append("      new leader \(leader) after \(formatNumber(time)) s")
      }
      if let action = fault.firstAction, let time = fault.timeToFirstActionSeconds {
        lines.append("      first controller action after \(formatNumber(time)) s: \(action)")
      }
      for window in fault.windows {
        lines.append(
          "      \(window.node) stopped from \(offset(window.from)) s to "
            + (window.to.map { offset($0) + " s (its listener answered again)" } ?? "the end"))
      }
    }
    lines.append("")
    lines.append(
      "requests per listener (failed = no 2xx answer; under fault = while its own node was killed or paused)")
    for listener in listeners {
      var line =
        "  \(listener.listener) (\(listener.node)): sent \(listener.sent), ok \(listener.ok), failed \(listener.failed)"
        + " (\(listener.failedOutsideFaults) outside faults, \(listener.failedUnderFault) of \(listener.sentUnderFault) under fault)"
      if !listener.servedByRevision.isEmpty {
        line +=
          ", by revision "
          + listener.servedByRevision.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }
          .joined(separator: " ")
      }
      lines.append(line)
      if !listener.failures.isEmpty {
        lines.append(
          "      failures: "
            + listener.failures.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", "))
      }
      for failed in listener.failedOutsideFaultsList ?? [] {
        let answer = [failed.revision.map { "revision \($0)" }, failed.generation.map { "generation \($0)" }]
          .compactMap { $0 }.joined(separator: ", ")
        lines.append(
          "      outside faults: \(failed.method) at \(String(format: "%.3f", failed.at.timeIntervalSince(startedAt))) s "
            + "(\(formatDate(failed.at))), \(failed.failure) after \(String(format: "%.3f", failed.seconds)) s"
            + (answer.isEmpty ? "" : " (\(answer))"))
      }
    }
    lines.append(
      "  total: sent \(totals.sent), ok \(totals.ok), failed \(totals.failed) (\(totals.failedOutsideFaults) outside "
        + "faults, \(totals.failedUnderFault) under fault)"
        + (droppedRequests > 0 ? "; \(droppedRequests) older records dropped (not counted above)" : ""))
    return lines.joined(separator: "\n") + "\n"
  }
}

func pad(_ text: String, _ width: Int) -> String {
  text.count >= width ? text : String(repeating: " ", count: width - text.count) + text
}
