// The HTTP/JSON API every node serves (Hummingbird). Routes only parse requests, call the
// ClusterLog (writes) or read ClusterState (reads), and map the answer; every failure goes through
// APIFailure, the one error mapping.

import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import ServiceLifecycle
import TealAPI
import TealCluster
import TealDeploy
import TealMetrics
import TealSpec
import TealTLS
import TealWire

/// The API of one node. Any node answers any request: writes are proposed through ``ClusterLog``
/// (forwarded to the leader when this node follows) and answered once applied here; reads are
/// linearizable (a ReadIndex confirmed by the leader) unless `?stale=true`.
///
/// Limits: request bodies at most ``maximumBodyBytes`` (413 beyond); at most
/// ``maximumConnections`` client connections at once (others wait in the listen backlog);
/// `Idempotency-Key` at most 255 characters; event listings at most ``maximumEvents`` per page.
struct APIServer: Sendable {
  let configuration: NodeConfiguration
  let token: String
  /// Set when the API runs over TLS (`apiTLS: true`); reloaded on SIGHUP.
  let tls: ReloadableTLSContext?
  let log: ClusterLog
  let control: NodeControl
  let logger: Logger
  /// The node's metrics: `GET /metrics` renders them; every answer is counted.
  var metrics: NodeMetrics = .none

  static let maximumBodyBytes = 1 << 20
  static let maximumConnections = 1024
  static let maximumEvents = ClusterState.maximumEventPage

  /// How long an API client may take to finish its TLS handshake.
  static let tlsHandshakeTimeout: TimeAmount = .seconds(10)

  /// Plain HTTP/1.1, or HTTP/1.1 behind TealTLS.
  private var server: HTTPServerBuilder {
    guard let tls else { return .http1() }
    return HTTPServerBuilder { responder in
      TLSServerChildChannel(
        base: HTTP1Channel(responder: responder), context: tls, handshakeTimeout: Self.tlsHandshakeTimeout)
    }
  }

