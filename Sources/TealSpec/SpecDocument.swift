// The format-neutral document tree and the two readers that build it: YAML (through Yams, after a
// pre-scan that bounds size, nesting and aliases) and JSON (a small reader of our own, so that its
// errors have a line and a column). A JSON spec and its YAML twin give the same tree.

import Yams

// MARK: - Tree

/// A parsed value. Scalars keep whether they were quoted, so `"3"` is a string and `3` a number in
/// both YAML and JSON.
struct SpecNode {
  enum Kind {
    case scalar(String, quoted: Bool)
    case list([SpecNode])
    case map([(key: String, location: SpecLocation?, value: SpecNode)])
    case null
  }

  var kind: Kind
  var location: SpecLocation?

  var kindName: String {
    switch kind {
    case .scalar(_, let quoted): return quoted ? "a string" : "a scalar"
    case .list: return "a list"
    case .map: return "a mapping"
    case .null: return "null"
    }
  }
}

/// Why a document could not be read at all: one error for the whole document.
struct DocumentFailure: Error {
  var error: SpecError

  init(_ message: String, at location: SpecLocation? = nil) {
    error = SpecError(path: "(document)", message: message, location: location)
  }
}

enum SpecDocument {
  /// Reads `text` as `format` into a tree, within `SpecLimits`.
  static func read(_ text: String, format: SpecFormat) throws(DocumentFailure) -> SpecNode {
    let bytes = text.utf8.count
    guard bytes <= SpecLimits.maximumBytes else {
      throw DocumentFailure("is \(bytes) bytes; the limit is \(SpecLimits.maximumBytes)")
    }
    switch format {
    case .json:
      var reader = JSONReader(Array(text.utf8))
      return try reader.document()
    case .yaml:
      try YAMLPrescan.check(text)
      let root: Node?
      do {
        root = try Yams.compose(yaml: text)
      } catch let error as YamlError {
        throw Self.failure(error)
      } catch {
        throw DocumentFailure("invalid YAML: \(error)")
      }
      guard let root else { throw DocumentFailure("is empty; expected a mapping with name, task, ...") }
      var budget = SpecLimits.maximumNodes
      return try convert(root, depth: 0, budget: &budget)
    }
  }

  private static func failure(_ error: YamlError) -> DocumentFailure {
    switch error {
    case .scanner(let context, let problem, let mark, _), .parser(let context, let problem, let mark, _),
      .composer(let context, let problem, let mark, _):
      let detail = [context?.text, problem].compactMap { $0 }.filter { !$0.isEmpty }.joined(separator: " ")
      return DocumentFailure("invalid YAML: \(detail)", at: SpecLocation(line: mark.line, column: mark.column))
    case .reader(let problem, _, _, _):
      return DocumentFailure("invalid YAML: \(problem)")
    default:
      return DocumentFailure("invalid YAML: \(error)")
    }
  }

  private static func location(_ mark: Mark?) -> SpecLocation? {
    mark.map { SpecLocation(line: $0.line, column: $0.column) }
  }

  /// Yams' tree to ours. Aliases arrive expanded (Yams shares the anchored value), so `budget`
  /// counts every value as expanded and refuses an alias bomb before it is walked.
  private static func convert(_ node: Node, depth: Int, budget: inout Int) throws(DocumentFailure) -> SpecNode {
    budget -= 1
    guard budget >= 0 else {
      throw DocumentFailure(
        "has more than \(SpecLimits.maximumNodes) values (aliases counted as expanded)", at: location(node.mark))
    }
    guard depth <= SpecLimits.maximumDepth else {
      throw DocumentFailure("nests deeper than \(SpecLimits.maximumDepth) levels", at: location(node.mark))
    }
    switch node {
    case .scalar(let scalar):
      let quoted = scalar.style != .plain && scalar.style != .any
      if !quoted && ["", "~", "null", "Null", "NULL"].contains(scalar.string) {
        return SpecNode(kind: .null, location: location(scalar.mark))
      }
      guard scalar.string.utf8.count <= SpecLimits.maximumStringBytes else {
        throw DocumentFailure(
          "has a value longer than \(SpecLimits.maximumStringBytes) bytes", at: location(scalar.mark))
      }
      return SpecNode(kind: .scalar(scalar.string, quoted: quoted), location: location(scalar.mark))
    case .sequence(let sequence):
      var items: [SpecNode] = []
      for item in sequence { items.append(try convert(item, depth: depth + 1, budget: &budget)) }
      return SpecNode(kind: .list(items), location: location(sequence.mark))
    case .mapping(let mapping):
      var pairs: [(key: String, location: SpecLocation?, value: SpecNode)] = []
      for (keyNode, valueNode) in mapping {
        budget -= 1
        let key: String
        if case .scalar(let keyScalar) = keyNode {
          key = keyScalar.string
        } else {
          throw DocumentFailure("mapping keys must be plain strings", at: location(keyNode.mark))
        }
        pairs.append((key, location(keyNode.mark), try convert(valueNode, depth: depth + 1, budget: &budget)))
      }
      return SpecNode(kind: .map(pairs), location: location(mapping.mark))
    }
  }
}

