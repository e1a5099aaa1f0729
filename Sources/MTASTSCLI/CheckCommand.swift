import ArgumentParser
import Foundation
import MTASTSCheck
import MTASTSCore
import MTASTSNet
import MailDNS
import NIOCore
import MTASTSConfig
import Storage
import Watch
import ServerSupport

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

            --watch checks again every --interval seconds until stopped (SIGINT/SIGTERM; or after
            --rounds rounds), keeps every result in the database (--database, MTASTS_DATABASE, or the
            serve default) for the dashboard of mtasts serve, and prints what changed since the
            previous check of each domain ("changed: …"). With --json each result is one line of JSON.
            The exit code is the last round's.
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

    @Flag(help: "Check again every --interval seconds, keep each result in the database, print what changed.")
    var watch = false

    @Option(help: "Seconds between rounds with --watch.")
    var interval: Double = 3_600

    @Option(help: "With --watch: stop after this many rounds (0: run until stopped).")
    var rounds: Int = 0

    @Option(help: ArgumentHelp("With --watch: the database the results are kept in (SQLite path or postgres:// URL).", valueName: "URL"))
    var database: String?

    @OptionGroup var output: JSONFlag

    func validate() throws {
        if domains.isEmpty && file == nil { throw ValidationError("give at least one domain, or --file") }
        if concurrency < 1 { throw ValidationError("--concurrency must be at least 1") }
        if !(1...65535).contains(policyPort) || !(1...65535).contains(smtpPort) { throw ValidationError("ports are 1 to 65535") }
        if timeout < 1 { throw ValidationError("--timeout must be at least 1 second") }
        if watch && !(1...604_800).contains(interval) { throw ValidationError("--interval is 1 to 604800 seconds") }
        if rounds < 0 { throw ValidationError("--rounds must be 0 or more") }
        if !watch && (rounds != 0 || database != nil) { throw ValidationError("--rounds and --database go with --watch") }
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
        var setup = DomainChecker.Setup()
        setup.dnsServer = dnsServer
        setup.caFiles = caFile
        setup.policyPort = policyPort
        setup.smtpPort = smtpPort
        setup.smtp = !noSMTP
        setup.timeout = timeout
        let domainChecker: DomainChecker
        do { domainChecker = try DomainChecker.make(setup) } catch { throw ValidationError("\(error)") }

        if watch { return try await watchLoop(domainChecker, parsed) }
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

    /// `--watch`: rounds until stopped, each result kept and its changes printed.
    func watchLoop(_ checker: DomainChecker, _ domains: [DomainName]) async throws {
        var url = database ?? ProcessInfo.processInfo.environment["MTASTS_DATABASE"] ?? ""
        if url.isEmpty { url = ServeConfig.defaultDatabase }
        let store: WatchStore
        do { store = try WatchStore(db: SQLDatabase(url: url)) } catch {
            Console.err("\(error)")
            throw ExitCode(Exit.temporary)
        }
        let round = CheckRound(checker: checker, domains: domains, concurrency: concurrency, store: store)
        let stop = StopSignal()
        var done = 0
        var verdicts: [DomainReport.Verdict] = []
        while true {
            verdicts = []
            let json = output.json
            // A database that fails for a moment (busy, restarting) costs one round's record, not the watch.
            do { try await round.run(at: Date().timeIntervalSince1970) { _, report, changes in
                verdicts.append(report.verdict)
                let changed = changes.map { $0.isEmpty ? "no change" : "changed: " + $0.joined(separator: "; ") } ?? "first check"
                if json {
                    var value = report.json
                    if case .object(var members) = value {
                        members.append(JSONMember("changes", changes.map { .array($0.map { .string($0) }) } ?? .null))
                        value = .object(members)
                    }
                    FileHandle.standardOutput.write(Data(value.serializedBytes() + [0x0A]))
                } else {
                    FileHandle.standardOutput.write(Data((report.text(style: Console.style) + "  \(changed)\n\n").utf8))
                }
            } } catch {
                Console.err("check results not stored: \(error)")
                if rounds > 0 && done + 1 >= rounds { throw ExitCode(Exit.temporary) }
            }
            done += 1
            if rounds > 0 && done >= rounds { break }
            if await stop.wait(seconds: interval) { break }
        }
        if verdicts.contains(.errors) { throw ExitCode(Exit.problems) }
        if verdicts.contains(.temporary) { throw ExitCode(Exit.temporary) }
    }
}
