import Foundation
import TealDeploy
import TealWire
import Testing

@testable import TealSpec

/// Random and structured mutations of the example specs: the parser must return a spec or a
/// non-empty list of errors for every one, quickly, and never crash. `TEAL_FUZZ_ITERATIONS`
/// (default 3000, what CI runs) sets the number of inputs; `TEAL_FUZZ_SEED` replays one run.
@Suite struct SpecFuzzTests {
  static let iterations = ProcessInfo.processInfo.environment["TEAL_FUZZ_ITERATIONS"].flatMap(Int.init) ?? 3000
  static let seed = ProcessInfo.processInfo.environment["TEAL_FUZZ_SEED"].flatMap(UInt64.init) ?? 0x7EA1_5EED

  /// Values that have broken parsers: huge and odd numbers, YAML specials, nesting, aliases.
  static let interestingValues = [
    "99999999999999999999999", "-99999999999999999999999", "1e999", "-0", "0x10", "1_000", ".inf", ".nan", "~",
    "null", "[]", "{}", "''", "\"\"", "&a x", "*a", "*undefined", "!!binary aGk=", "|\n  text", ">-\n  folded",
    "1000h", "9999999999999ms", "0ms", "-5s", "yes", "True", "\"\\u0000\"", "\"\\ud800\"", "[[[[[[[[", "]]]]",
    "{a: {b: {c: [1, 2, {d: e}]}}}", String(repeating: "x", count: 20_000), "🙂", "\u{FEFF}", "\t", "? complex",
    "<<: *a", "%YAML 1.1", "---", "...", "@", "`",
  ]
  static let significantCharacters = Array("[]{}:-&*!|>'\"#,%@`?\n\t \\")

  @Test func mutatedExamplesNeverCrashOrHang() throws {
    let files = try FileManager.default.contentsOfDirectory(atPath: examplesDirectory.path)
      .filter { $0.hasSuffix(".yaml") || $0.hasSuffix(".json") }.sorted()
    let examples = try files.map { name in
      (
        try String(contentsOf: examplesDirectory.appendingPathComponent(name), encoding: .utf8),
        SpecFormat(fileName: name)
      )
    }
    var random = SplitMix64(seed: Self.seed)
    var accepted = 0
    var slowest = Duration.zero
    for iteration in 0..<Self.iterations {
      let (original, format) = examples[random.below(examples.count)]
      var text = original
      for _ in 0...random.below(4) { text = Self.mutate(text, &random) }
      let started = ContinuousClock.now
      do {
        let spec = try SpecParser.parse(text: text, format: format)
        _ = Revision.digest(of: spec)
        accepted += 1
      } catch {
        #expect(!error.errors.isEmpty)
        #expect(error.errors.allSatisfy { !$0.path.isEmpty && !$0.message.isEmpty })
        #expect(error.errors.count <= SpecLimits.maximumErrors)
      }
      let elapsed = ContinuousClock.now - started
      slowest = max(slowest, elapsed)
      #expect(
        elapsed < .seconds(2), "iteration \(iteration) (TEAL_FUZZ_SEED=\(Self.seed)) took \(elapsed)")
    }
    // Some mutations (inside comments, or swapping equal values) keep a spec valid; most do not.
    #expect(accepted < Self.iterations)
    print("spec fuzz: \(Self.iterations) inputs, \(accepted) accepted, slowest \(slowest)")
  }

  static func mutate(_ text: String, _ random: inout SplitMix64) -> String {
    var scalars = Array(text.unicodeScalars)
    guard !scalars.isEmpty else { return String(significantCharacters[random.below(significantCharacters.count)]) }
    let position = random.below(scalars.count)
    switch random.below(8) {
    case 0:  // flip one character to a YAML/JSON-significant one
      scalars[position] = significantCharacters[random.below(significantCharacters.count)].unicodeScalars.first!
    case 1:  // insert a run of significant characters
      let run = (0...random.below(8)).map { _ in significantCharacters[random.below(significantCharacters.count)] }
      scalars.insert(contentsOf: String(run).unicodeScalars, at: position)
    case 2:  // delete a span
      let end = min(scalars.count, position + 1 + random.below(40))
      scalars.removeSubrange(position..<end)
    case 3:  // duplicate a span
      let end = min(scalars.count, position + 1 + random.below(200))
      scalars.insert(contentsOf: scalars[position..<end], at: end)
    case 4:  // replace a value after `: ` with an interesting one
      var lines = String(String.UnicodeScalarView(scalars)).components(separatedBy: "\n")
      let line = random.below(lines.count)
      if let colon = lines[line].range(of: ": ") {
        lines[line] =
          String(lines[line][..<colon.upperBound]) + interestingValues[random.below(interestingValues.count)]
      }
      return lines.joined(separator: "\n")
    case 5:  // swap two lines
      var lines = String(String.UnicodeScalarView(scalars)).components(separatedBy: "\n")
      lines.swapAt(random.below(lines.count), random.below(lines.count))
      return lines.joined(separator: "\n")
    case 6:  // re-indent a line
      var lines = String(String.UnicodeScalarView(scalars)).components(separatedBy: "\n")
      let line = random.below(lines.count)
      lines[line] = String(repeating: " ", count: random.below(120)) + lines[line]
      return lines.joined(separator: "\n")
    default:  // wrap a span in deep nesting
      let depth = 1 + random.below(60)
      let end = min(scalars.count, position + random.below(30))
      let inner = String(String.UnicodeScalarView(scalars[position..<end]))
      let wrapped = String(repeating: "[", count: depth) + inner + String(repeating: "]", count: depth)
      scalars.replaceSubrange(position..<end, with: wrapped.unicodeScalars)
    }
    return String(String.UnicodeScalarView(scalars))
  }
}
