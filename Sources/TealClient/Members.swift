import Foundation
import TealAPI

// The membership calls (Docs/API.md "Membership").
extension TealClient {
  /// `GET /v1/cluster/members` (linearizable unless `stale`).
  public func members(stale: Bool = false) async throws -> MembershipView {
    try await send(TealRequest(method: .GET, path: stale ? APIPath.stale(APIPath.members) : APIPath.members))
      .decode(MembershipView.self)
  }

  /// `POST /v1/cluster/members`: answers 202 once the change is recorded as the change in flight.
  public func addMember(_ member: MemberAddRequest, idempotencyKey: String? = nil) async throws -> MembershipView {
    try await send(
      TealRequest(
        method: .POST, path: APIPath.members, body: try TealJSON.encode(member), contentType: APIContentType.json,
        idempotencyKey: idempotencyKey)
    ).decode(MembershipView.self)
  }

  /// `DELETE /v1/cluster/members/{id}`: answers 202 once the removal is the change in flight.
  public func removeMember(_ id: String, idempotencyKey: String? = nil) async throws -> MembershipView {
    try await send(TealRequest(method: .DELETE, path: APIPath.member(id), idempotencyKey: idempotencyKey))
      .decode(MembershipView.self)
  }
}
