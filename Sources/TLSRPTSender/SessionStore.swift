import Foundation
import MTASTSCore
import Storage

/// Session results aggregated in memory between commits: per (UTC day, TLSRPT domain, exact
/// `_smtp._tls` record, policy) the successful and failed sessions, and per failure detail (its
/// whole content) the sessions it stands for.
public struct SessionBatch: Sendable {
    /// A policy's row: its identity, and the JSON texts the database stores, made once with the
    /// key (not at every commit); compared by its hash first. A class: a key is copied into
    /// tables at every datagram, and a reference is one retain where the fields were ten.
    public final class PolicyKey: Hashable, Sendable {
        public let day: String
        public let domain: String
        public let record: String
        public let type: String
        public let policyDomain: String
        public let strings: [String]
        public let mxHosts: [String]
        /// One string that identifies the policy's whole content (for the database key).
        let key: String
        let stringsJSON: String
        let mxHostsJSON: String
        private let hash: Int

        public init(day: String, domain: String, record: String, type: String, policyDomain: String, strings: [String], mxHosts: [String]) {
            self.day = day
            self.domain = domain
            self.record = record
            self.type = type
            self.policyDomain = policyDomain
            self.strings = strings
            self.mxHosts = mxHosts
            func json(_ value: JSONValue) -> String { String(decoding: value.serializedBytes(), as: UTF8.self) }
            let stringsValue = JSONValue.array(strings.map(JSONValue.string)), mxValue = JSONValue.array(mxHosts.map(JSONValue.string))
            key = json(.array([.string(type), .string(policyDomain), stringsValue, mxValue]))
            stringsJSON = json(stringsValue)
            mxHostsJSON = json(mxValue)
            var hasher = Hasher()
            hasher.combine(day)
            hasher.combine(domain)
            hasher.combine(record)
            hasher.combine(key)
            hash = hasher.finalize()
        }

        // (the key holds the type, the policy domain, the strings and the MX hosts)
        public static func == (a: PolicyKey, b: PolicyKey) -> Bool {
            a.hash == b.hash && a.day == b.day && a.domain == b.domain && a.record == b.record && a.key == b.key
        }
        public func hash(into hasher: inout Hasher) { hasher.combine(hash) }
    }

    public struct DetailKey: Hashable, Sendable {
        public let policy: PolicyKey
        public let detail: FailureDetail
        let key: String
        private let hash: Int

        public init(policy: PolicyKey, detail: FailureDetail) {
            self.policy = policy
            var detail = detail
            detail.failedSessionCount = 0
            self.detail = detail
            let d = detail
            key = String(decoding: JSONValue.array([d.resultType.rawValue, d.sendingMTAIP, d.receivingMXHostname, d.receivingMXHelo, d.receivingIP,
                                                    d.additionalInformation, d.failureReasonCode].map { $0.map(JSONValue.string) ?? .null }).serializedBytes(), as: UTF8.self)
            var hasher = Hasher()
            hasher.combine(policy)
            hasher.combine(key)
            hash = hasher.finalize()
        }

        public static func == (a: DetailKey, b: DetailKey) -> Bool { a.hash == b.hash && a.key == b.key && a.policy == b.policy }
        public func hash(into hasher: inout Hasher) { hasher.combine(hash) }
    }

    /// A datagram's rows on one day, made once: the collector keeps them beside the bytes they
    /// came from, so a datagram seen before is folded in without building its keys again.
    public struct Prepared: Sendable {
        public let repairedUTF8: Bool
        let rows: [(policy: PolicyKey, failed: Bool, details: [DetailKey])]

        public init(_ d: TLSRPTDatagram, day: String) {
            repairedUTF8 = d.repairedUTF8
            rows = d.policies.map { p in
                let key = PolicyKey(day: day, domain: d.domain, record: d.record, type: p.type.rawValue, policyDomain: p.domain, strings: p.strings, mxHosts: p.mxHosts)
                return (key, p.failed, p.failures.map { DetailKey(policy: key, detail: $0) })
            }
        }
    }

    public var sessions: [PolicyKey: (successful: Int64, failed: Int64)] = [:]
    public var details: [DetailKey: Int64] = [:]
    /// Datagrams folded into this batch.
    public var datagrams = 0

    public init() {}

    public var isEmpty: Bool { datagrams == 0 }

    /// Folds one datagram in, on the UTC day `day`.
    public mutating func add(_ d: TLSRPTDatagram, day: String) {
        add(Prepared(d, day: day))
    }

    /// Folds `count` datagrams with these rows in.
    public mutating func add(_ p: Prepared, count: Int = 1) {
        datagrams += count
        let n = Int64(count)
        for row in p.rows {
            if row.failed { sessions[row.policy, default: (0, 0)].failed += n } else { sessions[row.policy, default: (0, 0)].successful += n }
            for detail in row.details { details[detail, default: 0] += n }
        }
    }

    /// Empty again, keeping the tables' room (a collector's batches are alike in size).
    public mutating func clear() {
        sessions.removeAll(keepingCapacity: true)
        details.removeAll(keepingCapacity: true)
        datagrams = 0
    }

