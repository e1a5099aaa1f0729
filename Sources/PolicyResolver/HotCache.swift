import MTASTSCore
import Atomics
import NIOCore
import Metrics
import NIOConcurrencyHelpers

/// The in-memory layer: entries by domain with a coarse last-use time; past its capacity the
/// least recently used tenth leaves at once (amortised, no per-hit bookkeeping beyond a store).
/// An entry is kept compact: the times the hit path and refresh look at, the rest of the entry
/// packed into one byte array (`PackedEntry`; decoded only when a caller needs the whole entry),
/// and the reply rendered from it (by the caller's key: the zone and the configuration's
/// generation), so a cached look-up writes bytes made once; replacing the entry drops them.
/// Its slots are classes, reached only through the resolver's lock and never handed out (callers
/// get decoded entries and copied bytes): hence `@unchecked Sendable`.
struct HotCache: @unchecked Sendable {
    /// One cached domain (a class: the table holds a reference, not the fields).
    final class Slot {
        let packed: [UInt8]
        let fetchedAt: Double
        let expiresAt: Double
        let checkedAt: Double
        var lastUsed: Double
        let negative: Bool
        /// The reply rendered for one zone under one configuration generation (one zone at a
        /// time: a daemon answers one socketmap name in almost every set-up).
        var reply: (zone: String, generation: Int, bytes: [UInt8])?

        init(_ entry: CacheEntry) {
            packed = PackedEntry.pack(entry)
            fetchedAt = entry.fetchedAt
            expiresAt = entry.expiresAt
            checkedAt = entry.checkedAt
            lastUsed = entry.lastUsed
            negative = entry.policy == nil
        }

        func entry(_ domain: String) -> CacheEntry? {
            PackedEntry.unpack(packed, domain: domain, fetchedAt: fetchedAt, expiresAt: expiresAt, checkedAt: checkedAt, lastUsed: lastUsed)
        }

        /// Is this the slot `entry` would make (the reply rendered from `entry` may be kept)?
        func holds(_ entry: CacheEntry) -> Bool {
            entry.fetchedAt == fetchedAt && entry.expiresAt == expiresAt && entry.checkedAt == checkedAt
                && (entry.policy == nil) == negative && PackedEntry.pack(entry) == packed
        }
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

    func peek(_ domain: String) -> CacheEntry? { slots[Key(domain)]?.entry(domain) }

    mutating func use(_ domain: String, at now: Double) -> CacheEntry? {
        guard let slot = slots[Key(domain)] else { return nil }
        markUsed(slot, domain, at: now)
        return slot.entry(domain)
    }

    /// A use, written coarsely: once per entry per minute at most.
    private mutating func markUsed(_ slot: Slot, _ domain: String, at now: Double) {
        guard now - slot.lastUsed >= 60 else { return }
        slot.lastUsed = now
        used.insert(domain)
    }

    /// One hash look-up, no decoding of the entry: the socketmap hit path.
    mutating func hit(_ domain: String, zone: String, generation: Int, at now: Double) -> Hit? {
        guard let slot = slots[Key(domain)] else { return nil }
        markUsed(slot, domain, at: now)
        var reply: ByteBuffer?
        if let kept = slot.reply, kept.generation == generation, kept.zone == zone { reply = ByteBuffer(bytes: kept.bytes) }
        return Hit(expiresAt: slot.expiresAt, checkedAt: slot.checkedAt, negative: slot.negative, reply: reply)
    }

    mutating func put(_ entry: CacheEntry) {
        slots[Key(entry.domain)] = Slot(entry)
        if slots.count > capacity { evictLeastRecentlyUsed() }
    }

    /// Puts `entry` unless the layer holds a newer one for its domain (fetched or checked later);
    /// returns the entry now cached.
    mutating func putUnlessNewer(_ entry: CacheEntry) -> CacheEntry {
        if let current = slots[Key(entry.domain)], current.fetchedAt > entry.fetchedAt
            || (current.fetchedAt == entry.fetchedAt && current.checkedAt >= entry.checkedAt), let decoded = current.entry(entry.domain) {
            return decoded
        }
        put(entry)
        return entry
    }

    mutating func remove(_ domain: String) { slots[Key(domain)] = nil }

    /// Keeps `reply` for `domain` under `zone` if the entry it was rendered from is still the one
    /// cached (a reply is never kept beside a newer entry).
    mutating func keep(_ reply: ByteBuffer, _ domain: String, zone: String, generation: Int, renderedFrom entry: CacheEntry) {
        guard let slot = slots[Key(domain)], slot.holds(entry) else { return }
        slot.reply = (zone, generation, Array(reply.readableBytesView))
    }

