// One applyX per command, and the derived state every entry re-establishes: routes, drains and
// the removal of deleted services. Each applyX validates everything before it changes anything,
// so a rejected command leaves the state as it was (apart from log time and applied index).

import TealDeploy
import TealWire

extension ClusterState {
  /// Largest `desiredCount` a service may ask for.
  public static let maximumDesiredCount = 1000
  /// Longest text kept from a command's free-form fields (a retirement reason), in characters.
  public static let maximumReasonLength = 200
  /// Most services the cluster holds, those being deleted included. Each opens two listeners on
  /// every node, so 2,000 services are 4,000 listening sockets per node (Deploy/systemd's
  /// `LimitNOFILE=65536` leaves room for their connections).
  public static let maximumServices = 2000
  /// Most revisions a service keeps. Registering one more forgets the oldest that nothing uses: not
  /// the current or the newest, none a task runs, none a held or past deployment names, none with a
  /// crash-loop record. When more than this are in use, none is forgotten (the count is bounded by
  /// what uses them: 20 past deployments, two held ones, the tasks).
  public static let maximumRevisionsPerService = 100

  // MARK: Requests

  mutating func applyCreateService(
    _ spec: ServiceSpec, _ context: inout ApplyContext
  ) throws(ClusterRejection) -> ClusterResponse {
    if let problem = Self.serviceNameProblem(spec.name) {
      throw ClusterRejection(code: .invalidSpec, message: "service name \"\(spec.name)\" \(problem)", field: "name")
    }
    try Self.checkDesiredCount(spec.desiredCount, field: "desiredCount")
    for (field, port) in [("productionPort", spec.productionPort), ("testPort", spec.testPort)] {
      guard (1...65535).contains(port) else {
        throw ClusterRejection(code: .invalidSpec, message: "\(field) \(port) is not in 1...65535", field: field)
      }
    }
    guard spec.productionPort != spec.testPort else {
      throw ClusterRejection(
        code: .invalidSpec, message: "testPort must differ from productionPort \(spec.productionPort)",
        field: "testPort")
    }
    try Self.checkTask(spec.task)
    if let existing = services[spec.name] {
      throw ClusterRejection(
        code: .conflict,
        message: existing.deleting
          ? "service \(spec.name) is being deleted; create it again once it is gone"
          : "service \(spec.name) already exists",
        field: "name")
    }
    guard services.count < Self.maximumServices else {
      throw ClusterRejection(
        code: .conflict,
        message: "the cluster holds \(services.count) services, at most \(Self.maximumServices); delete one first",
        field: "name")
    }
    // One pass, no sort (creating the 2,000th service stays linear); the first name in sorted
    // order is reported so that every node gives the same message.
    var taken: (name: String, field: String, port: Int)?
    for other in services.values where taken.map({ other.name < $0.name }) ?? true {
      for (field, port) in [("productionPort", spec.productionPort), ("testPort", spec.testPort)]
      where port == other.productionPort || port == other.testPort {
        taken = (other.name, field, port)
        break
      }
    }
    if let taken {
      throw ClusterRejection(
        code: .conflict, message: "port \(taken.port) is already a listener port of service \(taken.name)",
        field: taken.field)
    }
    let revision = Revision(id: RevisionID(service: spec.name, number: 1), spec: spec)
    let weights = [revision.id: ServiceRoutes.fullWeight]
    services[spec.name] = ClusterService(
      name: spec.name, desiredCount: spec.desiredCount, productionPort: spec.productionPort, testPort: spec.testPort,
      revisions: [ClusterRevision(revision: revision, createdAt: logTime)], currentRevision: 1, deleting: false,
      routes: ServiceRoutes(generation: 1, targets: [], production: weights, test: weights), createdAt: logTime)
    record(
      .serviceCreated, service: spec.name,
      "service \(spec.name) created with revision \(revision.id) and \(spec.desiredCount) desired tasks", context)
    context.touchedServices.insert(spec.name)
    return .serviceCreated(service: spec.name, revision: revision.id)
  }

