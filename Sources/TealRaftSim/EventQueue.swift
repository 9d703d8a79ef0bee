import TealRaft

/// Something that happens at a simulated time.
enum SimEvent: Sendable {
  case tick(node: Int, incarnation: Int)
  case deliver(RaftMessage, from: Int, to: Int)
  case clientIssue(client: Int)
  case clientTimeout(client: Int, operation: Int, attempt: Int)
  case restart(node: Int)
  case healPartitions(generation: Int)
  case membershipChange
  case takeSnapshot(node: Int)
}

/// A binary min-heap of events ordered by (time, insertion order): equal times keep FIFO order,
/// so a run is a pure function of its seed.
struct EventQueue: Sendable {
  /// Heap entries are small and trivially copyable; the events themselves live in `slots`.
  private struct Item: Sendable {
    var time: UInt64
    var order: UInt64
    var slot: Int
  }

  private var heap: [Item] = []
  private var slots: [SimEvent?] = []
  private var freeSlots: [Int] = []
  private var counter: UInt64 = 0

  var isEmpty: Bool { heap.isEmpty }
  var count: Int { heap.count }
  /// The time of the earliest event.
  var nextTime: UInt64? { heap.first?.time }

  mutating func schedule(_ event: SimEvent, at time: UInt64) {
    counter += 1
    let slot: Int
    if let free = freeSlots.popLast() {
      slot = free
      slots[slot] = event
    } else {
      slot = slots.count
      slots.append(event)
    }
    heap.append(Item(time: time, order: counter, slot: slot))
    var child = heap.count - 1
    let item = heap[child]
    while child > 0 {
      let parent = (child - 1) / 2
      let p = heap[parent]
      if item.time < p.time || (item.time == p.time && item.order < p.order) {
        heap[child] = p
        child = parent
      } else {
        break
      }
    }
    heap[child] = item
  }

  mutating func pop() -> (time: UInt64, event: SimEvent)? {
    guard let top = heap.first else { return nil }
    let last = heap.removeLast()
    if !heap.isEmpty {
      var parent = 0
      let count = heap.count
      while true {
        let left = 2 * parent + 1
        if left >= count { break }
        var child = left
        let right = left + 1
        if right < count {
          let l = heap[left]
          let r = heap[right]
          if r.time < l.time || (r.time == l.time && r.order < l.order) { child = right }
        }
        let c = heap[child]
        if c.time < last.time || (c.time == last.time && c.order < last.order) {
          heap[parent] = c
          parent = child
        } else {
          break
        }
      }
      heap[parent] = last
    }
    let event = slots[top.slot].take()
    freeSlots.append(top.slot)
    guard let event else { return nil }
    return (top.time, event)
  }
}
