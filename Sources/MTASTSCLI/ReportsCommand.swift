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

    @Flag(help: "Only reports authenticated by an aligned DKIM signature (HTTPS posts and unsigned mail can come from anyone).")
    var authenticated = false

    func validate() throws {
        for (name, value) in [("--since", since), ("--until", until)] {
            if let value, RFC3339.parse(value + "T00:00:00Z") == nil { throw ValidationError("\(name) must be a day such as 2026-11-30, not '\(value)'") }
        }
    }

    var filter: ReportFilter { ReportFilter(domain: domain, since: since, until: until, authenticatedOnly: authenticated) }
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

            --imap imaps://USER@HOST[:PORT]/MAILBOX (implicit TLS, port 993) or imap://… (STARTTLS,
            port 143; credentials are never sent before TLS) reads a mailbox; the certificate is
            verified against the system's CAs and --imap-ca-file. The password comes from
            --imap-password-file or the environment variable MTASTS_IMAP_PASSWORD, never from the
            command line. The last UID taken is kept in the database per mailbox (a re-run takes only
            new mail; a changed UIDVALIDITY reads the mailbox again, without storing anything twice);
            each message taken is flagged \\Seen (--imap-flag) or moved (--imap-move-to FOLDER,
            created if missing). --idle then waits for new mail (IMAP IDLE, re-issued every 29
            minutes) until SIGINT/SIGTERM.

            Exit codes (fit for a mail pipe): 0 stored, already stored, or not a report (logged, not
            bounced); 75 (EX_TEMPFAIL) the database or DNS failed temporarily: the MTA keeps the
            message and retries, nothing is lost; 2 usage error (and an IMAP log-in refused); 3 an IMAP
            server whose certificate or answers cannot be used.
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

    @Option(help: ArgumentHelp("An IMAP mailbox to take report mail from: imaps://USER@HOST[:PORT]/MAILBOX or imap://… (STARTTLS).", valueName: "URL"))
    var imap: String?

    @Option(name: .customLong("imap-password-file"), help: ArgumentHelp("File holding the IMAP password (else MTASTS_IMAP_PASSWORD).", valueName: "FILE"))
    var imapPasswordFile: String?

    @Option(name: .customLong("imap-ca-file"), help: ArgumentHelp("Extra trust anchors (PEM) for the IMAP server's certificate.", valueName: "FILE"))
    var imapCAFile: [String] = []

    @Option(name: .customLong("imap-move-to"), help: ArgumentHelp("Move each message taken to this folder instead of flagging it.", valueName: "FOLDER"))
    var imapMoveTo: String?

    @Option(name: .customLong("imap-flag"), help: "The flag set on each message taken.")
    var imapFlag: String = "\\Seen"

    @Flag(help: "With --imap: after the new mail, wait for more (IDLE) until stopped.")
    var idle = false

    @Flag(help: "Print a line per message even when it was stored.")
    var verbose = false

    @OptionGroup var db: DatabaseOptions
    @OptionGroup var output: JSONFlag

    func validate() throws {
        if let dkim, ReportIngestor.DKIMPolicy(rawValue: dkim) == nil { throw ValidationError("--dkim must be require, record or ignore") }
        if maxSize < 1 { throw ValidationError("--max-size must be positive") }
        if imap == nil && (idle || imapPasswordFile != nil || !imapCAFile.isEmpty || imapMoveTo != nil) {
            throw ValidationError("--idle and the --imap-… options go with --imap")
        }
    }

    /// The IMAP side, from the options.
    func imapIngest(_ url: String) throws -> IMAPIngest {
        do {
            return try IMAPIngest(url: url, passwordFile: imapPasswordFile, environment: ProcessInfo.processInfo.environment,
                                  caFiles: imapCAFile, moveTo: imapMoveTo, flag: imapFlag, maxSize: maxSize * 2)
        } catch { throw ValidationError("\(error)") }
    }

    func run() async throws {
        let config = try db.serveConfig()
        let store = try db.open(temporaryCode: exTempFail, config: config)
        let policy = dkim.flatMap(ReportIngestor.DKIMPolicy.init) ?? ReportIngestor.DKIMPolicy(rawValue: config.dkimPolicy.rawValue) ?? .require
        let ingestor = ReportIngestor(store: store, maxSize: maxSize, dkimPolicy: policy, lookup: try Self.keyLookup(server: dnsServer ?? config.dnsServer))
        let imapRun = try imap.map(imapIngest)
        let mailboxes = !files.isEmpty || maildir != nil || mbox != nil || imap != nil
        let run = IngestRun(ingestor: ingestor, keepRejected: config.keepRejected, logStored: verbose || !output.json && !mailboxes) { Console.err($0) }
        do {
            if let maildir { try await run.maildir(maildir, maxSize: maxSize * 2) }
            if let mbox { try await run.mbox(mbox, maxSize: maxSize * 2) }
            if let imapRun {
                if idle {
                    // Until SIGINT/SIGTERM; without --idle the signals keep their default (stop at once).
                    let stop = StopSignal()
                    let task = Task { try await imapRun.run(run, idle: true) }
                    let watcher = Task { while !(await stop.wait(seconds: 3_600)) {}; task.cancel() }
                    defer { watcher.cancel() }
                    do { try await task.value } catch is CancellationError where stop.isStopped {}
                } else {
                    try await imapRun.run(run, idle: false)
                }
            }
            if !files.isEmpty || (maildir == nil && mbox == nil && imap == nil) {
                try await run.files(files.isEmpty ? ["-"] : files, maxSize: maxSize * 2)
            }
        } catch {
            Console.err("\(error)")
            throw ExitCode(Exit.code(for: error, temporary: exTempFail))
        }
        if output.json {
            Console.out(String(decoding: run.tally.json.serializedBytes(pretty: true), as: UTF8.self))
        } else if files.count > 1 || maildir != nil || mbox != nil || imap != nil || verbose {
            Console.out(run.tally.text)
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
            FileHandle.standardOutput.write(Data((CSV.line(ReportRow.csvHeader) + rows.map { CSV.line($0.csvFields) }.joined()).utf8))
        } else {
            if rows.isEmpty { Console.out("no stored report matches"); return }
            for r in rows { Console.out(r.line(style: Console.style)) }
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
        let shown = StoredReport(row: found.row, normalized: found.normalized, diagnostics: found.diagnostics)
        Console.out(output.json ? String(decoding: shown.json.serializedBytes(pretty: true), as: UTF8.self) : shown.text)
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
        FileHandle.standardOutput.write(Data((csv ? s.csv : s.text(style: Console.style)).utf8))
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
    @Flag(help: "Only reports authenticated by an aligned DKIM signature.") var authenticated = false
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
        do { r = try store.readiness(domain: domain, until: day, days: days, minDays: minDays, tolerance: tolerance / 100, authenticatedOnly: authenticated) } catch {
            Console.err("\(error)")
            throw ExitCode(Exit.temporary)
        }
        if output.json {
            Console.out(String(decoding: r.json.serializedBytes(pretty: true), as: UTF8.self))
        } else {
            FileHandle.standardOutput.write(Data(r.text(style: Console.style).utf8))
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

    @Option(help: "json or csv.") var format: ReportStore.ExportFormat = .json
    @OptionGroup var filter: FilterOptions
    @OptionGroup var db: DatabaseOptions

    func run() throws {
        let store = try db.open()
        do { try store.export(format, filter.filter) { FileHandle.standardOutput.write(Data($0)) } } catch {
            Console.err("\(error)")
            throw ExitCode(Exit.temporary)
        }
    }
}

extension ReportStore.ExportFormat: ExpressibleByArgument {}
