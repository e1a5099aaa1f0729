import Foundation
import MTASTSCore
import Storage

/// Which stored data a question is about: a policy domain and a range of UTC days (inclusive).
public struct ReportFilter: Sendable {
    public var domain: String?
    public var since: String?
    public var until: String?
    /// Only reports whose DKIM signature verified and aligned with From (`dkim = 'pass'`): an
    /// HTTPS POST or an unsigned mail can come from anyone.
    public var authenticatedOnly: Bool
    public init(domain: String? = nil, since: String? = nil, until: String? = nil, authenticatedOnly: Bool = false) {
        self.domain = domain?.lowercased()
        self.since = since
        self.until = until
        self.authenticatedOnly = authenticatedOnly
    }

    /// The condition that keeps authenticated reports, over a column holding a report id.
    static func authenticated(_ reportColumn: String) -> String { "\(reportColumn) IN (SELECT id FROM reports WHERE dkim = 'pass')" }

    /// `WHERE …` over a table with `policy_domain` and `day` columns, and its parameters;
    /// `reportColumn` (a report id) applies `authenticatedOnly`.
    func clause(domainColumn: String = "policy_domain", dayColumn: String = "day", reportColumn: String? = nil) -> (String, [SQLValue]) {
        var parts: [String] = []
        var values: [SQLValue] = []
        if let domain { parts.append("\(domainColumn) = ?"); values.append(.text(domain)) }
        if let since { parts.append("\(dayColumn) >= ?"); values.append(.text(since)) }
        if let until { parts.append("\(dayColumn) <= ?"); values.append(.text(until)) }
        if authenticatedOnly, let reportColumn { parts.append(Self.authenticated(reportColumn)) }
        return (parts.isEmpty ? "" : "WHERE " + parts.joined(separator: " AND "), values)
    }
}

public struct DaySummary: Sendable, Equatable {
    public var domain: String
    public var day: String
    public var reports: Int64
    public var successful: Int64
    public var failed: Int64
    /// Successful sessions over all sessions, 0…1; nil when there were none.
    public var successRate: Double? { successful == 0 && failed == 0 ? nil : Double(successful) / (Double(successful) + Double(failed)) }
}

public struct CountRow: Sendable, Equatable {
    public var key: String
    public var sessions: Int64
}

public struct OrganizationRow: Sendable, Equatable {
    public var organization: String
    public var reports: Int64
    public var successful: Int64
    public var failed: Int64
}

public struct Summary: Sendable {
    public var filter: ReportFilter
    public var days: [DaySummary]
    public var byResultType: [CountRow]
    public var byOrganization: [OrganizationRow]
    public var byMXHost: [CountRow]
    public var byReceivingIP: [CountRow]
    /// Reports in the filter's scope not authenticated by DKIM (HTTPS, unsigned or unaligned
    /// mail): left out of the figures when the filter asks for authenticated reports only.
    public var unauthenticatedReports: Int64 = 0
    public var successful: Int64 { days.reduce(0) { $0.saturatingAdd($1.successful) } }
    public var failed: Int64 { days.reduce(0) { $0.saturatingAdd($1.failed) } }

    /// Per domain with reports on two days or more: the success rate of the earlier half of its
    /// days against the later half (odd counts leave the middle day out).
    public struct Trend: Sendable, Equatable {
        public var domain: String
        public var earlier: (first: String, last: String, successful: Int64, failed: Int64)
        public var later: (first: String, last: String, successful: Int64, failed: Int64)
        public var earlierRate: Double? { rate(earlier.successful, earlier.failed) }
        public var laterRate: Double? { rate(later.successful, later.failed) }
        /// Later minus earlier success rate (positive: fewer failures now).
        public var change: Double? { laterRate.flatMap { l in earlierRate.map { l - $0 } } }
        func rate(_ s: Int64, _ f: Int64) -> Double? { s == 0 && f == 0 ? nil : Double(s) / (Double(s) + Double(f)) }
        public static func == (a: Trend, b: Trend) -> Bool {
            a.domain == b.domain && a.earlier == b.earlier && a.later == b.later
        }
    }

    public var trends: [Trend] {
        Dictionary(grouping: days, by: \.domain).sorted { $0.key < $1.key }.compactMap { domain, rows in
            let sorted = rows.sorted { $0.day < $1.day }
            guard sorted.count >= 2 else { return nil }
            let half = sorted.count / 2
            let a = sorted.prefix(half), b = sorted.suffix(half)
            return Trend(domain: domain,
                         earlier: (a.first!.day, a.last!.day, a.reduce(0) { $0.saturatingAdd($1.successful) }, a.reduce(0) { $0.saturatingAdd($1.failed) }),
                         later: (b.first!.day, b.last!.day, b.reduce(0) { $0.saturatingAdd($1.successful) }, b.reduce(0) { $0.saturatingAdd($1.failed) }))
        }
    }
}

