import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdCore
import ServiceLifecycle
import Logging
import Metrics
import MTASTSConfig
import MTASTSCore
import NIOCore
import NIOSSL
import ServerSupport
import TLSRPTReceiver
import Watch

/// `mtasts serve`: the policy host of every configured domain (by Host header, the certificate by
/// SNI), the TLS report endpoint, the read-only JSON API and `/metrics`, on Hummingbird 2.
///
/// Limits: a report body is refused with 413 from its Content-Length or as soon as a streamed
/// body passes `max_compressed`, and when it inflates past `max_decompressed`; 503 with
/// Retry-After when the database fails; time-outs and the connection cap in `ConnectionLimits`.
/// `/api/` and `/metrics` are answered on a non-loopback listener only with `api_token` set (or
/// `api_public: true`); the token is compared in constant time.
public final class ReportWebService: Sendable {
    public let config: ServeConfig
    public let store: ReportStore
    /// The watch's checks and alerts (same database), shown by the dashboard; nil: none.
    public let watch: WatchStore?
    let ingestor: ReportIngestor
    let pool: BlockingPool
    let logger: Logger
    let clock: any WallClock
    /// Policy bodies by host name (`mta-sts.DOMAIN`).
    let policyHosts: [String: ByteBuffer]
    let reportsStored = Counter(label: "mtasts_reports_received_total", dimensions: [("outcome", "stored")])
    let reportsDuplicate = Counter(label: "mtasts_reports_received_total", dimensions: [("outcome", "duplicate")])
    let reportsRefused = Counter(label: "mtasts_reports_received_total", dimensions: [("outcome", "refused")])
    let reportsFailed = Counter(label: "mtasts_reports_received_total", dimensions: [("outcome", "unavailable")])
    let policyRequests = Counter(label: "mtasts_policy_requests_total")

    public init(config: ServeConfig, store: ReportStore, watch: WatchStore? = nil, pool: BlockingPool = .shared, logger: Logger = Log.logger("serve"),
                clock: any WallClock = SystemClock()) {
        self.config = config
        self.store = store
        self.watch = watch
        self.ingestor = ReportIngestor(store: store, maxSize: config.maxDecompressed, dkimPolicy: .ignore, lookup: { _ in nil })
        self.pool = pool
        self.logger = logger
        self.clock = clock
        var hosts: [String: ByteBuffer] = [:]
        for (domain, text) in config.policies { hosts["mta-sts." + domain] = ByteBuffer(string: text) }
        policyHosts = hosts
    }

    /// Whether `/api/` may be answered on a listener bound to `host`.
    public func apiAllowed(onListener host: String) -> Bool {
        config.apiToken != nil || config.apiPublic || Self.isLoopback(host)
    }

    static func isLoopback(_ host: String) -> Bool {
        if host == "localhost" || host == "::1" { return true }
        var address = in_addr()
        return inet_pton(AF_INET, host, &address) == 1 && (UInt32(bigEndian: address.s_addr) >> 24) == 127
    }

    /// The routes of one listener: the policy hosts first (by Host, whatever the path), then the
    /// router; errors become `{"error": ...}`.
    /// `loopback`: the listener's address is loopback (the dashboard answers there unprotected).
    public func router(apiAllowed: Bool, loopback: Bool = true) -> ServeRoutes {
        ServeRoutes(router: routes(apiAllowed: apiAllowed, loopback: loopback), policyHost: PolicyHost(service: self))
    }

