import Foundation
import MTASTSCore
import MTASTSNet
import MailDNS

/// One finding of `mtasts check`: a stable code (an RFC 8460 result type where one fits), a
/// severity and a message a person understands; `subject` names the MX or record concerned.
public struct Finding: Sendable, Equatable {
    public enum Severity: String, Sendable { case error, warning, info }
    public var code: String
    public var severity: Severity
    public var message: String
    public var subject: String?

    public init(_ severity: Severity, _ code: String, _ message: String, subject: String? = nil) {
        self.severity = severity
        self.code = code
        self.message = message
        self.subject = subject
    }
}

extension Finding {
    /// A look-up that failed for now (SERVFAIL, time-out): the check is incomplete, not failed.
    static func dnsTemporary(_ what: String, _ error: DNSError, subject: String? = nil) -> Finding {
        Finding(.warning, "dns-temporary", "could not look up \(what): \(error)", subject: subject ?? what)
    }

    /// A parser's diagnostics as findings about one record: codes prefixed, messages naming it.
    static func from(_ diagnostics: [Diagnostic], codePrefix: String, subject: String) -> [Finding] {
        diagnostics.map { d in
            let severity: Severity = d.severity == .error ? .error : (d.severity == .warning ? .warning : .info)
            return Finding(severity, codePrefix + d.code, "\(subject): \(d.message)", subject: subject)
        }
    }
}

/// What was learned about one MX host.
public struct MXReport: Sendable {
    public var host: String
    public var preference: UInt16
    public var addresses: [String] = []
    /// The CNAME target, when the MX host name is an alias.
    public var cname: String?
    public var matchedPattern: String?
    public var probe: ProbeResult?
    public var tlsa: Bool = false
}

/// The whole check of one domain.
public struct DomainReport: Sendable {
    public enum Verdict: String, Sendable { case ok, warnings, errors, temporary }
    public var domain: String
    public var stsRecord: String?
    public var stsID: String?
    public var policy: STSPolicy?
    public var policyText: String?
    public var policyFetch: PolicyFetchResult?
    public var mx: [MXReport] = []
    public var tlsrptRecord: String?
    public var findings: [Finding] = []
    /// A temporary failure (DNS SERVFAIL, time-out) kept part of the check from completing.
    public var temporary = false
    /// What a sender (`mtasts daemon`, `mtasts query`) makes of the domain now.
    public var sender = SenderView()

    public init(domain: String) { self.domain = domain }

    /// Whether a sender applies the policy, by the rule the resolver follows: the policy (any
    /// mode), or "no policy" with the RFC 8460 result type of why (none when there is no record,
    /// or when DNS failed with nothing cached, RFC 8461 §3.3).
    public struct SenderView: Sendable, Equatable {
        public var applies = false
        public var mode: STSMode?
        public var resultType: ResultType?
        public var reason = ""
        public init() {}
    }

    public var verdict: Verdict {
        if findings.contains(where: { $0.severity == .error }) { return .errors }
        if temporary { return .temporary }
        return findings.contains(where: { $0.severity == .warning }) ? .warnings : .ok
    }
}

/// Checks a domain's MTA-STS and TLS-RPT set-up end to end. The independent look-ups run at once,
/// so a domain's check takes about as long as its slowest network step.
public struct DomainChecker: Sendable {
    public var resolver: DNSResolver
    public var fetcher: PolicyFetcher
    public var probe: STARTTLSProbe?

    public init(resolver: DNSResolver, fetcher: PolicyFetcher, probe: STARTTLSProbe?) {
        self.resolver = resolver
        self.fetcher = fetcher
        self.probe = probe
    }

