import Testing

@testable import TealDeploy

@Test func TealDeployModuleLoads() {
  #expect(Bool(true))
}
