import Crypto
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdBcrypt
import MTASTSCore
import NIOConcurrencyHelpers
import NIOCore
import ServerSupport
import TLSRPTReceiver
import Watch

/// The dashboard: server-rendered pages over the stored reports and the watch's checks.
///
/// - `/` every domain: policy mode, sessions and success rate of the last 30 days (a sparkline),
///   failing senders, the readiness badge, the state of its last check, and the recent alerts;
/// - `/domains/DOMAIN`: daily success rate, failures stacked by result type, tables by sending
///   organisation, MX host, receiving IP and result type with drill-down to the reports
///   (`/domains/DOMAIN/reports?organization=|mx=|ip=|type=`), the readiness verdict with its
///   evidence, the policy and records as last seen, the check history;
/// - `/reports/ID`: the normalised report, how it arrived, whether it was authenticated, and its
///   raw bytes (`/reports/ID/raw`).
struct Dashboard: Sendable {
    let service: ReportWebService
    let access: DashboardAccess

    var store: ReportStore { service.store }

    func register(on router: Router<BasicRequestContext>) {
        router.get("/") { request, _ in try await guarded(request) { try await overview(request) } }
        router.get("/domains/:domain") { request, context in
            try await guarded(request) { try await domainPage(request, context.parameters.get("domain") ?? "") }
        }
        router.get("/domains/:domain/reports") { request, context in
            try await guarded(request) { try await drillDown(request, context.parameters.get("domain") ?? "") }
        }
        router.get("/reports/:id") { request, context in try await guarded(request) { try await reportPage(context.parameters.get("id") ?? "") } }
        router.get("/reports/:id/raw") { request, context in try await guarded(request) { try await rawReport(context.parameters.get("id") ?? "") } }
    }

    func guarded(_ request: Request, _ body: () async throws -> Response) async throws -> Response {
        if let refusal = await access.refusal(request) { return refusal }
        do {
            return try await body()
        } catch let failure as Reply.Failure {
            return Self.page(failure.status, title: failure.status == .notFound ? "Not found" : "Cannot show this", crumbs: [("Dashboard", "/")],
                             body: "<p>\(HTML.escape(failure.message))</p>")
        } catch let error as HTTPError {
            throw error
        } catch {
            service.logger.error("dashboard: \(error)")
            return Self.page(.serviceUnavailable, title: "The database is not available", crumbs: [("Dashboard", "/")],
                             body: "<p>The stored reports cannot be read now; try again in a moment.</p>")
        }
    }

    static func page(_ status: HTTPResponse.Status = .ok, title: String, crumbs: [(String, String?)], body: String) -> Response {
        let bytes = ByteBuffer(string: HTML.page(title: title, crumbs: crumbs, body: body))
        return Response(status: status, headers: [.contentType: "text/html; charset=utf-8", .cacheControl: "no-store",
                                                  .init("Content-Security-Policy")!: "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'; form-action 'none'; base-uri 'none'",
                                                  .init("X-Content-Type-Options")!: "nosniff", .init("Referrer-Policy")!: "no-referrer"],
                        body: .init(byteBuffer: bytes))
    }

    /// The days of a window ending today (UTC), oldest first.
    func window(_ request: Request) throws -> (days: [String], since: String, until: String) {
        let query = ReportWebService.Query(parameters: request.uri.queryParameters)
        let count = try query.int("days", default: 30, 1...366)
        let today = try query.day("until").flatMap { RFC3339.parse($0 + "T00:00:00Z")?.seconds } ?? Int64(service.clock.now())
        let days = (0..<count).reversed().map { RFC3339.formatDay(today - Int64($0) * 86_400) }
        return (days, days.first!, days.last!)
    }

