import Foundation
import TealChaos
import Testing

// The targets file (`teal chaos --targets FILE`): what it reads, and the error for each mistake,
// naming the field and its line.

func targetsError(_ text: String) -> String? {
  do {
    _ = try TargetsParser.parse(text, file: "t.yaml", baseDirectory: "/etc/teal")
    return nil
  } catch {
    return error.description
  }
}

let twoNodes = """
  token: secret
  nodes:
    - id: n1
      api: http://10.0.0.1:7070
      address: 10.0.0.1
      peerPort: 7946
      config: /etc/teal/node.yaml
      start: systemctl start teal
    - id: n2
      api: http://10.0.0.2:7070
      address: 10.0.0.2
      peerPort: 7946
      exec: [ssh, root@10.0.0.2]
      config: /etc/teal/node.yaml
      taskDir: /var/lib/teal/tasks

  """

@Suite("Targets files")
struct TargetsParserTests {
  @Test func aFileWithALocalAndAnSSHNodeReadsEveryField() throws {
    let file = try TargetsParser.parse(twoNodes, file: "t.yaml", baseDirectory: "/etc/teal")
    #expect(file.token == "secret")
    #expect(file.nodes.map(\.id) == ["n1", "n2"])
    #expect(file.nodes[0].exec == nil)
    #expect(file.nodes[0].start == "systemctl start teal")
    #expect(file.nodes[1].exec == ["ssh", "root@10.0.0.2"])
    #expect(file.nodes[1].taskDir == "/var/lib/teal/tasks")
    #expect(file.nodes[1].field == "nodes[1]")
    #expect(file.nodes[1].peerPort == 7946)
  }

  @Test func relativeTokenFileAndCAAreResolvedAgainstTheFilesDirectory() throws {
    let text = """
      tokenFile: token
      ca: certs/ca.pem
      name: staging
      nodes:
        - {id: a, api: "https://[fd00::1]:7070", address: "fd00::1", peerPort: 7946}

      """
    let file = try TargetsParser.parse(text, file: "t.yaml", baseDirectory: "/etc/teal")
    #expect(file.tokenFile == "/etc/teal/token")
    #expect(file.ca == "/etc/teal/certs/ca.pem")
    #expect(file.name == "staging")
    #expect(file.nodes[0].address == "fd00::1")
  }

  @Test func theExampleTargetsFileParses() throws {
    let path = "\(chaosDirectory)/targets.example.yaml"
    let text = try String(contentsOfFile: path, encoding: .utf8)
    let file = try TargetsParser.parse(text, file: path, baseDirectory: chaosDirectory)
    #expect(file.nodes.count == 3)
    #expect(file.nodes.contains { $0.exec != nil })
  }

