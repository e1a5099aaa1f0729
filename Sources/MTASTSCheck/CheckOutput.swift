import Foundation
import MTASTSCore

extension DomainChecker {
    /// Checks `domains`, at most `concurrency` at once, and hands each report to `emit` as soon as
    /// every earlier one has been handed over: input order, and memory bounded by what is in
    /// flight (at most `concurrency` reports wait), not by the number of domains. `progress` gets
    /// the number of domains done after each one.
    public func check(_ domains: [DomainName], concurrency: Int, progress: (Int) -> Void = { _ in },
                      emit: (Int, DomainReport) -> Void) async {
        await withTaskGroup(of: (Int, DomainReport).self) { group in
            var waiting: [Int: DomainReport] = [:]
            var next = 0, printed = 0, done = 0
            func start(_ group: inout TaskGroup<(Int, DomainReport)>) {
                let index = next, domain = domains[index]
                group.addTask { (index, await self.check(domain)) }
                next += 1
            }
            while next < min(max(1, concurrency), domains.count) { start(&group) }
            for await (index, report) in group {
                waiting[index] = report
                done += 1
                progress(done)
                while let ready = waiting.removeValue(forKey: printed) {
                    emit(printed, ready)
                    printed += 1
                }
                if next < domains.count { start(&group) }
            }
        }
    }
}

extension DomainReport {
    /// The report as `mtasts check --json` prints it.
    public var json: JSONValue {
        let r = self
        func str(_ s: String?) -> JSONValue { s.map { .string($0) } ?? .null }
        var members: [JSONMember] = [
            JSONMember("domain", .string(r.domain)),
            JSONMember("verdict", .string(r.verdict.rawValue)),
            JSONMember("sts_record", str(r.stsRecord)),
            JSONMember("sts_id", str(r.stsID)),
        ]
        if let p = r.policy {
            members.append(JSONMember("policy", .object([
                JSONMember("mode", .string(p.mode.rawValue)),
                JSONMember("max_age", .int(Int64(p.maxAge))),
                JSONMember("mx", .array(p.mx.map { .string($0.text) })),
            ])))
        } else {
            members.append(JSONMember("policy", .null))
        }
        if let text = r.policyText { members.append(JSONMember("policy_text", .string(text))) }
        if let f = r.policyFetch {
            var m: [JSONMember] = [
                JSONMember("status", f.status.map { .int(Int64($0)) } ?? .null),
                JSONMember("content_type", str(f.contentType)),
                JSONMember("tls_version", str(f.tlsVersion)),
            ]
            if let location = f.location { m.append(JSONMember("location", .string(location))) }
            if let c = f.certificate {
                m.append(JSONMember("certificate", .object([
                    JSONMember("dns_names", .array(c.dnsNames.map { .string($0) })),
                    JSONMember("not_after", .string(RFC3339.format(Int64(c.notAfter.timeIntervalSince1970)))),
                    JSONMember("issuer", .string(c.issuer)),
                ])))
            }
            members.append(JSONMember("policy_host", .object(m)))
        }
        members.append(JSONMember("mx", .array(r.mx.map { mx in
            var m: [JSONMember] = [
                JSONMember("host", .string(mx.host)),
                JSONMember("preference", .int(Int64(mx.preference))),
                JSONMember("addresses", .array(mx.addresses.map { .string($0) })),
                JSONMember("cname", str(mx.cname)),
                JSONMember("pattern", str(mx.matchedPattern)),
                JSONMember("tlsa", .bool(mx.tlsa)),
            ]
            if let p = mx.probe {
                m.append(JSONMember("starttls", .bool(p.starttlsOffered)))
                m.append(JSONMember("tls_version", str(p.tlsVersion)))
                m.append(JSONMember("result", .string(p.failure?.type.rawValue ?? (p.unreachable != nil ? "unreachable" : "ok"))))
                if let c = p.certificate {
                    m.append(JSONMember("certificate_names", .array(c.dnsNames.map { .string($0) })))
                    m.append(JSONMember("certificate_not_after", .string(RFC3339.format(Int64(c.notAfter.timeIntervalSince1970)))))
                }
            }
            return .object(m)
        })))
        members.append(JSONMember("sender", .object([
            JSONMember("applies", .bool(r.sender.applies)),
            JSONMember("mode", str(r.sender.mode?.rawValue)),
            JSONMember("result_type", str(r.sender.resultType?.rawValue)),
            JSONMember("reason", .string(r.sender.reason)),
        ])))
        members.append(JSONMember("tlsrpt_record", str(r.tlsrptRecord)))
        members.append(JSONMember("findings", .array(r.findings.map { f in
            var m: [JSONMember] = [
                JSONMember("code", .string(f.code)),
                JSONMember("severity", .string(f.severity.rawValue)),
                JSONMember("message", .string(f.message)),
            ]
            if let s = f.subject { m.append(JSONMember("subject", .string(s))) }
            return .object(m)
        })))
        return .object(members)
    }

    /// The report as text, findings ordered errors first.
    public func text(style: TextStyle) -> String {
        let r = self
        let verdict: String
        switch r.verdict {
        case .ok: verdict = style.green("OK")
        case .warnings: verdict = style.yellow("OK, with warnings")
        case .errors: verdict = style.red("PROBLEMS")
        case .temporary: verdict = style.yellow("COULD NOT CHECK (temporary failure)")
        }
        var lines = ["\(style.bold(r.domain)): \(verdict)"]
        if let p = r.policy {
            lines.append("  policy: mode \(p.mode.rawValue), max_age \(p.maxAge), mx \(p.mx.map(\.text).joined(separator: ", "))" + (r.stsID.map { ", id \($0)" } ?? ""))
        }
        lines.append("  sender: " + (r.sender.applies ? "applies the policy (mode \(r.sender.mode?.rawValue ?? "?"))"
                                    : "no policy" + (r.sender.resultType.map { " (\($0.rawValue))" } ?? "") + ": \(r.sender.reason)"))
        for mx in r.mx {
            let state: String
            if let p = mx.probe {
                state = p.failure.map { style.red($0.type.rawValue) } ?? (p.unreachable != nil ? style.yellow("unreachable") : style.green("TLS ok (\(p.tlsVersion ?? "?"))"))
            } else {
                state = "not probed"
            }
            lines.append("  mx \(mx.preference) \(mx.host): \(mx.matchedPattern.map { "matches \($0)" } ?? "matches no pattern"), \(state)")
        }
        for f in r.findings.sorted(by: { rank($0.severity) < rank($1.severity) }) where f.severity != .info {
            let label = f.severity == .error ? style.red("error") : style.yellow("warning")
            lines.append("  \(label): \(f.message) " + style.dim("[\(f.code)]"))
        }
        for f in r.findings where f.severity == .info {
            lines.append("  " + style.dim("note: \(f.message) [\(f.code)]"))
        }
        return lines.joined(separator: "\n")
    }

    private func rank(_ s: Finding.Severity) -> Int { s == .error ? 0 : s == .warning ? 1 : 2 }
}