    func routes(apiAllowed: Bool, loopback: Bool = true) -> Router<BasicRequestContext> {
        let router = Router(context: BasicRequestContext.self)
        router.get("/healthz") { _, _ in Reply.text(.ok, "ok\n") }
        if config.dashboard.enabled {
            // Unprotected only on loopback, and not where the server also hosts policies (it is
            // then reached from outside through a proxy) unless dashboard.trust_loopback says so.
            let access = DashboardAccess(listenerAllowed: loopback && (config.policies.isEmpty || config.dashboard.trustLoopback),
                                         token: config.apiToken, users: config.dashboard.users, pool: pool)
            Dashboard(service: self, access: access).register(on: router)
        } else {
            router.get("/") { [config] _, _ in
                Reply.text(.ok, "mtasts serve: POST TLS reports to \(config.reportPath); JSON at /api/reports, /api/summary, /api/readiness/DOMAIN\n")
            }
        }
        let reportPath = RouterPath(config.reportPath)
        router.post(reportPath) { [self] request, _ in try await receive(request) }
        router.get(reportPath) { _, _ in
            Reply.error(.methodNotAllowed, "POST a TLS report (application/tlsrpt+gzip or application/tlsrpt+json) here")
        }
        // Unprotected answers on loopback only to a loopback Host: a web page cannot read them
        // through a name of its own that it rebinds to 127.0.0.1 (DNS rebinding).
        let localOnly = config.apiToken == nil && !config.apiPublic
        let api = router.group("api").add(middleware: APIAccessMiddleware(allowed: apiAllowed, token: config.apiToken, localHostOnly: localOnly))
        api.get("reports") { [self] request, _ in try await listReports(request) }
        api.get("reports/:id") { [self] request, context in try await showReport(context.parameters.get("id") ?? "") }
        api.get("summary") { [self] request, _ in try await summary(request) }
        api.get("readiness/:domain") { [self] request, context in try await readiness(request, domain: context.parameters.get("domain") ?? "") }
        router.group("metrics").add(middleware: APIAccessMiddleware(allowed: apiAllowed, token: config.apiToken, localHostOnly: localOnly))
            .get { _, _ in Reply.metrics() }
        return router
    }

    /// One Hummingbird application per listener (each is a ServiceLifecycle service).
    public func applications(limits: ConnectionLimits, tls: TLSConfiguration?,
                             onListening: @escaping @Sendable (String, Int) -> Void = { _, _ in }) throws -> [any Service] {
        let sslContext = try tls.map { try NIOSSLContext(configuration: $0) }
        let perAddress = PerAddressLimit(limit: limits.maxPerAddress)
        var apps: [any Service] = []
        for address in config.listen {
            let allowed = apiAllowed(onListener: address.host)
            if !allowed {
                logger.warning("the API and /metrics are not answered on \(address.host):\(address.port): it is not a loopback address and reports.api_token is not set (reports.api_public: true answers them to anyone)")
            } else if config.apiPublic && config.apiToken == nil && !Self.isLoopback(address.host) {
                logger.warning("reports.api_public: the stored reports are readable by anyone who reaches \(address.host):\(address.port)")
            }
            let host = address.host
            let app = Application(
                router: router(apiAllowed: allowed, loopback: Self.isLoopback(address.host)),
                server: .guarded(limits: limits, sslContext: sslContext, logger: logger, perAddress: perAddress),
                configuration: ApplicationConfiguration(address: .hostname(host, port: address.port), serverName: nil, backlog: limits.backlog,
                                                        availableConnectionsDelegate: MaximumAvailableConnections(limits.maxConnections, logger: logger)),
                onServerRunning: { channel in onListening(host, channel.localAddress?.port ?? 0) },
                logger: logger)
            apps.append(app)
        }
        return apps
    }

    // MARK: report endpoint

    func receive(_ request: Request) async throws -> Response {
        let limit = config.maxCompressed
        if let length = request.headers[.contentLength].flatMap({ Int($0) }), length > limit {
            reportsRefused.increment()
            return Reply.tooLarge(limit)
        }
        var body = ByteBuffer()
        for try await chunk in request.body {
            guard body.readableBytes + chunk.readableBytes <= limit else {
                reportsRefused.increment()
                return Reply.tooLarge(limit)
            }
            var chunk = chunk
            body.writeBuffer(&chunk)
        }
        let bytes = Array(body.readableBytesView)
        body = ByteBuffer()
        let ingestor = self.ingestor, time = clock.now()
        let outcome: ReportIngestor.Outcome
        do {
            outcome = try await pool.run { try ingestor.ingest(body: bytes, at: time) }
        } catch {
            reportsFailed.increment()
            logger.error("report not stored: \(error)")
            var r = Reply.error(.serviceUnavailable, "the report could not be stored now; try again later")
            r.headers[.retryAfter] = "300"
            return r
        }
        if let reason = outcome.notAReport {
            reportsRefused.increment()
            return Reply.error(outcome.tooLarge ? .contentTooLarge : .badRequest, "not a TLS report: \(reason)")
        }
        if outcome.stored.isEmpty { reportsDuplicate.increment() } else { reportsStored.increment() }
        return Reply.json(outcome.stored.isEmpty ? .ok : .created, .object([
            JSONMember("stored", .array(outcome.stored.map { .int($0) })),
            JSONMember("already-stored", .array(outcome.duplicates.map { .int($0) })),
        ]))
    }

