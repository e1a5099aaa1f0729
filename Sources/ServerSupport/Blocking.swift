import Atomics
import Foundation
import Dispatch
import NIOCore
import NIOPosix

/// The one way blocking calls (libresolv, SQLite, libpq, sendmail, file reads) leave async code:
/// a bounded pool of threads, so at most `threads` such calls run at once and no event loop or
/// cooperative-pool thread ever waits on one. Threads are started when work needs them, up to
/// `threads`, and then kept: a pool sized for a burst (the DNS pool's 64, for `mtasts check
/// --concurrency 64`) costs a daemon only the threads its look-ups have used at once (each one
/// a stack and, often, a malloc arena).
public final class BlockingPool: @unchecked Sendable {
    public let threads: Int
    private let condition = NSCondition()
    // Under `condition`:
    private var queue = CircularBuffer<@Sendable (_ active: Bool) -> Void>()
    private var started = 0
    private var waiting = 0
    private var stopped = false
    private var exits: [CheckedContinuation<Void, Never>] = []

    public init(threads: Int) {
        self.threads = max(1, threads)
    }

    /// The process's pool (4 threads): serve's database work, the daemon's stores and reporter.
    public static let shared = BlockingPool(threads: 4)

    /// Threads started so far.
    public var startedThreads: Int {
        condition.lock()
        defer { condition.unlock() }
        return started
    }

    /// Queues `work`: it runs on a pool thread with `true`, or with `false` (at once or when the
    /// pool is shut down before it ran) to say it must not do its work.
    public func submit(_ work: @escaping @Sendable (_ active: Bool) -> Void) {
        condition.lock()
        if stopped {
            condition.unlock()
            return work(false)
        }
        queue.append(work)
        // A thread more when the queue holds more than the waiting threads will take.
        let spawn = queue.count > waiting && started < threads
        if spawn { started += 1 }
        if waiting > 0 { condition.signal() }
        condition.unlock()
        if spawn { startThread() }
    }

    public func run<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, any Error>) in
            submit { active in
                guard active else { return continuation.resume(throwing: NIOThreadPoolError.ThreadPoolInactive()) }
                continuation.resume(with: Result { try body() })
            }
        }
    }

    /// Runs `body` on the pool, but waits at most `limit`: nil when it has not finished by then
    /// (it goes on, and its result is dropped). One continuation and one event-loop timer, no
    /// extra task: for calls on a hot path (the policy store on a cache miss).
    public func run<T: Sendable>(within limit: TimeAmount, _ body: @escaping @Sendable () throws -> T) async -> Result<T, any Error>? {
        await race(limit) { finish in
            submit { active in
                if active { finish(Result { try body() }) } else { finish(.failure(NIOThreadPoolError.ThreadPoolInactive())) }
            }
        }
    }

    /// Refuses new work, hands what is queued `false`, and waits for the threads to finish what
    /// they run.
    public func shutdown() async {
        for work in stop() { work(false) }
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            condition.lock()
            if started == 0 {
                condition.unlock()
                return continuation.resume()
            }
            exits.append(continuation)
            condition.unlock()
        }
    }

    /// Marks the pool stopped and wakes its threads; what was queued, for the caller to refuse.
    private func stop() -> CircularBuffer<@Sendable (Bool) -> Void> {
        condition.lock()
        defer { condition.unlock() }
        stopped = true
        condition.broadcast()
        var left = CircularBuffer<@Sendable (Bool) -> Void>()
        swap(&left, &queue)
        return left
    }

    private func startThread() {
        let context = Unmanaged.passRetained(self).toOpaque()
        var attributes = pthread_attr_t()
        pthread_attr_init(&attributes)
        defer { pthread_attr_destroy(&attributes) }
        pthread_attr_setdetachstate(&attributes, Int32(PTHREAD_CREATE_DETACHED))
        var thread = pthread_t()
        let rc = pthread_create(&thread, &attributes, { context in
            let pool = Unmanaged<BlockingPool>.fromOpaque(context!).takeRetainedValue()
            pool.work()
            return nil
        }, context)
        guard rc != 0 else { return }
        // No thread: the work waits for the ones there are; with none at all it is refused
        // rather than left queued for ever.
        Unmanaged<BlockingPool>.fromOpaque(context).release()
        condition.lock()
        threadEnded()
    }

    /// A thread counted in `started` is gone (it ended, or was never made); called holding the
    /// lock, and releases it. With none left, what is queued is refused (no thread would take
    /// it) and a waiting `shutdown` returns.
    private func threadEnded() {
        started -= 1
        var refused = CircularBuffer<@Sendable (Bool) -> Void>()
        var done: [CheckedContinuation<Void, Never>] = []
        if started == 0 {
            swap(&refused, &queue)
            swap(&done, &exits)
        }
        condition.unlock()
        for work in refused { work(false) }
        for continuation in done { continuation.resume() }
    }

    private func work() {
        condition.lock()
        while true {
            while queue.isEmpty && !stopped {
                waiting += 1
                condition.wait()
                waiting -= 1
            }
            guard !queue.isEmpty else { break }
            let next = queue.removeFirst()
            let active = !stopped
            condition.unlock()
            next(active)
            condition.lock()
        }
        threadEnded()
    }
}

