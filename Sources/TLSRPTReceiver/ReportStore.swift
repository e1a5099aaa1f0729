import Foundation
import MTASTSCore
import Storage

/// One report to store: the parsed report, the bytes it came in, and how it arrived.
public struct IncomingReport: Sendable {
    public var parsed: ParsedReport
    /// The bytes as received (the HTTP body or the mail message), kept beside the normalised form.
    public var raw: [UInt8]
    /// `https`, `mail` or `file`.
    public var channel: String
    public var receivedAt: Double
    /// DKIM result for mail (`pass`, `fail`, `none`, …), nil for other channels.
    public var dkim: String?
    public var dkimDomain: String?
    public var mailFrom: String?
    /// For mail: the TLS-Report-Domain header, used when the report names no policy domain.
    public var reportDomain: String?

    public init(parsed: ParsedReport, raw: [UInt8], channel: String, receivedAt: Double = Date().timeIntervalSince1970,
                dkim: String? = nil, dkimDomain: String? = nil, mailFrom: String? = nil, reportDomain: String? = nil) {
        self.parsed = parsed
        self.raw = raw
        self.channel = channel
        self.receivedAt = receivedAt
        self.dkim = dkim
        self.dkimDomain = dkimDomain
        self.mailFrom = mailFrom
        self.reportDomain = reportDomain
    }
}

public enum StoreOutcome: Sendable, Equatable {
    case stored(Int64)
    /// The same report (organisation, report-id, date range) was stored before, under this id.
    case duplicate(Int64)
}

/// TLS reports as rows (RFC 8460 §4): organisations, reports (normalised JSON and the raw bytes),
/// one row per policy with its session counts, one per failure detail. SQLite or PostgreSQL.
public final class ReportStore: @unchecked Sendable {
    public let db: SQLDatabase

    public init(db: SQLDatabase) throws(StorageError) {
        self.db = db
        try db.migrate(component: "reports", Self.migrations(db))
    }

    public convenience init(url: String) throws(StorageError) {
        try self.init(db: SQLDatabase(url: url))
    }

