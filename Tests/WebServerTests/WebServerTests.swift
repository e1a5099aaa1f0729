import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import MTASTSConfig
import MTASTSCore
import NIOCore
import ServerSupport
import Testing
import TLSRPTReceiver
@testable import WebServer

/// `mtasts serve`'s routes in-process, through Hummingbird's router test client: no socket, no
/// child process. The connection limits (idle, slow headers, connection cap) are proven against
/// the real listener in `LiveServerTests`.
@Suite struct WebServerRouteTests {
    let dir: URL

    init() throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("webserver-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        MetricsExport.bootstrap()
    }

    func service(_ edit: (inout ServeConfig) -> Void = { _ in }) throws -> ReportWebService {
        var config = ServeConfig()
        config.database = dir.appendingPathComponent("reports-\(UUID().uuidString.prefix(6)).db").path
        config.policies = ["example.com": "version: STSv1\r\nmode: enforce\r\nmx: mx.example.com\r\nmax_age: 86400\r\n"]
        config.maxCompressed = 64 * 1024
        edit(&config)
        return ReportWebService(config: config, store: try ReportStore(url: config.database),
                                clock: ManualClock(1_795_000_000))
    }

    static func report(id: String, failed: String = "2") -> String {
        #"{"organization-name":"Example Org","date-range":{"start-datetime":"2026-11-29T00:00:00Z","end-datetime":"2026-11-29T23:59:59Z"},"contact-info":"tlsrpt@example.org","report-id":"\#(id)","policies":[{"policy":{"policy-type":"sts","policy-string":["version: STSv1","mode: testing","mx: mx.example.com","max_age: 86400"],"policy-domain":"example.com"},"summary":{"total-successful-session-count":10,"total-failure-session-count":\#(failed)},"failure-details":[{"result-type":"certificate-expired","sending-mta-ip":"192.0.2.1","receiving-mx-hostname":"mx.example.com","receiving-ip":"198.51.100.1","failed-session-count":\#(failed)}]}]}"#
    }

    func body(_ response: TestResponse) -> String { String(buffer: response.body) }

    /// The router on a real listener (port 0) with a client that sets the Host header: Hummingbird's
    /// test clients always say `localhost`, and the policy host is chosen by Host.
    func withHosts(_ web: ReportWebService, _ body: @escaping @Sendable (HostClient) async throws -> Void) async throws {
        let app = Application(router: web.router(apiAllowed: true), configuration: .init(address: .hostname("127.0.0.1", port: 0)))
        try await app.test(.live) { client in
            let raw = TestClient(host: "127.0.0.1", port: client.port!)
            raw.connect()
            do { try await body(HostClient(client: raw)) } catch {
                try? await raw.shutdown()
                throw error
            }
            try await raw.shutdown()
        }
    }

    struct HostClient: Sendable {
        let client: TestClient
        func execute(uri: String, method: HTTPRequest.Method, headers: [String: String] = [:], body: ByteBuffer? = nil,
                     _ check: (TestClient.Response) throws -> Void) async throws {
            let response = try await client.execute(.init(uri, method: method, authority: headers["Host"], body: body))
            try check(response)
        }
    }

    func body(_ response: TestClient.Response) -> String { response.body.map { String(buffer: $0) } ?? "" }

    // CONFORMANCE RFC 8461 #7, #8: the policy at https://mta-sts.DOMAIN/.well-known/mta-sts.txt, text/plain.
    @Test("policy host by Host header (CONFORMANCE 8461 #7, #8)") func policyHost() async throws {
        try await withHosts(try service()) { client in
            try await client.execute(uri: "/.well-known/mta-sts.txt", method: .get, headers: ["Host": "mta-sts.example.com"]) { r in
                #expect(r.status == .ok)
                #expect(r.headers[.contentType] == "text/plain")
                #expect(body(r) == "version: STSv1\r\nmode: enforce\r\nmx: mx.example.com\r\nmax_age: 86400\r\n")
            }
            try await client.execute(uri: "/.well-known/mta-sts.txt", method: .get, headers: ["Host": "MTA-STS.Example.COM.:443"]) { r in
                #expect(r.status == .ok)
            }
            try await client.execute(uri: "/.well-known/mta-sts.txt", method: .head, headers: ["Host": "mta-sts.example.com"]) { r in
                #expect(r.status == .ok)
                #expect((r.body?.readableBytes ?? 0) == 0)
            }
            try await client.execute(uri: "/api/summary", method: .get, headers: ["Host": "mta-sts.example.com"]) { r in
                #expect(r.status == .notFound)
            }
            try await client.execute(uri: "/.well-known/mta-sts.txt", method: .get, headers: ["Host": "mta-sts.other.example"]) { r in
                #expect(r.status == .notFound)
                #expect(body(r) == "no MTA-STS policy is served for this host\n")
            }
            try await client.execute(uri: "/.well-known/mta-sts.txt", method: .post, headers: ["Host": "mta-sts.example.com"]) { r in
                #expect(r.status == .methodNotAllowed)
            }
        }
    }

