import ArgumentParser
import Foundation
import TealDeploy
import TealTLS
import TealWire

#if canImport(Glibc)
  import Glibc
#endif

/// The `teal` command line.
@main
struct Teal: AsyncParsableCommand {
  static let version = "0.1.0"

  static let configuration = CommandConfiguration(
    commandName: "teal",
    abstract: "A self-hosted blue/green deployment coordinator.",
    version: version,
    subcommands: subcommands
  )

  /// Every subcommand, in `teal --help` order.
  static let subcommands: [any ParsableCommand.Type] = [
    Quickstart.self,
    Cluster.self,
    Service.self,
    Deploy.self,
    DeploymentCommand.self,
    Tasks.self,
    Events.self,
    Variables.self,
    NodeCommand.self,
    Certs.self,
    Spec.self,
    Chaos.self,
  ]
}

/// Options every command shares.
struct OutputOptions: ParsableArguments {
  @Flag(name: .long, help: "Print machine-readable JSON instead of text.")
  var json = false
}

/// A failure the user can act on: printed as `error: <message>` with exit code 1.
struct CommandFailure: Error, CustomStringConvertible {
  let message: String
  var description: String { message }
}

// MARK: - certs

struct Certs: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Create the cluster certificate authority and node certificates.",
    subcommands: [Init.self, Add.self]
  )

  struct Init: ParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Create a CA and a certificate for each node (ECDSA P-256, keys mode 0600).",
      discussion: """
        Writes ca.pem, ca.key and <node>.pem, <node>.key for each node into DIR. Refuses to \
        overwrite an existing CA. Each node certificate names the node by the SAN \
        URI:spiffe://teal/node/<id> and also carries DNS:<id>, DNS:localhost and its IP addresses.
        """
    )

    @Option(name: .long, help: "Directory to write the CA and node credentials into.")
    var out: String

    @Option(name: .long, help: "Comma-separated node ids, e.g. n1,n2,n3.")
    var nodes: String

    @Option(
      name: .long,
      help: "A node's IP address for its certificate, as node=ip (repeatable). Default: 127.0.0.1.")
    var address: [String] = []

    @OptionGroup var output: OutputOptions

    func run() throws {
      let ids = try parseNodeList(nodes)
      let addresses = try parseAddresses(address, known: ids)
      do {
        let written = try CertificateDirectory.initialize(at: out, nodes: ids, addresses: addresses)
        report(written: written, json: output.json)
      } catch {
        throw CommandFailure(message: error.description)
      }
    }
  }

  struct Add: ParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Issue a certificate for one more node with an existing CA.")

    @Argument(help: "The new node's id, e.g. n4 (or give --node).")
    var id: String?

    @Option(name: .long, help: "A certificate directory holding ca.pem and ca.key, or a cluster directory with certs/.")
    var dir: String

    @Option(name: .long, help: "The new node's id, e.g. n4.")
    var node: String?

    @Option(name: .long, help: "IP address for the node's certificate (repeatable). Default: 127.0.0.1.")
    var address: [String] = []

    @OptionGroup var output: OutputOptions

    func validate() throws {
      switch (id, node) {
      case (nil, nil): throw ValidationError("give the node id: `teal certs add ID --dir DIR`")
      case (let a?, let b?) where a != b: throw ValidationError("ID \(a) and --node \(b) differ")
      default: break
      }
    }

    func run() throws {
      let id = try parseNodeID(id ?? node ?? "", option: "ID")
      // A cluster directory (`teal cluster up`) keeps its CA in certs/.
      let nested = URL(fileURLWithPath: dir).appendingPathComponent("certs").path
      let dir = FileManager.default.fileExists(atPath: "\(nested)/ca.pem") ? nested : dir
      do {
        let written = try CertificateDirectory(path: dir).addNode(
          id, addresses: address.isEmpty ? ["127.0.0.1"] : address)
        report(written: written, json: output.json)
      } catch {
        throw CommandFailure(message: error.description)
      }
    }
  }
}

// MARK: - Parsing helpers

func parseNodeID(_ text: String, option: String) throws -> NodeID {
  do { return try NodeID(validating: text) } catch { throw ValidationError("\(option): \(error)") }
}

func parseNodeList(_ text: String) throws -> [NodeID] {
  let parts = text.split(separator: ",", omittingEmptySubsequences: false).map {
    $0.trimmingCharacters(in: .whitespaces)
  }
  guard !parts.isEmpty, !(parts.count == 1 && parts[0].isEmpty) else {
    throw ValidationError("--nodes: give at least one node id, e.g. n1,n2,n3")
  }
  let ids = try parts.map { try parseNodeID($0, option: "--nodes") }
  if Set(ids).count != ids.count { throw ValidationError("--nodes: a node id is listed twice in '\(text)'") }
  return ids
}

func parseAddresses(_ pairs: [String], known: [NodeID]) throws -> [NodeID: [String]] {
  var result: [NodeID: [String]] = [:]
  for pair in pairs {
    let parts = pair.split(separator: "=", maxSplits: 1).map(String.init)
    guard parts.count == 2, !parts[1].isEmpty else {
      throw ValidationError("--address: expected node=ip, got '\(pair)'")
    }
    let id = try parseNodeID(parts[0], option: "--address")
    guard known.contains(id) else { throw ValidationError("--address: node '\(id)' is not in --nodes") }
    result[id, default: []].append(parts[1])
  }
  return result
}

func report(written: [String], json: Bool) {
  if json {
    let items = written.map { "\"\(jsonEscaped($0))\"" }.joined(separator: ",")
    print("{\"written\":[\(items)]}")
  } else {
    for path in written { print("wrote \(path)") }
  }
}

func jsonEscaped(_ text: String) -> String {
  var out = ""
  for scalar in text.unicodeScalars {
    switch scalar {
    case "\"": out += "\\\""
    case "\\": out += "\\\\"
    case "\n": out += "\\n"
    case "\t": out += "\\t"
    default:
      if scalar.value < 0x20 {
        out += String(format: "\\u%04x", scalar.value)
      } else {
        out.unicodeScalars.append(scalar)
      }
    }
  }
  return out
}