    public func check(_ domain: DomainName) async -> DomainReport {
        var report = DomainReport(domain: domain.text)
        async let stsTXT = Result { () async throws(DNSError) in try await resolver.txt(domain.stsRecordName) }
        async let mxAnswer = Result { () async throws(DNSError) in try await resolver.mx(domain.text) }
        async let tlsrptTXT = Result { () async throws(DNSError) in try await resolver.txt(domain.tlsrptRecordName) }
        async let policyFetch = fetchPolicy(domain)

        // 1. The _mta-sts record.
        checkSTSRecord(await stsTXT, domain, &report)
        // 2. The policy host and the policy.
        let (fetch, hostFindings, hostTemporary) = await policyFetch
        report.findings += hostFindings
        report.temporary = report.temporary || hostTemporary
        report.policyFetch = fetch
        if let fetch { checkPolicy(fetch, domain, &report) }
        report.sender = Self.senderView(record: report.stsID != nil, recordTemporary: report.temporary && report.stsRecord == nil,
                                        fetch: fetch, hostFindings: hostFindings)
        // 3. MX hosts against the policy, and their STARTTLS.
        await checkMX(await mxAnswer, domain, &report)
        // 4. The _smtp._tls record.
        await checkTLSRPT(await tlsrptTXT, domain, &report)
        return report
    }

    /// The resolver's rule (`PolicyResolver.discover`): no valid record, or DNS failing with
    /// nothing cached, is no policy without a result type; then the fetch decides.
    static func senderView(record: Bool, recordTemporary: Bool, fetch: PolicyFetchResult?, hostFindings: [Finding]) -> DomainReport.SenderView {
        var view = DomainReport.SenderView()
        guard record else {
            view.reason = recordTemporary ? "the _mta-sts look-up failed: with nothing cached, no policy (RFC 8461 §3.3)" : "no valid _mta-sts record: no policy"
            return view
        }
        guard let fetch else {
            // The policy host's addresses could not be found: a fetch failure.
            view.resultType = .stsPolicyFetchError
            view.reason = hostFindings.first?.message ?? "the policy host has no address"
            return view
        }
        switch fetch.senderOutcome {
        case .success(let policy):
            view.applies = true
            view.mode = policy.mode
            view.reason = "the policy applies (mode \(policy.mode.rawValue))"
        case .failure(let refusal):
            view.resultType = refusal.type
            view.reason = refusal.reason
        }
        return view
    }

    // MARK: _mta-sts

    func checkSTSRecord(_ answer: Result<DNSAnswer<[[UInt8]]>, DNSError>, _ domain: DomainName, _ report: inout DomainReport) {
        let name = domain.stsRecordName
        switch answer {
        case .failure(let e) where e.isNoRecords:
            report.findings.append(Finding(.error, "sts-record-missing", "\(name) has no TXT record: senders see no MTA-STS policy. Publish \"v=STSv1; id=…;\" once the policy file is served.", subject: name))
        case .failure(let e):
            report.temporary = true
            report.findings.append(.dnsTemporary(name, e))
        case .success(let a):
            if !a.cnames.isEmpty {
                report.findings.append(Finding(.info, "sts-record-cname", "\(name) is a CNAME to \(a.cnames.joined(separator: " → ")); senders follow it", subject: name))
            }
            report.findings.append(Finding(.info, a.authenticated ? "dnssec-signed" : "dnssec-unsigned", a.authenticated ? "\(name) is DNSSEC-validated" : "\(name) is not DNSSEC-validated (MTA-STS does not require it)", subject: name))
            let rrset = a.records.map { $0.map { String(decoding: $0, as: UTF8.self) } }
            if rrset.contains(where: { $0.joined().hasPrefix("v=spf1") }) {
                report.findings.append(Finding(.warning, "sts-record-spf", "an SPF record answers at \(name) (a wildcard or a CNAME to the apex?)", subject: name))
            }
            let (record, diagnostics) = STSRecord.select(rrset)
            report.findings += Finding.from(diagnostics, codePrefix: "sts-record-", subject: name)
            report.stsRecord = rrset.map { $0.joined() }.first { $0.hasPrefix("v=STSv1") } ?? rrset.first?.joined()
            report.stsID = record?.id
        }
    }

