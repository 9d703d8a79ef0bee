// Issue 11, item 14: a target's response with a transfer-coding besides `chunked` (e.g.
// `Transfer-Encoding: gzip, chunked`) keeps every coding; only the chunked framing is redone
// (RFC 9112 §6.1). An HTTP/1.0 client, which cannot receive a transfer-coding, gets 502.

import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import Testing

@testable import TealLoadBalancer

/// A target that answers every request (a head without a body) with the same raw bytes, so the
/// test controls the framing exactly (NIO's encoder would re-frame it).
private final class RawTarget: Sendable {
  let server: any Channel
  var address: TargetAddress { TargetAddress(host: "127.0.0.1", port: self.server.localAddress?.port ?? 0) }

  private init(server: any Channel) {
    self.server = server
  }

  /// - Parameter closeAfter: close the connection after each response (a close-delimited body).
  static func start(response: String, closeAfter: Bool = false) async throws -> RawTarget {
    let server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
      .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
      .childChannelInitializer { channel in
        channel.eventLoop.makeCompletedFuture {
          try channel.pipeline.syncOperations.addHandler(Responder(response: response, closeAfter: closeAfter))
        }
      }
      .bind(host: "127.0.0.1", port: 0)
      .get()
    return RawTarget(server: server)
  }

  func stop() async {
    try? await self.server.close()
  }

  private final class Responder: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    let response: String
    let closeAfter: Bool
    var received = ""

    init(response: String, closeAfter: Bool) {
      self.response = response
      self.closeAfter = closeAfter
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
      self.received += String(buffer: self.unwrapInboundIn(data))
      while let end = self.received.range(of: "\r\n\r\n") {
        self.received.removeSubrange(self.received.startIndex..<end.upperBound)
        let written = context.writeAndFlush(self.wrapOutboundOut(ByteBuffer(string: self.response)))
        if self.closeAfter {
          written.assumeIsolated().whenComplete { _ in context.close(promise: nil) }
          return
        }
      }
    }
  }
}

/// One parsed response off the wire: the head's lines and the body with its chunked framing undone.
private struct WireResponse {
  var statusLine: String
  var headers: [(String, String)]
  var body: String
  var trailers: [(String, String)]
  /// The bytes after this response.
  var rest: Substring

  func values(_ name: String) -> [String] { self.headers.filter { $0.0.lowercased() == name }.map(\.1) }

  /// Parses one response from `text`; nil while it is incomplete. Works on bytes: in a Swift
  /// string "\r\n" is one character.
  static func parse(_ text: Substring) -> WireResponse? {
    let bytes = Array(text.utf8)
    var index = 0
    func line() -> String? {
      var end = index
      while end + 1 < bytes.count, !(bytes[end] == 13 && bytes[end + 1] == 10) { end += 1 }
      guard end + 1 < bytes.count else { return nil }
      defer { index = end + 2 }
      return String(decoding: bytes[index..<end], as: UTF8.self)
    }
    func field(_ line: String) -> (String, String) {
      let parts = line.split(separator: ":", maxSplits: 1)
      return (String(parts[0]), parts.count > 1 ? parts[1].trimmingCharacters(in: .whitespaces) : "")
    }
    guard let statusLine = line() else { return nil }
    var response = WireResponse(statusLine: statusLine, headers: [], body: "", trailers: [], rest: "")
    while true {
      guard let header = line() else { return nil }
      if header.isEmpty { break }
      response.headers.append(field(header))
    }
    func rest() -> Substring { Substring(String(decoding: bytes[index...], as: UTF8.self)) }
    if response.statusLine.contains(" 204 ") || response.statusLine.contains(" 304 ") {
      response.rest = rest()
      return response
    }
    if let length = response.values("content-length").first.flatMap({ Int($0) }) {
      guard bytes.count - index >= length else { return nil }
      response.body = String(decoding: bytes[index..<(index + length)], as: UTF8.self)
      index += length
      response.rest = rest()
      return response
    }
    guard let codings = response.values("transfer-encoding").last, codings.lowercased().hasSuffix("chunked") else {
      response.body = String(rest())  // delimited by the end of the connection
      return response
    }
    while true {
      guard let sizeLine = line(), let size = Int(sizeLine, radix: 16) else { return nil }
      if size == 0 {
        while true {
          guard let trailer = line() else { return nil }
          if trailer.isEmpty { break }
          response.trailers.append(field(trailer))
        }
        response.rest = rest()
        return response
      }
      guard bytes.count - index >= size + 2 else { return nil }
      response.body += String(decoding: bytes[index..<(index + size)], as: UTF8.self)
      index += size
      guard bytes[index] == 13, bytes[index + 1] == 10 else { return nil }
      index += 2
    }
  }
}

/// A balancer over one raw target.
private func balancer(over target: RawTarget) async throws -> (LoadBalancer, Int) {
  let balancer = LoadBalancer()
  var service = lbTestService()
  service.healthCheck.probe = .tcp
  let listeners = try await balancer.addService(
    service,
    routes: ServiceRoutes(
      generation: 1, targetGroups: [TargetGroup(revision: "blue", targets: [target.address])],
      productionWeights: ["blue": 1]))
  return (balancer, listeners.productionPort)
}

