import Foundation
import MTASTSCore

/// JSON forms of stored-report answers: the same for `mtasts reports … --json` and the HTTP API.
extension ReportRow {
    public var json: JSONValue {
        .object([
            JSONMember("id", .int(id)), JSONMember("organization", .string(organization)), JSONMember("report-id", .string(reportID)),
            JSONMember("day", .string(day)), JSONMember("start", .string(RFC3339.format(startDate))), JSONMember("end", .string(RFC3339.format(endDate))),
            JSONMember("policy-domains", .array(domains.map(JSONValue.string))), JSONMember("successful", .int(successful)),
            JSONMember("failed", .int(failed)), JSONMember("channel", .string(channel)), JSONMember("dkim", dkim.map(JSONValue.string) ?? .null),
            JSONMember("received", .string(RFC3339.format(Int64(receivedAt)))),
        ])
    }
}

extension Summary {
    public var json: JSONValue {
        func rate(_ s: Int64, _ f: Int64) -> JSONValue { s == 0 && f == 0 ? .null : .double((Double(s) / (Double(s) + Double(f)) * 10_000).rounded() / 10_000) }
        func counts(_ rows: [CountRow], _ key: String) -> JSONValue {
            .array(rows.map { .object([JSONMember(key, .string($0.key)), JSONMember("failed", .int($0.sessions))]) })
        }
        return .object([
            JSONMember("domain", filter.domain.map(JSONValue.string) ?? .null),
            JSONMember("since", filter.since.map(JSONValue.string) ?? .null),
            JSONMember("until", filter.until.map(JSONValue.string) ?? .null),
            JSONMember("authenticated-only", .bool(filter.authenticatedOnly)),
            JSONMember("unauthenticated-reports", .int(unauthenticatedReports)),
            JSONMember("successful", .int(successful)), JSONMember("failed", .int(failed)), JSONMember("success-rate", rate(successful, failed)),
            JSONMember("days", .array(days.map {
                .object([JSONMember("domain", .string($0.domain)), JSONMember("day", .string($0.day)), JSONMember("reports", .int($0.reports)),
                         JSONMember("successful", .int($0.successful)), JSONMember("failed", .int($0.failed)), JSONMember("success-rate", rate($0.successful, $0.failed))])
            })),
            JSONMember("by-result-type", counts(byResultType, "result-type")),
            JSONMember("by-organization", .array(byOrganization.map {
                .object([JSONMember("organization", .string($0.organization)), JSONMember("reports", .int($0.reports)),
                         JSONMember("successful", .int($0.successful)), JSONMember("failed", .int($0.failed)), JSONMember("success-rate", rate($0.successful, $0.failed))])
            })),
            JSONMember("by-mx-host", counts(byMXHost, "mx-host")),
            JSONMember("by-receiving-ip", counts(byReceivingIP, "receiving-ip")),
            JSONMember("trends", .array(trends.map { t in
                .object([JSONMember("domain", .string(t.domain)),
                         JSONMember("earlier", .object([JSONMember("from", .string(t.earlier.first)), JSONMember("to", .string(t.earlier.last)),
                                                        JSONMember("success-rate", rate(t.earlier.successful, t.earlier.failed))])),
                         JSONMember("later", .object([JSONMember("from", .string(t.later.first)), JSONMember("to", .string(t.later.last)),
                                                      JSONMember("success-rate", rate(t.later.successful, t.later.failed))])),
                         JSONMember("change", t.change.map { .double(($0 * 10_000).rounded() / 10_000) } ?? .null)])
            })),
        ])
    }
}

extension Readiness {
    public var json: JSONValue {
        .object([
            JSONMember("domain", .string(domain)), JSONMember("since", .string(since)), JSONMember("until", .string(until)),
            JSONMember("verdict", .string(verdict.rawValue)), JSONMember("ready", .bool(verdict == .ready)),
            JSONMember("reasons", .array(reasons.map(JSONValue.string))),
            JSONMember("days-with-reports", .array(daysWithReports.map(JSONValue.string))),
            JSONMember("organizations", .array(organizations.map(JSONValue.string))),
            JSONMember("reports", .int(reports)), JSONMember("successful", .int(successful)), JSONMember("failed", .int(failed)),
            JSONMember("would-fail-rate", .double((wouldFailRate * 1_000_000).rounded() / 1_000_000)),
            JSONMember("authenticated-only", .bool(authenticatedOnly)),
            JSONMember("unauthenticated-reports", .int(unauthenticatedReports)),
            JSONMember("modes", .object(modes.sorted { $0.key < $1.key }.map { JSONMember($0.key, .int($0.value)) })),
            JSONMember("problems", .array(problems.map {
                .object([JSONMember("impact", .string($0.impact)), JSONMember("organization", .string($0.organization)),
                         JSONMember("result-type", .string($0.resultType)), JSONMember("sessions", .int($0.sessions)),
                         JSONMember("days", .array($0.days.map(JSONValue.string))), JSONMember("mx-hosts", .array($0.mxHosts.map(JSONValue.string))),
                         JSONMember("receiving-ips", .array($0.receivingIPs.map(JSONValue.string))),
                         JSONMember("example", $0.example.map(JSONValue.string) ?? .null), JSONMember("explanation", .string($0.explanation))])
            })),
        ])
    }
}
