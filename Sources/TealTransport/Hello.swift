import TealWire

/// The first frame on every connection, from the dialling side, on ``PeerChannel/transport``.
///
/// Over TLS the claimed node id must equal the one in the certificate; a mismatch closes the
/// connection. It also carries the wire protocol version so that nodes of different releases can
/// refuse each other with a clear reason instead of misreading messages.
struct Hello: WireCodable, Equatable {
  static let protocolVersion: UInt64 = 1

  var protocolVersion: UInt64
  var nodeID: NodeID
  var softwareVersion: String

  init(nodeID: NodeID, softwareVersion: String) {
    self.protocolVersion = Hello.protocolVersion
    self.nodeID = nodeID
    self.softwareVersion = softwareVersion
  }

  func encode(to writer: inout WireWriter) {
    writer.writeVarint(protocolVersion)
    writer.write(nodeID)
    writer.write(softwareVersion)
  }

  init(from reader: inout WireReader) throws(WireError) {
    protocolVersion = try reader.readVarint("hello.protocolVersion")
    nodeID = try reader.read(NodeID.self)
    softwareVersion = try reader.readString("hello.softwareVersion")
  }
}
