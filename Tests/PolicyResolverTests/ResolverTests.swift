import Foundation
import MailDNS
import MTASTSCore
import MTASTSNet
@testable import PolicyResolver
import Storage
import Testing
import TestSupport

/// The resolver on an injected clock against real components: dnsmasq (restarted on the same
/// port when a record changes) and HTTPS policy hosts whose answers the test changes.
final class Lab: @unchecked Sendable {
    let ca: TestCA
    let dir: URL
    let caFile: String
    let policyPort = TestServer.freePort()
    let dnsPort = UInt16(TestServer.freePort())
    var dns: DNSMasq?
    var servers: [TestServer] = []
    var boxes: [String: PolicyBox] = [:]
    var ids: [String: String] = [:]
    var addresses: [String: String] = [:]
    let base: Int

    static let counter = NSLock()
    nonisolated(unsafe) static var next = 100

    init() throws {
        ca = try TestCA()
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("mtasts-lab-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        caFile = try ca.writePEM(to: dir)
        base = Lab.counter.withLock { defer { Lab.next += 20 }; return Lab.next }
    }

    /// A domain with a policy host serving `policy` under record id `id`.
    func add(_ domain: String, id: String?, policy: String) throws {
        let address = "127.0.1.\(base + addresses.count)"
        addresses[domain] = address
        ids[domain] = id
        let box = PolicyBox(body: policy)
        boxes[domain] = box
        servers.append(try TestServer.policyHost(address: address, port: policyPort, leaf: ca.issue(dnsNames: ["mta-sts.\(domain)"]), behaviour: .dynamic(box)))
    }

    /// (Re)starts dnsmasq with the current records, on the same port.
    func publish(failing: [String] = []) throws {
        dns = nil
        var lines = ["log-queries"]
        for (domain, address) in addresses {
            lines.append("host-record=mta-sts.\(domain),\(address)")
            if let id = ids[domain] { lines.append("txt-record=_mta-sts.\(domain),\"v=STSv1; id=\(id);\"") }
        }
        dns = try DNSMasq(lines: lines, failing: failing, fixedPort: dnsPort)
    }

    func resolver(clock: ManualClock, store: (any PolicyStore)? = nil, settings: PolicyResolver.Settings = PolicyResolver.Settings()) throws -> PolicyResolver {
        // Generous time limits: these tests are about cache rules, not time-outs, and run beside
        // other suites (PostgreSQL, Postfix) on two cores, where a fetch can take seconds.
        let dns = try DNSResolver(.init(server: "127.0.0.1:\(dnsPort)", timeout: 5, tries: 2))
        let checker = try CertificateChecker(systemRoots: false, extraPEMFiles: [caFile])
        let fetcher = PolicyFetcher(checker: checker, port: policyPort, connectTimeout: .seconds(10), deadline: .seconds(20))
        var settings = settings
        settings.timeout = max(settings.timeout, 60)
        return PolicyResolver(dns: dns, fetcher: fetcher, store: store, settings: settings, clock: clock)
    }

    func txtQueries(_ domain: String) -> Int {
        dns?.log.components(separatedBy: "\n").filter { $0.contains("query[TXT] _mta-sts.\(domain) ") }.count ?? 0
    }
}

func policy(_ mode: String = "enforce", mx: String = "mx.example.test", maxAge: Int = 86_400) -> String {
    "version: STSv1\nmode: \(mode)\nmx: \(mx)\nmax_age: \(maxAge)\n"
}

@Suite(.serialized) struct ResolverTests {
    /// max_age counts from the fetch; a TXT check that finds the same id does not move it; a new
    /// id is fetched; expiry leads to a fresh fetch.
    @Test func maxAgeAndIDChange() async throws {
        let lab = try Lab()
        try lab.add("a.test", id: "one", policy: policy(mx: "mx1.a.test", maxAge: 3_600))
        try lab.publish()
        let clock = ManualClock()
        var settings = PolicyResolver.Settings()
        settings.recheckAfter = 60
        let resolver = try lab.resolver(clock: clock, settings: settings)
        let d = try DomainName("a.test")
        let first = await resolver.resolve(d)
        #expect(first.status == .policy && first.source == .fetched)
        #expect(first.policy?.mx.map(\.text) == ["mx1.a.test"])
        let expires = try #require(first.entry?.expiresAt)
        #expect(expires == clock.now() + 3_600)
        #expect(lab.boxes["a.test"]!.requests == 1)

        // Same id, checked after cache_grace: no fetch, expiry unchanged.
        clock.advance(120)
        #expect(resolver.cached(d)?.source == .cache)
        await resolver.refresh(d, force: false)
        #expect(lab.boxes["a.test"]!.requests == 1)
        #expect(resolver.cached(d)?.entry?.expiresAt == expires)
        #expect(resolver.cached(d)?.entry?.checkedAt == clock.now())

        // A new id and a new policy: fetched at the next check; the new max_age counts from now.
        lab.ids["a.test"] = "two"
        lab.boxes["a.test"]!.set(body: policy(mx: "mx2.a.test", maxAge: 7_200))
        try lab.publish()
        clock.advance(120)
        await resolver.refresh(d, force: false)
        #expect(lab.boxes["a.test"]!.requests == 2)
        let changed = try #require(resolver.cached(d))
        #expect(changed.policy?.mx.map(\.text) == ["mx2.a.test"])
        #expect(changed.entry?.stsID == "two")
        #expect(changed.entry?.expiresAt == clock.now() + 7_200)

        // Expired: the next look-up fetches again.
        clock.advance(7_201)
        #expect(resolver.cached(d) == nil)
        let again = await resolver.resolve(d)
        #expect(again.source == .fetched && again.status == .policy)
        #expect(lab.boxes["a.test"]!.requests == 3)
    }

