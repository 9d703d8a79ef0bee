// Checks HTTP answers against the OpenAPI document (Docs/openapi.yaml): the operation exists for
// the method and path, the status is documented for it (or its `default` response applies), the
// content type is one it documents, and a JSON body matches the schema. The cluster tests run every
// answer they receive through `check`, so the document cannot drift from what the server does.
//
// The schema subset is deliberately small and closed: a keyword outside `supportedKeywords` makes
// loading the document fail, so the document never says something this checker ignores.

import Foundation
import Yams

/// A JSON (or YAML) value, Sendable and comparable.
public indirect enum JSONValue: Sendable, Hashable {
  case null
  case bool(Bool)
  case integer(Int64)
  case unsigned(UInt64)
  case number(Double)
  case string(String)
  case array([JSONValue])
  case object([String: JSONValue])

  /// Parses JSON text.
  public static func parse(json bytes: [UInt8]) throws -> JSONValue {
    try JSONDecoder().decode(JSONValue.self, from: Data(bytes))
  }

  /// Converts what Yams loads (strings, numbers, booleans, arrays, mappings, null).
  static func fromYAML(_ value: Any?, at path: String) throws -> JSONValue {
    switch value {
    case nil, is NSNull: return .null
    case let value as Bool: return .bool(value)
    case let value as Int: return .integer(Int64(value))
    case let value as Double: return .number(value)
    case let value as String: return .string(value)
    case let value as [Any]:
      return .array(try value.enumerated().map { try fromYAML($0.element, at: "\(path)/\($0.offset)") })
    case let value as [String: Any]:
      var object: [String: JSONValue] = [:]
      for (key, element) in value { object[key] = try fromYAML(element, at: "\(path)/\(key)") }
      return .object(object)
    case let value as [AnyHashable: Any]:
      var object: [String: JSONValue] = [:]
      for (key, element) in value {
        guard let key = key.base as? String else { throw ContractError("\(path): the key \(key) is not a string") }
        object[key] = try fromYAML(element, at: "\(path)/\(key)")
      }
      return .object(object)
    default:
      throw ContractError("\(path): a YAML value of type \(type(of: value!)) is not JSON")
    }
  }

  var object: [String: JSONValue]? { if case .object(let value) = self { value } else { nil } }
  var array: [JSONValue]? { if case .array(let value) = self { value } else { nil } }
  var string: String? { if case .string(let value) = self { value } else { nil } }
  var double: Double? {
    switch self {
    case .integer(let value): Double(value)
    case .unsigned(let value): Double(value)
    case .number(let value): value
    default: nil
    }
  }
  var isInteger: Bool {
    switch self {
    case .integer, .unsigned: true
    case .number(let value): value.rounded() == value && value.isFinite
    default: false
    }
  }

  subscript(key: String) -> JSONValue? { object?[key] }
}

extension JSONValue: Decodable {
  public init(from decoder: any Decoder) throws {
    let container = try decoder.singleValueContainer()
    if container.decodeNil() {
      self = .null
    } else if let value = try? container.decode(Bool.self) {
      self = .bool(value)
    } else if let value = try? container.decode(Int64.self) {
      self = .integer(value)
    } else if let value = try? container.decode(UInt64.self) {
      self = .unsigned(value)
    } else if let value = try? container.decode(Double.self) {
      self = .number(value)
    } else if let value = try? container.decode(String.self) {
      self = .string(value)
    } else if let value = try? container.decode([JSONValue].self) {
      self = .array(value)
    } else {
      self = .object(try container.decode([String: JSONValue].self))
    }
  }
}

public struct ContractError: Error, CustomStringConvertible {
  public var description: String
  init(_ description: String) { self.description = description }
}

/// The OpenAPI document, ready to check answers against.
public struct OpenAPIContract: Sendable {
  /// One documented operation.
  public struct Operation: Sendable, Hashable, CustomStringConvertible {
    public var method: String
    /// The path template, e.g. `/v1/services/{name}`.
    public var path: String
    /// Status code (or `default`) → media type → schema (nil when the media type has none).
    var responses: [String: [String: JSONValue?]]
    /// Path parameters that take the rest of the path, slashes included (`x-teal-rest-of-path`).
    var restOfPath: Set<String>

