import Foundation
import MTASTSConfig
import MTASTSCore
@testable import PolicyDaemon
import PolicyResolver
import ServiceLifecycle
import Testing
import TLSRPTSender

/// The daemon's rules and services in-process: reply rules from resolutions, the daily report run
/// on a manual clock across midnight, reload, and the services' graceful shutdown.
@Suite struct ReplyRuleTests {
    let domain = try! DomainName("example.com")

    func resolution(_ status: Resolution.Status, policy: String? = nil, failure: ResultType? = nil, dane: Bool = false) -> Resolution {
        let parsed = policy.flatMap { STSPolicy.parse($0).policy }
        let entry = CacheEntry(domain: "example.com", policy: parsed, stsID: "1", fetchedAt: 0, expiresAt: 86_400, checkedAt: 0,
                               failure: failure, reason: failure.map { "\($0.rawValue)" }, dane: dane, lastUsed: 0)
        return Resolution(status: status, domain: domain, entry: status == .temporary ? nil : entry, source: .cache, reason: "DNS time-out")
    }

    static let enforce = "version: STSv1\nmode: enforce\nmx: mx2.example.com\nmx: *.mx.example.com\nmax_age: 86400\n"
    static let testing = "version: STSv1\nmode: testing\nmx: mx.example.com\nmax_age: 86400\n"

    @Test("enforce: secure with sorted match=, testing: NOTFOUND unless strict_testing (CONFORMANCE 8461 #22, #23, #25)") func policyReplies() {
        let zone = DaemonConfig.Zone()
        #expect(PolicyMapResponder.render(resolution(.policy, policy: Self.enforce), zone: zone, failureLevel: "may")
                == "OK secure match=.mx.example.com:mx2.example.com servername=hostname")
        #expect(PolicyMapResponder.render(resolution(.policy, policy: Self.testing), zone: zone, failureLevel: "may") == "NOTFOUND ")
        var strict = DaemonConfig.Zone()
        strict.strictTesting = true
        #expect(PolicyMapResponder.render(resolution(.policy, policy: Self.testing), zone: strict, failureLevel: "may")
                == "OK secure match=mx.example.com servername=hostname")
    }

    // RFC 8461 §2: DANE first.
    @Test("DANE precedence: every MX with validated TLSA in enforce is dane-only (CONFORMANCE 8461 #29)") func dane() {
        #expect(PolicyMapResponder.render(resolution(.policy, policy: Self.enforce, dane: true), zone: .init(), failureLevel: "may") == "OK dane-only")
        #expect(PolicyMapResponder.render(resolution(.policy, policy: Self.testing, dane: true), zone: .init(), failureLevel: "may") == "NOTFOUND ")
    }

    @Test("our own failures are TEMP; an unusable policy is NOTFOUND, or policy_failure in a tlsrpt zone (CONFORMANCE 8461 #17, #30)") func failures() {
        #expect(PolicyMapResponder.render(resolution(.temporary), zone: .init(), failureLevel: "may") == "TEMP DNS time-out")
        let broken = resolution(.noPolicy, failure: .stsPolicyInvalid)
        #expect(PolicyMapResponder.render(broken, zone: .init(), failureLevel: "may") == "NOTFOUND ")
        var tlsrpt = DaemonConfig.Zone()
        tlsrpt.tlsrpt = true
        #expect(PolicyMapResponder.render(broken, zone: tlsrpt, failureLevel: "encrypt")
                == "OK encrypt policy_type=sts policy_domain=example.com policy_failure=sts-policy-invalid")
        #expect(PolicyMapResponder.render(resolution(.noPolicy), zone: tlsrpt, failureLevel: "may") == "NOTFOUND ")
        // Postfix's own level not stated: a broken policy is NOTFOUND even in a tlsrpt zone, so
        // the reply can never lower a stricter Postfix level (dane, encrypt) to may.
        #expect(PolicyMapResponder.render(broken, zone: tlsrpt, failureLevel: nil) == "NOTFOUND ")
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
