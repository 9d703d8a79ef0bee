import Foundation
import TealTestSupport
import Testing

@Suite("teal certs (the executable)")
struct CertsCommandTests {
  @Test func initWritesVerifiableCredentialsAndRefusesToRunTwice() throws {
    try #require(
      FileManager.default.isExecutableFile(atPath: tealExecutable), "no teal executable at \(tealExecutable)")
    let dir = temporaryDirectory("cli")
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let first = try run(tealExecutable, ["certs", "init", "--out", dir, "--nodes", "n1,n2,n3"])
    #expect(first.status == 0, "\(first.output)")
    #expect(first.output.contains("wrote \(dir)/n3.key"))
    for node in ["n1", "n2", "n3"] {
      #expect(try run(opensslPath, ["verify", "-CAfile", "\(dir)/ca.pem", "\(dir)/\(node).pem"]).status == 0)
    }
    let second = try run(tealExecutable, ["certs", "init", "--out", dir, "--nodes", "n1"])
    #expect(second.status == 1)
    #expect(second.output.contains("refusing to overwrite the existing CA"))

    let added = try run(tealExecutable, ["certs", "add", "--dir", dir, "--node", "n4", "--json"])
    #expect(added.status == 0, "\(added.output)")
    #expect(added.output.contains("\"written\":[\"\(dir)/n4.key\",\"\(dir)/n4.pem\"]"))
    #expect(try run(opensslPath, ["verify", "-CAfile", "\(dir)/ca.pem", "\(dir)/n4.pem"]).status == 0)
  }

  @Test func badArgumentsNameTheOptionAndExitWithAUsageError() throws {
    try #require(
      FileManager.default.isExecutableFile(atPath: tealExecutable), "no teal executable at \(tealExecutable)")
    let result = try run(tealExecutable, ["certs", "init", "--out", temporaryDirectory("cli"), "--nodes", "n1,Bad"])
    #expect(result.status == 64)
    #expect(result.output.contains("--nodes: invalid node id 'Bad'"))
    let duplicate = try run(tealExecutable, ["certs", "init", "--out", temporaryDirectory("cli"), "--nodes", "n1,n1"])
    #expect(duplicate.status == 64)
    #expect(duplicate.output.contains("listed twice"))
  }

  @Test func versionIsPrinted() throws {
    try #require(
      FileManager.default.isExecutableFile(atPath: tealExecutable), "no teal executable at \(tealExecutable)")
    let result = try run(tealExecutable, ["--version"])
    #expect(result.status == 0)
    #expect(result.output.trimmingCharacters(in: .whitespacesAndNewlines).split(separator: ".").count == 3)
  }
}
