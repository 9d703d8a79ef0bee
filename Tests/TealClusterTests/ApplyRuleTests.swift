import TealDeploy
import TealWire
import Testing

@testable import TealCluster

/// One test per rule of ClusterState.apply (Docs/CLUSTER-STATE.md).
@Suite struct ApplyRuleTests {
  // MARK: Time

  @Test func logTimeNeverRunsBackwards() {
    var log = Log()
    log.apply(.announceNode(nodeInfo("n1", 1)), at: 10_000)
    #expect(log.state.logTime == LogTime(millisecondsSinceEpoch: 10_000))
    log.apply(.createService(makeSpec()), at: 4_000)  // a proposer with a slow clock
    #expect(log.state.logTime == LogTime(millisecondsSinceEpoch: 10_000))
    #expect(log.state.services["web"]?.createdAt == LogTime(millisecondsSinceEpoch: 10_000))
    #expect(log.state.history.events.allSatisfy { $0.time == LogTime(millisecondsSinceEpoch: 10_000) })
    log.apply(.scaleService(service: "web", desiredCount: 1), at: 12_000)
    #expect(log.state.logTime == LogTime(millisecondsSinceEpoch: 12_000))
  }

  @Test func logTimePrintsAsISO8601WithMilliseconds() {
    #expect(LogTime(millisecondsSinceEpoch: 0).iso8601 == "1970-01-01T00:00:00.000Z")
    #expect(LogTime(millisecondsSinceEpoch: 1_764_576_000_123).iso8601 == "2025-12-01T08:00:00.123Z")
    #expect(LogTime(millisecondsSinceEpoch: 951_782_400_000).iso8601 == "2000-02-29T00:00:00.000Z")
    #expect(LogTime(millisecondsSinceEpoch: -1).iso8601 == "1969-12-31T23:59:59.999Z")
  }

  // MARK: Leader-only commands

  @Test func leaderOnlyCommandFromAnEarlierTermIsRejected() {
    var log = Log()
    log.announce(2)
    log.ok(.createService(makeSpec()))
    log.term = 3
    let before = log.state
    for command in [
      ClusterCommand.placeTask(service: "web", revision: 1, node: NodeID("n1")),
      .nodeDown(node: NodeID("n2"), incarnation: 1),
      .nodeUp(node: NodeID("n2"), incarnation: 2),
      .retireTask(taskID: "web.1.1", reason: "x"),
    ] {
      let result = log.apply(command, stampTerm: 2)
      guard case .rejected(let rejection) = result else {
        Issue.record("\(command.name) from term 2 applied in term 3: \(result)")
        continue
      }
      #expect(rejection.code == .staleTerm)
    }
    #expect(log.state.tasks.isEmpty)
    #expect(log.state.nodes == before.nodes)
    #expect(log.state.services == before.services)
    // The same command stamped with the entry's term applies.
    #expect(log.apply(.placeTask(service: "web", revision: 1, node: NodeID("n1")), stampTerm: 3).isOK)
  }

  @Test func reportsFromAnEarlierTermAreFactsAndApply() {
    var log = Log()
    log.announce(1)
    log.ok(.createService(makeSpec()))
    let task = log.place("web", on: "n1")
    log.term = 5
    let result = log.apply(
      .taskReports(
        node: NodeID("n1"),
        reports: [TaskReport(taskID: task, state: .running, healthy: true, address: "127.0.0.1", port: 20_001)]),
      stampTerm: 4)
    #expect(result == .ok(.reportsApplied(accepted: 1, ignored: 0)))
    #expect(log.state.tasks[task]?.state == .running)
  }

  @Test func reportForAnUnknownTaskOrAnotherNodeIsIgnored() {
    var log = Log()
    log.announce(2)
    log.ok(.createService(makeSpec()))
    let task = log.place("web", on: "n1")
    let result = log.apply(
      .taskReports(
        node: NodeID("n2"),
        reports: [
          TaskReport(taskID: task, state: .running, healthy: true, address: "127.0.0.2", port: 1),
          TaskReport(taskID: "web.1.99", state: .running, healthy: true, address: "127.0.0.2", port: 1),
        ]))
    #expect(result == .ok(.reportsApplied(accepted: 0, ignored: 2)))
    #expect(log.state.tasks[task]?.state == .pending)
  }

