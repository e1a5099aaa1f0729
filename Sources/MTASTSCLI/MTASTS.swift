import ArgumentParser
import Foundation
import MTASTSCore
import ServerSupport

/// The `mtasts` command.
public struct MTASTS: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "mtasts",
        abstract: "MTA-STS (RFC 8461) and SMTP TLS Reporting (RFC 8460), both ends.",
        discussion: Help.reflow("""
            One command for both ends of SMTP transport security.

            A domain that receives mail (the domain owner):
              policy init|lint       write and lint the MTA-STS policy file
              record lint            lint the _mta-sts and _smtp._tls TXT records
              check DOMAIN           check DNS, the policy host, the policy, every MX's STARTTLS and certificate, TLSRPT
              serve                  host the policy (per Host/SNI), receive TLS reports over HTTPS, answer the API
              reports ingest         take report mail (pipe, Maildir, mbox), DKIM-checked
              reports summary|readiness  what fails, and whether testing can become enforce
              report parse           read report files (JSON, gzip, mail)

            A server that sends mail (Postfix):
              daemon                 the socketmap policy daemon (smtp_tls_policy_maps) with a cache, the
                                     libtlsrpt collector and the daily report run
              query DOMAIN           the policy a sender applies now, and the daemon's reply
              collect-log            TLS results from Postfix's mail log (Postfix 3.9 and older)
              reports build|send|status  our daily TLS reports: build, deliver (HTTPS, DKIM-signed mail), ledger

            Exit codes:
              0  fine (warnings allowed)
              1  problems found (an invalid policy or record, a file that is no report)
              2  usage or configuration error
              3  temporary failure (DNS, network, database) or a daemon that cannot start; try again later
              75 reports ingest only: temporary failure for the MTA's pipe (EX_TEMPFAIL)

            Results go to standard output (--json for machines), logs to standard error (serve and daemon:
            --log-level, one line per event, journald priorities under systemd). Colour is used only on a
            terminal, and never when NO_COLOR is set.
            """),
        version: "0.1.0",
        subcommands: [PolicyCommand.self, RecordCommand.self, ReportCommand.self, ReportsCommand.self, ServeCommand.self, CheckCommand.self, DaemonCommand.self, QueryCommand.self, CollectLogCommand.self])

    public init() {}

    /// Runs the command line and exits with the documented codes (argument errors exit 2).
    public static func runMain(_ arguments: [String]? = nil) async -> Never {
        Log.bootstrap(level: LoggingOptions.level(in: arguments ?? Array(CommandLine.arguments.dropFirst())))
        do {
            var command = try parseAsRoot(arguments)
            if var asyncCommand = command as? any AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
            Foundation.exit(Exit.ok)
        } catch let error as MTASTSErrorConvertible {
            // Library errors: the message, and the exit code decided in one place.
            FileHandle.standardError.write(Data("mtasts: \(error.mtastsError.message)\n".utf8))
            Foundation.exit(Exit.code(for: error))
        } catch {
            let code = exitCode(for: error)
            if code == .validationFailure {
                FileHandle.standardError.write(Data((fullMessage(for: error) + "\n").utf8))
                Foundation.exit(Exit.usage)
            }
            exit(withError: error)
        }
    }
}

struct JSONFlag: ParsableArguments {
    @Flag(name: .long, help: "Write machine-readable JSON to standard output.")
    var json = false
}
