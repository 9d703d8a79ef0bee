import TealDeploy
import TealLoadBalancer
import TealSpec
import TealWire
import Testing

@testable import TealNode

@Suite("Alarm datapoints from every node's counters")
struct TrafficAggregatorTests {
  static let deployment: Deployment = {
    let yaml = """
      name: web
      desiredCount: 2
      productionPort: 8000
      testPort: 8001
      task:
        command: /bin/true
        healthCheck:
          path: /health
      deployment:
        strategy: BLUE_GREEN
        bakeTime: 10s
        alarms:
          - name: errors
            metric: http5xxRate
            threshold: 0.1
            window: 10s
      """
    let spec = try! SpecParser.parse(text: yaml, format: .yaml)
    let green = Revision(id: RevisionID(service: "web", number: 2), spec: spec)
    return Deployment(
      id: "web-9",
      submission: DeploymentSubmission(
        green: green, blue: BlueRevision(revision: RevisionID(service: "web", number: 1), desiredCount: 2),
        nodes: [NodeID("n1"), NodeID("n2")]),
      now: Instant(millisecondsSinceEpoch: 0))
  }()

  static func sample(completed: UInt64, errors: UInt64, slow: UInt64 = 0) -> TrafficSample {
    var buckets = [UInt64](repeating: 0, count: LatencyHistogram.upperBoundsNanoseconds.count + 1)
    buckets[2] = completed - slow  // <= 1 ms
    buckets[9] = slow  // <= 250 ms
    return TrafficSample(
      service: "web", revision: "web:2", completed: completed, http5xx: errors, latencyBuckets: buckets)
  }

  @Test func theFirstDatapointOfALeaderOnlySetsTheBaseline() {
    var aggregator = TrafficAggregator()
    aggregator.receive([Self.sample(completed: 100, errors: 50)], from: NodeID("n1"))
    #expect(aggregator.datapoint(for: Self.deployment, at: Instant(millisecondsSinceEpoch: 1000)) == nil)
  }

  @Test func aDatapointSumsEveryNodesCountsSinceTheLastOne() {
    var aggregator = TrafficAggregator()
    aggregator.receive([Self.sample(completed: 100, errors: 0)], from: NodeID("n1"))
    aggregator.receive([Self.sample(completed: 40, errors: 0)], from: NodeID("n2"))
    _ = aggregator.datapoint(for: Self.deployment, at: Instant(millisecondsSinceEpoch: 1000))
    // n2 alone turns bad: 30 of its 60 new responses are 5xx, a few slow.
    aggregator.receive([Self.sample(completed: 140, errors: 0)], from: NodeID("n1"))
    aggregator.receive([Self.sample(completed: 100, errors: 30, slow: 2)], from: NodeID("n2"))
    let point = aggregator.datapoint(for: Self.deployment, at: Instant(millisecondsSinceEpoch: 2000))
    #expect(point?.requestCount == 100)
    #expect(point?.http5xxCount == 30)
    #expect(point?.latencyP99Milliseconds == 250)
    #expect(point?.at == Instant(millisecondsSinceEpoch: 2000))
  }

  @Test func countersThatWentBackwardsCountInFull() {
    var aggregator = TrafficAggregator()
    aggregator.receive([Self.sample(completed: 500, errors: 5)], from: NodeID("n1"))
    _ = aggregator.datapoint(for: Self.deployment, at: Instant(millisecondsSinceEpoch: 1000))
    aggregator.receive([Self.sample(completed: 20, errors: 10)], from: NodeID("n1"))  // n1 restarted
    let point = aggregator.datapoint(for: Self.deployment, at: Instant(millisecondsSinceEpoch: 2000))
    #expect(point?.requestCount == 20)
    #expect(point?.http5xxCount == 10)
  }

  @Test func aSampleWithAnotherBucketLayoutIsDropped() {
    var aggregator = TrafficAggregator()
    let odd = TrafficSample(service: "web", revision: "web:2", completed: 10, http5xx: 10, latencyBuckets: [10])
    aggregator.receive([odd], from: NodeID("n1"))
    #expect(aggregator.latest.isEmpty)
  }

  @Test func aNodeThatSentNothingNewAddsNothing() {
    var aggregator = TrafficAggregator()
    aggregator.receive([Self.sample(completed: 10, errors: 1)], from: NodeID("n1"))
    _ = aggregator.datapoint(for: Self.deployment, at: Instant(millisecondsSinceEpoch: 1000))
    let point = aggregator.datapoint(for: Self.deployment, at: Instant(millisecondsSinceEpoch: 2000))
    #expect(point?.requestCount == 0)
    #expect(point?.latencyP99Milliseconds == 0)
  }
}
