import ArgumentParser
import Foundation
import TealAPI
import TealClient

/// `teal var get|put|delete|list`: the cluster's variables (a small key/value store for hooks and
/// configuration).
struct Variables: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "var",
    abstract: "Get, put, delete and list variables (a replicated key/value store for hooks and configuration).",
    discussion: """
      A variable is a path (A-Z a-z 0-9 . _ - and /, at most 256 bytes, e.g. hooks/web/token) and a string \
      value of at most 64 KiB. Its version is the log index of the write that set it. --cas VERSION makes a \
      put or delete happen only if the variable is at that version (0: only if it does not exist); otherwise \
      the command fails and names the current version.
      """,
    subcommands: [Get.self, Put.self, Delete.self, List.self],
    aliases: ["variables"]
  )

  struct Get: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Print a variable's value (--json: path, value and version).")

    @Argument(help: "The variable's path, e.g. hooks/web/token.")
    var path: String

    @OptionGroup var options: APIOptions

    func run() async throws {
      let client = try options.makeClient()
      let variable = try await calling { try await client.variable(path) }
      await client.shutdown()
      if options.json { return try printJSON(variable) }
      print(variable.value ?? "")
    }
  }

  struct Put: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Set a variable to VALUE, or to the contents of --file (- reads standard input).")

    @Argument(help: "The variable's path, e.g. hooks/web/token.")
    var path: String

    @Argument(help: "The value (or give --file).")
    var value: String?

    @Option(name: .long, help: "Read the value from this file (- for standard input), byte for byte.")
    var file: String?

    @Option(name: .long, help: "Only if the variable is at this version (0: only if it does not exist).")
    var cas: UInt64?

    @Option(name: .long, help: "Idempotency-Key of the write (default: a new UUID, kept across retries).")
    var idempotencyKey: String?

    @OptionGroup var options: APIOptions

    func validate() throws {
      if (value == nil) == (file == nil) { throw ValidationError("give the value or --file, not both or neither") }
    }

    func run() async throws {
      let text = try value ?? readValue(file ?? "-")
      let client = try options.makeClient()
      let written = try await casCalling {
        try await client.putVariable(path, value: text, cas: cas, idempotencyKey: idempotencyKey)
      }
      await client.shutdown()
      if options.json { return try printJSON(written) }
      print("\(written.path) is at version \(written.version)")
    }

    private func readValue(_ file: String) throws -> String {
      let data: Data?
      data = file == "-" ? FileHandle.standardInput.readDataToEndOfFile() : FileManager.default.contents(atPath: file)
      guard let data else { throw CommandFailure(message: "cannot read the value file \(file)") }
      guard let text = String(data: data, encoding: .utf8) else {
        throw CommandFailure(message: "the value in \(file) is not UTF-8 text")
      }
      return text
    }
  }

  struct Delete: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Delete a variable.")

    @Argument(help: "The variable's path.")
    var path: String

    @Option(name: .long, help: "Only if the variable is at this version.")
    var cas: UInt64?

    @Option(name: .long, help: "Idempotency-Key of the write (default: a new UUID, kept across retries).")
    var idempotencyKey: String?

    @OptionGroup var options: APIOptions

    func run() async throws {
      let client = try options.makeClient()
      let deleted = try await casCalling {
        try await client.deleteVariable(path, cas: cas, idempotencyKey: idempotencyKey)
      }
      await client.shutdown()
      if options.json { return try printJSON(deleted) }
      print("deleted \(deleted.path) (it was at version \(deleted.version))")
    }
  }

  struct List: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List variable paths and versions (no values).")

    @Option(name: .long, help: "Only paths that start with this prefix, e.g. hooks/.")
    var prefix: String?

    @OptionGroup var options: APIOptions

    /// Pages followed at most (the cluster holds at most 10,000 variables, 1,000 a page).
    static let maximumPages = 20

    func run() async throws {
      let client = try options.makeClient()
      var all: [VariableSummary] = []
      var after: String?
      for _ in 0..<Self.maximumPages {
        let page = try await calling { try await client.variables(prefix: prefix, after: after) }
        all += page.variables
        after = page.next
        if after == nil { break }
      }
      await client.shutdown()
      if options.json { return try printJSON(VariableList(variables: all)) }
      if all.isEmpty { return print("no variables") }
      print(table(["PATH", "VERSION"], all.map { [$0.path, "\($0.version)"] }))
    }
  }
}

/// As `calling`, and a compare-and-set that found another version is a failure naming it.
func casCalling<T>(_ body: () async throws -> T) async throws -> T {
  do {
    return try await calling(body)
  } catch let mismatch as VariableVersionMismatch {
    throw CommandFailure(message: mismatch.description)
  }
}
