import Foundation
import MTASTSCore

/// Text and CSV forms of stored-report answers (`mtasts reports …`); the JSON forms are in
/// JSONForms.swift. Sums are done in Double where they only feed a percentage.
extension ReportRow {
    public static let csvHeader = ["id", "day", "organization", "report_id", "policy_domains", "successful", "failed", "channel", "dkim"]
    public var csvFields: [String] {
        [String(id), day, organization, reportID, domains.joined(separator: " "), String(successful), String(failed), channel, dkim ?? ""]
    }
    public func line(style: TextStyle) -> String {
        let failedText = failed > 0 ? style.red("\(failed) failed") : "0 failed"
        return "#\(id)  \(day)  \(organization)  \(domains.joined(separator: ","))  \(successful) ok, \(failedText)  [\(channel)\(dkim.map { ", dkim \($0)" } ?? "")]  \(style.dim(reportID))"
    }
}

/// One stored report as `reports show` and `GET /api/reports/ID` give it.
public struct StoredReport: Sendable {
    public var row: ReportRow
    public var normalized: String
    public var diagnostics: [String]
    public init(row: ReportRow, normalized: String, diagnostics: [String]) {
        self.row = row
        self.normalized = normalized
        self.diagnostics = diagnostics
    }

    var report: JSONValue { (try? JSONParser.parse(Array(normalized.utf8)).value) ?? .string(normalized) }

    public var json: JSONValue {
        guard case .object(var members) = row.json else { return row.json }
        members.append(JSONMember("tolerated", .array(diagnostics.map(JSONValue.string))))
        members.append(JSONMember("report", report))
        return .object(members)
    }

    public var text: String {
        let r = row
        var out = "#\(r.id) \(r.organization) \(r.reportID)\n  \(RFC3339.format(r.startDate)) – \(RFC3339.format(r.endDate))\n  received \(RFC3339.format(Int64(r.receivedAt))) by \(r.channel)\(r.dkim.map { ", DKIM \($0)" } ?? "")\n  \(r.successful) successful, \(r.failed) failed sessions\n"
        for d in diagnostics { out += "  tolerated: \(d)\n" }
        return out + String(decoding: report.serializedBytes(pretty: true, indent: 2), as: UTF8.self)
    }
}

extension Summary {
    /// One row per domain and day.
    public var csv: String {
        var out = CSV.line(["domain", "day", "reports", "successful", "failed", "success_rate"])
        for d in days { out += CSV.line([d.domain, d.day, String(d.reports), String(d.successful), String(d.failed), d.successRate.map { String(format: "%.4f", $0) } ?? ""]) }
        return out
    }

    public func text(style: TextStyle) -> String {
        let pct = { (ok: Int64, failed: Int64) in TextStyle.percent(ok, failed) }
        var lines = [style.bold("Sessions: \(successful) successful, \(failed) failed, success \(pct(successful, failed))")]
        if unauthenticatedReports > 0 {
            lines.append(filter.authenticatedOnly ? "(\(unauthenticatedReports) report(s) not authenticated by DKIM are left out)"
                         : "(\(unauthenticatedReports) report(s) are not authenticated by DKIM: --authenticated leaves them out)")
        }
        var domain: String?
        for d in days {
            if d.domain != domain { domain = d.domain; lines.append("\n" + style.bold(d.domain.isEmpty ? "(no policy domain)" : d.domain)) }
            let failedText = d.failed > 0 ? style.red(String(d.failed)) : "0"
            lines.append("  \(d.day)  \(d.reports) report(s)  \(d.successful) ok  \(failedText) failed  \(pct(d.successful, d.failed))")
        }
        func section(_ title: String, _ rows: [CountRow]) {
            guard !rows.isEmpty else { return }
            lines.append("\n" + style.bold(title))
            for r in rows { lines.append("  \(r.sessions)\t\(r.key)") }
        }
        section("Failures by result type", byResultType)
        if !byOrganization.isEmpty {
            lines.append("\n" + style.bold("By sending organisation"))
            for o in byOrganization { lines.append("  \(o.organization): \(o.reports) report(s), \(o.successful) ok, \(o.failed) failed, \(pct(o.successful, o.failed))") }
        }
        section("Failures by MX host", byMXHost)
        section("Failures by receiving IP", byReceivingIP)
        let changed = trends.filter { $0.change != nil }
        if !changed.isEmpty {
            lines.append("\n" + style.bold("Trend (success rate, earlier half of the days → later half)"))
            for t in changed {
                let change = t.change ?? 0
                let word = abs(change) < 0.000_05 ? "steady" : change > 0 ? style.green("better") : style.red("worse")
                lines.append("  \(t.domain.isEmpty ? "(no policy domain)" : t.domain): \(pct(t.earlier.successful, t.earlier.failed)) (\(t.earlier.first)–\(t.earlier.last)) → \(pct(t.later.successful, t.later.failed)) (\(t.later.first)–\(t.later.last)), \(word)")
            }
        }
        return lines.joined(separator: "\n") + "\n"
    }
}

