// The pure part of `teal deployment describe` and `watch`: a DeploymentView (and the time now) to
// text lines. No I/O, no clock: the command passes `now`, so every line is testable.

import Foundation
import TealAPI

/// How the lines are dressed: ANSI colours on a terminal, none when piped.
public struct RenderStyle: Sendable, Equatable {
  public var color: Bool
  /// Characters per bar (a bar is `width` cells for 100 %).
  public var barWidth: Int

  public init(color: Bool = false, barWidth: Int = 20) {
    self.color = color
    self.barWidth = barWidth
  }

  public static let plain = RenderStyle()

  func paint(_ text: String, _ code: String) -> String { color ? "\u{1B}[\(code)m\(text)\u{1B}[0m" : text }
  func green(_ text: String) -> String { paint(text, "32") }
  func blue(_ text: String) -> String { paint(text, "34") }
  func red(_ text: String) -> String { paint(text, "31") }
  func yellow(_ text: String) -> String { paint(text, "33") }
  func dim(_ text: String) -> String { paint(text, "2") }
  func bold(_ text: String) -> String { paint(text, "1") }
}

public enum DeploymentRendering {
  /// ECS's lifecycle stages in the order a deployment enters them.
  public static let stageOrder = [
    "RECONCILE_SERVICE", "PRE_SCALE_UP", "SCALE_UP", "POST_SCALE_UP", "TEST_TRAFFIC_SHIFT", "POST_TEST_TRAFFIC_SHIFT",
    "PRODUCTION_TRAFFIC_SHIFT", "POST_PRODUCTION_TRAFFIC_SHIFT", "BAKE_TIME", "CLEAN_UP",
  ]

  // MARK: Pieces

  /// `percent` (0...100) as a bar of `width` cells, rounded to the nearest cell; a share above 0
  /// shows at least one cell and one below 100 at most `width - 1`, so 1 % and 99 % are visible.
  public static func bar(_ percent: Double, width: Int) -> String {
    precondition(width > 0, "a bar needs a width")
    let clamped = min(100, max(0, percent.isFinite ? percent : 0))
    var cells = Int((clamped / 100 * Double(width)).rounded())
    if clamped > 0 { cells = max(1, cells) }
    if clamped < 100 { cells = min(width - 1, cells) }
    return String(repeating: "█", count: cells) + String(repeating: "░", count: width - cells)
  }

  /// `12.5%`, `100%`: at most one decimal.
  public static func percent(_ value: Double) -> String {
    let tenths = (value * 10).rounded() / 10
    return tenths == tenths.rounded() ? "\(Int(tenths))%" : String(format: "%.1f%%", tenths)
  }

  /// A duration for people: `850ms`, `4.2s`, `1m05s`, `2h03m`.
  public static func duration(_ seconds: TimeInterval) -> String {
    let value = max(0, seconds)
    if value < 1 { return "\(Int((value * 1000).rounded()))ms" }
    if value < 60 { return String(format: "%.1fs", (value * 10).rounded(.down) / 10) }
    let whole = Int(value)
    if whole < 3600 { return String(format: "%dm%02ds", whole / 60, whole % 60) }
    return String(format: "%dh%02dm", whole / 3600, (whole % 3600) / 60)
  }

  /// `HH:mm:ss.S` in UTC.
  public static func clock(_ date: Date) -> String {
    let milliseconds = Int64((date.timeIntervalSince1970 * 1000).rounded(.down))
    let dayMilliseconds = ((milliseconds % 86_400_000) + 86_400_000) % 86_400_000
    let seconds = dayMilliseconds / 1000
    return String(
      format: "%02d:%02d:%02d.%d", seconds / 3600, (seconds % 3600) / 60, seconds % 60, (dayMilliseconds % 1000) / 100)
  }

