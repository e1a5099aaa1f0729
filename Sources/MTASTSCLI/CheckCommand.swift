import ArgumentParser
import Foundation
import MTASTSCheck
import MTASTSCore
import MTASTSNet
import MailDNS
import NIOCore

struct CheckCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check",
        abstract: "Check domains' MTA-STS and TLS-RPT set-up end to end.",
        discussion: Help.reflow("""
            For each domain: the _mta-sts record, the policy host (address, TLS, certificate, status,
            redirects, content type, size), the policy (every lint finding, mode and max_age advice),
            every MX (covered by a pattern, addresses, CNAME, TLSA, STARTTLS and certificate as a
            sender in enforce mode would see them) and the _smtp._tls record (syntax, rua, the
            mailto domain's MX). Findings carry a stable code — the RFC 8460 result type where one
            fits — a severity and a message. Exit 0 no errors, 1 errors found, 2 usage, 3 could not
            check (a temporary DNS failure).
            """))

    @Argument(help: "Domains to check.")
    var domains: [String] = []

    @Option(name: .customLong("file"), help: "Read domains from a file, one a line ('#' comments).")
    var file: String?

    @Option(help: "Domains checked at once.")
    var concurrency: Int = 16

    @Flag(name: .customLong("no-smtp"), help: "Do not connect to the MX hosts.")
    var noSMTP = false

    @Option(name: .customLong("dns-server"), help: "Ask this DNS server (IPv4[:PORT]) instead of /etc/resolv.conf.")
    var dnsServer: String?

    @Option(name: .customLong("ca-file"), help: "Extra trust anchors (PEM), beside the system's.")
    var caFile: [String] = []

    @Option(name: .customLong("policy-port"), help: "Port of the policy hosts (443; for tests and labs).")
    var policyPort: Int = 443

    @Option(name: .customLong("smtp-port"), help: "Port of the MX hosts (25; for tests and labs).")
    var smtpPort: Int = 25

    @Option(help: "Seconds allowed for each network step (DNS try, connect, SMTP reply); the policy fetch gets at most 60.")
    var timeout: Int = 10

    @OptionGroup var output: JSONFlag

    func validate() throws {
        if domains.isEmpty && file == nil { throw ValidationError("give at least one domain, or --file") }
        if concurrency < 1 { throw ValidationError("--concurrency must be at least 1") }
        if !(1...65535).contains(policyPort) || !(1...65535).contains(smtpPort) { throw ValidationError("ports are 1 to 65535") }
        if timeout < 1 { throw ValidationError("--timeout must be at least 1 second") }
    }

    func run() async throws {
        var names = domains
        if let file {
            guard let text = try? String(contentsOfFile: file, encoding: .utf8) else {
                throw ValidationError("cannot read \(file)")
            }
            names += text.split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty && !$0.hasPrefix("#") }
        }
        var parsed: [DomainName] = []
        for name in names {
            do { parsed.append(try DomainName(addressOrDomain: name)) } catch { throw ValidationError("\(error)") }
        }
        let resolver: DNSResolver
        do { resolver = try DNSResolver(.init(server: dnsServer, timeout: timeout, tries: 2)) } catch { throw ValidationError("--dns-server: \(error)") }
        let checker: CertificateChecker
        do { checker = try CertificateChecker(systemRoots: true, extraPEMFiles: caFile) } catch { throw ValidationError("--ca-file: \(error)") }
        let fetcher = PolicyFetcher(checker: checker, port: policyPort, connectTimeout: .seconds(Int64(timeout)), deadline: .seconds(Int64(min(60, timeout * 3))))
        let probe = noSMTP ? nil : STARTTLSProbe(checker: checker, port: smtpPort, stepTimeout: .seconds(Int64(timeout)))
        let domainChecker = DomainChecker(resolver: resolver, fetcher: fetcher, probe: probe)

        let progress = !output.json && isatty(2) != 0 && parsed.count > 1
        let json = output.json
        // Reports are printed as soon as every earlier one is out: input order, and memory bounded
        // by what is in flight (at most --concurrency reports wait), not by the number of domains.
        var verdicts: [DomainReport.Verdict] = []
        await withTaskGroup(of: (Int, DomainReport).self) { group in
            var waiting: [Int: DomainReport] = [:]
            var next = 0
            var printed = 0
            var done = 0
            func start(_ group: inout TaskGroup<(Int, DomainReport)>) {
                let index = next
                let domain = parsed[index]
                group.addTask { (index, await domainChecker.check(domain)) }
                next += 1
            }
            while next < min(concurrency, parsed.count) { start(&group) }
            if json { FileHandle.standardOutput.write(Data("[".utf8)) }
            for await (index, report) in group {
                waiting[index] = report
                done += 1
                if progress { FileHandle.standardError.write(Data("\r\(done)/\(parsed.count) checked".utf8)) }
                while let ready = waiting.removeValue(forKey: printed) {
                    verdicts.append(ready.verdict)
                    let text: [UInt8]
                    if json {
                        text = Array((printed == 0 ? "\n  " : ",\n  ").utf8) + CheckCommand.json(ready).serializedBytes(pretty: true, indent: 1)
                    } else {
                        text = Array(((printed == 0 ? "" : "\n") + CheckCommand.human(ready) + "\n").utf8)
                    }
                    if progress { FileHandle.standardError.write(Data("\r".utf8)) }
                    FileHandle.standardOutput.write(Data(text))
                    printed += 1
                }
                if next < parsed.count { start(&group) }
            }
            if json { FileHandle.standardOutput.write(Data((printed == 0 ? "]\n" : "\n]\n").utf8)) }
            if progress { FileHandle.standardError.write(Data("\n".utf8)) }
        }
        if verdicts.contains(.errors) { throw ExitCode(Exit.problems) }
        if verdicts.contains(.temporary) { throw ExitCode(Exit.temporary) }
    }

    static func json(_ r: DomainReport) -> JSONValue {
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
                }
            }
            return .object(m)
        })))
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

    static func human(_ r: DomainReport) -> String {
        let verdict: String
        switch r.verdict {
        case .ok: verdict = Console.green("OK")
        case .warnings: verdict = Console.yellow("OK, with warnings")
        case .errors: verdict = Console.red("PROBLEMS")
        case .temporary: verdict = Console.yellow("COULD NOT CHECK (temporary failure)")
        }
        var lines = ["\(Console.bold(r.domain)): \(verdict)"]
        if let p = r.policy {
            lines.append("  policy: mode \(p.mode.rawValue), max_age \(p.maxAge), mx \(p.mx.map(\.text).joined(separator: ", "))" + (r.stsID.map { ", id \($0)" } ?? ""))
        }
        for mx in r.mx {
            let state: String
            if let p = mx.probe {
                state = p.failure.map { Console.red($0.type.rawValue) } ?? (p.unreachable != nil ? Console.yellow("unreachable") : Console.green("TLS ok (\(p.tlsVersion ?? "?"))"))
            } else {
                state = "not probed"
            }
            lines.append("  mx \(mx.preference) \(mx.host): \(mx.matchedPattern.map { "matches \($0)" } ?? "matches no pattern"), \(state)")
        }
        for f in r.findings.sorted(by: { rank($0.severity) < rank($1.severity) }) where f.severity != .info {
            let label = f.severity == .error ? Console.red("error") : Console.yellow("warning")
            lines.append("  \(label): \(f.message) " + Console.dim("[\(f.code)]"))
        }
        for f in r.findings where f.severity == .info {
            lines.append("  " + Console.dim("note: \(f.message) [\(f.code)]"))
        }
        return lines.joined(separator: "\n")
    }

    static func rank(_ s: Finding.Severity) -> Int { s == .error ? 0 : s == .warning ? 1 : 2 }
}
