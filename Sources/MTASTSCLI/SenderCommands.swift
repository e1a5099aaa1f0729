import ArgumentParser
import DKIM
import Foundation
import MTASTSConfig
import MTASTSCore
import PolicyDaemon
import Storage
import TLSRPTSender

/// `--config` (the daemon's file: collector, reporting, tlsrpt_database) and `--database`.
struct SenderOptions: ParsableArguments {
    @Option(help: ArgumentHelp("mtasts daemon's configuration file (reporting:, tlsrpt_database:).", valueName: "FILE"))
    var config: String?

    @Option(help: ArgumentHelp("The collected-results database (default: tlsrpt_database of --config, or /var/lib/mtasts/tlsrpt.db).", valueName: "URL"))
    var database: String?

    func daemonConfig() throws -> DaemonConfig {
        guard let config else { return DaemonConfig() }
        do { return try DaemonConfig.load(path: config) } catch {
            Console.err("\(error)")
            throw ExitCode(Exit.usage)
        }
    }

    func store(_ config: DaemonConfig) throws -> SessionStore {
        let url = database ?? ProcessInfo.processInfo.environment["MTASTS_TLSRPT_DATABASE"] ?? config.tlsrptDatabase
        do { return try SessionStore(url: url) } catch {
            Console.err("\(error)")
            throw ExitCode(Exit.temporary)
        }
    }
}

/// Yesterday (UTC): the last completed day.
func yesterday() -> String { RFC3339.formatDay(Int64(Date().timeIntervalSince1970) - 86_400) }

func validDay(_ day: String?, _ name: String) throws {
    if let day, RFC3339.parse(day + "T00:00:00Z") == nil { throw ValidationError("\(name) must be a day such as 2026-11-29, not '\(day)'") }
}

struct ReportsBuild: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "build", abstract: "Write the TLS reports of one UTC day from the collected results (sending side).",
        discussion: Help.reflow("""
            One RFC 8460 report per policy domain and _smtp._tls record, from the data every collector
            wrote to the database, as sender!policy-domain!begin!end!id.json.gz (RFC 8460 §5.1) in --out.
            Nothing is sent or claimed: use it to look at what `reports send` would deliver.
            Exit codes: 0 written (also when there was nothing); 2 usage error; 3 the database failed.
            """))

    @Option(help: ArgumentHelp("The UTC day (default: yesterday).", valueName: "YYYY-MM-DD")) var day: String?
    @Option(help: ArgumentHelp("Directory to write the reports to.", valueName: "DIR")) var out: String
    @Flag(help: "Also write the uncompressed .json beside each report.") var json = false
    @OptionGroup var sender: SenderOptions

    func validate() throws { try validDay(day, "--day") }

    func run() throws {
        let config = try sender.daemonConfig()
        let store = try sender.store(config)
        let identity: SenderIdentity
        do { identity = try (config.reporting ?? ReportingSettings()).identity } catch {
            Console.err("\(error)")
            throw ExitCode(Exit.usage)
        }
        let reports: [BuiltReport]
        do { reports = try store.buildReports(day: day ?? yesterday(), identity: identity) } catch {
            Console.err("\(error)")
            throw ExitCode(Exit.temporary)
        }
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
        for r in reports {
            let path = "\(out)/\(r.filename)"
            FileManager.default.createFile(atPath: path, contents: Data(r.gzip))
            if json { FileManager.default.createFile(atPath: String(path.dropLast(3)), contents: Data(r.report.encoded(pretty: true))) }
            Console.out("\(path)  \(r.report.totalSuccessful) successful, \(r.report.totalFailed) failed; rua \(r.rua.map(\.uri).joined(separator: ", "))")
        }
        if reports.isEmpty { Console.out("no sessions were collected on \(day ?? yesterday())") }
    }
}

