import Testing

@testable import TealDataPlane

@Test func TealDataPlaneModuleLoads() {
  #expect(Bool(true))
}
