import Foundation
import MTASTSCore
import Storage

/// One domain on the dashboard's overview: its days, how many sending organisations failed, and
/// the policy mode the latest report saw.
public struct DomainOverview: Sendable, Equatable {
    public var domain: String
    /// One entry per day with reports, oldest first.
    public var days: [DaySummary]
    public var failingOrganizations: Int64
    public var organizations: Int64
    /// `enforce`, `testing`, `none`, or nil (no sts policy in the latest report).
    public var reportedMode: String?
    public var successful: Int64 { days.reduce(0) { $0.saturatingAdd($1.successful) } }
    public var failed: Int64 { days.reduce(0) { $0.saturatingAdd($1.failed) } }
    public var successRate: Double? {
        let s = successful, f = failed
        return s == 0 && f == 0 ? nil : Double(s) / (Double(s) + Double(f))
    }
}

/// Failed sessions of one day and one result type.
public struct DailyFailure: Sendable, Equatable {
    public var day: String
    public var resultType: String
    public var sessions: Int64
}

/// What a drill-down asks for: the reports of a domain that carry a sending organisation, an MX
/// host, a receiving IP or a result type.
public struct Carrying: Sendable, Equatable {
    public enum Kind: String, Sendable, CaseIterable { case organization, mxHost = "mx", receivingIP = "ip", resultType = "type" }
    public var kind: Kind
    public var value: String
    public init(_ kind: Kind, _ value: String) {
        self.kind = kind
        self.value = value
    }
}

extension ReportStore {
    /// Every domain with reports in `since…until`, with its figures. Reads `report_policies` (one
    /// row per policy of a report) and never the failure details, so its cost follows the number
    /// of reports, not of failure rows.
    public func overview(since: String, until: String) throws -> [DomainOverview] {
        // Only the daily totals (not the whole summary: its by-type, MX and IP tables read the roll-up of every domain).
        var byDomain: [String: [DaySummary]] = [:]
        for row in try db.query("""
            SELECT policy_domain, day, COUNT(DISTINCT report), \(db.sum)(successful), \(db.sum)(failed) FROM report_policies
            WHERE day >= ? AND day <= ? GROUP BY policy_domain, day ORDER BY policy_domain, day
            """, [.text(since), .text(until)]) {
            let d = DaySummary(domain: row[0].string ?? "", day: row[1].string ?? "", reports: row[2].int ?? 0, successful: row[3].int ?? 0, failed: row[4].int ?? 0)
            byDomain[d.domain, default: []].append(d)
        }
        var orgs: [String: (all: Int64, failing: Int64)] = [:]
        for row in try db.query("""
            SELECT policy_domain, COUNT(DISTINCT organization_id), COUNT(DISTINCT CASE WHEN failed > 0 THEN organization_id END)
            FROM report_policies WHERE day >= ? AND day <= ? GROUP BY policy_domain
            """, [.text(since), .text(until)]) {
            orgs[row[0].string ?? ""] = (row[1].int ?? 0, row[2].int ?? 0)
        }
        var modes: [String: String] = [:]
        for row in try db.query("""
            SELECT p.policy_domain, p.mode FROM report_policies p
            JOIN (SELECT policy_domain, MAX(id) AS id FROM report_policies WHERE policy_type = 'sts' AND day >= ? AND day <= ? GROUP BY policy_domain) latest
              ON latest.id = p.id
            """, [.text(since), .text(until)]) {
            if let domain = row[0].string, let mode = row[1].string { modes[domain] = mode }
        }
        return byDomain.keys.sorted().map { domain in
            DomainOverview(domain: domain, days: byDomain[domain] ?? [], failingOrganizations: orgs[domain]?.failing ?? 0,
                           organizations: orgs[domain]?.all ?? 0, reportedMode: modes[domain])
        }
    }

    /// Failed sessions per day and result type for one domain (from the roll-up), oldest first.
    public func dailyFailures(domain: String, since: String, until: String) throws -> [DailyFailure] {
        try db.query("""
            SELECT day, key, \(db.sum)(sessions) FROM failure_rollup
            WHERE policy_domain = ? AND kind = 'result-type' AND day >= ? AND day <= ? GROUP BY day, key ORDER BY day, key
            """, [.text(domain), .text(since), .text(until)]).map {
            DailyFailure(day: $0[0].string ?? "", resultType: $0[1].string ?? "", sessions: $0[2].int ?? 0)
        }
    }

