import ArgumentParser
import Foundation
import MTASTSCore
import Logging
import NIOSSL
import MTASTSConfig
import ServerSupport
import ServiceLifecycle
import Storage
import TLSRPTReceiver
import WebServer
import Watch

struct ServeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Host MTA-STS policies and receive TLS reports over HTTPS; answer questions about them.",
        discussion: Help.reflow("""
            One service for a domain owner:
              GET  https://mta-sts.DOMAIN/.well-known/mta-sts.txt   the policy of every configured domain,
                   chosen by the Host header (and the certificate by SNI); anything else on those hosts is 404
              POST /tlsrpt                                        TLS reports (application/tlsrpt+gzip or
                   +json, and the mislabelled forms real senders use): 201 stored, 200 already stored,
                   400 not a report, 413 too large, 503 database unavailable (the sender retries)
              GET  /api/reports, /api/reports/ID, /api/summary, /api/readiness/DOMAIN   the stored data
                   as JSON (query parameters domain, since, until, limit, days, min_days, tolerance)
              GET  /metrics                                       Prometheus metrics
              GET  /healthz
              GET  /, /domains/DOMAIN, /domains/DOMAIN/reports?…, /reports/ID   the dashboard (HTML):
                   every domain, charts, drill-down to the reports, readiness, the watch's checks, alerts

            The dashboard answers on a loopback listener (to Host localhost, 127.0.0.1 or [::1]) or,
            anywhere, to HTTP basic auth: any user with reports.api_token as password, or a user of
            dashboard.users (bcrypt; --hash-password makes the hash). watch: checks the owner's
            domains every interval seconds and keeps the results; alerts: sends a webhook and mail,
            once per change, on a drop in success rate, a jump or a new kind of failure, a new
            sender, a certificate about to expire, a check error, readiness turning ready.

            /api/ and /metrics are answered on a loopback listener, or anywhere with reports.api_token
            (Authorization: Bearer TOKEN); reports.api_public: true answers them to anyone (warned).

            Limits (the limits section): connections at once and per address, idle, header, body and
            TLS handshake time-outs.

            Without a tls section it speaks plain HTTP (put it behind a reverse proxy that terminates
            TLS for mta-sts.DOMAIN). With no --config: 127.0.0.1:8080, SQLite /var/lib/mtasts/reports.db.

            Signals: SIGTERM/SIGINT stop after the requests in progress.

            Exit codes: 0 stopped; 2 bad configuration or arguments; 3 the database or a listener failed.
            """))

    @Option(help: ArgumentHelp("Configuration file (YAML); see contrib/mtasts-serve.yml.", valueName: "FILE"))
    var config: String?

    @Option(help: ArgumentHelp("Database (overrides the configuration and MTASTS_DATABASE).", valueName: "URL"))
    var database: String?

    @Option(help: ArgumentHelp("Listen on HOST:PORT instead of the configured addresses.", valueName: "HOST:PORT"))
    var listen: [String] = []

    @Flag(name: .customLong("check-config"), help: "Read the configuration, report errors, exit.")
    var checkConfig = false

    @Flag(name: .customLong("hash-password"), help: "Read a password on standard input, print its bcrypt hash for dashboard.users, exit.")
    var hashPassword = false

    @OptionGroup var logging: LoggingOptions

    func run() async throws {
        if hashPassword {
            guard let line = readLine(strippingNewline: true), !line.isEmpty else { throw ValidationError("--hash-password: give the password on standard input") }
            guard line.utf8.count <= 72 else { throw ValidationError("--hash-password: bcrypt uses at most 72 bytes of a password") }
            Console.out(DashboardPassword.hash(line))
            return
        }
        let logger = Log.logger("serve")
        var config = try self.config.map { path throws(ServeConfig.ConfigError) in try ServeConfig.load(path: path) } ?? ServeConfig()
        if !listen.isEmpty {
            config.listen = try listen.map { item in
                guard let address = ServeConfig.address(item) else { throw ValidationError("--listen: \(ServeConfig.addressError(item))") }
                return address
            }
        }
        // The same order as `mtasts reports`: --database, MTASTS_DATABASE, the file, the default.
        if let database { config.database = database } else if let env = ProcessInfo.processInfo.environment["MTASTS_DATABASE"], !env.isEmpty {
            config.database = env
        }
        let tls = try ServeTLS.configuration(config.certificates)
        if checkConfig {
            Console.out("configuration OK: \(config.policies.count) policy domain(s), \(config.certificates.count) certificate(s), listening on \(config.listen.map { "\($0.host):\($0.port)" }.joined(separator: ", "))")
            return
        }
        let store = try ReportStore(url: config.database)
        let watchStore = try WatchStore(db: store.db)
        MetricsExport.bootstrap()
        let service = ReportWebService(config: config, store: store, watch: watchStore, logger: logger)
        var services = [any Service]()
        do {
            if let watch = try WatchService.make(config, reports: store, watch: watchStore, logger: logger) { services.append(watch) }
        } catch { throw MTASTSError(.usage, "\(error)") }
        let scheme = tls == nil ? "http" : "https"
        let summary = "\(config.policies.count) policy domain(s); reports at \(config.reportPath); database \(store.db.kind.rawValue) \(store.db.location)"
        let apps = try service.applications(limits: ConnectionLimits(config), tls: tls) { host, port in
            logger.info("serving on \(host):\(port) (\(scheme)); \(summary)")
        }
        let group = ServiceGroup(configuration: .init(services: (apps + services).map { .init(service: $0) },
                                                      gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        do { try await group.run() } catch {
            throw MTASTSError(.setup, "cannot serve: \(error)", temporary: true)
        }
        logger.info("stopped")
    }
}
