import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import MTASTSCheck
import MTASTSConfig
import MTASTSCore
import MTASTSNet
import NIOCore
import ServerSupport
import Testing
import TLSRPTReceiver
import Watch
@testable import WebServer

/// The dashboard's pages in-process, through Hummingbird's router test client: a database filled
/// with known numbers (10 days × 2 senders × 2 domains), and the charts, tables, drill-down,
/// report page, escaping and access rules checked against them. The browser test
/// (`DashboardBrowserTests`) loads the same pages in Chromium.
@Suite struct DashboardTests {
    let dir: URL
    static let now: Double = 1_795_000_000  // 2026-11-18T…Z

    init() throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("dashboard-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        MetricsExport.bootstrap()
    }

    static func day(_ d: Int) -> String { RFC3339.formatDay(Int64(now) - Int64(9 - d) * 86_400) }

    static func report(org: String, id: String, day: String, domain: String, ok: Int, failures: [(type: String, count: Int, mx: String, ip: String)] = []) -> String {
        let details = failures.map { f in
            #"{"result-type":"\#(f.type)","sending-mta-ip":"192.0.2.9","receiving-mx-hostname":"\#(f.mx)","receiving-ip":"\#(f.ip)","failed-session-count":\#(f.count)}"#
        }.joined(separator: ",")
        let failed = failures.reduce(0) { $0 + $1.count }
        return #"{"organization-name":"\#(org)","date-range":{"start-datetime":"\#(day)T00:00:00Z","end-datetime":"\#(day)T23:59:59Z"},"contact-info":"tlsrpt@\#(org.lowercased()).example","report-id":"\#(id)","policies":[{"policy":{"policy-type":"sts","policy-string":["version: STSv1","mode: testing","mx: mx.\#(domain)","max_age: 86400"],"policy-domain":"\#(domain)"},"summary":{"total-successful-session-count":\#(ok),"total-failure-session-count":\#(failed)},"failure-details":[\#(details)]}]}"#
    }

    /// The receiver tests' data set: ready.test never fails; notyet.test has Microsoft's 2
    /// certificate-expired failures at mx2.notyet.test on days 3 and 4.
    static func fill(_ store: ReportStore) throws {
        let ingestor = ReportIngestor(store: store, dkimPolicy: .ignore, lookup: { _ in nil })
        for d in 0..<10 {
            let fails = d == 3 || d == 4 ? [(type: "certificate-expired", count: 2, mx: "mx2.notyet.test", ip: "198.51.100.7")] : []
            for body in [report(org: "Google", id: "g-r-\(d)", day: day(d), domain: "ready.test", ok: 100),
                         report(org: "Microsoft", id: "m-r-\(d)", day: day(d), domain: "ready.test", ok: 50),
                         report(org: "Google", id: "g-n-\(d)", day: day(d), domain: "notyet.test", ok: 200),
                         report(org: "Microsoft", id: "m-n-\(d)", day: day(d), domain: "notyet.test", ok: 40, failures: fails)] {
                let outcome = try ingestor.ingest(body: Array(body.utf8), at: now)
                #expect(outcome.stored.count == 1, "\(outcome.notAReport ?? "")")
            }
        }
    }

    func service(_ edit: (inout ServeConfig) -> Void = { _ in }) throws -> ReportWebService {
        var config = ServeConfig()
        config.database = dir.appendingPathComponent("reports-\(UUID().uuidString.prefix(6)).db").path
        edit(&config)
        let store = try ReportStore(url: config.database)
        return ReportWebService(config: config, store: store, watch: try WatchStore(db: store.db), clock: ManualClock(Self.now))
    }

    func body(_ response: TestResponse) -> String { String(buffer: response.body) }

    static func count(_ needle: String, in text: String) -> Int { text.components(separatedBy: needle).count - 1 }

    /// The rows of one table (by id), as the text between `<tr>` tags.
    static func rows(_ html: String, table id: String) -> [String] {
        guard let start = html.range(of: "<table id=\"\(id)\"") else { return [] }
        let rest = html[start.upperBound...]
        let end = rest.range(of: "</table>")?.lowerBound ?? rest.endIndex
        return rest[..<end].components(separatedBy: "<tr>").dropFirst(2).map { String($0) }
    }

