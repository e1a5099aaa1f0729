import MTASTSCore

/// JSON and text forms of the sending side's answers (`mtasts reports send|status`).
extension ReportSender.Attempt {
    public var json: JSONValue {
        .object([JSONMember("report-id", .string(reportID)), JSONMember("uri", .string(uri)), JSONMember("status", .string(status)),
                 JSONMember("result", .string(outcome.detail))])
    }
    public var line: String { "\(status)\t\(uri)\t\(reportID)\t\(outcome.detail)" }
}

extension SessionStore.LedgerRow {
    public var json: JSONValue {
        func time(_ t: Double?) -> JSONValue { t.map { .string(RFC3339.format(Int64($0))) } ?? .null }
        return .object([JSONMember("day", .string(day)), JSONMember("domain", .string(domain)), JSONMember("report-id", .string(reportID)),
                        JSONMember("uri", .string(uri)), JSONMember("status", .string(status)), JSONMember("attempts", .int(attempts)),
                        JSONMember("last-attempt", time(lastAttempt)), JSONMember("next-attempt", time(nextAttempt)),
                        JSONMember("result", result.map(JSONValue.string) ?? .null)])
    }
    public var line: String {
        let next = nextAttempt.map { ", next try \(RFC3339.format(Int64($0)))" } ?? ""
        return "\(day) \(domain) → \(uri): \(status) after \(attempts) attempt(s)\(next)\(result.map { " — \($0)" } ?? "")"
    }
}
