import ArgumentParser
import DKIM
import Foundation
import ServerSupport
import MTASTSConfig
import MTASTSCore

import MailDNS
import Storage
import TLSRPTReceiver

struct ReportsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "reports",
        abstract: "TLS reports: store and question received ones; build and send our own.",
        discussion: Help.reflow("""
            Receiving side (ingest, list, show, summary, readiness, export): the database is, in this order: --database, the environment variable MTASTS_DATABASE,
            'database:' in the --config file of mtasts serve, /var/lib/mtasts/reports.db. A URL
            postgres://… (or a libpq key=value string) selects PostgreSQL; anything else is an
            SQLite file.

            Sending side (build, send, status): the results the collector of `mtasts daemon` stored;
            --config is then the daemon's configuration (tlsrpt_database:, reporting:).
            """),
        subcommands: [ReportsIngest.self, ReportsList.self, ReportsShow.self, ReportsSummary.self, ReportsReadiness.self, ReportsExport.self,
                      ReportsBuild.self, ReportsSend.self, ReportsStatus.self, ReportsDKIMRecord.self])
}

/// Exit code for a temporary failure in a mail pipe (sysexits.h EX_TEMPFAIL): the MTA retries.
let exTempFail: Int32 = 75

struct DatabaseOptions: ParsableArguments {
    @Option(help: ArgumentHelp("Database: an SQLite file path or a postgres:// URL.", valueName: "URL"))
    var database: String?

    @Option(help: ArgumentHelp("The configuration file of mtasts serve (its database, DKIM policy, DNS server).", valueName: "FILE"))
    var config: String?

    func serveConfig() throws -> ServeConfig {
        guard let config else { return ServeConfig() }
        do { return try ServeConfig.load(path: config) } catch { throw ValidationError("\(error)") }
    }

    func url(_ config: ServeConfig? = nil) throws -> String {
        if let database { return database }
        if let env = ProcessInfo.processInfo.environment["MTASTS_DATABASE"], !env.isEmpty { return env }
        return try (config ?? serveConfig()).database
    }

    /// Opens the store (`config`: the serve configuration when the caller has read it already);
    /// a failure to reach the database exits with `temporaryCode`.
    func open(temporaryCode: Int32 = Exit.temporary, config: ServeConfig? = nil) throws -> ReportStore {
        let url = try url(config)
        do { return try ReportStore(url: url) } catch {
            Console.err("\(error)")
            throw ExitCode(temporaryCode)
        }
    }
}

struct FilterOptions: ParsableArguments {
    @Option(help: "Only this policy domain.")
    var domain: String?

    @Option(help: ArgumentHelp("First UTC day (YYYY-MM-DD) of reports to include.", valueName: "DATE"))
    var since: String?

    @Option(help: ArgumentHelp("Last UTC day (YYYY-MM-DD) to include.", valueName: "DATE"))
    var until: String?

    func validate() throws {
        for (name, value) in [("--since", since), ("--until", until)] {
            if let value, RFC3339.parse(value + "T00:00:00Z") == nil { throw ValidationError("\(name) must be a day such as 2026-11-30, not '\(value)'") }
        }
    }

    var filter: ReportFilter { ReportFilter(domain: domain, since: since, until: until) }
}

// MARK: ingest

