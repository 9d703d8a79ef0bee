// The report as one self-contained HTML page: inline CSS and SVG, no script, nothing fetched.
// Plots: the timeline (stages, faults, leaders), and per listener the green share of answers
// against the committed production weight, and the requests sent and failed per bucket.

import Foundation

extension ChaosReport {
  /// The page (`teal chaos run --html report.html`).
  public func html() -> String {
    var page = """
      <!DOCTYPE html>
      <html lang="en"><head><meta charset="utf-8">
      <title>Chaos report: \(escape(scenario))</title>
      <style>
      body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1100px}
      h1{font-size:1.4em} h2{font-size:1.15em;margin-top:1.6em} h3{font-size:1em}
      table{border-collapse:collapse;margin:.5em 0} td,th{border:1px solid #ccc;padding:.2em .5em;text-align:left;font-size:.9em}
      .pass{color:#0a7d28;font-weight:bold} .fail{color:#b00020;font-weight:bold}
      .muted{color:#666} svg{display:block;margin:.5em 0;background:#fafafa;border:1px solid #ddd}
      svg text{font-size:11px;font-family:system-ui,sans-serif}
      </style></head><body>

      """
    let verdict =
      passed
      ? "<span class=\"pass\">PASSED</span>: the outcome is the expected one"
      : "<span class=\"fail\">FAILED</span>: the outcome differs from the expectation"
    page += "<h1>Chaos run <code>\(escape(scenario))</code></h1>\n<p>\(verdict)<br>"
    page += "<span class=\"muted\">\(formatDate(startedAt)) to \(formatDate(endedAt)) "
    page += "(\(formatNumber(seconds, digits: 1)) s)\(seed.map { ", seed \($0)" } ?? "")</span></p>\n"

    page +=
      "<h2>Outcome against the expectation</h2>\n<table><tr><th></th><th>check</th><th>expected</th><th>observed</th></tr>\n"
    for check in checks {
      page += "<tr><td class=\"\(check.passed ? "pass" : "fail")\">\(check.passed ? "ok" : "FAIL")</td>"
      page +=
        "<td>\(escape(check.name))</td><td>\(escape(check.expected))</td><td>\(escape(check.observed))</td></tr>\n"
    }
    page += "</table>\n"

    page += "<h2>Timeline</h2>\n" + timelineSVG()

    for deployment in deployments {
      page += "<h2>Deployment \(escape(deployment.id))</h2>\n<p>\(escape(deployment.status)) · "
      page += "\(escape(deployment.strategy)) · \(escape(deployment.blue)) → \(escape(deployment.green))"
      if let reason = deployment.reason { page += " · \(escape(reason))" }
      page += "</p>\n<p>Bake: configured \(formatNumber(deployment.bake.configuredSeconds)) s"
      if let observed = deployment.bake.observedSeconds {
        page += ", observed \(formatNumber(observed)) s"
      } else {
        page += ", not observed"
      }
      page += "</p>\n<table><tr><th>hook stage</th><th>execution</th><th>calls</th><th>result</th></tr>\n"
      for hook in deployment.hooks {
        page += "<tr><td>\(escape(hook.stage))</td><td><code>\(escape(hook.executionId))</code></td>"
        page += "<td>\(hook.calls)</td><td>\(escape(hook.result ?? "-"))</td></tr>\n"
      }
      if deployment.hooks.isEmpty { page += "<tr><td colspan=\"4\" class=\"muted\">no hooks</td></tr>\n" }
      page += "</table>\n"
    }

    page += "<h2>Faults</h2>\n<table><tr><th>#</th><th>fault</th><th>when</th><th>node</th><th>start</th>"
    page += "<th>end</th><th>new leader after</th><th>first controller action after</th></tr>\n"
    for fault in faults {
      page += "<tr><td>\(fault.index)</td><td>\(escape(fault.summary))</td><td>\(escape(fault.trigger))</td>"
      if let error = fault.error {
        page += "<td colspan=\"5\" class=\"fail\">not made: \(escape(error))</td></tr>\n"
        continue
      }
      page += "<td>\(escape(fault.node ?? "-"))\(fault.term.map { " (term \($0))" } ?? "")</td>"
      page +=
        "<td>\(fault.startedAt.map { offset($0) + " s" } ?? "-")</td><td>\(fault.endedAt.map { offset($0) + " s" } ?? "-")</td>"
      page +=
        "<td>\(fault.timeToLeaderSeconds.map { "\(formatNumber($0)) s (\(escape(fault.newLeader ?? "?")))" } ?? "-")</td>"
      page += "<td>\(fault.timeToFirstActionSeconds.map { formatNumber($0) + " s" } ?? "-")</td></tr>\n"
    }
    if faults.isEmpty { page += "<tr><td colspan=\"8\" class=\"muted\">none</td></tr>\n" }
    page += "</table>\n"

    page += "<h2>Requests per listener</h2>\n<p class=\"muted\">Failed: no 2xx answer. Under fault: the request "
    page +=
      "overlapped a kill or pause of the listener's own node (until its listener answered again); counted apart.</p>\n"
    page += "<table><tr><th>listener</th><th>node</th><th>sent</th><th>ok</th><th>failed outside faults</th>"
    page += "<th>under fault (failed / sent)</th><th>by revision</th></tr>\n"
    for listener in listeners {
      let cls = listener.failedOutsideFaults == 0 ? "pass" : "fail"
      page += "<tr><td>\(escape(listener.listener))</td><td>\(escape(listener.node))</td><td>\(listener.sent)</td>"
      page += "<td>\(listener.ok)</td><td class=\"\(cls)\">\(listener.failedOutsideFaults)</td>"
      page += "<td>\(listener.failedUnderFault) / \(listener.sentUnderFault)</td><td>"
      page += escape(
        listener.servedByRevision.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " "))
      page += "</td></tr>\n"
    }
    page += "</table>\n"
    for listener in listeners {
      page += "<h3>\(escape(listener.listener)) (\(escape(listener.node)))</h3>\n"
      page += shareSVG(listener) + requestsSVG(listener)
    }
    page +=
      "<p class=\"muted\">Generated by <code>teal chaos run</code>. Buckets of \(formatNumber(bucketSeconds)) s.</p>\n"
    return page + "</body></html>\n"
  }

  // MARK: - Plots

  private var plotWidth: Double { 1000 }
  private var left: Double { 150 }
  private var span: Double { max(seconds, bucketSeconds) }

  private func x(_ date: Date) -> Double { x(date.timeIntervalSince(startedAt)) }
  private func x(_ t: Double) -> Double { left + max(0, min(span, t)) / span * (plotWidth - left - 10) }

  private func axis(_ y: Double) -> String {
    var svg = ""
    let step = niceStep(span)
    var t = 0.0
    while t <= span + 1e-9 {
      svg += "<line x1=\"\(f(x(t)))\" y1=\"\(f(y))\" x2=\"\(f(x(t)))\" y2=\"\(f(y + 4))\" stroke=\"#888\"/>"
      svg += "<text x=\"\(f(x(t)))\" y=\"\(f(y + 15))\" text-anchor=\"middle\">\(formatNumber(t))s</text>"
      t += step
    }
    return svg + "\n"
  }

  /// Stages as bands, faults as bars, leaders as segments (one colour per node).
  func timelineSVG() -> String {
    let rows = 2 + faults.count + 1
    let height = Double(rows) * 22 + 40
    var svg = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(f(plotWidth))\" height=\"\(f(height))\">\n"
    var row = 0.0
    func label(_ text: String, _ y: Double) -> String {
      "<text x=\"6\" y=\"\(f(y + 14))\">\(escape(text))</text>"
    }
    let stageColours = ["#cfe8ff", "#d9f2d0", "#fff1c2", "#f6d5f7", "#d5f2f0", "#ffe0cc", "#e2e2ff", "#eaf7c9"]
    for deployment in deployments {
      svg += label("stages \(deployment.id)", 10 + row * 22)
      for (i, stage) in deployment.stages.enumerated() {
        let end = i + 1 < deployment.stages.count ? deployment.stages[i + 1].enteredAt : endedAt
        let x0 = x(stage.enteredAt)
        let w = max(1, x(end) - x0)
        svg += "<rect x=\"\(f(x0))\" y=\"\(f(10 + row * 22))\" width=\"\(f(w))\" height=\"18\" "
        svg += "fill=\"\(stageColours[i % stageColours.count])\" stroke=\"#999\"><title>\(escape(stage.stage)) at "
        svg += "\(offset(stage.enteredAt)) s</title></rect>"
        if w > 40 {
          svg += "<text x=\"\(f(x0 + 3))\" y=\"\(f(24 + row * 22))\">\(escape(short(stage.stage)))</text>"
        }
      }
      svg += "\n"
      row += 1
    }
    if deployments.isEmpty { row += 1 }
    svg += label("leader", 10 + row * 22)
    let palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf"]
    let nodes = Array(Set(leaders.compactMap(\.leader))).sorted()
    for (i, change) in leaders.enumerated() {
      let end = i + 1 < leaders.count ? leaders[i + 1].at : endedAt
      let colour = change.leader.flatMap { nodes.firstIndex(of: $0) }.map { palette[$0 % palette.count] } ?? "#ddd"
      svg += "<rect x=\"\(f(x(change.at)))\" y=\"\(f(10 + row * 22))\" width=\"\(f(max(1, x(end) - x(change.at))))\" "
      svg += "height=\"18\" fill=\"\(colour)\"><title>\(escape(change.leader ?? "no leader")) (term \(change.term)) "
      svg += "from \(offset(change.at)) s</title></rect>"
      if x(end) - x(change.at) > 30 {
        svg += "<text x=\"\(f(x(change.at) + 3))\" y=\"\(f(24 + row * 22))\" fill=\"#fff\">"
        svg += "\(escape(change.leader ?? "-")) t\(change.term)</text>"
      }
    }
    svg += "\n"
    row += 1
    for fault in faults {
      svg += label("fault \(fault.index) \(fault.kind)", 10 + row * 22)
      if let start = fault.startedAt {
        let end = fault.endedAt ?? start
        svg += "<rect x=\"\(f(x(start)))\" y=\"\(f(12 + row * 22))\" width=\"\(f(max(3, x(end) - x(start))))\" "
        svg += "height=\"14\" fill=\"#d62728\"><title>\(escape(fault.summary)) on \(escape(fault.node ?? "-")) "
        svg += "from \(offset(start)) s</title></rect>"
        for window in fault.windows {
          let to = window.to ?? endedAt
          svg +=
            "<rect x=\"\(f(x(window.from)))\" y=\"\(f(26 + row * 22))\" width=\"\(f(max(1, x(to) - x(window.from))))\" "
          svg += "height=\"3\" fill=\"#7f0000\"><title>\(escape(window.node)) stopped</title></rect>"
        }
        svg += "<text x=\"\(f(x(end) + 5))\" y=\"\(f(24 + row * 22))\">\(escape(fault.node ?? ""))</text>"
      }
      svg += "\n"
      row += 1
    }
    svg += axis(10 + row * 22)
    return svg + "</svg>\n"
  }

  /// The listener's green share of answers per bucket (blue line) against the committed production
  /// weight of green (dashed step line); its own node's process faults shaded.
  func shareSVG(_ listener: ListenerReport) -> String {
    let top = 10.0
    let height = 120.0
    func y(_ percent: Double) -> Double { top + (100 - max(0, min(100, percent))) / 100 * height }
    var svg = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(f(plotWidth))\" height=\"\(f(height + 40))\">\n"
    svg += "<text x=\"6\" y=\"\(f(top + 12))\">green share %</text>"
    svg += "<text x=\"6\" y=\"\(f(top + 28))\" fill=\"#1f77b4\">— answers</text>"
    svg += "<text x=\"6\" y=\"\(f(top + 44))\" fill=\"#2ca02c\">- - committed</text>"
    for percent in [0.0, 50, 100] {
      svg +=
        "<line x1=\"\(f(left))\" y1=\"\(f(y(percent)))\" x2=\"\(f(plotWidth - 10))\" y2=\"\(f(y(percent)))\" stroke=\"#e4e4e4\"/>"
      svg += "<text x=\"\(f(left - 4))\" y=\"\(f(y(percent) + 4))\" text-anchor=\"end\">\(Int(percent))</text>"
    }
    svg += faultShading(listener.node, top: top, height: height)
    var points: [String] = []
    for bucket in listener.series where bucket.answered > 0 {
      let share = Double(bucket.green) / Double(bucket.answered) * 100
      points.append("\(f(x(bucket.t + bucketSeconds / 2))),\(f(y(share)))")
    }
    if !points.isEmpty {
      svg +=
        "<polyline fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"1.5\" points=\"\(points.joined(separator: " "))\"/>"
    }
    for deployment in deployments where !deployment.weights.isEmpty {
      var steps: [String] = []
      var previous: Double?
      for weight in deployment.weights {
        if let previous { steps.append("\(f(x(weight.at))),\(f(y(previous)))") }
        steps.append("\(f(x(weight.at))),\(f(y(weight.productionGreen)))")
        previous = weight.productionGreen
      }
      if let previous { steps.append("\(f(x(endedAt))),\(f(y(previous)))") }
      svg += "<polyline fill=\"none\" stroke=\"#2ca02c\" stroke-dasharray=\"5,3\" stroke-width=\"1.5\" "
      svg += "points=\"\(steps.joined(separator: " "))\"/>"
    }
    svg += axis(top + height)
    return svg + "</svg>\n"
  }

  /// Requests sent (grey) and failed (red) per bucket.
  func requestsSVG(_ listener: ListenerReport) -> String {
    let top = 10.0
    let height = 80.0
    let most = max(1, listener.series.map(\.sent).max() ?? 1)
    func y(_ count: Int) -> Double { top + height - Double(count) / Double(most) * height }
    let width = max(1, x(bucketSeconds) - x(0) - 1)
    var svg = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(f(plotWidth))\" height=\"\(f(height + 40))\">\n"
    svg += "<text x=\"6\" y=\"\(f(top + 12))\">requests / \(formatNumber(bucketSeconds)) s</text>"
    svg += "<text x=\"6\" y=\"\(f(top + 28))\" fill=\"#888\">■ sent (max \(most))</text>"
    svg += "<text x=\"6\" y=\"\(f(top + 44))\" fill=\"#d62728\">■ failed</text>"
    svg += faultShading(listener.node, top: top, height: height)
    for bucket in listener.series where bucket.sent > 0 {
      svg += "<rect x=\"\(f(x(bucket.t)))\" y=\"\(f(y(bucket.sent)))\" width=\"\(f(width))\" "
      svg += "height=\"\(f(top + height - y(bucket.sent)))\" fill=\"#bbb\"/>"
      if bucket.failed > 0 {
        svg += "<rect x=\"\(f(x(bucket.t)))\" y=\"\(f(y(bucket.failed)))\" width=\"\(f(width))\" "
        svg += "height=\"\(f(max(1, top + height - y(bucket.failed))))\" fill=\"#d62728\">"
        svg += "<title>\(bucket.failed) failed at \(formatNumber(bucket.t)) s</title></rect>"
      }
    }
    svg += axis(top + height)
    return svg + "</svg>\n"
  }

  private func faultShading(_ node: String, top: Double, height: Double) -> String {
    var svg = ""
    for fault in faults {
      for window in fault.windows where window.node == node {
        let to = window.to ?? endedAt
        svg += "<rect x=\"\(f(x(window.from)))\" y=\"\(f(top))\" width=\"\(f(max(1, x(to) - x(window.from))))\" "
        svg += "height=\"\(f(height))\" fill=\"#f8d0d0\"><title>\(escape(fault.summary))</title></rect>"
      }
    }
    return svg
  }
}