  mutating func applyRegisterRevision(
    _ name: String, _ spec: ServiceSpec, _ context: inout ApplyContext
  ) throws(ClusterRejection) -> ClusterResponse {
    var service = try liveService(name)
    guard spec.name == name else {
      throw ClusterRejection(
        code: .invalidSpec, message: "spec names service \"\(spec.name)\", not \"\(name)\"", field: "name")
    }
    try Self.checkTask(spec.task)
    let digest = Revision.digest(of: spec)
    if let latest = service.revisions.last, latest.digest == digest {
      return .revisionRegistered(revision: latest.id, isNew: false)
    }
    let revision = Revision(id: RevisionID(service: name, number: service.nextRevisionNumber), spec: spec)
    service.revisions.append(ClusterRevision(revision: revision, createdAt: logTime))
    forgetUnusedRevisions(of: &service)
    services[name] = service
    record(.revisionRegistered, service: name, "revision \(revision.id) registered (digest \(digest))", context)
    context.touchedServices.insert(name)
    return .revisionRegistered(revision: revision.id, isNew: true)
  }

  mutating func applyScaleService(
    _ name: String, desiredCount: Int, _ context: inout ApplyContext
  ) throws(ClusterRejection) -> ClusterResponse {
    var service = try liveService(name)
    try Self.checkDesiredCount(desiredCount, field: "desiredCount")
    if let deployment = deploymentInControl(of: name) {
      throw ClusterRejection(
        code: .conflict,
        message:
          "service \(name) is in deployment \(deployment.id) (\(deployment.status.rawValue)); scale it once that ends, or stop it",
        field: "desiredCount")
    }
    if service.desiredCount != desiredCount {
      record(
        .serviceScaled, service: name, "service \(name) scaled from \(service.desiredCount) to \(desiredCount)",
        context)
      service.desiredCount = desiredCount
      services[name] = service
    }
    context.touchedServices.insert(name)
    return .serviceScaled(service: name, desiredCount: desiredCount)
  }

  mutating func applyDeleteService(
    _ name: String, _ context: inout ApplyContext
  ) throws(ClusterRejection) -> ClusterResponse {
    guard var service = services[name] else {
      throw ClusterRejection(code: .notFound, message: "service \(name) does not exist", field: "service")
    }
    if service.deleting { return .serviceDeleting(service: name, removed: false) }
    if let deployment = deploymentInControl(of: name) {
      throw ClusterRejection(
        code: .conflict,
        message: "service \(name) is in deployment \(deployment.id) (\(deployment.status.rawValue)); stop it first",
        field: "service")
    }
    service.deleting = true
    service.desiredCount = 0
    services[name] = service
    let taskIDs = taskIDs(of: name)
    record(.serviceDeleting, service: name, "service \(name) deleting: \(taskIDs.count) tasks to drain", context)
    for taskID in taskIDs where tasks[taskID]?.desired == .running {
      retire(taskID, reason: "service \(name) deleted")
    }
    context.touchedServices.insert(name)
    if taskIDs.isEmpty {
      removeService(name, context)
      return .serviceDeleting(service: name, removed: true)
    }
    return .serviceDeleting(service: name, removed: false)
  }

  // MARK: Reports

  mutating func applyAnnounceNode(
    _ info: NodeInfo, _ context: inout ApplyContext
  ) throws(ClusterRejection) -> ClusterResponse {
    if wasRemoved(info.id) {
      throw ClusterRejection(
        code: .conflict, message: "node \(info.id) was removed from this cluster; its id is never admitted again",
        field: "id")
    }
    if let problem = Self.addressProblem(info.address) {
      throw ClusterRejection(code: .badRequest, message: "node \(info.id) address \(problem)", field: "address")
    }
    guard !info.apiURL.isEmpty, info.apiURL.utf8.count <= 2048 else {
      throw ClusterRejection(
        code: .badRequest, message: "node \(info.id) apiURL must be 1...2048 bytes", field: "apiURL")
    }
    guard (1...65535).contains(info.peerPort) else {
      throw ClusterRejection(
        code: .badRequest, message: "node \(info.id) peerPort \(info.peerPort) is not in 1...65535", field: "peerPort")
    }
    if var node = nodes[info.id.rawValue] {
      let wasDraining = node.draining
      node.draining = false
      if node.info != info || wasDraining {
        record(
          .nodeAnnounced, service: nil,
          "node \(info.id) announced again at \(info.address) (api \(info.apiURL)); it is \(node.liveness.rawValue)",
          context)
      }
      node.info = info
      nodes[info.id.rawValue] = node
    } else {
      nodes[info.id.rawValue] = ClusterNode(
        info: info, liveness: .up, incarnation: 0, routesApplied: [:], announcedAt: logTime,
        livenessChangedAt: logTime, draining: false)
      record(
        .nodeAnnounced, service: nil, "node \(info.id) joined at \(info.address) (api \(info.apiURL)); it is up",
        context)
    }
    context.allServicesTouched = true
    return .nodeAnnounced(info.id)
  }