struct ReportsIngest: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ingest",
        abstract: "Store report mail (or report files): from a mail pipe, files, a Maildir or an mbox.",
        discussion: Help.reflow("""
            With no FILE (or '-'), one message is read from standard input: use it as a Postfix pipe
            transport, an /etc/aliases entry ("tlsrpt: |/usr/local/bin/mtasts reports ingest") or a
            .forward. DKIM signatures are verified (dkim.policy in --config: require (default), record
            or ignore; keys are looked up with the system resolver or dkim.dns_server).

            --maildir DIR takes every message in DIR/new and the unseen ones in DIR/cur, and marks
            each processed one seen (moved to cur/ with the S flag), so a re-run takes only new mail.
            --mbox FILE reads the mailbox as a stream and records how far it got in the database, so a
            re-run starts after the last message taken. The same report is stored once whatever the
            route (organisation, report-id and date range).

            Exit codes (fit for a mail pipe): 0 stored, already stored, or not a report (logged, not
            bounced); 75 (EX_TEMPFAIL) the database or DNS failed temporarily: the MTA keeps the
            message and retries, nothing is lost; 2 usage error.
            """))

    @Argument(help: "Message or report files; '-' or nothing: one message on standard input.")
    var files: [String] = []

    @Option(help: ArgumentHelp("A Maildir to take report mail from.", valueName: "DIR"))
    var maildir: String?

    @Option(help: ArgumentHelp("An mbox file to take report mail from.", valueName: "FILE"))
    var mbox: String?

    @Option(name: .customLong("max-size"), help: "Largest report accepted, in bytes (a message may be twice that).")
    var maxSize: Int = ReportReader.defaultMaxSize

    @Option(name: .customLong("dkim"), help: ArgumentHelp("DKIM policy: require, record or ignore (overrides the configuration).", valueName: "POLICY"))
    var dkim: String?

    @Option(name: .customLong("dns-server"), help: ArgumentHelp("DNS server for DKIM keys, IP[:PORT].", valueName: "ADDRESS"))
    var dnsServer: String?

    @Flag(help: "Print a line per message even when it was stored.")
    var verbose = false

    @OptionGroup var db: DatabaseOptions
    @OptionGroup var output: JSONFlag

    func validate() throws {
        if let dkim, ReportIngestor.DKIMPolicy(rawValue: dkim) == nil { throw ValidationError("--dkim must be require, record or ignore") }
        if maxSize < 1 { throw ValidationError("--max-size must be positive") }
    }

    /// Counts shared by the message callback and the mailbox readers (a reference: both update it).
    final class Tally {
        var messages = 0, stored = 0, duplicates = 0, notReports = 0, refused = 0, tooLarge = 0
        var json: JSONValue {
            .object([JSONMember("messages", .int(Int64(messages))), JSONMember("stored", .int(Int64(stored))),
                     JSONMember("duplicates", .int(Int64(duplicates))), JSONMember("not-reports", .int(Int64(notReports))),
                     JSONMember("refused", .int(Int64(refused))), JSONMember("too-large", .int(Int64(tooLarge)))])
        }
    }

    func run() async throws {
        let config = try db.serveConfig()
        let store = try db.open(temporaryCode: exTempFail, config: config)
        let policy = dkim.flatMap(ReportIngestor.DKIMPolicy.init) ?? ReportIngestor.DKIMPolicy(rawValue: config.dkimPolicy.rawValue) ?? .require
        let ingestor = ReportIngestor(store: store, maxSize: maxSize, dkimPolicy: policy, lookup: try Self.keyLookup(server: dnsServer ?? config.dnsServer))
        let tally = Tally()
        let keep = config.keepRejected

        /// One message: true when it is done with (stored, duplicate, or not a report).
        func take(_ bytes: [UInt8], name: String) async throws -> Bool {
            tally.messages += 1
            let outcome: ReportIngestor.Outcome
            do { outcome = try await ingestor.ingest(mail: bytes) } catch {
                Console.err("\(name): \(error) (temporary: try again)")
                throw ExitCode(exTempFail)
            }
            if let reason = outcome.notAReport {
                tally.notReports += 1
                Console.err("\(name): not a TLS report: \(reason)")
                Self.keep(bytes, in: keep, name: name)
            } else if let reason = outcome.refused {
                tally.refused += 1
                Console.err("\(name): refused: \(reason)")
                Self.keep(bytes, in: keep, name: name)
            } else {
                tally.stored += outcome.stored.count
                tally.duplicates += outcome.duplicates.count
                if verbose || !output.json && files.isEmpty && maildir == nil && mbox == nil {
                    let what = outcome.stored.isEmpty ? "already stored (#\(outcome.duplicates.map(String.init).joined(separator: ", #")))" : "stored as #\(outcome.stored.map(String.init).joined(separator: ", #"))"
                    Console.err("\(name): \(outcome.organizations.first ?? "report") \(what); DKIM \(outcome.dkim?.description ?? "not checked")")
                }
            }
            return true
        }

        func skipped(_ name: String, _ reason: String) {
            Console.err("\(name): \(reason)")
            tally.messages += 1
            tally.tooLarge += 1
        }
        do {
            if let maildir { try await Mailbox.maildir(maildir, maxSize: maxSize * 2, take: take, skipped: skipped, warn: { Console.err($0) }) }
            if let mbox { try await Mailbox.mbox(mbox, store: store, maxSize: maxSize * 2, take: take, skipped: skipped) }
        } catch let failure as Mailbox.Failure {
            Console.err(failure.description)
            throw ExitCode(failure.temporary ? exTempFail : Exit.usage)
        }
        let inputs = files.isEmpty && maildir == nil && mbox == nil ? ["-"] : files
        for path in InputFiles.expand(inputs) {
            let bytes: [UInt8]
            do { bytes = try InputFiles.read(path, maxSize: maxSize * 2) } catch {
                Console.err("\(error)")
                tally.messages += 1
                tally.tooLarge += 1
                continue
            }
            _ = try await take(bytes, name: path == "-" ? "standard input" : path)
        }
        if output.json {
            Console.out(String(decoding: tally.json.serializedBytes(pretty: true), as: UTF8.self))
        } else if files.count > 1 || maildir != nil || mbox != nil || verbose {
            Console.out("\(tally.messages) message(s): \(tally.stored) report(s) stored, \(tally.duplicates) already stored, \(tally.notReports) not reports, \(tally.refused) refused, \(tally.tooLarge) unreadable or too large")
        }
    }

    static func keyLookup(server: String?) throws -> DKIM.KeyLookup {
        let resolver: DNSResolver
        do { resolver = try DNSResolver(.init(server: server, timeout: 5, tries: 2)) } catch { throw ValidationError("--dns-server: \(error)") }
        return { name in
            do {
                return try await resolver.txt(name).records.map { String(decoding: $0.joined(), as: UTF8.self) }
            } catch let error as DNSError {
                if error.isNoRecords { return nil }
                throw error
            }
        }
    }

    static func keep(_ bytes: [UInt8], in directory: String?, name: String) {
        guard let directory else { return }
        try? FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let file = "\(directory)/\(Int(Date().timeIntervalSince1970)).\(getpid()).\(UInt32.random(in: 0...UInt32.max)).eml"
        FileManager.default.createFile(atPath: file, contents: Data(bytes))
    }

}

