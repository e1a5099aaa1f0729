import Foundation
import MailDNS
import MTASTSCore
import MTASTSNet
import NIOCore
@testable import PolicyResolver
import Storage
import Testing
import TestSupport

/// The hot layer's arena and lock-free reader: what it returns, what it drops, and that readers
/// racing writers that replace, remove, evict and move records never see a reply that is not
/// the domain's own.
@Suite struct HotCacheTests {
    static let policy = STSPolicy.parse("version: STSv1\nmode: enforce\nmx: mx.example.net\nmx: *.backup.example.net\nmax_age: 86400\n").policy!

    static func entry(_ domain: String, id: String = "1", at t: Double = 1_000, negative: Bool = false, lastUsed: Double? = nil) -> CacheEntry {
        CacheEntry(domain: domain, policy: negative ? nil : policy, stsID: negative ? nil : id, fetchedAt: t, expiresAt: t + 86_400,
                   checkedAt: t, lastUsed: lastUsed ?? t)
    }

    static func reply(_ domain: String, _ id: String) -> ByteBuffer {
        ByteBuffer(string: "OK secure match=\(domain) id=\(id)")
    }

    @Test("put, hit, keep (in place and in a new record), replace, remove; peek decodes the whole entry")
    func basics() throws {
        let cache = HotCache(capacity: 100)
        #expect(cache.hit("a.example", zone: "z", generation: 1, at: 1_000) == nil)
        let a = Self.entry("a.example")
        cache.put(a)
        let first = try #require(cache.hit("a.example", zone: "z", generation: 1, at: 1_000))
        #expect(first.reply == nil && first.expiresAt == 87_400 && !first.negative)
        #expect(cache.peek("a.example") == a)
        // A reply that fits the room kept for it is written in place, whatever its zone.
        let before = cache.arenaBytes
        cache.keep(Self.reply("a.example", "0"), "a.example", zone: "postfix", generation: 1, renderedFrom: a)
        #expect(cache.hit("a.example", zone: "postfix", generation: 1, at: 1_000)?.reply == Self.reply("a.example", "0"))
        cache.keep(Self.reply("a.example", "1"), "a.example", zone: "", generation: 1, renderedFrom: a)
        #expect(cache.hit("a.example", zone: "", generation: 1, at: 1_000)?.reply == Self.reply("a.example", "1"))
        #expect(cache.hit("a.example", zone: "postfix", generation: 1, at: 1_000)?.reply == nil)
        #expect(cache.arenaBytes == before)
        #expect(cache.hit("a.example", zone: "", generation: 2, at: 1_000)?.reply == nil)
        // Another zone's name: a new record; a reply larger than the room kept for it: likewise.
        let long = ByteBuffer(string: String(repeating: "x", count: 5_000))
        cache.keep(long, "a.example", zone: "strict", generation: 3, renderedFrom: a)
        #expect(cache.hit("a.example", zone: "strict", generation: 3, at: 1_000)?.reply == long)
        #expect(cache.peek("a.example") == a)
        // The same entry checked later: the check time changes in place and the reply stays.
        var checked = a
        checked.checkedAt = 1_500
        cache.put(checked)
        #expect(cache.hit("a.example", zone: "strict", generation: 3, at: 1_000)?.reply == long)
        #expect(cache.hit("a.example", zone: "strict", generation: 3, at: 1_000)?.checkedAt == 1_500)
        #expect(cache.peek("a.example") == checked)
                // A reply rendered from an older entry is not kept beside a newer one.
        let newer = Self.entry("a.example", id: "2", at: 2_000)
        cache.put(newer)
        cache.keep(Self.reply("a.example", "1"), "a.example", zone: "", generation: 1, renderedFrom: a)
        #expect(cache.hit("a.example", zone: "", generation: 1, at: 2_000)?.reply == nil)
        #expect(cache.putUnlessNewer(a) == newer)
        #expect(cache.count == 1)
        cache.put(Self.entry("b.example", negative: true))
        #expect(cache.hit("b.example", zone: "", generation: 1, at: 1_000)?.negative == true)
        cache.remove("a.example")
        #expect(cache.hit("a.example", zone: "", generation: 1, at: 2_000) == nil && cache.peek("a.example") == nil && cache.count == 1)
        // Names that differ only past a shared prefix, or by length, are distinct.
        cache.put(Self.entry("a.example.net"))
        #expect(cache.hit("a.example", zone: "", generation: 1, at: 1_000) == nil)
    }