  mutating func applyDrainNode(
    _ nodeID: NodeID, _ context: inout ApplyContext
  ) throws(ClusterRejection) -> ClusterResponse {
    guard var node = nodes[nodeID.rawValue] else {
      return .ignored(reason: "node \(nodeID) is not known")
    }
    guard node.isUp else { return .ignored(reason: "node \(nodeID) is down") }
    let taskIDs = tasks.values.filter { $0.node == nodeID && $0.desired == .running }.map(\.id).sorted()
    if !node.draining {
      node.draining = true
      nodes[nodeID.rawValue] = node
      record(.nodeDraining, service: nil, "node \(nodeID) is shutting down: \(taskIDs.count) tasks to drain", context)
    }
    for taskID in taskIDs {
      if let service = tasks[taskID]?.service { context.touchedServices.insert(service) }
      retire(taskID, reason: "node \(nodeID) is shutting down")
    }
    return .reportsApplied(accepted: taskIDs.count, ignored: 0)
  }

  mutating func applyTaskReports(
    _ nodeID: NodeID, _ reports: [TaskReport], _ context: inout ApplyContext
  ) throws(ClusterRejection) -> ClusterResponse {
    var accepted = 0
    var ignored = 0
    for report in reports {
      guard var task = tasks[report.taskID], task.node == nodeID else {
        ignored += 1
        continue
      }
      if case .exited = task.state, report.state != task.state {
        ignored += 1  // exited is terminal
        continue
      }
      if let address = report.address, Self.addressProblem(address) != nil {
        ignored += 1
        continue
      }
      if let port = report.port, !(1...65535).contains(port) {
        ignored += 1
        continue
      }
      accepted += 1
      let before = task
      task.state = report.state
      task.healthy = report.healthy && report.state == .running
      task.address = report.address
      task.port = report.port
      if report.state == .running && task.startedAt == nil { task.startedAt = logTime }
      if task.healthy && task.healthyAt == nil { task.healthyAt = logTime }
      if report.previousRun == true { task.previousRun = true }
      tasks[task.id] = task
      context.touchedServices.insert(task.service)
      if before.state != task.state {
        switch task.state {
        case .pending: break
        case .starting: record(.taskStarting, service: task.service, "task \(task.id) starting on \(nodeID)", context)
        case .running:
          let place = task.address.map { " at \($0)" + (task.port.map { ":\($0)" } ?? "") } ?? ""
          record(.taskRunning, service: task.service, "task \(task.id) running on \(nodeID)\(place)", context)
        case .exited(let code):
          var how =
            code == TaskRunState.lostExitCode
            ? "is lost: no process of its node backs it (code \(code))" : "exited with code \(code)"
          // A lost task died with its node's run, not of its revision: not a crash.
          if before.desired == .running, code != TaskRunState.lostExitCode, let loop = noteCrash(task) {
            how +=
              "; crash \(loop.crashes) in a row of \(task.revision): new tasks of it wait until \(loop.holdsUntil)"
          }
          record(.taskExited, service: task.service, "task \(task.id) on \(nodeID) \(how)", context)
          // A task lost with its node is not a failure of its revision: the circuit breaker ignores it.
          if before.desired == .running, code != TaskRunState.lostExitCode { noteTaskExit(task, code: code, context) }
        }
      }
      if before.healthy != task.healthy {
        if task.healthy {
          record(.taskHealthy, service: task.service, "task \(task.id) healthy", context)
        } else if task.state == .running {
          record(.taskUnhealthy, service: task.service, "task \(task.id) unhealthy", context)
        }
      }
    }
    for name in context.touchedServices.sorted() { dropSettledCrashLoops(of: name) }
    return .reportsApplied(accepted: accepted, ignored: ignored)
  }

  mutating func applyRoutesApplied(
    _ nodeID: NodeID, _ generations: [String: UInt64], _ context: inout ApplyContext
  ) throws(ClusterRejection) -> ClusterResponse {
    guard var node = nodes[nodeID.rawValue] else {
      return .reportsApplied(accepted: 0, ignored: generations.count)
    }
    var accepted = 0
    var ignored = 0
    for name in generations.keys.sorted() {
      guard let generation = generations[name], let service = services[name], generation <= service.routes.generation
      else {
        ignored += 1
        continue
      }
      accepted += 1
      node.routesApplied[name] = max(node.routesApplied[name] ?? 0, generation)
      context.touchedServices.insert(name)
    }
    nodes[nodeID.rawValue] = node
    return .reportsApplied(accepted: accepted, ignored: ignored)
  }

