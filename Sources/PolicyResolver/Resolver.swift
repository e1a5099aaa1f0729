import Foundation
import Logging
import ServerSupport
import MailDNS
import MTASTSCore
import MTASTSNet
import NIOConcurrencyHelpers
import NIOPosix

/// What a sender applies to a domain now.
public struct Resolution: Sendable {
    public enum Status: String, Sendable {
        /// A valid policy (any mode; the caller decides what testing and none mean).
        case policy
        /// No policy: no record, or a record whose policy could not be fetched or validated
        /// (`failure` says which; RFC 8461 §5: treated as no policy).
        case noPolicy = "no-policy"
        /// Our own failure (DNS SERVFAIL or time-out, a broken store): neither policy nor "none".
        case temporary
    }

    public enum Source: String, Sendable {
        case cache, fetched
    }

    public var status: Status
    public var domain: DomainName
    public var entry: CacheEntry?
    public var source: Source
    public var reason: String

    public init(status: Status, domain: DomainName, entry: CacheEntry?, source: Source, reason: String) {
        self.status = status
        self.domain = domain
        self.entry = entry
        self.source = source
        self.reason = reason
    }

    public var policy: STSPolicy? { status == .policy ? entry?.policy : nil }
    /// Why a policy the domain announced could not be used (for TLSRPT `policy_failure`).
    public var failure: ResultType? { status == .noPolicy ? entry?.failure : nil }
}

/// The RFC 8461 §3.3/§5 sender logic with a cache: DNS for `_mta-sts`, a strict HTTPS fetch,
/// a hot in-memory layer in front of an optional persistent store, negative caching, single
/// flight per domain, background refresh and proactive refresh.
public final class PolicyResolver: Sendable {
    public struct Settings: Sendable {
        /// How long "no policy" is remembered.
        public var negativeTTL: Double = 300
        /// How long "no policy" after a DNS failure is remembered (briefly: the next look-up
        /// after it asks DNS again).
        public var dnsFailureTTL: Double = 60
        /// A failed fetch is not retried for the same record id before this (RFC 8461 §5.1 asks
        /// senders not to hammer a failing host; 5 minutes).
        public var retryDelay: Double = 300
        /// A cached policy's `_mta-sts` record is looked at again in the background after this.
        public var recheckAfter: Double = 60
        /// Prefer DANE where every MX host has DNSSEC-validated TLSA records (RFC 8461 §2).
        public var danePrecedence: Bool = false
        /// The hot layer's size; the least recently used entries leave first.
        public var hotCapacity: Int = 100_000
        /// Proactive refresh (`refreshDue`, called by the daemon on its interval): how many
        /// fetches at once, and when an unused entry is dropped.
        public var refreshConcurrency: Int = 16
        /// Uncached resolutions (DNS, then the policy host) running at once, over all domains and
        /// connections: a burst of look-ups for new domains waits its turn instead of opening
        /// thousands of fetches.
        public var resolveConcurrency: Int = 256
        public var evictAfter: Double = 30 * 86_400
        /// A look-up waits no longer than this for DNS and the fetch together.
        public var timeout: Double = 10

        public init() {}
    }

    public let settings: Settings
    public let store: (any PolicyStore)?
    public let metrics: ResolverMetrics
    let dns: DNSResolver
    let fetcher: PolicyFetcher
    let clock: any PolicyClock
    let hot: NIOLockedValueBox<HotCache>
    let flights = NIOLockedValueBox<[String: Task<Resolution, Never>]>([:])
    /// Bounds the uncached resolutions running at once (`Settings.resolveConcurrency`).
    let limiter: AsyncLimiter
    /// Background record checks in flight, by domain: one at a time per domain.
    let refreshing = NIOLockedValueBox<[String: Task<Void, Never>]>([:])
    let logger: Logger