    @Test("an entry packed and read back is the same: hosts named by a pattern or not, failures, negative, a policy with extensions")
    func packing() throws {
        let wild = try #require(STSPolicy.parse("version: STSv1\nmode: enforce\nmx: mx1.example\nmx: *.pool.example\nmax_age: 86400\n").policy)
        let ext = try #require(STSPolicy.parse("version: STSv1\nmode: testing\nmx: mx1.example\nmax_age: 86400\nfoo: bar\n").policy)
        let long = String(repeating: "r", count: 300)
        let entries = [
            CacheEntry(domain: "a.example", policy: wild, stsID: "20260101", fetchedAt: 1.5, expiresAt: 86_401.5, checkedAt: 3,
                       mxHosts: ["mx1.example", "a.pool.example", "b.pool.example"], lastUsed: 4),
            CacheEntry(domain: "b.example", policy: ext, stsID: "x", fetchedAt: 1, expiresAt: 2, checkedAt: 3, failedID: "y", failedAt: 7.25,
                       failure: .stsPolicyFetchError, reason: long, dane: .usable, mxHosts: ["mx1.example"], lastUsed: 4),
            CacheEntry(domain: "c.example", policy: nil, stsID: nil, fetchedAt: 1, expiresAt: 301, checkedAt: 1, failure: .stsPolicyInvalid,
                       reason: "no record", lastUsed: 1),
            CacheEntry(domain: "d.example", policy: wild, stsID: "1", fetchedAt: 1, expiresAt: 2, checkedAt: 3, mxHosts: [], lastUsed: 4),
        ]
        for e in entries {
            let packed = PackedEntry.pack(e)
            #expect(PackedEntry.unpack(packed, domain: e.domain, fetchedAt: e.fetchedAt, expiresAt: e.expiresAt, checkedAt: e.checkedAt, lastUsed: e.lastUsed) == e)
            // Cut short, it is refused, never misread.
            for end in 0..<packed.count {
                #expect(PackedEntry.unpack(Array(packed[..<end]), domain: e.domain, fetchedAt: 0, expiresAt: 0, checkedAt: 0, lastUsed: 0) == nil)
            }
        }
        // A host named by a pattern takes one byte.
        var one = entries[3], none = entries[3]
        one.mxHosts = ["mx1.example"]
        none.mxHosts = []
        #expect(PackedEntry.pack(one).count == PackedEntry.pack(none).count + 1)
    }

    @Test("the room kept for a reply is the size of the default zone's reply")
    func replyRoom() throws {
        let wild = try #require(STSPolicy.parse("version: STSv1\nmode: enforce\nmx: mx1.example\nmx: *.pool.example\nmax_age: 86400\n").policy)
        func room(_ hosts: [String]?) -> Int {
            HotCache.replyRoom(CacheEntry(domain: "a.example", policy: wild, stsID: "1", fetchedAt: 0, expiresAt: 1, checkedAt: 0, mxHosts: hosts, lastUsed: 0))
        }
        func netstring(_ s: String) -> Int { s.utf8.count + String(s.utf8.count).utf8.count + 2 }
        #expect(room(["mx1.example", "a.pool.example"]) == netstring("OK secure match=a.pool.example:mx1.example servername=hostname"))
        #expect(room(["mx1.example"]) == netstring("OK secure match=mx1.example servername=hostname"))
        let many = (0..<40).map { "host\($0).pool.example" }
        #expect(room(many) == netstring("OK secure match=" + (["mx1.example"] + many).sorted().joined(separator: ":") + " servername=hostname"))
    }

    @Test("past the capacity a tenth leaves, negative entries first, then the least recently used; use marks are taken once")
    func eviction() {
        let cache = HotCache(capacity: 20)
        for k in 0..<10 { cache.put(Self.entry("n\(k).example", negative: true, lastUsed: 5_000)) }
        for k in 0..<10 { cache.put(Self.entry("p\(k).example", lastUsed: Double(1_000 + k))) }
        cache.put(Self.entry("p10.example", lastUsed: 9_000))  // 21 > 20: two leave
        #expect(cache.count == 19)
        #expect((0..<10).filter { cache.peek("n\($0).example") != nil }.count == 8)
        #expect((0..<11).allSatisfy { cache.peek("p\($0).example") != nil })
        _ = cache.hit("p3.example", zone: "", generation: 0, at: 10_000)
        _ = cache.hit("p4.example", zone: "", generation: 0, at: 10_030)
        _ = cache.hit("p4.example", zone: "", generation: 0, at: 10_040)
        #expect(Set(cache.takeUsed()) == ["p3.example", "p4.example"])
        #expect(cache.takeUsed().isEmpty)
        #expect(cache.peek("p3.example")?.lastUsed == 10_000)
        #expect(cache.domains { _, lastUsed, _ in lastUsed >= 10_000 }.sorted() == ["p3.example", "p4.example"])
    }