  mutating func applyTaskStopped(
    _ nodeID: NodeID, taskID: String, _ context: inout ApplyContext
  ) throws(ClusterRejection) -> ClusterResponse {
    guard let task = tasks[taskID] else { return .ignored(reason: "task \(taskID) is not known") }
    guard task.node == nodeID else { return .ignored(reason: "task \(taskID) is on \(task.node), not \(nodeID)") }
    guard task.desired == .stopping else {
      return .ignored(reason: "task \(taskID) is \(task.desired.rawValue), not stopping")
    }
    removeTask(taskID)
    record(.taskStopped, service: task.service, "task \(taskID) stopped on \(nodeID)", context)
    context.touchedServices.insert(task.service)
    return .taskRetired(taskID: taskID)
  }

  // MARK: Leader decisions

  mutating func applyPlaceTask(
    _ name: String, revision number: Int, node nodeID: NodeID, _ context: inout ApplyContext
  ) throws(ClusterRejection) -> ClusterResponse {
    let service = try liveService(name)
    guard let revision = service.revision(number) else {
      throw ClusterRejection(
        code: .notFound, message: "service \(name) has no revision \(number)", field: "revision")
    }
    guard let node = nodes[nodeID.rawValue] else {
      throw ClusterRejection(code: .notFound, message: "node \(nodeID) is not known", field: "node")
    }
    guard node.isUp else { throw ClusterRejection(code: .conflict, message: "node \(nodeID) is down", field: "node") }
    guard !node.draining else {
      throw ClusterRejection(code: .conflict, message: "node \(nodeID) is shutting down", field: "node")
    }
    taskSequence += 1
    let id = "\(name).\(number).\(taskSequence)"
    insertTask(
      ClusterTask(
        id: id, service: name, revision: revision.id, node: nodeID, sequence: taskSequence, desired: .running,
        state: .pending, healthy: false, address: nil, port: nil, placedAt: logTime, startedAt: nil,
        drainGeneration: nil, retireReason: nil))
    record(.taskPlaced, service: name, "task \(id) of \(revision.id) placed on \(nodeID)", context)
    context.touchedServices.insert(name)
    return .taskPlaced(taskID: id)
  }

  mutating func applyRetireTask(
    _ taskID: String, reason: String, _ context: inout ApplyContext
  ) throws(ClusterRejection) -> ClusterResponse {
    guard let task = tasks[taskID] else {
      throw ClusterRejection(code: .notFound, message: "task \(taskID) is not known", field: "taskID")
    }
    guard task.desired == .running else {
      return .ignored(reason: "task \(taskID) is already \(task.desired.rawValue)")
    }
    retire(taskID, reason: String(reason.prefix(Self.maximumReasonLength)))
    context.touchedServices.insert(task.service)
    return .taskRetired(taskID: taskID)
  }

  mutating func applyNodeDown(
    _ nodeID: NodeID, incarnation: UInt64, _ context: inout ApplyContext
  ) throws(ClusterRejection) -> ClusterResponse {
    guard var node = nodes[nodeID.rawValue] else {
      throw ClusterRejection(code: .notFound, message: "node \(nodeID) is not known", field: "node")
    }
    guard node.isUp else { return .nodeLiveness(node: nodeID, up: false, changed: false) }
    node.liveness = .down
    node.incarnation = incarnation
    node.livenessChangedAt = logTime
    node.draining = false
    nodes[nodeID.rawValue] = node
    let lost = tasks.values.filter { $0.node == nodeID }.map(\.id).sorted()
    record(
      .nodeDown, service: nil, "node \(nodeID) is down (incarnation \(incarnation)); \(lost.count) tasks lost", context)
    for taskID in lost {
      guard let task = removeTask(taskID) else { continue }
      record(.taskLost, service: task.service, "task \(taskID) lost: node \(nodeID) is down", context)
    }
    context.allServicesTouched = true
    return .nodeLiveness(node: nodeID, up: false, changed: true)
  }