// MARK: - YAML pre-scan

/// Bounds a YAML text before Yams composes it: Yams builds its tree recursively, so nesting must be
/// bounded first (10 KB of `[` overflows the stack). A conservative scan of the raw text:
/// - flow nesting (`[` and `{` outside quotes and comments) at most `SpecLimits.maximumDepth`;
/// - block structures start at most at column `SpecLimits.maximumIndentation` (every block level
///   needs a deeper column, so this bounds block nesting);
/// - at most `SpecLimits.maximumAliases` anchors and aliases.
/// Block scalars (`|`, `>`) are scanned like the rest, which can only refuse more, never less.
enum YAMLPrescan {
  static func check(_ text: String) throws(DocumentFailure) {
    var line = 1
    var flowDepth = 0
    var aliases = 0
    var column = 0  // of the current character, from 0
    var quote: UInt8? = nil
    var inComment = false
    var atLineStart = true  // still in indentation and block indicators
    var previous: UInt8 = 0x0A
    let bytes = Array(text.utf8)
    var index = 0
    while index < bytes.count {
      let byte = bytes[index]
      defer {
        previous = byte
        index += 1
      }
      if byte == 0x0A {
        line += 1
        column = 0
        inComment = false
        atLineStart = true
        // A quoted scalar may span lines; keep `quote`.
        continue
      }
      defer { if byte & 0xC0 != 0x80 { column += 1 } }
      if inComment { continue }
      if let open = quote {
        if byte == open {
          if open == 0x27, index + 1 < bytes.count, bytes[index + 1] == 0x27 {
            index += 1  // '' inside single quotes
          } else {
            quote = nil
          }
        } else if byte == 0x5C, open == 0x22 {
          index += 1  // escaped character inside double quotes
        }
        continue
      }
      if atLineStart {
        let isIndicator =
          (byte == 0x2D || byte == 0x3F || byte == 0x3A)
          && (index + 1 >= bytes.count || bytes[index + 1] == 0x20 || bytes[index + 1] == 0x0A)
        if byte == 0x20 || isIndicator {
          if column >= SpecLimits.maximumIndentation {
            throw DocumentFailure(
              "is indented or nested deeper than column \(SpecLimits.maximumIndentation)",
              at: SpecLocation(line: line, column: column + 1))
          }
          continue
        }
        atLineStart = false
      }
      switch byte {
      case 0x23 where previous == 0x20 || previous == 0x0A || previous == 0x09 || column == 0:
        inComment = true
      case 0x22, 0x27:
        quote = byte
      case 0x5B, 0x7B:
        flowDepth += 1
        if flowDepth > SpecLimits.maximumDepth {
          throw DocumentFailure(
            "nests deeper than \(SpecLimits.maximumDepth) levels", at: SpecLocation(line: line, column: column + 1))
        }
      case 0x5D, 0x7D:
        flowDepth = max(0, flowDepth - 1)
      case 0x26, 0x2A:  // & anchor, * alias
        aliases += 1
        if aliases > SpecLimits.maximumAliases {
          throw DocumentFailure(
            "has more than \(SpecLimits.maximumAliases) anchors and aliases",
            at: SpecLocation(line: line, column: column + 1))
        }
      default:
        break
      }
    }
  }
}

// MARK: - JSON

/// A strict JSON reader (RFC 8259) producing `SpecNode`s, with line and column in its errors.
/// Iteration is bounded by the input; recursion by `SpecLimits.maximumDepth`.
struct JSONReader {
  private let bytes: [UInt8]
  private var index = 0
  private var line = 1
  private var lineStart = 0
  private var nodes = 0