public struct ReportRow: Sendable, Equatable {
    public var id: Int64
    public var organization: String
    public var reportID: String
    public var day: String
    public var startDate: Int64
    public var endDate: Int64
    public var domains: [String]
    public var successful: Int64
    public var failed: Int64
    public var channel: String
    public var dkim: String?
    public var receivedAt: Double
}

extension ReportStore {
    public func summary(_ filter: ReportFilter) throws -> Summary {
        let (policyWhere, policyValues) = filter.clause(domainColumn: "p.policy_domain", dayColumn: "p.day", reportColumn: "p.report")
        let days = try db.query("""
            SELECT p.policy_domain, p.day, COUNT(DISTINCT p.report), \(db.sum)(p.successful), \(db.sum)(p.failed)
            FROM report_policies p \(policyWhere) GROUP BY p.policy_domain, p.day ORDER BY p.policy_domain, p.day
            """, policyValues).map {
            DaySummary(domain: $0[0].string ?? "", day: $0[1].string ?? "", reports: $0[2].int ?? 0, successful: $0[3].int ?? 0, failed: $0[4].int ?? 0)
        }
        let orgs = try db.query("""
            SELECT o.name, COUNT(DISTINCT p.report), \(db.sum)(p.successful), \(db.sum)(p.failed)
            FROM report_policies p JOIN organizations o ON o.id = p.organization_id \(policyWhere)
            GROUP BY o.name ORDER BY \(db.sum)(p.failed) DESC, o.name
            """, policyValues).map {
            OrganizationRow(organization: $0[0].string ?? "", reports: $0[1].int ?? 0, successful: $0[2].int ?? 0, failed: $0[3].int ?? 0)
        }
        let (rollupWhere, rollupValues) = filter.clause()
        func counts(_ kind: String) throws -> [CountRow] {
            guard filter.authenticatedOnly else {
                return try db.query("""
                    SELECT key, \(db.sum)(sessions) FROM failure_rollup \(rollupWhere.isEmpty ? "WHERE" : rollupWhere + " AND") kind = ?
                    GROUP BY key ORDER BY \(db.sum)(sessions) DESC, key
                    """, rollupValues + [.text(kind)]).map { CountRow(key: $0[0].string ?? "", sessions: $0[1].int ?? 0) }
            }
            // The roll-up does not know which report a count came from: authenticated-only
            // figures are summed from the failure details themselves.
            let column = ReportStore.rollupKinds.first { $0.0 == kind }!.1
            let (detailWhere, detailValues) = filter.clause(reportColumn: "report")
            return try db.query("""
                SELECT COALESCE(\(column), '(not reported)') AS key, \(db.sum)(failed_sessions) FROM failure_details \(detailWhere)
                GROUP BY COALESCE(\(column), '(not reported)') ORDER BY \(db.sum)(failed_sessions) DESC, key
                """, detailValues).map { CountRow(key: $0[0].string ?? "", sessions: $0[1].int ?? 0) }
        }
        var all = filter
        all.authenticatedOnly = false
        let (scopeWhere, scopeValues) = all.clause(domainColumn: "p.policy_domain", dayColumn: "p.day")
        let unauthenticated = try db.query("""
            SELECT COUNT(DISTINCT p.report) FROM report_policies p JOIN reports r ON r.id = p.report
            \(scopeWhere.isEmpty ? "WHERE" : scopeWhere + " AND") (r.dkim IS NULL OR r.dkim <> 'pass')
            """, scopeValues).first?[0].int ?? 0
        var summary = Summary(filter: filter, days: days, byResultType: try counts("result-type"), byOrganization: orgs,
                              byMXHost: try counts("mx-host"), byReceivingIP: try counts("receiving-ip"))
        summary.unauthenticatedReports = unauthenticated
        return summary
    }

    public func list(_ filter: ReportFilter, limit: Int = 1000) throws -> [ReportRow] {
        let (parts, conditionValues) = reportConditions(filter)
        return try list(conditions: parts, values: conditionValues, limit: limit)
    }

    /// Report rows matching `conditions` (on `reports r`), newest day first.
    func list(conditions parts: [String], values conditionValues: [SQLValue], limit: Int) throws -> [ReportRow] {
        let values = conditionValues + [.integer(Int64(limit))]
        let concat = db.kind == .sqlite ? "GROUP_CONCAT(d.name, ' ')" : "STRING_AGG(d.name, ' ')"
        let rows = try db.query("""
            SELECT r.id, o.name, r.report_id, r.day, r.start_date, r.end_date, r.successful, r.failed, r.channel, r.dkim, r.received_at,
                (SELECT \(concat) FROM (SELECT DISTINCT policy_domain AS name FROM report_policies WHERE report = r.id) d)
            FROM reports r JOIN organizations o ON o.id = r.organization_id
            \(parts.isEmpty ? "" : "WHERE " + parts.joined(separator: " AND ")) ORDER BY r.day DESC, r.id DESC LIMIT ?
            """, values)
        return rows.map(reportRow)
    }