    public var description: String { "\(method) \(path)" }

    /// As Hummingbird's router names the route: a rest-of-path parameter is `**`.
    public var routeDescription: String {
      let parts = path.split(separator: "/", omittingEmptySubsequences: false).map { part -> String in
        let name = part.hasPrefix("{") && part.hasSuffix("}") ? String(part.dropFirst().dropLast()) : nil
        return name.map { restOfPath.contains($0) } == true ? "**" : String(part)
      }
      return "\(method) \(parts.joined(separator: "/"))"
    }
  }

  public let operations: [Operation]
  let schemas: [String: JSONValue]
  let root: JSONValue

  /// The schema keywords the checker understands; any other makes the document invalid.
  static let supportedKeywords: Set<String> = [
    "$ref", "type", "enum", "properties", "required", "additionalProperties", "items", "minimum", "maximum",
    "pattern", "maxLength", "minLength", "format", "anyOf", "description", "example",
  ]
  static let methods = ["get", "put", "post", "delete", "patch", "head", "options"]

  public init(yaml: String) throws {
    guard let loaded = try Yams.load(yaml: yaml) else { throw ContractError("the document is empty") }
    root = try JSONValue.fromYAML(loaded, at: "#")
    guard root["openapi"]?.string?.hasPrefix("3.1") == true else {
      throw ContractError("the document must be OpenAPI 3.1 (openapi: 3.1.x)")
    }
    let schemas = root["components"]?["schemas"]?.object ?? [:]
    self.schemas = schemas
    var operations: [Operation] = []
    for (path, item) in root["paths"]?.object ?? [:] {
      guard let item = item.object else { throw ContractError("paths/\(path) is not a mapping") }
      for method in Self.methods {
        guard let operation = item[method]?.object else { continue }
        var responses: [String: [String: JSONValue?]] = [:]
        for (status, response) in operation["responses"]?.object ?? [:] {
          let response = try Self.resolve(response, in: root)
          var media: [String: JSONValue?] = [:]
          for (type, content) in response["content"]?.object ?? [:] { media[type] = content["schema"] }
          responses[status] = media
        }
        guard !responses.isEmpty else { throw ContractError("\(method.uppercased()) \(path) documents no response") }
        let parameters = (item["parameters"]?.array ?? []) + (operation["parameters"]?.array ?? [])
        var restOfPath: Set<String> = []
        for parameter in parameters {
          let parameter = try Self.resolve(parameter, in: root)
          if parameter["in"]?.string == "path", parameter["x-teal-rest-of-path"] == .bool(true),
            let name = parameter["name"]?.string
          {
            restOfPath.insert(name)
          }
        }
        operations.append(
          Operation(method: method.uppercased(), path: path, responses: responses, restOfPath: restOfPath))
      }
    }
    self.operations = operations.sorted { ($0.path, $0.method) < ($1.path, $1.method) }
    for (name, schema) in schemas { try checkKeywords(schema, at: "#/components/schemas/\(name)") }
    for operation in self.operations {
      for (status, media) in operation.responses {
        for (type, schema) in media {
          if let schema { try checkKeywords(schema, at: "\(operation) \(status) \(type)") }
        }
      }
    }
  }

  /// Loads the repository's document.
  public static func load(path: String) throws -> OpenAPIContract {
    try OpenAPIContract(yaml: String(contentsOfFile: path, encoding: .utf8))
  }

  /// The operation `method path` (no query) falls under: literal segments win over templates.
  public func operation(method: String, path: String) -> Operation? {
    let segments = path.split(separator: "/", omittingEmptySubsequences: false).dropFirst().map(String.init)
    var best: (operation: Operation, literals: Int)?
    for operation in operations where operation.method == method.uppercased() {
      guard let literals = Self.match(operation, segments) else { continue }
      if best == nil || literals > best!.literals { best = (operation, literals) }
    }
    return best?.operation
  }