    // MARK: API

    /// Bounded query parameters: a bad value is a 400 with the reason.
    struct Query {
        let parameters: FlatDictionary<Substring, Substring>

        func string(_ key: String) -> String? { parameters[Substring(key)].map(String.init) }

        func day(_ key: String) throws -> String? {
            guard let v = string(key) else { return nil }
            guard v.utf8.count == 10, RFC3339.parse(v + "T00:00:00Z") != nil else { throw Reply.Failure(.badRequest, "\(key) must be a day such as 2026-11-30") }
            return v
        }

        func int(_ key: String, default value: Int, _ range: ClosedRange<Int>) throws -> Int {
            guard let v = string(key) else { return value }
            guard let n = Int(v), range.contains(n) else { throw Reply.Failure(.badRequest, "\(key) must be a whole number from \(range.lowerBound) to \(range.upperBound)") }
            return n
        }

        func double(_ key: String, default value: Double, _ range: ClosedRange<Double>) throws -> Double {
            guard let v = string(key) else { return value }
            guard let n = Double(v), n.isFinite, range.contains(n) else { throw Reply.Failure(.badRequest, "\(key) must be a number from \(range.lowerBound) to \(range.upperBound)") }
            return n
        }

        func filter() throws -> ReportFilter {
            ReportFilter(domain: string("domain")?.lowercased(), since: try day("since"), until: try day("until"), authenticatedOnly: try flag("authenticated"))
        }

        /// `true`/`1`/`yes` or `false`/`0`/`no`; anything else is a 400.
        func flag(_ key: String) throws -> Bool {
            guard let v = string(key)?.lowercased() else { return false }
            switch v {
            case "1", "true", "yes", "": return true
            case "0", "false", "no": return false
            default: throw Reply.Failure(.badRequest, "\(key) must be true or false")
            }
        }
    }

    /// Runs a database question on the blocking pool; a failing database is a 503.
    func database(_ what: String, _ body: @escaping @Sendable (ReportStore) throws -> JSONValue) async -> Response {
        let store = self.store
        do {
            return Reply.json(.ok, try await pool.run { try body(store) })
        } catch let failure as Reply.Failure {
            return Reply.error(failure.status, failure.message)
        } catch {
            logger.error("API \(what): \(error)")
            return Reply.error(.serviceUnavailable, "the database is not available")
        }
    }

    func listReports(_ request: Request) async throws -> Response {
        let query = Query(parameters: request.uri.queryParameters)
        let filter = try query.filter(), limit = try query.int("limit", default: 100, 1...10_000)
        return await database("reports") { .array(try $0.list(filter, limit: limit).map(\.json)) }
    }

    func showReport(_ id: String) async throws -> Response {
        let key = id.removingPercentEncoding ?? id
        return await database("report") { store in
            guard let found = try store.show(key) else { throw Reply.Failure(.notFound, "no stored report \(key)") }
            return StoredReport(row: found.row, normalized: found.normalized, diagnostics: found.diagnostics).json
        }
    }

    func summary(_ request: Request) async throws -> Response {
        let filter = try Query(parameters: request.uri.queryParameters).filter()
        return await database("summary") { try $0.summary(filter).json }
    }

    func readiness(_ request: Request, domain raw: String) async throws -> Response {
        let domain = (raw.removingPercentEncoding ?? raw).lowercased()
        guard (try? DomainName(domain)) != nil else { return Reply.error(.badRequest, "name the domain: /api/readiness/DOMAIN") }
        let query = Query(parameters: request.uri.queryParameters)
        let days = try query.int("days", default: 14, 1...3_660)
        let minDays = try query.int("min_days", default: 7, 0...3_660)
        let tolerance = try query.double("tolerance", default: 0, 0...100)
        let until = try query.day("until") ?? RFC3339.formatDay(Int64(clock.now()))
        let authenticated = try query.flag("authenticated")
        return await database("readiness") { try $0.readiness(domain: domain, until: until, days: days, minDays: minDays, tolerance: tolerance / 100, authenticatedOnly: authenticated).json }
    }
}