    // MARK: policy host and policy

    func fetchPolicy(_ domain: DomainName) async -> (PolicyFetchResult?, [Finding], Bool) {
        let host = domain.policyHost
        let addresses: [String]
        do {
            addresses = try await resolver.addresses(host)
        } catch {
            if error.isNoRecords {
                return (nil, [Finding(.error, ResultType.stsPolicyFetchError.rawValue, "the policy host \(host) has no A or AAAA record", subject: host)], false)
            }
            return (nil, [.dnsTemporary(host, error)], true)
        }
        // Every address, as a sender tries them; an unreachable one is worth knowing.
        var findings: [Finding] = []
        let fetch = await fetcher.fetch(domain: domain, addresses: addresses) { address, reason in
            findings.append(Finding(.warning, "policy-host-address-unreachable", "the policy host \(host) is not reachable at \(address) (\(reason)); senders try its next address", subject: host))
        }
        if let failure = fetch.failure {
            findings.append(Finding(.error, failure.type.rawValue, "\(domain.policyURL): \(failure.reason)", subject: host))
        }
        if let cert = fetch.certificate, fetch.certificateVerdict == .valid {
            let days = cert.daysLeft()
            if days < 14 {
                findings.append(Finding(.warning, "policy-certificate-expiring", "the certificate of \(host) expires in \(days) days", subject: host))
            } else {
                findings.append(Finding(.info, "policy-certificate", "the certificate of \(host) is valid for \(days) more days", subject: host))
            }
        }
        if fetch.body != nil && !fetch.isTextPlain {
            // RFC 8461 §3.2: the policy is text/plain. Senders that check (this daemon, the
            // reference resolver) refuse it otherwise, so it is not applied: an error.
            findings.append(Finding(.error, "policy-content-type", "the policy is served as '\(fetch.contentType ?? "no Content-Type")', not text/plain: senders that check refuse it, so it is not applied (RFC 8461 §3.2)", subject: host))
        }
        return (fetch, findings, false)
    }

    func checkPolicy(_ fetch: PolicyFetchResult, _ domain: DomainName, _ report: inout DomainReport) {
        // A policy not served as text/plain is not one a sender applies: the MX findings do not
        // judge the MX hosts against it.
        guard let body = fetch.body, fetch.isTextPlain else { return }
        report.policyText = String(decoding: body, as: UTF8.self)
        let parsed = STSPolicy.parse(body)
        report.policy = parsed.policy
        for d in parsed.diagnostics {
            let where_ = d.line.map { "line \($0): " } ?? ""
            switch d.severity {
            case .error:
                let code = parsed.policy == nil ? ResultType.stsPolicyInvalid.rawValue : "policy-\(d.code)"
                report.findings.append(Finding(.error, code, "the policy \(where_)\(d.message)", subject: domain.policyHost))
            case .warning:
                report.findings.append(Finding(.warning, "policy-\(d.code)", "the policy \(where_)\(d.message)", subject: domain.policyHost))
            case .info:
                report.findings.append(Finding(.info, "policy-\(d.code)", "the policy \(where_)\(d.message)", subject: domain.policyHost))
            }
        }
        if let policy = parsed.policy, policy.mode == .testing, policy.maxAge < 86_400 {
            report.findings.append(Finding(.info, "policy-max-age-testing", "in testing mode a max_age of at least 86400 (one day) is advised", subject: domain.policyHost))
        }
    }

    // MARK: MX

