import Foundation
import NIOCore
import NIOPosix
import TealTestSupport
import TealWire
import Testing

@testable import TealTLS

/// A client nobody here wrote: the `openssl s_client` command line against a TealTLS listener.
@Suite("Interop with openssl s_client", .serialized)
struct OpenSSLInteropTests {
  /// A listener that records the outcome of each handshake.
  struct Listener {
    let channel: any Channel
    let outcomes: AsyncStream<Result<PeerIdentity, any Error>>
    var port: Int { channel.localAddress?.port ?? 0 }

    init(context: TLSContext) async throws {
      let (stream, continuation) = AsyncStream.makeStream(of: Result<PeerIdentity, any Error>.self)
      outcomes = stream
      channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
        .childChannelInitializer { channel in
          channel.eventLoop.makeCompletedFuture {
            let handler = TLSHandler(context: context, role: .server(accept: { _ in true }))
            try channel.pipeline.syncOperations.addHandler(handler)
            handler.handshakeFuture.whenComplete { continuation.yield($0) }
          }
        }
        .bind(host: "127.0.0.1", port: 0).get()
    }

    func nextOutcome() async -> Result<PeerIdentity, any Error>? {
      var iterator = outcomes.makeAsyncIterator()
      return await iterator.next()
    }
  }

  let dir: String

  init() throws {
    dir = temporaryDirectory("interop")
    try CertificateDirectory.initialize(at: dir, nodes: [NodeID("n1"), NodeID("n2")])
  }

  func listener() async throws -> Listener {
    try await Listener(
      context: TLSContext(configuration: CertificateDirectory(path: dir).configuration(for: NodeID("n2"))))
  }

  @Test func sClientWithANodeCertificateCompletesATLS13Handshake() async throws {
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let listener = try await listener()
    let result = try run(
      opensslPath,
      [
        "s_client", "-connect", "127.0.0.1:\(listener.port)", "-tls1_3", "-CAfile", "\(dir)/ca.pem",
        "-cert", "\(dir)/n1.pem", "-key", "\(dir)/n1.key", "-verify_return_error", "-verify_hostname", "n2",
      ])
    #expect(result.output.contains("TLSv1.3"), "\(result.output)")
    #expect(result.output.contains("Verify return code: 0 (ok)"), "\(result.output)")
    let outcome = try #require(await listener.nextOutcome())
    #expect(try outcome.get().nodeID == NodeID("n1"))
    try await listener.channel.close()
  }

  @Test func sClientWithoutACertificateIsRefused() async throws {
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let listener = try await listener()
    _ = try run(
      opensslPath, ["s_client", "-connect", "127.0.0.1:\(listener.port)", "-tls1_3", "-CAfile", "\(dir)/ca.pem"])
    let outcome = try #require(await listener.nextOutcome())
    guard case .failure(let error) = outcome else {
      Issue.record("a client without a certificate was accepted")
      return
    }
    #expect("\(error)".contains("peer did not return a certificate"))
    try await listener.channel.close()
  }

  @Test func sClientOfferingOnlyTLS12IsRefused() async throws {
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let listener = try await listener()
    let result = try run(
      opensslPath,
      [
        "s_client", "-connect", "127.0.0.1:\(listener.port)", "-tls1_2", "-CAfile", "\(dir)/ca.pem", "-cert",
        "\(dir)/n1.pem", "-key", "\(dir)/n1.key",
      ])
    #expect(result.status != 0)
    let outcome = try #require(await listener.nextOutcome())
    #expect("\(outcome)".contains("unsupported protocol"))
    try await listener.channel.close()
  }
}
