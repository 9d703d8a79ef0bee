// swift-tools-version:6.1
// Teal: a self-hosted blue/green deployment coordinator.
// Module map: see Docs/ARCHITECTURE.md. Pure cores (TealWire, TealRaft, TealGossip, TealDeploy)
// depend on nothing but the standard library and Foundation; shells own sockets, files and processes.
import PackageDescription

let nio: [Target.Dependency] = [
  .product(name: "NIOCore", package: "swift-nio"),
  .product(name: "NIOPosix", package: "swift-nio"),
]

let nioEmbedded: Target.Dependency = .product(name: "NIOEmbedded", package: "swift-nio")
let coreMetrics: Target.Dependency = .product(name: "CoreMetrics", package: "swift-metrics")
let prometheus: Target.Dependency = .product(name: "Prometheus", package: "swift-prometheus")

let package = Package(
  name: "Teal",
  platforms: [.macOS(.v14)],
  products: [
    .executable(name: "teal", targets: ["teal"]),
    .executable(name: "teal-demo", targets: ["teal-demo"]),
  ],
  dependencies: [
    .package(url: "https://github.com/apple/swift-nio.git", from: "2.80.0"),
    .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.5.0"),
    .package(url: "https://github.com/apple/swift-log.git", from: "1.6.0"),
    .package(url: "https://github.com/jpsim/Yams.git", from: "5.0.0"),
    .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.0.0"),
    .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.0.0"),
    .package(url: "https://github.com/apple/swift-http-types.git", from: "1.0.0"),
    .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
    .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
  ],
  targets: [
    // MARK: C
    .systemLibrary(
      name: "COpenSSL",
      pkgConfig: "openssl",
      providers: [.apt(["libssl-dev"])]
    ),

    // MARK: Pure cores
    .target(name: "TealWire"),
    .target(name: "TealRaft", dependencies: ["TealWire"]),
    .target(name: "TealGossip", dependencies: ["TealWire"]),
    .target(name: "TealDeploy", dependencies: ["TealWire"]),
    // Spec parsing (YAML via Yams, JSON), bounded for untrusted input; outside the pure core.
    .target(name: "TealSpec", dependencies: ["TealDeploy", "Yams"]),
    .target(name: "TealCluster", dependencies: ["TealWire", "TealDeploy"]),
    // The HTTP API's Codable bodies, shared by the node's server and the client (Foundation only).
    .target(name: "TealAPI"),
    // The CLI's pure rendering of deployments (describe, the watch view): DeploymentView -> lines.
    .target(name: "TealCLIViews", dependencies: ["TealAPI"]),
    // `teal chaos run`'s pure parts: scenario files, the fault schedule, the report and its text,
    // JSON and HTML (Docs/CHAOS.md).
    .target(name: "TealChaos", dependencies: ["TealDeploy", "TealWire", "Yams"]),

    // MARK: Simulation harnesses (used by tests and benchmarks)
    // TealRaftSim: RaftSimulation (bare cores) and ShellSimulation (RaftNode over DurableLog on
    // SimulatedFileSystem).
    .target(
      name: "TealRaftSim",
      dependencies: [
        "TealRaft", "TealWire", "TealConsensus", "TealStorage", "TealStorageTesting",
        .product(name: "Logging", package: "swift-log"),
      ]
    ),
    .target(name: "TealGossipSim", dependencies: ["TealGossip", "TealWire"]),
    // The Jepsen-style test's history (JSON) and its linearizability checker (register per key,
    // read/write/compare-and-set on versions); Foundation only.
    .target(name: "TealJepsen"),

    // MARK: Shells
    .target(
      name: "TealTLS",
      dependencies: ["COpenSSL", "TealWire", .product(name: "Logging", package: "swift-log")] + nio
    ),
    .target(
      name: "TealTransport",
      dependencies: [
        "TealTLS", "TealWire", .product(name: "Logging", package: "swift-log"), coreMetrics,
        .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
      ] + nio
    ),
    // In-memory peer network for tests (partition, drop, delay); never linked into `teal`.
    .target(name: "TealTransportTesting", dependencies: ["TealWire"]),
    .target(name: "TealStorage", dependencies: [.product(name: "Logging", package: "swift-log")]),
    // Storage test doubles (SimulatedFileSystem, FaultInjectingFileSystem) and the append benchmark; never
    // linked into `teal` or any production module.
    .target(name: "TealStorageTesting", dependencies: ["TealStorage"]),
    .target(
      name: "TealConsensus",
      dependencies: ["TealRaft", "TealStorage", "TealWire", .product(name: "Logging", package: "swift-log")]
    ),
    .target(
      name: "TealMembership",
      dependencies: ["TealGossip", "TealTLS", "TealWire", .product(name: "Logging", package: "swift-log")]
    ),
    .target(
      name: "TealHooks",
      dependencies: [
        "TealDeploy",
        .product(name: "NIOHTTP1", package: "swift-nio"),
        .product(name: "Logging", package: "swift-log"),
      ] + nio
    ),
    // TealHealth: the one health rule and threshold tracker that TealTasks and TealLoadBalancer share.
    .target(name: "TealHealth", dependencies: [.product(name: "NIOHTTP1", package: "swift-nio")] + nio),
    .target(
      name: "TealTasks",
      dependencies: ["TealHealth", .product(name: "Logging", package: "swift-log")] + nio
    ),
    .target(
      name: "TealLoadBalancer",
      dependencies: [
        "TealHealth", coreMetrics,
        .product(name: "NIOHTTP1", package: "swift-nio"),
        .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
        .product(name: "Logging", package: "swift-log"),
      ] + nio
    ),

    .target(
      name: "TealClient",
      dependencies: [
        "TealAPI", "TealTLS",
        .product(name: "NIOHTTP1", package: "swift-nio"),
        .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
      ] + nio
    ),
    .target(
      name: "TealTraffic",
      dependencies: [
        .product(name: "NIOHTTP1", package: "swift-nio"),
        .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
      ] + nio
    ),

    // The node's metrics: one Prometheus registry per node, the catalogue of every `teal_*` series
    // (name, type, help, labels) and the text exposition served at GET /metrics.
    .target(name: "TealMetrics", dependencies: [coreMetrics, prometheus]),

    // MARK: The node
    .target(
      name: "TealNode",
      dependencies: [
        "TealWire", "TealTLS", "TealTransport", "TealRaft", "TealConsensus", "TealGossip", "TealMembership",
        "TealDeploy", "TealSpec", "TealCluster", "TealAPI", "TealTasks", "TealLoadBalancer", "TealHooks", "Yams",
        "TealMetrics", "TealStorage", coreMetrics,
        .product(name: "Hummingbird", package: "hummingbird"),
        .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        .product(name: "UnixSignals", package: "swift-service-lifecycle"),
        .product(name: "HTTPTypes", package: "swift-http-types"),
        .product(name: "NIOHTTP1", package: "swift-nio"),
        .product(name: "Logging", package: "swift-log"),
      ] + nio
    ),

    // A whole cluster in one process for fast tests: the node's control plane (NodeControlPlane) over the
    // in-memory network, simulated disks, a manual clock and in-memory tasks, balancer and gossip. Never
    // linked into `teal`.
    .target(
      name: "TealNodeTesting",
      dependencies: [
        "TealNode", "TealTransportTesting", "TealStorage", "TealStorageTesting", "TealCluster", "TealConsensus",
        "TealRaft", "TealDeploy",
        "TealGossip", "TealMembership", "TealTasks", "TealLoadBalancer", "TealWire",
        .product(name: "Logging", package: "swift-log"),
      ]
    ),

    // MARK: Executables
    .executableTarget(
      name: "teal",
      dependencies: [
        "TealTLS", "TealTransport", "TealWire", "TealDeploy", "TealSpec", "TealAPI", "TealClient", "TealNode", "Yams",
        "TealCLIViews", "TealChaos", "TealTraffic",
        .product(name: "ArgumentParser", package: "swift-argument-parser"),
        .product(name: "Logging", package: "swift-log"),
      ]
    ),
    .executableTarget(
      name: "teal-demo",
      dependencies: [
        "TealWire",
        .product(name: "ArgumentParser", package: "swift-argument-parser"),
        .product(name: "NIOHTTP1", package: "swift-nio"),
      ] + nio
    ),

    // MARK: Benchmarks (programs; results in Docs/BENCHMARKS.md)
    .executableTarget(
      name: "TransportBenchmark",
      dependencies: ["TealTransport", "TealTLS", "TealWire"] + nio,
      path: "Benchmarks/TransportBenchmark"
    ),
    .executableTarget(
      name: "RaftBenchmark",
      dependencies: ["TealRaft", "TealRaftSim", "TealStorage"],
      path: "Benchmarks/RaftBenchmark"
    ),
    .executableTarget(
      name: "ProxyBenchmark",
      dependencies: ["TealLoadBalancer", "TealMetrics"] + nio,
      path: "Benchmarks/proxy/ProxyBenchmark"
    ),
    .executableTarget(
      name: "ClusterBenchmark",
      dependencies: ["TealCluster", "TealDeploy", "TealWire"],
      path: "Benchmarks/ClusterBenchmark"
    ),
    // The scale simulation's long run (5 nodes, 200 services, 50 deployments, faults; seeds) and the
    // cost of a commit and of a snapshot by number of services (issue 18, item 4).
    .executableTarget(
      name: "ScaleSimBenchmark",
      dependencies: ["TealNodeTesting", "TealCluster", "TealDeploy", "TealWire"],
      path: "Benchmarks/ScaleSimBenchmark"
    ),
    .executableTarget(
      name: "GossipBenchmark",
      dependencies: ["TealGossip", "TealGossipSim"],
      path: "Benchmarks/GossipBenchmark"
    ),

    // MARK: Tests
    .target(
      name: "TealTestSupport",
      dependencies: [
        .product(name: "NIOHTTP1", package: "swift-nio"),
        .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
      ] + nio,
      path: "Tests/TealTestSupport"),
    .testTarget(name: "TealWireTests", dependencies: ["TealWire"]),
    // Runs the built `teal` executable (built with the tests by `swift build --build-tests` / `swift test`).
    .testTarget(name: "TealCLITests", dependencies: ["TealTestSupport", "TealAPI"]),
    .testTarget(name: "TealTLSTests", dependencies: ["TealTestSupport", "TealTLS", "TealWire", nioEmbedded] + nio),
    .testTarget(
      name: "TealTransportTests",
      dependencies: [
        "TealTestSupport", "TealTransport", "TealTransportTesting", "TealTLS", "TealWire", nioEmbedded,
        .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
      ] + nio),
    .testTarget(
      name: "TealRaftTests",
      dependencies: ["TealRaft", "TealRaftSim", "TealWire", "TealConsensus", "TealStorage", "TealStorageTesting"]),
    .testTarget(
      name: "TealStorageTests", dependencies: ["TealTestSupport", "TealStorage", "TealStorageTesting", "TealWire"]),
    .testTarget(name: "TealGossipTests", dependencies: ["TealGossip", "TealGossipSim", "TealWire"]),
    .testTarget(
      name: "TealConsensusTests",
      dependencies: [
        "TealTestSupport", "TealConsensus", "TealRaft", "TealStorage", "TealStorageTesting", "TealWire",
        "TealTransport", "TealTransportTesting", "TealTLS",
        .product(name: "Logging", package: "swift-log"),
      ] + nio
    ),
    .testTarget(
      name: "TealMembershipTests",
      dependencies: [
        "TealMembership", "TealGossip", "TealWire", "TealTransport", "TealTransportTesting", "TealTLS",
        .product(name: "Logging", package: "swift-log"),
      ] + nio
    ),
    .testTarget(name: "TealDeployTests", dependencies: ["TealDeploy", "TealSpec"]),
    .testTarget(name: "TealSpecTests", dependencies: ["TealSpec", "TealDeploy", "TealWire"]),
    // Checks HTTP answers against Docs/openapi.yaml (test-only: the cluster tests and TealAPITests).
    .target(
      name: "TealAPIConformance", dependencies: [.product(name: "Yams", package: "Yams")],
      path: "Tests/TealAPIConformance"),
    .testTarget(name: "TealAPITests", dependencies: ["TealAPI", "TealAPIConformance"]),
    .testTarget(name: "TealCLIViewsTests", dependencies: ["TealCLIViews", "TealAPI"]),
    .testTarget(name: "TealChaosTests", dependencies: ["TealChaos", "TealDeploy"]),
    .testTarget(
      name: "TealClientTests",
      dependencies: [
        "TealClient", "TealAPI", "TealTestSupport", .product(name: "NIOHTTP1", package: "swift-nio"),
        .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
      ] + nio
    ),
    .testTarget(
      name: "TealNodeTests",
      dependencies: [
        "TealNode", "TealTestSupport", "TealWire", "TealCluster", "TealAPI", "TealGossip", "TealDeploy", "TealSpec",
        "TealTasks", "TealLoadBalancer", "TealMetrics", "TealStorage",
        .product(name: "Hummingbird", package: "hummingbird"),
        // TealClient: the variable routes are tested through the client, in process.
        "TealClient",
      ]
    ),
    .testTarget(name: "TealClusterTests", dependencies: ["TealCluster", "TealDeploy", "TealWire"]),
    // The node's control plane under TealNodeTesting: three nodes in one process, manual time.
    .testTarget(
      name: "TealNodeSimTests",
      dependencies: ["TealNodeTesting", "TealNode", "TealCluster", "TealDeploy", "TealLoadBalancer", "TealWire"]
    ),
    .testTarget(
      name: "TealHooksTests",
      dependencies: ["TealHooks", "TealDeploy", "TealWire", .product(name: "NIOHTTP1", package: "swift-nio")] + nio
    ),
    .testTarget(name: "TealHealthTests", dependencies: ["TealHealth"]),
    .testTarget(
      name: "TealLoadBalancerTests",
      dependencies: [
        // TealTasks: the zero-drop load test runs real teal-demo tasks behind the balancer.
        "TealLoadBalancer", "TealHealth", "TealTasks", "TealTestSupport", "TealMetrics", coreMetrics, prometheus,
        nioEmbedded, .product(name: "NIOHTTP1", package: "swift-nio"),
        .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
      ] + nio
    ),
    // Runs the built `teal-demo` executable as a task (built with the tests by `swift build --build-tests`).
    .testTarget(
      name: "TealTasksTests",
      dependencies: ["TealTasks", "TealHealth", .product(name: "NIOHTTP1", package: "swift-nio")] + nio
    ),
    .testTarget(
      name: "TealTrafficTests",
      dependencies: ["TealTraffic", "TealTestSupport", .product(name: "NIOHTTP1", package: "swift-nio")] + nio
    ),
    // Runs real `teal node start` processes (the built `teal` and `teal-demo`); skipped until the
    // node command exists.
    // The checker's unit tests, and a Jepsen-style run against real `teal node start` processes
    // (clients on every node's API, a nemesis that kills, pauses and partitions; TEAL_JEPSEN_SECONDS).
    .testTarget(
      name: "TealJepsenTests",
      dependencies: [
        "TealJepsen", "TealTraffic", "TealTestSupport", .product(name: "NIOHTTP1", package: "swift-nio"),
        .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
      ] + nio
    ),
    .testTarget(
      name: "TealNodeClusterTests",
      dependencies: [
        "TealTraffic", "TealTestSupport", "TealAPIConformance", .product(name: "NIOHTTP1", package: "swift-nio"),
        .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
      ] + nio
    ),
  ],
  swiftLanguageModes: [.v6]
)
