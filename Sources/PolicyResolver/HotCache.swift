import MTASTSCore
import Atomics
import Metrics
import NIOConcurrencyHelpers

/// The in-memory layer: entries by domain with a coarse last-use time; past its capacity the
/// least recently used tenth leaves at once (amortised, no per-hit bookkeeping beyond a store).
struct HotCache {
    let capacity: Int
    private var entries: [String: CacheEntry] = [:]
    /// Domains used since the last `takeUsed()`, for the persistent store's last-use column.
    private var used: Set<String> = []

    init(capacity: Int) { self.capacity = max(1, capacity) }

    var count: Int { entries.count }

    func peek(_ domain: String) -> CacheEntry? { entries[domain] }

    mutating func use(_ domain: String, at now: Double) -> CacheEntry? {
        guard var entry = entries[domain] else { return nil }
        // Coarse: a write per entry per minute at most.
        if now - entry.lastUsed >= 60 {
            entry.lastUsed = now
            entries[domain] = entry
            used.insert(domain)
        }
        return entry
    }

    mutating func put(_ entry: CacheEntry) {
        entries[entry.domain] = entry
        if entries.count > capacity { evictLeastRecentlyUsed() }
    }

    mutating func remove(_ domain: String) { entries[domain] = nil }

    func all() -> [CacheEntry] { Array(entries.values) }

    mutating func takeUsed() -> [String] {
        defer { used.removeAll(keepingCapacity: true) }
        return Array(used)
    }

    /// "No policy" entries leave first (least recently used first), policies only when nothing
    /// else is left: mail to thousands of domains without MTA-STS cannot push a cached enforce
    /// policy out of memory (after which blocking its policy host would downgrade the domain).
    private mutating func evictLeastRecentlyUsed() {
        let drop = max(1, capacity / 10)
        let victims = entries.values.sorted { a, b in
            a.isNegative != b.isNegative ? a.isNegative : a.lastUsed < b.lastUsed
        }.prefix(drop).map(\.domain)
        for d in victims { entries[d] = nil }
    }
}

/// The resolver's counters: swift-metrics (exported at `/metrics` by the daemon) and a local
/// count for `mtasts query` and the tests. Make them after `MetricsSystem.bootstrap`.
public final class ResolverMetrics: Sendable {
    public let lookups = MetricCounter("mtasts_lookups_total")
    public let hits = MetricCounter("mtasts_cache_hits_total")
    public let misses = MetricCounter("mtasts_cache_misses_total")
    public let storeHits = MetricCounter("mtasts_store_hits_total")
    public let storeErrors = MetricCounter("mtasts_store_errors_total")
    public let dnsQueries = MetricCounter("mtasts_dns_record_queries_total")
    public let refreshes = MetricCounter("mtasts_refreshes_total")
    public let refreshFailures = MetricCounter("mtasts_refresh_failures_total")
    public let evictions = MetricCounter("mtasts_evictions_total")
    /// Fetch outcomes by RFC 8460 result type (or success, no-record, dns-temporary, timeout).
    public let fetchOutcomes = LabeledCounter("mtasts_fetch_outcomes_total", dimension: "result")

    public init() {}
}

/// A swift-metrics counter that also keeps its own count (an atomic add; no lock on the hit path).
public final class MetricCounter: Sendable {
    private let value = ManagedAtomic<Int>(0)
    private let exported: Metrics.Counter

    public init(_ label: String, dimensions: [(String, String)] = []) {
        exported = Metrics.Counter(label: label, dimensions: dimensions)
    }

    public func increment(by n: Int = 1) {
        value.wrappingIncrement(by: n, ordering: .relaxed)
        exported.increment(by: n)
    }

    public var count: Int { value.load(ordering: .relaxed) }
}

/// One counter per label value (a small set: result types), made on first use.
public final class LabeledCounter: Sendable {
    private let label: String
    private let dimension: String
    private let counters = NIOLockedValueBox<[String: MetricCounter]>([:])

    public init(_ label: String, dimension: String) {
        self.label = label
        self.dimension = dimension
    }

    public func increment(_ value: String) {
        counters.withLockedValue { c in
            if let counter = c[value] { return counter }
            let counter = MetricCounter(label, dimensions: [(dimension, value)])
            c[value] = counter
            return counter
        }.increment()
    }
}