/// The responder of one listener: policy hosts before routing (Hummingbird runs router
/// middleware only for matched routes), unknown paths and thrown errors as JSON.
public struct ServeRoutes: HTTPResponderBuilder {
    let router: Router<BasicRequestContext>
    let policyHost: PolicyHost

    public func buildResponder() -> CallbackResponder<BasicRequestContext> {
        let inner = router.buildResponder(), policyHost = self.policyHost
        return CallbackResponder { request, context in
            if let response = policyHost.response(request) { return response }
            var response: Response
            do {
                response = try await inner.respond(to: request, context: context)
            } catch {
                guard let answer = Reply.response(for: error) else { throw error }
                response = answer
            }
            if request.method == .head { response.body = .init() }
            return response
        }
    }
}

/// A policy host serves its policy and nothing else (RFC 8461 §3.3), whatever the path asked.
struct PolicyHost: Sendable {
    let service: ReportWebService

    /// The answer for a request to an `mta-sts.` host; nil for any other host.
    func response(_ request: Request) -> Response? {
        let host = Self.hostName(request.head.authority)
        guard host.hasPrefix("mta-sts.") else { return nil }
        let head = request.method == .head
        guard let body = service.policyHosts[host] else { return Reply.text(.notFound, "no MTA-STS policy is served for this host\n", head: head) }
        guard request.uri.path == "/.well-known/mta-sts.txt" else { return Reply.text(.notFound, "not found\n", head: head) }
        guard request.method == .get || head else { return Reply.text(.methodNotAllowed, "GET only\n") }
        service.policyRequests.increment()
        let headers: HTTPFields = [.contentType: "text/plain", .cacheControl: "no-store", .contentLength: String(body.readableBytes)]
        return Response(status: .ok, headers: headers, body: request.method == .head ? .init() : .init(byteBuffer: body))
    }

    /// The host part of a Host header, lowercased, without port or trailing dot.
    static func hostName(_ header: String?) -> String {
        guard var h = header?.lowercased().trimmingCharacters(in: .whitespaces) else { return "" }
        if h.hasPrefix("[") { return h }
        if let colon = h.lastIndex(of: ":") { h = String(h[..<colon]) }
        if h.hasSuffix(".") { h.removeLast() }
        return h
    }
}