  init(_ bytes: [UInt8]) { self.bytes = bytes }

  private var here: SpecLocation {
    // Columns in Unicode scalars, as YAML counts them.
    let column = bytes[lineStart..<min(index, bytes.count)].reduce(0) { $0 + ($1 & 0xC0 == 0x80 ? 0 : 1) }
    return SpecLocation(line: line, column: column + 1)
  }

  private func fail(_ message: String) -> DocumentFailure { DocumentFailure("invalid JSON: \(message)", at: here) }

  mutating func document() throws(DocumentFailure) -> SpecNode {
    skipWhitespace()
    guard index < bytes.count else { throw DocumentFailure("is empty; expected a mapping with name, task, ...") }
    let root = try value(depth: 0)
    skipWhitespace()
    guard index == bytes.count else { throw fail("unexpected text after the document") }
    return root
  }

  private mutating func skipWhitespace() {
    while index < bytes.count {
      switch bytes[index] {
      case 0x20, 0x09, 0x0D: index += 1
      case 0x0A:
        index += 1
        line += 1
        lineStart = index
      default: return
      }
    }
  }

  private mutating func value(depth: Int) throws(DocumentFailure) -> SpecNode {
    nodes += 1
    guard nodes <= SpecLimits.maximumNodes else { throw fail("more than \(SpecLimits.maximumNodes) values") }
    guard depth <= SpecLimits.maximumDepth else { throw fail("nests deeper than \(SpecLimits.maximumDepth) levels") }
    guard index < bytes.count else { throw fail("unexpected end of input, expected a value") }
    let start = here
    switch bytes[index] {
    case 0x7B: return SpecNode(kind: .map(try object(depth: depth)), location: start)
    case 0x5B: return SpecNode(kind: .list(try array(depth: depth)), location: start)
    case 0x22: return SpecNode(kind: .scalar(try string(), quoted: true), location: start)
    case 0x74:
      try literal("true")
      return SpecNode(kind: .scalar("true", quoted: false), location: start)
    case 0x66:
      try literal("false")
      return SpecNode(kind: .scalar("false", quoted: false), location: start)
    case 0x6E:
      try literal("null")
      return SpecNode(kind: .null, location: start)
    case 0x2D, 0x30...0x39: return SpecNode(kind: .scalar(try number(), quoted: false), location: start)
    default: throw fail("unexpected character '\(Self.show(bytes[index]))', expected a value")
    }
  }

  private mutating func literal(_ word: String) throws(DocumentFailure) {
    let expected = Array(word.utf8)
    guard index + expected.count <= bytes.count, Array(bytes[index..<index + expected.count]) == expected else {
      throw fail("unexpected text, expected \(word)")
    }
    index += expected.count
  }

  private mutating func object(depth: Int) throws(DocumentFailure) -> [(
    key: String, location: SpecLocation?, value: SpecNode
  )] {
    index += 1  // {
    var pairs: [(key: String, location: SpecLocation?, value: SpecNode)] = []
    skipWhitespace()
    if index < bytes.count, bytes[index] == 0x7D {
      index += 1
      return pairs
    }
    while true {
      skipWhitespace()
      guard index < bytes.count, bytes[index] == 0x22 else { throw fail("expected a string key") }
      let keyLocation = here
      let key = try string()
      skipWhitespace()
      guard index < bytes.count, bytes[index] == 0x3A else { throw fail("expected ':' after key \"\(key)\"") }
      index += 1
      skipWhitespace()
      pairs.append((key, keyLocation, try value(depth: depth + 1)))
      skipWhitespace()
      guard index < bytes.count else { throw fail("unexpected end of input, expected ',' or '}'") }
      if bytes[index] == 0x2C {
        index += 1
        continue
      }
      guard bytes[index] == 0x7D else { throw fail("expected ',' or '}'") }
      index += 1
      return pairs
    }
  }

  private mutating func array(depth: Int) throws(DocumentFailure) -> [SpecNode] {
    index += 1  // [
    var items: [SpecNode] = []
    skipWhitespace()
    if index < bytes.count, bytes[index] == 0x5D {
      index += 1
      return items
    }
    while true {
      skipWhitespace()
      items.append(try value(depth: depth + 1))
      skipWhitespace()
      guard index < bytes.count else { throw fail("unexpected end of input, expected ',' or ']'") }
      if bytes[index] == 0x2C {
        index += 1
        continue
      }
      guard bytes[index] == 0x5D else { throw fail("expected ',' or ']'") }
      index += 1
      return items
    }
  }

