import Foundation
import MTASTSCheck
import MTASTSCore
import Storage

/// What the dashboard and the alerts need of one end-to-end check, kept beside the check's whole
/// JSON (`mtasts check --json`).
public struct CheckRecord: Sendable, Equatable {
    public struct Certificate: Sendable, Equatable {
        public var host: String
        /// Seconds since 1970; nil when no certificate was seen (no TLS, unreachable).
        public var notAfter: Int64?
        /// `ok`, an RFC 8460 result type, or `unreachable`.
        public var result: String
        public init(host: String, notAfter: Int64?, result: String) {
            self.host = host
            self.notAfter = notAfter
            self.result = result
        }
    }

    public struct Issue: Sendable, Equatable {
        public var code: String
        public var message: String
        public init(code: String, message: String) {
            self.code = code
            self.message = message
        }
    }

    public var domain: String
    public var checkedAt: Double
    /// `ok`, `warnings`, `errors`, `temporary`.
    public var verdict: String
    public var mode: String?
    public var stsRecord: String?
    public var tlsrptRecord: String?
    public var policyText: String?
    public var policyHost: Certificate?
    public var mx: [Certificate] = []
    public var errors: [Issue] = []
    public var warnings: [Issue] = []

    public init(domain: String, checkedAt: Double, verdict: String) {
        self.domain = domain
        self.checkedAt = checkedAt
        self.verdict = verdict
    }

    /// The record of one check report.
    public init(_ report: DomainReport, at time: Double) {
        self.init(domain: report.domain, checkedAt: time, verdict: report.verdict.rawValue)
        mode = report.policy?.mode.rawValue
        stsRecord = report.stsRecord
        tlsrptRecord = report.tlsrptRecord
        policyText = report.policyText
        if let fetch = report.policyFetch {
            policyHost = Certificate(host: "mta-sts." + report.domain, notAfter: fetch.certificate.map { Int64($0.notAfter.timeIntervalSince1970) },
                                     result: fetch.failure?.type.rawValue ?? "ok")
        }
        mx = report.mx.map { m in
            Certificate(host: m.host, notAfter: m.probe?.certificate.map { Int64($0.notAfter.timeIntervalSince1970) },
                        result: m.probe.map { $0.failure?.type.rawValue ?? ($0.unreachable != nil ? "unreachable" : "ok") } ?? "not-checked")
        }
        errors = report.findings.filter { $0.severity == .error }.map { Issue(code: $0.code, message: $0.message) }
        warnings = report.findings.filter { $0.severity == .warning }.map { Issue(code: $0.code, message: $0.message) }
    }

    /// Every certificate seen, the policy host first.
    public var certificates: [Certificate] { (policyHost.map { [$0] } ?? []) + mx }

    /// What changed since `previous`, in words (empty: nothing).
    public func changes(since previous: CheckRecord) -> [String] {
        var out: [String] = []
        if verdict != previous.verdict { out.append("verdict \(previous.verdict) → \(verdict)") }
        if mode != previous.mode { out.append("policy mode \(previous.mode ?? "none") → \(mode ?? "none")") }
        if stsRecord != previous.stsRecord { out.append("_mta-sts record changed") }
        if tlsrptRecord != previous.tlsrptRecord { out.append("_smtp._tls record changed") }
        if policyText != previous.policyText { out.append("policy text changed") }
        let before = Set(previous.errors.map(\.code)), now = Set(errors.map(\.code))
        for code in now.subtracting(before).sorted() { out.append("new error: \(code)") }
        for code in before.subtracting(now).sorted() { out.append("error cleared: \(code)") }
        return out
    }

    var json: JSONValue {
        func str(_ s: String?) -> JSONValue { s.map { .string($0) } ?? .null }
        func cert(_ c: Certificate) -> JSONValue {
            .object([JSONMember("host", .string(c.host)), JSONMember("not_after", c.notAfter.map { .int($0) } ?? .null), JSONMember("result", .string(c.result))])
        }
        func issue(_ i: Issue) -> JSONValue { .object([JSONMember("code", .string(i.code)), JSONMember("message", .string(i.message))]) }
        return .object([
            JSONMember("mode", str(mode)), JSONMember("sts_record", str(stsRecord)), JSONMember("tlsrpt_record", str(tlsrptRecord)),
            JSONMember("policy_text", str(policyText)), JSONMember("policy_host", policyHost.map(cert) ?? .null),
            JSONMember("mx", .array(mx.map(cert))), JSONMember("errors", .array(errors.map(issue))), JSONMember("warnings", .array(warnings.map(issue))),
        ])
    }

    init?(domain: String, checkedAt: Double, verdict: String, json text: String) {
        guard let value = try? JSONParser.parse(Array(text.utf8)).value else { return nil }
        self.init(domain: domain, checkedAt: checkedAt, verdict: verdict)
        func cert(_ v: JSONValue) -> Certificate? {
            guard let host = v["host"]?.stringValue else { return nil }
            var notAfter: Int64?
            if case .int(let n)? = v["not_after"] { notAfter = n }
            return Certificate(host: host, notAfter: notAfter, result: v["result"]?.stringValue ?? "")
        }
        func issues(_ v: JSONValue?) -> [Issue] {
            guard case .array(let items)? = v else { return [] }
            return items.compactMap { i in i["code"]?.stringValue.map { Issue(code: $0, message: i["message"]?.stringValue ?? "") } }
        }
        mode = value["mode"]?.stringValue
        stsRecord = value["sts_record"]?.stringValue
        tlsrptRecord = value["tlsrpt_record"]?.stringValue
        policyText = value["policy_text"]?.stringValue
        policyHost = value["policy_host"].flatMap(cert)
        if case .array(let items)? = value["mx"] { mx = items.compactMap(cert) }
        errors = issues(value["errors"])
        warnings = issues(value["warnings"])
    }
}