    /// The entries whose times pass `filter` (fetched, expires, checked, last used, negative),
    /// decoded; the others are not.
    func entries(where filter: (_ fetchedAt: Double, _ expiresAt: Double, _ checkedAt: Double, _ lastUsed: Double, _ negative: Bool) -> Bool) -> [CacheEntry] {
        slots.compactMap { key, slot in
            filter(slot.fetchedAt, slot.expiresAt, slot.checkedAt, slot.lastUsed, slot.negative) ? slot.entry(key.text) : nil
        }
    }

    /// The domains whose times pass `filter`.
    func domains(where filter: (_ expiresAt: Double, _ lastUsed: Double, _ negative: Bool) -> Bool) -> [String] {
        slots.compactMap { key, slot in filter(slot.expiresAt, slot.lastUsed, slot.negative) ? key.text : nil }
    }

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
        func rank(_ slot: Slot) -> Double { slot.negative ? slot.lastUsed - 1e15 : slot.lastUsed }
        var ranks = slots.values.map(rank)
        ranks.sort()
        let cutoff = ranks[min(drop, ranks.count) - 1]
        var victims: [Key] = []
        victims.reserveCapacity(drop)
        for (key, slot) in slots where victims.count < drop && rank(slot) <= cutoff { victims.append(key) }
        for key in victims { slots[key] = nil }
    }
}

/// A cache entry without its domain and times, in one byte array: flags, the DANE state, then
/// the optional fields as length-prefixed UTF-8 (the policy in its canonical text, read back by
/// `STSPolicy.parseCanonical`), the failure time as its bit pattern.
enum PackedEntry {
    static func pack(_ e: CacheEntry) -> [UInt8] {
        var out: [UInt8] = []
        let policy = e.policy?.render(lineEnding: "\n")
        let hosts = e.mxHosts?.joined(separator: " ")
        var flags: UInt8 = 0
        for (bit, present) in [policy != nil, e.stsID != nil, e.failedID != nil, e.failedAt != nil, e.failure != nil, e.reason != nil, hosts != nil].enumerated() where present {
            flags |= 1 << UInt8(bit)
        }
        out.reserveCapacity(2 + (policy?.utf8.count ?? 0) + (e.stsID?.utf8.count ?? 0) + (hosts?.utf8.count ?? 0) + 32)
        out.append(flags)
        out.append(UInt8(e.dane.rawValue))
        func string(_ s: String?) {
            guard let s else { return }
            let count = UInt32(s.utf8.count)
            withUnsafeBytes(of: count.littleEndian) { out.append(contentsOf: $0) }
            out.append(contentsOf: s.utf8)
        }
        string(policy)
        string(e.stsID)
        string(e.failedID)
        if let failedAt = e.failedAt { withUnsafeBytes(of: failedAt.bitPattern.littleEndian) { out.append(contentsOf: $0) } }
        string(e.failure?.rawValue)
        string(e.reason)
        string(hosts)
        return out
    }

    static func unpack(_ bytes: [UInt8], domain: String, fetchedAt: Double, expiresAt: Double, checkedAt: Double, lastUsed: Double) -> CacheEntry? {
        guard bytes.count >= 2 else { return nil }
        let flags = bytes[0]
        var i = 2
        func has(_ bit: Int) -> Bool { flags & (1 << UInt8(bit)) != 0 }
        func integer<T: FixedWidthInteger>(_: T.Type) -> T? {
            guard bytes.count - i >= MemoryLayout<T>.size else { return nil }
            var value: T = 0
            for k in 0..<MemoryLayout<T>.size { value |= T(bytes[i + k]) << (8 * k) }
            i += MemoryLayout<T>.size
            return value
        }
        func string(_ bit: Int) -> String?? {
            guard has(bit) else { return .some(nil) }
            guard let count = integer(UInt32.self), bytes.count - i >= Int(count) else { return nil }
            defer { i += Int(count) }
            return String(decoding: bytes[i..<(i + Int(count))], as: UTF8.self)
        }
        guard let policyText = string(0), let stsID = string(1), let failedID = string(2) else { return nil }
        var failedAt: Double?
        if has(3) {
            guard let bits = integer(UInt64.self) else { return nil }
            failedAt = Double(bitPattern: bits)
        }
        guard let failure = string(4), let reason = string(5), let hosts = string(6) else { return nil }
        var policy: STSPolicy?
        if let policyText {
            guard let parsed = STSPolicy.parseCanonical(policyText) ?? STSPolicy.parse(policyText).policy else { return nil }
            policy = parsed
        }
        return CacheEntry(domain: domain, policy: policy, stsID: stsID, fetchedAt: fetchedAt, expiresAt: expiresAt, checkedAt: checkedAt,
                          failedID: failedID, failedAt: failedAt, failure: failure.map(ResultType.init), reason: reason,
                          dane: DANEState(rawValue: Int(bytes[1])) ?? .none,
                          mxHosts: hosts.map { $0.isEmpty ? [] : $0.split(separator: " ").map(String.init) }, lastUsed: lastUsed)
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