  private mutating func string() throws(DocumentFailure) -> String {
    index += 1  // opening quote
    var scalars = String.UnicodeScalarView()
    var run: [UInt8] = []
    func flush() {
      if !run.isEmpty {
        scalars.append(contentsOf: String(decoding: run, as: UTF8.self).unicodeScalars)
        run.removeAll(keepingCapacity: true)
      }
    }
    var length = 0
    while index < bytes.count {
      let byte = bytes[index]
      length += 1
      guard length <= SpecLimits.maximumStringBytes else {
        throw fail("a string longer than \(SpecLimits.maximumStringBytes) bytes")
      }
      switch byte {
      case 0x22:
        index += 1
        flush()
        return String(scalars)
      case 0x5C:
        flush()
        index += 1
        guard index < bytes.count else { break }
        switch bytes[index] {
        case 0x22: scalars.append("\"")
        case 0x5C: scalars.append("\\")
        case 0x2F: scalars.append("/")
        case 0x62: scalars.append("\u{08}")
        case 0x66: scalars.append("\u{0C}")
        case 0x6E: scalars.append("\n")
        case 0x72: scalars.append("\r")
        case 0x74: scalars.append("\t")
        case 0x75:
          var code = try hex4()
          if (0xD800..<0xDC00).contains(code) {
            guard index + 2 < bytes.count, bytes[index + 1] == 0x5C, bytes[index + 2] == 0x75 else {
              throw fail("unpaired UTF-16 surrogate in \\u escape")
            }
            index += 2
            let low = try hex4()
            guard (0xDC00..<0xE000).contains(low) else { throw fail("unpaired UTF-16 surrogate in \\u escape") }
            code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
          }
          guard let scalar = Unicode.Scalar(code) else { throw fail("invalid \\u escape") }
          scalars.append(scalar)
        default:
          throw fail("invalid escape '\\\(Self.show(bytes[index]))' in a string")
        }
        index += 1
      case 0x00..<0x20:
        throw fail("control character in a string (write it as an escape)")
      default:
        run.append(byte)
        index += 1
      }
    }
    throw fail("unterminated string")
  }

  /// The 4 hex digits after `\u` (index on the `u`); leaves index on the last digit.
  private mutating func hex4() throws(DocumentFailure) -> UInt32 {
    guard index + 4 < bytes.count else { throw fail("incomplete \\u escape") }
    var code: UInt32 = 0
    for offset in 1...4 {
      let byte = bytes[index + offset]
      let digit: UInt32
      switch byte {
      case 0x30...0x39: digit = UInt32(byte - 0x30)
      case 0x41...0x46: digit = UInt32(byte - 0x41 + 10)
      case 0x61...0x66: digit = UInt32(byte - 0x61 + 10)
      default: throw fail("invalid \\u escape")
      }
      code = code * 16 + digit
    }
    index += 4
    return code
  }

  private mutating func number() throws(DocumentFailure) -> String {
    let start = index
    func digits() -> Int {
      let from = index
      while index < bytes.count, (0x30...0x39).contains(bytes[index]) { index += 1 }
      return index - from
    }
    if bytes[index] == 0x2D { index += 1 }
    let integerStart = index
    guard digits() > 0 else { throw fail("a number needs digits") }
    if bytes[integerStart] == 0x30, index - integerStart > 1 { throw fail("numbers must not have leading zeros") }
    if index < bytes.count, bytes[index] == 0x2E {
      index += 1
      guard digits() > 0 else { throw fail("a number needs digits after '.'") }
    }
    if index < bytes.count, bytes[index] == 0x65 || bytes[index] == 0x45 {
      index += 1
      if index < bytes.count, bytes[index] == 0x2B || bytes[index] == 0x2D { index += 1 }
      guard digits() > 0 else { throw fail("a number needs digits in its exponent") }
    }
    guard index - start <= 64 else { throw fail("a number longer than 64 characters") }
    return String(decoding: bytes[start..<index], as: UTF8.self)
  }

  private static func show(_ byte: UInt8) -> String {
    (0x20..<0x7F).contains(byte) ? String(UnicodeScalar(byte)) : "\\u{\(String(byte, radix: 16))}"
  }
}