    @Test("overview, domain page, drill-down and report page over known numbers")
    func pagesOverKnownNumbers() async throws {
        let web = try service()
        try Self.fill(web.store)
        let app = Application(router: web.router(apiAllowed: true))
        try await app.test(.router) { client in
            try await client.execute(uri: "/", method: .get) { r in
                #expect(r.status == .ok)
                #expect(r.headers[.contentType] == "text/html; charset=utf-8")
                #expect(r.headers[HTTPField.Name("Content-Security-Policy")!]?.contains("default-src 'none'") == true)
                let html = body(r)
                let rows = Self.rows(html, table: "domains")
                #expect(rows.count == 2)
                let notyet = rows.first { $0.contains(">notyet.test<") } ?? ""
                let ready = rows.first { $0.contains(">ready.test<") } ?? ""
                // One sparkline point per day with sessions; 2,400 + 4 sessions; 1 of 2 senders failing.
                #expect(Self.count("class=\"point\"", in: notyet) == 10)
                #expect(notyet.contains(">2,404<") && notyet.contains("1 of 2") && notyet.contains("not ready"))
                #expect(notyet.contains("99.8 %"))
                #expect(ready.contains(">1,500<") && ready.contains("0 of 2") && ready.contains("ready for enforce") && ready.contains("100 %"))
                #expect(ready.contains("testing"))  // the mode senders reported
                #expect(html.contains("(UTC)"))
            }
            try await client.execute(uri: "/domains/notyet.test", method: .get) { r in
                #expect(r.status == .ok)
                let html = body(r)
                #expect(Self.count("class=\"bar\"", in: html) == 10)
                #expect(Self.count("class=\"stack\"", in: html) == 2)
                #expect(Self.count("class=\"segment\" data-type=\"certificate-expired\"", in: html) == 2)
                #expect(html.contains("data-day=\"\(Self.day(3))\"") && html.contains("data-day=\"\(Self.day(4))\""))
                let problems = Self.rows(html, table: "problems")
                #expect(problems.count == 1 && problems.first?.contains("Microsoft") == true && problems.first?.contains(">4<") == true)
                let mx = Self.rows(html, table: "by-mx-host")
                #expect(mx.count == 1 && mx.first?.contains("href=\"/domains/notyet.test/reports?mx=mx2.notyet.test\"") == true)
                #expect(Self.rows(html, table: "by-organization").count == 2)
                #expect(html.contains("not ready"))
            }
            try await client.execute(uri: "/domains/ready.test", method: .get) { r in
                let html = body(r)
                #expect(Self.count("class=\"bar\"", in: html) == 10)
                #expect(Self.count("class=\"stack\"", in: html) == 0)
                #expect(html.contains("ready for enforce"))
            }
            // Drill-down by MX host, receiving IP, result type and organisation.
            for query in ["mx=mx2.notyet.test", "ip=198.51.100.7", "type=certificate-expired"] {
                try await client.execute(uri: "/domains/notyet.test/reports?\(query)", method: .get) { r in
                    #expect(r.status == .ok)
                    let rows = Self.rows(body(r), table: "reports")
                    #expect(rows.count == 2, "\(query)")
                    #expect(rows.contains { $0.contains(">m-n-3<") } && rows.contains { $0.contains(">m-n-4<") }, "\(query)")
                }
            }
            try await client.execute(uri: "/domains/notyet.test/reports?organization=Google", method: .get) { r in
                #expect(Self.rows(body(r), table: "reports").count == 10)
            }
            try await client.execute(uri: "/domains/notyet.test/reports", method: .get) { r in #expect(r.status == .badRequest) }
            try await client.execute(uri: "/domains/nothing.test", method: .get) { r in #expect(r.status == .notFound) }
            try await client.execute(uri: "/domains/%3Cscript%3E", method: .get) { r in
                #expect(r.status == .badRequest)
                #expect(!body(r).contains("<script>"))
            }
            try await client.execute(uri: "/domains/notyet.test?days=0", method: .get) { r in #expect(r.status == .badRequest) }
        }
        // The report page and its raw bytes.
        let id = try #require(try web.store.list(ReportFilter(domain: "notyet.test"), limit: 100).first { $0.reportID == "m-n-3" }).id
        try await app.test(.router) { client in
            try await client.execute(uri: "/reports/\(id)", method: .get) { r in
                #expect(r.status == .ok)
                let html = body(r)
                #expect(html.contains("<pre id=\"normalized\">") && html.contains("m-n-3"))
                #expect(html.contains("n/a (HTTPS)") && html.contains("by https"))
                #expect(html.contains("&quot;report-id&quot;: &quot;m-n-3&quot;"))  // pretty-printed
                #expect(html.contains("href=\"/reports/\(id)/raw\""))
            }
            try await client.execute(uri: "/reports/\(id)/raw", method: .get) { r in
                #expect(r.status == .ok)
                #expect(body(r).contains("\"report-id\":\"m-n-3\""))
                #expect(r.headers[.contentDisposition]?.contains("attachment") == true)
            }
            try await client.execute(uri: "/reports/999999", method: .get) { r in #expect(r.status == .notFound) }
            try await client.execute(uri: "/reports/x/raw", method: .get) { r in #expect(r.status == .badRequest) }
        }
    }

    @Test("the owner's domains first; the other domains of the reports (anyone can POST them) apart and capped")
    func ownerFirst() async throws {
        let web = try service { $0.alerts.domains = ["ready.test"] }
        try Self.fill(web.store)
        try await Application(router: web.router(apiAllowed: true)).test(.router) { client in
            try await client.execute(uri: "/", method: .get) { r in
                let html = body(r)
                #expect(Self.rows(html, table: "domains").count == 1 && Self.rows(html, table: "domains").first?.contains(">ready.test<") == true)
                #expect(Self.rows(html, table: "other-domains").count == 1 && Self.rows(html, table: "other-domains").first?.contains(">notyet.test<") == true)
            }
        }
    }

    @Test("what senders write is escaped: an organisation and a domain with markup")
    func escaping() async throws {
        let web = try service()
        let ingestor = ReportIngestor(store: web.store, dkimPolicy: .ignore, lookup: { _ in nil })
        let hostile = Self.report(org: "<script>alert(1)</script>\\\"", id: "<img src=x onerror=alert(1)>", day: Self.day(9), domain: "esc.test", ok: 1,
                                  failures: [(type: "<b>x</b>", count: 1, mx: "\\\"><svg onload=alert(1)>", ip: "1.2.3.4")])
        #expect(try ingestor.ingest(body: Array(hostile.utf8), at: Self.now).stored.count == 1)
        let app = Application(router: web.router(apiAllowed: true))
        try await app.test(.router) { client in
            for uri in ["/", "/domains/esc.test", "/domains/esc.test/reports?type=%3Cb%3Ex%3C%2Fb%3E", "/reports/1"] {
                try await client.execute(uri: uri, method: .get) { r in
                    #expect(r.status == .ok, "\(uri)")
                    let html = body(r)
                    #expect(!html.contains("<script>alert") && !html.contains("<img src") && !html.contains("<svg onload") && !html.contains("<b>x</b>"), "\(uri)")
                }
            }
            try await client.execute(uri: "/domains/esc.test", method: .get) { r in
                #expect(body(r).contains("&lt;b&gt;x&lt;/b&gt;"))
            }
        }
    }

    @Test("access: a token or bcrypt users protect it; unprotected only on loopback and to a loopback Host")
    func access() async throws {
        let hash = DashboardPassword.hash("correct horse", cost: 4)
        #expect(hash.hasPrefix("$2"))
        let web = try service { $0.apiToken = "t0ken"; $0.dashboard.users = ["alice": hash] }
        let app = Application(router: web.router(apiAllowed: true, loopback: false))
        @Sendable func basic(_ user: String, _ password: String) -> String { "Basic " + Data("\(user):\(password)".utf8).base64EncodedString() }
        try await app.test(.router) { client in
            try await client.execute(uri: "/", method: .get) { r in
                #expect(r.status == .unauthorized)
                #expect(r.headers[.wwwAuthenticate]?.hasPrefix("Basic realm=\"mtasts\"") == true)
            }
            for (header, status) in [(basic("anyone", "t0ken"), HTTPResponse.Status.ok), ("Bearer t0ken", .ok), (basic("alice", "correct horse"), .ok),
                                     (basic("alice", "wrong"), .unauthorized), (basic("bob", "correct horse"), .unauthorized), ("Bearer nope", .unauthorized),
                                     ("Basic !!!", .unauthorized), (basic("alice", ""), .unauthorized)] {
                try await client.execute(uri: "/", method: .get, headers: [.authorization: header]) { r in
                    #expect(r.status == status, "\(header)")
                }
            }
            // The second right password is answered from the remembered pair (same result).
            try await client.execute(uri: "/domains/x.test", method: .get, headers: [.authorization: basic("alice", "correct horse")]) { r in
                #expect(r.status == .notFound)
            }
        }
        // Unprotected: off on a listener that is not loopback.
        let open = try service()
        try await Application(router: open.router(apiAllowed: false, loopback: false)).test(.router) { client in
            try await client.execute(uri: "/", method: .get) { r in
                #expect(r.status == .forbidden)
                #expect(body(r).contains("dashboard.users"))
            }
        }
        // Unprotected on loopback: a page that rebinds its own name to 127.0.0.1 is refused.
        try await Application(router: open.router(apiAllowed: true, loopback: true), configuration: .init(address: .hostname("127.0.0.1", port: 0))).test(.live) { client in
            let raw = TestClient(host: "127.0.0.1", port: client.port!)
            raw.connect()
            let evil = try await raw.execute(.init("/", method: .get, authority: "evil.example"))
            #expect(evil.status == .forbidden)
            let api = try await raw.execute(.init("/api/summary", method: .get, authority: "evil.example:80"))
            #expect(api.status == .forbidden)
            let local = try await raw.execute(.init("/", method: .get, authority: "127.0.0.1:8080"))
            #expect(local.status == .ok)
            let v6 = try await raw.execute(.init("/api/summary", method: .get, authority: "[::1]:8080"))
            #expect(v6.status == .ok)
            try await raw.shutdown()
        }
        // Behind a proxy (a forwarding header): a loopback Host proves nothing; refused unprotected.
        try await Application(router: open.router(apiAllowed: true, loopback: true)).test(.router) { client in
            for header in ["X-Forwarded-For", "X-Real-IP", "Forwarded"] {
                try await client.execute(uri: "/", method: .get, headers: [HTTPField.Name(header)!: "203.0.113.9"]) { r in #expect(r.status == .forbidden, "\(header)") }
                try await client.execute(uri: "/api/summary", method: .get, headers: [HTTPField.Name(header)!: "203.0.113.9"]) { r in #expect(r.status == .forbidden, "\(header)") }
            }
        }
        // A server that hosts policies is reached through a proxy: unprotected, the dashboard is
        // off even on loopback, unless trust_loopback says nothing forwards to it.
        let hosting = try service { $0.policies = ["example.com": "version: STSv1\r\nmode: testing\r\nmx: mx.example.com\r\nmax_age: 86400\r\n"] }
        try await Application(router: hosting.router(apiAllowed: true, loopback: true)).test(.router) { client in
            try await client.execute(uri: "/", method: .get) { r in #expect(r.status == .forbidden) }
        }
        let trusted = try service { $0.policies = ["example.com": "version: STSv1\r\nmode: testing\r\nmx: mx.example.com\r\nmax_age: 86400\r\n"]; $0.dashboard.trustLoopback = true }
        try await Application(router: trusted.router(apiAllowed: true, loopback: true)).test(.router) { client in
            try await client.execute(uri: "/", method: .get) { r in #expect(r.status == .ok) }
        }
        // Disabled: `/` is the short text again.
        let off = try service { $0.dashboard.enabled = false }
        try await Application(router: off.router(apiAllowed: true)).test(.router) { client in
            try await client.execute(uri: "/", method: .get) { r in #expect(body(r).hasPrefix("mtasts serve: POST TLS reports")) }
            try await client.execute(uri: "/domains/ready.test", method: .get) { r in #expect(r.status == .notFound) }
        }
    }

    @Test("the last check, its certificates and changes, and the alerts on the pages")
    func checksAndAlertsShown() async throws {
        let web = try service { $0.watch.domains = ["checked.test"] }
        let watch = try #require(web.watch)
        var first = DomainReport(domain: "checked.test")
        first.stsRecord = "v=STSv1; id=1;"
        first.tlsrptRecord = "v=TLSRPTv1; rua=mailto:r@checked.test"
        first.policyText = "version: STSv1\nmode: testing\nmx: mx.checked.test\nmax_age: 86400\n"
        first.policy = STSPolicy.parse(first.policyText!).policy
        try watch.record(first, at: Self.now - 3_600)
        var second = first
        second.stsRecord = "v=STSv1; id=2;"
        second.findings = [Finding(.error, "sts-policy-fetch-error", "https://mta-sts.checked.test/.well-known/mta-sts.txt: connection refused")]
        try watch.record(second, at: Self.now)
        try watch.logAlert(Alert(domain: "checked.test", kind: .checkError, subject: "sts-policy-fetch-error", message: "checked.test: the check found an error <x>", link: nil),
                           at: Self.now, delivery: "webhook https://hook.example/: delivered")
        let app = Application(router: web.router(apiAllowed: true))
        try await app.test(.router) { client in
            try await client.execute(uri: "/", method: .get) { r in
                let row = Self.rows(body(r), table: "domains").first ?? ""
                #expect(row.contains("checked.test") && row.contains("errors") && row.contains("sts-policy-fetch-error"))
                #expect(Self.rows(body(r), table: "alerts").first?.contains("the check found an error &lt;x&gt;") == true)
            }
            try await client.execute(uri: "/domains/checked.test", method: .get) { r in
                #expect(r.status == .ok)
                let html = body(r)
                #expect(html.contains("v=STSv1; id=2;") && html.contains("mode: testing"))
                let changes = Self.rows(html, table: "changes")
                #expect(changes.count == 1)
                #expect(changes.first?.contains("_mta-sts record changed") == true && changes.first?.contains("new error: sts-policy-fetch-error") == true)
                #expect(Self.rows(html, table: "findings").count == 1)
            }
        }
    }
}