    /// A failed fetch under a new id keeps the unexpired policy, and is not retried for the same
    /// id within 5 minutes; after that it is, and succeeds.
    @Test func fetchFailureKeepsCachedPolicy() async throws {
        let lab = try Lab()
        try lab.add("b.test", id: "one", policy: policy(mx: "mx.b.test"))
        try lab.publish()
        let clock = ManualClock()
        let resolver = try lab.resolver(clock: clock)
        let d = try DomainName("b.test")
        #expect(await resolver.resolve(d).status == .policy)
        lab.ids["b.test"] = "two"
        lab.boxes["b.test"]!.set(status: 500, body: "oops")
        try lab.publish()
        clock.advance(61)
        await resolver.refresh(d, force: false)
        #expect(lab.boxes["b.test"]!.requests == 2)
        let kept = try #require(resolver.cached(d))
        #expect(kept.status == .policy && kept.entry?.stsID == "one")
        #expect(kept.entry?.failedID == "two" && kept.entry?.failure == .stsPolicyFetchError)
        // Within 5 minutes: no new fetch for the same id.
        clock.advance(120)
        await resolver.refresh(d, force: false)
        #expect(lab.boxes["b.test"]!.requests == 2)
        // After 5 minutes: retried; the host is back.
        lab.boxes["b.test"]!.set(body: policy(mx: "new.b.test"))
        clock.advance(200)
        await resolver.refresh(d, force: false)
        #expect(lab.boxes["b.test"]!.requests == 3)
        #expect(resolver.cached(d)?.policy?.mx.map(\.text) == ["new.b.test"])
    }

