import Testing

@testable import TealMembership

@Test func TealMembershipModuleLoads() {
  #expect(Bool(true))
}
