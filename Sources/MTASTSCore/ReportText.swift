import Foundation

extension ReportReader.Result {
    /// One file's reports as `mtasts report parse --json` prints them, written straight from the
    /// reports (pretty, from `indent`).
    public func jsonBytes(file path: String, indent: Int = 0) -> [UInt8] {
        let result = self
        var w = JSONWriter(pretty: true, indent: indent, capacity: 4096)
        w.beginObject()
        w.member("file", path)
        w.key("ok")
        w.bool(true)
        w.member("source", result.reports.first?.source.rawValue ?? "")
        if let mail = result.mail {
            w.key("mail")
            w.beginObject()
            w.member("from", mail.from)
            w.member("subject", mail.subject)
            w.member("message-id", mail.messageID)
            w.member("tls-report-domain", mail.tlsReportDomain)
            w.member("tls-report-submitter", mail.tlsReportSubmitter)
            w.key("dkim-signed")
            w.bool(mail.dkimSignature != nil)
            w.endObject()
        }
        w.key("reports")
        w.beginArray()
        for r in result.reports {
            w.beginObject()
            w.member("filename", r.filename)
            w.member("media-type", r.mediaType)
            w.key("report")
            r.report.writeCanonical(to: &w)
            w.key("warnings")
            w.value(.array(r.diagnostics.map(\.json)))
            w.endObject()
        }
        w.endArray()
        w.key("warnings")
        w.value(.array(result.diagnostics.map(\.json)))
        w.endObject()
        return w.bytes
    }

    /// One file's reports as text: who reported what, sessions, failures by type, warnings.
    public func text(file path: String, style: TextStyle) -> String {
        let result = self
        var out = ""
        for parsed in result.reports {
            let r = parsed.report
            let who = [r.organizationName, r.contactInfo.map { "<\($0)>" }].compactMap { $0 }.joined(separator: " ")
            let domains = Set(r.policies.compactMap(\.policy.domain)).sorted()
            let day = RFC3339.formatDay(r.startDate)
            let span = r.endDate - r.startDate > 86_400 ? "\(day) to \(RFC3339.formatDay(r.endDate))" : day
            out += "\(style.bold(path)): \(who.isEmpty ? "an unnamed sender" : who) on \(domains.isEmpty ? "(no policy domain)" : domains.joined(separator: ", ")) for \(span)\n"
            let total = r.totalSuccessful.saturatingAdd(r.totalFailed)
            let rate = total == 0 ? "no sessions" : String(format: "%.1f%% ok", 100.0 * Double(r.totalSuccessful) / Double(total))
            out += "  sessions: \(r.totalSuccessful) ok, \(r.totalFailed > 0 ? style.red("\(r.totalFailed) failed") : "0 failed") (\(rate))\n"
            for p in r.policies {
                let mx = p.policy.mxHosts.isEmpty ? "" : " mx \(p.policy.mxHosts.joined(separator: ","))"
                out += "  policy \(p.policy.type.rawValue) \(p.policy.domain ?? "-")\(mx): \(p.successfulSessions) ok, \(p.failedSessions) failed\n"
                var byType: [String: Int] = [:]
                for f in p.failureDetails { byType[f.resultType.rawValue, default: 0] = byType[f.resultType.rawValue, default: 0].saturatingAdd(f.failedSessionCount) }
                for (type, n) in byType.sorted(by: { $0.value > $1.value || ($0.value == $1.value && $0.key < $1.key) }) {
                    out += "    \(style.red(type)): \(n)\n"
                }
            }
            for d in parsed.diagnostics where d.severity != .info { out += style.line(for: d) + "\n" }
        }
        for d in result.diagnostics where d.severity != .info { out += style.line(for: d) + "\n" }
        return out
    }
}