    /// Folds another batch in (a failed commit is retried together with what came after it).
    public mutating func merge(_ other: SessionBatch) {
        datagrams += other.datagrams
        for (k, v) in other.sessions {
            let mine = sessions[k] ?? (0, 0)
            sessions[k] = (mine.successful + v.successful, mine.failed + v.failed)
        }
        for (k, v) in other.details { details[k, default: 0] += v }
    }
}

/// The sender's TLS-RPT data in SQL (SQLite or PostgreSQL): aggregated sessions and failure
/// details, the delivery ledger, and claims (which node of a fleet builds and sends a report).
public final class SessionStore: @unchecked Sendable {
    public let db: SQLDatabase

    public init(db: SQLDatabase) throws(StorageError) {
        self.db = db
        try db.migrate(component: "sender", [
            (1, [
                """
                CREATE TABLE tlsrpt_sessions (day TEXT NOT NULL, domain TEXT NOT NULL, record TEXT NOT NULL, policy_key TEXT NOT NULL,
                    policy_type TEXT NOT NULL, policy_domain TEXT NOT NULL, policy_strings TEXT NOT NULL, mx_hosts TEXT NOT NULL,
                    successful BIGINT NOT NULL, failed BIGINT NOT NULL, PRIMARY KEY (day, domain, record, policy_key))
                """,
                """
                CREATE TABLE tlsrpt_failures (day TEXT NOT NULL, domain TEXT NOT NULL, record TEXT NOT NULL, policy_key TEXT NOT NULL,
                    detail_key TEXT NOT NULL, result_type TEXT NOT NULL, sending_mta_ip TEXT, receiving_mx_hostname TEXT, receiving_mx_helo TEXT,
                    receiving_ip TEXT, additional_information TEXT, failure_reason_code TEXT, sessions BIGINT NOT NULL,
                    PRIMARY KEY (day, domain, record, policy_key, detail_key))
                """,
                """
                CREATE TABLE tlsrpt_deliveries (report_key TEXT NOT NULL, uri TEXT NOT NULL, day TEXT NOT NULL, domain TEXT NOT NULL,
                    report_id TEXT NOT NULL, status TEXT NOT NULL, attempts BIGINT NOT NULL, next_attempt \(db.realType) NOT NULL,
                    first_attempt \(db.realType), last_attempt \(db.realType), result TEXT, sent_at \(db.realType), PRIMARY KEY (report_key, uri))
                """,
                "CREATE TABLE tlsrpt_claims (report_key TEXT PRIMARY KEY, node TEXT NOT NULL, claimed_at \(db.realType) NOT NULL)",
            ]),
        ])
    }

    public convenience init(url: String) throws(StorageError) {
        try self.init(db: SQLDatabase(url: url))
    }

    /// Commits a batch in one transaction (counts are added: several collectors can share the database).
    public func commit(_ batch: SessionBatch) throws {
        guard !batch.isEmpty else { return }
        try db.transaction {
            for (k, v) in batch.sessions {
                try db.query("""
                    INSERT INTO tlsrpt_sessions (day, domain, record, policy_key, policy_type, policy_domain, policy_strings, mx_hosts, successful, failed)
                    VALUES (?,?,?,?,?,?,?,?,?,?) ON CONFLICT (day, domain, record, policy_key)
                    DO UPDATE SET successful = tlsrpt_sessions.successful + excluded.successful, failed = tlsrpt_sessions.failed + excluded.failed
                    """, [.text(k.day), .text(k.domain), .text(k.record), .text(k.key), .text(k.type), .text(k.policyDomain),
                          .text(k.stringsJSON), .text(k.mxHostsJSON), .integer(v.successful), .integer(v.failed)])
            }
            for (k, n) in batch.details {
                let d = k.detail
                func o(_ s: String?) -> SQLValue { s.map(SQLValue.text) ?? .null }
                try db.query("""
                    INSERT INTO tlsrpt_failures (day, domain, record, policy_key, detail_key, result_type, sending_mta_ip, receiving_mx_hostname,
                        receiving_mx_helo, receiving_ip, additional_information, failure_reason_code, sessions)
                    VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT (day, domain, record, policy_key, detail_key)
                    DO UPDATE SET sessions = tlsrpt_failures.sessions + excluded.sessions
                    """, [.text(k.policy.day), .text(k.policy.domain), .text(k.policy.record), .text(k.policy.key), .text(k.key),
                          .text(d.resultType.rawValue), o(d.sendingMTAIP), o(d.receivingMXHostname), o(d.receivingMXHelo), o(d.receivingIP),
                          o(d.additionalInformation), o(d.failureReasonCode), .integer(n)])
            }
        }
    }

    /// Days that have session data, oldest first.
    public func days() throws -> [String] {
        try db.query("SELECT DISTINCT day FROM tlsrpt_sessions ORDER BY day").compactMap { $0.first?.string }
    }