/// One alert as it was raised: what, about which domain, the words said, and how its delivery went.
public struct AlertRecord: Sendable, Equatable {
    public var id: Int64
    public var at: Double
    public var domain: String
    public var kind: String
    public var subject: String
    public var message: String
    public var link: String?
    public var delivery: String
}

/// The watch's tables, in the reports' database (SQLite or PostgreSQL): check results, the state
/// each alert condition was last seen in (so an alert fires once per change, across restarts),
/// and the alerts raised.
public final class WatchStore: @unchecked Sendable {
    public let db: SQLDatabase

    public init(db: SQLDatabase) throws(StorageError) {
        self.db = db
        let key = db.serialKey, real = db.realType
        try db.migrate(component: "watch", [
            (1, [
                "CREATE TABLE check_results (id \(key), domain TEXT NOT NULL, checked_at \(real) NOT NULL, verdict TEXT NOT NULL, summary TEXT NOT NULL, report TEXT NOT NULL)",
                "CREATE INDEX check_results_domain ON check_results (domain, checked_at)",
                "CREATE TABLE alert_state (domain TEXT NOT NULL, kind TEXT NOT NULL, subject TEXT NOT NULL, state TEXT NOT NULL, changed_at \(real) NOT NULL, PRIMARY KEY (domain, kind, subject))",
                """
                CREATE TABLE alert_log (id \(key), at \(real) NOT NULL, domain TEXT NOT NULL, kind TEXT NOT NULL, subject TEXT NOT NULL,
                    message TEXT NOT NULL, link TEXT, delivery TEXT NOT NULL)
                """,
            ]),
        ])
    }

    /// Keeps one check: its record and the whole report's JSON.
    public func record(_ report: DomainReport, at time: Double) throws {
        let record = CheckRecord(report, at: time)
        try db.query("INSERT INTO check_results (domain, checked_at, verdict, summary, report) VALUES (?,?,?,?,?)",
                     [.text(record.domain), .real(time), .text(record.verdict), .text(record.json.serialized()), .text(report.json.serialized())])
    }

    /// The newest checks of `domain`, newest first.
    public func history(domain: String, limit: Int = 20) throws -> [CheckRecord] {
        try db.query("SELECT domain, checked_at, verdict, summary FROM check_results WHERE domain = ? ORDER BY checked_at DESC, id DESC LIMIT ?",
                     [.text(domain), .integer(Int64(limit))]).compactMap(Self.decode)
    }

    /// The newest check of every domain ever checked.
    public func latest() throws -> [String: CheckRecord] {
        let rows = try db.query("""
            SELECT c.domain, c.checked_at, c.verdict, c.summary FROM check_results c
            JOIN (SELECT domain, MAX(id) AS id FROM check_results GROUP BY domain) newest ON newest.id = c.id
            """)
        var out: [String: CheckRecord] = [:]
        for record in rows.compactMap(Self.decode) { out[record.domain] = record }
        return out
    }

    private static func decode(_ row: [SQLValue]) -> CheckRecord? {
        CheckRecord(domain: row[0].string ?? "", checkedAt: row[1].double ?? 0, verdict: row[2].string ?? "", json: row[3].string ?? "")
    }

    /// The state every condition of `kind` was last seen in, by domain and subject.
    public func states(kind: String) throws -> [String: String] {
        var out: [String: String] = [:]
        for row in try db.query("SELECT domain, subject, state FROM alert_state WHERE kind = ?", [.text(kind)]) {
            out[Self.stateKey(row[0].string ?? "", row[1].string ?? "")] = row[2].string ?? ""
        }
        return out
    }

    static func stateKey(_ domain: String, _ subject: String) -> String { domain + "\u{0}" + subject }

    public func setState(domain: String, kind: String, subject: String, state: String, at time: Double) throws {
        try db.query("""
            INSERT INTO alert_state (domain, kind, subject, state, changed_at) VALUES (?,?,?,?,?)
            ON CONFLICT (domain, kind, subject) DO UPDATE SET state = excluded.state, changed_at = excluded.changed_at
            """, [.text(domain), .text(kind), .text(subject), .text(state), .real(time)])
    }

    @discardableResult
    public func logAlert(_ alert: Alert, at time: Double, delivery: String) throws -> Int64 {
        try db.query("INSERT INTO alert_log (at, domain, kind, subject, message, link, delivery) VALUES (?,?,?,?,?,?,?) RETURNING id",
                     [.real(time), .text(alert.domain), .text(alert.kind.rawValue), .text(alert.subject), .text(alert.message),
                      alert.link.map(SQLValue.text) ?? .null, .text(delivery)]).first?.first?.int ?? 0
    }

    public func setDelivery(id: Int64, _ delivery: String) throws {
        try db.query("UPDATE alert_log SET delivery = ? WHERE id = ?", [.text(delivery), .integer(id)])
    }

    /// The newest alerts (of one domain, or all), newest first.
    public func alerts(domain: String? = nil, limit: Int = 50) throws -> [AlertRecord] {
        let rows = try db.query("""
            SELECT id, at, domain, kind, subject, message, link, delivery FROM alert_log \(domain == nil ? "" : "WHERE domain = ?")
            ORDER BY id DESC LIMIT ?
            """, (domain.map { [SQLValue.text($0)] } ?? []) + [.integer(Int64(limit))])
        return rows.map {
            AlertRecord(id: $0[0].int ?? 0, at: $0[1].double ?? 0, domain: $0[2].string ?? "", kind: $0[3].string ?? "", subject: $0[4].string ?? "",
                        message: $0[5].string ?? "", link: $0[6].string, delivery: $0[7].string ?? "")
        }
    }
}