// MARK: questions

struct ReportsList: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "list", abstract: "List stored reports, newest first.",
        discussion: "Exit codes: 0 listed (also when none match); 2 usage error; 3 the database failed.")

    @OptionGroup var filter: FilterOptions
    @Option(help: "At most this many reports.") var limit = 100
    @Flag(help: "CSV instead of text.") var csv = false
    @OptionGroup var db: DatabaseOptions
    @OptionGroup var output: JSONFlag

    func run() throws {
        let store = try db.open()
        let rows: [ReportRow]
        do { rows = try store.list(filter.filter, limit: limit) } catch { Console.err("\(error)"); throw ExitCode(Exit.temporary) }
        if output.json {
            Console.out(String(decoding: JSONValue.array(rows.map(\.json)).serializedBytes(pretty: true), as: UTF8.self))
        } else if csv {
            var out = CSV.line(["id", "day", "organization", "report_id", "policy_domains", "successful", "failed", "channel", "dkim"])
            for r in rows { out += CSV.line([String(r.id), r.day, r.organization, r.reportID, r.domains.joined(separator: " "), String(r.successful), String(r.failed), r.channel, r.dkim ?? ""]) }
            FileHandle.standardOutput.write(Data(out.utf8))
        } else {
            if rows.isEmpty { Console.out("no stored report matches"); return }
            for r in rows {
                let failed = r.failed > 0 ? Console.red("\(r.failed) failed") : "0 failed"
                Console.out("#\(r.id)  \(r.day)  \(r.organization)  \(r.domains.joined(separator: ","))  \(r.successful) ok, \(failed)  [\(r.channel)\(r.dkim.map { ", dkim \($0)" } ?? "")]  \(Console.dim(r.reportID))")
            }
        }
    }
}

