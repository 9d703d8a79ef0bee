import Testing

@testable import TealWire

@Test func TealWireModuleLoads() {
  #expect(Bool(true))
}
