import Foundation

extension STSPolicy.ParseResult {
    /// `mtasts policy lint --json`: validity, the policy senders would apply, errors, warnings.
    public var json: JSONValue {
        var policyJSON = JSONValue.null
        if let p = policy {
            policyJSON = .object([
                JSONMember("version", .string("STSv1")),
                JSONMember("mode", .string(p.mode.rawValue)),
                JSONMember("max_age", .int(Int64(p.maxAge))),
                JSONMember("mx", .array(p.mx.map { .string($0.text) })),
            ])
        }
        return .object([
            JSONMember("valid", .bool(isValid)),
            JSONMember("policy", policyJSON),
            JSONMember("errors", diagnostics.errorsJSON),
            JSONMember("warnings", diagnostics.warningsJSON),
        ])
    }

    /// The lint answer as text: a verdict line, then each finding.
    public func text(name: String, style: TextStyle) -> String {
        var lines: [String] = []
        if let p = policy, isValid {
            lines.append("\(name): \(style.green("valid")) — mode \(p.mode.rawValue), max_age \(p.maxAge), mx \(p.mx.map(\.text).joined(separator: ", "))")
        } else if let p = policy {
            lines.append("\(name): \(style.red("has errors")) — senders would apply mode \(p.mode.rawValue), max_age \(p.maxAge) (capped)")
        } else {
            lines.append("\(name): \(style.red("invalid")) — senders ignore this policy (sts-policy-invalid)")
        }
        for d in diagnostics { lines.append(style.line(for: d)) }
        return lines.joined(separator: "\n")
    }
}

/// What a domain publishes (`mtasts policy init`): the policy file, the _mta-sts and _smtp._tls
/// records (the id derived from the policy's content) and the policy host.
public struct PolicySetup: Sendable {
    public var domain: DomainName
    public var policy: STSPolicy
    public var tlsrpt: TLSRPTRecord
    /// The rua is the default mailto:tlsrpt@DOMAIN (the text reminds the mailbox must exist).
    public var defaultRUA: Bool

    public init(domain: DomainName, policy: STSPolicy, tlsrpt: TLSRPTRecord, defaultRUA: Bool) {
        self.domain = domain
        self.policy = policy
        self.tlsrpt = tlsrpt
        self.defaultRUA = defaultRUA
    }

    public var json: JSONValue {
        let d = domain, sts = STSRecord(id: policy.contentID)
        return .object([
            JSONMember("domain", .string(d.text)),
            JSONMember("policy", .string(policy.render())),
            JSONMember("policy_url", .string(d.policyURL)),
            JSONMember("policy_host", .string(d.policyHost)),
            JSONMember("records", .array([
                .object([JSONMember("name", .string(d.stsRecordName)), JSONMember("type", .string("TXT")), JSONMember("value", .string(sts.text))]),
                .object([JSONMember("name", .string(d.tlsrptRecordName)), JSONMember("type", .string("TXT")), JSONMember("value", .string(tlsrpt.text))]),
            ])),
        ])
    }

    /// The set-up as commented text: the file, the records in zone-file syntax, the roll-out steps.
    public func text(style: TextStyle, writtenTo writePolicy: String?) -> String {
        let d = domain, sts = STSRecord(id: policy.contentID), plan = self
        var lines: [String] = []
        lines.append(style.bold("# 1. The policy file") + " — serve it at \(d.policyURL)")
        lines.append("#    over HTTPS with a certificate valid for \(d.policyHost), status 200, Content-Type: text/plain,")
        lines.append("#    no redirects." + (writePolicy.map { " Written to \($0)." } ?? " (--write-policy FILE writes it with CRLF line ends.)"))
        lines.append("")
        lines += policy.lines
        lines.append("")
        lines.append(style.bold("# 2. DNS records") + " (zone-file syntax; publish the policy file first, then the _mta-sts record)")
        let width = max(d.stsRecordName.count, d.tlsrptRecordName.count, d.policyHost.count) + 1
        func pad(_ s: String) -> String { s + String(repeating: " ", count: max(1, width + 1 - s.count)) }
        lines.append(pad(d.stsRecordName + ".") + "3600 IN TXT \"\(sts.text)\"")
        lines.append(pad(d.tlsrptRecordName + ".") + "3600 IN TXT \"\(plan.tlsrpt.text)\"")
        lines.append(pad(d.policyHost + ".") + "3600 IN CNAME <the web server that serves the policy>  ; or A/AAAA")
        if plan.defaultRUA {
            lines.append("; reports go to mailto:tlsrpt@\(d.text) — make sure that mailbox exists, or pass --rua")
        }
        lines.append("")
        lines.append(style.bold("# 3. Roll-out"))
        switch policy.mode {
        case .testing:
            lines.append("#  - Senders now report (TLS-RPT) but still deliver when the checks fail.")
            lines.append("#  - Read the daily reports for a week or two; fix every MX that fails.")
            lines.append("#  - Then run: mtasts policy init --domain \(d.text) --mode enforce --mx \(policy.mx.map { $0.isWildcard ? "'\($0.text)'" : $0.text }.joined(separator: " "))")
            lines.append("#    publish the new file first, then the new _mta-sts record (its id changes with the policy).")
        case .enforce:
            lines.append("#  - Senders that honour MTA-STS will refuse to deliver to an MX that fails TLS or is not listed.")
            lines.append("#  - Whenever you change MX hosts: update the policy file first, then the _mta-sts id.")
        case .none:
            lines.append("#  - mode none withdraws the policy: keep it published for at least the old max_age, then remove the records.")
        }
        return lines.joined(separator: "\n")
    }
}
