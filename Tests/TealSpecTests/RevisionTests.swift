import Testing

@testable import TealDeploy

@Suite struct RevisionTests {
  @Test func sha256MatchesTheFIPSTestVectors() {
    #expect(SHA256.hexDigest(Array("".utf8)) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    #expect(SHA256.hexDigest(Array("abc".utf8)) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    #expect(
      SHA256.hexDigest(Array("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq".utf8))
        == "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
    #expect(
      SHA256.hexDigest([UInt8](repeating: 0x61, count: 1000))
        == "41edece42d63e8d9bf515a9ba6932e1c20cbc9f5a5d134645adb5db1b9737ea3")
  }

  @Test func sameSpecRegisteredTwiceYieldsTheSameDigest() throws {
    let first = try parseYAML(baseSpecYAML)
    // Same content, different key order and formatting.
    let reordered = try parseYAML(
      baseSpecYAML.replacingOccurrences(
        of: "desiredCount: 3\nproductionPort: 8080", with: "productionPort: 8080\ndesiredCount: 3"))
    #expect(Revision.digest(of: first) == Revision.digest(of: reordered))
    #expect(Revision(id: RevisionID(service: "web", number: 1), spec: first).digest.count == 64)
  }

  @Test func anyChangedFieldChangesTheDigest() throws {
    let spec = try parseYAML(baseSpecYAML)
    var changedEnv = spec
    changedEnv.task.env["MODE"] = "green"
    var changedPercent = spec
    changedPercent.deployment.canary?.canaryPercent = 11
    var changedHook = spec
    changedHook.deployment.lifecycleHooks[0].timeoutAction = .CONTINUE
    let digests = Set([spec, changedEnv, changedPercent, changedHook].map(Revision.digest(of:)))
    #expect(digests.count == 4)
  }

  @Test func revisionsAreNumberedPerServiceAndAnIdenticalSpecReusesTheLatest() throws {
    var history = RevisionHistory(service: "web")
    let spec = try parseYAML(baseSpecYAML)
    let first = try history.register(spec)
    #expect(first.revision.id.description == "web:1")
    #expect(first.isNew)
    let again = try history.register(spec)
    #expect(again.revision == first.revision)
    #expect(!again.isNew)
    var changed = spec
    changed.task.args = ["--port", "9001"]
    let second = try history.register(changed)
    #expect(second.revision.id.description == "web:2")
    #expect(history.revision(RevisionID(service: "web", number: 1))?.spec == spec)
    #expect(RevisionID(parsing: "web:2") == second.revision.id)
    #expect(RevisionID(parsing: "web") == nil)
    var other = spec
    other.name = "api"
    #expect(throws: RevisionError.self) { try history.register(other) }
  }
}
