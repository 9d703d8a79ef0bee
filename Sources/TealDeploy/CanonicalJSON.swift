// Canonical bytes of a Codable value: JSON with sorted keys. The deployment state holds no
// dictionaries or sets, so sorted keys are all it takes for two nodes to agree byte for byte.

import Foundation

enum CanonicalJSON {
  static func encode<T: Encodable>(_ value: T) -> [UInt8] {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
    do {
      return Array(try encoder.encode(value))
    } catch {
      preconditionFailure("a deployment state failed to encode: \(error)")
    }
  }
}
