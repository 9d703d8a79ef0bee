import TealGossip
import TealWire

/// Node keys and certificates for the simulation: each node's key is a secret derived from the
/// cluster secret and its id, and a signature is a 64-bit keyed hash of the content. It is not
/// cryptography; it models what the real `CertificateRecordAuthenticator` guarantees, that a
/// member can sign only as itself, at no cost. Every node's credential is trusted (they all come
/// from the simulated cluster CA).
public struct SimulatedAuthenticator: SWIMRecordAuthenticator {
  public let node: NodeID
  public let clusterSecret: UInt64

  public init(node: NodeID, clusterSecret: UInt64) {
    self.node = node
    self.clusterSecret = clusterSecret
  }

  public var credential: [UInt8] { Self.credential(of: node) }

  static func credential(of node: NodeID) -> [UInt8] { Array("simulated certificate of \(node.rawValue)".utf8) }

  public func sign(_ content: [UInt8]) -> [UInt8]? { Self.tag(key: key(of: node), content) }

  public func accept(credential: [UInt8], of node: NodeID) -> Bool { credential == Self.credential(of: node) }

  public func verify(signature: [UInt8], over content: [UInt8], by node: NodeID) -> Bool {
    signature == Self.tag(key: key(of: node), content)
  }

  private func key(of node: NodeID) -> UInt64 {
    var random = SplitMix64(seed: clusterSecret ^ Self.fnv(Array(node.rawValue.utf8), basis: 0xCBF2_9CE4_8422_2325))
    return random.next()
  }

  private static func tag(key: UInt64, _ content: [UInt8]) -> [UInt8] {
    let value = fnv(content, basis: key)
    return (0..<8).map { UInt8(truncatingIfNeeded: value >> (8 * $0)) }
  }

  private static func fnv(_ bytes: [UInt8], basis: UInt64) -> UInt64 {
    var hash = basis
    for byte in bytes {
      hash ^= UInt64(byte)
      hash = hash &* 0x100_0000_01B3
    }
    return hash
  }
}
