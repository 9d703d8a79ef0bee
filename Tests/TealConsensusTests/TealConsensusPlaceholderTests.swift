import Testing

@testable import TealConsensus

@Test func TealConsensusModuleLoads() {
  #expect(Bool(true))
}