    func run<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await service.pool.run(body)
    }

    static func domainLink(_ domain: String) -> String { "/domains/" + HTML.component(domain) }

    /// Rows of the overview when no domain is the owner's (all in one table), and of its table of
    /// other domains: a flood of reports about junk domains cannot make the page endless.
    static let maxDomains = 500
    static let maxOtherDomains = 50

    static func modeBadge(_ mode: String?) -> String {
        switch mode {
        case "enforce": return HTML.badge("good", "enforce")
        case "testing": return HTML.badge("warn", "testing")
        case "none": return HTML.badge("none", "none")
        default: return HTML.badge("none", "no policy seen")
        }
    }

    static func readinessBadge(_ verdict: Readiness.Verdict?) -> String {
        switch verdict {
        case .ready?: return HTML.badge("good", "ready for enforce")
        case .notReady?: return HTML.badge("bad", "not ready")
        case .insufficientData?: return HTML.badge("warn", "not enough data")
        case nil: return HTML.badge("none", "no reports")
        }
    }

    static func checkBadge(_ verdict: String) -> String {
        switch verdict {
        case "ok": return HTML.badge("good", "check ok")
        case "warnings": return HTML.badge("warn", "warnings")
        case "errors": return HTML.badge("bad", "errors")
        default: return HTML.badge("warn", verdict)
        }
    }

    static func when(_ seconds: Double) -> String { HTML.escape(RFC3339.format(Int64(seconds)).replacingOccurrences(of: "T", with: " ").replacingOccurrences(of: "Z", with: " UTC")) }

    /// Days left, in words, for a certificate (nil: none seen).
    static func daysLeft(_ notAfter: Int64?, now: Double) -> String {
        guard let notAfter else { return "no certificate seen" }
        let days = Int((Double(notAfter) - now) / 86_400)
        return days < 0 ? "expired \(-days) day(s) ago" : "\(days) day(s) left"
    }

    static func certificateSummary(_ record: CheckRecord, now: Double) -> String {
        var parts: [String] = []
        if let host = record.policyHost { parts.append("policy host: " + daysLeft(host.notAfter, now: now)) }
        let mxDays = record.mx.compactMap(\.notAfter).min()
        if !record.mx.isEmpty { parts.append("MX: " + (mxDays.map { daysLeft($0, now: now) } ?? "no certificate seen")) }
        return HTML.escape(parts.joined(separator: "; "))
    }

    // MARK: pages

    func overview(_ request: Request) async throws -> Response {
        let (days, since, until) = try window(request)
        let watch = service.watch
        let (domains, verdicts, checks, alerts) = try await run { [store] in
            (try store.overview(since: since, until: until), try store.readinessVerdicts(until: until),
             try watch?.latest() ?? [:], try watch?.alerts(limit: 10) ?? [])
        }
        let now = service.clock.now()
        var byName: [String: DomainOverview] = [:]
        for d in domains { byName[d.domain] = d }
        // The owner's domains (policies, watch, alerts.domains) first; the other domains of the
        // stored reports (anyone can POST a report about any domain) after them, the busiest first
        // and at most `maxOtherDomains`.
        let owned = service.config.alertDomains
        let names = (owned.map { Set($0) } ?? Set(byName.keys)).union(checks.keys).union(service.config.watch.domains).sorted()
        let others = owned == nil ? [] : byName.keys.filter { !names.contains($0) }
            .sorted { (byName[$0]!.successful.saturatingAdd(byName[$0]!.failed), $1) > (byName[$1]!.successful.saturatingAdd(byName[$1]!.failed), $0) }
        func rows(_ names: some Collection<String>) -> [[String]] { names.map(row) }
        func row(_ name: String) -> [String] {
            let d = byName[name]
            let perDay = Dictionary((d?.days ?? []).map { ($0.day, $0) }, uniquingKeysWith: { a, _ in a })
            let spark = Chart.sparkline(days.map { day in (day, perDay[day]?.successRate) })
            let check = checks[name]
            let checkCell = check.map { c in
                Self.checkBadge(c.verdict) + "<br><span class=\"muted\">\(Self.when(c.checkedAt))</span><br>" + Self.certificateSummary(c, now: now)
                    + (c.errors.isEmpty ? "" : "<br>" + HTML.escape(c.errors.map(\.code).joined(separator: ", ")))
            } ?? "<span class=\"muted\">not checked</span>"
            // Readiness right after the name: on a phone the first columns are what shows.
            return [
                HTML.link(Self.domainLink(name), name),
                Self.readinessBadge(verdicts[name]),
                Self.modeBadge(check?.mode ?? d?.reportedMode),
                HTML.percent(d?.successRate),
                spark,
                HTML.number(d.map { $0.successful.saturatingAdd($0.failed) } ?? 0),
                d.map { "\(HTML.number($0.failingOrganizations)) of \(HTML.number($0.organizations))" } ?? "–",
                checkCell,
            ]
        }
        var body = "<p class=\"muted\">The last \(days.count) days, \(HTML.escape(since)) to \(HTML.escape(until)) (UTC). Readiness over the last 14 days.</p>"
        let headers = ["Domain", "Readiness", "Policy mode", "Success rate", "Daily success rate", "Sessions", "Failing senders", "Last check"]
        let shown = owned == nil ? Array(names.prefix(Self.maxDomains)) : names
        body += HTML.table(caption: "Domains", headers: headers, rows: rows(shown), id: "domains", numeric: [3, 5])
        if names.count > shown.count {
            body += "<p class=\"muted\">\(names.count - shown.count) more domains are in the stored reports; list yours in watch.domains or alerts.domains to see them first.</p>"
        }
        if !others.isEmpty {
            body += HTML.table(caption: "Other domains in the reports (not in policies, watch.domains or alerts.domains)", headers: headers,
                               rows: rows(others.prefix(Self.maxOtherDomains)), id: "other-domains", numeric: [3, 5])
            if others.count > Self.maxOtherDomains {
                body += "<p class=\"muted\">and \(others.count - Self.maxOtherDomains) more.</p>"
            }
        }
        if watch != nil {
            body += "<h2>Recent alerts</h2>" + HTML.table(caption: "The 10 newest alerts", headers: ["When (UTC)", "Domain", "What", "Delivery"], rows: alerts.map { a in
                [Self.when(a.at), HTML.link(Self.domainLink(a.domain), a.domain), HTML.escape(a.message), HTML.escape(a.delivery)]
            }, id: "alerts")
        }
        return Self.page(title: "TLS reporting dashboard", crumbs: [("Dashboard", nil)], body: body)
    }

    func domainName(_ raw: String) throws -> String {
        let domain = (raw.removingPercentEncoding ?? raw).lowercased()
        guard (try? DomainName(domain)) != nil else { throw Reply.Failure(.badRequest, "'\(raw)' is not a domain name") }
        return domain
    }

    func domainPage(_ request: Request, _ raw: String) async throws -> Response {
        let domain = try domainName(raw)
        let (days, since, until) = try window(request)
        let watch = service.watch
        let (summary, failures, readiness, history, reportsList, reported, alerts) = try await run { [store] in
            (try store.summary(ReportFilter(domain: domain, since: since, until: until)),
             try store.dailyFailures(domain: domain, since: since, until: until),
             try store.readiness(domain: domain, until: until),
             try watch?.history(domain: domain, limit: 10) ?? [],
             try store.list(ReportFilter(domain: domain, since: since, until: until), limit: 20),
             try store.lastReportedPolicy(domain: domain),
             try watch?.alerts(domain: domain, limit: 10) ?? [])
        }
        guard !summary.days.isEmpty || !history.isEmpty || service.config.watch.domains.contains(domain) || reported != nil else {
            throw Reply.Failure(.notFound, "nothing is known about \(domain): no reports in the last \(days.count) days and no check")
        }
        let link = Self.domainLink(domain) + "/reports?"
        var body = ""
        // Readiness first: it is the question a domain owner in testing asks.
        body += "<h2>Ready for enforce?</h2><p>\(Self.readinessBadge(readiness.verdict))</p><ul>"
        for reason in readiness.reasons { body += "<li>\(HTML.escape(reason))</li>" }
        body += "</ul>"
        if !readiness.problems.isEmpty {
            body += HTML.table(caption: "What would fail under enforce (\(readiness.since) to \(readiness.until))",
                               headers: ["Sender", "Result type", "Impact", "Sessions", "Days", "MX hosts", "Why"],
                               rows: readiness.problems.map { p in
                                   [HTML.link(link + "organization=" + HTML.component(p.organization), p.organization),
                                    HTML.link(link + "type=" + HTML.component(p.resultType), p.resultType), HTML.escape(p.impact),
                                    HTML.number(p.sessions), p.days.map { "<span class=\"nowrap\">\(HTML.escape($0))</span>" }.joined(separator: " "), HTML.escape(p.mxHosts.joined(separator: " ")),
                                    HTML.escape(p.explanation)]
                               }, id: "problems", numeric: [3])
        }
        let perDay = Dictionary(summary.days.map { ($0.day, $0) }, uniquingKeysWith: { a, _ in a })
        body += "<h2>Daily success rate</h2>"
        // Both charts have a slot for every day of the window, so that their days line up.
        body += Chart.rateBars(days.map { day in (day, perDay[day]?.successful ?? 0, perDay[day]?.failed ?? 0) }, id: "rate-chart")
        var sessions: [String: [String: Int64]] = [:]
        for f in failures { sessions[f.day, default: [:]][f.resultType, default: 0] = sessions[f.day, default: [:]][f.resultType, default: 0].saturatingAdd(f.sessions) }
        let types = summary.byResultType.map(\.key)
        body += "<h2>Failures by result type</h2>"
        body += types.isEmpty ? "<p>No failed sessions reported in this window.</p>"
            : Chart.stackedFailures(days: days, types: types, sessions: sessions, id: "failure-chart")
        body += HTML.table(caption: "By sending organisation", headers: ["Organisation", "Reports", "Successful", "Failed", "Success rate"],
                           rows: summary.byOrganization.map { o in
                               [HTML.link(link + "organization=" + HTML.component(o.organization), o.organization), HTML.number(o.reports),
                                HTML.number(o.successful), HTML.number(o.failed),
                                HTML.percent(o.successful == 0 && o.failed == 0 ? nil : Double(o.successful) / (Double(o.successful) + Double(o.failed)))]
                           }, id: "by-organization", numeric: [1, 2, 3, 4])
        func counts(_ caption: String, _ rows: [CountRow], _ key: String, _ id: String) -> String {
            HTML.table(caption: caption, headers: [caption.replacingOccurrences(of: "Failed sessions by ", with: "").capitalizedFirst, "Failed sessions"],
                       rows: rows.map { [HTML.link(link + key + "=" + HTML.component($0.key), $0.key), HTML.number($0.sessions)] }, id: id, numeric: [1], narrow: true)
        }
        body += counts("Failed sessions by result type", summary.byResultType, "type", "by-result-type")
        body += counts("Failed sessions by MX host", summary.byMXHost, "mx", "by-mx-host")
        body += counts("Failed sessions by receiving IP", summary.byReceivingIP, "ip", "by-receiving-ip")
        body += "<h2>Policy and records as last seen</h2>"
        if let last = history.first {
            let now = service.clock.now()
            body += "<dl class=\"facts\"><dt>Checked</dt><dd>\(Self.when(last.checkedAt)) \(Self.checkBadge(last.verdict))</dd>"
            body += "<dt>Policy mode</dt><dd>\(Self.modeBadge(last.mode))</dd>"
            body += "<dt>_mta-sts record</dt><dd><code>\(HTML.escape(last.stsRecord ?? "none"))</code></dd>"
            body += "<dt>_smtp._tls record</dt><dd><code>\(HTML.escape(last.tlsrptRecord ?? "none"))</code></dd>"
            for cert in last.certificates {
                body += "<dt>\(HTML.escape(cert.host))</dt><dd>\(HTML.escape(cert.result)); \(HTML.escape(Self.daysLeft(cert.notAfter, now: now)))</dd>"
            }
            body += "</dl>"
            if let text = last.policyText { body += "<pre aria-label=\"policy\">\(HTML.escape(text))</pre>" }
            if !last.errors.isEmpty || !last.warnings.isEmpty {
                body += HTML.table(caption: "Findings of the last check", headers: ["Severity", "Code", "Message"],
                                   rows: last.errors.map { [HTML.badge("bad", "error"), HTML.escape($0.code), HTML.escape($0.message)] }
                                       + last.warnings.map { [HTML.badge("warn", "warning"), HTML.escape($0.code), HTML.escape($0.message)] }, id: "findings")
            }
            let changes = zip(history, history.dropFirst()).map { newer, older in (newer, newer.changes(since: older)) }.filter { !$0.1.isEmpty }
            body += HTML.table(caption: "Changes between checks", headers: ["Checked (UTC)", "What changed"],
                               rows: changes.map { [Self.when($0.0.checkedAt), HTML.escape($0.1.joined(separator: "; "))] }, id: "changes")
        } else {
            body += "<p class=\"muted\">Not checked yet (add the domain to watch.domains).</p>"
        }
        if let reported {
            body += "<p>The newest report (\(HTML.escape(reported.day))) carried a policy of type <code>\(HTML.escape(reported.type))</code>:</p><pre aria-label=\"reported policy\">\(HTML.escape(reported.strings.joined(separator: "\n")))</pre>"
        }
        body += reportTable(reportsList, caption: "The newest reports")
        if !alerts.isEmpty {
            body += HTML.table(caption: "Alerts", headers: ["When (UTC)", "What", "Delivery"],
                               rows: alerts.map { [Self.when($0.at), HTML.escape($0.message), HTML.escape($0.delivery)] }, id: "domain-alerts")
        }
        return Self.page(title: domain, crumbs: [("Dashboard", "/"), (domain, nil)], body: "<p class=\"muted\">\(HTML.escape(since)) to \(HTML.escape(until)) (UTC)</p>" + body)
    }

    func reportTable(_ rows: [ReportRow], caption: String) -> String {
        HTML.table(caption: caption, headers: ["Report", "Organisation", "Day (UTC)", "Successful", "Failed", "Arrived by", "DKIM"], rows: rows.map { r in
            [HTML.link("/reports/\(r.id)", r.reportID.isEmpty ? "#\(r.id)" : r.reportID), HTML.escape(r.organization), "<span class=\"nowrap\">\(HTML.escape(r.day))</span>",
             HTML.number(r.successful), HTML.number(r.failed), HTML.escape(r.channel), Self.dkimBadge(r.dkim, channel: r.channel)]
        }, id: "reports", numeric: [3, 4])
    }

    /// DKIM of a report: a POST carries none (`n/a (HTTPS)`), mail is authenticated or not.
    static func dkimBadge(_ dkim: String?, channel: String) -> String {
        if dkim == "pass" { return HTML.badge("good", "authenticated") }
        if channel == "https" && dkim == nil { return HTML.badge("none", "n/a (HTTPS)") }
        return HTML.badge("warn", dkim.map { "not authenticated (\($0))" } ?? "not authenticated")
    }

    func drillDown(_ request: Request, _ raw: String) async throws -> Response {
        let domain = try domainName(raw)
        let (days, since, until) = try window(request)
        let query = ReportWebService.Query(parameters: request.uri.queryParameters)
        guard let carrying = Carrying.Kind.allCases.lazy.compactMap({ kind in query.string(kind.rawValue).map { Carrying(kind, $0) } }).first else {
            throw Reply.Failure(.badRequest, "name what the reports carry: organization=, mx=, ip= or type=")
        }
        guard carrying.value.utf8.count <= 1_024 else { throw Reply.Failure(.badRequest, "the value is too long") }
        let rows = try await run { [store] in try store.reports(domain: domain, carrying: carrying, since: since, until: until) }
        let what: String
        switch carrying.kind {
        case .organization: what = "sent by \(carrying.value)"
        case .mxHost: what = "with failures at MX host \(carrying.value)"
        case .receivingIP: what = "with failures at receiving IP \(carrying.value)"
        case .resultType: what = "with \(carrying.value) failures"
        }
        return Self.page(title: "Reports \(what)", crumbs: [("Dashboard", "/"), (domain, Self.domainLink(domain)), ("reports", nil)],
                         body: "<p class=\"muted\">Reports about \(HTML.escape(domain)), \(HTML.escape(since)) to \(HTML.escape(until)) (UTC), \(days.count) days; at most 200, newest first.</p>"
                            + reportTable(rows, caption: "\(rows.count) report(s)"))
    }

    func reportPage(_ raw: String) async throws -> Response {
        let key = raw.removingPercentEncoding ?? raw
        guard let found = try await run({ [store] in try store.show(key) }) else { throw Reply.Failure(.notFound, "no stored report \(key)") }
        let r = found.row
        var body = "<dl class=\"facts\">"
        body += "<dt>Organisation</dt><dd>\(HTML.escape(r.organization))</dd><dt>Report ID</dt><dd><code>\(HTML.escape(r.reportID))</code></dd>"
        body += "<dt>Period (UTC)</dt><dd>\(HTML.escape(RFC3339.format(r.startDate))) to \(HTML.escape(RFC3339.format(r.endDate)))</dd>"
        body += "<dt>Domains</dt><dd>\(r.domains.map { HTML.link(Self.domainLink($0), $0) }.joined(separator: ", "))</dd>"
        body += "<dt>Sessions</dt><dd>\(HTML.number(r.successful)) successful, \(HTML.number(r.failed)) failed</dd>"
        body += "<dt>Arrived</dt><dd>by \(HTML.escape(r.channel)), \(Self.when(r.receivedAt))</dd>"
        body += "<dt>Authenticated</dt><dd>\(Self.dkimBadge(r.dkim, channel: r.channel))\(r.channel == "https" ? " <span class=\"muted\">(anyone can POST a report: only DKIM-signed mail is authenticated)</span>" : "")</dd>"
        body += "<dt>Raw bytes</dt><dd>\(HTML.link("/reports/\(r.id)/raw", "download (\(HTML.number(Int64(found.raw.count))) bytes)"))</dd></dl>"
        if !found.diagnostics.isEmpty {
            body += "<h2>Tolerated departures from RFC 8460</h2><ul>" + found.diagnostics.map { "<li>\(HTML.escape($0))</li>" }.joined() + "</ul>"
        }
        let pretty = (try? JSONParser.parse(Array(found.normalized.utf8)).value.serialized(pretty: true)) ?? found.normalized
        body += "<h2>Normalised report</h2><pre id=\"normalized\">\(HTML.escape(pretty))</pre>"
        return Self.page(title: "Report \(r.reportID.isEmpty ? "#\(r.id)" : r.reportID)",
                         crumbs: [("Dashboard", "/")] + (r.domains.first.map { [($0, Self.domainLink($0))] } ?? []) + [("report", nil)], body: body)
    }

    func rawReport(_ raw: String) async throws -> Response {
        guard let id = Int64(raw) else { throw Reply.Failure(.badRequest, "a report number") }
        guard let found = try await run({ [store] in try store.show(String(id)) }), found.row.id == id else { throw Reply.Failure(.notFound, "no stored report \(id)") }
        let gzip = found.raw.starts(with: [0x1F, 0x8B])
        let mail = found.row.channel != "https" && !gzip
        let name = "report-\(id)" + (gzip ? ".json.gz" : mail ? ".eml" : ".json")
        return Response(status: .ok, headers: [.contentType: gzip ? "application/gzip" : mail ? "message/rfc822" : "application/json",
                                               .contentDisposition: "attachment; filename=\"\(name)\"", .cacheControl: "no-store",
                                               .init("X-Content-Type-Options")!: "nosniff"],
                        body: .init(byteBuffer: ByteBuffer(bytes: found.raw)))
    }
}

