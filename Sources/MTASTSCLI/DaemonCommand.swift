import ArgumentParser
import Foundation
import MTASTSCore
import MTASTSConfig
import PolicyDaemon
import ServerSupport
import ServiceLifecycle
import WebServer

struct DaemonCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "daemon",
        abstract: "The MTA-STS policy daemon for Postfix (socketmap).",
        discussion: Help.reflow("""
            Answers Postfix's smtp_tls_policy_maps look-ups with each destination's MTA-STS policy
            (RFC 8461), from a cache kept fresh in the background:

              main.cf:  smtp_tls_policy_maps = socketmap:inet:127.0.0.1:8461:postfix

            Replies: 'OK secure match=… servername=hostname' for a policy in enforce mode (and in
            testing mode with strict_testing), 'dane-only' where every MX host has DNSSEC-validated
            TLSA records (DANE comes first, RFC 8461 §2), 'NOTFOUND ' for no policy, 'TEMP …' for
            our own failures (Postfix defers and retries), 'PERM …' for a malformed request.

            The configuration is YAML; a postfix-mta-sts-resolver configuration works as it is.
            Without --config: 127.0.0.1:8461, SQLite cache in \(DaemonConfig.defaultCachePath).
            SIGTERM/SIGINT: stop accepting, answer what was asked, exit. SIGHUP: reload zones,
            time-outs and limits from the file (listeners and the cache type need a restart).

            Each zone (the socketmap name) states what its Postfix does, and the replies follow:
            'dnssec: true' (Postfix runs smtp_dns_support_level = dnssec: DANE before MTA-STS),
            'policy_failure_level: may|encrypt' (Postfix's own smtp_tls_security_level),
            'tlsrpt: true' (Postfix ≥ 3.10), 'enforce_mx_patterns: true' (Postfix ≥ 3.10.5 with
            smtp_tls_enforce_sts_mx_patterns = yes). --check-config FILE prints, per zone, what is
            assumed and the main.cf lines that go with it, and compares them with `postconf`
            where Postfix is installed (--postfix-config DIR for another configuration).

            If the PostgreSQL cache is down (at start or later), look-ups go live (DNS and the
            policy hosts) and writes wait; mtasts_policy_store_up shows it.

            Exit codes: 0 stopped by a signal (--check-config: valid and consistent with Postfix),
            1 (--check-config) Postfix contradicts the configuration, 2 usage or configuration
            error, 3 cannot listen or open the cache.
            """))

    @Option(name: [.short, .long], help: "The YAML configuration file.")
    var config: String?

    @Option(name: .customLong("check-config"), help: "Only check this configuration file: per zone, what it assumes about Postfix, the main.cf lines, and contradictions with postconf (0 consistent, 1 contradicted, 2 invalid).")
    var checkConfig: String?

    @Option(name: .customLong("postfix-config"), help: "With --check-config: Postfix's configuration directory for postconf -c (default: postconf's own).")
    var postfixConfig: String?

    @Flag(name: .customLong("no-postconf"), help: "With --check-config: do not run postconf.")
    var noPostconf = false

    @OptionGroup var output: JSONFlag

    @OptionGroup var logging: LoggingOptions

    func run() async throws {
        if let checkConfig {
            let cfg = try DaemonConfig.load(path: checkConfig)
            let postfix = noPostconf ? .failure(ConfigCheck.PostconfError(description: "--no-postconf")) : ConfigCheck.postconf(configDirectory: postfixConfig)
            let check = ConfigCheck.run(cfg, postconf: postfix)
            Console.out(output.json ? check.json.serialized(pretty: true) : "\(checkConfig): valid\n" + check.text(style: Console.style))
            if check.hasErrors { throw ExitCode(1) }
            return
        }
        let cfg = try config.map { path throws(DaemonConfig.ConfigError) in try DaemonConfig.load(path: path) } ?? DaemonConfig()
        MetricsExport.bootstrap()
        let logger = Log.logger("daemon")
        let daemon: PolicyDaemon
        do { daemon = try await PolicyDaemon.start(cfg, configPath: config, logger: logger) } catch let error as MTASTSErrorConvertible {
            throw error
        } catch {
            throw MTASTSError(.setup, "cannot start: \(error)", temporary: true)
        }
        var services = daemon.services()
        if let port = cfg.metricsPort {
            let host = cfg.metricsHost
            services.insert(MetricsEndpoint.application(host: host, port: port, logger: Log.logger("metrics")) { bound in
                logger.info("metrics on http://\(host):\(bound)/metrics")
            }, at: 0)
        }
        let group = ServiceGroup(configuration: .init(services: services.map { .init(service: $0) },
                                                      gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        do { try await group.run() } catch {
            throw MTASTSError(.setup, "stopped on an error: \(error)", temporary: true)
        }
        logger.info("stopped")
    }
}