    @Test("a small region: replaced records are moved together (compaction) and every entry and reply survives it")
    func compaction() throws {
        let cache = HotCache(capacity: 2_000, regionBytes: 1 << 20)
        for round in 0..<20 {
            for k in 0..<500 {
                let e = Self.entry("d\(k).example", id: "\(round)", at: Double(1_000 + round))
                cache.put(e)
                cache.keep(Self.reply("d\(k).example", "\(round)"), "d\(k).example", zone: "", generation: 1, renderedFrom: e)
            }
        }
        #expect(cache.compactions > 0)
        #expect(cache.count == 500)
        for k in 0..<500 {
            #expect(cache.hit("d\(k).example", zone: "", generation: 1, at: 1_100)?.reply == Self.reply("d\(k).example", "19"))
            #expect(cache.peek("d\(k).example")?.stsID == "19")
        }
    }

    /// Puts an entry for each domain and keeps its reply (`id=1`) for the default zone.
    static func putWithReplies(_ cache: HotCache, _ domains: [String]) {
        for d in domains {
            let e = entry(d)
            cache.put(e)
            cache.keep(reply(d, "1"), d, zone: "", generation: 1, renderedFrom: e)
        }
    }

    /// Three readers without a lock asking for `domains` in turn until `stop`: hits, misses (no
    /// entry or no kept reply), and replies `right` says are not the domain's.
    static func readers(_ cache: HotCache, _ domains: [String], stop: ManagedFlag,
                        right: @escaping @Sendable (String, String) -> Bool) -> [Task<(Int, Int, Int), Never>] {
        (0..<3).map { r in
            Thread.detachedResult {
                var hits = 0, missed = 0, wrong = 0
                var k = r * 7
                while !stop.isSet {
                    let d = domains[k % domains.count]
                    k &+= 13
                    guard let hit = cache.hit(d, zone: "", generation: 1, at: 2_000), let reply = hit.reply else {
                        missed += 1
                        continue
                    }
                    hits += 1
                    if !right(d, String(buffer: reply)) { wrong += 1 }
                }
                return (hits, missed, wrong)
            }
        }
    }

    static func total(_ readers: [Task<(Int, Int, Int), Never>]) async -> (hits: Int, missed: Int, wrong: Int) {
        var sum = (hits: 0, missed: 0, wrong: 0)
        for reader in readers {
            let (h, m, w) = await reader.value
            sum.hits += h
            sum.missed += m
            sum.wrong += w
        }
        return sum
    }

    @Test("the index grows with the entries, not with the capacity, while readers without a lock find every entry that stays")
    func growingIndex() async throws {
        let cache = HotCache(capacity: 100_000)
        #expect(cache.indexSlots == HotCache.initialSlots)
        let stable = (0..<100).map { "s\($0).example" }
        Self.putWithReplies(cache, stable)
        let stop = ManagedFlag()
        let readers = Self.readers(cache, stable, stop: stop) { d, text in text == "OK secure match=\(d) id=1" }
        for k in 0..<900 { cache.put(Self.entry("g\(k).example")) }
        #expect(cache.indexSlots == 2_048)  // 1,000 entries: at most half full
        for k in 900..<30_000 { cache.put(Self.entry("g\(k).example")) }
        stop.set()
        let (hits, missed, wrong) = await Self.total(readers)
        #expect(cache.growths == 6)  // 1,024 → 65,536 for 30,100 entries
        #expect(cache.indexSlots == 65_536)
        #expect(hits > 100)
        #expect(missed == 0)
        #expect(wrong == 0)
        #expect(cache.count == 30_100)
        #expect((0..<30_000).allSatisfy { cache.hit("g\($0).example", zone: "", generation: 1, at: 2_000) != nil })
    }

    @Test("readers without a lock racing a writer that replaces, removes, evicts and compacts: every reply is the domain's own")
    func racingReaders() async throws {
        let cache = HotCache(capacity: 3_000, regionBytes: 2 << 20)
        let domains = (0..<2_000).map { "r\($0).example" }
        Self.putWithReplies(cache, domains)
        let stop = ManagedFlag()
        // (Removed and evicted domains are missed: that is not counted against the cache here.)
        let readers = Self.readers(cache, domains, stop: stop) { d, text in text.hasPrefix("OK secure match=\(d) id=") }
        var version = 1
        let end = Date().addingTimeInterval(2)
        while Date() < end {
            version += 1
            for (i, d) in domains.enumerated() where i % 3 == version % 3 {
                let e = Self.entry(d, id: "\(version)", at: Double(1_000 + version))
                cache.put(e)
                // Replies of every size: in place, or a new record.
                let pad = String(repeating: "p", count: (i * version) % 300)
                cache.keep(ByteBuffer(string: "OK secure match=\(d) id=\(version) \(pad)"), d, zone: "", generation: 1, renderedFrom: e)
            }
            cache.remove(domains.filter { $0.hasSuffix("7.example") })
            for k in 0..<200 { cache.put(Self.entry("extra\(version)-\(k).example", negative: true)) }
        }
        stop.set()
        let (hits, _, wrong) = await Self.total(readers)
        #expect(cache.compactions > 0)
        #expect(hits > 1_000)
        #expect(wrong == 0)
    }
}

