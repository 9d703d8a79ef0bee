// The sections of a service spec, one reader each. Cross-field rules (ports that must differ, the
// strategy's own section, the planned duration) run only when the fields they compare are valid.

import TealDeploy

extension Rules {
  func service(_ root: SpecNode) -> ServiceSpec? {
    guard
      let object = object(
        root, "(document)", ["name", "desiredCount", "productionPort", "testPort", "task", "deployment"])
    else { return nil }
    let name = object.required("name") { node, path -> String? in
      guard let name = string(node, path) else { return nil }
      guard ServiceSpec.isValidName(name) else {
        return fail(
          path, "must be 1 to 63 lowercase letters, digits or '-', starting with a letter, got \"\(name)\"", node)
      }
      return name
    }
    let desiredCount = object.required("desiredCount", integer(in: 1...1000))
    let productionPort = object.required("productionPort", integer(in: 1...65535))
    let testPort = object.required("testPort", integer(in: 1...65535))
    if let productionPort, let testPort, testPort == productionPort {
      diagnostics.report("testPort", "must differ from productionPort (\(productionPort))", at: object.node("testPort"))
    }
    let task = object.required("task", task)
    if let task, let productionPort, let testPort, task.port != 0,
      task.port == productionPort || task.port == testPort
    {
      diagnostics.report(
        "task.port",
        "must differ from the service's listener ports (productionPort \(productionPort), testPort \(testPort)), "
          + "got \(task.port)", location: nil)
    }
    let deployment = object.required("deployment") { node, path -> DeploymentConfiguration? in
      self.deployment(node, path, desiredCount: desiredCount ?? 1)
    }
    guard let name, let desiredCount, let productionPort, let testPort, let task, let deployment else { return nil }
    return ServiceSpec(
      name: name, desiredCount: desiredCount, productionPort: productionPort, testPort: testPort, task: task,
      deployment: deployment)
  }

  func task(_ node: SpecNode, _ path: String) -> TaskSpec? {
    guard let object = object(node, path, ["command", "args", "env", "port", "healthCheck"]) else { return nil }
    let command = object.required("command", nonEmptyString)
    let args = object.has("args") ? object.optional("args", list(string)) : []
    let env = object.has("env") ? object.optional("env", environment) : [:]
    // 0 or absent: the node gives each task a free port in PORT (several tasks of a revision can
    // then share a node). A fixed port limits the revision to one task per node.
    let port = object.has("port") ? object.optional("port", integer(in: 0...65535)) : 0
    let healthCheck = object.required("healthCheck", healthCheck)
    guard let command, let args, let env, let port, let healthCheck else { return nil }
    return TaskSpec(command: command, args: args, env: env, port: port, healthCheck: healthCheck)
  }

  func environment(_ node: SpecNode, _ path: String) -> [String: String]? {
    guard case .map(let pairs) = node.kind else {
      return fail(path, "must be a mapping of variable names to strings, got \(node.kindName)", node)
    }
    var env: [String: String] = [:]
    var valid = true
    for pair in pairs {
      let childPath = Self.join(path, pair.key)
      if !Self.isEnvironmentName(pair.key) {
        diagnostics.report(childPath, "variable names must match [A-Za-z_][A-Za-z0-9_]*", location: pair.location)
        valid = false
      } else if env[pair.key] != nil {
        diagnostics.report(childPath, "is given more than once", location: pair.location)
        valid = false
      } else if let value = string(pair.value, childPath) {
        env[pair.key] = value
      } else {
        valid = false
      }
    }
    return valid ? env : nil
  }

  static func isEnvironmentName(_ name: String) -> Bool {
    guard let first = name.unicodeScalars.first, !("0"..."9").contains(first) else { return false }
    return name.unicodeScalars.allSatisfy {
      ("a"..."z").contains($0) || ("A"..."Z").contains($0) || ("0"..."9").contains($0) || $0 == "_"
    }
  }

