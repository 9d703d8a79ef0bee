// The pure state of `teal deployment watch`: each poll's answer (a view, or why there was none) in,
// the text to write out. The command owns the clock, the terminal check and the polling.

import Foundation
import TealAPI

/// What one poll writes: to standard output and, for notes in `--json` mode, standard error.
public struct WatchOutput: Equatable, Sendable {
  public var stdout: String
  public var stderr: String

  public init(stdout: String = "", stderr: String = "") {
    self.stdout = stdout
    self.stderr = stderr
  }

  public var isEmpty: Bool { stdout.isEmpty && stderr.isEmpty }
}

public struct DeploymentWatcher: Sendable {
  public enum Mode: Sendable, Equatable {
    /// Redraw the whole view in place every poll. Lines are cut to `width` columns and the frame
    /// to `height - 1` lines (the recent history goes first), so that the cursor can always move
    /// back to the frame's top.
    case terminal(style: RenderStyle, width: Int, height: Int)
    /// Plain lines, only for what changed since the last poll.
    case plain
    /// One DeploymentView JSON object per line, only when the view changed.
    case json
  }

  public let mode: Mode
  /// The last view received.
  public private(set) var last: DeploymentView?
  /// The watch's own notes (controller changes, lost and regained contact), newest last; at most
  /// `maximumNotes` are kept for the terminal view.
  public private(set) var notes: [String] = []
  public static let maximumNotes = 6
  /// Why the last poll failed, while polls fail.
  public private(set) var outage: (reason: String, since: Date)?
  /// Lines of the frame drawn last (terminal mode), to move the cursor back over.
  private var drawnLines = 0

  public init(mode: Mode) { self.mode = mode }

  /// The exit status of `teal deployment watch` for a final `status`: 0 SUCCESSFUL, 2
  /// ROLLBACK_SUCCESSFUL, 3 STOPPED, 4 ROLLBACK_FAILED (1 is for errors: no such deployment, no
  /// cluster). Nil while the status is not final.
  public static func exitCode(forFinal status: String) -> Int32? {
    switch status {
    case "SUCCESSFUL": return 0
    case "ROLLBACK_SUCCESSFUL": return 2
    case "STOPPED": return 3
    case "ROLLBACK_FAILED": return 4
    default: return nil
    }
  }

  /// A poll answered with `view` (from `node`, when known; `stale`: the node's own state, read while
  /// no leader answered).
  public mutating func received(_ view: DeploymentView, from node: String? = nil, stale: Bool = false, now: Date)
    -> WatchOutput
  {
    var changes: [String] = []
    if let outage {
      let via = node.map { " via \($0)" } ?? ""
      let kind = stale ? " (its own state: no leader answered yet)" : ""
      changes.append(
        "in contact again\(via)\(kind) after \(DeploymentRendering.duration(now.timeIntervalSince(outage.since)))")
      self.outage = nil
    }
    if let last, last.controller != view.controller {
      changes.append(DeploymentRendering.controllerChange(from: last.controller, to: view.controller))
    }
    let previous = last
    last = view
    for change in changes { note(change, now: now) }

    switch mode {
    case .json:
      var output = WatchOutput()
      if previous != view, let data = try? TealJSON.encode(view) {
        output.stdout = String(decoding: data, as: UTF8.self) + "\n"
      }
      output.stderr = changes.map { "teal: \($0)\n" }.joined()
      return output
    case .plain:
      let lines = changes + Self.changeLines(from: previous, to: view)
      return WatchOutput(stdout: lines.map { "\(DeploymentRendering.clock(now))  \($0)\n" }.joined())
    case .terminal(let style, let width, let height):
      return WatchOutput(stdout: frame(view, style: style, width: width, height: height, now: now))
    }
  }

  /// A poll failed with `reason` (the client already tried the other nodes). Says so once per
  /// outage; the terminal view shows how long it has lasted.
  public mutating func failed(_ reason: String, now: Date) -> WatchOutput {
    let first = outage == nil
    if first {
      outage = (reason, now)
      note("no answer (\(reason)); still trying every node", now: now)
    } else {
      outage?.reason = reason
    }
    switch mode {
    case .json:
      return first ? WatchOutput(stderr: "teal: no answer (\(reason)); still trying every node\n") : WatchOutput()
    case .plain:
      return first
        ? WatchOutput(stdout: "\(DeploymentRendering.clock(now))  no answer (\(reason)); still trying every node\n")
        : WatchOutput()
    case .terminal(let style, let width, let height):
      guard let last else {
        return WatchOutput(stdout: redraw(["waiting for the deployment: no answer (\(reason))"], width: width))
      }
      return WatchOutput(stdout: frame(last, style: style, width: width, height: height, now: now))
    }
  }

  private mutating func note(_ text: String, now: Date) {
    notes.append("\(DeploymentRendering.clock(now))  \(text)")
    if notes.count > Self.maximumNotes { notes.removeFirst(notes.count - Self.maximumNotes) }
  }

  private mutating func frame(_ view: DeploymentView, style: RenderStyle, width: Int, height: Int, now: Date)
    -> String
  {
    var tail: [String] = []
    if !notes.isEmpty {
      tail.append("")
      tail.append(style.bold("Watch"))
      tail += notes.map { "  \($0)" }
    }
    if let outage {
      tail.append(
        style.red(
          "  ⚠ no answer for \(DeploymentRendering.duration(now.timeIntervalSince(outage.since))): \(outage.reason)"))
    }
    if view.isFinished {
      tail.append("")
      tail.append("final status: \(view.status)")
    }
    let maximum = max(4, height - 1)
    var lines = DeploymentRendering.lines(view, now: now, style: style) + tail
    if lines.count > maximum {
      var compact = view
      compact.recent = []
      lines = DeploymentRendering.lines(compact, now: now, style: style) + tail
    }
    if lines.count > maximum {
      let hidden = lines.count - maximum + 1
      lines = Array(lines.prefix(maximum - 1)) + [style.dim("… \(hidden) more lines: enlarge the terminal")]
    }
    return redraw(lines, width: width)
  }