  func application() -> some Service {
    let router = Router(context: BasicRequestContext.self)
    router.add(middleware: APIMetricsMiddleware(metrics: metrics))
    router.add(middleware: NodeHeadersMiddleware(node: configuration.node.rawValue, log: log))
    router.add(middleware: BearerTokenMiddleware(token: token))
    router.get("/health") { _, _ in
      try json(HealthResponse(node: configuration.node.rawValue))
    }
    router.get("/ready") { _, _ in try await ready() }
    router.get("/v1/openapi.yaml") { _, _ in yaml(OpenAPIDocument.yaml) }
    router.get("/metrics") { _, _ in
      var headers = HTTPFields()
      headers[.contentType] = NodeMetricsRegistry.contentType
      let text = await metrics.registry?.exposition() ?? ""
      return Response(status: .ok, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(string: text)))
    }
    router.get("/v1/cluster") { request, _ in try await clusterStatus(request) }
    router.get("/v1/cluster/state") { _, _ in
      let state = await log.localState()
      return try json(
        ClusterStateDigest(
          node: configuration.node.rawValue, appliedIndex: state.appliedIndex, stateHash: state.stateHash))
    }
    router.get("/v1/services") { request, _ in
      let state = try await read(request)
      return try json(
        ServiceList(services: state.services.keys.sorted().compactMap { APIViews.summary($0, in: state) }))
    }
    router.post("/v1/services") { request, _ in try await createService(request) }
    router.get("/v1/services/:name") { request, context in
      let name = try context.parameters.require("name")
      let state = try await read(request)
      guard let detail = APIViews.detail(name, in: state) else {
        throw APIFailure.notFound("no service named '\(name)'")
      }
      return try json(detail)
    }
    router.put("/v1/services/:name/scale") { request, context in
      let name = try context.parameters.require("name")
      let body = try await readBody(request)
      let scale: ScaleRequest
      do { scale = try TealJSON.decode(ScaleRequest.self, from: Data(body)) } catch {
        throw APIFailure.badRequest("the body must be {\"desiredCount\": N}: \(APIViews.describe(error))")
      }
      return try await write(.scaleService(service: name, desiredCount: scale.desiredCount), request, body: body) {
        state in try APIViews.detail(name, in: state).map { try json($0) }
      }
    }
    router.delete("/v1/services/:name") { request, context in
      let name = try context.parameters.require("name")
      return try await write(.deleteService(service: name), request, body: []) { state in
        guard let detail = APIViews.detail(name, in: state) else {
          return try json(ServiceDeletion(name: name, status: .deleted))
        }
        return try json(ServiceDeletion(name: name, status: .deleting, service: detail))
      }
    }
    router.get("/v1/tasks") { request, _ in
      let state = try await read(request)
      let query = request.uri.queryParameters
      let node = try query.get("node").map { text -> NodeID in
        guard let id = try? NodeID(validating: text) else {
          throw APIFailure.badRequest("'\(text)' is not a node id", field: "node")
        }
        return id
      }
      let tasks = state.tasks(service: query.get("service"), node: node).map(APIViews.task)
      return try json(TaskList(tasks: tasks))
    }
    router.get("/v1/events") { request, _ in
      let state = try await read(request)
      let query = request.uri.queryParameters
      let after = try query.get("after").map { text -> UInt64 in
        guard let value = UInt64(text) else { throw APIFailure.badRequest("after must be a log index", field: "after") }
        return value
      }
      let limit = try query.get("limit").map { text -> Int in
        guard let value = Int(text), (1...Self.maximumEvents).contains(value) else {
          throw APIFailure.badRequest("limit must be 1-\(Self.maximumEvents)", field: "limit")
        }
        return value
      }
      let events = state.events(service: query.get("service"), after: after, limit: limit ?? Self.maximumEvents)
      return try json(EventList(events: events.map(APIViews.event)))
    }
    addDeploymentRoutes(router)
    VariableRoutes.add(to: router, backend: self)
    addMembershipRoutes(router)
    // One line with every route, so an operator (and the OpenAPI conformance test) sees what this
    // build serves.
    logger.info("API routes: \(router.routes.map { "\($0.method) \($0.path)" }.sorted().joined(separator: ", "))")
    return Application(
      router: router, server: server,
      configuration: ApplicationConfiguration(
        address: .hostname(configuration.address, port: configuration.apiPort), serverName: "teal",
        availableConnectionsDelegate: MaximumAvailableConnections(Self.maximumConnections)),
      logger: logger)
  }

  // MARK: - Deployments

  private func addDeploymentRoutes(_ router: Router<BasicRequestContext>) {
    router.post("/v1/services/:name/deployments") { request, context in
      let name = try context.parameters.require("name")
      let body = try await readBody(request)
      let spec = try parseSpec(request, body: body)
      let supersede = request.uri.queryParameters.get("supersede") == "true"
      let controller = await controller()
      return try await write(.submitDeployment(service: name, spec: spec, supersede: supersede), request, body: body) {
        state, answer in try deploymentResponse(state, answer, status: .created, controller: controller)
      }
    }
    router.get("/v1/services/:name/spec") { request, context in
      let name = try context.parameters.require("name")
      let state = try await read(request)
      guard let service = state.services[name] else { throw APIFailure.notFound("no service named '\(name)'") }
      return yaml(SpecWriter.yaml(service.currentSpec))
    }
    router.get("/v1/deployments") { request, _ in
      let state = try await read(request)
      return try json(DeploymentViews.list(state, service: request.uri.queryParameters.get("service")))
    }
    router.get("/v1/deployments/:id") { request, context in
      let id = try context.parameters.require("id")
      let state = try await read(request)
      guard let view = DeploymentViews.view(id, in: state, controller: await controller()) else {
        throw APIFailure.notFound("no deployment '\(id)'")
      }
      return try json(view)
    }
    router.post("/v1/deployments/:id/:action") { request, context in
      let id = try context.parameters.require("id")
      let actionName = try context.parameters.require("action")
      guard let action = DeploymentAction(rawValue: actionName) else {
        throw APIFailure.notFound(
          "no deployment action '\(actionName)'; one of "
            + DeploymentAction.allCases.map(\.rawValue).joined(separator: ", "))
      }
      let state = await log.localState()
      guard let service = ClusterState.service(ofDeployment: id), state.deployment(id: id) != nil || action == .retry
      else {
        throw APIFailure.notFound("no deployment '\(id)' in progress or held")
      }
      let controller = await controller()
      return try await write(.deploymentAction(service: service, deploymentID: id, action: action), request, body: []) {
        state, answer in
        try deploymentResponse(
          state, answer, status: action == .retry ? .created : .ok, controller: controller, fallback: id)
      }
    }
  }

  private func controller() async -> ControllerView? {
    let leadership = await log.currentLeadership
    return leadership.leader.map { ControllerView(node: $0.rawValue, term: leadership.term) }
  }

  private func deploymentResponse(
    _ state: ClusterState, _ answer: ClusterResponse, status: HTTPResponse.Status, controller: ControllerView?,
    fallback: String? = nil
  ) throws -> Response? {
    let id: String?
    switch answer {
    case .deploymentSubmitted(_, let deploymentID, _), .deploymentUpdated(_, let deploymentID): id = deploymentID
    default: id = fallback
    }
    guard let id, let view = DeploymentViews.view(id, in: state, controller: controller) else { return nil }
    return try json(view, status: status)
  }

  /// The spec in the request body, YAML or JSON by Content-Type.
  private func parseSpec(_ request: Request, body: [UInt8]) throws -> ServiceSpec {
    guard let text = String(validating: body, as: UTF8.self) else {
      throw APIFailure.badRequest("the spec is not UTF-8 text")
    }
    let contentType = request.headers[.contentType] ?? ""
    do { return try SpecParser.parse(text: text, format: contentType.contains("json") ? .json : .yaml) } catch {
      throw APIFailure(spec: error)
    }
  }

  // MARK: - Reads

  /// The state to answer a read from: after a ReadIndex round (linearizable) unless `?stale=true`.
  func read(_ request: Request) async throws -> ClusterState {
    if request.uri.queryParameters.get("stale") != "true" {
      do { try await log.raft.linearizableRead() } catch { throw APIFailure(read: error) }
    }
    return await log.localState()
  }

  private func ready() async throws -> Response {
    let leadership = await log.currentLeadership
    let body = ReadyResponse(
      ready: leadership.leader != nil, node: configuration.node.rawValue, leader: leadership.leader?.rawValue)
    return try json(body, status: leadership.leader != nil ? .ok : .serviceUnavailable)
  }

  private func clusterStatus(_ request: Request) async throws -> Response {
    let state = try await read(request)
    let status = await log.raft.status
    let membership = await log.raft.membership
    return try json(
      APIViews.clusterStatus(state: state, raft: status, membership: membership, configuration: configuration))
  }

  // MARK: - Writes

  private func createService(_ request: Request) async throws -> Response {
    let body = try await readBody(request)
    let spec = try parseSpec(request, body: body)
    let response = try await write(.createService(spec), request, body: body) { state in
      try APIViews.detail(spec.name, in: state).map { try json($0, status: .created) }
    }
    return response
  }

  /// Proposes `command` with the request's idempotency key (the digest covers method, path and
  /// body), then renders the answer from the state this node applied.
  private func write(
    _ command: ClusterCommand, _ request: Request, body: [UInt8],
    render: (ClusterState) throws -> Response?
  ) async throws -> Response {
    try await write(command, request, body: body) { state, _ in try render(state) }
  }

  /// As `write(_:_:body:render:)`, rendering from the state and the command's response.
  func write(
    _ command: ClusterCommand, _ request: Request, body: [UInt8],
    render: (ClusterState, ClusterResponse) throws -> Response?
  ) async throws -> Response {
    let answer = try await submit(command, request, body: body)
    let state = await log.localState()
    guard let response = try render(state, answer) else {
      throw APIFailure.notFound("the object is gone (it was removed by a later write)")
    }
    return response
  }

  /// Proposes `command` with the request's idempotency key and returns its response once this node
  /// applied it; a refusal throws its APIFailure.
  func submit(
    _ command: ClusterCommand, _ request: Request, body: [UInt8], digestingQuery: Bool = false
  ) async throws -> ClusterResponse {
    let key = try Self.idempotencyKey(request, body: body, digestingQuery: digestingQuery)
    let result: ClusterResult
    do { result = try await log.submit(command, idempotency: key) } catch { throw APIFailure(error) }
    switch result {
    case .rejected(let rejection): throw APIFailure(rejection)
    case .ok(let answer): return answer
    }
  }

  /// The request's `Idempotency-Key`, with a digest of method, path and body (and the query with
  /// `digestingQuery`, for routes whose query changes what the write does, as `?cas=`).
  static func idempotencyKey(
    _ request: Request, body: [UInt8], digestingQuery: Bool = false
  ) throws -> IdempotencyRecordKey? {
    guard let raw = request.headers[HTTPField.Name(APIHeader.idempotencyKey)!] else { return nil }
    let query = digestingQuery ? "?" + (request.uri.query ?? "") : ""
    let digest = SHA256.hexDigest(Array("\(request.method.rawValue) \(request.uri.path)\(query)\n".utf8) + body)
    let key = IdempotencyRecordKey(key: raw, bodyDigest: digest)
    if let problem = key.problem { throw APIFailure.badRequest(problem, field: APIHeader.idempotencyKey) }
    return key
  }

  func readBody(_ request: Request) async throws -> [UInt8] {
    var request = request
    do {
      let buffer = try await request.collectBody(upTo: Self.maximumBodyBytes)
      return Array(buffer.readableBytesView)
    } catch {
      throw APIFailure.tooLarge("the request body exceeds \(Self.maximumBodyBytes) bytes")
    }
  }
}

