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
        var verdicts: [DomainReport.Verdict] = []
        if json { FileHandle.standardOutput.write(Data("[".utf8)) }
        await domainChecker.check(parsed, concurrency: concurrency, progress: { done in
            if progress { FileHandle.standardError.write(Data("\r\(done)/\(parsed.count) checked".utf8)) }
        }, emit: { index, report in
            verdicts.append(report.verdict)
            let text = json ? Array((index == 0 ? "\n  " : ",\n  ").utf8) + report.json.serializedBytes(pretty: true, indent: 1)
                : Array(((index == 0 ? "" : "\n") + report.text(style: Console.style) + "\n").utf8)
            if progress { FileHandle.standardError.write(Data("\r".utf8)) }
            FileHandle.standardOutput.write(Data(text))
        })
        if json { FileHandle.standardOutput.write(Data((parsed.isEmpty ? "]\n" : "\n]\n").utf8)) }
        if progress { FileHandle.standardError.write(Data("\n".utf8)) }
        if verdicts.contains(.errors) { throw ExitCode(Exit.problems) }
        if verdicts.contains(.temporary) { throw ExitCode(Exit.temporary) }
    }
}
