import Testing

@testable import TealStorage

@Test func TealStorageModuleLoads() {
  #expect(Bool(true))
}