    public init(dns: DNSResolver, fetcher: PolicyFetcher, store: (any PolicyStore)?, settings: Settings = Settings(),
                clock: any PolicyClock = SystemClock(), metrics: ResolverMetrics = ResolverMetrics(), logger: Logger = Logger(label: "resolver")) {
        self.dns = dns
        self.fetcher = fetcher
        self.store = store
        self.settings = settings
        self.limiter = AsyncLimiter(limit: settings.resolveConcurrency)
        self.clock = clock
        self.metrics = metrics
        self.hot = NIOLockedValueBox(HotCache(capacity: settings.hotCapacity))
        self.logger = logger
    }

    // MARK: look-ups

    /// The answer from the hot layer when it has a valid one, without waiting (the socketmap
    /// server answers cache hits on its event loop). Schedules a background look at the record
    /// when the entry has not been checked for `recheckAfter`.
    public func cached(_ domain: DomainName) -> Resolution? {
        let now = clock.now()
        guard let entry = hot.withLockedValue({ $0.use(domain.text, at: now) }), entry.isValid(at: now) else { return nil }
        metrics.lookups.increment()
        metrics.hits.increment()
        if !entry.isNegative, now - entry.checkedAt >= settings.recheckAfter { refreshInBackground(domain) }
        return resolution(from: entry, domain: domain, source: .cache)
    }

    /// The policy for `domain`: from the cache when valid, else from DNS and the policy host.
    /// Look-ups of one domain at the same time share one fetch.
    public func resolve(_ domain: DomainName) async -> Resolution {
        if let hit = cached(domain) { return hit }
        metrics.lookups.increment()
        metrics.misses.increment()
        let task: Task<Resolution, Never> = flights.withLockedValue { flights in
            if let running = flights[domain.text] { return running }
            let task = Task { await self.limiter.run { await self.resolveUncached(domain) } }
            flights[domain.text] = task
            return task
        }
        let result = await task.value
        flights.withLockedValue { if $0[domain.text] == task { $0[domain.text] = nil } }
        return result
    }

    func resolution(from entry: CacheEntry, domain: DomainName, source: Resolution.Source) -> Resolution {
        if entry.isNegative {
            return Resolution(status: .noPolicy, domain: domain, entry: entry, source: source, reason: entry.reason ?? "no policy")
        }
        return Resolution(status: .policy, domain: domain, entry: entry, source: source, reason: "policy id \(entry.stsID ?? "?")")
    }

    func resolveUncached(_ domain: DomainName) async -> Resolution {
        let now = clock.now()
        var previous = hot.withLockedValue { $0.peek(domain.text) }
        if let store {
            do {
                let stored = try await blocking { try store.load(domain.text) }
                if let stored, stored.isValid(at: now) {
                    // Fetched by another daemon sharing the store, or before a restart.
                    hot.withLockedValue { $0.put(stored) }
                    metrics.storeHits.increment()
                    return resolution(from: stored, domain: domain, source: .cache)
                }
                previous = stored ?? previous
            } catch {
                metrics.storeErrors.increment()
                return Resolution(status: .temporary, domain: domain, entry: nil, source: .fetched, reason: "the policy cache (\(store.name)) failed: \(error)")
            }
        }
        let last = previous
        let outcome = await withDeadline(settings.timeout) { await self.discover(domain, previous: last, now: now) }
        guard let outcome else {
            metrics.fetchOutcomes.increment("timeout")
            return Resolution(status: .temporary, domain: domain, entry: nil, source: .fetched, reason: "looking up the policy of \(domain) took longer than \(Int(settings.timeout)) s")
        }
        switch outcome {
        case .temporary(let reason):
            return Resolution(status: .temporary, domain: domain, entry: nil, source: .fetched, reason: reason)
        case .entry(let entry):
            var used = entry
            used.lastUsed = now
            let entry = used
            hot.withLockedValue { $0.put(entry) }
            if let store {
                do { try await blocking { try store.save(entry) } } catch {
                    metrics.storeErrors.increment()
                    logger.error("cannot save the policy of \(domain) in the \(store.name) cache: \(error)")
                }
            }
            return resolution(from: entry, domain: domain, source: .fetched)
        }
    }

