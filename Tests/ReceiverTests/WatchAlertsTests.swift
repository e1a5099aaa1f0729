import Foundation
import Hummingbird
import NIOConcurrencyHelpers
import Testing
import TestSupport

/// `mtasts serve` with `watch:` and `alerts:` end to end: dnsmasq, a policy host whose
/// certificate expires in 5 days, an MX with STARTTLS, a webhook receiver (HTTPS, test CA) and a
/// mail sink (STARTTLS) started by the test. Reports posted to serve and the periodic check cross
/// thresholds; the webhook and the mailbox get exactly the expected alerts, once, and a restarted
/// serve on the same database raises none again.
@Suite(.serialized) struct WatchAlertsTests {
    let dir: URL

    init() throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("watch-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    }

    static func report(org: String, id: String, day: String, ok: Int, failures: [(String, Int)]) -> String {
        let details = failures.map { #"{"result-type":"\#($0.0)","receiving-mx-hostname":"mx.watched.test","receiving-ip":"127.0.0.32","failed-session-count":\#($0.1)}"# }.joined(separator: ",")
        let failed = failures.reduce(0) { $0 + $1.1 }
        return #"{"organization-name":"\#(org)","date-range":{"start-datetime":"\#(day)T00:00:00Z","end-datetime":"\#(day)T23:59:59Z"},"contact-info":"x@example.org","report-id":"\#(id)","policies":[{"policy":{"policy-type":"sts","policy-string":["version: STSv1","mode: testing","mx: mx.watched.test","max_age: 86400"],"policy-domain":"watched.test"},"summary":{"total-successful-session-count":\#(ok),"total-failure-session-count":\#(failed)},"failure-details":[\#(details)]}]}"#
    }

    @Test("alerts reach a webhook and a mailbox exactly once per change, from reports and from the periodic check")
    func alertsEndToEnd() async throws {
        let ca = try TestCA()
        let caFile = try ca.writePEM(to: dir)
        let policyPort = TestServer.freePort(), smtpPort = TestServer.freePort()
        let dns = try DNSMasq(lines: [
            #"txt-record=_mta-sts.watched.test,"v=STSv1; id=w1;""#,
            #"txt-record=_smtp._tls.watched.test,"v=TLSRPTv1; rua=mailto:tlsrpt@watched.test""#,
            "host-record=mta-sts.watched.test,127.0.0.31",
            "mx-host=watched.test,mx.watched.test,10",
            "host-record=mx.watched.test,127.0.0.32",
        ])
        let policy = "version: STSv1\nmode: testing\nmx: mx.watched.test\nmax_age: 86400\n"
        let policyHost = try TestServer.policyHost(address: "127.0.0.31", port: policyPort,
                                                   leaf: ca.issue(dnsNames: ["mta-sts.watched.test"], validity: .expiringIn(days: 5)),
                                                   behaviour: .respond(status: 200, contentType: "text/plain", body: policy))
        let mx = try TestServer.mx(address: "127.0.0.32", port: smtpPort, hostname: "mx.watched.test", leaf: ca.issue(dnsNames: ["mx.watched.test"]), behaviour: .starttls)
        // The webhook receiver and the mail sink.
        let hooks = NIOLockedValueBox<[String]>([])
        let router = Router()
        router.post("/hook") { request, _ in
            let body = try await request.body.collect(upTo: 1 << 20)
            hooks.withLockedValue { $0.append(String(buffer: body)) }
            return Response(status: .noContent)
        }
        let hookPort = TestServer.freePort()
        let hook = try HTTPTestServer(address: "127.0.0.1", port: hookPort, leaf: ca.issue(dnsNames: ["localhost"]), router: router)
        let mailPort = TestServer.freePort()
        let mailLog = MailLog()
        let sink = try TestServer.mx(address: "127.0.0.1", port: mailPort, hostname: "localhost", leaf: ca.issue(dnsNames: ["localhost"]), behaviour: .starttls, mail: mailLog)
        let db = dir.appendingPathComponent("w.db").path
        func config() -> String {
            """
            dashboard:
              public_url: "https://reports.example"
            watch:
              domains: [watched.test]
              interval: 3600
              dns_server: "\(dns.server)"
              ca_file: "\(caFile)"
              policy_port: \(policyPort)
              smtp_port: \(smtpPort)
              timeout: 5
            alerts:
              webhook: "https://localhost:\(hookPort)/hook"
              mail:
                to: admin@example.test
                from: mtasts@example.test
                server: "localhost:\(mailPort)"
                tls: starttls
              ca_file: "\(caFile)"
              interval: 1
              certificate_days: 14
            """
        }
        var serve: Serve? = try Serve(dir: dir, database: db, extra: config())
        let base = serve!.base
        // The check runs at start: its certificate alert (5 days < 14) arrives.
        func waitFor(_ count: Int, _ what: String) async throws {
            for _ in 0..<300 where hooks.withLockedValue({ $0.count }) < count { try await Task.sleep(for: .milliseconds(100)) }
            #expect(hooks.withLockedValue { $0.count } >= count, "\(what): \(hooks.withLockedValue { $0 }) \(serve?.log ?? "")")
        }
        try await waitFor(1, "the certificate alert")
        // A report whose sender fails 40 of 100 sessions today: a new organisation, a new failure
        // type, the rate under 95 %, a jump (40 ≥ 10).
        let today = String(ISO8601DateFormatter().string(from: Date()).prefix(10))
        let r = try curl(["--data-binary", Self.report(org: "Example Sender", id: "e1", day: today, ok: 60, failures: [("certificate-host-mismatch", 40)]),
                          "-H", "Content-Type: application/tlsrpt+json", base + "/tlsrpt"])
        #expect(r.status == 201, "\(r.body)")
        try await waitFor(5, "the report alerts")
        // Several evaluations later (every second), nothing more.
        try await Task.sleep(for: .seconds(3))
        let bodies = hooks.withLockedValue { $0 }
        let kinds = bodies.compactMap { (try? JSONSerialization.jsonObject(with: Data($0.utf8))) as? [String: Any] }.map { "\($0["kind"] ?? "")/\($0["subject"] ?? "")" }
        #expect(kinds.sorted() == ["certificate-expiring/mta-sts.watched.test", "failure-jump/certificate-host-mismatch", "new-failure-type/certificate-host-mismatch",
                                   "new-organization/Example Sender", "success-rate/"], "\(bodies)")
        let first = bodies.compactMap { (try? JSONSerialization.jsonObject(with: Data($0.utf8))) as? [String: Any] }.first { ($0["kind"] as? String) == "success-rate" }
        #expect((first?["text"] as? String)?.contains("60.00 %") == true)
        #expect((first?["link"] as? String) == "https://reports.example/domains/watched.test")
        // The same alerts by mail, over STARTTLS.
        for _ in 0..<50 where mailLog.messages.count < 5 { try await Task.sleep(for: .milliseconds(100)) }
        let mails = mailLog.messages
        #expect(mails.count == 5 && mails.allSatisfy(\.tls), "\(mails.map(\.data))")
        #expect(mails.contains { $0.data.contains("Subject: [mtasts] watched.test: certificate-expiring mta-sts.watched.test") && ($0.data.contains("expires in 4 day(s)") || $0.data.contains("expires in 5 day(s)")) }, "\(mails.map(\.data))")
        // The dashboard shows them, with their delivery.
        let page = try curl([base + "/"]).body
        #expect(page.contains("delivered") && page.contains("watched.test"))
        // A restart on the same database: the state is kept; no alert again.
        serve = nil
        serve = try Serve(dir: dir, database: db, extra: config())
        try await Task.sleep(for: .seconds(4))
        #expect(hooks.withLockedValue { $0.count } == 5, "\(hooks.withLockedValue { $0 })")
        #expect(mailLog.messages.count == 5)
        #expect(serve?.log.contains("check watched.test: warnings") == true || serve?.log.contains("check watched.test: ok") == true, "\(serve?.log ?? "")")
        _ = (policyHost, mx, hook, sink)
    }
}