    /// Conditions on `reports r` for a filter: a report is about a domain when one of its policies is.
    private func reportConditions(_ filter: ReportFilter) -> ([String], [SQLValue]) {
        var parts: [String] = []
        var values: [SQLValue] = []
        if let domain = filter.domain {
            parts.append("r.id IN (SELECT report FROM report_policies WHERE policy_domain = ?)")
            values.append(.text(domain))
        }
        if let since = filter.since { parts.append("r.day >= ?"); values.append(.text(since)) }
        if let until = filter.until { parts.append("r.day <= ?"); values.append(.text(until)) }
        return (parts, values)
    }

    private func reportRow(_ r: [SQLValue]) -> ReportRow {
        ReportRow(id: r[0].int ?? 0, organization: r[1].string ?? "", reportID: r[2].string ?? "", day: r[3].string ?? "",
                  startDate: r[4].int ?? 0, endDate: r[5].int ?? 0, domains: (r[11].string ?? "").split(separator: " ").map(String.init).sorted(),
                  successful: r[6].int ?? 0, failed: r[7].int ?? 0, channel: r[8].string ?? "", dkim: r[9].string, receivedAt: r[10].double ?? 0)
    }

    /// One stored report: its row, the normalised JSON, the raw bytes and what was tolerated.
    public func show(_ key: String) throws -> (row: ReportRow, normalized: String, raw: [UInt8], diagnostics: [String])? {
        let byID = Int64(key)
        let rows = try db.query("""
            SELECT r.id, o.name, r.report_id, r.day, r.start_date, r.end_date, r.successful, r.failed, r.channel, r.dkim, r.received_at,
                '', r.normalized, r.raw, r.diagnostics
            FROM reports r JOIN organizations o ON o.id = r.organization_id WHERE r.id = ? OR r.report_id = ?
            ORDER BY CASE WHEN r.id = ? THEN 0 ELSE 1 END, r.id LIMIT 1
            """, [byID.map(SQLValue.integer) ?? .integer(-1), .text(key), byID.map(SQLValue.integer) ?? .integer(-1)])
        guard let r = rows.first else { return nil }
        var row = reportRow(r)
        row.domains = try db.query("SELECT DISTINCT policy_domain FROM report_policies WHERE report = ? ORDER BY 1", [.integer(row.id)]).compactMap { $0[0].string }
        return (row, r[12].string ?? "", r[13].bytes ?? [], (r[14].string ?? "").split(separator: "\n").map(String.init))
    }

    /// Calls `body` with each stored report's normalised JSON and row, oldest first, in pages
    /// (the export streams; it never holds every report).
    public func forEachReport(_ filter: ReportFilter, _ body: (ReportRow, String) throws -> Void) throws {
        var after: Int64 = 0
        while true {
            let (conditions, conditionValues) = reportConditions(filter)
            let parts = ["r.id > ?"] + conditions
            let values: [SQLValue] = [.integer(after)] + conditionValues
            let rows = try db.query("""
                SELECT r.id, o.name, r.report_id, r.day, r.start_date, r.end_date, r.successful, r.failed, r.channel, r.dkim, r.received_at, '', r.normalized
                FROM reports r JOIN organizations o ON o.id = r.organization_id WHERE \(parts.joined(separator: " AND ")) ORDER BY r.id LIMIT 500
                """, values)
            if rows.isEmpty { return }
            for r in rows { try body(reportRow(r), r[12].string ?? "") }
            after = rows.last?[0].int ?? after
        }
    }

    /// Calls `body` with each failure-detail row (for CSV export), oldest first, in pages.
    public func forEachFailure(_ filter: ReportFilter, _ body: ([String]) throws -> Void) throws {
        var after: Int64 = 0
        let (clause, values) = filter.clause(domainColumn: "f.policy_domain", dayColumn: "f.day")
        while true {
            let rows = try db.query("""
                SELECT f.id, f.day, f.policy_domain, o.name, r.report_id, f.policy_type, COALESCE(f.mode, ''), f.result_type, f.failed_sessions,
                    COALESCE(f.sending_mta_ip, ''), COALESCE(f.receiving_mx_hostname, ''), COALESCE(f.receiving_mx_helo, ''), COALESCE(f.receiving_ip, ''),
                    COALESCE(f.failure_reason_code, ''), COALESCE(f.additional_information, '')
                FROM failure_details f JOIN organizations o ON o.id = f.organization_id JOIN reports r ON r.id = f.report
                \(clause.isEmpty ? "WHERE" : clause + " AND") f.id > ? ORDER BY f.id LIMIT 1000
                """, values + [.integer(after)])
            if rows.isEmpty { return }
            for r in rows { try body(r.dropFirst().map { $0.string ?? "" }) }
            after = rows.last?[0].int ?? after
        }
    }

    public static let failureCSVHeader = ["day", "policy_domain", "organization", "report_id", "policy_type", "mode", "result_type",
                                          "failed_sessions", "sending_mta_ip", "receiving_mx_hostname", "receiving_mx_helo", "receiving_ip",
                                          "failure_reason_code", "additional_information"]
}
