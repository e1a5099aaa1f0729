import Foundation
import Atomics
import Logging
import ServerSupport
import MailDNS
import MTASTSCore
import MTASTSNet
import NIOConcurrencyHelpers
import NIOCore
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
        /// Background record checks (a hit on an entry not checked for `recheckAfter`) running at
        /// once: past it a due check waits for a later hit, so a busy cache whose DNS fails does
        /// not start a check per cached domain at once (memory, a flood of queries).
        public var recheckConcurrency: Int = 32
        /// Uncached resolutions (DNS, then the policy host) running at once, over all domains and
        /// connections: a burst of look-ups for new domains waits its turn instead of opening
        /// thousands of fetches.
        public var resolveConcurrency: Int = 256
        public var evictAfter: Double = 30 * 86_400
        /// A look-up waits no longer than this for the whole chain (queue, store, DNS, the fetch,
        /// DANE); past it the reply follows the rule for the step that was late, and the work goes
        /// on: its result serves the next query (`DaemonRuntime.budget` derives it from the
        /// configured time-outs).
        public var timeout: Double = 10
        /// A call to the persistent store waits no longer than this; a failed store is asked
        /// again after `storeRetryAfter` (meanwhile look-ups go live).
        public var storeTimeout: Double = 2
        public var storeRetryAfter: Double = 5

        public init() {}
    }

    public let settings: Settings
    public let store: (any PolicyStore)?
    public let metrics: ResolverMetrics
    let dns: DNSResolver
    let fetcher: PolicyFetcher
    let clock: any PolicyClock
    let hot: HotCache
    let flights = NIOLockedValueBox<[String: Flight]>([:])
    /// The store behind its time limits and breaker (nil for a memory-only cache).
    let guarded: StoreGuard?
    /// Bounds the uncached resolutions running at once (`Settings.resolveConcurrency`).
    let limiter: AsyncLimiter
    /// Background record checks in flight, by domain: one at a time per domain.
    let refreshing = NIOLockedValueBox<[String: Task<Void, Never>]>([:])
    /// Background checks running (the size of `refreshing`, read without its lock): a hit on a
    /// due entry while `recheckConcurrency` run takes no lock at all.
    let refreshesRunning = ManagedAtomic(0)
    /// Failed refreshes are logged at most a few a minute (DNS down: one line per cached domain
    /// would flood the log); `mtasts_refresh_failures_total` counts them all.
    let refreshWarnings = WarningLimiter(perWindow: 20, window: 60)
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
        self.hot = HotCache(capacity: settings.hotCapacity)
        self.logger = logger
        self.guarded = store.map {
            StoreGuard(store: $0, timeout: settings.storeTimeout, retryAfter: settings.storeRetryAfter, clock: clock,
                       logger: logger, failures: metrics.storeErrors)
        }
    }

    /// Waits for the store writes in flight (at most twice the store time limit): call before a
    /// short-lived process exits or at shutdown.
    public func drainWrites() async {
        await guarded?.drain(limit: settings.storeTimeout * 2)
    }

    /// False while the persistent store is failing (look-ups go live; writes are kept for later).
    public var storeUp: Bool { guarded?.isUp ?? true }

    // MARK: look-ups

    /// The answer from the hot layer when it has a valid one, without waiting (the socketmap
    /// server answers cache hits on its event loop). Schedules a background look at the record
    /// when the entry has not been checked for `recheckAfter`.
    public func cached(_ domain: DomainName) -> Resolution? {
        let now = clock.now()
        guard let entry = hot.use(domain.text, at: now), entry.isValid(at: now) else { return nil }
        metrics.lookups.increment()
        metrics.hits.increment()
        if !entry.isNegative, now - entry.checkedAt >= settings.recheckAfter { refreshInBackground(domain) }
        return resolution(from: entry, domain: domain, source: .cache)
    }

    /// How far an uncached look-up has come, for the answer at the deadline.
    enum Stage: Sendable {
        case queued, store, record, fetch, dane
    }

    struct Progress: Sendable {
        var stage = Stage.queued
        /// The store could not be read: a stored policy might be the answer.
        var storeDown = false
    }

    /// One uncached look-up of a domain, shared by every query for it while it runs.
    final class Flight: Sendable {
        let progress = NIOLockedValueBox(Progress())
        let task = NIOLockedValueBox<Task<Resolution, Never>?>(nil)
        func set(_ stage: Stage) { progress.withLockedValue { $0.stage = stage } }
    }

    /// The reply for a cached `domain` (its normalised text) as bytes rendered once per entry and
    /// `zone` under the caller's configuration `generation`: the socketmap hit path, without
    /// parsing the name or rendering the policy again. `render` makes the bytes on the first hit
    /// (nil: not kept, e.g. a TEMP reply). The bytes go to the end of `out`; true when they did,
    /// false (nothing appended) when the domain has no valid entry or no reply to keep. `domain`
    /// and `zone` are bytes of the request: no string is made on a hit whose reply is kept.
    public func cachedReply(_ domain: UnsafeRawBufferPointer, zone: UnsafeRawBufferPointer, generation: Int, into out: inout ByteBuffer,
                            render: (Resolution) -> ByteBuffer?) -> Bool {
        let now = clock.now()
        let mark = out.writerIndex
        guard let hit = hot.hit(domain, zone: zone, generation: generation, at: now, into: &out), now < hit.expiresAt else {
            out.moveWriterIndex(to: mark)
            return false
        }
        metrics.lookups.increment()
        metrics.hits.increment()
        if !hit.negative, now - hit.checkedAt >= settings.recheckAfter {
            let text = String(decoding: domain, as: UTF8.self)
            refreshInBackground(text) { try? DomainName(text) }
        }
        if hit.replied { return true }
        // The first hit for this zone: render from the entry, keep the bytes with it.
        let text = String(decoding: domain, as: UTF8.self), zoneText = String(decoding: zone, as: UTF8.self)
        guard let entry = hot.peek(text), let name = try? DomainName(text),
              var rendered = render(resolution(from: entry, domain: name, source: .cache)) else { return false }
        hot.keep(rendered, text, zone: zoneText, generation: generation, renderedFrom: entry)
        out.writeBuffer(&rendered)
        return true
    }

    /// The pool that reads the store for look-ups that miss the hot layer (its threads start
    /// when such look-ups come).
    static let storeReaders = BlockingPool(threads: 4)

    /// A look-up that missed the hot layer, read from the store by a pool of readers (an SQLite
    /// store reads on connections of its own beside the writer): a policy still valid there goes
    /// into the hot layer and its reply is rendered and kept, as on a hit; no task, no flight, no
    /// parse of the request. Nil bytes: not stored, expired, not to be kept (`render` said nil),
    /// or the read failed or took longer than the store's time limit: the caller takes the
    /// ordinary path (`resolve`), which fetches. Nil when the store has no concurrent readers or
    /// is failing.
    public func storedReply(_ domain: String, zone: String, generation: Int, on loop: any EventLoop,
                            render: @escaping @Sendable (Resolution) -> ByteBuffer?) -> EventLoopFuture<ByteBuffer?>? {
        guard let store, store.concurrentReads, storeUp else { return nil }
        let promise = loop.makePromise(of: ByteBuffer?.self)
        let done = ManagedAtomic(false)
        let finish: @Sendable (ByteBuffer?) -> Void = { bytes in
            if done.compareExchange(expected: false, desired: true, ordering: .acquiringAndReleasing).exchanged { promise.succeed(bytes) }
        }
        let timer = loop.scheduleTask(in: .nanoseconds(Int64(settings.storeTimeout * 1e9))) { finish(nil) }
        Self.storeReaders.submit { active in
            defer { timer.cancel() }
            guard active, let stored = try? store.load(domain), let name = try? DomainName(domain) else { return finish(nil) }
            let now = self.clock.now()
            guard stored.isValid(at: now) else { return finish(nil) }
            // A newer entry that reached the hot layer meanwhile (a fetch) is the one used.
            let entry = self.hot.putUnlessNewer(stored)
            self.metrics.lookups.increment()
            self.metrics.misses.increment()
            self.metrics.storeHits.increment()
            if !entry.isNegative, now - entry.checkedAt >= self.settings.recheckAfter { self.refreshInBackground(name) }
            guard let bytes = render(self.resolution(from: entry, domain: name, source: .cache)) else { return finish(nil) }
            self.hot.keep(bytes, domain, zone: zone, generation: generation, renderedFrom: entry)
            finish(bytes)
        }
        return promise.futureResult
    }

    /// A cached policy with a wildcard `mx` whose MX hosts were never looked up (an entry written
    /// by an older version, or whose MX look-up failed at the fetch): looks them up now and keeps
    /// them, so the reply can list the hosts the wildcard covers instead of deferring the mail.
    public func withMXHosts(_ resolution: Resolution) async -> Resolution {
        guard resolution.status == .policy, var entry = resolution.entry, let policy = entry.policy, entry.mxHosts == nil,
              policy.mx.contains(where: \.isWildcard) else { return resolution }
        (entry.mxHosts, entry.dane) = await mxAndDANE(resolution.domain, policy: policy, previous: entry)
        guard entry.mxHosts != nil else { return resolution }
        save(entry)
        var updated = resolution
        updated.entry = entry
        return updated
    }

    /// The policy for `domain`: from the cache when valid, else from DNS and the policy host.
    /// Look-ups of one domain at the same time share one flight. A caller waits at most
    /// `settings.timeout` (the flight's whole chain, queue included); a late flight goes on, and
    /// what it finds is cached for the next query.
    public func resolve(_ domain: DomainName) async -> Resolution {
        if let hit = cached(domain) { return hit }
        metrics.lookups.increment()
        metrics.misses.increment()
        let flight: Flight = flights.withLockedValue { flights in
            if let running = flights[domain.text] { return running }
            let flight = Flight()
            let id = ObjectIdentifier(flight)
            // The task holds its flight weakly: the flight holds the task, and a strong reference
            // back would keep both (and the resolution) alive for ever.
            flight.task.withLockedValue {
                $0 = Task { [weak flight] in
                    let result = await self.limiter.run { await self.resolveUncached(domain, flight ?? Flight()) }
                    self.flights.withLockedValue { if let f = $0[domain.text], ObjectIdentifier(f) == id { $0[domain.text] = nil } }
                    return result
                }
            }
            flights[domain.text] = flight
            return flight
        }
        guard let task = flight.task.withLockedValue({ $0 }) else { return atDeadline(domain, flight) }
        if let result = await withDeadline(settings.timeout, { await task.value }) { return result }
        return atDeadline(domain, flight)
    }

    /// The answer when the chain is not done in time: the rule for the failure the late step
    /// stands for. Still queued or reading the store: a stored policy might be the answer, so
    /// `TEMP`. Late DNS for the record: a DNS failure with nothing cached, "no policy" (RFC 8461
    /// §3.3). A late fetch: a fetch failure, "no policy" with `sts-policy-fetch-error` (§5). Late
    /// DANE look-ups: `TEMP`, as Postfix's own DANE. With the store down, every late step is
    /// `TEMP` (a stored policy might be the answer).
    func atDeadline(_ domain: DomainName, _ flight: Flight) -> Resolution {
        let progress = flight.progress.withLockedValue { $0 }
        let late = "looking up the policy of \(domain) took longer than \(settings.timeout.clean) s"
        metrics.fetchOutcomes.increment("timeout")
        logger.warning("\(late) (at: \(progress.stage)); the look-up goes on and its result serves the next query")
        let temporary = Resolution(status: .temporary, domain: domain, entry: nil, source: .fetched, reason: late)
        if progress.storeDown { return temporary }
        let now = clock.now()
        switch progress.stage {
        case .queued, .store, .dane:
            return temporary
        case .record:
            return resolution(from: negative(domain, now: now, ttl: 0, failure: nil, reason: "\(late) (DNS); with nothing cached this is no policy (RFC 8461 §3.3)", id: nil),
                              domain: domain, source: .fetched)
        case .fetch:
            return resolution(from: negative(domain, now: now, ttl: 0, failure: .stsPolicyFetchError, reason: "\(late) (fetching the policy)", id: nil),
                              domain: domain, source: .fetched)
        }
    }

    func resolution(from entry: CacheEntry, domain: DomainName, source: Resolution.Source) -> Resolution {
        if entry.isNegative {
            return Resolution(status: .noPolicy, domain: domain, entry: entry, source: source, reason: entry.reason ?? "no policy")
        }
        return Resolution(status: .policy, domain: domain, entry: entry, source: source, reason: "policy id \(entry.stsID ?? "?")")
    }

    func resolveUncached(_ domain: DomainName, _ flight: Flight = Flight()) async -> Resolution {
        let now = clock.now()
        var previous = hot.peek(domain.text)
        var storeDown = false
        if let guarded {
            flight.set(.store)
            switch await guarded.call({ try $0.load(domain.text) }) {
            case .success(let stored):
                if let stored, stored.isValid(at: now) {
                    // Fetched by another daemon sharing the store, or before a restart.
                    hot.put(stored)
                    metrics.storeHits.increment()
                    return resolution(from: stored, domain: domain, source: .cache)
                }
                previous = stored ?? previous
            case .failure(let failure):
                // Degraded: resolved live. Only where a stored policy might be the answer and
                // nothing could be fetched is the reply TEMP (below).
                storeDown = true
                flight.progress.withLockedValue { $0.storeDown = true }
                logger.debug("policy cache \(failure); resolving \(domain) live")
            }
        }
        let outcome = await discover(domain, previous: previous, now: now, flight: flight)
        switch outcome {
        case .temporary(let reason):
            return Resolution(status: .temporary, domain: domain, entry: nil, source: .fetched, reason: reason)
        case .entry(let entry), .dnsFailed(let entry):
            if storeDown, entry.failure != nil || outcome.isDNSFailure {
                // A DNS failure or an unusable policy while the store cannot be read: the store
                // may hold a valid policy, which such failures do not end (RFC 8461 §3.3/§5.1).
                return Resolution(status: .temporary, domain: domain, entry: nil, source: .fetched,
                                  reason: "the policy cache is unavailable and \(domain) could not be resolved live: \(entry.reason ?? "")")
            }
            var used = entry
            used.lastUsed = now
            let entry = used
            hot.put(entry)
            // Written without the reply waiting (kept for later while the store is down).
            guarded?.save(entry)
            return resolution(from: entry, domain: domain, source: .fetched)
        }
    }

    enum Discovery: Sendable {
        case entry(CacheEntry)
        /// "No policy" because DNS failed with nothing cached (§3.3), remembered briefly.
        case dnsFailed(CacheEntry)
        case temporary(String)

        var isDNSFailure: Bool { if case .dnsFailed = self { return true } else { return false } }
    }

    /// DNS, then the fetch; `previous` is an expired or negative entry, which says whether the
    /// fetch for this record id failed recently.
    func discover(_ domain: DomainName, previous: CacheEntry?, now: Double, flight: Flight? = nil) async -> Discovery {
        let record: STSRecord
        flight?.set(.record)
        switch await lookupRecord(domain) {
        case .temporary(let reason):
            // Nothing valid is cached (a valid policy never reaches here: it survives SERVFAIL
            // and time-outs, RFC 8461 §3.3/§5.1), so the domain is treated as having no policy,
            // as the reference daemon does: mail goes out at Postfix's own level instead of being
            // deferred until it bounces. Remembered briefly, logged and counted.
            metrics.fetchOutcomes.increment("dns-failure")
            logger.warning("the _mta-sts record of \(domain) could not be looked up (\(reason)); nothing is cached: no policy for \(Int(settings.dnsFailureTTL)) s")
            return .dnsFailed(negative(domain, now: now, ttl: settings.dnsFailureTTL, failure: nil,
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
        flight?.set(.fetch)
        switch await fetch(domain) {
        case .failure(let type, let reason):
            metrics.fetchOutcomes.increment(type.rawValue)
            logger.warning("policy of \(domain) (id \(record.id)) not usable: \(type.rawValue): \(reason)")
            return .entry(negative(domain, now: now, ttl: settings.retryDelay, failure: type, reason: reason, id: record.id))
        case .temporary(let reason):
            return .temporary(reason)
        case .policy(let policy):
            flight?.set(.dane)
            return .entry(await fetched(policy, domain: domain, id: record.id, now: now, lastUsed: now, previous: previous))
        }
    }

    /// The entry for a policy just fetched: max_age counts from now; MX hosts and DANE are
    /// looked at again.
    func fetched(_ policy: STSPolicy, domain: DomainName, id: String, now: Double, lastUsed: Double, previous: CacheEntry?) async -> CacheEntry {
        metrics.fetchOutcomes.increment("success")
        var entry = CacheEntry(domain: domain.text, policy: policy, stsID: id, fetchedAt: now, expiresAt: now + Double(policy.maxAge),
                               checkedAt: now, lastUsed: lastUsed)
        (entry.mxHosts, entry.dane) = await mxAndDANE(domain, policy: policy, previous: previous)
        return entry
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
        let result = await fetcher.fetch(domain: domain, addresses: addresses) { address, reason in
            logger.info("policy host \(host) at \(address) not reachable (\(reason)); trying the next address")
        }
        switch result.senderOutcome {
        case .success(let policy): return .policy(policy)
        case .failure(let refusal): return .failure(refusal.type, refusal.reason)
        }
    }

    /// The domain's MX hosts (when the policy has a wildcard, or DANE is looked at) and its DANE
    /// state (DNSSEC zones, enforce policies; RFC 8461 §2: where DANE applies, MTA-STS must not
    /// override it). A failed look-up keeps what `previous` knew; with nothing known, DANE is
    /// `.temporary` (the reply is then TEMP, as Postfix's own DANE would be).
    func mxAndDANE(_ domain: DomainName, policy: STSPolicy, previous: CacheEntry?) async -> ([String]?, DANEState) {
        let wantDANE = settings.danePrecedence && policy.mode == .enforce
        guard wantDANE || policy.mx.contains(where: \.isWildcard) else { return (nil, .none) }
        let lastDANE = previous?.policy == nil ? nil : previous?.dane
        let hosts: [String]
        let mxAuthenticated: Bool
        do {
            let answer = try await dns.mx(domain.text)
            hosts = Self.mxHosts(answer.records)
            mxAuthenticated = answer.authenticated
        } catch {
            if error.isNoRecords {
                // RFC 5321 §5.1 / RFC 7672 §2.2.2: no MX, the domain itself is the host (its
                // addresses must then be validated, below).
                hosts = [domain.text]
                mxAuthenticated = true
            } else {
                logger.warning("MX of \(domain): \(error.description); keeping what was known")
                return (previous?.mxHosts, wantDANE ? lastDANE ?? .temporary : .none)
            }
        }
        guard wantDANE else { return (hosts, .none) }
        guard mxAuthenticated, !hosts.isEmpty else { return (hosts, .none) }
        let states = await withTaskGroup(of: DANEState.self) { group in
            for host in hosts { group.addTask { await self.hostDANE(host) } }
            return await group.reduce(into: [DANEState]()) { $0.append($1) }
        }
        if states.contains(.temporary) {
            if let lastDANE, lastDANE != .temporary {
                logger.warning("DANE of \(domain): a look-up failed; keeping the last known state (\(lastDANE))")
                return (hosts, lastDANE)
            }
            return (hosts, .temporary)
        }
        return (hosts, states.allSatisfy { $0 == .usable } ? .usable : .none)
    }

    static func mxHosts(_ records: [MXRecord]) -> [String] {
        var seen = Set<String>()
        return records.sorted { ($0.preference, $0.exchange) < ($1.preference, $1.exchange) }
            .map { record in
                let name = record.exchange.lowercased()
                return name.hasSuffix(".") ? String(name.dropLast()) : name
            }
            .filter { !$0.isEmpty && seen.insert($0).inserted }
    }

    /// DANE for one MX host as Postfix would find it: validated addresses and a validated TLSA
    /// RRset holding at least one usable record (DANE-TA(2) or DANE-EE(3), selector 0/1,
    /// matching type 0/1/2 with a digest of the right length; RFC 7672 §3.1.3, RFC 6698).
    func hostDANE(_ host: String) async -> DANEState {
        async let v4 = Result { () async throws(DNSError) -> DNSAnswer<String> in try await self.dns.a(host) }
        async let v6 = Result { () async throws(DNSError) -> DNSAnswer<String> in try await self.dns.aaaa(host) }
        async let records = Result { () async throws(DNSError) -> DNSAnswer<TLSARecord> in try await self.dns.tlsa("_25._tcp." + host) }
        var anyAddress = false
        for r in await [v4, v6] {
            switch r {
            case .success(let answer):
                guard answer.authenticated else { return .none }
                anyAddress = true
            case .failure(let e) where e.isNoRecords: continue
            case .failure: return .temporary
            }
        }
        guard anyAddress else { return .none }
        switch await records {
        case .failure(let e): return e.isNoRecords ? .none : .temporary
        case .success(let tlsa):
            guard tlsa.authenticated else { return .none }
            return tlsa.records.contains(where: Self.usable) ? .usable : .none
        }
    }

    static func usable(_ r: TLSARecord) -> Bool {
        guard r.usage == 2 || r.usage == 3, r.selector <= 1 else { return false }
        switch r.matchingType {
        case 0: return !r.data.isEmpty
        case 1: return r.data.count == 32
        case 2: return r.data.count == 64
        default: return false
        }
    }

    // MARK: refresh

    /// Looks at the record of a cached policy again, without the caller waiting.
    func refreshInBackground(_ domain: DomainName) {
        refreshInBackground(domain.text) { domain }
    }

    /// Starts a background check of `text` unless one runs for it or `recheckConcurrency` run
    /// already (the name is made only when one starts: the hit path calls this at every hit on a
    /// due entry).
    func refreshInBackground(_ text: String, _ name: () -> DomainName?) {
        guard refreshesRunning.load(ordering: .relaxed) < settings.recheckConcurrency else { return }
        refreshing.withLockedValue { running in
            guard running[text] == nil, running.count < settings.recheckConcurrency, let domain = name() else { return }
            refreshesRunning.wrappingIncrement(ordering: .relaxed)
            running[text] = Task {
                await self.refreshNow(domain, force: false)
                self.refreshing.withLockedValue { running in
                    running.removeValue(forKey: text)
                    self.refreshesRunning.wrappingDecrement(ordering: .relaxed)
                }
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
        var current = hot.peek(domain.text)
        if let guarded, case .success(let stored?) = await guarded.call({ try $0.load(domain.text) }) {
            if current == nil || stored.fetchedAt > current!.fetchedAt || stored.checkedAt > current!.checkedAt { current = stored }
        }
        guard var entry = current, !entry.isNegative else { return }
        guard entry.isValid(at: now) else { return }  // expired: the next look-up resolves afresh
        // The cached policy stays (a vanished record, the same id, a postponed or failed fetch):
        // its DANE branch and MX hosts are looked at again on every check, whatever the policy's
        // age, so withdrawn TLSA records give MTA-STS back at the next check. A new policy gets
        // that look in `fetched`.
        func keep(_ entry: CacheEntry) async {
            var entry = entry
            if let policy = entry.policy { (entry.mxHosts, entry.dane) = await mxAndDANE(domain, policy: policy, previous: entry) }
            save(entry)
        }
        let record: STSRecord
        switch await lookupRecord(domain) {
        case .temporary(let reason):
            metrics.refreshFailures.increment()
            refreshWarnings.warn(logger, "refresh of \(domain): \(reason)")
            // Not looked at again before `recheckAfter` (in memory only): with DNS down, the
            // hits on every cached domain would otherwise start checks without a pause.
            if !force {
                entry.checkedAt = now
                _ = hot.putUnlessNewer(entry)
            }
            return
        case .none:
            entry.checkedAt = now
            await keep(entry)
            return
        case .record(let r): record = r
        }
        entry.checkedAt = now
        let changed = record.id != entry.stsID
        if !changed && !force {
            await keep(entry)
            return
        }
        if record.id == entry.failedID, let failedAt = entry.failedAt, now - failedAt < settings.retryDelay {
            await keep(entry)
            return
        }
        metrics.refreshes.increment()
        switch await fetch(domain) {
        case .policy(let policy):
            save(await fetched(policy, domain: domain, id: record.id, now: now, lastUsed: entry.lastUsed, previous: entry))
            return
        case .failure(let type, let reason):
            metrics.fetchOutcomes.increment(type.rawValue)
            metrics.refreshFailures.increment()
            refreshWarnings.warn(logger, "refresh of \(domain) (id \(record.id)): \(type.rawValue): \(reason); keeping the cached policy until \(Self.format(entry.expiresAt))")
            entry.failedID = record.id
            entry.failedAt = now
            entry.failure = type
            entry.reason = reason
        case .temporary(let reason):
            metrics.refreshFailures.increment()
            refreshWarnings.warn(logger, "refresh of \(domain): \(reason)")
        }
        await keep(entry)
    }

    func save(_ entry: CacheEntry) {
        hot.put(entry)
        guarded?.save(entry)
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
        // Only the entries whose times call for it are decoded.
        var candidates = hot.entries { fetched, expires, _, _, negative in !negative && now < expires && now >= fetched + (expires - fetched) / 2 }
        if let guarded, case .success(let stored) = await guarded.call({ try $0.refreshCandidates(at: now) }) {
            var byDomain = Dictionary(candidates.map { ($0.domain, $0) }, uniquingKeysWith: { a, _ in a })
            for e in stored where byDomain[e.domain].map({ e.fetchedAt > $0.fetchedAt }) ?? true { byDomain[e.domain] = e }
            candidates = Array(byDomain.values)
        }
        let evictAfter = settings.evictAfter
        let evict = hot.domains { expires, lastUsed, negative in now - lastUsed > evictAfter || (negative && !(now < expires)) }
        var evicted = evict.count
        if !evict.isEmpty { hot.remove(evict) }
        if let guarded, case .success(let n) = await guarded.call({ try $0.evict(unusedBefore: unusedBefore, at: now) }) { evicted = max(evicted, n) }
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
        // In slices: the rows of a large cache are never all in memory beside the hot layer.
        let slice = 1_000
        var loaded = 0
        var last: (lastUsed: Double, domain: String)?
        while loaded < settings.hotCapacity {
            let limit = min(slice, settings.hotCapacity - loaded), before = last
            let slice: RecentSlice
            do { slice = try await blocking { try store.recent(limit: limit, before: before, validAt: now) } } catch let e as StorageErrorBox { throw e } catch { throw StorageErrorBox("\(error)") }
            hot.put(slice.entries)
            loaded += slice.entries.count
            guard slice.rows == limit, let end = slice.last else { break }
            last = end
        }
        return loaded
    }

    /// Writes the coarse last-use times of the hot layer to the store (for eviction across restarts).
    public func flushUse() async {
        guard let guarded else { return }
        let used = hot.takeUsed()
        guard !used.isEmpty else { return }
        let now = clock.now()
        _ = await guarded.call { try $0.touch(used, at: now) }
    }

    public var hotCount: Int { hot.count }

    static func format(_ time: Double) -> String {
        RFC3339.format(Int64(time))
    }
}

/// Runs a blocking call (the SQLite or PostgreSQL store) on the shared blocking pool.
func blocking<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await BlockingPool.shared.run(body)
}