  mutating func applyNodeUp(
    _ nodeID: NodeID, incarnation: UInt64, _ context: inout ApplyContext
  ) throws(ClusterRejection) -> ClusterResponse {
    guard var node = nodes[nodeID.rawValue] else {
      throw ClusterRejection(code: .notFound, message: "node \(nodeID) is not known", field: "node")
    }
    guard !node.isUp else { return .nodeLiveness(node: nodeID, up: true, changed: false) }
    node.liveness = .up
    node.incarnation = incarnation
    node.livenessChangedAt = logTime
    node.draining = false
    nodes[nodeID.rawValue] = node
    record(.nodeUp, service: nil, "node \(nodeID) is up (incarnation \(incarnation))", context)
    context.allServicesTouched = true
    return .nodeLiveness(node: nodeID, up: true, changed: true)
  }

  // MARK: Derived state

  /// Marks a task draining; `updateDerivedState` records the generation that removes it.
  mutating func retire(_ taskID: String, reason: String) {
    guard var task = tasks[taskID] else { preconditionFailure("retiring unknown task \(taskID)") }
    precondition(task.desired == .running, "retiring task \(taskID), which is already \(task.desired)")
    task.desired = .draining
    task.retireReason = reason
    task.drainGeneration = nil
    tasks[taskID] = task
  }

  /// Re-derives, for the services the entry touched (in name order): the deployments' view of the
  /// world and the routes (a new generation when targets or weights changed), in rounds until no
  /// deployment learns anything new; the hand-back of a finished deployment; the drain generation of
  /// newly retired tasks; draining tasks every live node stopped routing to (→ stopping); and deleted
  /// services without tasks (→ removed).
  mutating func updateDerivedState(_ context: inout ApplyContext) {
    let names = (context.allServicesTouched ? Set(services.keys) : context.touchedServices).sorted()
    guard !names.isEmpty else { return }
    for name in names {
      for _ in 0..<Self.maximumDeploymentRounds {
        let fed = feedDeployments(name, context)
        handBackIfFinished(name, context)
        deriveRoutes(name)
        markDeploymentRoutes(name)
        if !fed { break }
      }
      guard let service = services[name] else { continue }
      let serviceTasks = taskIDs(of: name).compactMap { tasks[$0] }
      let generation = service.routes.generation
      for var task in serviceTasks where task.desired != .running {
        if task.drainGeneration == nil {
          task.drainGeneration = generation
          tasks[task.id] = task
          record(
            .taskDraining, service: name,
            "task \(task.id) draining (\(task.retireReason ?? "retired")); stops once every live node applied routes generation \(generation)",
            context)
        }
        guard task.desired == .draining, let drainGeneration = task.drainGeneration else { continue }
        guard everyLiveNodeApplied(generation: drainGeneration, of: name) else { continue }
        task.desired = .stopping
        tasks[task.id] = task
        record(
          .taskStopping, service: name,
          "task \(task.id) stopping on \(task.node): every live node applied routes generation \(drainGeneration)",
          context)
      }
      if service.deleting && serviceTasks.isEmpty { removeService(name, context) }
    }
  }

  /// The service's committed routes from its tasks and weights: targets are its routable tasks on
  /// nodes that are up (minus the task sets a deployment drains or stopped); weights are the
  /// deployment's while one is in control, otherwise all on the current revision. A change of
  /// either raises the generation.
  mutating func deriveRoutes(_ name: String) {
    guard var service = services[name] else { return }
    let fromDeployment = deploymentRoutes(of: name)
    let hidden = fromDeployment?.hidden ?? []
    let targets = taskIDs(of: name).compactMap { tasks[$0] }.compactMap { task -> RouteTarget? in
      guard task.isRoutable, !hidden.contains(task.revision), nodes[task.node.rawValue]?.isUp == true,
        let address = task.address, let port = task.port
      else { return nil }
      return RouteTarget(taskID: task.id, node: task.node, address: address, port: port, revision: task.revision)
    }
    var production = service.routes.production
    var test = service.routes.test
    if let fromDeployment {
      production = fromDeployment.production
      test = fromDeployment.test
    } else if !service.deleting {
      production = [service.currentRevisionID: ServiceRoutes.fullWeight]
      test = production
    }
    guard targets != service.routes.targets || production != service.routes.production || test != service.routes.test
    else { return }
    service.routes = ServiceRoutes(
      generation: service.routes.generation + 1, targets: targets, production: production, test: test)
    services[name] = service
  }

  mutating func removeService(_ name: String, _ context: ApplyContext) {
    precondition(taskIDsByService[name] == nil, "removing service \(name) while it has tasks")
    services[name] = nil
    deployments[name] = nil
    pastDeployments[name] = nil
    for id in nodes.keys.sorted() { nodes[id]?.routesApplied[name] = nil }
    record(.serviceDeleted, service: name, "service \(name) deleted", context)
  }

