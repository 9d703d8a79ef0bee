import TealGossip
import TealMembership
import TealWire

/// Connects several `MembershipService`s in one process: each send is handed to the receiver's
/// handler on a new task (so delivery is asynchronous, like the real transport). A node can be
/// cut off, which makes every send to or from it fail as `peerUnavailable`.
actor InMemoryPeerNetwork {
  private var handlers: [NodeID: PeerMessageHandler] = [:]
  private var cutOff: Set<NodeID> = []
  private(set) var delivered = 0

  func register(_ id: NodeID, handler: @escaping PeerMessageHandler) { handlers[id] = handler }

  func cutOff(_ id: NodeID) { cutOff.insert(id) }

  func route(from: NodeID, to: NodeID) throws(PeerSendError) -> PeerMessageHandler {
    guard let handler = handlers[to] else { throw .unknownPeer(to) }
    if cutOff.contains(from) || cutOff.contains(to) { throw .peerUnavailable(to) }
    delivered += 1
    return handler
  }

  func sender(for id: NodeID) -> Sender { Sender(network: self, id: id) }

  struct Sender: PeerMessageSender {
    let network: InMemoryPeerNetwork
    let id: NodeID

    func send(_ payload: [UInt8], on channel: PeerChannel, to peer: NodeID) async throws(PeerSendError) {
      let handler = try await network.route(from: id, to: peer)
      let from = id
      Task { await handler(from, channel, payload) }
    }
  }
}
