// The HTTP endpoints of teal-demo.

import Foundation
import NIOCore
import NIOHTTP1

/// What every connection needs to answer: identity and the shared knobs.
struct DemoIdentity: Sendable {
  var version: String
  var taskID: String?
  var revision: String?
  var port: Int
  var pid: Int32
}

/// Answers one HTTP/1.1 request at a time (the pipeline handler in front queues pipelined ones).
///
/// Endpoints: `GET /` (identity), `GET /health`, `POST /process` (counts the uploaded bytes),
/// `GET /control` and `POST /control` (the knobs). Every response carries `x-teal-revision` when
/// the revision is known, `content-length` and a JSON body. Bodies are never buffered except for
/// `/control` (at most 64 KiB, else 413).
final class DemoHTTPHandler: ChannelInboundHandler {
  typealias InboundIn = HTTPServerRequestPart
  typealias OutboundOut = HTTPServerResponsePart

  private static let maximumControlBody = 64 * 1024

  private let identity: DemoIdentity
  private let control: DemoControl
  private var request: HTTPRequestHead?
  private var bodyBytes = 0
  private var controlBody: ByteBuffer?
  private var controlBodyTooLarge = false
  /// True while a request counted in `control.inFlight` waits for its response.
  private var counted = false

  init(identity: DemoIdentity, control: DemoControl) {
    self.identity = identity
    self.control = control
  }

