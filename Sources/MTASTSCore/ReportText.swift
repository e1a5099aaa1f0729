import Foundation

extension ReportReader.Result {
    /// One file's reports as `mtasts report parse --json` prints them.
    public func json(file path: String) -> JSONValue {
        let result = self
        var members: [JSONMember] = [
            JSONMember("file", .string(path)),
            JSONMember("ok", .bool(true)),
            JSONMember("source", .string(result.reports.first?.source.rawValue ?? "")),
        ]
        if let mail = result.mail {
            var m: [JSONMember] = []
            func add(_ k: String, _ v: String?) { if let v { m.append(JSONMember(k, .string(v))) } }
            add("from", mail.from)
            add("subject", mail.subject)
            add("message-id", mail.messageID)
            add("tls-report-domain", mail.tlsReportDomain)
            add("tls-report-submitter", mail.tlsReportSubmitter)
            m.append(JSONMember("dkim-signed", .bool(mail.dkimSignature != nil)))
            members.append(JSONMember("mail", .object(m)))
        }
        members.append(JSONMember("reports", .array(result.reports.map { r in
            var rm: [JSONMember] = []
            if let f = r.filename { rm.append(JSONMember("filename", .string(f))) }
            if let t = r.mediaType { rm.append(JSONMember("media-type", .string(t))) }
            rm.append(JSONMember("report", r.report.canonicalJSON))
            rm.append(JSONMember("warnings", .array(r.diagnostics.map(\.json))))
            return .object(rm)
        })))
        members.append(JSONMember("warnings", .array(result.diagnostics.map(\.json))))
        return .object(members)
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
