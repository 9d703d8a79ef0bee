// The catalogue of every `teal_*` series a node exposes: name, type, labels and help. Components
// record through swift-metrics (Counter, Gauge, Timer with an injected factory); the catalogue only
// describes them, so the exposition carries a HELP line per family and Docs/OPERATIONS.md has one
// list to stay true to (a test checks that every emitted family is listed here with its type).

/// The Prometheus type of one family.
public enum MetricKind: String, Sendable, Hashable {
  case counter
  case gauge
  case histogram
}

/// One metric family: every series of one name.
public struct MetricDescription: Sendable, Hashable {
  public var name: String
  public var kind: MetricKind
  /// The label names every series of the family carries, in order.
  public var labels: [String]
  public var help: String
  /// Upper bounds of a histogram's finite buckets (nil for counters and gauges).
  public var buckets: [Duration]?

  public init(_ name: String, _ kind: MetricKind, labels: [String] = [], help: String, buckets: [Duration]? = nil) {
    precondition(name.hasPrefix("teal_"), "every Teal series is named teal_…, not \(name)")
    precondition((kind == .histogram) == (buckets != nil), "\(name): only histograms have buckets")
    self.name = name
    self.kind = kind
    self.labels = labels
    self.help = help
    self.buckets = buckets
  }
}

/// Every series of a node. Label values come only from the committed cluster state (service and
/// revision names, node ids of the membership, task addresses) or from fixed enumerations (route
/// templates, status codes, reasons, outcomes): see Docs/OPERATIONS.md, "Metrics", for the bounds.
public enum TealMetricCatalogue {
  /// The balancer's latency buckets: 0.25 ms … 10 s (the same as `LatencyHistogram`).
  public static let requestLatencyBuckets: [Duration] = [
    .microseconds(250), .microseconds(500), .milliseconds(1), .microseconds(2500), .milliseconds(5),
    .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100), .milliseconds(250),
    .milliseconds(500), .seconds(1), .milliseconds(2500), .seconds(5), .seconds(10),
  ]
  /// fsync latency buckets: 50 µs … 2.5 s.
  public static let fsyncBuckets: [Duration] = [
    .microseconds(50), .microseconds(100), .microseconds(250), .microseconds(500), .milliseconds(1),
    .microseconds(2500), .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50),
    .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1), .milliseconds(2500),
  ]

  static let group = ["service", "listener", "revision"]

  public static let all: [MetricDescription] = [
    // Raft
    MetricDescription("teal_raft_term", .gauge, help: "The Raft term this node is in."),
    MetricDescription("teal_raft_commit_index", .gauge, help: "The highest log index this node knows committed."),
    MetricDescription("teal_raft_applied_index", .gauge, help: "The highest log index applied to this node's state."),
    MetricDescription("teal_raft_last_index", .gauge, help: "The last index of this node's log."),
    MetricDescription("teal_raft_is_leader", .gauge, help: "1 while this node is the Raft leader, else 0."),
    MetricDescription(
      "teal_raft_leader_changes_total", .counter, help: "Times this node saw the leader change (including to none)."),
    MetricDescription(
      "teal_raft_proposals_total", .counter, labels: ["outcome"],
      help: "Entries this node proposed to its Raft log as leader, by outcome."),
    MetricDescription(
      "teal_raft_fsync_duration_seconds", .histogram, help: "Time of one fsync/fdatasync of the Raft log or snapshot.",
      buckets: fsyncBuckets),
    // Transport
    MetricDescription(
      "teal_transport_connections", .gauge, labels: ["peer", "direction"],
      help: "Open, accepted peer connections by peer and direction (outbound: dialled by this node)."),
    MetricDescription(
      "teal_transport_sent_bytes_total", .counter, labels: ["peer"], help: "Frame bytes written to a peer."),
    MetricDescription(
      "teal_transport_received_bytes_total", .counter, labels: ["peer"], help: "Frame bytes read from a peer."),
    MetricDescription(
      "teal_transport_refusals_total", .counter, labels: ["reason"],
      help: "Inbound connections this node's listener refused, by reason."),
    // Gossip
    MetricDescription(
      "teal_gossip_members", .gauge, labels: ["state"], help: "Members of this node's gossip table by state."),
    MetricDescription(
      "teal_gossip_suspicions_total", .counter, help: "Times this node saw a member become suspect."),
    // Balancer
    MetricDescription(
      "teal_lb_requests_total", .counter, labels: group, help: "Requests routed to a target group."),
    MetricDescription(
      "teal_lb_responses_total", .counter, labels: group + ["code", "origin"],
      help: "Completed responses by status class and origin (target: the task answered; balancer: 502/504 made here)."
    ),
    MetricDescription(
      "teal_lb_retries_total", .counter, labels: group,
      help: "Requests sent again after a failed connect or an early reset."),
    MetricDescription(
      "teal_lb_connect_failures_total", .counter, labels: group, help: "Target failures seen on the data path."),
    MetricDescription(
      "teal_lb_aborted_total", .counter, labels: group,
      help: "Requests whose client went away before the response ended."),
    MetricDescription(
      "teal_lb_stalled_responses_total", .counter, labels: group,
      help: "Responses cut because the target's body went silent for the response body idle timeout."),
    MetricDescription(
      "teal_lb_in_flight_requests", .gauge, labels: group, help: "Requests being proxied now."),
    MetricDescription(
      "teal_lb_request_duration_seconds", .histogram, labels: group, help: "Time from request head to response end.",
      buckets: requestLatencyBuckets),
    MetricDescription(
      "teal_lb_no_healthy_target_total", .counter, labels: ["service", "listener"],
      help: "Requests answered 503 for want of a healthy target."),
    MetricDescription(
      "teal_lb_bad_requests_total", .counter, labels: ["service"], help: "Requests answered 400 or 431 before routing."),
    MetricDescription(
      "teal_lb_target_healthy", .gauge, labels: ["service", "target"],
      help: "1 when the target receives traffic (healthy, registered), else 0."),
    // API
    MetricDescription(
      "teal_api_requests_total", .counter, labels: ["route", "method", "status"],
      help: "API requests answered by this node, by route template, method and status code."),
    MetricDescription(
      "teal_api_forwarded_total", .counter, labels: ["outcome"],
      help: "Writes this node forwarded to the leader, by outcome."),
    // Tasks
    MetricDescription(
      "teal_tasks_running", .gauge, labels: ["service"], help: "Tasks of a service running on this node."),
    MetricDescription(
      "teal_task_starts_total", .counter, labels: ["service"], help: "Task processes this node started."),
    MetricDescription(
      "teal_task_exits_total", .counter, labels: ["service", "reason"],
      help: "Task processes that ended on this node, by reason (exited: status 0; failed: other status; signalled)."),
  ]

  public static let byName: [String: MetricDescription] = Dictionary(
    uniqueKeysWithValues: all.map { ($0.name, $0) })
}