  func healthCheck(_ node: SpecNode, _ path: String) -> HealthCheckConfiguration? {
    guard let object = object(node, path, ["path", "interval", "timeout", "healthyThreshold", "unhealthyThreshold"])
    else { return nil }
    let checkPath =
      object.has("path")
      ? object.optional("path") { node, path -> String? in
        guard let text = string(node, path) else { return nil }
        guard text.hasPrefix("/") else { return fail(path, "must start with '/', got \"\(text)\"", node) }
        return text
      } : "/health"
    let interval =
      object.has("interval") ? object.optional("interval", duration(in: .seconds(1)...(.minutes(5)))) : .seconds(5)
    let timeout =
      object.has("timeout") ? object.optional("timeout", duration(in: .milliseconds(100)...(.minutes(5)))) : .seconds(2)
    if let interval, let timeout, timeout > interval {
      diagnostics.report(
        object.childPath("timeout"), "must not exceed interval (\(interval)), got \(timeout)",
        at: object.node("timeout"))
    }
    let healthy = object.has("healthyThreshold") ? object.optional("healthyThreshold", integer(in: 1...10)) : 2
    let unhealthy = object.has("unhealthyThreshold") ? object.optional("unhealthyThreshold", integer(in: 1...10)) : 3
    guard let checkPath, let interval, let timeout, timeout <= interval, let healthy, let unhealthy else { return nil }
    return HealthCheckConfiguration(
      path: checkPath, interval: interval, timeout: timeout, healthyThreshold: healthy, unhealthyThreshold: unhealthy)
  }

  /// ECS's bounds on bake times: 0 to 1440 minutes.
  static let bakeRange = TimeSpan.zero...TimeSpan.hours(24)