  // MARK: Validation

  /// The service, which must exist and not be being deleted.
  func liveService(_ name: String) throws(ClusterRejection) -> ClusterService {
    guard let service = services[name] else {
      throw ClusterRejection(code: .notFound, message: "service \(name) does not exist", field: "service")
    }
    guard !service.deleting else {
      throw ClusterRejection(code: .conflict, message: "service \(name) is being deleted", field: "service")
    }
    return service
  }

  static func checkDesiredCount(_ count: Int, field: String) throws(ClusterRejection) {
    guard (0...maximumDesiredCount).contains(count) else {
      throw ClusterRejection(
        code: .invalidSpec, message: "\(field) \(count) is not in 0...\(maximumDesiredCount)", field: field)
    }
  }

  /// The task rules the node's shells rely on (the API validated the whole spec with the spec parser;
  /// these guard the shells against an entry that did not come through it).
  static func checkTask(_ task: TaskSpec) throws(ClusterRejection) {
    func refuse(_ field: String, _ message: String) -> ClusterRejection {
      ClusterRejection(code: .invalidSpec, message: message, field: "task.\(field)")
    }
    guard !task.command.isEmpty else { throw refuse("command", "task command must not be empty") }
    guard (0...65535).contains(task.port) else { throw refuse("port", "task port \(task.port) is not in 0...65535") }
    let check = task.healthCheck
    guard check.interval.milliseconds > 0, check.timeout.milliseconds > 0, check.timeout <= check.interval else {
      throw refuse(
        "healthCheck.timeout",
        "health check timeout \(check.timeout) must be positive and at most interval \(check.interval)")
    }
    guard check.healthyThreshold >= 1, check.unhealthyThreshold >= 1 else {
      throw refuse("healthCheck.healthyThreshold", "health check thresholds must be at least 1")
    }
  }

  /// Lowercase letters, digits and `-`, starting with a letter, at most 63 characters (the spec's rule).
  static func serviceNameProblem(_ name: String) -> String? {
    let bytes = Array(name.utf8)
    guard let first = bytes.first else { return "must not be empty" }
    guard bytes.count <= 63 else { return "must be at most 63 characters" }
    guard first >= 0x61 && first <= 0x7a else { return "must start with a lowercase letter" }
    guard bytes.allSatisfy({ ($0 >= 0x61 && $0 <= 0x7a) || ($0 >= 0x30 && $0 <= 0x39) || $0 == 0x2d }) else {
      return "may contain only a-z, 0-9 and '-'"
    }
    return nil
  }

  static func addressProblem(_ address: String) -> String? {
    guard !address.isEmpty, address.utf8.count <= 255 else { return "must be 1...255 bytes" }
    guard !address.utf8.contains(where: { $0 <= 0x20 || $0 >= 0x7f }) else {
      return "may contain only printable ASCII without spaces"
    }
    return nil
  }
}

extension ClusterState {
  /// Forgets the oldest revisions of `service` that nothing uses while it has more than
  /// ``maximumRevisionsPerService`` (see there). Deterministic: it reads only the state.
  mutating func forgetUnusedRevisions(of service: inout ClusterService) {
    guard service.revisions.count > Self.maximumRevisionsPerService else { return }
    var inUse: Set<Int> = [service.currentRevision, service.nextRevisionNumber - 1]
    for task in tasks(service: service.name) { inUse.insert(task.revision.number) }
    for (revision, _) in desiredTaskCounts(of: service.name) { inUse.insert(revision.number) }
    for key in (service.crashLoops ?? [:]).keys { if let number = Int(key) { inUse.insert(number) } }
    let held = deployments[service.name]
    for deployment in [held?.current, held?.queued].compactMap({ $0 }) {
      inUse.formUnion([deployment.blue.revision.number, deployment.green.number])
    }
    for past in pastDeployments[service.name] ?? [] { inUse.formUnion([past.blue.number, past.green.number]) }
    var excess = service.revisions.count - Self.maximumRevisionsPerService
    var kept: [ClusterRevision] = []
    kept.reserveCapacity(service.revisions.count)
    for revision in service.revisions {
      if excess > 0, !inUse.contains(revision.id.number) {
        excess -= 1
      } else {
        kept.append(revision)
      }
    }
    service.revisions = kept
  }
}