extension Readiness {
    public func text(style: TextStyle) -> String {
        var out = "\(domain): "
        switch verdict {
        case .ready: out += style.green("ready for enforce")
        case .notReady: out += style.red("not ready for enforce")
        case .insufficientData: out += style.yellow("not enough data")
        }
        out += "  (\(since) – \(until), \(daysWithReports.count) day(s) with reports, \(reports) report(s), \(successful.saturatingAdd(failed)) sessions)\n"
        if unauthenticatedReports > 0 {
            out += authenticatedOnly ? "  (\(unauthenticatedReports) report(s) not authenticated by DKIM are left out)\n"
                : "  (\(unauthenticatedReports) report(s) are not authenticated by DKIM: --authenticated leaves them out)\n"
        }
        for r in reasons { out += "  - \(r)\n" }
        if !modes.isEmpty { out += "  modes reported: " + modes.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ") + "\n" }
        for p in problems {
            out += "  \(p.impact == "policy" ? style.yellow("policy") : style.red("would fail")): \(p.organization): \(p.resultType) × \(p.sessions)"
            out += " on \(p.days.joined(separator: ", "))"
            if !p.mxHosts.isEmpty { out += "; MX \(p.mxHosts.joined(separator: ", "))" }
            if !p.receivingIPs.isEmpty { out += "; IP \(p.receivingIPs.joined(separator: ", "))" }
            out += "\n      \(p.explanation)\n"
            if let e = p.example { out += "      reported: \(e)\n" }
        }
        return out
    }
}

extension ReportStore {
    public enum ExportFormat: String, Sendable { case json, csv }

    /// The stored reports (JSON: one array of row + report) or their failure details (CSV, one
    /// row each), streamed to `write` in pieces of about 64 KB: never the whole export in memory.
    public func export(_ format: ExportFormat, _ filter: ReportFilter, write: ([UInt8]) -> Void) throws {
        var buffer: [UInt8] = []
        func flush(_ force: Bool = false) {
            if force || buffer.count > 1 << 16 { write(buffer); buffer.removeAll(keepingCapacity: true) }
        }
        defer { flush(true) }
        switch format {
        case .json:
            var first = true
            buffer += Array("[".utf8)
            try forEachReport(filter) { row, normalized in
                guard case .object(var members) = row.json else { return }
                members.append(JSONMember("report", (try? JSONParser.parse(Array(normalized.utf8)).value) ?? .null))
                buffer += Array((first ? "\n" : ",\n").utf8)
                first = false
                buffer += JSONValue.object(members).serializedBytes(pretty: false, indent: 0)
                flush()
            }
            buffer += Array((first ? "]\n" : "\n]\n").utf8)
        case .csv:
            buffer += Array(CSV.line(ReportStore.failureCSVHeader).utf8)
            try forEachFailure(filter) { fields in
                buffer += Array(CSV.line(fields).utf8)
                flush()
            }
        }
    }
}