  func deployment(_ node: SpecNode, _ path: String, desiredCount: Int) -> DeploymentConfiguration? {
    guard
      let object = object(
        node, path,
        [
          "strategy", "bakeTime", "canary", "linear", "steps", "lifecycleHooks", "alarms", "circuitBreaker",
          "abortScaleDownDelay", "progressDeadline",
        ])
    else { return nil }
    let strategy = object.required("strategy", enumeration(DeploymentStrategy.self))
    let bakeTime = object.has("bakeTime") ? object.optional("bakeTime", duration(in: Self.bakeRange)) : .minutes(5)
    let canary = object.optional("canary") { node, path -> CanaryConfiguration? in
      guard let section = self.object(node, path, ["canaryPercent", "canaryBakeTime"]) else { return nil }
      let percent = section.required("canaryPercent", percent(in: 0.1...100))
      let bake =
        section.has("canaryBakeTime")
        ? section.optional("canaryBakeTime", duration(in: Self.bakeRange)) : .minutes(5)
      guard let percent, let bake else { return nil }
      return CanaryConfiguration(canaryPercent: percent, canaryBakeTime: bake)
    }
    let linear = object.optional("linear") { node, path -> LinearConfiguration? in
      guard let section = self.object(node, path, ["stepPercent", "stepBakeTime"]) else { return nil }
      let percent = section.required("stepPercent", percent(in: 3...100))
      let bake =
        section.has("stepBakeTime") ? section.optional("stepBakeTime", duration(in: Self.bakeRange)) : .minutes(1)
      guard let percent, let bake else { return nil }
      return LinearConfiguration(stepPercent: percent, stepBakeTime: bake)
    }
    let steps = object.optional("steps") { node, path -> StepsConfiguration? in
      guard let section = self.object(node, path, ["percents", "stepBakeTime"]) else { return nil }
      let percents = section.required("percents") { node, path -> [Double]? in
        guard let percents = list(percent(in: 0.1...100))(node, path) else { return nil }
        guard !percents.isEmpty, percents.count <= 100 else { return fail(path, "must list 1 to 100 steps", node) }
        guard zip(percents, percents.dropFirst()).allSatisfy({ $0 < $1 }) else {
          return fail(path, "must increase strictly, got \(percents.map(Self.format))", node)
        }
        guard percents.last == 100 else {
          return fail(path, "must end at 100, got \(Self.format(percents.last ?? 0))", node)
        }
        return percents
      }
      let bake =
        section.has("stepBakeTime") ? section.optional("stepBakeTime", duration(in: Self.bakeRange)) : .minutes(1)
      guard let percents, let bake else { return nil }
      return StepsConfiguration(percents: percents, stepBakeTime: bake)
    }
    let abortScaleDownDelay =
      object.has("abortScaleDownDelay")
      ? object.optional("abortScaleDownDelay", duration(in: .zero...(.hours(1)))) : .seconds(30)
    let progressDeadline: TimeSpan?? =
      object.has("progressDeadline")
      ? object.optional("progressDeadline", duration(in: .minutes(1)...(.hours(72)))).map { .some($0) } : .some(nil)
    if let strategy {
      if strategy == .STEPS && !object.has("steps") {
        diagnostics.report(object.childPath("steps"), "is required when strategy is STEPS", at: object.node)
      }
      if object.has("steps") && strategy != .STEPS {
        diagnostics.report(
          object.childPath("steps"), "is only allowed when strategy is STEPS, not \(strategy)", at: object.node("steps")
        )
      }
      if strategy == .CANARY && !object.has("canary") {
        diagnostics.report(object.childPath("canary"), "is required when strategy is CANARY", at: object.node)
      }
      if strategy == .LINEAR && !object.has("linear") {
        diagnostics.report(object.childPath("linear"), "is required when strategy is LINEAR", at: object.node)
      }
      if object.has("canary") && strategy != .CANARY {
        diagnostics.report(
          object.childPath("canary"), "is only allowed when strategy is CANARY, not \(strategy)",
          at: object.node("canary"))
      }
      if object.has("linear") && strategy != .LINEAR {
        diagnostics.report(
          object.childPath("linear"), "is only allowed when strategy is LINEAR, not \(strategy)",
          at: object.node("linear"))
      }
    }
    let hooks = object.has("lifecycleHooks") ? object.optional("lifecycleHooks", list(hook)) : []
    let alarms = object.has("alarms") ? object.optional("alarms", list(alarm)) : []
    if let alarms {
      var names: Set<String> = []
      for (index, alarm) in alarms.enumerated() where !names.insert(alarm.name).inserted {
        diagnostics.report(
          "\(object.childPath("alarms"))[\(index)].name", "duplicates alarm name \"\(alarm.name)\"",
          at: object.node("alarms"))
      }
    }
    let breaker =
      object.has("circuitBreaker")
      ? object.optional("circuitBreaker") { node, path -> CircuitBreakerConfiguration? in
        self.circuitBreaker(node, path, desiredCount: desiredCount)
      }
      : CircuitBreakerConfiguration.default(desiredCount: desiredCount)
    guard let strategy, let bakeTime, let hooks, let alarms, let breaker, let abortScaleDownDelay,
      let progressDeadline, strategy != .CANARY || canary != nil, strategy != .LINEAR || linear != nil,
      strategy != .STEPS || steps != nil
    else { return nil }
    let configuration = DeploymentConfiguration(
      strategy: strategy, bakeTime: bakeTime, canary: strategy == .CANARY ? canary : nil,
      linear: strategy == .LINEAR ? linear : nil, steps: strategy == .STEPS ? steps : nil, lifecycleHooks: hooks,
      alarms: alarms, circuitBreaker: breaker, abortScaleDownDelay: abortScaleDownDelay,
      progressDeadline: progressDeadline)
    let planned = configuration.plannedDuration
    guard planned <= SpecLimits.maximumPlannedDuration else {
      return fail(
        path,
        "plans \(planned) of production steps and bake time; the limit is \(SpecLimits.maximumPlannedDuration)",
        node)
    }
    return configuration
  }