  /// Moves the cursor up over the last frame and writes `lines` over it, clearing each line and
  /// what is left below.
  private mutating func redraw(_ lines: [String], width: Int) -> String {
    var out = drawnLines > 0 ? "\r\u{1B}[\(drawnLines)A" : ""
    for line in lines { out += "\u{1B}[2K" + Self.cut(line, to: width) + "\n" }
    out += "\u{1B}[J"
    drawnLines = lines.count
    return out
  }

  /// `line` shortened to `width` visible columns (ANSI sequences do not count and are kept).
  public static func cut(_ line: String, to width: Int) -> String {
    guard width > 0 else { return line }
    var out = ""
    var visible = 0
    var inEscape = false
    var cutShort = false
    for character in line {
      if inEscape {
        out.append(character)
        if character.isLetter { inEscape = false }
        continue
      }
      if character == "\u{1B}" {
        inEscape = true
        out.append(character)
        continue
      }
      if visible >= width {
        cutShort = true
        continue
      }
      out.append(character)
      visible += 1
    }
    return cutShort && line.contains("\u{1B}") ? out + "\u{1B}[0m" : out
  }

  // MARK: Plain lines

  /// What changed from `old` to `new`, one line each; everything worth saying when `old` is nil.
  public static func changeLines(from old: DeploymentView?, to new: DeploymentView) -> [String] {
    var lines: [String] = []
    if old == nil {
      lines.append("deployment \(new.id): \(new.service) \(new.blue) → \(new.green) (\(new.strategy))")
      lines.append("controller \(DeploymentRendering.controller(new.controller))")
    }
    if old?.status != new.status || old?.stage != new.stage {
      var line = "status \(new.status)"
      if let stage = new.stage { line += " at \(stage)" }
      lines.append(line)
    }
    let known = old?.stageTimeline.count ?? 0
    if new.stageTimeline.count > known {
      for entry in new.stageTimeline.dropFirst(known) {
        lines.append("stage \(entry.stage) entered at \(DeploymentRendering.clock(entry.enteredAt))")
      }
    }
    if old?.weights != new.weights {
      let weights = new.weights
      lines.append(
        "weights (generation \(weights.generation)): production blue \(DeploymentRendering.percent(weights.production.blue)) "
          + "green \(DeploymentRendering.percent(weights.production.green)); test blue "
          + "\(DeploymentRendering.percent(weights.test.blue)) green \(DeploymentRendering.percent(weights.test.green))"
      )
    }
    if old?.bake != new.bake, let bake = new.bake {
      if let endsAt = bake.endsAt, bake.startedAt != nil {
        if let oldEnd = old?.bake?.endsAt, oldEnd != endsAt, old?.bake?.startedAt != nil {
          lines.append(
            "bake end moved: \(DeploymentRendering.clock(oldEnd)) → \(DeploymentRendering.clock(endsAt))")
        } else {
          lines.append(
            "bake started: \(DeploymentRendering.duration(bake.seconds)), ends \(DeploymentRendering.clock(endsAt))")
        }
      } else if old?.bake == nil {
        lines.append("bake time \(DeploymentRendering.duration(bake.seconds)), not started")
      }
    }
    let oldHooks = Dictionary((old?.hooks ?? []).map { ($0.executionId, $0) }, uniquingKeysWith: { $1 })
    for hook in new.hooks where oldHooks[hook.executionId] != hook {
      let before = oldHooks[hook.executionId]
      if let result = hook.result, before?.result != result {
        lines.append(
          "hook \(hook.stage) \(hook.executionId): \(result) after \(hook.attempts) attempt\(hook.attempts == 1 ? "" : "s")"
        )
      } else if hook.attempts != before?.attempts {
        lines.append("hook \(hook.stage) \(hook.executionId): attempt \(hook.attempts)")
      }
    }
    if old?.tasks != new.tasks {
      lines.append("tasks " + taskSummary(new))
    }
    if old?.pausedBy != new.pausedBy {
      lines.append(new.pausedBy.map { "paused by \($0)" } ?? "resumed")
    }
    if old?.reason != new.reason, let reason = new.reason { lines.append("reason: \(reason)") }
    let oldNotes = Set((old?.recent ?? []).map { "\($0.at.timeIntervalSince1970) \($0.message)" })
    if old != nil {
      for note in new.recent where !oldNotes.contains("\(note.at.timeIntervalSince1970) \(note.message)") {
        lines.append("note \(DeploymentRendering.clock(note.at)) \(note.message)")
      }
    }
    if new.isFinished && old?.isFinished != true { lines.append("final status \(new.status)") }
    return lines
  }

  /// `web:1 n1 1/1 n2 1/1; web:2 n1 0/1` (healthy/running per node).
  public static func taskSummary(_ view: DeploymentView) -> String {
    if view.tasks.isEmpty { return "none" }
    let byRevision = Dictionary(grouping: view.tasks, by: \.revision)
    let order = byRevision.keys.sorted { ($0 == view.blue ? 0 : 1, $0) < ($1 == view.blue ? 0 : 1, $1) }
    return order.map { revision in
      revision + " "
        + (byRevision[revision] ?? []).sorted { $0.node < $1.node }.map { "\($0.node) \($0.healthy)/\($0.running)" }
        .joined(separator: " ")
    }.joined(separator: "; ")
  }
}
