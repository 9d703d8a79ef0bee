import NIOCore
import NIOEmbedded
import NIOHTTP1
import Testing

@testable import TealLoadBalancer

/// A client connection of a production listener, driven byte by byte.
private func makeProxyChannel(maxHeaderBytes: Int = 1024) throws -> (EmbeddedChannel, ServiceRuntime) {
  let channel = EmbeddedChannel()
  let runtime = ServiceRuntime(
    name: "web", traffic: ServiceTraffic(routes: .empty, healthyThreshold: 1, unhealthyThreshold: 1))
  let pool = UpstreamPool(
    eventLoop: channel.eventLoop, maxIdlePerTarget: 1, connectTimeout: .seconds(1), idleTimeout: .seconds(1),
    maxAge: .seconds(60))
  var limits = NIOHTTPDecoderLimitConfiguration()
  limits.maxHeaderFieldSize = maxHeaderBytes
  limits.maxHeaderListSize = maxHeaderBytes
  try channel.pipeline.syncOperations.configureHTTPServerPipeline(
    withPipeliningAssistance: true, withErrorHandling: false,
    withEncoderConfiguration: ProxyServerHandler.encoderConfiguration,
    withDecoderLimitConfiguration: limits)
  try channel.pipeline.syncOperations.addHandler(
    ProxyServerHandler(
      runtime: runtime,
      settings: ProxySettings(role: .production, responseTimeout: .seconds(5), forwardedProto: "http", maxRetries: 2),
      pool: pool))
  try channel.connect(to: SocketAddress(ipAddress: "192.0.2.7", port: 40_000)).wait()
  return (channel, runtime)
}

private func written(_ channel: EmbeddedChannel) throws -> String {
  var out = ""
  while let data = try channel.readOutbound(as: IOData.self) {
    switch data {
    case .byteBuffer(let buffer): out += String(buffer: buffer)
    case .fileRegion: out += "<file region>"
    }
  }
  return out
}

@Suite("Proxy error paths (EmbeddedChannel)")
struct ProxyEmbeddedTests {
  @Test func malformedRequestGets400AndTheConnectionCloses() throws {
    let (channel, runtime) = try makeProxyChannel()
    try channel.writeInbound(ByteBuffer(string: "GET / HTTP/1.1\r\nHost: a\r\nBad Header Line\r\n\r\n"))
    let response = try written(channel)
    #expect(response.hasPrefix("HTTP/1.1 400 Bad Request\r\n"))
    #expect(response.lowercased().contains("connection: close"))
    #expect(response.contains("malformed HTTP request"))
    #expect(!channel.isActive)
    #expect(runtime.traffic.metrics.badRequests == 1)
  }

  @Test func oversizedHeadersGet431() throws {
    let (channel, _) = try makeProxyChannel(maxHeaderBytes: 1024)
    let big = String(repeating: "x", count: 2048)
    try channel.writeInbound(ByteBuffer(string: "GET / HTTP/1.1\r\nHost: a\r\nX-Big: \(big)\r\n\r\n"))
    let response = try written(channel)
    #expect(response.hasPrefix("HTTP/1.1 431 Request Header Fields Too Large\r\n"))
    #expect(!channel.isActive)
  }

  @Test func noHealthyTargetGets503WithAClearBodyAndTheConnectionStaysUsable() throws {
    let (channel, runtime) = try makeProxyChannel()
    for _ in 0..<2 {
      try channel.writeInbound(ByteBuffer(string: "GET /a HTTP/1.1\r\nHost: a\r\n\r\n"))
      let response = try written(channel)
      #expect(response.hasPrefix("HTTP/1.1 503 Service Unavailable\r\n"))
      #expect(response.contains("no healthy target for service 'web' on the production listener"))
      #expect(!response.lowercased().contains("connection: close"))
      #expect(channel.isActive)
    }
    #expect(runtime.traffic.metrics.noHealthyTarget[.production] == 2)
  }

  @Test func noHealthyTargetWithAPendingBodyClosesAfterTheResponse() throws {
    let (channel, _) = try makeProxyChannel()
    try channel.writeInbound(ByteBuffer(string: "POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n"))
    let response = try written(channel)
    #expect(response.hasPrefix("HTTP/1.1 503"))
    #expect(response.lowercased().contains("connection: close"))
    #expect(!channel.isActive)
  }

  @Test func connectionCloseRequestGetsItsResponseThenTheConnectionEnds() throws {
    let (channel, _) = try makeProxyChannel()
    try channel.writeInbound(ByteBuffer(string: "GET /a HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"))
    let response = try written(channel)
    #expect(response.hasPrefix("HTTP/1.1 503"))
    #expect(response.lowercased().contains("connection: close"))
    #expect(!channel.isActive)
  }
}