struct ReportsShow: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "show", abstract: "Show one stored report (by number or report-id).",
        discussion: "Prints the normalised report; --raw prints the bytes as received. Exit codes: 0 shown; 1 no such report; 3 the database failed.")

    @Argument(help: "The report's number (#N in list) or its report-id.") var report: String
    @Flag(help: "The bytes as received (mail message or HTTP body).") var raw = false
    @OptionGroup var db: DatabaseOptions
    @OptionGroup var output: JSONFlag

    func run() throws {
        let store = try db.open()
        let found: (row: ReportRow, normalized: String, raw: [UInt8], diagnostics: [String])?
        do { found = try store.show(report) } catch { Console.err("\(error)"); throw ExitCode(Exit.temporary) }
        guard let found else { Console.err("no stored report \(report)"); throw ExitCode(Exit.problems) }
        if raw { FileHandle.standardOutput.write(Data(found.raw)); return }
        let report = (try? JSONParser.parse(Array(found.normalized.utf8)).value) ?? .string(found.normalized)
        if output.json {
            guard case .object(var members) = found.row.json else { return }
            members.append(JSONMember("tolerated", .array(found.diagnostics.map(JSONValue.string))))
            members.append(JSONMember("report", report))
            Console.out(String(decoding: JSONValue.object(members).serializedBytes(pretty: true), as: UTF8.self))
        } else {
            let r = found.row
            Console.out("#\(r.id) \(r.organization) \(r.reportID)\n  \(RFC3339.format(r.startDate)) – \(RFC3339.format(r.endDate))\n  received \(RFC3339.format(Int64(r.receivedAt))) by \(r.channel)\(r.dkim.map { ", DKIM \($0)" } ?? "")\n  \(r.successful) successful, \(r.failed) failed sessions")
            for d in found.diagnostics { Console.out("  tolerated: \(d)") }
            Console.out(String(decoding: report.serializedBytes(pretty: true, indent: 2), as: UTF8.self))
        }
    }
}

struct ReportsSummary: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "summary", abstract: "Sessions per domain and day, and failures by type, sender, MX host and IP.",
        discussion: "Exit codes: 0 printed; 2 usage error; 3 the database failed.")

    @OptionGroup var filter: FilterOptions
    @Flag(help: "CSV (one row per domain and day) instead of text.") var csv = false
    @OptionGroup var db: DatabaseOptions
    @OptionGroup var output: JSONFlag

    func run() throws {
        let store = try db.open()
        let s: Summary
        do { s = try store.summary(filter.filter) } catch { Console.err("\(error)"); throw ExitCode(Exit.temporary) }
        if output.json {
            Console.out(String(decoding: s.json.serializedBytes(pretty: true), as: UTF8.self))
            return
        }
        if csv {
            var out = CSV.line(["domain", "day", "reports", "successful", "failed", "success_rate"])
            for d in s.days { out += CSV.line([d.domain, d.day, String(d.reports), String(d.successful), String(d.failed), d.successRate.map { String(format: "%.4f", $0) } ?? ""]) }
            FileHandle.standardOutput.write(Data(out.utf8))
            return
        }
        func pct(_ ok: Int64, _ failed: Int64) -> String { ok + failed == 0 ? "-" : String(format: "%.2f %%", Double(ok) / Double(ok + failed) * 100) }
        Console.out(Console.bold("Sessions: \(s.successful) successful, \(s.failed) failed, success \(pct(s.successful, s.failed))"))
        var domain: String?
        for d in s.days {
            if d.domain != domain { domain = d.domain; Console.out("\n" + Console.bold(d.domain.isEmpty ? "(no policy domain)" : d.domain)) }
            let failed = d.failed > 0 ? Console.red(String(d.failed)) : "0"
            Console.out("  \(d.day)  \(d.reports) report(s)  \(d.successful) ok  \(failed) failed  \(pct(d.successful, d.failed))")
        }
        func section(_ title: String, _ rows: [CountRow]) {
            guard !rows.isEmpty else { return }
            Console.out("\n" + Console.bold(title))
            for r in rows { Console.out("  \(r.sessions)\t\(r.key)") }
        }
        section("Failures by result type", s.byResultType)
        if !s.byOrganization.isEmpty {
            Console.out("\n" + Console.bold("By sending organisation"))
            for o in s.byOrganization { Console.out("  \(o.organization): \(o.reports) report(s), \(o.successful) ok, \(o.failed) failed, \(pct(o.successful, o.failed))") }
        }
        section("Failures by MX host", s.byMXHost)
        section("Failures by receiving IP", s.byReceivingIP)
        let trends = s.trends.filter { $0.change != nil }
        if !trends.isEmpty {
            Console.out("\n" + Console.bold("Trend (success rate, earlier half of the days → later half)"))
            for t in trends {
                let change = t.change ?? 0
                let word = abs(change) < 0.000_05 ? "steady" : change > 0 ? Console.green("better") : Console.red("worse")
                Console.out("  \(t.domain.isEmpty ? "(no policy domain)" : t.domain): \(pct(t.earlier.successful, t.earlier.failed)) (\(t.earlier.first)–\(t.earlier.last)) → \(pct(t.later.successful, t.later.failed)) (\(t.later.first)–\(t.later.last)), \(word)")
            }
        }
    }
}

