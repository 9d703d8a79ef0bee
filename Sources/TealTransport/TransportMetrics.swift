// The transport's Prometheus series, through swift-metrics with the factory of the configuration
// (`PeerTransportConfiguration.metricsFactory`; a no-op by default). Labels: `peer` is a configured
// or accepted member (bounded by the cluster's membership); `reason` is one of the fixed refusal
// reasons below.

import CoreMetrics
import TealWire

enum TransportMetrics {
  /// Frame bytes written to `peer` (one handle per connection, not per frame).
  static func sentBytes(to peer: NodeID, factory: any MetricsFactory) -> Counter {
    Counter(label: "teal_transport_sent_bytes_total", dimensions: [("peer", peer.rawValue)], factory: factory)
  }

  /// Frame bytes read from `peer` on an accepted inbound connection.
  static func receivedBytes(from peer: NodeID, factory: any MetricsFactory) -> Counter {
    Counter(label: "teal_transport_received_bytes_total", dimensions: [("peer", peer.rawValue)], factory: factory)
  }

  static func refused(_ reason: PeerRefusalReason, factory: any MetricsFactory) {
    refused(label(reason), factory: factory)
  }

  /// `reason`: a refusal reason's label, `tls` (the handshake failed) or `too_many_unauthenticated`.
  static func refused(_ reason: String, factory: any MetricsFactory) {
    Counter(label: "teal_transport_refusals_total", dimensions: [("reason", reason)], factory: factory).increment()
  }

  static func label(_ reason: PeerRefusalReason) -> String {
    switch reason {
    case .notMember: "not_member"
    case .clusterMismatch: "cluster_mismatch"
    case .noCommonProtocolVersion: "no_common_protocol_version"
    case .identityMismatch: "identity_mismatch"
    case .malformedHello: "malformed_hello"
    case .tooManyConnections: "too_many_connections"
    case .certificateRevoked: "certificate_revoked"
    case .other: "other"
    }
  }
}
