import Testing

@testable import TealTLS

@Test func TealTLSModuleLoads() {
  #expect(Bool(true))
}
