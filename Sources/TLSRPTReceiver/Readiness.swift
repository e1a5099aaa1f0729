import Foundation
import MTASTSCore
import Storage

/// Is it safe to move a domain's MTA-STS policy from `testing` to `enforce`? Answered from the
/// stored reports: in `testing` a sender that fails validation still delivers, and reports the
/// failure; under `enforce` the same sender would defer (and in the end bounce) that mail.
public struct Readiness: Sendable {
    public enum Verdict: String, Sendable {
        /// Enough days of reports and no sender would have failed.
        case ready
        /// Some senders would have failed under `enforce` (see `problems`).
        case notReady = "not-ready"
        /// Too few days of reports, or none, to say.
        case insufficientData = "insufficient-data"
    }

    /// What would have gone wrong, grouped by sender and kind.
    public struct Problem: Sendable, Equatable {
        /// `delivery` (the sender would not deliver under enforce) or `policy` (the sender could
        /// not fetch or use the policy: enforce would not protect that mail).
        public var impact: String
        public var organization: String
        public var resultType: String
        public var sessions: Int64
        public var days: [String]
        public var mxHosts: [String]
        public var receivingIPs: [String]
        /// One `additional-information` or `failure-reason-code` seen, as a hint.
        public var example: String?
        public var explanation: String
    }

    public var domain: String
    public var since: String
    public var until: String
    public var verdict: Verdict
    public var reasons: [String]
    public var daysWithReports: [String]
    public var organizations: [String]
    public var reports: Int64
    public var successful: Int64
    public var failed: Int64
    /// Sessions per policy mode the senders reported (`testing`, `enforce`, `none`).
    public var modes: [String: Int64]
    public var problems: [Problem]
    /// Failed sessions that would have failed under enforce, over all sessions.
    public var wouldFailRate: Double
    /// Reports in the window not authenticated by DKIM; left out when `authenticatedOnly`.
    public var unauthenticatedReports: Int64 = 0
    public var authenticatedOnly = false

    /// Result types that mean the sender could not use the policy at all.
    static let policyTypes: Set<String> = ["sts-policy-fetch-error", "sts-policy-invalid", "sts-webpki-invalid"]

    static func explain(_ type: String) -> String {
        switch type {
        case "starttls-not-supported": return "the MX did not offer STARTTLS to this sender (or something in between removed it); under enforce it would not deliver"
        case "certificate-host-mismatch": return "the MX certificate does not name the MX host; under enforce this sender would not deliver"
        case "certificate-expired": return "the MX certificate had expired; under enforce this sender would not deliver"
        case "certificate-not-trusted": return "the MX certificate chain is not trusted (self-signed or missing intermediate); under enforce this sender would not deliver"
        case "validation-failure": return "validation failed, often an MX host not listed in the policy's mx patterns; under enforce this sender would not deliver"
        case "sts-policy-fetch-error": return "the sender could not fetch https://mta-sts.DOMAIN/.well-known/mta-sts.txt; fix the policy host before enforcing"
        case "sts-policy-invalid": return "the sender found the policy invalid; fix the policy text"
        case "sts-webpki-invalid": return "the policy host's certificate did not validate for the sender"
        default: return "a failure the sender reported under this policy; under enforce it may not deliver"
        }
    }
}

