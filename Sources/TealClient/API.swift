import Foundation
import TealAPI

// The typed calls of Teal's API (NODE-CONTRACT), one per endpoint.
extension TealClient {
  /// `GET /health`.
  public func health() async throws -> HealthResponse {
    try await send(TealRequest(method: .GET, path: APIPath.health)).decode(HealthResponse.self)
  }

  /// `GET /ready`; a 503 answer (not ready) is returned, not thrown, when it carries the ready body.
  public func ready() async throws -> ReadyResponse {
    var request = TealRequest(method: .GET, path: APIPath.ready)
    request.acceptedStatuses = [503]
    return try await send(request).decode(ReadyResponse.self)
  }

  /// `GET /v1/cluster` (linearizable unless `stale`).
  public func clusterStatus(stale: Bool = false) async throws -> ClusterStatus {
    try await get(APIPath.cluster, stale: stale, as: ClusterStatus.self)
  }

  /// `GET /v1/services`.
  public func services(stale: Bool = false) async throws -> ServiceList {
    try await get(APIPath.services, stale: stale, as: ServiceList.self)
  }

  /// `POST /v1/services` with the spec document itself (YAML or JSON text).
  public func createService(
    spec: String, contentType: String = APIContentType.yaml, idempotencyKey: String? = nil
  ) async throws -> ServiceDetail {
    try await send(
      TealRequest(
        method: .POST, path: APIPath.services, body: Data(spec.utf8), contentType: contentType,
        idempotencyKey: idempotencyKey)
    ).decode(ServiceDetail.self)
  }

  /// `GET /v1/services/{name}`.
  public func service(_ name: String, stale: Bool = false) async throws -> ServiceDetail {
    try await get(APIPath.service(name), stale: stale, as: ServiceDetail.self)
  }

  /// `PUT /v1/services/{name}/scale`.
  public func scale(_ name: String, to desiredCount: Int, idempotencyKey: String? = nil) async throws -> ServiceDetail {
    try await send(
      TealRequest(
        method: .PUT, path: APIPath.scale(name), body: try TealJSON.encode(ScaleRequest(desiredCount: desiredCount)),
        contentType: APIContentType.json, idempotencyKey: idempotencyKey)
    ).decode(ServiceDetail.self)
  }

  /// `DELETE /v1/services/{name}`: answers once the deletion is applied, `deleting` while the
  /// service's tasks drain and stop (the service then disappears), `deleted` when it is gone.
  public func deleteService(_ name: String, idempotencyKey: String? = nil) async throws -> ServiceDeletion {
    try await send(TealRequest(method: .DELETE, path: APIPath.service(name), idempotencyKey: idempotencyKey))
      .decode(ServiceDeletion.self)
  }

  /// `GET /v1/tasks?service=&node=`.
  public func tasks(service: String? = nil, node: String? = nil, stale: Bool = false) async throws -> TaskList {
    try await get(APIPath.tasks(service: service, node: node), stale: stale, as: TaskList.self)
  }

  /// `GET /v1/events?service=&after=&limit=`.
  public func events(service: String? = nil, after: UInt64? = nil, limit: Int? = nil, stale: Bool = false)
    async throws -> EventList
  {
    try await get(APIPath.events(service: service, after: after, limit: limit), stale: stale, as: EventList.self)
  }

  // MARK: Deployments

  /// `POST /v1/services/{name}/deployments` with the new spec (YAML or JSON text): registers the
  /// revision and starts the deployment.
  public func deploy(
    _ service: String, spec: String, contentType: String = APIContentType.yaml, supersede: Bool = false,
    idempotencyKey: String? = nil
  ) async throws -> DeploymentView {
    try await send(
      TealRequest(
        method: .POST, path: APIPath.deployments(ofService: service, supersede: supersede), body: Data(spec.utf8),
        contentType: contentType, idempotencyKey: idempotencyKey)
    ).decode(DeploymentView.self)
  }

  /// `GET /v1/services/{name}/spec`: the serving revision's spec as YAML.
  public func servingSpec(_ service: String, stale: Bool = false) async throws -> String {
    let path = APIPath.spec(service)
    let response = try await send(TealRequest(method: .GET, path: stale ? APIPath.stale(path) : path))
    return String(decoding: response.body, as: UTF8.self)
  }

  /// `GET /v1/deployments?service=`.
  public func deployments(service: String? = nil, stale: Bool = false) async throws -> DeploymentList {
    try await get(APIPath.deployments(service: service), stale: stale, as: DeploymentList.self)
  }

  /// `GET /v1/deployments/{id}`.
  public func deployment(_ id: String, stale: Bool = false) async throws -> DeploymentView {
    try await get(APIPath.deployment(id), stale: stale, as: DeploymentView.self)
  }

  /// `POST /v1/deployments/{id}/{action}`; `retry` answers with the new deployment.
  public func deployment(
    _ id: String, action: DeploymentActionName, idempotencyKey: String? = nil
  ) async throws -> DeploymentView {
    try await send(
      TealRequest(method: .POST, path: APIPath.deployment(id, action: action), idempotencyKey: idempotencyKey)
    ).decode(DeploymentView.self)
  }

  private func get<T: Decodable>(_ path: String, stale: Bool, as type: T.Type) async throws -> T {
    try await send(TealRequest(method: .GET, path: stale ? APIPath.stale(path) : path)).decode(type)
  }
}