    /// The newest reports of `domain` in `since…until` that carry what `carrying` names (a sending
    /// organisation, or a failure with that MX host, receiving IP or result type).
    public func reports(domain: String, carrying: Carrying, since: String, until: String, limit: Int = 200) throws -> [ReportRow] {
        let condition: String
        switch carrying.kind {
        case .organization:
            condition = "r.organization_id IN (SELECT id FROM organizations WHERE name = ?)"
        case .mxHost:
            condition = "r.id IN (SELECT report FROM failure_details WHERE policy_domain = ? AND day >= ? AND day <= ? AND COALESCE(receiving_mx_hostname, '(not reported)') = ?)"
        case .receivingIP:
            condition = "r.id IN (SELECT report FROM failure_details WHERE policy_domain = ? AND day >= ? AND day <= ? AND COALESCE(receiving_ip, '(not reported)') = ?)"
        case .resultType:
            condition = "r.id IN (SELECT report FROM failure_details WHERE policy_domain = ? AND day >= ? AND day <= ? AND result_type = ?)"
        }
        let values: [SQLValue] = carrying.kind == .organization ? [.text(carrying.value)]
            : [.text(domain), .text(since), .text(until), .text(carrying.value)]
        return try list(conditions: ["r.id IN (SELECT report FROM report_policies WHERE policy_domain = ?)", "r.day >= ?", "r.day <= ?", condition],
                        values: [.text(domain), .text(since), .text(until)] + values, limit: limit)
    }

    /// The policy strings the newest report of `domain` carried (what senders saw), if any.
    public func lastReportedPolicy(domain: String) throws -> (day: String, type: String, strings: [String])? {
        guard let row = try db.query("""
            SELECT day, policy_type, policy_string FROM report_policies WHERE policy_domain = ? ORDER BY day DESC, id DESC LIMIT 1
            """, [.text(domain)]).first else { return nil }
        let strings = (row[2].string ?? "").split(separator: "\n").map(String.init)
        return (row[0].string ?? "", row[1].string ?? "", strings)
    }
}

extension ReportStore {
    /// The readiness verdict of every domain with reports in the 14 days to `until`, from the daily
    /// totals and the roll-up alone (a few rows a domain and day, never the failure details): the
    /// overview's badge. The rule is `readiness`'s: fewer than `minDays` days of STS reports is
    /// insufficient data; a policy problem (fetch error, invalid policy, untrusted policy host) or
    /// failed sessions under an STS policy is not ready. Where a report's failure details do not add
    /// up to its failed-session count, the badge counts the report's figure (the domain page's full
    /// verdict counts the details).
    public func readinessVerdicts(until: String, days: Int = 14, minDays: Int = 7) throws -> [String: Readiness.Verdict] {
        let untilSeconds = RFC3339.parse(until + "T00:00:00Z")?.seconds ?? Int64(Date().timeIntervalSince1970)
        let since = RFC3339.formatDay(untilSeconds - Int64(max(days, 1) - 1) * 86_400)
        var out: [String: Readiness.Verdict] = [:]
        for row in try db.query("""
            SELECT policy_domain, COUNT(DISTINCT day), \(db.sum)(successful), \(db.sum)(failed) FROM report_policies
            WHERE day >= ? AND day <= ? AND policy_type = 'sts' GROUP BY policy_domain
            """, [.text(since), .text(until)]) {
            let successful = row[2].int ?? 0, failed = row[3].int ?? 0, daysSeen = row[1].int ?? 0
            let domain = row[0].string ?? ""
            out[domain] = failed > 0 ? .notReady : (successful == 0 || daysSeen < Int64(minDays)) ? .insufficientData : .ready
        }
        let types = Readiness.policyTypes.sorted().map { SQLValue.text($0) }
        for row in try db.query("""
            SELECT DISTINCT policy_domain FROM failure_rollup WHERE kind = 'result-type' AND day >= ? AND day <= ?
            AND key IN (\(types.map { _ in "?" }.joined(separator: ",")))
            """, [.text(since), .text(until)] + types) {
            if let domain = row[0].string { out[domain] = .notReady }
        }
        return out
    }
}
