// Where a RaftNode runs: on a thread of its own with real time (production), or driven step by step by a
// deterministic simulation (no thread, no task, no clock of its own).

/// How a ``RaftNode`` is run: who executes its jobs, where its time comes from, when its Readys are
/// processed and when it learns that a write is durable.
///
/// - ``threads``: production. The actor runs on a ``NodeExecutor`` thread; a detached ticker task calls
///   ``RaftNode/tick()`` every `tickInterval` of the continuous clock; Readys are processed by a job scheduled
///   after each input; each Ready is written with one `fdatasync` inline, and the node then gives itself the
///   `persisted(readyID)` input at once. The read nonce is drawn from the system generator.
/// - `manual` (package-internal, for TealRaftSim's shell simulation): the actor's executor runs nothing by
///   itself and the node starts no task. The owner calls it synchronously (`assumeIsolated`) and decides when
///   each step happens: ticks (its clock), Ready processing, the storage write of a Ready, and the
///   `persisted(readyID)` input that tells the node the write is durable (as etcd's asynchronous storage
///   writes), with messages, ticks and proposals arriving in between. Outbound messages are collected for
///   the owner to deliver. The read nonce is given, so a run is a pure function of its seed.
public struct RaftNodeRuntime: Sendable {
  enum Kind: Sendable {
    case threads
    case manual(ManualNodeExecutor, readNonce: UInt64)
  }

  let kind: Kind

  /// Production: a thread per node, real time, inline durable writes.
  public static let threads = RaftNodeRuntime(kind: .threads)

  /// Driven by a deterministic simulation; `readNonce` is this incarnation's read-context nonce (give every
  /// incarnation of a node a different one).
  package static func manual(readNonce: UInt64) -> RaftNodeRuntime {
    RaftNodeRuntime(kind: .manual(ManualNodeExecutor(), readNonce: readNonce))
  }

  var isManual: Bool {
    if case .manual = kind { return true }
    return false
  }
}

/// The serial executor of a manually driven node: it runs no job by itself. The simulation calls the node
/// synchronously with `assumeIsolated` from its single thread, which this executor accepts as isolated; a job
/// enqueued anyway (an `async` call into the node) waits until ``runQueuedJobs()``.
package final class ManualNodeExecutor: SerialExecutor, @unchecked Sendable {
  private var jobs: [UnownedJob] = []

  init() {}

  package func enqueue(_ job: consuming ExecutorJob) {
    jobs.append(UnownedJob(job))
  }

  package func asUnownedSerialExecutor() -> UnownedSerialExecutor {
    UnownedSerialExecutor(complexEquality: self)
  }

  package func isSameExclusiveExecutionContext(other: ManualNodeExecutor) -> Bool { self === other }

  /// The owner drives the node from one thread at a time, so any caller is "on" this executor.
  package func checkIsolated() {}

  /// Jobs enqueued by `async` calls and not yet run.
  package var queuedJobs: Int { jobs.count }

  /// Runs the queued jobs (and those they enqueue) in order.
  package func runQueuedJobs() {
    while !jobs.isEmpty {
      let job = jobs.removeFirst()
      job.runSynchronously(on: asUnownedSerialExecutor())
    }
  }
}
