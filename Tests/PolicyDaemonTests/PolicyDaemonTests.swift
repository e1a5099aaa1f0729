import MTASTSNet
import Foundation
import MTASTSConfig
import MTASTSCore
@testable import PolicyDaemon
@testable import PolicyResolver
import NIOCore
import NIOEmbedded
import NIOPosix
import ServiceLifecycle
@testable import Socketmap
import Testing
import TLSRPTSender

/// The daemon's rules and services in-process: reply rules from resolutions, the daily report run
/// on a manual clock across midnight, reload, and the services' graceful shutdown.
@Suite struct ReplyRuleTests {
    let domain = try! DomainName("example.com")

    func resolution(_ status: Resolution.Status, policy: String? = nil, failure: ResultType? = nil, dane: DANEState = .none,
                    mxHosts: [String]? = ["mx2.example.com", "a.mx.example.com", "b.c.mx.example.com"]) -> Resolution {
        let parsed = policy.flatMap { STSPolicy.parse($0).policy }
        let entry = CacheEntry(domain: "example.com", policy: parsed, stsID: "1", fetchedAt: 0, expiresAt: 86_400, checkedAt: 0,
                               failure: failure, reason: failure.map { "\($0.rawValue)" }, dane: dane, mxHosts: mxHosts, lastUsed: 0)
        return Resolution(status: status, domain: domain, entry: status == .temporary ? nil : entry, source: .cache, reason: "DNS time-out")
    }

    func render(_ r: Resolution, zone: DaemonConfig.Zone = .init(), dnssec: Bool = false, failureLevel: String? = "may") -> String {
        PolicyMapResponder.render(r, zone: zone, dnssec: dnssec, failureLevel: failureLevel)
    }

    static let enforce = "version: STSv1\nmode: enforce\nmx: mx2.example.com\nmx: *.mx.example.com\nmax_age: 86400\n"
    static let testing = "version: STSv1\nmode: testing\nmx: mx.example.com\nmax_age: 86400\n"

    @Test("enforce: secure with sorted match=, testing: NOTFOUND unless strict_testing (CONFORMANCE 8461 #22, #23, #25)") func policyReplies() {
        #expect(render(resolution(.policy, policy: Self.enforce)) == "OK secure match=a.mx.example.com:mx2.example.com servername=hostname")
        #expect(render(resolution(.policy, policy: Self.testing)) == "NOTFOUND ")
        var strict = DaemonConfig.Zone()
        strict.strictTesting = true
        #expect(render(resolution(.policy, policy: Self.testing), zone: strict) == "OK secure match=mx.example.com servername=hostname")
    }

