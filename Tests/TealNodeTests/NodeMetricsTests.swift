// Issue 17 (#15 in its text), item 2: the node's metrics parts that need no cluster: the catalogue
// against Docs/OPERATIONS.md, the fsync timer, gauges whose label sets change.

import Foundation
import TealMetrics
import TealStorage
import TealTestSupport
import Testing

@testable import TealNode

@Suite("Node metrics")
struct NodeMetricsTests {
  /// The table of Docs/OPERATIONS.md, "Metrics": every series of the catalogue with its type and
  /// labels, and nothing else.
  @Test func theOperationsGuideListsEverySeriesWithItsTypeAndLabels() throws {
    let docs = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
      .deletingLastPathComponent().appendingPathComponent("Docs/OPERATIONS.md")
    let text = try String(contentsOf: docs, encoding: .utf8)
    let section = try #require(text.components(separatedBy: "## Metrics").dropFirst().first)
    var documented: [String: (type: String, labels: [String])] = [:]
    for line in section.split(separator: "\n") where line.hasPrefix("| `teal_") {
      let cells = line.split(separator: "|", omittingEmptySubsequences: false).map {
        $0.trimmingCharacters(in: .whitespaces)
      }
      let name = cells[1].trimmingCharacters(in: CharacterSet(charactersIn: "`"))
      let labels = cells[3].split(separator: ",").map {
        $0.trimmingCharacters(in: CharacterSet(charactersIn: "` "))
      }.filter { !$0.isEmpty }
      documented[name] = (cells[2], labels)
    }
    for description in TealMetricCatalogue.all {
      let entry = documented[description.name]
      #expect(entry?.type == description.kind.rawValue, "\(description.name) in Docs/OPERATIONS.md")
      #expect(entry?.labels == description.labels, "\(description.name)'s labels in Docs/OPERATIONS.md")
    }
    #expect(Set(documented.keys) == Set(TealMetricCatalogue.byName.keys))
  }

  @Test func everyFsyncOfTheLogIsTimed() async throws {
    let registry = NodeMetricsRegistry()
    let directory = NSTemporaryDirectory() + "teal-fsync-\(UUID().uuidString)"
    defer { try? FileManager.default.removeItem(atPath: directory) }
    let fileSystem = TimedFileSystem(base: PosixFileSystem(), factory: registry.factory)
    try fileSystem.createDirectory(directory)
    let file = try fileSystem.openFile(directory + "/log", create: true)
    try file.write([1, 2, 3], at: 0)
    try file.syncData()
    try file.syncAll()
    file.close()
    try fileSystem.syncDirectory(directory)
    let exposition = try PrometheusExposition(parsing: await registry.exposition())
    #expect(exposition.value("teal_raft_fsync_duration_seconds_count") == 3)
    #expect(exposition.families["teal_raft_fsync_duration_seconds"]?.type == "histogram")
    #expect(exposition.families["teal_raft_fsync_duration_seconds"]?.help?.isEmpty == false)
  }

  @Test func aGaugeFamilyDropsTheSeriesThatAreGone() async throws {
    let registry = NodeMetricsRegistry()
    let family = GaugeFamily(name: "teal_tasks_running", factory: registry.factory)
    family.set([([("service", "web")], 2), ([("service", "api")], 1)])
    var exposition = try PrometheusExposition(parsing: await registry.exposition())
    #expect(exposition.value("teal_tasks_running", ["service": "web"]) == 2)
    #expect(exposition.value("teal_tasks_running", ["service": "api"]) == 1)
    family.set([([("service", "web")], 3)])
    exposition = try PrometheusExposition(parsing: await registry.exposition())
    #expect(exposition.value("teal_tasks_running", ["service": "web"]) == 3)
    #expect(exposition.samples("teal_tasks_running", matching: ["service": "api"]).isEmpty)
  }

  /// Every family a node can emit is in the catalogue, so it gets a HELP line and its documented type.
  @Test func theExpositionHasAHelpLineFromTheCatalogue() async throws {
    let registry = NodeMetricsRegistry()
    let metrics = NodeMetrics(registry: registry)
    metrics.count("teal_raft_proposals_total", [("outcome", "applied")])
    metrics.gauge("teal_raft_term", [], 4)
    let exposition = try PrometheusExposition(parsing: await registry.exposition())
    #expect(
      exposition.families["teal_raft_proposals_total"]?.help
        == "Entries this node proposed to its Raft log as leader, by outcome.")
    #expect(exposition.families["teal_raft_term"]?.type == "gauge")
    #expect(exposition.value("teal_raft_term") == 4)
  }
}