  func hook(_ node: SpecNode, _ path: String) -> LifecycleHookConfiguration? {
    guard
      let object = object(
        node, path,
        [
          "stages", "http", "command", "pause", "callBackDelay", "timeoutAction", "timeoutInMinutes", "everyStep",
          "hookDetails",
        ])
    else { return nil }
    let stages = object.required("stages", stages(hookable: true))
    let http = object.optional("http") { node, path -> HookAction? in
      guard let section = self.object(node, path, ["url", "timeout"]) else { return nil }
      let url = section.required("url") { node, path -> String? in
        guard let url = string(node, path) else { return nil }
        guard url.hasPrefix("http://"), url.count > "http://".count, !url.contains(" ") else {
          return fail(path, "must be a plain http:// URL, got \"\(url)\"", node)
        }
        return url
      }
      let timeout =
        section.has("timeout")
        ? section.optional("timeout", duration(in: .milliseconds(100)...(.minutes(15)))) : .seconds(30)
      guard let url, let timeout else { return nil }
      return .http(url: url, timeout: timeout)
    }
    let command = object.optional("command") { node, path -> HookAction? in
      guard let section = self.object(node, path, ["argv", "timeout"]) else { return nil }
      let argv = section.required("argv") { node, path -> [String]? in
        guard let argv = list(string)(node, path) else { return nil }
        guard let first = argv.first, !first.isEmpty else {
          return fail(path, "must start with the program to run", node)
        }
        return argv
      }
      let timeout =
        section.has("timeout")
        ? section.optional("timeout", duration(in: .milliseconds(100)...(.minutes(15)))) : .seconds(30)
      guard let argv, let timeout else { return nil }
      return .command(argv: argv, timeout: timeout)
    }
    let pause = object.optional("pause") { node, path -> HookAction? in
      guard let flag = boolean(node, path) else { return nil }
      guard flag else { return fail(path, "must be true when given (a PAUSE hook)", node) }
      return .pause
    }
    let actions = ["http", "command", "pause"].filter { object.has($0) }
    switch actions.count {
    case 0: diagnostics.report(path, "must have one of http, command or pause", at: node)
    case 1: break
    default:
      diagnostics.report(
        path, "must have only one of http, command or pause, got \(actions.joined(separator: ", "))", at: node)
    }
    let minutes =
      object.has("timeoutInMinutes") ? object.optional("timeoutInMinutes", integer(in: 1...1440)) : 1440
    let everyStep = object.has("everyStep") ? object.optional("everyStep", boolean) : false
    let hookDetails = object.optional("hookDetails") { node, _ in Self.json(node) }
    let callBackDelay =
      object.has("callBackDelay")
      ? object.optional("callBackDelay", duration(in: .seconds(1)...(.hours(1)))) : .seconds(30)
    let timeoutAction =
      object.has("timeoutAction") ? object.optional("timeoutAction", enumeration(HookTimeoutAction.self)) : .ROLLBACK
    guard let stages, let action = http ?? command ?? pause, actions.count == 1, let callBackDelay, let timeoutAction,
      let minutes, let everyStep
    else { return nil }
    if everyStep && !stages.contains(.PRODUCTION_TRAFFIC_SHIFT) {
      return fail(
        object.childPath("everyStep"), "needs PRODUCTION_TRAFFIC_SHIFT among the stages", object.node("everyStep"))
    }
    return LifecycleHookConfiguration(
      stages: stages, action: action, callBackDelay: callBackDelay, timeoutAction: timeoutAction,
      overallTimeout: .minutes(Int64(minutes)), everyStep: everyStep, hookDetails: hookDetails)
  }

