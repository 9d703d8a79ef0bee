// The run's deployment invariant checks on made-up observations: they find what they claim to.

import Foundation
import Testing

@Suite("The Jepsen run's deployment invariants")
struct InvariantTests {
  private func event(_ index: UInt64, _ kind: String, _ message: String) -> EventsView.Event {
    EventsView.Event(index: index, kind: kind, service: "web", message: message)
  }

  @Test func blueRetiredBeforeCleanUpOfASuccessfulDeploymentIsAViolation() {
    let placed = [
      event(10, "taskPlaced", "task web.1.1 of web:1 placed on n1"),
      event(11, "taskPlaced", "task web.1.2 of web:1 placed on n2"),
      event(20, "deploymentSubmitted", "deployment web-20 submitted"),
      event(21, "taskPlaced", "task web.2.3 of web:2 placed on n1"),
    ]
    let cleanUp = event(40, "deploymentProgress", "deployment web-20 IN_PROGRESS at CLEAN_UP")
    let early = event(
      30, "taskDraining",
      "task web.1.1 draining (revision web:1 is no longer deployed); stops once every live node applied routes generation 4"
    )
    let late = event(
      41, "taskDraining",
      "task web.1.2 draining (revision web:1 is no longer deployed); stops once every live node applied routes generation 5"
    )
    let nodeShutdown = event(
      31, "taskDraining",
      "task web.1.2 draining (node n2 is shutting down); stops once every live node applied routes generation 4")
    let fine = checkBlueKeptUntilCleanUp(
      events: placed + [nodeShutdown, cleanUp, late], deployments: ["web-20": "SUCCESSFUL"],
      blueOf: ["web-20": "web:1"])
    #expect(fine.isEmpty, "\(fine)")
    let broken = checkBlueKeptUntilCleanUp(
      events: placed + [early, cleanUp, late], deployments: ["web-20": "SUCCESSFUL"], blueOf: ["web-20": "web:1"])
    #expect(broken.count == 1 && broken[0].contains("web.1.1"), "\(broken)")
    // A rolled-back deployment is not held to it; a successful one without CLEAN_UP is a violation.
    #expect(
      checkBlueKeptUntilCleanUp(
        events: placed + [early], deployments: ["web-20": "ROLLBACK_SUCCESSFUL"], blueOf: ["web-20": "web:1"]
      ).isEmpty)
    #expect(
      checkBlueKeptUntilCleanUp(events: placed, deployments: ["web-20": "SUCCESSFUL"], blueOf: ["web-20": "web:1"])
        .count == 1)
  }

  @Test func twoControllersInOneTermAndWeightsOffOneHundredAreViolations() {
    let observer = DeploymentObserver()
    func view(node: String, term: UInt64, blue: Double, green: Double, status: String = "IN_PROGRESS")
      -> DeploymentView
    {
      DeploymentView(
        id: "web-20", status: status, stage: "PRODUCTION_TRAFFIC_SHIFT", blue: "web:1", green: "web:2",
        weights: .init(production: .init(blue: blue, green: green), test: .init(blue: 0, green: 100), generation: 3),
        controller: .init(node: node, term: term))
    }
    observer.observe(view(node: "n1", term: 2, blue: 90, green: 10), from: "n1")
    observer.observe(view(node: "n1", term: 2, blue: 50, green: 50), from: "n2")
    observer.observe(view(node: "n3", term: 3, blue: 0, green: 100), from: "n3")
    #expect(observer.violations.isEmpty, "\(observer.violations)")
    observer.observe(view(node: "n2", term: 3, blue: 60, green: 30), from: "n2")
    #expect(observer.violations.count == 2, "\(observer.violations)")
    #expect(observer.violations.contains { $0.contains("two controllers in term 3") })
    #expect(observer.violations.contains { $0.contains("60.0 + 30.0") })
    #expect(observer.controllers[3] == ["n2", "n3"])
  }
}