    func checkMX(_ answer: Result<DNSAnswer<MXRecord>, DNSError>, _ domain: DomainName, _ report: inout DomainReport) async {
        let mode = report.policy?.mode
        let records: [MXRecord]
        switch answer {
        case .failure(let e) where e.isNoRecords:
            if mode != STSMode.none {
                report.findings.append(Finding(.error, "mx-missing", "\(domain.text) has no MX record; senders fall back to its A/AAAA, which MTA-STS does not cover", subject: domain.text))
            }
            return
        case .failure(let e):
            report.temporary = true
            report.findings.append(.dnsTemporary("the MX of \(domain.text)", e, subject: domain.text))
            return
        case .success(let a):
            records = a.records.sorted { ($0.preference, $0.exchange) < ($1.preference, $1.exchange) }
        }
        if records.count == 1 && (records[0].exchange.isEmpty || records[0].exchange == ".") {
            report.findings.append(Finding(.info, "null-mx", "\(domain.text) has a null MX (RFC 7505): it receives no mail", subject: domain.text))
            return
        }
        let policy = report.policy
        let results = await withTaskGroup(of: MXReport.self) { group in
            for record in records {
                group.addTask { await self.examine(record, policy: policy) }
            }
            var out: [MXReport] = []
            for await r in group { out.append(r) }
            return out
        }
        report.mx = records.compactMap { r in results.first { $0.host == r.exchange && $0.preference == r.preference } }
        for mx in report.mx {
            report.findings += mxFindings(mx, policy: policy)
        }
        if let policy {
            for pattern in policy.mx where !report.mx.contains(where: { (try? DomainName($0.host)).map(pattern.matches) == true }) {
                report.findings.append(Finding(.warning, "policy-mx-unused", "the policy's mx '\(pattern.text)' matches no MX host of \(domain.text)", subject: domain.policyHost))
            }
        }
    }

    func examine(_ record: MXRecord, policy: STSPolicy?) async -> MXReport {
        var mx = MXReport(host: record.exchange, preference: record.preference)
        if let name = try? DomainName(record.exchange) {
            mx.matchedPattern = policy?.mx.first { $0.matches(name) }?.text
        }
        async let addresses = Result { () async throws(DNSError) in try await resolver.addresses(record.exchange) }
        async let cname = Result { () async throws(DNSError) in try await resolver.cname(record.exchange) }
        async let tlsa = Result { () async throws(DNSError) in try await resolver.tlsa("_25._tcp.\(record.exchange)") }
        if case .success(let a) = await addresses { mx.addresses = a }
        if case .success(let t) = await tlsa { mx.tlsa = !t.records.isEmpty }
        if case .success(let c) = await cname { mx.cname = c.records.first }
        if let probe, let address = mx.addresses.first(where: { !$0.contains(":") }) ?? mx.addresses.first {
            mx.probe = await probe.probe(mx: record.exchange, address: address)
        }
        return mx
    }

    func mxFindings(_ mx: MXReport, policy: STSPolicy?) -> [Finding] {
        var out: [Finding] = []
        let enforce = policy?.mode == .enforce
        let consequence = enforce ? "senders that enforce MTA-STS will not deliver to it" : "in enforce mode senders would not deliver to it"
        if let cname = mx.cname {
            out.append(Finding(.warning, "mx-is-cname", "\(mx.host) is a CNAME (to \(cname)); RFC 5321 wants MX targets to be host names with addresses", subject: mx.host))
        }
        if mx.addresses.isEmpty {
            out.append(Finding(.error, "mx-no-address", "\(mx.host) has no A or AAAA record", subject: mx.host))
        }
        if let policy, policy.mode != .none, mx.matchedPattern == nil {
            out.append(Finding(enforce ? .error : .warning, "mx-not-in-policy", "\(mx.host) matches no mx of the policy (\(policy.mx.map(\.text).joined(separator: ", "))); \(consequence)", subject: mx.host))
        }
        if mx.tlsa {
            out.append(Finding(.info, "dane-tlsa", "\(mx.host) publishes TLSA records (DANE); DANE-capable senders use them before MTA-STS", subject: mx.host))
        }
        if let probe = mx.probe {
            if let failure = probe.failure {
                out.append(Finding(policy == nil || policy?.mode == STSMode.none ? .warning : .error, failure.type.rawValue, "\(mx.host): \(failure.reason); \(consequence)", subject: mx.host))
            } else if let unreachable = probe.unreachable {
                out.append(Finding(.warning, "mx-unreachable", "\(mx.host): \(unreachable)", subject: mx.host))
            } else {
                let cert = probe.certificate.map { " certificate valid for \($0.daysLeft()) more days" } ?? ""
                out.append(Finding(.info, "mx-tls-ok", "\(mx.host): STARTTLS, \(probe.tlsVersion ?? "TLS"),\(cert)", subject: mx.host))
            }
        }
        return out
    }

