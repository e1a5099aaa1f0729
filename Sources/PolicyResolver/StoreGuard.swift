import Foundation
import Logging
import Metrics
import MTASTSCore
import NIOConcurrencyHelpers
import ServerSupport

/// The persistent policy store behind time limits and a breaker, so that a store that fails or
/// hangs never holds up a reply (issue: "a store outage falls back to live look-ups"):
///
/// - calls run on threads of their own (a hung store cannot take the shared pool's threads,
///   which serve the report scheduler and the web service) and are waited for at most `timeout`;
/// - after a failure the store is *down*: calls fail at once, without a thread, until
///   `retryAfter` has passed; then one call at a time probes it;
/// - writes never make a reply wait; while the store is down they are kept (newest per domain,
///   at most `maxPending`) and written when it is back;
/// - going down and coming back are logged once each and shown as `mtasts_policy_store_up`.
final class StoreGuard: Sendable {
    enum Failure: Error, CustomStringConvertible {
        /// Down since an earlier failure; not asked.
        case down(String)
        case failed(String)
        case timedOut(Double)

        var description: String {
            switch self {
            case .down(let reason): return "unavailable (\(reason))"
            case .failed(let reason): return reason
            case .timedOut(let s): return "no answer within \(s.clean) s"
            }
        }
    }

    struct State {
        var up = true
        var reason = ""
        var probeAt: Double = 0
        var probing = false
        var pending: [String: CacheEntry] = [:]
        var flushing = false
        /// Writes started and not finished (`drain` waits for them).
        var writing = 0
    }

    let store: any PolicyStore
    let timeout: Double
    let retryAfter: Double
    let maxPending: Int
    let clock: any WallClock
    let logger: Logger
    let pool: BlockingPool
    let state = NIOLockedValueBox(State())
    let upGauge = Gauge(label: "mtasts_policy_store_up")
    let failures: MetricCounter

    init(store: any PolicyStore, timeout: Double, retryAfter: Double = 5, maxPending: Int = 10_000, threads: Int = 2,
         clock: any WallClock, logger: Logger, failures: MetricCounter) {
        self.store = store
        self.timeout = timeout
        self.retryAfter = retryAfter
        self.maxPending = maxPending
        self.clock = clock
        self.logger = logger
        self.failures = failures
        pool = BlockingPool(threads: threads)
        upGauge.record(1)
    }

    deinit {
        let pool = self.pool
        Task { await pool.shutdown() }
    }

    var isUp: Bool { state.withLockedValue { $0.up } }

    /// Runs `body` on the store within the time limit, unless the store is down.
    func call<T: Sendable>(_ body: @escaping @Sendable (any PolicyStore) throws -> T) async -> Result<T, Failure> {
        let now = clock.now()
        let allowed: Failure? = state.withLockedValue { s in
            if s.up { return nil }
            if s.probing || now < s.probeAt { return .down(s.reason) }
            s.probing = true
            return nil
        }
        if let allowed { return .failure(allowed) }
        let store = self.store
        let outcome = await pool.run(within: .milliseconds(Int64(timeout * 1000))) { try body(store) }
        let result: Result<T, Failure>
        switch outcome {
        case .success(let value)?: result = .success(value)
        case .failure(let error)?: result = .failure(.failed("\(error)"))
        case nil: result = .failure(.timedOut(timeout))
        }
        switch result {
        case .success: if !isUp { markUp() }
        case .failure(let failure): markDown(failure)
        }
        return result
    }

    /// Writes `entry` without the caller waiting; kept for later while the store is down.
    func save(_ entry: CacheEntry) {
        let kept: Bool = state.withLockedValue { s in
            guard s.up else {
                keep(entry, in: &s)
                return true
            }
            s.writing += 1
            return false
        }
        if kept { return }
        Task {
            if case .failure = await call({ try $0.save(entry) }) { remember(entry) }
            state.withLockedValue { $0.writing -= 1 }
        }
    }

    /// Waits (at most `limit` seconds) for the writes in flight: a short-lived process (`mtasts
    /// query`) or a daemon shutting down does not lose what it fetched.
    func drain(limit: Double) async {
        let end = ContinuousClock.now + .milliseconds(Int(limit * 1000))
        while state.withLockedValue({ $0.writing > 0 || $0.flushing }), ContinuousClock.now < end {
            try? await Task.sleep(for: .milliseconds(5))
        }
    }

    private func remember(_ entry: CacheEntry) {
        state.withLockedValue { keep(entry, in: &$0) }
    }

    /// Kept for later: the newest entry per domain, at most `maxPending` domains.
    private func keep(_ entry: CacheEntry, in s: inout State) {
        if s.pending[entry.domain].map({ $0.fetchedAt <= entry.fetchedAt }) ?? (s.pending.count < maxPending) { s.pending[entry.domain] = entry }
    }

    private func markDown(_ failure: Failure) {
        failures.increment()
        let now = clock.now()
        let wasUp: Bool = state.withLockedValue { s in
            defer {
                s.up = false
                s.reason = failure.description
                s.probeAt = now + retryAfter
                s.probing = false
            }
            return s.up
        }
        if wasUp {
            upGauge.record(0)
            logger.error("the \(store.name) policy cache failed (\(failure)); running degraded: look-ups go to DNS and the policy hosts, writes wait; trying again every \(retryAfter.clean) s")
        }
    }

    private func markUp() {
        let (wasDown, flush): (Bool, Bool) = state.withLockedValue { s in
            defer {
                s.up = true
                s.probing = false
            }
            let flush = !s.pending.isEmpty && !s.flushing
            if flush { s.flushing = true }
            return (!s.up, flush)
        }
        if wasDown {
            upGauge.record(1)
            logger.notice("the \(store.name) policy cache answers again")
        }
        if flush { Task { await self.flushPending() } }
    }

    /// Writes what was kept while the store was down.
    func flushPending() async {
        let batch = state.withLockedValue { s in defer { s.pending = [:] }; return Array(s.pending.values) }
        var written = 0
        for (i, entry) in batch.enumerated() {
            if case .failure = await call({ try $0.save(entry) }) {
                batch[i...].forEach(remember)
                break
            }
            written += 1
        }
        state.withLockedValue { $0.flushing = false }
        if written > 0 { logger.info("wrote \(written) policy cache entries kept while the \(store.name) cache was down") }
    }

    var pendingCount: Int { state.withLockedValue { $0.pending.count } }
}

extension Double {
    /// 5 rather than 5.0.
    var clean: String { self == rounded() && abs(self) < 1e15 ? String(Int(self)) : String(self) }
}
