import Testing

@testable import TealTransport

@Test func TealTransportModuleLoads() {
  #expect(Bool(true))
}
