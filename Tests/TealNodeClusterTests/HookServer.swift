// A lifecycle hook endpoint for the deployment tests: real HTTP/1.1 on 127.0.0.1, answering each
// hook execution by a rule (SUCCEEDED, FAILED, IN_PROGRESS n times, or holding the request open
// until the test releases it), and recording every call with its executionId, attempt, stage and
// `x-teal-term` header.

import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix

/// What the hook server answers one call with.
enum HookAnswer: Sendable, Equatable, CustomStringConvertible {
  case succeeded
  case failed(reason: String)
  /// `{"hookStatus": "IN_PROGRESS", "callBackDelay": N}` (ECS's field, whole seconds 1...3600; nil: absent).
  case inProgress(callBackDelay: Int?)
  /// A non-2xx status with an empty JSON body (the node takes it as FAILED).
  case httpStatus(Int)
  /// No answer until ``HookServer/release(with:)``.
  case hold

  var description: String {
    switch self {
    case .succeeded: "SUCCEEDED"
    case .failed: "FAILED"
    case .inProgress: "IN_PROGRESS"
    case .httpStatus(let code): "HTTP \(code)"
    case .hold: "held"
    }
  }

  /// The response: status and JSON body (`hold` has none).
  var response: (status: Int, body: String)? {
    switch self {
    case .succeeded: (200, #"{"hookStatus":"SUCCEEDED"}"#)
    case .failed(let reason):
      (200, #"{"hookStatus":"FAILED","reason":"# + jsonString(reason) + "}")
    case .inProgress(let delay):
      (200, #"{"hookStatus":"IN_PROGRESS""# + (delay.map { #","callBackDelay":\#($0)"# } ?? "") + "}")
    case .httpStatus(let code): (code, "{}")
    case .hold: nil
    }
  }
}

/// How one lifecycle stage's hook executions are answered: the n-th call of an execution (by its
/// executionId, from 0) gets `answers[n]`, and every call after the list `then`.
struct HookRule: Sendable {
  var answers: [HookAnswer]
  var then: HookAnswer

  static let succeed = HookRule(answers: [], then: .succeeded)
  static func fail(_ reason: String = "the test's hook says FAILED") -> HookRule {
    HookRule(answers: [], then: .failed(reason: reason))
  }
  static func inProgress(times: Int, callBackDelay: Int? = 1, then: HookAnswer = .succeeded) -> HookRule {
    HookRule(answers: Array(repeating: .inProgress(callBackDelay: callBackDelay), count: times), then: then)
  }
  /// The first call of each execution is held open; later calls (a new leader's) get `then`.
  static func holdFirst(then: HookAnswer = .succeeded) -> HookRule { HookRule(answers: [.hold], then: then) }

  func answer(forCall number: Int) -> HookAnswer { number < answers.count ? answers[number] : then }
}

/// One request the hook server received.
struct HookCall: Sendable, CustomStringConvertible {
  /// Order of arrival, from 0.
  var index: Int
  var receivedAt: Date
  var path: String
  /// The `x-teal-term` header, nil when absent or not a number.
  var term: UInt64?
  var executionId: String
  var attempt: Int?
  var stage: String
  var deploymentId: String?
  var direction: String?
  var productionStep: Int?
  /// The n-th call of this executionId, from 0.
  var callOfExecution: Int
  /// What the rule said.
  var rule: HookAnswer
  /// Set once an answer was written (a held call: when released).
  var answered: HookAnswer?
  /// The client closed the connection before it got an answer (a killed node's held call).
  var closedUnanswered = false
  /// The body as received.
  var body: String

  var description: String {
    "#\(index) \(stage) \(executionId) attempt \(attempt.map(String.init) ?? "-") term \(term.map(String.init) ?? "-")"
      + " -> \(answered?.description ?? (closedUnanswered ? "closed unanswered" : "pending"))"
  }
}

/// The hook endpoint. Every bound: at most ``maximumCalls`` calls are recorded (later ones are
/// answered 503 and counted in ``overflow``); bodies over 1 MiB are refused with 413.
final class HookServer: Sendable {
  static let maximumCalls = 10_000
  static let maximumBodyBytes = 1 << 20

  let port: Int
  private let channel: any Channel
  private let state: NIOLockedValueBox<State>

  struct State {
    var calls: [HookCall] = []
    var rules: [String: HookRule] = [:]
    var defaultRule = HookRule.succeed
    var perExecution: [String: Int] = [:]
    /// Held calls by index, with their connection.
    var held: [Int: any Channel] = [:]
    var overflow = 0
  }

  /// `http://127.0.0.1:PORT/hooks/STAGE`, the URL a spec names for `stage`.
  func url(_ stage: String) -> String { "http://127.0.0.1:\(port)/hooks/\(stage)" }

  init(rules: [String: HookRule] = [:], defaultRule: HookRule = .succeed) async throws {
    let state = NIOLockedValueBox(State(rules: rules, defaultRule: defaultRule))
    self.state = state
    channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
      .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
      .serverChannelOption(.backlog, value: 256)
      .childChannelInitializer { channel in
        channel.eventLoop.makeCompletedFuture {
          try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
          try channel.pipeline.syncOperations.addHandler(HookHandler(state: state))
        }
      }
      .bind(host: "127.0.0.1", port: 0).get()
    guard let bound = channel.localAddress?.port else { preconditionFailure("a bound server socket has a port") }
    port = bound
  }

  func setRule(_ rule: HookRule, for stage: String) { state.withLockedValue { $0.rules[stage] = rule } }

  var calls: [HookCall] { state.withLockedValue { $0.calls } }
  var overflow: Int { state.withLockedValue { $0.overflow } }

  /// Answers every held call whose connection is still open with `answer`; returns how many.
  @discardableResult
  func release(with answer: HookAnswer = .succeeded) -> Int {
    precondition(answer != .hold, "a held call is released with an answer")
    let held = state.withLockedValue { state -> [(Int, any Channel)] in
      let list = state.held.sorted { $0.key < $1.key }
      state.held = [:]
      for (index, _) in list { state.calls[index].answered = answer }
      return list
    }
    for (_, channel) in held { HookHandler.write(answer, keepAlive: false, on: channel) }
    return held.count
  }

  /// Waits until a call matching `condition` arrived; returns the first such call.
  func waitForCall(
    _ what: String, timeout: Duration = .seconds(60), where condition: @escaping @Sendable (HookCall) -> Bool
  ) async throws -> HookCall {
    var found: HookCall?
    try await waitUntil(what, timeout: timeout, interval: .milliseconds(20)) {
      found = self.calls.first(where: condition)
      return found != nil
    }
    guard let found else { preconditionFailure("waitUntil returned without the call") }
    return found
  }

  func stop() async {
    let held = state.withLockedValue { state -> [any Channel] in
      defer { state.held = [:] }
      return Array(state.held.values)
    }
    for channel in held { channel.close(promise: nil) }
    try? await channel.close()
  }

  // MARK: - The connection handler

  private final class HookHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    let state: NIOLockedValueBox<State>
    var head: HTTPRequestHead?
    var body: [UInt8] = []
    var tooLarge = false
    /// The call held on this connection, if any.
    var heldIndex: Int?

    init(state: NIOLockedValueBox<State>) { self.state = state }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
      switch unwrapInboundIn(data) {
      case .head(let received):
        head = received
        body = []
        tooLarge = false
      case .body(let buffer):
        if body.count + buffer.readableBytes > HookServer.maximumBodyBytes {
          tooLarge = true
        } else {
          body.append(contentsOf: buffer.readableBytesView)
        }
      case .end:
        guard let head else { return }
        self.head = nil
        if tooLarge {
          Self.write(.httpStatus(413), keepAlive: false, on: context.channel)
          return
        }
        handle(head, context: context)
      }
    }

    private func handle(_ head: HTTPRequestHead, context: ChannelHandlerContext) {
      let object = (try? JSONSerialization.jsonObject(with: Data(body))) as? [String: Any] ?? [:]
      let text = String(decoding: body, as: UTF8.self)
      let executionId = object["executionId"] as? String ?? "(none)"
      let stage = object["lifecycleStage"] as? String ?? head.uri.split(separator: "/").last.map(String.init) ?? "-"
      let term = head.headers["x-teal-term"].first.flatMap { UInt64($0.trimmingCharacters(in: .whitespaces)) }
      let channel = context.channel
      let (index, answer) = state.withLockedValue { state -> (Int?, HookAnswer) in
        guard state.calls.count < HookServer.maximumCalls else {
          state.overflow += 1
          return (nil, .httpStatus(503))
        }
        let number = state.perExecution[executionId, default: 0]
        state.perExecution[executionId] = number + 1
        let rule = (state.rules[stage] ?? state.defaultRule).answer(forCall: number)
        let index = state.calls.count
        state.calls.append(
          HookCall(
            index: index, receivedAt: Date(), path: head.uri, term: term, executionId: executionId,
            attempt: (object["attempt"] as? NSNumber)?.intValue, stage: stage,
            deploymentId: object["deploymentId"] as? String, direction: object["direction"] as? String,
            productionStep: (object["productionStep"] as? NSNumber)?.intValue, callOfExecution: number, rule: rule,
            answered: rule == .hold ? nil : rule, body: text))
        if rule == .hold { state.held[index] = channel }
        return (index, rule)
      }
      if answer == .hold {
        heldIndex = index
        return
      }
      Self.write(answer, keepAlive: head.isKeepAlive, on: channel)
    }

    func channelInactive(context: ChannelHandlerContext) {
      if let index = heldIndex {
        state.withLockedValue { state in
          if state.held.removeValue(forKey: index) != nil { state.calls[index].closedUnanswered = true }
        }
      }
      context.fireChannelInactive()
    }

    /// Writes `answer` as a complete response; closes the connection after it unless `keepAlive`.
    static func write(_ answer: HookAnswer, keepAlive: Bool, on channel: any Channel) {
      guard let (status, text) = answer.response else { return }
      var headers = HTTPHeaders()
      headers.add(name: "content-type", value: "application/json")
      headers.add(name: "content-length", value: String(text.utf8.count))
      if !keepAlive { headers.add(name: "connection", value: "close") }
      let head = HTTPResponseHead(version: .http1_1, status: HTTPResponseStatus(statusCode: status), headers: headers)
      channel.write(HTTPServerResponsePart.head(head), promise: nil)
      channel.write(HTTPServerResponsePart.body(.byteBuffer(ByteBuffer(string: text))), promise: nil)
      let done = channel.writeAndFlush(HTTPServerResponsePart.end(nil))
      if !keepAlive { done.whenComplete { _ in channel.close(promise: nil) } }
    }
  }
}

/// `text` as the inside of a JSON string literal, quotes included.
private func jsonString(_ text: String) -> String {
  let data = (try? JSONSerialization.data(withJSONObject: [text], options: [])) ?? Data("[\"\"]".utf8)
  return String(decoding: data.dropFirst().dropLast(), as: UTF8.self)
}