extension String {
    var capitalizedFirst: String { prefix(1).uppercased() + dropFirst() }
}

/// Who may see the dashboard. On a listener that is not loopback it is off unless protected (the
/// API's bearer token, or `dashboard.users`). Protected: `Authorization: Bearer TOKEN`, or HTTP
/// basic auth with any user name and the token as password, or a configured user and password
/// (bcrypt). A bcrypt check costs tens of milliseconds on purpose; a pair that passed is
/// remembered (as a salted SHA-256) so that a browser's next requests cost a hash.
final class DashboardAccess: Sendable {
    let listenerAllowed: Bool
    let token: String?
    let users: [String: String]
    let pool: BlockingPool
    private let salt: [UInt8] = (0..<16).map { _ in UInt8.random(in: 0...255) }
    private let passed = NIOLockedValueBox<Set<[UInt8]>>([])

    init(listenerAllowed: Bool, token: String?, users: [String: String], pool: BlockingPool) {
        self.listenerAllowed = listenerAllowed
        self.token = token
        self.users = users
        self.pool = pool
    }

    var protected: Bool { token != nil || !users.isEmpty }

    /// Nil when the request may see the dashboard; otherwise the answer (401 or 403).
    func refusal(_ request: Request) async -> Response? {
        guard protected || listenerAllowed else {
            return Dashboard.page(.forbidden, title: "The dashboard is off on this listener", crumbs: [],
                                  body: "<p>The dashboard is not protected, and this listener is not loopback (or it serves policies, so it is reached through a proxy): set <code>reports.api_token</code> or <code>dashboard.users</code> in the serve configuration (or <code>dashboard.trust_loopback: true</code> if nothing forwards to it).</p>")
        }
        guard protected else {
            // Unprotected on loopback: only to a loopback Host (no DNS rebinding).
            return APIAccessMiddleware.isLocalHost(request.head.authority) && !APIAccessMiddleware.isForwarded(request) ? nil
                : Dashboard.page(.forbidden, title: "Use a loopback address", crumbs: [],
                                 body: "<p>Without a password the dashboard answers only to Host: localhost, 127.0.0.1 or [::1].</p>")
        }
        let header = request.headers[.authorization] ?? ""
        if header.prefix(7).lowercased() == "bearer ", let token {
            if APIAccessMiddleware.constantTimeEqual(Array(header.dropFirst(7).utf8), Array(token.utf8)) { return nil }
        } else if header.prefix(6).lowercased() == "basic ", header.utf8.count < 4_096,
                  let decoded = Data(base64Encoded: String(header.dropFirst(6)).trimmingCharacters(in: .whitespaces)),
                  let pair = String(data: decoded, encoding: .utf8), let colon = pair.firstIndex(of: ":") {
            let user = String(pair[..<colon]), password = String(pair[pair.index(after: colon)...])
            switch await verify(user: user, password: password) {
            case .pass: return nil
            case .busy:
                var r = Dashboard.page(.tooManyRequests, title: "Too many log-ins at once", crumbs: [], body: "<p>Try again in a moment.</p>")
                r.headers[.retryAfter] = "2"
                return r
            case .fail: break
            }
        }
        var r = Dashboard.page(.unauthorized, title: "Log in", crumbs: [],
                               body: "<p>The dashboard needs a user and password (or the API token as the password).</p>")
        r.headers[.wwwAuthenticate] = "Basic realm=\"mtasts\", charset=\"UTF-8\""
        return r
    }