// MARK: - JSON and YAML responses

/// 200 with `text` as `application/yaml`.
func yaml(_ text: String) -> Response {
  var headers = HTTPFields()
  headers[.contentType] = APIContentType.yaml
  return Response(status: .ok, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(string: text)))
}

func json<T: Encodable>(_ value: T, status: HTTPResponse.Status = .ok) throws -> Response {
  let data = try TealJSON.encode(value)
  var headers = HTTPFields()
  headers[.contentType] = APIContentType.json
  return Response(status: status, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(bytes: data)))
}

// MARK: - Middleware

/// Requires `Authorization: Bearer <token>` on everything but `/health`; compares in constant time.
struct BearerTokenMiddleware<Context: RequestContext>: RouterMiddleware {
  let token: String

  func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws
    -> Response
  {
    if request.uri.path == "/health" { return try await next(request, context) }
    guard let header = request.headers[.authorization], let presented = APIHeader.bearerToken(from: header) else {
      throw APIFailure.unauthorized(
        "missing bearer token: send 'Authorization: Bearer <token>' (the token is in the cluster dir)")
    }
    guard Self.constantTimeEqual(Array(presented.utf8), Array(token.utf8)) else {
      throw APIFailure(status: .forbidden, code: "forbidden", message: "the bearer token is not this cluster's")
    }
    return try await next(request, context)
  }