    @Test("report endpoint: 201, 200 duplicate, 400, 413 (Content-Length and streamed) (CONFORMANCE 8460 #13, #16)") func reportEndpoint() async throws {
        let web = try service()
        let app = Application(router: web.router(apiAllowed: true))
        try await app.test(.router) { client in
            try await client.execute(uri: "/tlsrpt", method: .post, body: ByteBuffer(string: Self.report(id: "r1"))) { r in
                #expect(r.status == .created, "\(body(r))")
                #expect(body(r).contains("\"stored\""))
            }
            try await client.execute(uri: "/tlsrpt", method: .post, body: ByteBuffer(string: Self.report(id: "r1"))) { r in
                #expect(r.status == .ok)
                #expect(body(r).contains("\"already-stored\": [\n    1"))
            }
            try await client.execute(uri: "/tlsrpt", method: .post, body: ByteBuffer(string: "{\"not\": \"a report\"}")) { r in
                #expect(r.status == .badRequest)
                #expect(body(r).contains("not a TLS report"))
            }
            try await client.execute(uri: "/tlsrpt", method: .post, body: ByteBuffer(bytes: [0xFF, 0xFE, 0x00, 0x01])) { r in
                #expect(r.status == .badRequest)
            }
            let big = ByteBuffer(repeating: UInt8(ascii: " "), count: 70 * 1024)
            try await client.execute(uri: "/tlsrpt", method: .post, body: big) { r in
                #expect(r.status == .contentTooLarge)
                #expect(body(r).contains("larger than 65536 bytes"))
                #expect(r.headers[.connection] == "close")
            }
            try await client.execute(uri: "/tlsrpt", method: .get) { r in
                #expect(r.status == .methodNotAllowed)
            }
        }
        #expect(try web.store.list(ReportFilter(), limit: 10).count == 1)
    }

