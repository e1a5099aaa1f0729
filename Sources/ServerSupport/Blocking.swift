import Atomics
import Foundation
import Dispatch
import NIOCore
import NIOPosix

/// The one way blocking calls (libresolv, SQLite, libpq, sendmail, file reads) leave async code:
/// a fixed pool of threads, so at most `threads` such calls run at once and no event loop or
/// cooperative-pool thread ever waits on one.
public final class BlockingPool: Sendable {
    private let pool: NIOThreadPool
    public let threads: Int

    public init(threads: Int) {
        self.threads = max(1, threads)
        pool = NIOThreadPool(numberOfThreads: self.threads)
        pool.start()
    }

    /// The process's pool (4 threads): serve's database work, the daemon's stores and reporter.
    public static let shared = BlockingPool(threads: 4)

    public func run<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await pool.runIfActive(body)
    }

    /// Runs `body` on the pool, but waits at most `limit`: nil when it has not finished by then
    /// (it goes on, and its result is dropped). One continuation and one event-loop timer, no
    /// extra task: for calls on a hot path (the policy store on a cache miss).
    public func run<T: Sendable>(within limit: TimeAmount, _ body: @escaping @Sendable () throws -> T) async -> Result<T, any Error>? {
        await race(limit) { finish in
            pool.submit { state in
                if case .active = state { finish(Result { try body() }) } else { finish(.failure(NIOThreadPoolError.ThreadPoolInactive())) }
            }
        }
    }

    public func shutdown() async { try? await pool.shutdownGracefully() }
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
