import Testing

@testable import TealGossip

@Test func TealGossipModuleLoads() {
  #expect(Bool(true))
}