  /// The bake window as a line's value: `not started (10s)`, `6.0s left of 10s (ends 12:00:10.0)`,
  /// `done (10s, ended 12:00:10.0)`.
  public static func bake(_ bake: BakeWindow, now: Date) -> String {
    let total = duration(bake.seconds)
    guard let endsAt = bake.endsAt, bake.startedAt != nil else { return "not started (\(total))" }
    let left = endsAt.timeIntervalSince(now)
    if left > 0 { return "\(duration(left)) left of \(total) (ends \(clock(endsAt)))" }
    return "done (\(total), ended \(clock(endsAt)))"
  }

  /// Seconds of bake left at `now`: nil before bake starts or without bake, 0 once it ended.
  public static func bakeRemaining(_ bake: BakeWindow?, now: Date) -> TimeInterval? {
    guard let bake, bake.startedAt != nil, let endsAt = bake.endsAt else { return nil }
    return max(0, endsAt.timeIntervalSince(now))
  }

  public static func controller(_ controller: ControllerView?) -> String {
    controller.map { "\($0.node) (term \($0.term))" } ?? "none (no leader known)"
  }

  /// The line printed when the controller changes.
  public static func controllerChange(from old: ControllerView?, to new: ControllerView?) -> String {
    "controller changed: \(controller(old)) → \(controller(new))"
  }

  static func statusMark(_ status: String, _ style: RenderStyle) -> String {
    switch status {
    case "SUCCESSFUL": return style.green("✔ \(status)")
    case "ROLLBACK_SUCCESSFUL", "STOPPED": return style.yellow("↺ \(status)")
    case "ROLLBACK_FAILED": return style.red("✖ \(status)")
    case "PENDING": return style.dim("◌ \(status)")
    default: return style.bold("◐ \(status)")
    }
  }

  static func hookResult(_ result: String?, _ style: RenderStyle) -> String {
    switch result {
    case nil: return style.yellow("running")
    case "SUCCEEDED", "CONTINUED": return style.green(result ?? "")
    default: return style.red(result ?? "")
    }
  }

  // MARK: The view

  /// Every line of `teal deployment describe` and of the watch view's frame.
  public static func lines(_ view: DeploymentView, now: Date, style: RenderStyle = .plain) -> [String] {
    var lines: [String] = []
    lines.append("\(style.bold("Deployment")):  \(view.id)")
    lines.append(
      "Service:     \(view.service)  \(style.blue(view.blue)) → \(style.green(view.green))  (\(view.strategy))")
    var status = "Status:      \(statusMark(view.status, style))"
    if let stage = view.stage { status += "  at \(stage)" }
    if view.pausedBy != nil { status += "  " + style.yellow("paused by \(view.pausedBy ?? "")") }
    lines.append(status)
    if let reason = view.reason { lines.append("Reason:      \(reason)") }
    lines.append("Controller:  \(controller(view.controller))")
    if let window = view.bake { lines.append("Bake:        \(bake(window, now: now))") }
    lines.append(
      "Created:     \(clock(view.createdAt))  updated \(clock(view.updatedAt))  (\(duration(now.timeIntervalSince(view.createdAt))) ago)"
    )

    lines.append("")
    lines.append(style.bold("Stages"))
    lines += stageLines(view, now: now, style: style)

    lines.append("")
    lines.append(style.bold("Weights") + " (generation \(view.weights.generation))")
    for (name, pair) in [("production", view.weights.production), ("test", view.weights.test)] {
      let label = name.padding(toLength: 11, withPad: " ", startingAt: 0)
      lines.append(
        "  \(label) blue  \(style.blue(bar(pair.blue, width: style.barWidth))) \(pad(percent(pair.blue), 6))"
          + "  green \(style.green(bar(pair.green, width: style.barWidth))) \(pad(percent(pair.green), 6))")
    }

    lines.append("")
    lines.append(style.bold("Tasks") + " (healthy/running)")
    if view.tasks.isEmpty {
      lines.append("  none")
    } else {
      lines += taskLines(view, style: style)
    }

    lines.append("")
    lines.append(style.bold("Hooks"))
    if view.hooks.isEmpty {
      lines.append("  none")
    } else {
      let stageWidth = view.hooks.map(\.stage.count).max() ?? 0
      let idWidth = view.hooks.map(\.executionId.count).max() ?? 0
      for hook in view.hooks {
        let attempts = "\(hook.attempts) attempt\(hook.attempts == 1 ? "" : "s")"
        lines.append(
          "  \(hook.stage.padding(toLength: stageWidth, withPad: " ", startingAt: 0))  "
            + "\(hook.executionId.padding(toLength: idWidth, withPad: " ", startingAt: 0))  "
            + "\(attempts.padding(toLength: 11, withPad: " ", startingAt: 0))  \(hookResult(hook.result, style))")
      }
    }
    if !view.recent.isEmpty {
      lines.append("")
      lines.append(style.bold("Recent"))
      for note in view.recent.suffix(8) { lines.append("  \(clock(note.at))  \(note.message)") }
    }
    return lines
  }

