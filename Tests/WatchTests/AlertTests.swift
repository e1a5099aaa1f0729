import Foundation
import Logging
import MTASTSCheck
import MTASTSConfig
import MTASTSCore
import MTASTSNet
import NIOConcurrencyHelpers
import Testing
import TLSRPTReceiver
@testable import Watch

/// The alert rules in-process: reports and check results that cross each threshold, on a manual
/// clock, with the alerts collected instead of sent. Each fires once per change; the state is
/// kept in the database (a new engine on the same database does not fire again).
@Suite struct AlertTests {
    let dir: URL
    let clock = ManualClock(1_795_000_000)

    init() throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("alerts-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    }

    func day(_ offset: Int) -> String { RFC3339.formatDay(Int64(clock.now()) + Int64(offset) * 86_400) }

    static func report(org: String, id: String, day: String, domain: String, ok: Int, failures: [(String, Int)] = []) -> [UInt8] {
        let details = failures.map { #"{"result-type":"\#($0.0)","receiving-mx-hostname":"mx.\#(domain)","failed-session-count":\#($0.1)}"# }.joined(separator: ",")
        let failed = failures.reduce(0) { $0 + $1.1 }
        return Array(#"{"organization-name":"\#(org)","date-range":{"start-datetime":"\#(day)T00:00:00Z","end-datetime":"\#(day)T23:59:59Z"},"contact-info":"x@example.org","report-id":"\#(id)","policies":[{"policy":{"policy-type":"sts","policy-string":["version: STSv1","mode: testing","mx: mx.\#(domain)","max_age: 86400"],"policy-domain":"\#(domain)"},"summary":{"total-successful-session-count":\#(ok),"total-failure-session-count":\#(failed)},"failure-details":[\#(details)]}]}"#.utf8)
    }

    final class Sink: Sendable {
        let alerts = NIOLockedValueBox<[Alert]>([])
        func take() -> [Alert] { alerts.withLockedValue { let a = $0; $0 = []; return a } }
    }

    func engine(_ reports: ReportStore, _ watch: WatchStore, _ sink: Sink, _ edit: (inout ServeConfig.Alerts) -> Void = { _ in }) -> AlertEngine {
        var rules = ServeConfig.Alerts()
        rules.webhooks = ["https://hook.example/"]
        edit(&rules)
        return AlertEngine(rules: rules, publicURL: "https://reports.example", reports: reports, watch: watch, logger: Logger(label: "test"), clock: clock,
                           deliver: { alert in sink.alerts.withLockedValue { $0.append(alert) }; return "collected" })
    }

    @Test("reports: rate below the threshold, a jump of one type, new type, new organisation, readiness turning ready — each once")
    func reportAlerts() async throws {
        let reports = try ReportStore(url: dir.appendingPathComponent("r.db").path)
        let watch = try WatchStore(db: reports.db)
        let ingestor = ReportIngestor(store: reports, dkimPolicy: .ignore, lookup: { _ in nil })
        let sink = Sink()
        let alerts = engine(reports, watch, sink)
        func ingest(_ body: [UInt8]) throws { #expect(try ingestor.ingest(body: body, at: clock.now()).stored.count == 1) }

        // Six clean days from one sender: the organisation is new (one alert), nothing else.
        for d in -6 ... -1 { try ingest(Self.report(org: "Google", id: "g\(d)", day: day(d), domain: "a.test", ok: 100)) }
        var raised = try await alerts.evaluate(checks: false)
        #expect(raised.map(\.kind) == [.newOrganization])
        #expect(raised.first?.subject == "Google" && raised.first?.link == "https://reports.example/domains/a.test")
        #expect(sink.take().count == 1)
        #expect(try await alerts.evaluate(checks: false).isEmpty)  // no change, no alert

        // The seventh day: readiness turns ready (7 days, no failure).
        try ingest(Self.report(org: "Google", id: "g0", day: day(0), domain: "a.test", ok: 100))
        raised = try await alerts.evaluate(checks: false)
        #expect(raised.map(\.kind) == [.readiness])
        #expect(raised.first?.message.contains("ready for mode: enforce") == true)

        // Next day: a new sender with 30 certificate-expired failures of 100: the rate drops to
        // 85 % (< 95), the type is new, the sender is new, it jumped (30 ≥ 10 and ≥ 3 × 0), and
        // readiness is no longer ready (no alert for that: only turning ready alerts).
        clock.advance(86_400)
        try ingest(Self.report(org: "Google", id: "g1", day: day(0), domain: "a.test", ok: 100))
        try ingest(Self.report(org: "Mail.ru", id: "m1", day: day(0), domain: "a.test", ok: 70, failures: [("certificate-expired", 30)]))
        raised = try await alerts.evaluate(checks: false)
        #expect(Set(raised.map(\.kind)) == [.successRate, .failureJump, .newFailureType, .newOrganization], "\(raised.map(\.message))")
        let rate = try #require(raised.first { $0.kind == .successRate })
        #expect(rate.message.contains("85.00 %") && rate.message.contains("(UTC)"))
        #expect(raised.first { $0.kind == .failureJump }?.subject == "certificate-expired")
        #expect(try await alerts.evaluate(checks: false).isEmpty)

        // A new engine on the same database: the state is kept, nothing fires again.
        #expect(try await engine(reports, watch, sink).evaluate(checks: false).isEmpty)
        // The alerts are logged with their delivery.
        let logged = try watch.alerts(domain: "a.test", limit: 50)
        #expect(logged.count == 6 && logged.allSatisfy { $0.delivery == "collected" })

        // The day after, the rate is back (no alert), then it drops again: alerts once more.
        clock.advance(86_400)
        try ingest(Self.report(org: "Google", id: "g2", day: day(0), domain: "a.test", ok: 100))
        raised = try await alerts.evaluate(checks: false)
        #expect(raised.isEmpty, "\(raised.map(\.message))")
        clock.advance(86_400)
        try ingest(Self.report(org: "Google", id: "g3", day: day(0), domain: "a.test", ok: 10, failures: [("starttls-not-supported", 5)]))
        raised = try await alerts.evaluate(checks: false)
        #expect(Set(raised.map(\.kind)) == [.successRate, .newFailureType], "\(raised.map(\.message))")  // 5 < the jump minimum of 10
    }

    @Test("only the owner's domains alert; a flood of new senders is 20 alerts and one digest; chat markup and webhook secrets")
    func floodAndOwnership() async throws {
        let reports = try ReportStore(url: dir.appendingPathComponent("f.db").path)
        let watch = try WatchStore(db: reports.db)
        let ingestor = ReportIngestor(store: reports, dkimPolicy: .ignore, lookup: { _ in nil })
        let sink = Sink()
        var rules = ServeConfig.Alerts()
        rules.webhooks = ["https://hook.example/"]
        rules.readiness = false
        let alerts = AlertEngine(rules: rules, publicURL: nil, reports: reports, watch: watch, logger: Logger(label: "test"), clock: clock,
                                 domains: ["owned.test"], deliver: { alert in sink.alerts.withLockedValue { $0.append(alert) }; return "collected" })
        // A stranger's domain: nothing. The owner's: 25 new senders in one go (one named with markup).
        #expect(try ingestor.ingest(body: Self.report(org: "X", id: "s1", day: day(0), domain: "stranger.test", ok: 1), at: clock.now()).stored.count == 1)
        for k in 0..<25 {
            let org = k == 0 ? "<!channel> <https://evil.example|click>" : "Sender \(k)"
            #expect(try ingestor.ingest(body: Self.report(org: org, id: "o\(k)", day: day(0), domain: "owned.test", ok: 10), at: clock.now()).stored.count == 1)
        }
        let raised = try await alerts.evaluate(checks: false)
        #expect(raised.count == AlertEngine.maxPerEvaluation + 1)
        #expect(raised.allSatisfy { $0.domain == "owned.test" })
        #expect(raised.last?.kind == .digest && raised.last?.message.hasPrefix("5 more alerts (5 new-organization)") == true, "\(raised.last?.message ?? "")")
        #expect(try await alerts.evaluate(checks: false).isEmpty)
        let markup = try #require(raised.first { $0.subject.contains("channel") })
        let text = try JSONParser.parse(AlertTransports.json(markup, at: clock.now())).value["text"]?.stringValue ?? ""
        #expect(text.contains("&lt;!channel&gt;") && !text.contains("<!channel>") && !text.contains("<https://evil"), "\(text)")
        // A webhook that cannot be reached: its outcome names its number and host, never its path (the secret).
        var secret = ServeConfig.Alerts()
        secret.webhooks = ["https://127.0.0.1:1/hooks/T000/B000/SECRETSECRET"]
        let outcome = await (try AlertTransports(secret)).send(markup, at: clock.now())
        #expect(outcome.hasPrefix("webhook #1 (127.0.0.1): temporary") && !outcome.contains("SECRET"), "\(outcome)")
    }

    @Test("checks: certificates expiring within N days, check errors (new ones only), cleared errors re-arm")
    func checkAlerts() async throws {
        let reports = try ReportStore(url: dir.appendingPathComponent("c.db").path)
        let watch = try WatchStore(db: reports.db)
        let sink = Sink()
        let alerts = engine(reports, watch, sink) { $0.certificateDays = 14 }
        func record(certificateDays: Double, errors: [String]) throws {
            var report = DomainReport(domain: "b.test")
            var fetch = PolicyFetchResult()
            fetch.certificate = PeerCertificate(subject: "CN=mta-sts.b.test", issuer: "CN=CA", dnsNames: ["mta-sts.b.test"],
                                                notBefore: Date(timeIntervalSince1970: clock.now() - 86_400),
                                                notAfter: Date(timeIntervalSince1970: clock.now() + certificateDays * 86_400))
            report.policyFetch = fetch
            report.findings = errors.map { Finding(.error, $0, "\($0) happened") }
            try watch.record(report, at: clock.now())
        }
        try record(certificateDays: 60, errors: [])
        #expect(try await alerts.evaluate(reports: false).isEmpty)
        clock.advance(50 * 86_400)
        try record(certificateDays: 10, errors: ["sts-policy-fetch-error"])
        var raised = try await alerts.evaluate(reports: false)
        #expect(Set(raised.map(\.kind)) == [.certificateExpiring, .checkError], "\(raised.map(\.message))")
        #expect(raised.first { $0.kind == .certificateExpiring }?.message.contains("mta-sts.b.test expires in 10 day(s)") == true)
        #expect(raised.first { $0.kind == .checkError }?.subject == "sts-policy-fetch-error")
        try record(certificateDays: 9, errors: ["sts-policy-fetch-error"])
        #expect(try await alerts.evaluate(reports: false).isEmpty)
        // The error clears (no alert), then comes back (alerts again).
        try record(certificateDays: 9, errors: [])
        #expect(try await alerts.evaluate(reports: false).isEmpty)
        try record(certificateDays: 9, errors: ["sts-policy-fetch-error"])
        raised = try await alerts.evaluate(reports: false)
        #expect(raised.map(\.kind) == [.checkError])
    }

    @Test("the webhook body and the alert mail: JSON with text; headers cannot be injected by a value")
    func forms() throws {
        let alert = Alert(domain: "a.test", kind: .newOrganization, subject: "Evil\r\nBcc: x@y", message: "a.test: a new sending organisation reports: Evil", link: "https://r.example/domains/a.test")
        let json = try JSONParser.parse(AlertTransports.json(alert, at: 1_795_000_000)).value
        #expect(json["text"]?.stringValue == "a.test: a new sending organisation reports: Evil — https://r.example/domains/a.test")
        #expect(json["kind"]?.stringValue == "new-organization" && json["at"]?.stringValue == "2026-11-18T11:06:40Z")
        let mail = String(decoding: try AlertTransports.mail(alert, from: "mtasts@r.example", to: "admin@r.example", at: 1_795_000_000), as: UTF8.self)
        let head = mail.components(separatedBy: "\r\n\r\n").first ?? ""
        #expect(!head.contains("\r\nBcc:"))
        #expect(head.contains("Subject: [mtasts] a.test: new-organization Evil  Bcc: x@y"))
        #expect(throws: MailHeader.Unsafe.self) { try AlertTransports.mail(alert, from: "mtasts@r.example", to: "a@b\r\nBcc: c@d", at: 0) }
    }
}

/// `serve`'s watch and alerts from its configuration, in-process.
@Suite struct WatchServiceSetupTests {
    @Test("nothing configured: no service; watch domains or alert destinations: a service; an unusable DNS server is a clear error")
    func make() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("watchsetup-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let reports = try ReportStore(url: dir.appendingPathComponent("w.db").path)
        let watch = try WatchStore(db: reports.db)
        let logger = Logger(label: "test")
        #expect(try WatchService.make(ServeConfig(), reports: reports, watch: watch, logger: logger) == nil)
        var checks = ServeConfig()
        checks.watch.domains = ["example.com"]
        checks.watch.dnsServer = "127.0.0.1:53"
        #expect(try WatchService.make(checks, reports: reports, watch: watch, logger: logger) != nil)
        var alerts = ServeConfig()
        alerts.alerts.webhooks = ["https://hook.example/x"]
        #expect(try WatchService.make(alerts, reports: reports, watch: watch, logger: logger) != nil)
        checks.watch.dnsServer = "not an address"
        #expect(throws: WatchService.SetupError.self) { try WatchService.make(checks, reports: reports, watch: watch, logger: logger) }
        // The checker's set-up is the watch section's.
        let setup = DomainChecker.Setup(checks.watch)
        #expect(setup.dnsServer == "not an address" && setup.timeout == 10 && setup.smtp && setup.policyPort == 443)
    }
}