  /// The ways an answer departs from the document; empty when it conforms.
  public func check(method: String, path rawPath: String, status: Int, contentType: String?, body: [UInt8])
    -> [String]
  {
    let path = String(rawPath.split(separator: "?", maxSplits: 1).first ?? "")
    let what = "\(method.uppercased()) \(path) → \(status)"
    guard let operation = operation(method: method, path: path) else {
      return ["\(what): no operation in the OpenAPI document for \(method.uppercased()) \(path)"]
    }
    guard let media = operation.responses[String(status)] ?? operation.responses["default"] else {
      return ["\(what): status \(status) is not documented for \(operation) (and it has no default response)"]
    }
    if media.isEmpty { return body.isEmpty ? [] : ["\(what): documented without a body, but one came"] }
    let type = contentType.map { String($0.split(separator: ";").first ?? "").trimmingCharacters(in: .whitespaces) }
    guard let type, let entry = media[type] else {
      return ["\(what): content type \(contentType ?? "(none)") is not one of \(media.keys.sorted())"]
    }
    guard let schema = entry else { return [] }
    guard type.hasSuffix("json") else {
      return String(validating: body, as: UTF8.self) == nil ? ["\(what): the \(type) body is not UTF-8"] : []
    }
    let value: JSONValue
    do { value = try JSONValue.parse(json: body) } catch {
      return ["\(what): the body is not JSON: \(error)"]
    }
    var problems: [String] = []
    validate(value, against: schema, at: "$", problems: &problems)
    return problems.map { "\(what): \($0)" }
  }

  /// Checks `value` against `schema` alone (for tests of the checker and of single bodies).
  public func problems(_ value: JSONValue, schema name: String) -> [String] {
    var problems: [String] = []
    validate(value, against: .object(["$ref": .string("#/components/schemas/\(name)")]), at: "$", problems: &problems)
    return problems
  }

  // MARK: - Matching

  private static func match(_ operation: Operation, _ segments: [String]) -> Int? {
    let template = operation.path.split(separator: "/", omittingEmptySubsequences: false).dropFirst().map(String.init)
    var literals = 0
    var index = 0
    for (position, part) in template.enumerated() {
      if part.hasPrefix("{"), part.hasSuffix("}") {
        let name = String(part.dropFirst().dropLast())
        if operation.restOfPath.contains(name), position == template.count - 1 {
          return index < segments.count && !segments[index...].contains("") ? literals : nil
        }
        guard index < segments.count, !segments[index].isEmpty else { return nil }
      } else {
        guard index < segments.count, segments[index] == part else { return nil }
        literals += 1
      }
      index += 1
    }
    return index == segments.count ? literals : nil
  }

  // MARK: - Schemas

  private static func resolve(_ value: JSONValue, in root: JSONValue) throws -> [String: JSONValue] {
    guard var object = value.object else { throw ContractError("expected a mapping, got \(value)") }
    var seen = 0
    while let reference = object["$ref"]?.string {
      seen += 1
      guard seen < 16, let target = lookUp(reference, in: root)?.object else {
        throw ContractError("the reference \(reference) does not resolve")
      }
      object = target
    }
    return object
  }

  private static func lookUp(_ reference: String, in root: JSONValue) -> JSONValue? {
    guard reference.hasPrefix("#/") else { return nil }
    var node: JSONValue? = root
    for part in reference.dropFirst(2).split(separator: "/") { node = node?[String(part)] }
    return node
  }

  private func checkKeywords(_ schema: JSONValue, at path: String) throws {
    guard let object = schema.object else { throw ContractError("\(path): a schema must be a mapping") }
    for key in object.keys where !Self.supportedKeywords.contains(key) && !key.hasPrefix("x-") {
      throw ContractError("\(path): the schema keyword '\(key)' is not supported by the conformance checker")
    }
    if let reference = object["$ref"]?.string, Self.lookUp(reference, in: root) == nil {
      throw ContractError("\(path): the reference \(reference) does not resolve")
    }
    for (name, property) in object["properties"]?.object ?? [:] {
      try checkKeywords(property, at: "\(path)/properties/\(name)")
    }
    if let items = object["items"] { try checkKeywords(items, at: "\(path)/items") }
    if let additional = object["additionalProperties"], additional.object != nil {
      try checkKeywords(additional, at: "\(path)/additionalProperties")
    }
    for (index, option) in (object["anyOf"]?.array ?? []).enumerated() {
      try checkKeywords(option, at: "\(path)/anyOf/\(index)")
    }
  }

