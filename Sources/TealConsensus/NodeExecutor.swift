// A serial executor on a dedicated thread, so that a node's blocking fdatasync never occupies a thread
// of Swift's small cooperative pool (on a 2-core machine that pool has 2 threads).

import Foundation

/// Runs the jobs of one actor, in order, on a thread of its own.
///
/// Invariant: jobs run one at a time in enqueue order. The thread exits once ``shutdown()`` was called and
/// the queue is empty.
final class NodeExecutor: SerialExecutor, @unchecked Sendable {
  private let condition = NSCondition()
  /// Guarded by `condition`.
  private var jobs: [UnownedJob] = []
  /// Guarded by `condition`.
  private var isShutDown = false

  init(name: String) {
    let thread = Thread { [self] in runLoop() }
    thread.name = name
    thread.start()
  }

  func enqueue(_ job: consuming ExecutorJob) {
    let job = UnownedJob(job)
    condition.lock()
    jobs.append(job)
    condition.signal()
    condition.unlock()
  }

  func asUnownedSerialExecutor() -> UnownedSerialExecutor {
    UnownedSerialExecutor(ordinary: self)
  }

  /// Lets the thread exit once the queued jobs have run.
  func shutdown() {
    condition.lock()
    isShutDown = true
    condition.signal()
    condition.unlock()
  }

  private func runLoop() {
    var batch: [UnownedJob] = []
    while true {
      condition.lock()
      while jobs.isEmpty && !isShutDown { condition.wait() }
      if jobs.isEmpty {
        condition.unlock()
        return
      }
      swap(&batch, &jobs)
      condition.unlock()
      for job in batch { job.runSynchronously(on: asUnownedSerialExecutor()) }
      batch.removeAll(keepingCapacity: true)
    }
  }
}
