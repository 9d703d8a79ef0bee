import Testing

@testable import TealRaft

@Test func TealRaftModuleLoads() {
  #expect(Bool(true))
}