    @Test("hostile numbers: counts past 2^53−1 or negative are 400 and not stored; 1,100 reports of 2^53−1 failures sum without a trap")
    func hostileNumbers() async throws {
        let web = try service()
        let app = Application(router: web.router(apiAllowed: true))
        let huge = String(repeating: #"{"result-type":"certificate-expired","failed-session-count":999999999999999999},"#, count: 10).dropLast()
        let overflowing = Self.report(id: "big", failed: "1").replacingOccurrences(
            of: #"[{"result-type":"certificate-expired","sending-mta-ip":"192.0.2.1","receiving-mx-hostname":"mx.example.com","receiving-ip":"198.51.100.1","failed-session-count":1}]"#,
            with: "[\(huge)]")
        try await app.test(.router) { client in
            for (name, text) in [("ten huge details", overflowing), ("a negative count", Self.report(id: "neg", failed: "-5")),
                                 ("2^53", Self.report(id: "p53", failed: "9007199254740992")), ("a fraction", Self.report(id: "fr", failed: "1.5")),
                                 ("1e300", Self.report(id: "e300", failed: "1e300"))] {
                let payload = text
                try await client.execute(uri: "/tlsrpt", method: .post, body: ByteBuffer(string: payload)) { r in
                    #expect(r.status == .badRequest, "\(name): \(body(r))")
                    #expect(body(r).contains("session count"), "\(name): \(body(r))")
                }
            }
        }
        #expect(try web.store.list(ReportFilter(), limit: 10).isEmpty)
        // The largest valid count, many times: every sum saturates instead of trapping.
        let ingestor = ReportIngestor(store: web.store, lookup: { _ in nil })
        for i in 0..<1_100 {
            _ = try ingestor.ingest(body: Array(Self.report(id: "max\(i)", failed: "9007199254740991").utf8))
        }
        try await app.test(.router) { client in
            for uri in ["/api/summary", "/api/readiness/example.com?until=2026-11-30", "/api/reports?limit=5"] {
                try await client.execute(uri: uri, method: .get) { r in
                    #expect(r.status == .ok, "\(uri): \(body(r))")
                }
            }
        }
        let summary = try web.store.summary(ReportFilter())
        #expect(summary.failed == Int64.max)
        #expect(summary.byResultType.first?.sessions == Int64.max || summary.byResultType.first?.sessions == 9_007_199_254_740_991)
        #expect(try web.store.list(ReportFilter(), limit: 10_000).count == 1_100)
    }

    @Test("hostile queries are answered, never a crash: ?=, &&, bounds") func hostileQueries() async throws {
        let app = Application(router: try service().router(apiAllowed: true))
        try await app.test(.router) { client in
            for uri in ["/api/summary?authenticated=maybe", "/api/readiness/example.com?authenticated=2"] {
                try await client.execute(uri: uri, method: .get) { r in #expect(r.status == .badRequest, "\(uri)") }
            }
            for uri in ["/api/summary?=", "/api/reports?&&=&", "/api/reports?=&=", "/api/summary?domain", "/api/reports?%zz=%zz",
                        "/api/readiness/example.com?=&days="] {
                try await client.execute(uri: uri, method: .get) { r in
                    #expect(r.status == .ok || r.status == .badRequest, "\(uri): \(r.status)")
                }
            }
            for uri in ["/api/reports?limit=0", "/api/reports?limit=abc", "/api/reports?limit=99999999999999999999999",
                        "/api/readiness/example.com?days=0", "/api/readiness/example.com?days=-5", "/api/readiness/example.com?tolerance=nan",
                        "/api/readiness/example.com?min_days=999999999999", "/api/summary?since=yesterday", "/api/summary?until=2026-13-45",
                        "/api/readiness/not%20a%20domain"] {
                try await client.execute(uri: uri, method: .get) { r in
                    #expect(r.status == .badRequest, "\(uri): \(r.status) \(body(r))")
                    #expect(body(r).contains("\"error\""))
                }
            }
            try await client.execute(uri: "/api/nothing-here", method: .get) { r in
                #expect(r.status == .notFound)
            }
        }
    }

    @Test("API: refused on a public listener without a token; bearer token in constant time") func apiAccess() async throws {
        let open = Application(router: try service().router(apiAllowed: false))
        try await open.test(.router) { client in
            try await client.execute(uri: "/api/summary", method: .get) { r in
                #expect(r.status == .forbidden)
                #expect(body(r).contains("reports.api_token"))
            }
            try await client.execute(uri: "/metrics", method: .get) { r in #expect(r.status == .forbidden) }
            // The report endpoint and the policy host stay open.
            try await client.execute(uri: "/tlsrpt", method: .post, body: ByteBuffer(string: Self.report(id: "pub"))) { r in
                #expect(r.status == .created)
            }
        }
        let web = try service { $0.apiToken = "s3cret" }
        #expect(web.apiAllowed(onListener: "0.0.0.0"))
        #expect(try !service().apiAllowed(onListener: "0.0.0.0"))
        #expect(try service().apiAllowed(onListener: "127.0.0.1"))
        #expect(try service { $0.apiPublic = true }.apiAllowed(onListener: "::"))
        let tokened = Application(router: web.router(apiAllowed: true))
        try await tokened.test(.router) { client in
            try await client.execute(uri: "/api/summary", method: .get) { r in
                #expect(r.status == .unauthorized)
                #expect(r.headers[.wwwAuthenticate] == "Bearer")
            }
            try await client.execute(uri: "/api/summary", method: .get, headers: [.authorization: "Bearer s3creT"]) { r in #expect(r.status == .unauthorized) }
            try await client.execute(uri: "/api/summary", method: .get, headers: [.authorization: "Bearer s3cret"]) { r in #expect(r.status == .ok) }
        }
        #expect(APIAccessMiddleware.constantTimeEqual(Array("abc".utf8), Array("abc".utf8)))
        #expect(!APIAccessMiddleware.constantTimeEqual(Array("abc".utf8), Array("abd".utf8)))
        #expect(!APIAccessMiddleware.constantTimeEqual(Array("abc".utf8), Array("abcd".utf8)))
        #expect(!APIAccessMiddleware.constantTimeEqual([], Array("a".utf8)))
    }

    @Test("503 with Retry-After when the database fails; the policy host still answers (CONFORMANCE 8460 #16)") func databaseDown() async throws {
        let web = try service()
        for table in ["failure_details", "report_policies", "failure_rollup", "reports"] { _ = try web.store.db.query("DROP TABLE \(table)") }
        try await withHosts(web) { client in
            try await client.execute(uri: "/tlsrpt", method: .post, body: ByteBuffer(string: Self.report(id: "down"))) { r in
                #expect(r.status == .serviceUnavailable)
                #expect(r.headers[.retryAfter] == "300")
            }
            try await client.execute(uri: "/api/reports", method: .get) { r in
                #expect(r.status == .serviceUnavailable)
            }
            try await client.execute(uri: "/.well-known/mta-sts.txt", method: .get, headers: ["Host": "mta-sts.example.com"]) { r in
                #expect(r.status == .ok)
            }
        }
    }

    @Test("/metrics: Prometheus text with the receiver's counters") func metrics() async throws {
        let web = try service()
        let app = Application(router: web.router(apiAllowed: true))
        try await app.test(.router) { client in
            try await client.execute(uri: "/tlsrpt", method: .post, body: ByteBuffer(string: Self.report(id: "m1"))) { r in #expect(r.status == .created) }
            try await client.execute(uri: "/metrics", method: .get) { r in
                #expect(r.status == .ok)
                #expect(r.headers[.contentType] == MetricsExport.contentType)
                #expect(body(r).contains("mtasts_reports_received_total{outcome=\"stored\"}"), "\(body(r))")
            }
        }
    }
}