extension ReportStore {
    /// - Parameters:
    ///   - days: how many UTC days back from `until` (inclusive) to look at.
    ///   - minDays: days with reports needed before a `ready` verdict.
    ///   - tolerance: share of sessions allowed to fail (0 = none).
    /// - authenticatedOnly: count only reports whose DKIM signature verified and aligned.
    public func readiness(domain: String, until: String, days: Int = 14, minDays: Int = 7, tolerance: Double = 0, authenticatedOnly: Bool = false) throws -> Readiness {
        let onlyAuthenticated = authenticatedOnly ? " AND " + ReportFilter.authenticated("p.report") : ""
        let detailsAuthenticated = authenticatedOnly ? " AND " + ReportFilter.authenticated("f.report") : ""
        let domain = domain.lowercased()
        let untilSeconds = RFC3339.parse(until + "T00:00:00Z")?.seconds ?? Int64(Date().timeIntervalSince1970)
        let since = RFC3339.formatDay(untilSeconds - Int64(max(days, 1) - 1) * 86400)
        let window: [SQLValue] = [.text(domain), .text(since), .text(until)]
        // Sessions under an STS policy, and under no policy where the sender said why (fetch errors).
        let policyRows = try db.query("""
            SELECT p.day, o.name, COALESCE(p.mode, ''), p.successful, p.failed, p.report, p.policy_type
            FROM report_policies p JOIN organizations o ON o.id = p.organization_id
            WHERE p.policy_domain = ? AND p.day >= ? AND p.day <= ? AND p.policy_type IN ('sts', 'no-policy-found')\(onlyAuthenticated)
            """, window)
        let unauthenticated = try db.query("""
            SELECT COUNT(DISTINCT p.report) FROM report_policies p JOIN reports r ON r.id = p.report
            WHERE p.policy_domain = ? AND p.day >= ? AND p.day <= ? AND (r.dkim IS NULL OR r.dkim <> 'pass')
            """, window).first?[0].int ?? 0
        var daysSeen = Set<String>(), orgs = Set<String>(), reports = Set<Int64>(), modes: [String: Int64] = [:]
        var successful: Int64 = 0, failed: Int64 = 0
        for r in policyRows {
            let isSTS = r[6].string == "sts"
            reports.insert(r[5].int ?? 0)
            guard isSTS else { continue }
            daysSeen.insert(r[0].string ?? "")
            orgs.insert(r[1].string ?? "")
            let s = r[3].int ?? 0, f = r[4].int ?? 0
            successful = successful.saturatingAdd(s)
            failed = failed.saturatingAdd(f)
            let mode = (r[2].string ?? "").isEmpty ? "(not reported)" : r[2].string!
            modes[mode] = modes[mode, default: 0].saturatingAdd(s.saturatingAdd(f))
        }
        let failureRows = try db.query("""
            SELECT o.name, f.result_type, f.day, COALESCE(f.receiving_mx_hostname, ''), COALESCE(f.receiving_ip, ''), f.failed_sessions,
                COALESCE(f.additional_information, f.failure_reason_code, ''), f.policy_type
            FROM failure_details f JOIN organizations o ON o.id = f.organization_id
            WHERE f.policy_domain = ? AND f.day >= ? AND f.day <= ? AND f.policy_type IN ('sts', 'no-policy-found')\(detailsAuthenticated)
            ORDER BY f.id
            """, window)
        struct Key: Hashable { var org: String; var type: String }
        var grouped: [Key: Readiness.Problem] = [:]
        var order: [Key] = []
        var wouldFail: Int64 = 0
        for r in failureRows {
            let type = r[1].string ?? ""
            // Under no-policy-found only policy problems concern this domain's STS setup.
            if r[7].string == "no-policy-found" && !Readiness.policyTypes.contains(type) { continue }
            let key = Key(org: r[0].string ?? "", type: type)
            if grouped[key] == nil {
                order.append(key)
                grouped[key] = Readiness.Problem(impact: Readiness.policyTypes.contains(type) ? "policy" : "delivery", organization: key.org,
                                                 resultType: type, sessions: 0, days: [], mxHosts: [], receivingIPs: [], example: nil,
                                                 explanation: Readiness.explain(type))
            }
            let n = r[5].int ?? 0
            grouped[key]!.sessions = grouped[key]!.sessions.saturatingAdd(n)
            if r[7].string == "sts" { wouldFail = wouldFail.saturatingAdd(n) }
            if let day = r[2].string, !grouped[key]!.days.contains(day) { grouped[key]!.days.append(day) }
            if let mx = r[3].string, !mx.isEmpty, !grouped[key]!.mxHosts.contains(mx) { grouped[key]!.mxHosts.append(mx) }
            if let ip = r[4].string, !ip.isEmpty, !grouped[key]!.receivingIPs.contains(ip) { grouped[key]!.receivingIPs.append(ip) }
            if grouped[key]!.example == nil, let hint = r[6].string, !hint.isEmpty { grouped[key]!.example = hint }
        }
        var problems = order.compactMap { grouped[$0] }
        for i in problems.indices { problems[i].days.sort(); problems[i].mxHosts.sort(); problems[i].receivingIPs.sort() }
        problems.sort { $0.impact != $1.impact ? $0.impact < $1.impact : $0.sessions != $1.sessions ? $0.sessions > $1.sessions : $0.organization < $1.organization }

        let total = successful.saturatingAdd(failed)
        let rate = total == 0 ? 0 : Double(wouldFail) / Double(total)
        var reasons: [String] = []
        var verdict = Readiness.Verdict.ready
        if total == 0 {
            verdict = .insufficientData
            reasons.append("no report about an STS policy for \(domain) between \(since) and \(until): publish the policy in mode testing, point rua at this service and wait for reports")
        } else if daysSeen.count < minDays {
            verdict = .insufficientData
            reasons.append("reports on \(daysSeen.count) day(s); at least \(minDays) are needed to cover the senders that write rarely")
        }
        let policyProblems = problems.filter { $0.impact == "policy" }
        if !policyProblems.isEmpty {
            verdict = .notReady
            reasons.append("\(policyProblems.count) sender(s) could not fetch or use the policy (\(Set(policyProblems.map(\.resultType)).sorted().joined(separator: ", ")))")
        }
        if wouldFail > 0 && rate > tolerance {
            verdict = .notReady
            let senders = Set(problems.filter { $0.impact == "delivery" }.map(\.organization)).sorted()
            reasons.append("\(wouldFail) of \(total) sessions (\(String(format: "%.3f", rate * 100)) %) from \(senders.joined(separator: ", ")) failed validation and would not be delivered under enforce")
        }
        if verdict == .ready {
            reasons.append("\(total) sessions from \(orgs.count) sender(s) over \(daysSeen.count) day(s), \(wouldFail == 0 ? "none" : "\(wouldFail) (within the tolerance)") failed validation")
            if let enforce = modes["enforce"], enforce == total { reasons.append("senders already report mode enforce") }
        }
        var answer = Readiness(domain: domain, since: since, until: until, verdict: verdict, reasons: reasons, daysWithReports: daysSeen.sorted(),
                               organizations: orgs.sorted(), reports: Int64(reports.count), successful: successful, failed: failed, modes: modes,
                               problems: problems, wouldFailRate: rate)
        answer.unauthenticatedReports = unauthenticated
        answer.authenticatedOnly = authenticatedOnly
        return answer
    }
}
