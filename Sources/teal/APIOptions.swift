import ArgumentParser
import Foundation
import TealAPI
import TealClient

/// The options of every command that talks to the API: where the cluster is, its token, the output.
struct APIOptions: ParsableArguments {
  @Option(
    name: .long,
    help: ArgumentHelp(
      "A node's API URL, e.g. http://127.0.0.1:7070 (repeatable; any node). Default: the nodes in <dir>/cluster.yaml.",
      valueName: "url"))
  var endpoint: [String] = []

  @Option(name: .long, help: "The local cluster directory (cluster.yaml, token).")
  var dir: String = ".teal"

  @Option(
    name: .long,
    help: ArgumentHelp(
      "The cluster CA certificate that https:// endpoints must chain to. Default: TEAL_CA, else <dir>/certs/ca.pem.",
      valueName: "file"))
  var ca: String?

  @Flag(name: .long, help: "Print machine-readable JSON instead of text.")
  var json = false

  func validate() throws {
    for text in endpoint {
      do { _ = try Endpoint(url: text) } catch { throw ValidationError("--endpoint: \(error)") }
    }
  }

  /// The endpoints: `--endpoint`, else the local cluster's nodes.
  func endpoints() throws -> [Endpoint] {
    if !endpoint.isEmpty { return try endpoint.map { try Endpoint(url: $0) } }
    let layout = ClusterLayout(dir: dir)
    guard let nodes = try layout.readClusterFile() else {
      throw CommandFailure(
        message: "no cluster in \(dir) (no \(layout.clusterFile)): start one with `teal cluster up --dir \(dir)` "
          + "or give --endpoint URL")
    }
    return try nodes.map { try Endpoint(url: $0.api) }
  }

  /// The bearer token: `TEAL_TOKEN`, else `<dir>/token`, else none.
  func token() throws -> String? {
    try readToken(dir: dir)
  }

  func makeClient() throws -> TealClient {
    let endpoints = try endpoints()
    var configuration = TealClientConfiguration(endpoints: endpoints, token: try token())
    configuration.maxAttempts = 4
    configuration.security = try security(for: endpoints)
    return TealClient(configuration: configuration)
  }

  /// Plain HTTP, or TLS pinning the cluster CA when the endpoints are `https://`.
  func security(for endpoints: [Endpoint]) throws -> any ClientConnectionSecurity {
    try clientSecurity(for: endpoints, dir: dir, ca: ca)
  }
}

/// Plain HTTP, or TLS pinning the cluster CA when the endpoints are `https://` (all or none): the CA
/// is `ca`, else `TEAL_CA`, else `<dir>/certs/ca.pem`.
func clientSecurity(for endpoints: [Endpoint], dir: String, ca: String? = nil) throws -> any ClientConnectionSecurity {
  let schemes = Set(endpoints.map(\.scheme))
  guard schemes.count <= 1 else {
    throw CommandFailure(message: "the endpoints mix http:// and https://: give one scheme for every node")
  }
  guard schemes.first == .https else { return PlaintextSecurity() }
  let environment = ProcessInfo.processInfo.environment["TEAL_CA"].flatMap { $0.isEmpty ? nil : $0 }
  let path = ca ?? environment ?? "\(ClusterLayout(dir: dir).certDir)/ca.pem"
  do { return try APITLSSecurity(caFile: path) } catch {
    throw CommandFailure(message: "cannot use \(path) as the cluster CA for https:// endpoints: \(error)")
  }
}

/// `TEAL_TOKEN`, else the token file of the cluster in `dir`, else nil.
func readToken(dir: String) throws -> String? {
  if let token = ProcessInfo.processInfo.environment["TEAL_TOKEN"], !token.isEmpty { return token }
  let path = ClusterLayout(dir: dir).tokenFile
  guard FileManager.default.fileExists(atPath: path) else { return nil }
  guard let data = FileManager.default.contents(atPath: path) else {
    throw CommandFailure(message: "cannot read the token file \(path) (set TEAL_TOKEN instead)")
  }
  let token = String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
  return token.isEmpty ? nil : token
}

/// Runs an API call; turns the client's errors into a one-line reason for the user.
func calling<T>(_ body: () async throws -> T) async throws -> T {
  do {
    return try await body()
  } catch let error as TealClientError {
    var message = error.description
    if error.status == 401 { message += " (set TEAL_TOKEN, or --dir to the cluster's directory with its token)" }
    throw CommandFailure(message: message)
  }
}

/// `value` as the API's JSON, on one line.
func printJSON<T: Encodable>(_ value: T) throws {
  print(String(decoding: try TealJSON.encode(value), as: UTF8.self))
}

/// Rows under a header, columns padded to their widest cell.
func table(_ header: [String], _ rows: [[String]]) -> String {
  var widths = header.map(\.count)
  for row in rows {
    for (index, cell) in row.enumerated() where index < widths.count { widths[index] = max(widths[index], cell.count) }
  }
  func line(_ cells: [String]) -> String {
    cells.enumerated().map { index, cell in
      index == cells.count - 1 ? cell : cell.padding(toLength: widths[index], withPad: " ", startingAt: 0)
    }.joined(separator: "  ")
  }
  return ([line(header)] + rows.map(line)).joined(separator: "\n")
}

/// A time for tables: UTC, to the second.
func shortTime(_ date: Date) -> String {
  let text = TealJSON.formatDate(date)
  return text.count > 19 ? String(text.prefix(19)).replacingOccurrences(of: "T", with: " ") : text
}
