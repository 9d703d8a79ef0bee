// The errors and limits of spec parsing. A spec comes from outside (a file, or a client's request to
// a node's API), so every rule here refuses with a message naming the field, and no input can crash
// or hang the parser: `SpecLimits` are checked before Yams sees the text.

import TealDeploy

/// Where in a document a value starts: line and column, both counted from 1 (columns in Unicode
/// scalars).
public struct SpecLocation: Codable, Hashable, Sendable, CustomStringConvertible {
  public var line: Int
  public var column: Int

  public init(line: Int, column: Int) {
    self.line = line
    self.column = column
  }

  public var description: String { "\(line):\(column)" }
}

/// One thing wrong with a spec: the field at fault and the rule it broke, e.g.
/// `deployment.canary.canaryPercent: must be in 0.1...100, got 150`.
public struct SpecError: Error, Codable, Hashable, Sendable, CustomStringConvertible {
  /// The file the spec came from, when known.
  public var file: String?
  /// Dotted path of the field at fault (`deployment.lifecycleHooks[0].http.url`), or `(document)`
  /// for the document as a whole (syntax, size, nesting).
  public var path: String
  /// The rule the value broke, in words a user can act on.
  public var message: String
  /// Where the value at fault starts, when known.
  public var location: SpecLocation?

  public init(file: String? = nil, path: String, message: String, location: SpecLocation? = nil) {
    self.file = file
    self.path = path
    self.message = message
    self.location = location
  }

  /// `path: message`, prefixed with `file:line:column: ` as far as they are known.
  public var description: String {
    var prefix = ""
    if let file { prefix += file + ":" }
    if let location, file != nil { prefix += "\(location.line):\(location.column):" }
    let located = "\(path): \(message)"
    if prefix.isEmpty, let location { return "\(located) (line \(location.line), column \(location.column))" }
    return prefix.isEmpty ? located : prefix + " " + located
  }
}

/// Every error found in one spec, in document order (at most `SpecLimits.maximumErrors`).
///
/// Invariant: `errors` is never empty.
public struct SpecErrors: Error, Codable, Hashable, Sendable, CustomStringConvertible {
  public private(set) var errors: [SpecError]

  public init(_ errors: [SpecError]) {
    precondition(!errors.isEmpty, "SpecErrors needs at least one error")
    self.errors = errors
  }

  public init(_ error: SpecError) { self.init([error]) }

  /// One error per line.
  public var description: String { errors.map(\.description).joined(separator: "\n") }

  /// The same errors, each naming `file`.
  public func inFile(_ file: String) -> SpecErrors {
    SpecErrors(
      errors.map { error in
        var located = error
        located.file = file
        return located
      })
  }
}

/// The two spec formats. They have the same fields and the same rules.
public enum SpecFormat: String, Codable, Hashable, Sendable, CaseIterable {
  case yaml
  case json

  /// JSON for a name ending in `.json`, YAML otherwise.
  public init(fileName: String) { self = fileName.lowercased().hasSuffix(".json") ? .json : .yaml }
}

/// The bounds every document is checked against before and while it is parsed. Each is far above
/// what a real spec needs (the examples are about 2 KB, 8 levels deep, 150 values).
public enum SpecLimits {
  /// Largest document accepted, in bytes of UTF-8.
  public static let maximumBytes = 256 * 1024
  /// Deepest nesting of lists and mappings (YAML flow `[`/`{`, JSON arrays and objects).
  public static let maximumDepth = 32
  /// Largest column at which a YAML block structure may start (indentation plus `- ` indicators);
  /// bounds block nesting, which needs a deeper column per level.
  public static let maximumIndentation = 96
  /// Most YAML anchors plus aliases in one document.
  public static let maximumAliases = 64
  /// Most values (scalars, lists, mappings) in the parsed tree, aliases counted as expanded. This
  /// stops alias bombs ("billion laughs") before they take memory.
  public static let maximumNodes = 20_000
  /// Errors reported for one document; the rest are summarised in one last error.
  public static let maximumErrors = 100
  /// Longest string value, in bytes.
  public static let maximumStringBytes = 16 * 1024
  /// Longest planned deployment: the production steps' waits plus bake time, as `teal spec plan`
  /// shows them with hooks answering at once. A cap on how long a service can be held.
  public static let maximumPlannedDuration = TimeSpan.hours(48)
}