  // MARK: Idempotency

  @Test func sameKeyAndBodyReturnsTheFirstAnswerWithNoEffect() {
    var log = Log()
    let first = log.apply(.createService(makeSpec()), key: "k-1", digest: "body-a")
    #expect(first == .ok(.serviceCreated(service: "web", revision: RevisionID(service: "web", number: 1))))
    let eventsAfterFirst = log.state.history.count
    let services = log.state.services
    let retry = log.apply(.createService(makeSpec()), key: "k-1", digest: "body-a")
    #expect(retry == first)  // not `conflict`: the retry gets the first answer
    #expect(log.state.services == services)
    #expect(log.state.history.count == eventsAfterFirst)
    // Without the key, the same request is a second request.
    guard case .rejected(let rejection) = log.apply(.createService(makeSpec())) else {
      Issue.record("second create without key applied")
      return
    }
    #expect(rejection.code == .conflict)
  }

  @Test func sameKeyWithAnotherBodyIsRefused() {
    var log = Log()
    log.ok(.createService(makeSpec()))
    log.ok(.scaleService(service: "web", desiredCount: 2), key: "k-1", digest: "scale-2")
    let result = log.apply(.scaleService(service: "web", desiredCount: 5), key: "k-1", digest: "scale-5")
    guard case .rejected(let rejection) = result else {
      Issue.record("reused key applied: \(result)")
      return
    }
    #expect(rejection.code == .idempotencyMismatch)
    #expect(rejection.message.contains("k-1"))
    #expect(log.state.services["web"]?.desiredCount == 2)
  }

  @Test func idempotencyRecordsExpireByLogTime() {
    var log = Log()
    log.ok(.createService(makeSpec()), key: "k-1", digest: "a")
    log.advance(milliseconds: 24 * 3_600_000 - 1)
    #expect(log.apply(.createService(makeSpec()), key: "k-1", digest: "a").isOK)  // still recorded
    log.advance(milliseconds: 1)
    // Expired: the key is new again, so the request applies and meets the existing service.
    guard case .rejected(let rejection) = log.apply(.createService(makeSpec()), key: "k-1", digest: "a") else {
      Issue.record("expired key still answered")
      return
    }
    #expect(rejection.code == .conflict)
    #expect(log.state.idempotency.record(for: "k-1")?.result == .rejected(rejection))
  }

  @Test func idempotencyTableEvictsTheOldestBeyondItsBound() {
    var log = Log(state: ClusterState(idempotencyCapacity: 3))
    log.ok(.createService(makeSpec()))
    for number in 1...4 {
      log.ok(.scaleService(service: "web", desiredCount: number), key: "k-\(number)", digest: "\(number)")
    }
    #expect(log.state.idempotency.count == 3)
    #expect(log.state.idempotency.record(for: "k-1") == nil)
    #expect(log.state.idempotency.record(for: "k-2") != nil)
    // k-1 is forgotten: another body under it applies instead of being refused.
    #expect(log.apply(.scaleService(service: "web", desiredCount: 7), key: "k-1", digest: "other").isOK)
    #expect(log.state.idempotency.record(for: "k-2") == nil)
  }

  @Test func staleTermRefusalIsNotRecordedUnderTheKey() {
    var log = Log()
    log.announce(1)
    log.ok(.createService(makeSpec()))
    log.term = 2
    let stale = log.apply(.placeTask(service: "web", revision: 1, node: NodeID("n1")), key: "p", stampTerm: 1)
    #expect(stale.isOK == false)
    #expect(log.state.idempotency.record(for: "p") == nil)
  }

  // MARK: Requests

  @Test func createServiceRegistersRevisionOneWithTheSpecDigest() {
    var log = Log()
    let spec = makeSpec()
    log.ok(.createService(spec))
    let service = log.state.services["web"]
    #expect(service?.revisions.map(\.id) == [RevisionID(service: "web", number: 1)])
    #expect(service?.revisions.first?.digest == Revision.digest(of: spec))
    #expect(service?.routes.production == [RevisionID(service: "web", number: 1): 10_000])
    #expect(service?.routes.generation == 1)
    #expect(ServiceRoutes.percentages(service!.routes.production) == ["web:1": 100])
  }