/// `body`'s value, or nil when it has not finished within `seconds` (it goes on; its value is
/// then dropped). The deadline is an event-loop timer, removed at once when the body wins: a
/// `Task.sleep` timer, even cancelled, stays in the runtime's timer heap until it would have
/// fired, and at thousands of look-ups a second with a 37 s budget that held hundreds of
/// thousands of tasks (tens of megabytes).
public func withDeadline<T: Sendable>(_ seconds: Double, _ body: @escaping @Sendable () async -> T) async -> T? {
    await race(.nanoseconds(Int64(max(0, seconds) * 1e9))) { finish in
        Task { finish(await body()) }
    }
}

/// The value `start` hands to its `finish`, or nil if `limit` passes first: one continuation,
/// resumed once, and an event-loop timer cancelled when the work wins (the two deadlines above).
private func race<T: Sendable>(_ limit: TimeAmount, _ start: (@escaping @Sendable (T) -> Void) -> Void) async -> T? {
    await withCheckedContinuation { (continuation: CheckedContinuation<T?, Never>) in
        let once = ManagedAtomic<Bool>(false)
        let claim: @Sendable () -> Bool = { once.compareExchange(expected: false, desired: true, ordering: .acquiringAndReleasing).exchanged }
        let timer = MultiThreadedEventLoopGroup.singleton.any().scheduleTask(in: limit) {
            if claim() { continuation.resume(returning: nil) }
        }
        start { value in
            timer.cancel()
            if claim() { continuation.resume(returning: value) }
        }
    }
}

/// Hands a value to worker threads that use it without sharing mutable state.
public struct UncheckedSendable<T>: @unchecked Sendable {
    public let value: T
    public init(_ value: T) { self.value = value }
}

/// CPU-bound work over many inputs (files to parse) on `jobs` threads, in batches: each batch's
/// results reach `each` in input order when the batch is done, so output streams and memory is
/// bounded by two batches. The workers take inputs one at a time from a shared counter (a slow
/// input holds up no other), and `each` runs on the caller's thread while the workers go on with
/// the next batch; then the caller takes inputs as well.
public enum ParallelBatches {
    public static func map<Input, Output>(_ inputs: [Input], jobs: Int, batchSize: Int? = nil,
                                          transform: @escaping (Input) -> Output, each: ([Output]) -> Void) {
        let size = batchSize ?? max(64, jobs * 256)
        if jobs <= 1 || inputs.count <= 1 {
            var start = 0
            while start < inputs.count {
                let end = min(inputs.count, start + size)
                each(inputs[start..<end].map(transform))
                start = end
            }
            return
        }
        let work = UncheckedSendable((inputs, transform))
        var ready: [Output]?
        var start = 0
        while start < inputs.count {
            let range = start..<min(inputs.count, start + size)
            start = range.upperBound
            let batch = Batch<Output>(count: range.count)
            let group = DispatchGroup()
            let take: @Sendable () -> Void = {
                while case let i = batch.next.wrappingIncrementThenLoad(ordering: .relaxed) - 1, i < range.count {
                    batch.slots[i] = work.value.1(work.value.0[range.lowerBound + i])
                }
            }
            // jobs - 1 workers, and the caller: it writes the previous batch, then takes inputs
            // too (the caller may itself hold one of the dispatch pool's threads, e.g. an async
            // command's: waiting idle there would leave one thread for all the work).
            for _ in 1..<min(jobs, range.count) { DispatchQueue.global().async(group: group, execute: take) }
            if let ready { each(ready) }
            take()
            group.wait()
            ready = batch.slots.map { $0! }
        }
        if let ready { each(ready) }
    }

    /// One batch's results: each slot is written by the one worker that took its index, and read
    /// after every worker is done (the group's wait orders the two).
    private final class Batch<Output>: @unchecked Sendable {
        let next = ManagedAtomic(0)
        var slots: UnsafeMutableBufferPointer<Output?>
        init(count: Int) {
            slots = .allocate(capacity: count)
            slots.initialize(repeating: nil)
        }
        deinit {
            slots.deinitialize()
            slots.deallocate()
        }
    }
}

/// At most `limit` holders at once across tasks; the others wait in order (a counting semaphore
/// for async code that never blocks a thread).
public final class AsyncLimiter: @unchecked Sendable {
    private let lock = NSLock()
    private var available: Int
    private var waiting: [CheckedContinuation<Void, Never>] = []

    public init(limit: Int) { available = max(1, limit) }

    public func acquire() async {
        if lock.withLock({ () -> Bool in
            guard available > 0 else { return false }
            available -= 1
            return true
        }) { return }
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let now = lock.withLock { () -> Bool in
                if available > 0 { available -= 1; return true }
                waiting.append(continuation)
                return false
            }
            if now { continuation.resume() }
        }
    }

    public func release() {
        let next = lock.withLock { () -> CheckedContinuation<Void, Never>? in
            if waiting.isEmpty { available += 1; return nil }
            return waiting.removeFirst()
        }
        next?.resume()
    }

    /// Runs `body` holding one place.
    public func run<T>(_ body: () async throws -> T) async rethrows -> T {
        await acquire()
        defer { release() }
        return try await body()
    }
}