  func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    switch unwrapInboundIn(data) {
    case .head(let head):
      request = head
      bodyBytes = 0
      controlBody = nil
      controlBodyTooLarge = false
      if !head.uri.hasPrefix("/control") {
        counted = true
        control.requestStarted()
      }
      if head.headers[canonicalForm: "expect"].contains(where: { $0.lowercased() == "100-continue" }) {
        context.writeAndFlush(
          wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: .continue))), promise: nil)
      }
    case .body(var buffer):
      bodyBytes += buffer.readableBytes
      if path == "/control" {
        if (controlBody?.readableBytes ?? 0) + buffer.readableBytes > Self.maximumControlBody {
          controlBodyTooLarge = true
        } else if controlBody == nil {
          controlBody = buffer
        } else {
          controlBody?.writeBuffer(&buffer)
        }
      }
    case .end:
      guard let head = request else { return }
      request = nil
      respond(context: context, to: head)
    }
  }

  private var path: String {
    guard let uri = request?.uri else { return "" }
    return String(uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first ?? "")
  }

  // MARK: Routing

  private func respond(context: ChannelHandlerContext, to head: HTTPRequestHead) {
    let path = String(head.uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first ?? "")
    switch (head.method, path) {
    case (.GET, "/health"), (.HEAD, "/health"):
      let knobs = control.current
      if knobs.failHealth {
        send(context, head, status: .serviceUnavailable, json: ["status": "failing", "version": identity.version])
      } else {
        send(context, head, status: .ok, json: ["status": "ok", "version": identity.version])
      }
    case (.GET, "/"), (.HEAD, "/"):
      answerAfterKnobs(context, head) { context, head in
        self.send(context, head, status: .ok, json: self.identityJSON())
      }
    case (.POST, "/process"):
      let bytes = bodyBytes
      answerAfterKnobs(context, head) { context, head in
        if self.control.current.rejectUploads {
          self.send(
            context, head, status: .internalServerError,
            json: ["error": "uploads are refused by this version", "version": self.identity.version])
        } else {
          var json = self.identityJSON()
          json["processedBytes"] = bytes
          self.send(context, head, status: .ok, json: json)
        }
      }
    case (.GET, "/control"):
      var json = knobsJSON(control.current)
      json["inFlight"] = control.inFlight
      send(context, head, status: .ok, json: json)
    case (.POST, "/control"), (.PUT, "/control"):
      updateKnobs(context, head)
    case (_, "/"), (_, "/health"), (_, "/process"), (_, "/control"):
      send(context, head, status: .methodNotAllowed, json: ["error": "method \(head.method) not allowed on \(path)"])
    default:
      send(context, head, status: .notFound, json: ["error": "no endpoint \(path)"])
    }
  }

  /// Applies the latency and error-rate knobs, then calls `answer` (or sends the injected 500).
  private func answerAfterKnobs(
    _ context: ChannelHandlerContext, _ head: HTTPRequestHead,
    _ answer: @escaping (ChannelHandlerContext, HTTPRequestHead) -> Void
  ) {
    let decision = control.decide()
    let finish = {
      if decision.fail {
        self.send(
          context, head, status: .internalServerError,
          json: ["error": "injected failure (errorRate)", "version": self.identity.version])
      } else {
        answer(context, head)
      }
    }
    if decision.latencyMs > 0 {
      context.eventLoop.assumeIsolated().scheduleTask(in: .milliseconds(Int64(decision.latencyMs))) { finish() }
    } else {
      finish()
    }
  }

  private func updateKnobs(_ context: ChannelHandlerContext, _ head: HTTPRequestHead) {
    if controlBodyTooLarge {
      send(context, head, status: .payloadTooLarge, json: ["error": "control body larger than 64 KiB"])
      return
    }
    let bytes = controlBody.map { Data($0.readableBytesView) } ?? Data()
    let update: DemoKnobsUpdate
    do {
      update = try JSONDecoder().decode(DemoKnobsUpdate.self, from: bytes)
    } catch {
      send(
        context, head, status: .badRequest,
        json: [
          "error":
            "body must be a JSON object with any of failHealth (bool), errorRate (0...1), latencyMs (int), rejectUploads (bool), seed (uint64)"
        ])
      return
    }
    switch control.apply(update) {
    case .success(let knobs):
      send(context, head, status: .ok, json: knobsJSON(knobs))
    case .failure(let error):
      send(context, head, status: .badRequest, json: ["error": error.message])
    }
  }

  // MARK: Bodies

  private func identityJSON() -> [String: any Sendable] {
    var json: [String: any Sendable] = ["version": identity.version, "pid": Int(identity.pid), "port": identity.port]
    if let taskID = identity.taskID { json["taskId"] = taskID }
    if let revision = identity.revision { json["revision"] = revision }
    return json
  }

  private func knobsJSON(_ knobs: DemoKnobs) -> [String: any Sendable] {
    [
      "failHealth": knobs.failHealth, "errorRate": knobs.errorRate, "latencyMs": knobs.latencyMs,
      "rejectUploads": knobs.rejectUploads,
    ]
  }

  private func send(
    _ context: ChannelHandlerContext, _ request: HTTPRequestHead, status: HTTPResponseStatus,
    json: [String: any Sendable]
  ) {
    let data =
      (try? JSONSerialization.data(withJSONObject: json, options: [.sortedKeys, .withoutEscapingSlashes]))
      ?? Data("{}".utf8)
    var body = context.channel.allocator.buffer(capacity: data.count + 1)
    body.writeBytes(data)
    body.writeString("\n")
    var head = HTTPResponseHead(version: request.version, status: status)
    head.headers.add(name: "content-type", value: "application/json")
    head.headers.add(name: "content-length", value: String(body.readableBytes))
    if let revision = identity.revision { head.headers.add(name: "x-teal-revision", value: revision) }
    if let taskID = identity.taskID { head.headers.add(name: "x-teal-task-id", value: taskID) }
    if !request.isKeepAlive { head.headers.add(name: "connection", value: "close") }
    context.write(wrapOutboundOut(.head(head)), promise: nil)
    if request.method != .HEAD {
      context.write(wrapOutboundOut(.body(.byteBuffer(body))), promise: nil)
    }
    let keepAlive = request.isKeepAlive
    let ended = context.writeAndFlush(wrapOutboundOut(.end(nil)))
    if counted {
      counted = false
      control.requestFinished()
    }
    if !keepAlive {
      let channel = context.channel
      ended.whenComplete { _ in channel.close(promise: nil) }
    }
  }

  func channelInactive(context: ChannelHandlerContext) {
    if counted {
      counted = false
      control.requestFinished()
    }
    context.fireChannelInactive()
  }

  func errorCaught(context: ChannelHandlerContext, error: any Error) {
    context.close(promise: nil)
  }
}