  @Test func createServiceRefusesTakenNamesAndPortsNamingTheField() {
    var log = Log()
    log.ok(.createService(makeSpec()))
    let cases: [(ServiceSpec, ClusterRejection.Code, String)] = [
      (makeSpec(productionPort: 9100, testPort: 9101), .conflict, "name"),
      (makeSpec("api", productionPort: 8001, testPort: 8100), .conflict, "productionPort"),
      (makeSpec("api", productionPort: 8100, testPort: 8000), .conflict, "testPort"),
      (makeSpec("Api", productionPort: 8100, testPort: 8101), .invalidSpec, "name"),
      (makeSpec("api", desiredCount: 1001, productionPort: 8100, testPort: 8101), .invalidSpec, "desiredCount"),
      (makeSpec("api", productionPort: 8100, testPort: 8100), .invalidSpec, "testPort"),
      (makeSpec("api", productionPort: 0, testPort: 8100), .invalidSpec, "productionPort"),
    ]
    for (spec, code, field) in cases {
      guard case .rejected(let rejection) = log.apply(.createService(spec)) else {
        Issue.record("\(spec.name) \(spec.productionPort)/\(spec.testPort) was accepted")
        continue
      }
      #expect(rejection.code == code)
      #expect(rejection.field == field)
    }
    #expect(log.state.services.keys.sorted() == ["web"])
  }

  @Test func specWhoseTaskBreaksAShellRuleIsRefusedNamingTheField() {
    var log = Log()
    var badPort = makeSpec()
    badPort.task.port = 70_000
    var badCheck = makeSpec()
    badCheck.task.healthCheck.timeout = .seconds(10)
    var noCommand = makeSpec()
    noCommand.task.command = ""
    for (spec, field) in [(badPort, "task.port"), (badCheck, "task.healthCheck.timeout"), (noCommand, "task.command")] {
      guard case .rejected(let rejection) = log.apply(.createService(spec)) else {
        Issue.record("accepted a spec with a bad \(field)")
        continue
      }
      #expect(rejection.code == .invalidSpec)
      #expect(rejection.field == field)
    }
    log.ok(.createService(makeSpec()))
    guard case .rejected(let rejection) = log.apply(.registerRevision(service: "web", spec: badPort)) else {
      Issue.record("registered a revision with a bad task port")
      return
    }
    #expect(rejection.field == "task.port")
  }