    static func migrations(_ db: SQLDatabase) -> [(version: Int, sql: [String])] {
        let key = db.serialKey, real = db.realType, blob = db.blobType
        return [
            (1, [
                "CREATE TABLE organizations (id \(key), name TEXT NOT NULL UNIQUE, contact_info TEXT, first_seen \(real) NOT NULL, last_seen \(real) NOT NULL)",
                """
                CREATE TABLE reports (id \(key), organization_id BIGINT NOT NULL REFERENCES organizations(id), report_id TEXT NOT NULL,
                    start_date BIGINT NOT NULL, end_date BIGINT NOT NULL, day TEXT NOT NULL, contact_info TEXT, received_at \(real) NOT NULL,
                    channel TEXT NOT NULL, dkim TEXT, dkim_domain TEXT, mail_from TEXT, successful BIGINT NOT NULL, failed BIGINT NOT NULL,
                    diagnostics TEXT, normalized TEXT NOT NULL, raw \(blob) NOT NULL,
                    UNIQUE (organization_id, report_id, start_date, end_date))
                """,
                "CREATE INDEX reports_day ON reports (day)",
                """
                CREATE TABLE report_policies (id \(key), report BIGINT NOT NULL REFERENCES reports(id) ON DELETE CASCADE,
                    organization_id BIGINT NOT NULL, day TEXT NOT NULL, policy_type TEXT NOT NULL, policy_domain TEXT NOT NULL,
                    policy_string TEXT NOT NULL, mode TEXT, mx_hosts TEXT NOT NULL, successful BIGINT NOT NULL, failed BIGINT NOT NULL)
                """,
                "CREATE INDEX report_policies_domain_day ON report_policies (policy_domain, day)",
                """
                CREATE TABLE failure_details (id \(key), report BIGINT NOT NULL REFERENCES reports(id) ON DELETE CASCADE,
                    policy BIGINT NOT NULL, organization_id BIGINT NOT NULL, day TEXT NOT NULL, policy_domain TEXT NOT NULL,
                    policy_type TEXT NOT NULL, mode TEXT, result_type TEXT NOT NULL, sending_mta_ip TEXT, receiving_mx_hostname TEXT,
                    receiving_mx_helo TEXT, receiving_ip TEXT, failed_sessions BIGINT NOT NULL, additional_information TEXT,
                    failure_reason_code TEXT)
                """,
                "CREATE INDEX failure_details_domain_day ON failure_details (policy_domain, day)",
            ]),
            // Failed sessions rolled up per domain, day and result type / MX host / receiving IP,
            // kept as reports arrive, so summaries read a few rows instead of every failure detail.
            (2, [
                """
                CREATE TABLE failure_rollup (policy_domain TEXT NOT NULL, day TEXT NOT NULL, kind TEXT NOT NULL, key TEXT NOT NULL,
                    sessions BIGINT NOT NULL, PRIMARY KEY (policy_domain, day, kind, key))
                """,
            ] + Self.rollupKinds.map { kind, column in
                """
                INSERT INTO failure_rollup (policy_domain, day, kind, key, sessions)
                SELECT policy_domain, day, '\(kind)', COALESCE(\(column), '(not reported)'), SUM(failed_sessions) FROM failure_details
                GROUP BY policy_domain, day, COALESCE(\(column), '(not reported)')
                """
            }),
            // The report a policy or failure row belongs to (a report's domains, drill-down,
            // ON DELETE CASCADE), and a report by its report-id (`reports show ID`).
            (3, [
                "CREATE INDEX report_policies_report ON report_policies (report)",
                "CREATE INDEX failure_details_report ON failure_details (report)",
                "CREATE INDEX reports_report_id ON reports (report_id)",
                // The dashboard's overview: every domain's days in a window, read from the index alone.
                "CREATE INDEX report_policies_day ON report_policies (day, policy_domain, policy_type, organization_id, report, successful, failed, mode)",
            ]),
            // How far `reports ingest --imap` got in each mailbox: the last UID taken under a
            // UIDVALIDITY (RFC 9051 §2.3.1.1: a new UIDVALIDITY means the UIDs start over).
            (4, [
                "CREATE TABLE imap_progress (account TEXT PRIMARY KEY, uid_validity BIGINT NOT NULL, last_uid BIGINT NOT NULL, updated_at \(real) NOT NULL)",
            ]),
        ]
    }

    /// The dimensions of `failure_rollup`: kind and the failure_details column it counts by.
    static let rollupKinds: [(String, String)] = [("result-type", "result_type"), ("mx-host", "receiving_mx_hostname"), ("receiving-ip", "receiving_ip")]

    /// Stores a report unless the same one (organisation, report-id, date range) is there already.
    @discardableResult
    public func store(_ input: IncomingReport) throws -> StoreOutcome {
        try db.transaction { try storeInTransaction(input) }
    }

