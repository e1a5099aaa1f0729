import MTASTSCore
import Atomics
import NIOCore
import Metrics
import NIOConcurrencyHelpers

/// The in-memory layer: entries by domain with a coarse last-use time; past its capacity the
/// least recently used tenth leaves at once (amortised, no per-hit bookkeeping beyond a store).
/// Each entry keeps the replies rendered from it (by the caller's key: the zone and the
/// configuration's generation), so a cached look-up writes bytes made once; replacing the entry
/// drops them.
struct HotCache {
    /// An entry and its rendered replies (by zone, with the configuration generation they were
    /// rendered under).
    struct Slot {
        var entry: CacheEntry
        var replies: [String: (generation: Int, bytes: ByteBuffer)] = [:]
    }

    /// A domain with its hash worked out once: a probe of the table compares the hashes before
    /// the names (a Swift dictionary keeps no hashes, and a name over 15 bytes is compared with
    /// memcmp at every probe, which dominated look-ups that miss).
    struct Key: Hashable {
        let hash: Int
        let text: String
        init(_ text: String) {
            self.text = text
            var hasher = Hasher()
            hasher.combine(text)
            hash = hasher.finalize()
        }
        static func == (a: Key, b: Key) -> Bool { a.hash == b.hash && a.text == b.text }
        func hash(into hasher: inout Hasher) { hasher.combine(hash) }
    }

    /// What the hit path needs: validity, whether a record check is due, the kept reply.
    struct Hit {
        var expiresAt: Double
        var checkedAt: Double
        var negative: Bool
        var reply: ByteBuffer?
    }

    let capacity: Int
    private var slots: [Key: Slot] = [:]
    /// Domains used since the last `takeUsed()`, for the persistent store's last-use column.
    private var used: Set<String> = []

    init(capacity: Int) { self.capacity = max(1, capacity) }

    var count: Int { slots.count }

    func peek(_ domain: String) -> CacheEntry? { slots[Key(domain)]?.entry }

    mutating func use(_ domain: String, at now: Double) -> CacheEntry? {
        guard let index = slots.index(forKey: Key(domain)) else { return nil }
        markUsed(index, domain, at: now)
        return slots.values[index].entry
    }

    /// A use, written coarsely: once per entry per minute at most.
    private mutating func markUsed(_ index: Dictionary<Key, Slot>.Index, _ domain: String, at now: Double) {
        guard now - slots.values[index].entry.lastUsed >= 60 else { return }
        slots.values[index].entry.lastUsed = now
        used.insert(domain)
    }

    /// One hash look-up, no copy of the entry: the socketmap hit path.
    mutating func hit(_ domain: String, zone: String, generation: Int, at now: Double) -> Hit? {
        guard let index = slots.index(forKey: Key(domain)) else { return nil }
        markUsed(index, domain, at: now)
        // Field by field (borrowed, not a copy of the entry and its policy).
        let kept = slots.values[index].replies[zone]
        return Hit(expiresAt: slots.values[index].entry.expiresAt, checkedAt: slots.values[index].entry.checkedAt,
                   negative: slots.values[index].entry.policy == nil, reply: kept?.generation == generation ? kept?.bytes : nil)
    }

    mutating func put(_ entry: CacheEntry) {
        slots[Key(entry.domain)] = Slot(entry: entry)
        if slots.count > capacity { evictLeastRecentlyUsed() }
    }

    /// Puts `entry` unless the layer holds a newer one for its domain (fetched or checked later);
    /// returns the entry now cached.
    mutating func putUnlessNewer(_ entry: CacheEntry) -> CacheEntry {
        if let current = slots[Key(entry.domain)]?.entry, current.fetchedAt > entry.fetchedAt
            || (current.fetchedAt == entry.fetchedAt && current.checkedAt >= entry.checkedAt) {
            return current
        }
        put(entry)
        return entry
    }

    mutating func remove(_ domain: String) { slots[Key(domain)] = nil }

    /// Keeps `reply` for `domain` under `key` if the entry it was rendered from is still the one
    /// cached (a reply is never kept beside a newer entry).
    mutating func keep(_ reply: ByteBuffer, _ domain: String, zone: String, generation: Int, renderedFrom entry: CacheEntry) {
        guard let index = slots.index(forKey: Key(domain)), slots.values[index].entry == entry else { return }
        slots.values[index].replies[zone] = (generation, reply)
    }

    func all() -> [CacheEntry] { slots.values.map(\.entry) }

    mutating func takeUsed() -> [String] {
        defer { used.removeAll(keepingCapacity: true) }
        return Array(used)
    }

    /// "No policy" entries leave first (least recently used first), policies only when nothing
    /// else is left: mail to thousands of domains without MTA-STS cannot push a cached enforce
    /// policy out of memory (after which blocking its policy host would downgrade the domain).
    private mutating func evictLeastRecentlyUsed() {
        let drop = max(1, capacity / 10)
        // One rank per entry (negative entries below every policy, then by last use), sorted as
        // plain numbers: the cut-off below which the tenth to drop lies, without sorting (and
        // retaining) the entries themselves.
        func rank(_ slot: Slot) -> Double { slot.entry.policy == nil ? slot.entry.lastUsed - 1e15 : slot.entry.lastUsed }
        var ranks = slots.values.map(rank)
        ranks.sort()
        let cutoff = ranks[min(drop, ranks.count) - 1]
        var victims: [Key] = []
        victims.reserveCapacity(drop)
        for (key, slot) in slots where victims.count < drop && rank(slot) <= cutoff { victims.append(key) }
        for key in victims { slots[key] = nil }
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