struct ReportsSend: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "send", abstract: "Build, claim and deliver the TLS reports of completed days (sending side).",
        discussion: Help.reflow("""
            For --day (default: every completed day with data), the reports this node is first to claim
            get one delivery per rua URI; then every delivery that is due is tried: HTTPS POST
            (application/tlsrpt+gzip; delivered on 2xx only) or mail (multipart/report, DKIM-signed with
            reporting.dkim, through sendmail or SMTP submission). A failure is retried with exponential
            back-off (1 min, doubling) for up to 24 hours (RFC 8460 §5.5). `mtasts daemon` does this by
            itself after each UTC midnight when reporting.send_daily is on.
            Exit codes: 0 nothing failed for good; 1 a delivery failed permanently or was given up;
            2 usage error; 3 the database failed.
            """))

    @Option(help: ArgumentHelp("Only this UTC day.", valueName: "YYYY-MM-DD")) var day: String?
    @OptionGroup var sender: SenderOptions
    @OptionGroup var output: JSONFlag

    func validate() throws { try validDay(day, "--day") }

    func run() async throws {
        let config = try sender.daemonConfig()
        let store = try sender.store(config)
        let reportSender: ReportSender
        do { reportSender = try (config.reporting ?? ReportingSettings()).makeSender(store: store) } catch {
            Console.err("\(error)")
            throw ExitCode(Exit.usage)
        }
        let today = RFC3339.formatDay(Int64(Date().timeIntervalSince1970))
        let attempts: [ReportSender.Attempt]
        do {
            // An explicit --day is built even when it is not over (a warning says so); by default only completed days.
            if let day, day >= today { Console.err("warning: \(day) (UTC) is not over: its reports will miss the sessions still to come") }
            let days = try day.map { [$0] } ?? store.days().filter { $0 < today }
            for d in days { try reportSender.prepare(day: d) }
            attempts = try await reportSender.deliverDue()
        } catch {
            Console.err("\(error)")
            throw ExitCode(Exit.temporary)
        }
        if output.json {
            Console.out(String(decoding: JSONValue.array(attempts.map(\.json)).serializedBytes(pretty: true), as: UTF8.self))
        } else {
            for a in attempts { Console.out(a.line) }
            if attempts.isEmpty { Console.out("nothing to deliver now") }
        }
        if attempts.contains(where: { $0.status == "failed" || $0.status == "gave-up" }) { throw ExitCode(Exit.problems) }
    }
}

struct ReportsStatus: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status", abstract: "The delivery ledger: which report went where, when, with what result (sending side).",
        discussion: "Also the sessions collected per day. Exit codes: 0 shown; 2 usage error; 3 the database failed.")

    @Option(help: ArgumentHelp("Only this UTC day.", valueName: "YYYY-MM-DD")) var day: String?
    @OptionGroup var sender: SenderOptions
    @OptionGroup var output: JSONFlag

    func validate() throws { try validDay(day, "--day") }

    func run() throws {
        let config = try sender.daemonConfig()
        let store = try sender.store(config)
        let rows: [SessionStore.LedgerRow]
        var days: [(String, Int64, Int64)] = []
        do {
            rows = try store.ledger(day: day)
            for d in try day.map({ [$0] }) ?? store.days() {
                let t = try store.totals(day: d)
                days.append((d, t.successful, t.failed))
            }
        } catch {
            Console.err("\(error)")
            throw ExitCode(Exit.temporary)
        }
        if output.json {
            Console.out(String(decoding: JSONValue.object([
                JSONMember("days", .array(days.map { .object([JSONMember("day", .string($0.0)), JSONMember("successful", .int($0.1)), JSONMember("failed", .int($0.2))]) })),
                JSONMember("deliveries", .array(rows.map(\.json))),
            ]).serializedBytes(pretty: true), as: UTF8.self))
            return
        }
        for d in days { Console.out("\(d.0): \(d.1) successful, \(d.2) failed sessions collected") }
        if rows.isEmpty { Console.out("no report has been sent yet") }
        for r in rows { Console.out(r.line) }
    }
}

struct ReportsDKIMRecord: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dkim-record", abstract: "Print the DNS record that publishes the DKIM key of report mail.",
        discussion: Help.reflow("""
            Reads the private key reporting.dkim.key uses (PEM: RSA of at least 2048 bits, or Ed25519;
            make one with `openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out tlsrpt.key`
            or `openssl genpkey -algorithm ed25519 -out tlsrpt.key`) and prints the TXT record to publish
            at SELECTOR._domainkey.DOMAIN. Exit codes: 0 printed; 1 the key cannot be used; 2 usage error.
            """))

    @Option(help: ArgumentHelp("The private key file (PEM).", valueName: "FILE")) var key: String
    @Option(help: "The DKIM selector (s=).") var selector = "tlsrpt"
    @Option(help: "The signing domain (d=).") var domain: String

    func run() throws {
        guard let pem = try? String(contentsOfFile: key, encoding: .utf8) else {
            Console.err("cannot read \(key)")
            throw ExitCode(Exit.problems)
        }
        let signing: DKIM.SigningKey
        do { signing = try DKIM.SigningKey(pem: pem) } catch {
            Console.err("\(key): \(error)")
            throw ExitCode(Exit.problems)
        }
        Console.out(signing.zoneLine(selector: selector, domain: domain))
    }
}