    /// `keySuffix` marks a verified report stored beside another signer's copy of the same key.
    private func storeInTransaction(_ input: IncomingReport, keySuffix: String? = nil) throws -> StoreOutcome {
        let report = input.parsed.report
        let organization = nonEmpty(report.organizationName) ?? "(no organization-name)"
        let normalized = String(decoding: report.encoded(), as: UTF8.self)
        // A report without report-id gets one derived from its content, so a re-send still dedups.
        let reportID = (nonEmpty(report.reportID) ?? "content-" + String(FNV1a.hash(normalized.utf8), radix: 16)) + (keySuffix ?? "")
        let day = RFC3339.formatDay(report.startDate)
        let diagnostics = input.parsed.diagnostics.map { "\($0.code): \($0.message)" }.joined(separator: "\n")
        do {
            let orgID = try organizationID(organization, contact: report.contactInfo, at: input.receivedAt)
            let inserted = try db.query("""
                INSERT INTO reports (organization_id, report_id, start_date, end_date, day, contact_info, received_at, channel, dkim, dkim_domain,
                    mail_from, successful, failed, diagnostics, normalized, raw)
                VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT (organization_id, report_id, start_date, end_date) DO NOTHING RETURNING id
                """, [.integer(orgID), .text(reportID), .integer(report.startDate), .integer(report.endDate), .text(day),
                      optional(report.contactInfo), .real(input.receivedAt), .text(input.channel), optional(input.dkim), optional(input.dkimDomain),
                      optional(input.mailFrom), .integer(Int64(report.totalSuccessful)), .integer(Int64(report.totalFailed)),
                      diagnostics.isEmpty ? .null : .text(diagnostics), .text(normalized), .blob(input.raw)])
            guard let id = inserted.first?.first?.int else {
                let existing = try db.query("SELECT id, dkim, dkim_domain FROM reports WHERE organization_id = ? AND report_id = ? AND start_date = ? AND end_date = ?",
                                            [.integer(orgID), .text(reportID), .integer(report.startDate), .integer(report.endDate)])
                let existingID = existing.first?[0].int ?? 0
                // First come is not first served. The key (organisation, report-id, dates) is
                // chosen by whoever writes the report, so a copy that got there first must not
                // keep out a DKIM-verified one: nothing is deleted or subtracted, the verified copy
                // is stored too (and alone counts under --authenticated).
                guard input.dkim == "pass", existingID != 0 else { return .duplicate(existingID) }
                if existing.first?[1].string == "pass" {
                    // Both verified: by the same signer, a duplicate; by another signer, that
                    // signer's own report (a verified forger cannot keep out the real sender).
                    guard keySuffix == nil, existing.first?[2].string != input.dkimDomain else { return .duplicate(existingID) }
                    return try storeInTransaction(input, keySuffix: "#d=\(input.dkimDomain ?? "?")")
                }
                // An unauthenticated copy holds the key: it keeps its data under a marked id, and
                // the verified copy takes the key (a concurrent upgrade renames it only once).
                try db.query("UPDATE reports SET report_id = ? WHERE id = ? AND (dkim IS NULL OR dkim <> 'pass')",
                             [.text(reportID + "#unauthenticated-\(existingID)"), .integer(existingID)])
                return try storeInTransaction(input, keySuffix: keySuffix)
            }
            for result in report.policies {
                let policy = result.policy
                let domain = nonEmpty(policy.domain).map { $0.lowercased() } ?? nonEmpty(input.reportDomain)?.lowercased() ?? ""
                let mode = Self.mode(of: policy)
                let policyRow = try db.query("""
                    INSERT INTO report_policies (report, organization_id, day, policy_type, policy_domain, policy_string, mode, mx_hosts, successful, failed)
                    VALUES (?,?,?,?,?,?,?,?,?,?) RETURNING id
                    """, [.integer(id), .integer(orgID), .text(day), .text(policy.type.rawValue), .text(domain), .text(policy.strings.joined(separator: "\n")),
                          optional(mode), .text(policy.mxHosts.joined(separator: " ")), .integer(Int64(result.successfulSessions)),
                          .integer(Int64(result.failedSessions))])
                let policyID = policyRow.first?.first?.int ?? 0
                for f in result.failureDetails {
                    try db.query("""
                        INSERT INTO failure_details (report, policy, organization_id, day, policy_domain, policy_type, mode, result_type, sending_mta_ip,
                            receiving_mx_hostname, receiving_mx_helo, receiving_ip, failed_sessions, additional_information, failure_reason_code)
                        VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)
                        """, [.integer(id), .integer(policyID), .integer(orgID), .text(day), .text(domain), .text(policy.type.rawValue), optional(mode),
                              .text(f.resultType.rawValue), optional(f.sendingMTAIP), optional(f.receivingMXHostname.map { $0.lowercased() }),
                              optional(f.receivingMXHelo), optional(f.receivingIP), .integer(Int64(f.failedSessionCount)),
                              optional(f.additionalInformation), optional(f.failureReasonCode)])
                    for (kind, key) in [("result-type", f.resultType.rawValue), ("mx-host", f.receivingMXHostname?.lowercased()), ("receiving-ip", f.receivingIP)] {
                        try db.query("""
                            INSERT INTO failure_rollup (policy_domain, day, kind, key, sessions) VALUES (?, ?, ?, ?, ?)
                            ON CONFLICT (policy_domain, day, kind, key) DO UPDATE SET sessions = CASE WHEN failure_rollup.sessions > 9007199254740991 - excluded.sessions
                                THEN 9007199254740991 ELSE failure_rollup.sessions + excluded.sessions END
                            """, [.text(domain), .text(day), .text(kind), .text(key ?? "(not reported)"), .integer(Int64(f.failedSessionCount))])
                    }
                }
            }
            return .stored(id)
        }
    }

