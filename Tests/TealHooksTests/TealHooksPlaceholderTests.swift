import Testing

@testable import TealHooks

@Test func TealHooksModuleLoads() {
  #expect(Bool(true))
}