    /// bcrypt checks running now: at most `maxChecks`, the rest are refused at once (a flood of
    /// wrong passwords cannot take the blocking pool the reports and queries need).
    private let checking = NIOLockedValueBox(0)
    static let maxChecks = 2
    /// An unknown user is checked against this hash, so that it takes as long as a known one.
    private static let decoy = Bcrypt.hash("decoy password", cost: 10)

    enum Verdict { case pass, fail, busy }

    func verify(user: String, password: String) async -> Verdict {
        if let token, APIAccessMiddleware.constantTimeEqual(Array(password.utf8), Array(token.utf8)) { return .pass }
        guard !users.isEmpty else { return .fail }
        let key = Array(SHA256.hash(data: salt + Array(user.utf8) + [0] + Array(password.utf8)))
        if passed.withLockedValue({ $0.contains(key) }) { return .pass }
        guard checking.withLockedValue({ n in n < Self.maxChecks ? { n += 1; return true }() : false }) else { return .busy }
        defer { checking.withLockedValue { $0 -= 1 } }
        let hash = users[user], decoy = Self.decoy
        let ok = (try? await pool.run { Bcrypt.verify(password, hash: hash ?? decoy) && hash != nil }) ?? false
        if ok { passed.withLockedValue { if $0.count < 10_000 { $0.insert(key) } } }
        return ok ? .pass : .fail
    }
}

/// `mtasts serve --hash-password`: the bcrypt hash a `dashboard.users` entry holds.
public enum DashboardPassword {
    public static func hash(_ password: String, cost: UInt8 = 12) -> String { Bcrypt.hash(password, cost: cost) }
    public static func verify(_ password: String, hash: String) -> Bool { Bcrypt.verify(password, hash: hash) }
}
