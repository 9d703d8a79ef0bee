import Foundation
import TealTestSupport
import TealWire
import Testing

@testable import TealNode

@Suite("NodeConfiguration")
struct NodeConfigurationTests {
  let directory = temporaryDirectory("node-config")

  init() throws {
    try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
  }

  func write(_ text: String) throws -> String {
    let path = directory + "/node.yaml"
    try text.write(toFile: path, atomically: true, encoding: .utf8)
    return path
  }

  static let valid = """
    node: n2
    address: 127.0.0.2
    peerPort: 7100
    apiPort: 7170
    dataDir: n2/data
    taskDir: n2/tasks
    certDir: /etc/teal/certs
    tokenFile: token
    peers:
      n1: 127.0.0.1
      n2: 127.0.0.2
      n3: 127.0.0.3
    electionTimeoutMs: 1500
    """

  @Test("a valid file loads, relative paths resolve against the file's directory")
  func loadsValidFile() throws {
    let configuration = try NodeConfiguration.load(file: try write(Self.valid))
    #expect(configuration.node == NodeID("n2"))
    #expect(configuration.address == "127.0.0.2")
    #expect(configuration.peerPort == 7100)
    #expect(configuration.apiPort == 7170)
    #expect(configuration.dataDirectory == directory + "/n2/data")
    #expect(configuration.certificateDirectory == "/etc/teal/certs")
    #expect(configuration.peers.count == 3)
    #expect(configuration.bootstrap)
    #expect(configuration.electionTimeoutMilliseconds == 1500)
    #expect(configuration.apiURL(of: NodeID("n3")) == "http://127.0.0.3:7170")
  }

  @Test("a flag overrides the file's value")
  func flagsOverride() throws {
    let configuration = try NodeConfiguration.load(file: try write(Self.valid), overrides: ["apiPort": "9000"])
    #expect(configuration.apiPort == 9000)
  }

  @Test("peers given as a flag: id=address pairs")
  func peersFlag() throws {
    let configuration = try NodeConfiguration.load(
      file: nil,
      overrides: [
        "node": "n1", "address": "127.0.0.1", "dataDir": "/tmp/d", "taskDir": "/tmp/t", "certDir": "/tmp/c",
        "tokenFile": "/tmp/token", "peers": "n1=127.0.0.1,n2=127.0.0.2",
      ])
    #expect(configuration.peers == [NodeID("n1"): "127.0.0.1", NodeID("n2"): "127.0.0.2"])
  }

  @Test(
    "each refusal names the field at fault",
    arguments: [
      ("node: n2\n", "peers"),
      (NodeConfigurationTests.valid.replacingOccurrences(of: "node: n2", with: "node: N2"), "node"),
      (
        NodeConfigurationTests.valid.replacingOccurrences(of: "address: 127.0.0.2", with: "address: localhost"),
        "address"
      ),
      (NodeConfigurationTests.valid.replacingOccurrences(of: "apiPort: 7170", with: "apiPort: 7100"), "apiPort"),
      (NodeConfigurationTests.valid.replacingOccurrences(of: "apiPort: 7170", with: "apiPort: 70000"), "apiPort"),
      (NodeConfigurationTests.valid.replacingOccurrences(of: "apiPort: 7170", with: "apiPort: seven"), "apiPort"),
      (NodeConfigurationTests.valid.replacingOccurrences(of: "  n2: 127.0.0.2\n", with: ""), "peers"),
      (NodeConfigurationTests.valid.replacingOccurrences(of: "  n2: 127.0.0.2", with: "  n2: 127.0.0.9"), "peers.n2"),
      (
        NodeConfigurationTests.valid.replacingOccurrences(of: "electionTimeoutMs: 1500", with: "electionTimeoutMs: 5"),
        "electionTimeoutMs"
      ),
      (NodeConfigurationTests.valid + "\nbootstrap: maybe", "bootstrap"),
      (NodeConfigurationTests.valid + "\nelectionTimeout: 5", "electionTimeout"),
      (NodeConfigurationTests.valid.replacingOccurrences(of: "dataDir: n2/data\n", with: ""), "dataDir"),
    ])
  func refusalsNameTheField(text: String, field: String) throws {
    let path = try write(text)
    #expect {
      _ = try NodeConfiguration.load(file: path)
    } throws: { error in
      "\(error)".contains("'\(field)'")
    }
  }

  @Test("malformed and non-mapping YAML are refused as such, naming the file")
  func malformedYAML() throws {
    for text in ["node: [unclosed", "- just\n- a list\n"] {
      let path = try write(text)
      #expect {
        _ = try NodeConfiguration.load(file: path)
      } throws: { error in
        "\(error)".contains(path) && "\(error)".contains("not valid YAML")
      }
    }
  }

  @Test("a missing file is refused with the path")
  func missingFile() {
    #expect {
      _ = try NodeConfiguration.load(file: directory + "/nope.yaml")
    } throws: { error in
      "\(error)".contains("nope.yaml")
    }
  }

  @Test("a file over the size limit is refused before parsing")
  func oversizedFile() throws {
    let path = try write(String(repeating: "#", count: NodeConfiguration.maximumFileBytes + 1))
    #expect {
      _ = try NodeConfiguration.load(file: path)
    } throws: { error in
      "\(error)".contains("larger than")
    }
  }

  /// The example of Docs/OPERATIONS.md for a node of a three-machine cluster loads as documented.
  @Test func theProductionExampleInDeployLoads() throws {
    let path = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
      .deletingLastPathComponent().appendingPathComponent("Deploy/production/node.yaml").path
    let configuration = try NodeConfiguration.load(file: path)
    #expect(configuration.node == NodeID("n1") && configuration.address == "10.0.0.11")
    #expect(configuration.apiTLS && configuration.peers.count == 3 && configuration.bootstrap)
    #expect(configuration.apiURL(of: NodeID("n2")) == "https://10.0.0.12:7070")
    #expect(configuration.dataDirectory == "/var/lib/teal/data")
  }

  @Test func apiTLSMustBeABoolean() throws {
    #expect {
      _ = try NodeConfiguration.load(file: try write(Self.valid + "\napiTLS: sometimes\n"))
    } throws: { error in
      "\(error)".contains("apiTLS")
    }
  }
}