  static func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
    guard a.count == b.count else { return false }
    var difference: UInt8 = 0
    for index in a.indices { difference |= a[index] ^ b[index] }
    return difference == 0
  }
}

/// Counts every answer in `teal_api_requests_total` by route template (Hummingbird's matched path,
/// or `NotFound`), method and status: a bounded label set, whatever paths clients send.
struct APIMetricsMiddleware<Context: RequestContext>: RouterMiddleware {
  let metrics: NodeMetrics

  func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws
    -> Response
  {
    let status: Int
    do {
      let response = try await next(request, context)
      status = response.status.code
      count(request, context, status)
      return response
    } catch let error as HTTPResponseError {
      status = error.status.code
      count(request, context, status)
      throw error
    } catch {
      count(request, context, 500)
      throw error
    }
  }

  private func count(_ request: Request, _ context: Context, _ status: Int) {
    let method =
      ["GET", "PUT", "POST", "DELETE", "HEAD", "PATCH"].contains(request.method.rawValue)
      ? request.method.rawValue : "OTHER"
    metrics.count(
      "teal_api_requests_total",
      [("route", context.endpointPath ?? "NotFound"), ("method", method), ("status", "\(status)")])
  }
}

/// Adds `x-teal-node` and `x-teal-leader` to every answer and turns every error into the JSON error
/// body: this is the only place an error becomes a response.
struct NodeHeadersMiddleware<Context: RequestContext>: RouterMiddleware {
  let node: String
  let log: ClusterLog

  func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws
    -> Response
  {
    var response = await APIFailure.responding { try await next(request, context) }
    response.headers[HTTPField.Name(APIHeader.node)!] = node
    if let leader = await log.currentLeadership.leader {
      response.headers[HTTPField.Name(APIHeader.leader)!] = leader.rawValue
    }
    return response
  }
}