    // RFC 8461 §4.1: "*.mx.example.com" covers a.mx.example.com, not b.c.mx.example.com; Postfix's
    // ".mx.example.com" would accept both.
    @Test("a wildcard covers one label: answered with the MX hosts it covers, or left to a Postfix that enforces mx_host_pattern (CONFORMANCE 8461 #23, vector 24)") func wildcard() {
        let reply = render(resolution(.policy, policy: Self.enforce))
        #expect(reply.contains("match=a.mx.example.com:mx2.example.com ") && !reply.contains("b.c.mx") && !reply.contains("match=.mx"))
        // MX hosts never looked up: TEMP, not the wider pattern.
        #expect(render(resolution(.policy, policy: Self.enforce, mxHosts: nil)).hasPrefix("TEMP the MX hosts of example.com are not known yet"))
        // No MX host matches: a name no certificate holds, never an empty match= (Postfix's default names).
        #expect(render(resolution(.policy, policy: Self.enforce, mxHosts: ["other.example.net"]))
                == "OK secure match=mx2.example.com servername=hostname")
        #expect(render(resolution(.policy, policy: "version: STSv1\nmode: enforce\nmx: *.mx.example.com\nmax_age: 86400\n", mxHosts: ["x.y.mx.example.com"]))
                == "OK secure match=\(SocketmapReply.noMatch) servername=hostname")
        // A zone for Postfix ≥ 3.10.5 that enforces the patterns: the pattern itself, with
        // policy_type=sts and mx_host_pattern= even without tlsrpt.
        var enforcing = DaemonConfig.Zone()
        enforcing.enforceMXPatterns = true
        let patterns = render(resolution(.policy, policy: Self.enforce, mxHosts: nil), zone: enforcing)
        #expect(patterns.hasPrefix("OK secure match=.mx.example.com:mx2.example.com servername=hostname policy_type=sts policy_domain=example.com mx_host_pattern=mx2.example.com mx_host_pattern=*.mx.example.com"), "\(patterns)")
    }

    // RFC 8461 §2: DANE first, only where Postfix does DANE (a DNSSEC zone).
    @Test("DANE precedence only in DNSSEC zones: usable DANE is dane-only, an unknown DANE state TEMP (CONFORMANCE 8461 #29)") func dane() {
        let usable = resolution(.policy, policy: Self.enforce, dane: .usable)
        #expect(render(usable, dnssec: true) == "OK dane-only")
        #expect(render(resolution(.policy, policy: Self.testing, dane: .usable), dnssec: true) == "NOTFOUND ")
        #expect(render(resolution(.policy, policy: Self.enforce, dane: .temporary), dnssec: true).hasPrefix("TEMP the DANE state of example.com is unknown"))
        #expect(render(resolution(.policy, policy: Self.enforce, dane: .none), dnssec: true).hasPrefix("OK secure match="))
        // A Postfix without DNSSEC does no DANE: no reply depends on TLSA.
        #expect(render(usable, dnssec: false).hasPrefix("OK secure match="))
        #expect(render(resolution(.policy, policy: Self.enforce, dane: .temporary), dnssec: false).hasPrefix("OK secure match="))
    }

    @Test("our own failures are TEMP; an unusable policy is NOTFOUND, or policy_failure in a tlsrpt zone (CONFORMANCE 8461 #17, #30)") func failures() {
        #expect(render(resolution(.temporary)) == "TEMP DNS time-out")
        let broken = resolution(.noPolicy, failure: .stsPolicyInvalid)
        #expect(render(broken) == "NOTFOUND ")
        var tlsrpt = DaemonConfig.Zone()
        tlsrpt.tlsrpt = true
        #expect(render(broken, zone: tlsrpt, failureLevel: "encrypt") == "OK encrypt policy_type=sts policy_domain=example.com policy_failure=sts-policy-invalid")
        #expect(render(resolution(.noPolicy), zone: tlsrpt) == "NOTFOUND ")
        // Postfix's own level not stated: a broken policy is NOTFOUND even in a tlsrpt zone, so
        // the reply can never lower a stricter Postfix level (dane, encrypt) to may.
        #expect(render(broken, zone: tlsrpt, failureLevel: nil) == "NOTFOUND ")
    }

    @Test("per-zone Postfix facts: dnssec, failure level and pattern enforcement by zone; the budget and reply deadline follow the time-outs") func zoneFacts() throws {
        let config = try DaemonConfig.parse("""
            dane: false
            policy_failure_level: may
            dns_timeout: 4
            cache:
              type: internal
            zones:
              dnssec:
                dnssec: true
                policy_failure_level: encrypt
              new:
                enforce_mx_patterns: true
                timeout: 25
            """, file: "d.yml")
        #expect(!config.dnssec(config.zone("postfix")) && config.dnssec(config.zone("dnssec")))
        #expect(config.failureLevel(config.zone("postfix")) == "may" && config.failureLevel(config.zone("dnssec")) == "encrypt")
        #expect(config.zone("new").enforceMXPatterns && !config.zone("dnssec").enforceMXPatterns)
        // 12 s per DNS query (4 + 8), record and addresses, a 25 s fetch, MX/addresses/TLSA in DNSSEC zones, 1 s room.
        let expected: Double = 12 * 2 + 25 + 12 * 3 + 1
        #expect(config.lookupBudget == expected)
        #expect(config.replyDeadline == config.lookupBudget + 2 && config.replyDeadline < DaemonConfig.postfixSocketmapTimeout)
        #expect(throws: DaemonConfig.ConfigError.self) { try DaemonConfig.parse("dns_timeout: 20\n", file: "d.yml") }
    }
}

@Suite struct ReportSchedulerTests {
    let dir: URL

