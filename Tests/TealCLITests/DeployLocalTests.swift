import Foundation
import TealTestSupport
import Testing

/// Deploy/local holds what `teal cluster up` writes (with `DIR` for the cluster directory), so an
/// operator can read the files of a local cluster without making one; this test keeps them true.
@Suite("Deploy/local is what teal cluster up writes")
struct DeployLocalTests {
  static let deployLocal = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent().appendingPathComponent("Deploy/local").path

  static let files = ["cluster.yaml", "n1/node.yaml", "n2/node.yaml", "n3/node.yaml"]

  @Test func theFilesMatchAFreshClusterDirectory() throws {
    try #require(
      FileManager.default.isExecutableFile(atPath: tealExecutable), "no teal executable at \(tealExecutable)")
    let dir = temporaryDirectory("deploy-local")
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let result = try run(tealExecutable, ["cluster", "up", "--dir", dir, "--no-start"])
    #expect(result.status == 0, "\(result.output)")
    let record = ProcessInfo.processInfo.environment["TEAL_RECORD_DEPLOY_LOCAL"] == "1"
    for file in Self.files {
      let written = try String(contentsOfFile: "\(dir)/\(file)", encoding: .utf8)
        .replacingOccurrences(of: dir, with: "DIR")
      let path = "\(Self.deployLocal)/\(file)"
      if record {
        try FileManager.default.createDirectory(
          atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try written.write(toFile: path, atomically: true, encoding: .utf8)
        continue
      }
      let kept = try? String(contentsOfFile: path, encoding: .utf8)
      #expect(
        kept == written,
        "Deploy/local/\(file) is not what `teal cluster up` writes: TEAL_RECORD_DEPLOY_LOCAL=1 swift test --filter DeployLocalTests"
      )
    }
  }
}