/// `/api/` and `/metrics`: refused on a public listener without a token; the bearer token checked
/// in constant time.
struct APIAccessMiddleware: RouterMiddleware {
    typealias Context = BasicRequestContext
    let allowed: Bool
    let token: String?
    /// Answer only requests whose Host header names a loopback address (no token, not public).
    var localHostOnly = false

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard allowed else {
            return Reply.error(.forbidden, "the API is not answered on this listener: set reports.api_token (or reports.api_public: true)")
        }
        if localHostOnly && (!Self.isLocalHost(request.head.authority) || Self.isForwarded(request)) {
            return Reply.error(.forbidden, "without reports.api_token the API answers only to Host: localhost, 127.0.0.1 or [::1]")
        }
        if let token {
            var given = Substring(request.headers[.authorization] ?? "")
            if given.prefix(7).lowercased() == "bearer " {
                given = given.dropFirst(7)
            } else if given.prefix(6).lowercased() == "basic ", given.utf8.count < 4_096,
                      let decoded = Data(base64Encoded: String(given.dropFirst(6)).trimmingCharacters(in: .whitespaces)),
                      let pair = String(data: decoded, encoding: .utf8), let colon = pair.firstIndex(of: ":") {
                // What a browser logged in to the dashboard with the token sends (any user name).
                given = Substring(pair[pair.index(after: colon)...])
            } else {
                given = ""
            }
            guard Self.constantTimeEqual(Array(given.utf8), Array(token.utf8)) else {
                var r = Reply.error(.unauthorized, "the API needs Authorization: Bearer TOKEN")
                r.headers[.wwwAuthenticate] = "Bearer"
                return r
            }
        }
        return try await next(request, context)
    }

    /// Whether a Host header names a loopback address: `localhost`, `127.x.y.z` or `[::1]`, with or
    /// without a port.
    static func isLocalHost(_ authority: String?) -> Bool {
        // No Host at all (HTTP/1.0): a rebinding page's request always names its own host.
        guard var h = authority?.lowercased() else { return true }
        if h.hasPrefix("[") {
            guard let close = h.firstIndex(of: "]") else { return false }
            return h[h.index(after: h.startIndex)..<close] == "::1"
        }
        if let colon = h.lastIndex(of: ":") { h = String(h[..<colon]) }
        if h.hasSuffix(".") { h.removeLast() }
        return h == "localhost" || ReportWebService.isLoopback(h)
    }

    /// Whether a proxy passed the request on (`Forwarded`, `X-Forwarded-For`, `X-Forwarded-Host`,
    /// `X-Real-IP`): then a loopback listener and a loopback Host say nothing of where it came
    /// from (a proxy that passes `Host` on lets anyone say `Host: localhost`).
    static func isForwarded(_ request: Request) -> Bool {
        ["Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Real-IP"].contains { HTTPField.Name($0).map { request.headers[$0] != nil } ?? false }
    }

    /// Equal bytes, in a time that depends on the lengths only.
    static func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        var difference = UInt8(a.count == b.count ? 0 : 1)
        for i in 0..<max(a.count, b.count) {
            difference |= (i < a.count ? a[i] : 0) ^ (i < b.count ? b[i] : 0xFF)
        }
        return difference == 0
    }
}

/// Our JSON error body for Hummingbird's own errors (404 for an unknown path, 405, a failed body).
struct ErrorBodyMiddleware: RouterMiddleware {
    typealias Context = BasicRequestContext

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch {
            guard let answer = Reply.response(for: error) else { throw error }
            return answer
        }
    }
}

/// Responses: JSON (pretty, as the CLI prints), text, errors as `{"error": "..."}`.
enum Reply {
    struct Failure: Error {
        var status: HTTPResponse.Status
        var message: String
        init(_ status: HTTPResponse.Status, _ message: String) {
            self.status = status
            self.message = message
        }
    }

    /// The JSON answer for an error thrown by a route or by Hummingbird (404 for an unknown path,
    /// 405, a body over a limit); nil for any other error.
    static func response(for error: any Error) -> Response? {
        switch error {
        case let failure as Failure: return self.error(failure.status, failure.message)
        case let error as HTTPError: return self.error(error.status, error.status == .notFound ? "not found" : (error.body ?? error.status.reasonPhrase))
        case is NIOTooManyBytesError: return self.error(.contentTooLarge, "the request is too large")
        default: return nil
        }
    }

    static func json(_ status: HTTPResponse.Status, _ value: JSONValue) -> Response {
        let bytes = value.serializedBytes(pretty: true) + [0x0A]
        return Response(status: status, headers: [.contentType: "application/json", .cacheControl: "no-store"],
                        body: .init(byteBuffer: ByteBuffer(bytes: bytes)))
    }

    static func error(_ status: HTTPResponse.Status, _ message: String) -> Response {
        json(status, .object([JSONMember("error", .string(message))]))
    }

    /// A text answer; to HEAD, the headers alone.
    static func text(_ status: HTTPResponse.Status, _ text: String, head: Bool = false) -> Response {
        Response(status: status, headers: [.contentType: "text/plain; charset=utf-8", .cacheControl: "no-store", .contentLength: String(text.utf8.count)],
                 body: head ? .init() : .init(byteBuffer: ByteBuffer(string: text)))
    }

    static func tooLarge(_ limit: Int) -> Response {
        var r = error(.contentTooLarge, "the report is larger than \(limit) bytes")
        r.headers[.connection] = "close"
        return r
    }

    static func metrics() -> Response {
        Response(status: .ok, headers: [.contentType: MetricsExport.contentType],
                 body: .init(byteBuffer: ByteBuffer(bytes: MetricsExport.text())))
    }
}