    enum Discovery: Sendable {
        case entry(CacheEntry)
        case temporary(String)
    }

    /// DNS, then the fetch; `previous` is an expired or negative entry, which says whether the
    /// fetch for this record id failed recently.
    func discover(_ domain: DomainName, previous: CacheEntry?, now: Double) async -> Discovery {
        let record: STSRecord
        switch await lookupRecord(domain) {
        case .temporary(let reason):
            // Nothing valid is cached (a valid policy never reaches here: it survives SERVFAIL
            // and time-outs, RFC 8461 §3.3/§5.1), so the domain is treated as having no policy,
            // as the reference daemon does: mail goes out at Postfix's own level instead of being
            // deferred until it bounces. Remembered briefly, logged and counted.
            metrics.fetchOutcomes.increment("dns-failure")
            logger.warning("the _mta-sts record of \(domain) could not be looked up (\(reason)); nothing is cached: no policy for \(Int(settings.dnsFailureTTL)) s")
            return .entry(negative(domain, now: now, ttl: settings.dnsFailureTTL, failure: nil,
                                   reason: "DNS failed (\(reason)); with nothing cached this is no policy (RFC 8461 §3.3)", id: nil))
        case .none(let reason):
            metrics.fetchOutcomes.increment("no-record")
            return .entry(negative(domain, now: now, ttl: settings.negativeTTL, failure: nil, reason: reason, id: nil))
        case .record(let r): record = r
        }
        if let previous, previous.isNegative, previous.failedID == record.id, let failedAt = previous.failedAt, now - failedAt < settings.retryDelay {
            var kept = previous
            kept.expiresAt = failedAt + settings.retryDelay
            return .entry(kept)
        }
        switch await fetch(domain) {
        case .failure(let type, let reason):
            metrics.fetchOutcomes.increment(type.rawValue)
            logger.warning("policy of \(domain) (id \(record.id)) not usable: \(type.rawValue): \(reason)")
            return .entry(negative(domain, now: now, ttl: settings.retryDelay, failure: type, reason: reason, id: record.id))
        case .temporary(let reason):
            return .temporary(reason)
        case .policy(let policy):
            return .entry(await fetched(policy, domain: domain, id: record.id, now: now, lastUsed: now))
        }
    }

    /// The entry for a policy just fetched: max_age counts from now; DANE is looked at again.
    func fetched(_ policy: STSPolicy, domain: DomainName, id: String, now: Double, lastUsed: Double) async -> CacheEntry {
        metrics.fetchOutcomes.increment("success")
        let dane = policy.mode != .none && settings.danePrecedence ? await daneApplies(domain) : false
        return CacheEntry(domain: domain.text, policy: policy, stsID: id, fetchedAt: now, expiresAt: now + Double(policy.maxAge),
                          checkedAt: now, dane: dane, lastUsed: lastUsed)
    }

    func negative(_ domain: DomainName, now: Double, ttl: Double, failure: ResultType?, reason: String, id: String?) -> CacheEntry {
        CacheEntry(domain: domain.text, policy: nil, stsID: nil, fetchedAt: now, expiresAt: now + ttl, checkedAt: now,
                   failedID: id, failedAt: id == nil ? nil : now, failure: failure, reason: reason, lastUsed: now)
    }

    enum RecordLookup: Sendable {
        case record(STSRecord)
        case none(String)
        case temporary(String)
    }