    private func organizationID(_ name: String, contact: String?, at time: Double) throws -> Int64 {
        let rows = try db.query("""
            INSERT INTO organizations (name, contact_info, first_seen, last_seen) VALUES (?, ?, ?, ?)
            ON CONFLICT (name) DO UPDATE SET last_seen = excluded.last_seen, contact_info = COALESCE(excluded.contact_info, organizations.contact_info)
            RETURNING id
            """, [.text(name), optional(contact), .real(time), .real(time)])
        guard let id = rows.first?.first?.int else { throw StorageError("no id for organization \(name)") }
        return id
    }

    /// The `mode:` of an STS policy string, as reported.
    static func mode(of policy: ReportPolicy) -> String? {
        guard policy.type == .sts else { return nil }
        for line in policy.strings {
            let parts = line.split(separator: ":", maxSplits: 1)
            if parts.count == 2, parts[0].trimmingCharacters(in: .whitespaces).lowercased() == "mode" {
                return parts[1].trimmingCharacters(in: .whitespaces).lowercased()
            }
        }
        return nil
    }
}

func nonEmpty(_ s: String?) -> String? {
    guard let s, !s.trimmingCharacters(in: .whitespaces).isEmpty else { return nil }
    return s
}

func optional(_ s: String?) -> SQLValue { s.map(SQLValue.text) ?? .null }

extension ReportStore {
    /// Where a re-run of `reports ingest --mbox PATH` starts: the file's inode and the offset after
    /// the last message taken.
    /// The UIDVALIDITY and last UID taken from an IMAP mailbox (`user@host:port/mailbox`).
    public func imapProgress(account: String) throws -> (uidValidity: UInt32, lastUID: UInt32)? {
        guard let row = try db.query("SELECT uid_validity, last_uid FROM imap_progress WHERE account = ?", [.text(account)]).first,
              let validity = row[0].int.flatMap(UInt32.init(exactly:)), let last = row[1].int.flatMap(UInt32.init(exactly:)) else { return nil }
        return (validity, last)
    }

    public func setImapProgress(account: String, uidValidity: UInt32, lastUID: UInt32) throws {
        try db.query("""
            INSERT INTO imap_progress (account, uid_validity, last_uid, updated_at) VALUES (?,?,?,?)
            ON CONFLICT (account) DO UPDATE SET uid_validity = excluded.uid_validity, last_uid = excluded.last_uid, updated_at = excluded.updated_at
            """, [.text(account), .integer(Int64(uidValidity)), .integer(Int64(lastUID)), .real(Date().timeIntervalSince1970)])
    }

    public func mboxProgress(path: String) throws -> (inode: Int64, offset: Int64)? {
        try db.query("CREATE TABLE IF NOT EXISTS mbox_progress (path TEXT PRIMARY KEY, inode BIGINT NOT NULL, offset BIGINT NOT NULL)")
        guard let row = try db.query("SELECT inode, offset FROM mbox_progress WHERE path = ?", [.text(path)]).first,
              let inode = row[0].int, let offset = row[1].int else { return nil }
        return (inode, offset)
    }

    public func setMboxProgress(path: String, inode: Int64, offset: Int64) throws {
        try db.query("INSERT INTO mbox_progress (path, inode, offset) VALUES (?, ?, ?) ON CONFLICT (path) DO UPDATE SET inode = excluded.inode, offset = excluded.offset",
                     [.text(path), .integer(inode), .integer(offset)])
    }
}
