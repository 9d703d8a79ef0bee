// A minimal HTTP/1.1 POST client on SwiftNIO for hooks: one connection per call, `Connection:
// close`, the whole exchange (connect included) bounded by the hook's timeout.

import NIOCore
import NIOHTTP1
import NIOPosix
import TealDeploy

/// A parsed `http://host[:port][/path]` URL.
struct HookURL: Equatable {
  var host: String
  var port: Int
  var path: String

  init(host: String, port: Int, path: String) {
    self.host = host
    self.port = port
    self.path = path
  }

  init?(_ text: String) {
    guard text.hasPrefix("http://") else { return nil }
    let rest = text.dropFirst("http://".count)
    let authority = rest.prefix { $0 != "/" }
    let path = rest.dropFirst(authority.count)
    guard !authority.isEmpty else { return nil }
    var host = Substring(authority)
    var port = 80
    if authority.hasPrefix("[") {
      guard let close = authority.firstIndex(of: "]") else { return nil }
      host = authority[authority.index(after: authority.startIndex)..<close]
      let after = authority[authority.index(after: close)...]
      if after.hasPrefix(":") {
        guard let parsed = Int(after.dropFirst()), (1...65535).contains(parsed) else { return nil }
        port = parsed
      } else if !after.isEmpty {
        return nil
      }
    } else if let colon = authority.lastIndex(of: ":") {
      guard let parsed = Int(authority[authority.index(after: colon)...]), (1...65535).contains(parsed) else {
        return nil
      }
      host = authority[..<colon]
      port = parsed
    }
    guard !host.isEmpty else { return nil }
    self.host = String(host)
    self.port = port
    self.path = path.isEmpty ? "/" : String(path)
  }
}

enum HTTPHookClient {
  /// Upper bound on the response body read (beyond `outputLimit`, only for JSON parsing).
  static let maximumBodyBytes = 64 * 1024

  struct Timeout: Error {}
  struct Incomplete: Error, CustomStringConvertible {
    var description: String
  }
  /// Nothing was sent: the hook is retried (with backoff, within its overall timeout).
  struct Unreachable: Error, CustomStringConvertible {
    var description: String
  }

  static func post(
    url text: String, body: [UInt8], timeout: TimeSpan, group: any EventLoopGroup, outputLimit: Int,
    headers extra: [(String, String)] = []
  ) async -> (HookOutcome, String?, TimeSpan?) {
    guard let url = HookURL(text) else { return (.failed(reason: "invalid hook URL \(text)"), nil, nil) }
    let eventLoop = group.next()
    let promise = eventLoop.makePromise(of: (status: Int, body: [UInt8]).self)
    let timeoutTask = eventLoop.scheduleTask(in: .milliseconds(timeout.milliseconds)) { promise.fail(Timeout()) }
    let bootstrap = ClientBootstrap(group: eventLoop)
      .connectTimeout(.milliseconds(timeout.milliseconds))
      .channelInitializer { channel in
        channel.eventLoop.makeCompletedFuture {
          try channel.pipeline.syncOperations.addHTTPClientHandlers()
          try channel.pipeline.syncOperations.addHandler(ResponseCollector(promise: promise))
        }
      }
    bootstrap.connect(host: url.host, port: url.port).whenComplete { result in
      switch result {
      case .failure(let error):
        promise.fail(Unreachable(description: "cannot connect to \(url.host):\(url.port): \(error)"))
      case .success(let channel):
        promise.futureResult.whenComplete { _ in channel.close(promise: nil) }
        var head = HTTPRequestHead(version: .http1_1, method: .POST, uri: url.path)
        head.headers.add(name: "Host", value: url.port == 80 ? url.host : "\(url.host):\(url.port)")
        head.headers.add(name: "Content-Type", value: "application/json")
        head.headers.add(name: "Accept", value: "application/json")
        head.headers.add(name: "Content-Length", value: String(body.count))
        head.headers.add(name: "Connection", value: "close")
        head.headers.add(name: "User-Agent", value: "teal-hooks/1")
        for (name, value) in extra { head.headers.add(name: name, value: value) }
        channel.write(HTTPClientRequestPart.head(head), promise: nil)
        channel.write(HTTPClientRequestPart.body(.byteBuffer(ByteBuffer(bytes: body))), promise: nil)
        channel.writeAndFlush(HTTPClientRequestPart.end(nil)).whenFailure { error in
          promise.fail(Incomplete(description: "cannot send the request: \(error)"))
        }
      }
    }
    defer { timeoutTask.cancel() }
    do {
      let response = try await promise.futureResult.get()
      return HookResponseInterpreter.outcome(status: response.status, body: response.body, outputLimit: outputLimit)
    } catch is Timeout {
      return (.timedOut, nil, nil)
    } catch let error as Unreachable {
      return (.unreachable(reason: error.description), nil, nil)
    } catch {
      return (.failed(reason: "hook call to \(text) failed: \(error)"), nil, nil)
    }
  }

  /// Collects one response; completes the promise at its end, or fails it if the connection ends first.
  final class ResponseCollector: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPClientResponsePart

    private let promise: EventLoopPromise<(status: Int, body: [UInt8])>
    private var status: Int?
    private var body: [UInt8] = []

    init(promise: EventLoopPromise<(status: Int, body: [UInt8])>) { self.promise = promise }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
      switch unwrapInboundIn(data) {
      case .head(let head):
        status = Int(head.status.code)
      case .body(var buffer):
        let room = HTTPHookClient.maximumBodyBytes - body.count
        if room > 0, let bytes = buffer.readBytes(length: min(room, buffer.readableBytes)) { body += bytes }
      case .end:
        if let status { promise.succeed((status, body)) }
        context.close(promise: nil)
      }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
      promise.fail(Incomplete(description: "bad HTTP response: \(error)"))
      context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
      promise.fail(Incomplete(description: "connection closed before a complete response"))
      context.fireChannelInactive()
    }
  }
}