    func lookupRecord(_ domain: DomainName) async -> RecordLookup {
        metrics.dnsQueries.increment()
        do {
            let answer = try await dns.txt(domain.stsRecordName)
            let strings = answer.records.map { $0.map { String(decoding: $0, as: UTF8.self) } }
            let (record, diagnostics) = STSRecord.select(strings)
            guard let record else {
                return .none("\(domain.stsRecordName) has no valid MTA-STS record: \(diagnostics.errors.first?.message ?? "none")")
            }
            return .record(record)
        } catch {
            if error.isNoRecords { return .none("\(domain.stsRecordName): \(error.kind.rawValue)") }
            metrics.fetchOutcomes.increment("dns-temporary")
            return .temporary("DNS: \(error.description)")
        }
    }

    enum Fetch: Sendable {
        case policy(STSPolicy)
        case failure(ResultType, String)
        case temporary(String)
    }

    func fetch(_ domain: DomainName) async -> Fetch {
        let host = domain.policyHost
        let addresses: [String]
        do {
            addresses = try await dns.addresses(host)
        } catch {
            // RFC 8461 §3.3: a policy host that cannot be reached is a fetch failure (no policy).
            return .failure(.stsPolicyFetchError, "the policy host \(host): \(error.description)")
        }
        guard !addresses.isEmpty else {
            return .failure(.stsPolicyFetchError, "the policy host \(host) has no address")
        }
        // Every address is tried (IPv4 first) while the host cannot be reached at all; once one
        // answers (TLS or HTTP), its answer is the answer.
        let ordered = addresses.filter { !$0.contains(":") } + addresses.filter { $0.contains(":") }
        var result = await fetcher.fetch(domain: domain, address: ordered[0])
        for (i, address) in ordered.enumerated() {
            if i > 0 { result = await fetcher.fetch(domain: domain, address: address) }
            let unreachable = result.failure != nil && result.status == nil && result.certificate == nil
            if !unreachable || i == ordered.count - 1 { break }
            logger.info("policy host \(host) at \(address) not reachable (\(result.failure?.reason ?? "")); trying the next address")
        }
        if let failure = result.failure { return .failure(failure.type, failure.reason) }
        guard let body = result.body else { return .failure(.stsPolicyFetchError, "no body") }
        guard result.isTextPlain else {
            // RFC 8461 §3.2: the policy is text/plain; like the reference daemon, anything else is refused.
            return .failure(.stsPolicyInvalid, "the policy is served as '\(result.contentType ?? "no Content-Type")', not text/plain")
        }
        let parsed = STSPolicy.parse(body)
        guard let policy = parsed.policy else {
            return .failure(.stsPolicyInvalid, parsed.diagnostics.errors.first.map { "line \($0.line ?? 0): \($0.message)" } ?? "invalid policy")
        }
        return .policy(policy)
    }

    /// RFC 8461 §2: where DANE applies, MTA-STS must not override it. True when the MX RRset and
    /// every MX host's `_25._tcp` TLSA RRset are DNSSEC-validated (AD) and non-empty.
    func daneApplies(_ domain: DomainName) async -> Bool {
        guard let mx = try? await dns.mx(domain.text), mx.authenticated, !mx.records.isEmpty else { return false }
        for record in mx.records {
            // Usable for SMTP: DANE-TA(2) or DANE-EE(3) (RFC 7672 §3.1.3); PKIX-TA/PKIX-EE (0/1)
            // records do not make DANE apply.
            guard let tlsa = try? await dns.tlsa("_25._tcp." + record.exchange), tlsa.authenticated,
                  tlsa.records.contains(where: { $0.usage == 2 || $0.usage == 3 }) else { return false }
        }
        return true
    }

    // MARK: refresh

    /// Looks at the record of a cached policy again, without the caller waiting.
    func refreshInBackground(_ domain: DomainName) {
        refreshing.withLockedValue { running in
            guard running[domain.text] == nil else { return }
            running[domain.text] = Task {
                await self.refreshNow(domain, force: false)
                _ = self.refreshing.withLockedValue { $0.removeValue(forKey: domain.text) }
            }
        }
    }