  /// Each mistake, and the words its error must contain.
  @Test(arguments: [
    ("", "t.yaml: the file is empty"),
    ("nodes: [", "not valid YAML"),
    ("nodes: []", "t.yaml:1: nodes: give at least one node"),
    ("token: x", "nodes: missing (required)"),
    ("nodez: []", "nodez: unknown field"),
    ("token: a b\nnodes: []", "token: must be the API token"),
    ("token: a\ntokenFile: f\nnodes: []", "tokenFile: give token or tokenFile, not both"),
    ("name: 'a b'\nnodes: []", "name: must be 1-64 letters"),
    ("nodes:\n  - api: http://1.2.3.4:1\n    address: 1.2.3.4\n    peerPort: 1", "nodes[0].id: missing (required)"),
    ("nodes:\n  - {id: n1, address: 1.2.3.4, peerPort: 1}", "nodes[0].api: missing (required)"),
    ("nodes:\n  - {id: n1, api: 'ftp://1.2.3.4:1', address: 1.2.3.4, peerPort: 1}", "nodes[0].api: expected http://"),
    ("nodes:\n  - {id: n1, api: 'http://1.2.3.4', address: 1.2.3.4, peerPort: 1}", "the port is missing"),
    ("nodes:\n  - {id: n1, api: 'http://1.2.3.4:0', address: 1.2.3.4, peerPort: 1}", "port 1-65535"),
    (
      "nodes:\n  - {id: n1, api: 'http://h:1', address: host.example, peerPort: 1}",
      "nodes[0].address: must be the IPv4"
    ),
    ("nodes:\n  - {id: n1, api: 'http://h:1', address: 1.2.3.256, peerPort: 1}", "nodes[0].address"),
    (
      "nodes:\n  - {id: n1, api: 'http://h:1', address: 1.2.3.4, peerPort: 70000}",
      "nodes[0].peerPort: must be in 1...65535"
    ),
    (
      "nodes:\n  - {id: n1, api: 'http://h:1', address: 1.2.3.4, peerPort: 1, exec: []}",
      "nodes[0].exec: give the command prefix"
    ),
    (
      "nodes:\n  - {id: n1, api: 'http://h:1', address: 1.2.3.4, peerPort: 1, exec: ssh}",
      "nodes[0].exec: must be a list"
    ),
    (
      "nodes:\n  - {id: n1, api: 'http://h:1', address: 1.2.3.4, peerPort: 1, exec: [ssh, '']}",
      "nodes[0].exec[1]: must not be empty"
    ),
    (
      "nodes:\n  - {id: n1, api: 'http://h:1', address: 1.2.3.4, peerPort: 1, config: node.yaml}",
      "nodes[0].config: must be an absolute path"
    ),
    (
      "nodes:\n  - {id: n1, api: 'http://h:1', address: 1.2.3.4, peerPort: 1, taskDir: tasks}",
      "nodes[0].taskDir: must be an absolute path"
    ),
    (
      "nodes:\n  - {id: n1, api: 'http://h:1', address: 1.2.3.4, peerPort: 1, start: ' '}",
      "nodes[0].start: must be a shell command line"
    ),
    ("nodes:\n  - {id: n1, api: 'http://h:1', address: 1.2.3.4, peerPort: 1, pid: 4}", "nodes[0].pid: unknown field"),
    (
      "nodes:\n  - {id: n1, api: 'http://h:1', address: 1.2.3.4, peerPort: 1}\n  - {id: n1, api: 'http://h:1', address: 1.2.3.5, peerPort: 1}",
      "nodes[1].id: n1 is given twice (also nodes[0])"
    ),
    (
      "nodes:\n  - {id: n1, api: 'http://h:1', address: 1.2.3.4, peerPort: 1}\n  - {id: n2, api: 'http://h:2', address: 1.2.3.4, peerPort: 1}",
      "nodes[1].peerPort: 1.2.3.4 port 1 is also n1's"
    ),
    (
      "nodes:\n  - {id: n1, api: 'https://h:1', address: 1.2.3.4, peerPort: 1}\n  - {id: n2, api: 'http://h:2', address: 1.2.3.5, peerPort: 1}",
      "nodes[1].api: the nodes mix http:// and https://"
    ),
    (
      "ca: ca.pem\nnodes:\n  - {id: n1, api: 'http://h:1', address: 1.2.3.4, peerPort: 1}",
      "ca: the nodes' APIs are http://"
    ),
  ])
  func eachMistakeIsNamed(_ text: String, _ expected: String) {
    let error = targetsError(text)
    #expect(error?.contains(expected) == true, "got \(error ?? "no error") for:\n\(text)")
  }

  @Test func addressesAreLiterals() {
    for good in ["127.0.0.1", "10.0.0.2", "::1", "fd00::1", "2001:db8:0:0:0:0:0:1", "::ffff:10.0.0.1"] {
      #expect(targetsError(node(address: good)) == nil, "\(good)")
    }
    for bad in ["", "10.0.0", "010.0.0.1", "fd00:::1", "1::2::3", "g::1", "localhost", "10.0.0.1/24"] {
      #expect(targetsError(node(address: bad)) != nil, "\(bad)")
    }
  }

  private func node(address: String) -> String {
    "nodes:\n  - {id: n1, api: 'http://h:1', address: '\(address)', peerPort: 1}"
  }
}