    // MARK: _smtp._tls

    func checkTLSRPT(_ answer: Result<DNSAnswer<[[UInt8]]>, DNSError>, _ domain: DomainName, _ report: inout DomainReport) async {
        let name = domain.tlsrptRecordName
        switch answer {
        case .failure(let e) where e.isNoRecords:
            report.findings.append(Finding(.warning, "tlsrpt-record-missing", "\(name) has no TXT record: senders cannot report TLS failures to you. Publish \"v=TLSRPTv1; rua=mailto:…\".", subject: name))
        case .failure(let e):
            report.temporary = true
            report.findings.append(.dnsTemporary(name, e))
        case .success(let a):
            let rrset = a.records.map { $0.map { String(decoding: $0, as: UTF8.self) } }
            let (record, diagnostics) = TLSRPTRecord.select(rrset)
            report.tlsrptRecord = rrset.map { $0.joined() }.first { $0.hasPrefix("v=TLSRPTv1") }
            report.findings += Finding.from(diagnostics, codePrefix: "tlsrpt-record-", subject: name)
            for uri in record?.rua ?? [] {
                guard case .mailto(let address, _) = uri, let at = address.lastIndex(of: "@") else { continue }
                let mailDomain = String(address[address.index(after: at)...])
                do {
                    _ = try await resolver.mx(mailDomain)
                } catch {
                    if error.isNoRecords {
                        report.findings.append(Finding(.warning, "tlsrpt-rua-no-mx", "reports go to \(address), but \(mailDomain) has no MX record", subject: name))
                    }
                }
            }
        }
    }
}

extension DomainChecker {
    /// What a checker needs to be made: the one set-up of `mtasts check` and of `serve`'s `watch:`.
    public struct Setup: Sendable {
        public var dnsServer: String?
        public var caFiles: [String] = []
        public var policyPort = 443
        public var smtpPort = 25
        /// Connect to the MX hosts (STARTTLS and certificate); false checks DNS and the policy only.
        public var smtp = true
        /// Seconds for each network step; the policy fetch gets at most 60.
        public var timeout = 10
        public init() {}
    }

    /// A problem with the set-up (a DNS server or CA file that cannot be used).
    public struct SetupError: Error, CustomStringConvertible {
        public var description: String
    }

    public static func make(_ setup: Setup) throws(SetupError) -> DomainChecker {
        let resolver: DNSResolver
        do { resolver = try DNSResolver(.init(server: setup.dnsServer, timeout: setup.timeout, tries: 2)) } catch {
            throw SetupError(description: "DNS server \(setup.dnsServer ?? ""): \(error)")
        }
        let checker: CertificateChecker
        do { checker = try CertificateChecker(systemRoots: true, extraPEMFiles: setup.caFiles) } catch {
            throw SetupError(description: "CA file: \(error)")
        }
        let t = Int64(setup.timeout)
        let fetcher = PolicyFetcher(checker: checker, port: setup.policyPort, connectTimeout: .seconds(t), deadline: .seconds(min(60, t * 3)))
        let probe = setup.smtp ? STARTTLSProbe(checker: checker, port: setup.smtpPort, stepTimeout: .seconds(t)) : nil
        return DomainChecker(resolver: resolver, fetcher: fetcher, probe: probe)
    }
}