    /// Refreshes a cached policy: a changed record id triggers a fetch; `force` (proactive refresh
    /// before expiry) fetches even under the same id, which is the only thing that moves the
    /// expiry. A failed fetch keeps the cached policy and is not retried for the same id before
    /// the retry delay. A missing record keeps the policy too (RFC 8461 §5.1: a policy ends by
    /// expiring or by a new policy, not by a vanished record).
    /// A background check of the same domain in flight is waited for first, so the two never
    /// fetch the same policy twice.
    public func refresh(_ domain: DomainName, force: Bool) async {
        if let running = refreshing.withLockedValue({ $0[domain.text] }) { await running.value }
        await refreshNow(domain, force: force)
    }

    func refreshNow(_ domain: DomainName, force: Bool) async {
        let now = clock.now()
        var current = hot.withLockedValue { $0.peek(domain.text) }
        if let store, let stored = try? await blocking({ try store.load(domain.text) }) {
            if current == nil || stored.fetchedAt > current!.fetchedAt || stored.checkedAt > current!.checkedAt { current = stored }
        }
        guard var entry = current, !entry.isNegative else { return }
        guard entry.isValid(at: now) else { return }  // expired: the next look-up resolves afresh
        let record: STSRecord
        switch await lookupRecord(domain) {
        case .temporary(let reason):
            metrics.refreshFailures.increment()
            logger.warning("refresh of \(domain): \(reason)")
            return
        case .none:
            entry.checkedAt = now
            save(entry)
            return
        case .record(let r): record = r
        }
        entry.checkedAt = now
        let changed = record.id != entry.stsID
        if !changed && !force {
            save(entry)
            return
        }
        if record.id == entry.failedID, let failedAt = entry.failedAt, now - failedAt < settings.retryDelay {
            save(entry)
            return
        }
        metrics.refreshes.increment()
        switch await fetch(domain) {
        case .policy(let policy):
            entry = await fetched(policy, domain: domain, id: record.id, now: now, lastUsed: entry.lastUsed)
        case .failure(let type, let reason):
            metrics.fetchOutcomes.increment(type.rawValue)
            metrics.refreshFailures.increment()
            logger.warning("refresh of \(domain) (id \(record.id)): \(type.rawValue): \(reason); keeping the cached policy until \(Self.format(entry.expiresAt))")
            entry.failedID = record.id
            entry.failedAt = now
            entry.failure = type
            entry.reason = reason
        case .temporary(let reason):
            metrics.refreshFailures.increment()
            logger.warning("refresh of \(domain): \(reason)")
        }
        save(entry)
    }

    func save(_ entry: CacheEntry) {
        hot.withLockedValue { $0.put(entry) }
        guard let store else { return }
        Task {
            do { try await blocking { try store.save(entry) } } catch {
                metrics.storeErrors.increment()
                logger.error("cannot save the policy of \(entry.domain): \(error)")
            }
        }
    }