/// A flag set once, read by other threads.
final class ManagedFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var value = false
    var isSet: Bool { lock.withLock { value } }
    func set() { lock.withLock { value = true } }
}

extension Thread {
    /// Runs `body` on a thread of its own (not the cooperative pool), its result awaited.
    static func detachedResult<T: Sendable>(_ body: @escaping @Sendable () -> T) -> Task<T, Never> {
        let box = ResultBox<T>()
        let thread = Thread {
            box.finish(body())
        }
        thread.start()
        return Task { await box.value() }
    }
}

final class ResultBox<T: Sendable>: @unchecked Sendable {
    private let lock = NSLock()
    private var result: T?
    private var waiter: CheckedContinuation<T, Never>?
    func finish(_ value: T) {
        lock.lock()
        if let waiter {
            self.waiter = nil
            lock.unlock()
            waiter.resume(returning: value)
        } else {
            result = value
            lock.unlock()
        }
    }
    func value() async -> T {
        await withCheckedContinuation { c in
            lock.lock()
            if let result {
                lock.unlock()
                c.resume(returning: result)
            } else {
                waiter = c
                lock.unlock()
            }
        }
    }
}

/// The warm start's slices: down the (last_used, domain) index from where the previous one ended,
/// every valid entry once, most recent first, ties by domain; SQLite and PostgreSQL alike.
@Suite struct RecentSlicesTests {
    func walk(_ store: any PolicyStore) throws {
        let policy = HotCacheTests.policy
        // 2,500 entries, last uses in 50 groups of ties, 100 of them expired.
        for k in 0..<2_500 {
            let expires: Double = k % 25 == 0 ? 500 : 90_000
            try store.save(CacheEntry(domain: "s\(k).example", policy: policy, stsID: "1", fetchedAt: 100, expiresAt: expires, checkedAt: 100,
                                      lastUsed: Double(1_000 + k % 50)))
        }
        var seen: [CacheEntry] = []
        var before: (lastUsed: Double, domain: String)?
        while true {
            let slice = try store.recent(limit: 300, before: before, validAt: 1_000)
            seen += slice.entries
            #expect(slice.rows == slice.entries.count)
            guard slice.rows == 300, let last = slice.last else { break }
            #expect(last.domain == slice.entries.last?.domain)
            before = last
        }
        #expect(seen.count == 2_400)
        #expect(Set(seen.map(\.domain)).count == 2_400)
        let order = seen.map { ($0.lastUsed, $0.domain) }
        #expect(zip(order, order.dropFirst()).allSatisfy { a, b in a.0 > b.0 || (a.0 == b.0 && a.1 > b.1) })
        #expect(seen.allSatisfy { $0.expiresAt > 1_000 })
    }

    @Test func sqlite() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("recent-\(UUID().uuidString.prefix(8)).db").path
        try walk(try SQLitePolicyStore(path: path))
    }

    @Test func postgres() throws {
        let pg = try PostgresServer()
        try walk(try PostgresPolicyStore(dsn: pg.dsn))
    }

    /// A row that no longer decodes, read last in a slice, is skipped; the next slice starts after
    /// it, and the warm start goes on to the rest (the cursor was once taken from the last
    /// decoded entry: such a slice looked short and ended the warm start there).
    @Test func warmReadsPastAnUndecodableRow() async throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("warm-\(UUID().uuidString.prefix(8)).db").path
        let store = try SQLitePolicyStore(path: path)
        for k in 0..<1_500 {
            try store.save(CacheEntry(domain: "w\(k).example", policy: HotCacheTests.policy, stsID: "1", fetchedAt: 100, expiresAt: 90_000,
                                      checkedAt: 100, lastUsed: Double(1_000 + k)))
        }
        // Most recent first: the 1,000th row of the first slice is w500.
        _ = try SQLiteDatabase(path: path).query("UPDATE sts_policy_cache SET policy = 'not a policy' WHERE domain = 'w500.example'")
        let first = try store.recent(limit: 1_000, before: nil, validAt: 1_000)
        #expect(first.rows == 1_000)
        #expect(first.entries.count == 999)
        #expect(first.last?.domain == "w500.example")
        let fetcher = PolicyFetcher(checker: try CertificateChecker(systemRoots: false, extraPEMFiles: []), port: 9,
                                    connectTimeout: .seconds(1), deadline: .seconds(1))
        let resolver = PolicyResolver(dns: try DNSResolver(.init(server: "127.0.0.1:9", timeout: 1, tries: 1)), fetcher: fetcher, store: store,
                                      settings: PolicyResolver.Settings(), clock: ManualClock(1_000))
        #expect(try await resolver.warm() == 1_499)
        #expect(resolver.hotCount == 1_499)
    }
}