struct ReportsReadiness: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "readiness", abstract: "Is it safe to move DOMAIN's policy from testing to enforce?",
        discussion: Help.reflow("""
            From the stored reports of the last --days days: which senders would have failed under
            enforce (certificate, STARTTLS, MX not in the policy), which could not fetch the policy,
            on which days, and a verdict with the evidence.

            Exit codes: 0 ready; 1 not ready or not enough data; 2 usage error; 3 the database failed.
            """))

    @Argument(help: "The policy domain.") var domain: String
    @Option(help: "Days of reports to look at, ending with --until.") var days = 14
    @Option(name: .customLong("min-days"), help: "Days with reports needed before a ready verdict.") var minDays = 7
    @Option(help: "Share of sessions (percent) allowed to fail validation.") var tolerance = 0.0
    @Option(help: ArgumentHelp("Last UTC day to look at (default: today).", valueName: "DATE")) var until: String?
    @OptionGroup var db: DatabaseOptions
    @OptionGroup var output: JSONFlag

    func validate() throws {
        if days < 1 { throw ValidationError("--days must be at least 1") }
        if minDays < 0 { throw ValidationError("--min-days must not be negative") }
        if !(0...100).contains(tolerance) { throw ValidationError("--tolerance is a percentage from 0 to 100") }
        if let until, RFC3339.parse(until + "T00:00:00Z") == nil { throw ValidationError("--until must be a day such as 2026-11-30") }
    }

    func run() throws {
        let store = try db.open()
        let day = until ?? RFC3339.formatDay(Int64(Date().timeIntervalSince1970))
        let r: Readiness
        do { r = try store.readiness(domain: domain, until: day, days: days, minDays: minDays, tolerance: tolerance / 100) } catch {
            Console.err("\(error)")
            throw ExitCode(Exit.temporary)
        }
        if output.json {
            Console.out(String(decoding: r.json.serializedBytes(pretty: true), as: UTF8.self))
        } else {
            FileHandle.standardOutput.write(Data(r.text.utf8))
        }
        if r.verdict != .ready { throw ExitCode(Exit.problems) }
    }
}

struct ReportsExport: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "export", abstract: "Export stored reports (JSON) or failure details (CSV), streamed.",
        discussion: Help.reflow("""
            --format json writes one JSON array of {"id", "organization", …, "report": RFC 8460 report};
            --format csv writes one row per failure detail. Exit codes: 0 written; 3 the database failed.
            """))

    enum Format: String, ExpressibleByArgument { case json, csv }
    @Option(help: "json or csv.") var format: Format = .json
    @OptionGroup var filter: FilterOptions
    @OptionGroup var db: DatabaseOptions

    func run() throws {
        let store = try db.open()
        var buffer: [UInt8] = []
        func flush(_ force: Bool = false) {
            if force || buffer.count > 1 << 16 { FileHandle.standardOutput.write(Data(buffer)); buffer.removeAll(keepingCapacity: true) }
        }
        do {
            switch format {
            case .json:
                var first = true
                buffer += Array("[".utf8)
                try store.forEachReport(filter.filter) { row, normalized in
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
                try store.forEachFailure(filter.filter) { fields in
                    buffer += Array(CSV.line(fields).utf8)
                    flush()
                }
            }
        } catch {
            flush(true)
            Console.err("\(error)")
            throw ExitCode(Exit.temporary)
        }
        flush(true)
    }
}
