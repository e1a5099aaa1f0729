import ArgumentParser
import Foundation
import ServerSupport
import MailDNS
import MTASTSConfig
import MTASTSCore
import PolicyDaemon
import PolicyResolver
import TLSRPTSender

struct CollectLogCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "collect-log",
        abstract: "Collect TLS results from Postfix's mail log (Postfix 3.9 and older, which have no TLSRPT).",
        discussion: Help.reflow("""
            Reads the log (a file, or '-' for standard input; --follow keeps reading as it grows and
            across rotation), takes each delivery attempt of Postfix's smtp client (to=<…>, relay=…,
            status=…) with the TLS Postfix logged for its connection, and stores it like a libtlsrpt
            datagram: the day is the log line's UTC day, the TLSRPT record is looked up in DNS
            (_smtp._tls.DOMAIN; domains without one are skipped, as Postfix does), and the policy is
            the one the daemon's policy cache holds for the domain (cache: in --config), else
            no-policy-found. An answer is kept an hour; a failed look-up (a timeout, SERVFAIL) a
            minute, and the attempts it concerned are not counted (tlsrpt-lookup-failed in --json).
            With --follow, a database error is reported once a minute and outlived: what was read
            stays in memory and is committed when the database is back.

            What counts as a failure under an MTA-STS policy: what Postfix refused ("TLS is required,
            but was not offered" → starttls-not-supported; "Server certificate not verified" →
            certificate-expired, certificate-host-mismatch (the chain was trusted),
            certificate-not-trusted or validation-failure); and, in testing mode, a delivery in clear
            (starttls-not-supported), over an untrusted or anonymous connection, or to an MX outside
            the policy's mx patterns (validation-failure). A connection Postfix reused from its
            connection cache logs no TLS line and is counted as in clear: turn
            smtp_connection_cache_on_demand off for exact figures.

            Exit codes: 0 read to the end; 2 usage error; 3 the database failed.
            """))

    @Argument(help: "The mail log ('-': standard input).") var log: String = "-"
    @Flag(help: "Keep reading as the file grows (and after it is rotated).") var follow = false
    @Option(help: ArgumentHelp("Year of syslog time stamps that have none (default: this year).", valueName: "YEAR")) var year: Int?
    @Option(name: .customLong("dns-server"), help: ArgumentHelp("DNS server for _smtp._tls look-ups (default: dns_server of --config).", valueName: "ADDRESS")) var dnsServer: String?
    @OptionGroup var sender: SenderOptions
    @OptionGroup var output: JSONFlag

    func run() async throws {
        let config = try sender.daemonConfig()
        let store = try sender.store(config)
        let policies: (any PolicyStore)?
        do { policies = try DaemonRuntime.makeStore(config) } catch {
            Console.err("\(error)")
            throw ExitCode(Exit.temporary)
        }
        let dns: DNSResolver
        do { dns = try DNSResolver(.init(server: dnsServer ?? config.dnsServer, timeout: config.dnsTimeout, tries: 2)) } catch {
            throw ValidationError("--dns-server: \(error)")
        }
        let currentYear = Int(RFC3339.format(Int64(Date().timeIntervalSince1970)).prefix(4)) ?? 2026
        let collector = PostfixLogCollector(
            store: store, reader: PostfixLogReader(defaultYear: year ?? currentYear, utcOffset: Int64(TimeZone.current.secondsFromGMT())),
            record: { domain in
                do {
                    let answer = try await dns.txt("_smtp._tls." + domain)
                    let rrset = answer.records.map { $0.map { String(decoding: $0, as: UTF8.self) } }
                    return TLSRPTRecord.selectText(rrset).map { .found($0) } ?? .none
                } catch let error as DNSError {
                    return error.kind == .nxdomain || error.kind == .nodata ? .none : .failed
                } catch {
                    return .failed
                }
            },
            policy: { domain in (try? policies?.load(domain))??.policy })
        if log == "-" {
            while let line = readLine(strippingNewline: true) { try await collector.take(line) }
        } else {
            var tail = try LogTail(path: log)
            try await collector.read(&tail, follow: follow) {
                Console.err("collect-log: \($0); the lines read are kept and their commit is retried every second")
            }
        }
        try collector.commit()
        let counts = collector.counts
        if output.json {
            Console.out(String(decoding: JSONValue.object([
                JSONMember("lines", .int(Int64(counts.lines))), JSONMember("delivery-attempts", .int(Int64(counts.attempts))),
                JSONMember("stored", .int(Int64(counts.stored))), JSONMember("no-tlsrpt-record", .int(Int64(counts.noRecord))),
                JSONMember("tlsrpt-lookup-failed", .int(Int64(counts.lookupFailed))),
            ]).serializedBytes(pretty: true), as: UTF8.self))
        } else {
            Console.out("\(counts.lines) lines, \(counts.attempts) delivery attempts: \(counts.stored) stored, \(counts.noRecord) to domains without a TLSRPT record"
                + (counts.lookupFailed > 0 ? ", \(counts.lookupFailed) not counted because the TLSRPT look-up failed" : ""))
        }
    }
}