  func alarm(_ node: SpecNode, _ path: String) -> AlarmConfiguration? {
    guard
      let object = object(
        node, path,
        [
          "name", "metric", "threshold", "window", "evaluateDuring", "minimumRequests", "evaluationPeriods",
          "datapointsToAlarm", "rollback",
        ])
    else { return nil }
    let metric = object.required("metric", enumeration(AlarmMetric.self))
    let name = object.has("name") ? object.optional("name", nonEmptyString) : metric?.rawValue
    let threshold = object.required("threshold") { node, path -> Double? in
      guard let threshold = number(node, path), let metric else { return nil }
      switch metric {
      case .http5xxRate:
        guard threshold >= 0 && threshold < 1 else {
          return fail(
            path, "must be a fraction in 0...1 (0.05 = 5 %) for http5xxRate, got \(Self.format(threshold))", node)
        }
      case .latencyP99:
        guard threshold > 0 && threshold <= 600_000 else {
          return fail(path, "must be milliseconds in 0...600000 for latencyP99, got \(Self.format(threshold))", node)
        }
      }
      return threshold
    }
    let window = object.has("window") ? object.optional("window", duration(in: .seconds(1)...(.hours(1)))) : .minutes(1)
    let stages =
      object.has("evaluateDuring")
      ? object.optional("evaluateDuring", stages(hookable: false)) : AlarmConfiguration.defaultStages
    let minimumRequests =
      object.has("minimumRequests") ? object.optional("minimumRequests", integer(in: 1...1_000_000)) : 1
    let periods = object.has("evaluationPeriods") ? object.optional("evaluationPeriods", integer(in: 1...60)) : 1
    let datapoints = object.has("datapointsToAlarm") ? object.optional("datapointsToAlarm", integer(in: 1...60)) : 1
    if let periods, let datapoints, datapoints > periods {
      diagnostics.report(
        object.childPath("datapointsToAlarm"), "must not exceed evaluationPeriods (\(periods)), got \(datapoints)",
        at: object.node("datapointsToAlarm"))
    }
    let rollback = object.has("rollback") ? object.optional("rollback", boolean) : true
    guard let metric, let name, let threshold, let window, let stages, let minimumRequests, let periods,
      let datapoints, datapoints <= periods, let rollback
    else { return nil }
    return AlarmConfiguration(
      name: name, metric: metric, threshold: threshold, window: window, evaluateDuring: stages,
      minimumRequests: minimumRequests, evaluationPeriods: periods, datapointsToAlarm: datapoints, rollback: rollback)
  }

  func circuitBreaker(_ node: SpecNode, _ path: String, desiredCount: Int) -> CircuitBreakerConfiguration? {
    guard
      let object = object(
        node, path, ["enable", "rollback", "failureThreshold", "scaleUpTimeout", "healthFloorGrace"])
    else {
      return nil
    }
    let defaults = CircuitBreakerConfiguration.default(desiredCount: desiredCount)
    let enable = object.has("enable") ? object.optional("enable", boolean) : defaults.enable
    let rollback = object.has("rollback") ? object.optional("rollback", boolean) : defaults.rollback
    let threshold =
      object.has("failureThreshold")
      ? object.optional("failureThreshold", integer(in: 1...200)) : defaults.failureThreshold
    let timeout =
      object.has("scaleUpTimeout")
      ? object.optional("scaleUpTimeout", duration(in: .seconds(10)...(.hours(2)))) : defaults.scaleUpTimeout
    let grace =
      object.has("healthFloorGrace")
      ? object.optional("healthFloorGrace", duration(in: CircuitBreakerConfiguration.healthFloorGraceRange))
      : defaults.healthFloorGrace
    guard let enable, let rollback, let threshold, let timeout, let grace else { return nil }
    return CircuitBreakerConfiguration(
      enable: enable, rollback: rollback, failureThreshold: threshold, scaleUpTimeout: timeout,
      healthFloorGrace: grace)
  }

  /// Any value as JSON, for `hookDetails`: unquoted scalars that read as numbers or booleans become
  /// them, everything else strings.
  static func json(_ node: SpecNode) -> JSONValue {
    switch node.kind {
    case .null: return .null
    case .scalar(let text, let quoted):
      if !quoted {
        if text == "true" { return .bool(true) }
        if text == "false" { return .bool(false) }
        if isDecimalNumber(text), let value = Double(text), value.isFinite { return .number(value) }
      }
      return .string(text)
    case .list(let items): return .array(items.map(json))
    case .map(let pairs): return .object(sorting: pairs.map { ($0.key, json($0.value)) })
    }
  }
}