    /// "No policy" is cached for negative_cache_ttl: repeated look-ups cost one DNS query.
    /// A DNS failure with nothing cached is "no policy" too, remembered only for dns_failure_ttl
    /// (issue: sender-side safety, item 4).
    @Test func negativeCachingAndTemporaryFailure() async throws {
        let lab = try Lab()
        try lab.add("c.test", id: "one", policy: policy())
        try lab.publish(failing: ["broken.example"])
        let clock = ManualClock()
        var settings = PolicyResolver.Settings()
        settings.negativeTTL = 600
        let resolver = try lab.resolver(clock: clock, settings: settings)
        let none = try DomainName("none.test")
        for _ in 0..<10 { #expect(await resolver.resolve(none).status == .noPolicy) }
        #expect(lab.txtQueries("none.test") == 1, "\(lab.dns?.log ?? "")")
        clock.advance(601)
        #expect(await resolver.resolve(none).status == .noPolicy)
        #expect(lab.txtQueries("none.test") == 2)

        let broken = try DomainName("x.broken.example")
        let failed = await resolver.resolve(broken)
        #expect(failed.status == .noPolicy, "\(failed.reason)")
        #expect(failed.reason.contains("DNS failed"), "\(failed.reason)")
        #expect(resolver.cached(broken)?.status == .noPolicy)
        clock.advance(61)
        #expect(resolver.cached(broken) == nil)
    }

    /// A failed first fetch: no policy (with the failure type), not retried for 5 minutes.
    @Test func failedFirstFetch() async throws {
        let lab = try Lab()
        try lab.add("d.test", id: "one", policy: "garbage")
        try lab.publish()
        let clock = ManualClock()
        let resolver = try lab.resolver(clock: clock)
        let d = try DomainName("d.test")
        let r = await resolver.resolve(d)
        #expect(r.status == .noPolicy && r.failure == .stsPolicyInvalid)
        clock.advance(100)
        _ = await resolver.resolve(d)
        #expect(lab.boxes["d.test"]!.requests == 1)
        lab.boxes["d.test"]!.set(body: policy())
        clock.advance(201)
        #expect(await resolver.resolve(d).status == .policy)
        #expect(lab.boxes["d.test"]!.requests == 2)
    }

    /// Concurrent look-ups of one uncached domain share one fetch.
    @Test func singleFlight() async throws {
        let lab = try Lab()
        try lab.add("e.test", id: "one", policy: policy())
        try lab.publish()
        let resolver = try lab.resolver(clock: ManualClock())
        let d = try DomainName("e.test")
        let results = await withTaskGroup(of: Resolution.Status.self) { group in
            for _ in 0..<50 { group.addTask { await resolver.resolve(d).status } }
            var out: [Resolution.Status] = []
            for await r in group { out.append(r) }
            return out
        }
        #expect(results.count == 50 && results.allSatisfy { $0 == .policy })
        #expect(lab.boxes["e.test"]!.requests == 1)
        #expect(lab.txtQueries("e.test") == 1)
    }

    /// Proactive refresh: a policy past its refresh point (0.5–0.75 of max_age) is fetched again
    /// under the same id, which moves its expiry; one not yet due is left alone.
    @Test func proactiveRefresh() async throws {
        let lab = try Lab()
        try lab.add("f.test", id: "one", policy: policy(maxAge: 10_000))
        try lab.publish()
        let clock = ManualClock()
        let resolver = try lab.resolver(clock: clock)
        let d = try DomainName("f.test")
        #expect(await resolver.resolve(d).status == .policy)
        clock.advance(4_000)
        #expect(await resolver.refreshDue() == 0)
        #expect(lab.boxes["f.test"]!.requests == 1)
        clock.advance(3_600)
        #expect(await resolver.refreshDue() == 1)
        #expect(lab.boxes["f.test"]!.requests == 2)
        #expect(resolver.cached(d)?.entry?.expiresAt == clock.now() + 10_000)
    }

    /// The SQLite store: what one resolver fetched, a new one (a restarted daemon) serves at once
    /// without DNS or HTTPS.
    @Test func sqliteWarmStart() async throws {
        let lab = try Lab()
        try lab.add("g.test", id: "one", policy: policy(mx: "mx.g.test"))
        try lab.publish()
        let clock = ManualClock()
        let path = lab.dir.appendingPathComponent("cache.db").path
        let first = try lab.resolver(clock: clock, store: SQLitePolicyStore(path: path))
        let d = try DomainName("g.test")
        #expect(await first.resolve(d).status == .policy)
        try await Task.sleep(for: .milliseconds(100))
        lab.dns = nil  // no DNS any more
        let second = try lab.resolver(clock: clock, store: SQLitePolicyStore(path: path))
        #expect(try await second.warm() == 1)
        let hit = try #require(second.cached(d))
        #expect(hit.policy?.mx.map(\.text) == ["mx.g.test"] && hit.entry?.stsID == "one")
        #expect(lab.boxes["g.test"]!.requests == 1)
        // Unused for longer than evict_after: proactive refresh drops it from memory and the file.
        let store = try SQLitePolicyStore(path: path)
        #expect(try store.load("g.test") != nil)
        clock.advance(31 * 86_400)
        await second.refreshDue()
        #expect(try store.load("g.test") == nil)
        #expect(second.metrics.evictions.count >= 1)
    }
}