  /// The stage timeline: every stage entered, with its time and how long it took (or has taken so
  /// far), then the stages still ahead while the deployment runs forward.
  public static func stageLines(_ view: DeploymentView, now: Date, style: RenderStyle = .plain) -> [String] {
    var lines: [String] = []
    let width = max(29, view.stageTimeline.map(\.stage.count).max() ?? 0)
    for (index, entry) in view.stageTimeline.enumerated() {
      let isLast = index == view.stageTimeline.count - 1
      let running = isLast && !view.isFinished
      let end = isLast ? (view.isFinished ? view.updatedAt : now) : view.stageTimeline[index + 1].enteredAt
      let took = duration(end.timeIntervalSince(entry.enteredAt))
      let mark = running ? style.yellow("▶") : style.green("✔")
      let name = entry.stage.padding(toLength: width, withPad: " ", startingAt: 0)
      let offset = "+" + duration(entry.enteredAt.timeIntervalSince(view.createdAt))
      lines.append(
        "  \(mark) \(name)  \(clock(entry.enteredAt))  \(pad(offset, 8))  \(running ? "for \(took)" : took)")
    }
    let rollingBack = view.status.hasPrefix("ROLLBACK") || view.status.hasPrefix("STOP")
    if !view.isFinished && !rollingBack {
      let entered = view.stageTimeline.last.flatMap { stageOrder.firstIndex(of: $0.stage) } ?? -1
      for stage in stageOrder.dropFirst(entered + 1) { lines.append(style.dim("  · \(stage)")) }
    }
    if lines.isEmpty { lines.append("  none yet") }
    return lines
  }

  /// One line per revision and node: `web:2  n1  2/2  ✔`.
  public static func taskLines(_ view: DeploymentView, style: RenderStyle = .plain) -> [String] {
    let revisionWidth = view.tasks.map(\.revision.count).max() ?? 0
    let nodeWidth = view.tasks.map(\.node.count).max() ?? 0
    let ordered = view.tasks.sorted {
      ($0.revision == view.blue ? 0 : 1, $0.revision, $0.node) < (
        $1.revision == view.blue ? 0 : 1, $1.revision, $1.node
      )
    }
    return ordered.map { count in
      let revision = count.revision.padding(toLength: revisionWidth, withPad: " ", startingAt: 0)
      let painted = count.revision == view.green ? style.green(revision) : style.blue(revision)
      let health =
        count.running == 0
        ? style.dim("-") : count.healthy >= count.running ? style.green("✔") : style.yellow("…")
      return "  \(painted)  \(count.node.padding(toLength: nodeWidth, withPad: " ", startingAt: 0))  "
        + "\(pad("\(count.healthy)/\(count.running)", 7))  \(health)"
    }
  }

  /// Summary rows of `teal deployment list`.
  public static func listRows(_ deployments: [DeploymentSummaryView]) -> [[String]] {
    deployments.map {
      [
        $0.id, $0.service, $0.status, $0.stage ?? "-", "\($0.blue) → \($0.green)", clock($0.createdAt),
        clock($0.updatedAt),
      ]
    }
  }

  static func pad(_ text: String, _ width: Int) -> String {
    text.count >= width ? text : String(repeating: " ", count: width - text.count) + text
  }
}