/// "hello" and " world" as two chunks, then a trailer field. The bytes stand for gzip data: the
/// proxy must neither decode nor change them.
private let twoChunks = "5\r\nhello\r\n6\r\n world\r\n0\r\nx-digest: abc\r\n\r\n"

@Suite("Response transfer codings", .serialized)
struct ResponseFramingTests {
  /// Before: the response left as `transfer-encoding: chunked`, its body still gzip-coded: the
  /// client could not know it had to decode it.
  @Test(arguments: [
    "transfer-encoding: gzip, chunked\r\n", "transfer-encoding: gzip\r\ntransfer-encoding: chunked\r\n",
  ])
  func everyTransferCodingIsKeptAndTheChunksAreReframed(fields: String) async throws {
    let target = try await RawTarget.start(response: "HTTP/1.1 200 OK\r\n\(fields)\r\n" + twoChunks)
    let (balancer, port) = try await balancer(over: target)
    let client = try await RawClient.connect(port: port)
    try await client.send("GET / HTTP/1.1\r\nhost: teal.test\r\n\r\n")
    #expect(await lbEventually { WireResponse.parse(client.text[...]) != nil })
    // The connection stays usable: a second request on it.
    try await client.send("GET / HTTP/1.1\r\nhost: teal.test\r\n\r\n")
    #expect(await lbEventually { WireResponse.parse(client.text[...]).flatMap { WireResponse.parse($0.rest) } != nil })
    await client.close()
    await balancer.shutdown()
    await target.stop()
    let first = try #require(WireResponse.parse(client.text[...]), "\(client.text)")
    let second = try #require(WireResponse.parse(first.rest), "\(client.text)")
    for response in [first, second] {
      #expect(response.statusLine == "HTTP/1.1 200 OK")
      #expect(response.values("transfer-encoding") == ["gzip, chunked"], "\(client.text)")
      #expect(response.values("content-length").isEmpty)
      #expect(response.body == "hello world")
    }
    #expect(first.trailers.map(\.0) == ["x-digest"], "trailer fields pass")
  }

  /// A coding that is not followed by chunked (the target's body ends with its connection) is
  /// kept, and the proxy adds the chunked framing so the client connection stays open.
  @Test func aCloseDelimitedCodedBodyGetsChunkedAdded() async throws {
    let target = try await RawTarget.start(
      response: "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\nconnection: close\r\n\r\nhello world", closeAfter: true)
    let (balancer, port) = try await balancer(over: target)
    let client = try await RawClient.connect(port: port)
    try await client.send("GET / HTTP/1.1\r\nhost: teal.test\r\n\r\n")
    #expect(await lbEventually { WireResponse.parse(client.text[...]) != nil })
    await client.close()
    await balancer.shutdown()
    await target.stop()
    let response = try #require(WireResponse.parse(client.text[...]), "\(client.text)")
    #expect(response.values("transfer-encoding") == ["gzip, chunked"], "\(client.text)")
    #expect(response.body == "hello world")
  }

  /// An HTTP/1.0 client cannot receive a transfer-coding (RFC 9112 §6.1), and the proxy does not
  /// decode gzip: 502 rather than a body the client would take for plain.
  @Test func anHTTP10ClientGets502ForACodedBody() async throws {
    let target = try await RawTarget.start(
      response: "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n" + twoChunks)
    let (balancer, port) = try await balancer(over: target)
    let client = try await RawClient.connect(port: port)
    try await client.send("GET / HTTP/1.0\r\n\r\n")
    #expect(await lbEventually { !client.isOpen })
    await client.close()
    await balancer.shutdown()
    await target.stop()
    #expect(client.text.hasPrefix("HTTP/1.0 502 Bad Gateway\r\n"), "\(client.text)")
    #expect(client.text.contains("transfer-coding 'gzip'"), "\(client.text)")
  }

  /// Plain chunked and content-length responses keep their framing (regression guard for the
  /// encoder no longer setting framing headers itself).
  @Test func plainFramingsAreUnchanged() async throws {
    let chunked = try await RawTarget.start(
      response: "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n" + twoChunks)
    let (chunkedBalancer, chunkedPort) = try await balancer(over: chunked)
    let noContent = try await RawTarget.start(response: "HTTP/1.1 204 No Content\r\n\r\n")
    let (noContentBalancer, noContentPort) = try await balancer(over: noContent)
    let a = try await RawClient.connect(port: chunkedPort)
    try await a.send("GET / HTTP/1.1\r\nhost: teal.test\r\n\r\n")
    let b = try await RawClient.connect(port: noContentPort)
    try await b.send("GET / HTTP/1.1\r\nhost: teal.test\r\n\r\nGET / HTTP/1.1\r\nhost: teal.test\r\n\r\n")
    #expect(await lbEventually { WireResponse.parse(a.text[...]) != nil })
    #expect(await lbEventually { b.text.components(separatedBy: "HTTP/1.1 204").count == 3 })
    for client in [a, b] { await client.close() }
    await chunkedBalancer.shutdown()
    await noContentBalancer.shutdown()
    await chunked.stop()
    await noContent.stop()
    let response = try #require(WireResponse.parse(a.text[...]))
    #expect(response.values("transfer-encoding") == ["chunked"])
    #expect(response.body == "hello world")
    #expect(!b.text.lowercased().contains("transfer-encoding"), "\(b.text)")
    #expect(!b.text.lowercased().contains("content-length"), "\(b.text)")
  }
}
