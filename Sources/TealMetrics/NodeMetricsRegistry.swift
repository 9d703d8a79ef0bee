// One Prometheus registry per node. No process-global `MetricsSystem.bootstrap`: tests run the
// components of several nodes in one process, so every component gets this registry's factory.

import CoreMetrics
import Foundation
import Prometheus

/// The metrics of one node: a `PrometheusCollectorRegistry`, the swift-metrics factory that records
/// into it (histogram buckets from ``TealMetricCatalogue``), and collectors that refresh gauges read
/// from snapshots (Raft status, connections, members) just before each exposition.
public final class NodeMetricsRegistry: Sendable {
  public let registry: PrometheusCollectorRegistry
  /// Give this to every component (`Counter(label:dimensions:factory:)` and so on).
  public let factory: any MetricsFactory
  private let collectors = Collectors()

  /// The media type of ``exposition()``: the Prometheus text format, version 0.0.4.
  public static let contentType = "text/plain; version=0.0.4; charset=utf-8"

  public init() {
    let registry = PrometheusCollectorRegistry()
    var factory = PrometheusMetricsFactory(registry: registry)
    for description in TealMetricCatalogue.all {
      if let buckets = description.buckets { factory.durationHistogramBuckets[description.name] = buckets }
    }
    self.registry = registry
    self.factory = factory
  }

  /// Adds a collector, run (in the order added) before each exposition. Collectors set gauges from
  /// snapshots; they must be quick (one actor hop, no I/O).
  public func addCollector(_ collector: @escaping @Sendable () async -> Void) {
    self.collectors.add(collector)
  }

  /// Runs the collectors, then renders every series in the Prometheus text format (0.0.4), each
  /// family headed by its HELP (from the catalogue) and TYPE lines.
  public func exposition() async -> String {
    for collector in self.collectors.all { await collector() }
    return Self.addingHelp(to: self.registry.emitToString())
  }

  /// Puts `# HELP name text` before every `# TYPE name …` line of a family the catalogue knows.
  static func addingHelp(to text: String) -> String {
    var out = ""
    out.reserveCapacity(text.utf8.count + 4096)
    for line in text.split(separator: "\n", omittingEmptySubsequences: true) {
      if line.hasPrefix("# TYPE ") {
        let name = line.dropFirst("# TYPE ".count).prefix { $0 != " " }
        if let description = TealMetricCatalogue.byName[String(name)] {
          out += "# HELP \(name) \(escapeHelp(description.help))\n"
        }
      }
      out += line
      out += "\n"
    }
    return out
  }

  private static func escapeHelp(_ help: String) -> String {
    help.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\n", with: "\\n")
  }
}

/// The collectors of one registry (a lock: collectors are added once at wiring time, read per scrape).
private final class Collectors: @unchecked Sendable {
  private let lock = NSLock()
  private var list: [@Sendable () async -> Void] = []

  func add(_ collector: @escaping @Sendable () async -> Void) {
    self.lock.lock()
    defer { self.lock.unlock() }
    self.list.append(collector)
  }

  var all: [@Sendable () async -> Void] {
    self.lock.lock()
    defer { self.lock.unlock() }
    return self.list
  }
}