    init() throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("scheduler-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    }

    /// A store with one day of sessions for a domain whose rua is a closed loopback port (each
    /// delivery fails at once, temporarily).
    func world(clock: ManualClock) throws -> (SessionStore, ReportSender) {
        let store = try SessionStore(url: dir.appendingPathComponent("tlsrpt.db").path)
        var batch = SessionBatch()
        let datagram = try TLSRPTDatagram.decode(Array(#"{"dpv":"1","d":"example.com","pr":"v=TLSRPTv1; rua=https://127.0.0.1:9/tlsrpt","policies":[{"policy-type":2,"policy-domain":"example.com","policy-string":["version: STSv1","mode: testing","mx: mx.example.com","max_age: 86400"],"mx-host":["mx.example.com"],"t":0,"f":0}]}"#.utf8))
        batch.add(datagram, day: "2027-01-14")
        try store.commit(batch)
        let sender = ReportSender(store: store, identity: SenderIdentity(organization: "Test Org", contact: "mailto:tlsrpt@sender.test", submitter: "sender.test", from: "tlsrpt@sender.test"),
                                  https: try HTTPSTransport(caFiles: [], timeout: .seconds(5), allowPrivate: true), mail: nil, dkim: nil, node: "n1",
                                  clock: clock)
        return (store, sender)
    }


    static func at(_ day: String, _ seconds: Double) -> Double { Double(RFC3339.parse(day + "T00:00:00Z")!.seconds) + seconds }

    @Test("the day's reports are built after midnight plus the spread delay, once; retries follow the clock (CONFORMANCE 8460 #11, #17)") func midnight() async throws {
        let clock = ManualClock(Self.at("2027-01-14", 23 * 3600))
        let (store, sender) = try world(clock: clock)
        let scheduler = ReportScheduler(store: store, sender: sender, clock: clock, spread: 3600, random: { _ in 1800 })
        // The same day: nothing is complete yet.
        #expect(await scheduler.pass() == .init(prepared: [], attempts: 0))
        // 00:10, before the 30-minute delay.
        clock.set(Self.at("2027-01-15", 600))
        #expect(await scheduler.pass() == .init(prepared: [], attempts: 0))
        // 00:31: built, claimed, and the first delivery tried (the closed port: retry).
        clock.set(Self.at("2027-01-15", 1860))
        #expect(await scheduler.pass() == .init(prepared: ["2027-01-14"], attempts: 1))
        #expect(try store.ledger(day: "2027-01-14").map(\.status) == ["retry"])
        // Not built twice; the retry waits its minute.
        #expect(await scheduler.pass() == .init(prepared: [], attempts: 0))
        clock.advance(61)
        #expect(await scheduler.pass() == .init(prepared: [], attempts: 1))
    }

    @Test("run() sleeps on the injected clock and stops on cancellation") func runLoop() async throws {
        let clock = ManualClock(Self.at("2027-01-15", 7200))
        let (store, sender) = try world(clock: clock)
        let scheduler = ReportScheduler(store: store, sender: sender, clock: clock, spread: 0, tick: 60, random: { _ in 0 })
        let task = Task { try await scheduler.run() }
        for _ in 0..<500 where clock.sleeperCount == 0 { try await Task.sleep(for: .milliseconds(10)) }
        #expect(clock.sleeperCount == 1)
        #expect(try store.ledger(day: "2027-01-14").count == 1)
        task.cancel()
        _ = await task.result
        #expect(clock.sleeperCount == 0)
    }
}

@Suite struct DaemonServiceTests {
    @Test("reload keeps the running configuration on a bad file; SIGTERM's graceful shutdown drains and ends every service") func reloadAndShutdown() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("daemon-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let file = dir.appendingPathComponent("daemon.yml").path
        var config = DaemonConfig()
        config.port = 0
        config.cache = .memory(size: 100)
        config.dnsServer = "127.0.0.1:9"
        config.zones = ["a": DaemonConfig.Zone()]
        let daemon = try await PolicyDaemon.start(config, configPath: file, clock: ManualClock())
        #expect(daemon.config.zones.count == 1)
        try "port: 8461\ncache:\n  type: internal\nzones:\n  a: {}\n  b: {tlsrpt: true}\n".write(toFile: file, atomically: true, encoding: .utf8)
        #expect(daemon.reload())
        #expect(daemon.config.zones.count == 2)
        try "zones: [not, a, mapping".write(toFile: file, atomically: true, encoding: .utf8)
        #expect(!daemon.reload())
        #expect(daemon.config.zones.count == 2)
        let group = ServiceGroup(configuration: .init(services: daemon.services().map { .init(service: $0) }, logger: .init(label: "test")))
        let running = Task { try await group.run() }
        try await Task.sleep(for: .milliseconds(100))
        await group.triggerGracefulShutdown()
        try await running.value
        #expect(daemon.server.connectionCount == 0)
    }
}

/// `daemon --check-config`: what each zone assumes of Postfix, and where postconf contradicts it.
@Suite struct ConfigCheckTests {
    static let yaml = """
        port: 8461
        dns_timeout: 2
        cache:
          type: internal
        collector:
          socket: /run/mtasts/tlsrpt.sock
        zones:
          dane:
            dnssec: true
          reports:
            tlsrpt: true
            policy_failure_level: encrypt
          patterns:
            enforce_mx_patterns: true
        """

    func check(_ postfix: [String: String]?) throws -> ConfigCheck {
        let config = try DaemonConfig.parse(Self.yaml, file: "d.yml")
        return ConfigCheck.run(config, postconf: postfix.map { .success($0) } ?? .failure(.init(description: "not installed")))
    }

    @Test("per zone: the assumptions and the main.cf lines; without postconf nothing is compared") func assumptions() throws {
        let alone = try check(nil)
        #expect(!alone.hasErrors)
        let dane = try #require(alone.zones.first { $0.name == "dane" })
        #expect(dane.mainCF == ["smtp_tls_policy_maps = socketmap:inet:127.0.0.1:8461:dane", "smtp_dns_support_level = dnssec"])
        let reports = try #require(alone.zones.first { $0.name == "reports" })
        #expect(reports.mainCF.contains("smtp_tls_security_level = encrypt") && reports.mainCF.contains("smtp_tlsrpt_enable = yes")
                && reports.mainCF.contains("smtp_tlsrpt_socket_name = /run/mtasts/tlsrpt.sock"))
        #expect(alone.zones.first?.assumptions.contains("Postfix does no DANE: no reply depends on TLSA records") == true)
        #expect(alone.findings.contains { $0.message.hasPrefix("Postfix not compared: not installed") })
        #expect(alone.text(style: TextStyle(colour: false)).contains("zone dane\n  assumes: Postfix does DANE"))
    }

    @Test("postconf contradicting a zone is an error: DANE without dnssec, another failure level, TLSRPT before 3.10, patterns before 3.10.5") func contradictions() throws {
        let maps = "socketmap:inet:127.0.0.1:8461:dane socketmap:inet:127.0.0.1:8461:reports socketmap:inet:127.0.0.1:8461:patterns"
        let old = try check(["mail_version": "3.7.11", "smtp_dns_support_level": "", "smtp_tls_security_level": "may", "smtp_tls_policy_maps": maps])
        let errors = old.findings.filter { $0.level == .error }.map { "\($0.zone ?? ""): \($0.message)" }
        #expect(errors.count == 4, "\(errors)")
        #expect(errors.contains { $0.hasPrefix("dane: the zone says Postfix does DANE (dnssec), but smtp_dns_support_level is ''") })
        #expect(errors.contains { $0.hasPrefix("reports: the zone states Postfix's level is 'encrypt', but smtp_tls_security_level is 'may'") })
        #expect(errors.contains { $0.hasPrefix("reports: tlsrpt: Postfix 3.7.11 refuses the TLSRPT attributes") })
        #expect(errors.contains { $0.hasPrefix("patterns: enforce_mx_patterns: Postfix 3.7.11 does not enforce") })
        let good = try check(["mail_version": "3.10.5", "smtp_dns_support_level": "dnssec", "smtp_tls_security_level": "encrypt",
                              "smtp_tlsrpt_enable": "yes", "smtp_tls_enforce_sts_mx_patterns": "yes", "smtp_tls_policy_maps": maps])
        #expect(!good.hasErrors, "\(good.findings.map(\.message))")
        // A Postfix with DNSSEC asking a zone that does not say so: a warning (MTA-STS would override DANE).
        let unsaid = try check(["mail_version": "3.7.11", "smtp_dns_support_level": "dnssec", "smtp_tls_policy_maps": "socketmap:inet:127.0.0.1:8461:postfix"])
        #expect(!unsaid.hasErrors && unsaid.findings.contains { $0.level == .warning && $0.message.contains("override DANE") })
        let notAsked = try check(["mail_version": "3.7.11", "smtp_tls_policy_maps": ""])
        #expect(notAsked.findings.contains { $0.level == .warning && $0.message.contains("does not ask this daemon") })
    }
}

/// The socketmap hit path: replies rendered once per entry and zone, kept with the entry, and
/// never used after the entry or the configuration changed.
@Suite struct CachedReplyTests {
    static func payload(_ text: String) -> ByteBuffer { ByteBuffer(string: text) }
    enum Answer { case reply(ByteBuffer), notCached, notHandled }
    /// The hit path into a buffer that already holds bytes: a reply goes after them, anything
    /// else leaves them alone.
    static func ask(_ responder: PolicyMapResponder, _ payload: ByteBuffer) -> Answer {
        var out = ByteBuffer(string: "before|")
        let answer = responder.cachedReply(payload: payload, into: &out)
        let kept = out.readString(length: 7)
        #expect(kept == "before|")
        switch answer {
        case .written: return .reply(out)
        case .notCached:
            #expect(out.readableBytes == 0)
            return .notCached
        case .notHandled:
            #expect(out.readableBytes == 0)
            return .notHandled
        }
    }
    static func text(_ answer: Answer) -> String? {
        if case .reply(let bytes) = answer { return String(buffer: bytes) }
        return nil
    }
    static func handled(_ answer: Answer) -> Bool {
        if case .notHandled = answer { return false }
        return true
    }

    @Test("the hit path answers what the ordinary path answers; an entry or configuration change is seen at once; other keys take the ordinary path")
    func keptReplies() throws {
        var config = try DaemonConfig.parse("cache:\n  type: internal\nzones:\n  strict:\n    strict_testing: true\n", file: "d.yml")
        let resolver = try DaemonRuntime.makeResolver(config, store: nil, clock: ManualClock(1_800_000_000))
        let responder = PolicyMapResponder(resolver: resolver, config: config)
        let enforce = try #require(STSPolicy.parse("version: STSv1\nmode: enforce\nmx: mx.example.com\nmax_age: 86400\n").policy)
        let testing = try #require(STSPolicy.parse("version: STSv1\nmode: testing\nmx: mx.example.com\nmax_age: 86400\n").policy)
        func put(_ policy: STSPolicy) {
            resolver.hot.put(CacheEntry(domain: "example.com", policy: policy, stsID: "1", fetchedAt: 1_800_000_000, expiresAt: 1_800_086_400,
                                        checkedAt: 1_800_000_000, lastUsed: 1_800_000_000))
        }
        // Nothing cached: the key is normalised, so the request goes straight to the resolver.
        if case .notCached = Self.ask(responder, Self.payload("postfix example.com")) {} else { Issue.record("expected notCached") }
        put(enforce)
        let first = Self.ask(responder, Self.payload("postfix example.com"))
        #expect(Self.text(first) == "50:OK secure match=mx.example.com servername=hostname,")
        #expect(Self.text(Self.ask(responder, Self.payload("postfix example.com"))) == Self.text(first))
        #expect(responder.immediateReply(to: SocketmapRequest(name: "postfix", key: "example.com")) == "OK secure match=mx.example.com servername=hostname")
        // Keys that need normalising are not answered here (the ordinary path normalises them).
        for key in ["EXAMPLE.com", "example.com.", "[example.com]", "example.com:25"] {
            #expect(!Self.handled(Self.ask(responder, Self.payload("postfix \(key)"))), "\(key)")
            #expect(responder.immediateReply(to: SocketmapRequest(name: "postfix", key: key)) == "OK secure match=mx.example.com servername=hostname", "\(key)")
        }
        #expect(!Self.handled(Self.ask(responder, Self.payload("postfix"))) && !Self.handled(Self.ask(responder, Self.payload("postfix "))))
        // A new entry (testing mode): the kept reply is gone with the old entry.
        put(testing)
        #expect(Self.text(Self.ask(responder, Self.payload("postfix example.com"))) == "9:NOTFOUND ,")
        #expect(Self.text(Self.ask(responder, Self.payload("strict example.com"))) == "50:OK secure match=mx.example.com servername=hostname,")
        // A reload that changes the zone: replies rendered under the old configuration are not used.
        config.defaultZone.strictTesting = true
        responder.update(config)
        #expect(Self.text(Self.ask(responder, Self.payload("postfix example.com"))) == "50:OK secure match=mx.example.com servername=hostname,")
        #expect(resolver.metrics.hits.count >= 5)
    }
}

/// Look-ups that miss the hot layer, read from the SQLite cache by its readers (issue
/// "Performance…", item 3): through the socketmap handler, in order with the ordinary path.
@Suite struct StoredReplyTests {
    @Test("a policy only in the SQLite cache is answered by the readers without DNS, kept hot, and replies stay in request order")
    func storedPolicyWithoutDNS() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("stored-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        // DNS goes nowhere (a closed port): a look-up that reached it could not answer OK.
        let config = try DaemonConfig.parse("cache:\n  type: sqlite\n  options:\n    filename: \(dir)/cache.db\ndns_server: 127.0.0.1:9\ndns_timeout: 1\n", file: "d.yml")
        let now = 1_800_000_000.0
        let policy = try #require(STSPolicy.parse("version: STSv1\nmode: enforce\nmx: mx.example.com\nmax_age: 86400\n").policy)
        do {
            let store = try #require(try DaemonRuntime.makeStore(config))
            try store.save(CacheEntry(domain: "example.com", policy: policy, stsID: "1", fetchedAt: now, expiresAt: now + 86_400, checkedAt: now, lastUsed: now))
            for expired in ["old.example", "gone.example"] {
                try store.save(CacheEntry(domain: expired, policy: policy, stsID: "1", fetchedAt: now - 90_000, expiresAt: now - 3_600, checkedAt: now - 90_000, lastUsed: now))
            }
        }
        // A new daemon on the same file: nothing in its hot layer.
        let store = try DaemonRuntime.makeStore(config)
        let resolver = try DaemonRuntime.makeResolver(config, store: store, clock: ManualClock(now))
        let responder = PolicyMapResponder(resolver: resolver, config: config)
        #expect(resolver.hotCount == 0)
        let channel = NIOAsyncTestingChannel()
        try await channel.testingEventLoop.submit {
            try channel.pipeline.syncOperations.addHandler(SocketmapHandler(responder: responder, replyTimeout: .seconds(30), latency: nil))
        }.get()
        // The stored policy first (the readers), then an expired one (the ordinary path, which
        // asks DNS and cannot answer OK), pipelined: the replies come back in that order.
        try await channel.writeInbound(ByteBuffer(string: "postfix example.com"))
        try await channel.writeInbound(ByteBuffer(string: "postfix old.example"))
        var replies: [String] = []
        for _ in 0..<1_000 where replies.count < 2 {
            try await Task.sleep(for: .milliseconds(10))
            await channel.testingEventLoop.run()
            while let reply = try await channel.readOutbound(as: ByteBuffer.self) { replies.append(String(buffer: reply)) }
        }
        #expect(replies.first == "50:OK secure match=mx.example.com servername=hostname,")
        #expect(replies.count == 2 && !(replies.last ?? "").contains("OK secure"), "\(replies)")
        #expect(resolver.metrics.storeHits.count == 1)
        #expect(resolver.hotCount >= 1)
        // Now a hit in memory: the same bytes, no store read.
        if case .reply(let bytes) = CachedReplyTests.ask(responder, ByteBuffer(string: "postfix example.com")) {
            #expect(String(buffer: bytes) == replies.first)
        } else {
            Issue.record("example.com is not in the hot layer after the stored reply")
        }
        #expect(resolver.metrics.storeHits.count == 1)
        _ = try? await channel.finish()

        // The readers directly: a fresh daemon answers from the file; an expired or absent domain
        // is nil (the ordinary path fetches it); a memory-only cache has no readers.
        let fresh = try DaemonRuntime.makeResolver(config, store: try DaemonRuntime.makeStore(config), clock: ManualClock(now))
        let loop = MultiThreadedEventLoopGroup.singleton.any()
        let render: @Sendable (Resolution) -> ByteBuffer? = { ByteBuffer(string: PolicyMapResponder.render($0, zone: "postfix", in: config)) }
        let stored = try await #require(fresh.storedReply("example.com", zone: "postfix", generation: 0, on: loop, render: render)).get()
        #expect(stored.map { String(buffer: $0) } == "OK secure match=mx.example.com servername=hostname")
        #expect(fresh.hotCount == 1 && fresh.metrics.storeHits.count == 1 && fresh.metrics.dnsQueries.count == 0)
        #expect(try await #require(fresh.storedReply("gone.example", zone: "postfix", generation: 0, on: loop, render: render)).get() == nil)
        #expect(try await #require(fresh.storedReply("absent.example", zone: "postfix", generation: 0, on: loop, render: render)).get() == nil)
        let memory = try DaemonRuntime.makeResolver(try DaemonConfig.parse("cache:\n  type: internal\n", file: "m.yml"), store: nil)
        #expect(memory.storedReply("example.com", zone: "postfix", generation: 0, on: loop, render: render) == nil)
    }
}