  private func validate(_ value: JSONValue, against schema: JSONValue, at path: String, problems: inout [String]) {
    guard let schema = schema.object else { return }
    if let reference = schema["$ref"]?.string {
      if let target = Self.lookUp(reference, in: root) {
        validate(value, against: target, at: path, problems: &problems)
      }
    }
    if let options = schema["anyOf"]?.array {
      let fits = options.contains { option in
        var scratch: [String] = []
        validate(value, against: option, at: path, problems: &scratch)
        return scratch.isEmpty
      }
      if !fits { problems.append("\(path): matches none of the anyOf schemas") }
    }
    if let type = schema["type"] {
      let allowed = type.array?.compactMap(\.string) ?? type.string.map { [$0] } ?? []
      guard allowed.contains(where: { Self.value(value, isOfType: $0) }) else {
        problems.append("\(path): expected \(allowed.joined(separator: " or ")), got \(Self.describe(value))")
        return
      }
    }
    if let options = schema["enum"]?.array, !options.contains(where: { Self.same($0, value) }) {
      problems.append("\(path): \(Self.describe(value)) is not one of \(options.map(Self.describe))")
    }
    if let number = value.double {
      if let minimum = schema["minimum"]?.double, number < minimum {
        problems.append("\(path): \(number) is below the minimum \(minimum)")
      }
      if let maximum = schema["maximum"]?.double, number > maximum {
        problems.append("\(path): \(number) is above the maximum \(maximum)")
      }
    }
    if let text = value.string {
      if let maxLength = schema["maxLength"]?.double, Double(text.count) > maxLength {
        problems.append("\(path): longer than \(Int(maxLength)) characters")
      }
      if let minLength = schema["minLength"]?.double, Double(text.count) < minLength {
        problems.append("\(path): shorter than \(Int(minLength)) characters")
      }
      if let pattern = schema["pattern"]?.string, text.range(of: pattern, options: .regularExpression) == nil {
        problems.append("\(path): '\(text)' does not match \(pattern)")
      }
      if schema["format"]?.string == "date-time", !Self.isDateTime(text) {
        problems.append("\(path): '\(text)' is not an RFC 3339 date-time")
      }
    }
    if let elements = value.array, let items = schema["items"] {
      for (index, element) in elements.enumerated() {
        validate(element, against: items, at: "\(path)[\(index)]", problems: &problems)
      }
    }
    if let object = value.object {
      let properties = schema["properties"]?.object ?? [:]
      for required in schema["required"]?.array?.compactMap(\.string) ?? [] where object[required] == nil {
        problems.append("\(path): the required property '\(required)' is missing")
      }
      for key in object.keys.sorted() {
        let element = object[key]!
        if let property = properties[key] {
          validate(element, against: property, at: "\(path).\(key)", problems: &problems)
        } else if let additional = schema["additionalProperties"] {
          if additional == .bool(false) {
            problems.append("\(path): the property '\(key)' is not in the document")
          } else if additional.object != nil {
            validate(element, against: additional, at: "\(path).\(key)", problems: &problems)
          }
        }
      }
    }
  }

  private static func value(_ value: JSONValue, isOfType type: String) -> Bool {
    switch (type, value) {
    case ("null", .null), ("boolean", .bool), ("string", .string), ("array", .array), ("object", .object): true
    case ("integer", _): value.isInteger
    case ("number", .integer), ("number", .unsigned), ("number", .number): true
    default: false
    }
  }

  private static func same(_ a: JSONValue, _ b: JSONValue) -> Bool {
    if let x = a.double, let y = b.double { return x == y }
    return a == b
  }

  private static func isDateTime(_ text: String) -> Bool {
    let withFraction = ISO8601DateFormatter()
    withFraction.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
    return withFraction.date(from: text) != nil || ISO8601DateFormatter().date(from: text) != nil
  }

  private static func describe(_ value: JSONValue) -> String {
    switch value {
    case .null: "null"
    case .bool(let value): "\(value)"
    case .integer(let value): "\(value)"
    case .unsigned(let value): "\(value)"
    case .number(let value): "\(value)"
    case .string(let value): "'\(value)'"
    case .array(let value): "an array of \(value.count)"
    case .object(let value): "an object with \(value.keys.sorted())"
    }
  }
}