private func f(_ value: Double) -> String { formatNumber(value, digits: 1) }

private func short(_ stage: String) -> String {
  [
    "RECONCILE_SERVICE": "RECONCILE", "PRE_SCALE_UP": "PRE_SCALE", "POST_SCALE_UP": "POST_SCALE",
    "TEST_TRAFFIC_SHIFT": "TEST", "POST_TEST_TRAFFIC_SHIFT": "POST_TEST", "PRODUCTION_TRAFFIC_SHIFT": "PRODUCTION",
    "POST_PRODUCTION_TRAFFIC_SHIFT": "POST_PROD",
  ][stage] ?? stage
}

/// A step of 1, 2 or 5 × 10^n seconds giving at most about ten ticks.
func niceStep(_ span: Double) -> Double {
  var step = 1.0
  while span / step > 10 {
    for factor in [2.0, 2.5, 2.0] where span / step > 10 { step *= factor }
  }
  return step
}

/// Text safe inside HTML and SVG (element content and attribute values).
public func escape(_ text: String) -> String {
  var out = ""
  for character in text {
    switch character {
    case "&": out += "&amp;"
    case "<": out += "&lt;"
    case ">": out += "&gt;"
    case "\"": out += "&quot;"
    case "'": out += "&#39;"
    default: out.append(character)
    }
  }
  return out
}