    /// One pass of proactive refresh: every cached policy past its refresh point (between half
    /// and three quarters of max_age after the fetch, spread by domain) is fetched again, a
    /// bounded number at once; entries unused for `evictAfter` are dropped. Returns how many
    /// were refreshed.
    @discardableResult
    public func refreshDue() async -> Int {
        let now = clock.now()
        let unusedBefore = now - settings.evictAfter
        // Candidates: from the store (a query, not the whole table) or the hot layer.
        let snapshot = hot.withLockedValue { $0.all() }
        var candidates = snapshot.filter { $0.policy != nil && $0.isValid(at: now) && now >= $0.fetchedAt + ($0.expiresAt - $0.fetchedAt) / 2 }
        if let store, let stored = try? await blocking({ try store.refreshCandidates(at: now) }) {
            var byDomain = Dictionary(candidates.map { ($0.domain, $0) }, uniquingKeysWith: { a, _ in a })
            for e in stored where byDomain[e.domain].map({ e.fetchedAt > $0.fetchedAt }) ?? true { byDomain[e.domain] = e }
            candidates = Array(byDomain.values)
        }
        let evict = snapshot.filter { now - $0.lastUsed > settings.evictAfter || ($0.isNegative && !$0.isValid(at: now)) }.map(\.domain)
        var evicted = evict.count
        if !evict.isEmpty { hot.withLockedValue { cache in evict.forEach { cache.remove($0) } } }
        if let store, let n = try? await blocking({ try store.evict(unusedBefore: unusedBefore, at: now) }) { evicted = max(evicted, n) }
        metrics.evictions.increment(by: evicted)
        let due = candidates.filter { e in
            now - e.lastUsed <= settings.evictAfter && now >= e.fetchedAt + (e.expiresAt - e.fetchedAt) * Self.spread(e.domain)
        }.compactMap { try? DomainName($0.domain) }
        let limit = max(1, settings.refreshConcurrency)
        await withTaskGroup(of: Void.self) { group in
            var running = 0
            for d in due {
                if running >= limit {
                    await group.next()
                    running -= 1
                }
                group.addTask { await self.refresh(d, force: true) }
                running += 1
            }
        }
        return due.count
    }

    /// Where in a policy's lifetime it is refreshed: 0.5…0.75 of max_age, fixed per domain, so a
    /// fleet of policies fetched at once is not refreshed at once.
    static func spread(_ domain: String) -> Double {
        var h: UInt32 = 2_166_136_261
        for b in domain.utf8 { h = (h ^ UInt32(b)) &* 16_777_619 }
        return 0.5 + Double(h % 1000) / 4000
    }

    /// Loads the persistent store into the hot layer (start-up): a restarted daemon answers from
    /// the cache at once.
    @discardableResult
    public func warm() async throws(StorageErrorBox) -> Int {
        guard let store else { return 0 }
        let now = clock.now()
        let limit = settings.hotCapacity
        let valid: [CacheEntry]
        do { valid = try await blocking { try store.recent(limit: limit, validAt: now) } } catch let e as StorageErrorBox { throw e } catch { throw StorageErrorBox("\(error)") }
        hot.withLockedValue { cache in valid.forEach { cache.put($0) } }
        return valid.count
    }

    /// Writes the coarse last-use times of the hot layer to the store (for eviction across restarts).
    public func flushUse() async {
        guard let store else { return }
        let used = hot.withLockedValue { $0.takeUsed() }
        guard !used.isEmpty else { return }
        let now = clock.now()
        try? await blocking { try store.touch(used, at: now) }
    }

    public var hotCount: Int { hot.withLockedValue { $0.count } }

    static func format(_ time: Double) -> String {
        RFC3339.format(Int64(time))
    }
}

/// Runs a blocking call (the SQLite or PostgreSQL store) on the shared blocking pool.
func blocking<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await BlockingPool.shared.run(body)
}

/// Nil when `body` has not finished within `seconds` (it goes on in the background and its
/// result, a cache entry, is still saved by whoever awaits it next).
func withDeadline<T: Sendable>(_ seconds: Double, _ body: @escaping @Sendable () async -> T) async -> T? {
    let pending = NIOLockedValueBox<CheckedContinuation<T?, Never>?>(nil)
    let timer = NIOLockedValueBox<Task<Void, Never>?>(nil)
    return await withCheckedContinuation { continuation in
        pending.withLockedValue { $0 = continuation }
        timer.withLockedValue {
            $0 = Task {
                try? await Task.sleep(for: .milliseconds(Int(seconds * 1000)))
                pending.withLockedValue { p in defer { p = nil }; return p }?.resume(returning: nil)
            }
        }
        Task {
            let value = await body()
            pending.withLockedValue { p in defer { p = nil }; return p }?.resume(returning: value)
            timer.withLockedValue { $0 }?.cancel()
        }
    }
}