    public struct LedgerRow: Sendable {
        public var day: String
        public var domain: String
        public var reportID: String
        public var uri: String
        public var status: String
        public var attempts: Int64
        public var lastAttempt: Double?
        public var nextAttempt: Double?
        public var result: String?
    }

    /// The delivery ledger: what was sent where, when, with what result.
    public func ledger(day: String? = nil) throws -> [LedgerRow] {
        try db.query("""
            SELECT day, domain, report_id, uri, status, attempts, last_attempt, next_attempt, result FROM tlsrpt_deliveries
            \(day == nil ? "" : "WHERE day = ?") ORDER BY day, domain, uri
            """, day.map { [SQLValue.text($0)] } ?? []).map {
            LedgerRow(day: $0[0].string ?? "", domain: $0[1].string ?? "", reportID: $0[2].string ?? "", uri: $0[3].string ?? "",
                      status: $0[4].string ?? "", attempts: $0[5].int ?? 0, lastAttempt: $0[6].double,
                      nextAttempt: ["retry", "pending"].contains($0[4].string ?? "") ? $0[7].double : nil, result: $0[8].string)
        }
    }

    /// Total sessions stored for a day (successful, failed).
    public func totals(day: String) throws -> (successful: Int64, failed: Int64) {
        let r = try db.query("SELECT COALESCE(SUM(successful), 0), COALESCE(SUM(failed), 0) FROM tlsrpt_sessions WHERE day = ?", [.text(day)]).first
        return (r?[0].int ?? 0, r?[1].int ?? 0)
    }
}

// MARK: the delivery ledger (claims and attempts; one node wins each, in a fleet too)

extension SessionStore {
    /// Claims a built report for this node and records one pending delivery per `rua` URI.
    /// False when another node (or an earlier run) claimed it. The claim and its delivery rows are
    /// one transaction: a claim never exists without its deliveries.
    public func claim(_ report: BuiltReport, node: String, at t: Double) throws -> Bool {
        try db.transaction { try claimInTransaction(report, node: node, at: t) }
    }

    private func claimInTransaction(_ report: BuiltReport, node: String, at t: Double) throws -> Bool {
        let won = try db.query("INSERT INTO tlsrpt_claims (report_key, node, claimed_at) VALUES (?, ?, ?) ON CONFLICT (report_key) DO NOTHING RETURNING report_key",
                               [.text(report.key), .text(node), .real(t)])
        guard !won.isEmpty else { return false }
        for uri in report.rua {
            try db.query("""
                INSERT INTO tlsrpt_deliveries (report_key, uri, day, domain, report_id, status, attempts, next_attempt)
                VALUES (?, ?, ?, ?, ?, 'pending', 0, ?) ON CONFLICT (report_key, uri) DO NOTHING
                """, [.text(report.key), .text(uri.uri), .text(report.day), .text(report.domain), .text(report.reportID), .real(t)])
        }
        return true
    }

    public struct DueDelivery: Sendable {
        public var key: String
        public var uri: String
        public var day: String
        public var attempts: Int64
        public var firstAttempt: Double?
    }

    /// Deliveries whose time has come: pending, retrying and due, or left "sending" for 10 minutes
    /// by a node that died.
    public func dueDeliveries(at t: Double) throws -> [DueDelivery] {
        try db.query("""
            SELECT report_key, uri, day, attempts, first_attempt FROM tlsrpt_deliveries
            WHERE (status IN ('pending', 'retry') AND next_attempt <= ?) OR (status = 'sending' AND last_attempt < ?)
            ORDER BY day, report_key, uri
            """, [.real(t), .real(t - 600)]).compactMap { row in
            guard let key = row[0].string, let uri = row[1].string, let day = row[2].string else { return nil }
            return DueDelivery(key: key, uri: uri, day: day, attempts: row[3].int ?? 0, firstAttempt: row[4].double)
        }
    }

    /// Takes one attempt: true for the one node whose UPDATE wins.
    public func take(key: String, uri: String, attempts: Int64, at t: Double) throws -> Bool {
        !(try db.query("""
            UPDATE tlsrpt_deliveries SET status = 'sending', last_attempt = ? WHERE report_key = ? AND uri = ? AND attempts = ?
                AND (status IN ('pending', 'retry') OR (status = 'sending' AND last_attempt < ?)) RETURNING 1
            """, [.real(t), .text(key), .text(uri), .integer(attempts), .real(t - 600)])).isEmpty
    }

    /// Records an attempt's result and, for a retry, when the next one is due.
    public func finish(key: String, uri: String, attempts: Int64, status: String, result: String, at t: Double, first: Double, next: Double? = nil) throws {
        try db.query("""
            UPDATE tlsrpt_deliveries SET status = ?, attempts = ?, result = ?, last_attempt = ?, next_attempt = ?, sent_at = ?,
                first_attempt = COALESCE(first_attempt, ?) WHERE report_key = ? AND uri = ?
            """, [.text(status), .integer(attempts), .text(result), .real(t), .real(next ?? t), status == "sent" ? .real(t) : .null, .real(first),
                  .text(key), .text(uri)])
    }
}