  @Test func registerRevisionNumbersNewSpecsAndReusesAnEqualLatest() {
    var log = Log()
    log.ok(.createService(makeSpec()))
    #expect(
      log.ok(.registerRevision(service: "web", spec: makeSpec()))
        == .revisionRegistered(revision: RevisionID(service: "web", number: 1), isNew: false))
    #expect(
      log.ok(.registerRevision(service: "web", spec: makeSpec(command: "/usr/bin/v2")))
        == .revisionRegistered(revision: RevisionID(service: "web", number: 2), isNew: true))
    #expect(log.state.services["web"]?.currentRevision == 1)  // a deployment moves it
    guard case .rejected(let rejection) = log.apply(.registerRevision(service: "web", spec: makeSpec("api"))) else {
      Issue.record("revision of another service accepted")
      return
    }
    #expect(rejection.field == "name")
  }

  @Test func aTakenListenerPortNamesTheFirstServiceInNameOrder() {
    var log = Log()
    for index in [7, 3, 5] {
      log.ok(.createService(makeSpec("s\(index)", productionPort: 100 * index, testPort: 100 * index + 1)))
    }
    // Both ports are taken, by s7 and by s3: every node reports s3, whatever its dictionary order.
    guard case .rejected(let rejection) = log.apply(.createService(makeSpec("x", productionPort: 700, testPort: 301)))
    else {
      Issue.record("a service with taken ports was created")
      return
    }
    #expect(rejection.message == "port 301 is already a listener port of service s3")
    #expect(rejection.field == "testPort")
  }

  @Test func theClusterHoldsAtMostMaximumServices() {
    var log = Log()
    for index in 0..<ClusterState.maximumServices {
      log.ok(
        .createService(makeSpec("s\(index)", desiredCount: 1, productionPort: 2 * index + 1, testPort: 2 * index + 2)))
    }
    let before = log.state.services
    let extra = makeSpec("one-more", desiredCount: 1, productionPort: 60_000, testPort: 60_001)
    guard case .rejected(let rejection) = log.apply(.createService(extra)) else {
      Issue.record("service \(ClusterState.maximumServices + 1) was created")
      return
    }
    #expect(rejection.code == .conflict)
    #expect(rejection.field == "name")
    #expect(rejection.message.contains("at most \(ClusterState.maximumServices)"))
    #expect(log.state.services == before)
    // A service without tasks goes at once; its place is free again.
    #expect(log.ok(.deleteService(service: "s0")) == .serviceDeleting(service: "s0", removed: true))
    #expect(
      log.ok(.createService(extra))
        == .serviceCreated(service: "one-more", revision: RevisionID(service: "one-more", number: 1)))
  }

  @Test func aServiceKeepsAtMostMaximumRevisionsForgettingTheOldestUnused() throws {
    var log = Log()
    log.announce(1)
    log.ok(.createService(makeSpec(desiredCount: 1)))
    let task = log.place("web", on: "n1")
    log.runHealthy(task)
    let limit = ClusterState.maximumRevisionsPerService
    for number in 2...(limit + 50) {
      log.ok(.registerRevision(service: "web", spec: makeSpec(desiredCount: 1, command: "/usr/bin/v\(number)")))
    }
    let service = try #require(log.state.services["web"])
    #expect(service.revisions.count == limit)
    // Revision 1 serves (current, with a task); 2...51 were forgotten, oldest first; the newest stay.
    #expect(service.revisions.map(\.id.number) == [1] + Array(52...(limit + 50)))
    #expect(service.revision(1)?.id.number == 1)
    #expect(service.revision(51) == nil)
    #expect(service.revision(52)?.revision.spec.task.command == "/usr/bin/v52")
    #expect(service.revision(limit + 50) != nil && service.revision(limit + 51) == nil)
    // Numbers go on from the newest, never reusing a forgotten one.
    #expect(
      log.ok(.registerRevision(service: "web", spec: makeSpec(desiredCount: 1, command: "/usr/bin/next")))
        == .revisionRegistered(revision: RevisionID(service: "web", number: limit + 51), isNew: true))
    // A state with gaps in its revision numbers snapshots and restores to the same bytes.
    let bytes = log.state.snapshot()
    let restored = try ClusterState(snapshot: bytes)
    #expect(restored.snapshot() == bytes)
    #expect(restored.services["web"]?.revision(limit + 51) != nil)
  }

  @Test func scaleAndDeleteOfAnUnknownServiceAreNotFound() {
    var log = Log()
    for command in [ClusterCommand.scaleService(service: "nope", desiredCount: 1), .deleteService(service: "nope")] {
      guard case .rejected(let rejection) = log.apply(command) else {
        Issue.record("\(command.name) of unknown service applied")
        continue
      }
      #expect(rejection.code == .notFound)
    }
  }

  // MARK: Routes

  @Test func routesTargetOnlyHealthyRunningTasksOnUpNodes() {
    var log = Log()
    log.announce(3)
    log.ok(.createService(makeSpec()))
    let healthy = log.place("web", on: "n1")
    let unhealthy = log.place("web", on: "n2")
    let starting = log.place("web", on: "n3")
    log.runHealthy(healthy, port: 20_001)
    log.ok(
      .taskReports(
        node: NodeID("n2"),
        reports: [TaskReport(taskID: unhealthy, state: .running, healthy: false, address: "127.0.0.2", port: 20_002)]))
    log.ok(
      .taskReports(
        node: NodeID("n3"),
        reports: [TaskReport(taskID: starting, state: .starting, healthy: true, address: "127.0.0.3", port: 20_003)]))
    let routes = log.state.services["web"]!.routes
    #expect(
      routes.targets == [
        RouteTarget(
          taskID: healthy, node: NodeID("n1"), address: "127.0.0.1", port: 20_001,
          revision: RevisionID(service: "web", number: 1))
      ])
    #expect(log.state.tasks[starting]?.healthy == false)  // only a running task can be healthy
    let generation = routes.generation
    log.ok(.nodeDown(node: NodeID("n1"), incarnation: 4))
    #expect(log.state.services["web"]!.routes.targets.isEmpty)
    #expect(log.state.services["web"]!.routes.generation == generation + 1)
    #expect(log.state.tasks[healthy] == nil)  // the node is dead: removed, no drain
  }

  @Test func routesGenerationChangesExactlyWhenTargetsChange() {
    var log = Log()
    log.announce(2)
    log.ok(.createService(makeSpec()))
    #expect(log.state.services["web"]?.routes.generation == 1)
    let task = log.place("web", on: "n1")
    #expect(log.state.services["web"]?.routes.generation == 1)  // pending: not a target
    log.runHealthy(task)
    #expect(log.state.services["web"]?.routes.generation == 2)
    log.runHealthy(task)  // the same report again
    #expect(log.state.services["web"]?.routes.generation == 2)
    log.ok(.scaleService(service: "web", desiredCount: 5))
    #expect(log.state.services["web"]?.routes.generation == 2)
    log.runHealthy(task, port: 20_999)  // the task moved port
    #expect(log.state.services["web"]?.routes.generation == 3)
  }

  // MARK: The stop rule

  @Test func retiredTaskStopsOnlyAfterEveryLiveNodeAppliedTheGenerationWithoutIt() {
    var log = Log()
    log.announce(3)
    log.ok(.createService(makeSpec()))
    let task = log.place("web", on: "n2")
    log.runHealthy(task)
    log.allNodesApplyRoutes()
    log.ok(.retireTask(taskID: task, reason: "scaled down"))
    let drain = log.state.services["web"]!.routes.generation
    #expect(log.state.tasks[task]?.desired == .draining)
    #expect(log.state.tasks[task]?.drainGeneration == drain)
    #expect(log.state.services["web"]!.routes.targets.isEmpty)
    log.ok(.routesApplied(node: NodeID("n1"), generations: ["web": drain]))
    log.ok(.routesApplied(node: NodeID("n2"), generations: ["web": drain]))
    log.ok(.routesApplied(node: NodeID("n3"), generations: ["web": drain - 1]))
    #expect(log.state.tasks[task]?.desired == .draining)  // n3 may still route to it
    // A report from the future (beyond the committed generation) is ignored.
    #expect(
      log.ok(.routesApplied(node: NodeID("n3"), generations: ["web": drain + 7]))
        == .reportsApplied(accepted: 0, ignored: 1))
    #expect(log.state.tasks[task]?.desired == .draining)
    log.ok(.routesApplied(node: NodeID("n3"), generations: ["web": drain]))
    #expect(log.state.tasks[task]?.desired == .stopping)
    // Only the owning node's stop report removes it.
    #expect(log.ok(.taskStopped(node: NodeID("n1"), taskID: task)) == .ignored(reason: "task \(task) is on n2, not n1"))
    log.ok(.taskStopped(node: NodeID("n2"), taskID: task))
    #expect(log.state.tasks[task] == nil)
  }

  @Test func stopRuleIgnoresNodesThatAreDown() {
    var log = Log()
    log.announce(3)
    log.ok(.createService(makeSpec()))
    let task = log.place("web", on: "n1")
    log.runHealthy(task)
    log.allNodesApplyRoutes()
    log.ok(.retireTask(taskID: task, reason: "replaced"))
    let drain = log.state.services["web"]!.routes.generation
    log.ok(.routesApplied(node: NodeID("n1"), generations: ["web": drain]))
    log.ok(.routesApplied(node: NodeID("n2"), generations: ["web": drain]))
    #expect(log.state.tasks[task]?.desired == .draining)
    log.ok(.nodeDown(node: NodeID("n3"), incarnation: 1))
    #expect(log.state.tasks[task]?.desired == .stopping)
  }

  @Test func retiringATaskThatWasNeverRoutedStopsOnceNodesCaughtUp() {
    var log = Log()
    log.announce(2)
    log.ok(.createService(makeSpec()))
    let task = log.place("web", on: "n1")
    log.allNodesApplyRoutes()
    log.ok(.retireTask(taskID: task, reason: "never started"))
    #expect(log.state.tasks[task]?.desired == .stopping)  // nodes already applied a generation without it
  }

  @Test func stopReportForATaskStillMeantToRunIsIgnored() {
    var log = Log()
    log.announce(1)
    log.ok(.createService(makeSpec()))
    let task = log.place("web", on: "n1")
    #expect(
      log.ok(.taskStopped(node: NodeID("n1"), taskID: task))
        == .ignored(reason: "task \(task) is running, not stopping"))
    #expect(log.state.tasks[task] != nil)
  }

  @Test func deleteServiceDrainsEveryTaskThenRemovesTheService() {
    var log = Log()
    log.announce(2)
    log.ok(.createService(makeSpec(desiredCount: 2)))
    log.executePlan()
    for task in log.state.tasks.keys.sorted() { log.runHealthy(task) }
    log.allNodesApplyRoutes()
    #expect(log.ok(.deleteService(service: "web")) == .serviceDeleting(service: "web", removed: false))
    #expect(log.state.tasks.values.allSatisfy { $0.desired == .draining })
    #expect(Placement.plan(log.state, now: log.time).isEmpty)
    guard case .rejected(let rejection) = log.apply(.scaleService(service: "web", desiredCount: 3)) else {
      Issue.record("scaled a service being deleted")
      return
    }
    #expect(rejection.code == .conflict)
    log.allNodesApplyRoutes()
    #expect(log.state.tasks.values.allSatisfy { $0.desired == .stopping })
    for task in log.state.tasks.values.sorted(by: { $0.id < $1.id }) {
      log.ok(.taskStopped(node: task.node, taskID: task.id))
    }
    #expect(log.state.services["web"] == nil)
    #expect(log.state.nodes.values.allSatisfy { $0.routesApplied["web"] == nil })
    #expect(log.state.history.events.last?.kind == .serviceDeleted)
  }

  @Test func deleteServiceWithoutTasksRemovesItAtOnce() {
    var log = Log()
    log.ok(.createService(makeSpec()))
    #expect(log.ok(.deleteService(service: "web")) == .serviceDeleting(service: "web", removed: true))
    #expect(log.state.services.isEmpty)
    log.ok(.createService(makeSpec()))  // the name is free again
  }

  @Test func drainNodeRetiresItsTasksAndStopsPlacementOnIt() {
    var log = Log()
    log.announce(2)
    log.ok(.createService(makeSpec(desiredCount: 2)))
    log.executePlan()
    let onTwo = log.state.tasks(on: NodeID("n2")).map(\.id)
    #expect(onTwo.count == 1)
    log.ok(.drainNode(node: NodeID("n2")))
    #expect(log.state.tasks[onTwo[0]]?.desired != .running)
    #expect(Placement.plan(log.state, now: log.time) == [.placeTask(service: "web", revision: 1, node: NodeID("n1"))])
    log.ok(.announceNode(nodeInfo("n2", 2)))  // restarted
    #expect(log.state.nodes["n2"]?.draining == false)
  }

  // MARK: Events

  @Test func eventHistoryKeepsTheNewestWithinItsBound() {
    var log = Log(state: ClusterState(eventCapacity: 4))
    log.ok(.createService(makeSpec()))
    for count in 1...10 { log.ok(.scaleService(service: "web", desiredCount: count)) }
    let events = log.state.history.events
    #expect(events.count == 4)
    #expect(events.map(\.message).last == "service web scaled from 9 to 10")
    #expect(events.map(\.index) == [8, 9, 10, 11])
    #expect(log.state.events(after: 9).map(\.index) == [10, 11])
    #expect(log.state.events(service: "other").isEmpty)
    #expect(log.state.events(limit: 2).map(\.index) == [10, 11])  // the tail
    #expect(log.state.events(after: 7, limit: 2).map(\.index) == [8, 9])  // following from index 7
    #expect(log.state.events(service: "web", after: 11).isEmpty)
  }
}
