import Foundation
import MTASTSCore
import Storage

/// Who sends the reports (RFC 8460 §4.4 `organization-name`, `contact-info`; §5.3 submitter).
public struct SenderIdentity: Sendable {
    public var organization: String
    /// `contact-info`: an email address or URI.
    public var contact: String
    /// The reporting domain: `TLS-Report-Submitter`, the sender part of filenames and report-ids.
    public var submitter: String
    /// Envelope and header sender of report mail.
    public var from: String

    public init(organization: String, contact: String, submitter: String, from: String) {
        self.organization = organization
        self.contact = contact
        self.submitter = submitter
        self.from = from
    }
}

/// One RFC 8460 report: for one UTC day, one policy domain and one `_smtp._tls` record.
public struct BuiltReport: Sendable {
    public var day: String
    public var domain: String
    public var record: String
    /// Stable across rebuilds and retries: the day, the domain and a hash of the record.
    public var key: String
    public var reportID: String
    public var report: TLSReport
    /// Where the record says to send it (§3); URIs the record gets wrong are left out.
    /// The first `maxDestinations` usable URIs of the record: a stranger's record cannot make us
    /// send one report to hundreds of places.
    public var rua: [ReportURI]
    /// The URIs past the first `maxDestinations` (logged, not used).
    public var skippedRUA: [ReportURI] = []
    public static let maxDestinations = 5
    public var json: [UInt8]
    public var filename: ReportFilename

    public var gzip: [UInt8] { Gzip.compress(json) }
}

extension SessionStore {
    /// The reports of one UTC day (`YYYY-MM-DD`), from every node's data in the database.
    public func buildReports(day: String, identity: SenderIdentity) throws -> [BuiltReport] {
        guard let start = RFC3339.parse(day + "T00:00:00Z")?.seconds else { throw StorageError("'\(day)' is not a day (YYYY-MM-DD)") }
        let end = start + 86_399
        let groups = try db.query("SELECT DISTINCT domain, record FROM tlsrpt_sessions WHERE day = ? ORDER BY domain, record", [.text(day)])
        var out: [BuiltReport] = []
        for g in groups {
            guard let domain = g[0].string, let record = g[1].string else { continue }
            let policyRows = try db.query("""
                SELECT policy_key, policy_type, policy_domain, policy_strings, mx_hosts, successful, failed FROM tlsrpt_sessions
                WHERE day = ? AND domain = ? AND record = ? ORDER BY policy_key
                """, [.text(day), .text(domain), .text(record)])
            var policies: [PolicyResult] = []
            for p in policyRows {
                let details = try db.query("""
                    SELECT result_type, sending_mta_ip, receiving_mx_hostname, receiving_mx_helo, receiving_ip, additional_information,
                        failure_reason_code, sessions FROM tlsrpt_failures WHERE day = ? AND domain = ? AND record = ? AND policy_key = ?
                    ORDER BY detail_key
                    """, [.text(day), .text(domain), .text(record), p[0]]).map { r in
                    FailureDetail(resultType: ResultType(r[0].string ?? ""), sendingMTAIP: r[1].string, receivingMXHostname: r[2].string,
                                  receivingMXHelo: r[3].string, receivingIP: r[4].string, failedSessionCount: Int(r[7].int ?? 0),
                                  additionalInformation: r[5].string, failureReasonCode: r[6].string)
                }
                let policy = ReportPolicy(type: PolicyType(p[1].string ?? ""), strings: Self.strings(p[3].string), domain: p[2].string ?? domain,
                                          mxHosts: Self.strings(p[4].string))
                policies.append(PolicyResult(policy: policy, successfulSessions: Int(p[5].int ?? 0), failedSessions: Int(p[6].int ?? 0), failureDetails: details))
            }
            let hash = String(FNV1a.hash(record.utf8), radix: 16)
            let key = "\(day)!\(domain)!\(hash)"
            let reportID = "\(day)T00:00:00Z_\(domain)_\(hash)@\(identity.submitter)"
            let report = TLSReport(organizationName: identity.organization, startDate: start, endDate: end, contactInfo: identity.contact,
                                   reportID: reportID, policies: policies)
            let all = TLSRPTRecord.parse(record).record?.rua ?? []
            let rua = Array(all.prefix(BuiltReport.maxDestinations))
            out.append(BuiltReport(day: day, domain: domain, record: record, key: key, reportID: reportID, report: report, rua: rua,
                                   skippedRUA: Array(all.dropFirst(BuiltReport.maxDestinations)),
                                   json: report.encoded(),
                                   filename: ReportFilename(sender: identity.submitter, policyDomain: domain, begin: start, end: end, uniqueID: hash, compressed: true)))
        }
        return out
    }

    static func strings(_ json: String?) -> [String] {
        guard let json, let value = try? JSONParser.parse(Array(json.utf8)).value, case .array(let items) = value else { return [] }
        return items.compactMap { if case .string(let s) = $0 { return s } else { return nil } }
    }
}
