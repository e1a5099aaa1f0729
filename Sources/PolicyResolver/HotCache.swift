import MTASTSCore
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

    private mutating func evictLeastRecentlyUsed() {
        let drop = max(1, capacity / 10)
        let victims = entries.values.sorted { $0.lastUsed < $1.lastUsed }.prefix(drop).map(\.domain)
        for d in victims { entries[d] = nil }
    }
}

/// Counters a daemon exposes (Prometheus text through `MetricsRegistry`).
public final class ResolverMetrics: Sendable {
    public let lookups = Counter()
    public let hits = Counter()
    public let misses = Counter()
    public let storeHits = Counter()
    public let storeErrors = Counter()
    public let dnsQueries = Counter()
    public let refreshes = Counter()
    public let refreshFailures = Counter()
    public let evictions = Counter()
    /// Fetch outcomes by RFC 8460 result type (or success, no-record, dns-temporary, timeout).
    public let fetchOutcomes = LabeledCounter()

    public init() {}
}

public final class Counter: Sendable {
    private let value = NIOLockedValueBox<Int>(0)
    public init() {}
    public func increment(by n: Int = 1) { value.withLockedValue { $0 += n } }
    public var count: Int { value.withLockedValue { $0 } }
}

public final class LabeledCounter: Sendable {
    private let values = NIOLockedValueBox<[String: Int]>([:])
    public init() {}
    public func increment(_ label: String) { values.withLockedValue { $0[label, default: 0] += 1 } }
    public var counts: [String: Int] { values.withLockedValue { $0 } }
}
