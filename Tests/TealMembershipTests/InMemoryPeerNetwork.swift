import TealGossip
import TealMembership
import TealWire

/// Connects several `MembershipService`s in one process: each send is handed to the receiver's
/// handler on a new task (so delivery is asynchronous, like the real transport), after `delay`.
/// A node can be cut off, which makes every send to or from it fail as `peerUnavailable`, or
/// shut down, which drops every message from it still in flight (like a transport's shutdown
/// dropping its queues).
actor InMemoryPeerNetwork {
  private var handlers: [NodeID: PeerMessageHandler] = [:]
  private var cutOff: Set<NodeID> = []
  private var shutDown: Set<NodeID> = []
  private(set) var delivered = 0
  var delay: Duration = .zero

  func register(_ id: NodeID, handler: @escaping PeerMessageHandler) { handlers[id] = handler }

  func cutOff(_ id: NodeID) { cutOff.insert(id) }

  func shutDown(_ id: NodeID) { shutDown.insert(id) }

  func setDelay(_ delay: Duration) { self.delay = delay }

  func route(from: NodeID, to: NodeID) throws(PeerSendError) -> (PeerMessageHandler, Duration) {
    guard let handler = handlers[to] else { throw .unknownPeer(to) }
    if cutOff.contains(from) || cutOff.contains(to) || shutDown.contains(from) { throw .peerUnavailable(to) }
    return (handler, delay)
  }

  /// Whether a message from `from` that waited out its delay is still delivered.
  func admit(from: NodeID) -> Bool {
    guard !shutDown.contains(from) else { return false }
    delivered += 1
    return true
  }

  func sender(for id: NodeID) -> Sender { Sender(network: self, id: id) }

  struct Sender: PeerMessageSender {
    let network: InMemoryPeerNetwork
    let id: NodeID

    func send(_ payload: [UInt8], on channel: PeerChannel, to peer: NodeID) async throws(PeerSendError) {
      let (handler, delay) = try await network.route(from: id, to: peer)
      let from = id
      let network = network
      Task {
        if delay > .zero { try? await Task.sleep(for: delay) }
        guard await network.admit(from: from) else { return }
        await handler(from, channel, payload)
      }
    }
  }
}
