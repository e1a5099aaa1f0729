import Foundation
import Logging
import MTASTSCheck
import MTASTSConfig
import MTASTSCore
import ServerSupport
import TLSRPTReceiver
import ServiceLifecycle

/// One round of checks: every domain checked (at most `concurrency` at once), each result stored
/// with what changed since the previous check of that domain.
public struct CheckRound: Sendable {
    public let checker: DomainChecker
    public let domains: [DomainName]
    public let concurrency: Int
    public let store: WatchStore?

    public init(checker: DomainChecker, domains: [DomainName], concurrency: Int, store: WatchStore?) {
        self.checker = checker
        self.domains = domains
        self.concurrency = concurrency
        self.store = store
    }

    /// Runs the round; `emit` gets each report (input order) with its changes since the last stored
    /// check (nil: the first check of that domain, or no store).
    public func run(at time: Double, emit: (Int, DomainReport, [String]?) -> Void) async throws {
        var failure: (any Error)?
        await checker.check(domains, concurrency: concurrency, emit: { index, report in
            var changes: [String]?
            if let store, failure == nil {
                do {
                    let previous = try store.history(domain: report.domain, limit: 1).first
                    try store.record(report, at: time)
                    changes = previous.map { CheckRecord(report, at: time).changes(since: $0) }
                } catch {
                    failure = error
                }
            }
            emit(index, report, changes)
        })
        if let failure { throw failure }
    }
}

/// `serve`'s watch: the end-to-end check of the owner's domains every `interval` seconds, each
/// result stored; and the alert evaluation, after each round and every `alertInterval` seconds.
public final class WatchService: Service, Sendable {
    let round: CheckRound?
    let interval: Double
    let alerts: AlertEngine?
    let alertInterval: Double
    let logger: Logger
    let clock: any WallClock

    public init(round: CheckRound?, interval: Double, alerts: AlertEngine?, alertInterval: Double, logger: Logger, clock: any WallClock = SystemClock()) {
        self.round = round
        self.interval = interval
        self.alerts = alerts
        self.alertInterval = alertInterval
        self.logger = logger
        self.clock = clock
    }

    public func run() async throws {
        var nextCheck = clock.now(), nextAlert = clock.now()
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            let now = clock.now()
            var evaluate = false
            if let round, now >= nextCheck {
                await checkOnce(round, at: now)
                nextCheck = now + interval
                evaluate = true
            }
            if alerts != nil && now >= nextAlert {
                nextAlert = now + alertInterval
                evaluate = true
            }
            if evaluate, let alerts {
                do { try await alerts.evaluate() } catch { logger.error("alerts not evaluated: \(error)") }
            }
            let wait = max(0.05, min(round == nil ? .infinity : nextCheck, alerts == nil ? .infinity : nextAlert) - clock.now())
            guard wait.isFinite else { return }
            do {
                try await cancelWhenGracefulShutdown { try await Task.sleep(for: .milliseconds(Int64(min(wait, 86_400) * 1000))) }
            } catch {
                return
            }
        }
    }

    func checkOnce(_ round: CheckRound, at time: Double) async {
        do {
            try await round.run(at: time) { _, report, changes in
                let changed = changes.map { $0.isEmpty ? "" : "; changed: " + $0.joined(separator: ", ") } ?? "; first check"
                logger.info("check \(report.domain): \(report.verdict.rawValue)\(changed)")
            }
        } catch {
            logger.error("check results not stored: \(error)")
        }
    }
}

extension DomainChecker.Setup {
    /// The checker `serve`'s `watch:` section describes.
    public init(_ watch: ServeConfig.Watch) {
        self.init()
        dnsServer = watch.dnsServer
        caFiles = watch.caFiles
        policyPort = watch.policyPort
        smtpPort = watch.smtpPort
        smtp = watch.smtp
        timeout = watch.timeout
    }
}

extension WatchService {
    /// A configuration that cannot be used (a DNS server, a CA file, a mail server).
    public struct SetupError: Error, CustomStringConvertible {
        public var description: String
    }

    /// `serve`'s watch (periodic checks) and alerts, when its configuration asks for either; nil otherwise.
    public static func make(_ config: ServeConfig, reports: ReportStore, watch: WatchStore, logger: Logger) throws(SetupError) -> WatchService? {
        var round: CheckRound?
        if !config.watch.domains.isEmpty {
            let checker: DomainChecker
            do { checker = try DomainChecker.make(.init(config.watch)) } catch { throw SetupError(description: "watch: \(error)") }
            var domains: [DomainName] = []
            for name in config.watch.domains {
                do { domains.append(try DomainName(name)) } catch { throw SetupError(description: "watch: \(error)") }
            }
            round = CheckRound(checker: checker, domains: domains, concurrency: config.watch.concurrency, store: watch)
        }
        var engine: AlertEngine?
        if config.alerts.configured {
            let transports: AlertTransports
            do { transports = try AlertTransports(config.alerts) } catch { throw SetupError(description: "alerts: \(error)") }
            if config.alertDomains == nil {
                logger.warning("alerts: no policies, watch.domains or alerts.domains: every domain in the stored reports can alert, and anyone can POST a report (list the owner's domains in alerts.domains)")
            }
            engine = AlertEngine(rules: config.alerts, publicURL: config.dashboard.publicURL, reports: reports, watch: watch, logger: logger,
                                 domains: config.alertDomains, deliver: { alert in await transports.send(alert, at: Date().timeIntervalSince1970) })
        }
        guard round != nil || engine != nil else { return nil }
        logger.info("watch: \(config.watch.domains.count) domain(s) every \(Int(config.watch.interval)) s; alerts \(engine == nil ? "off" : "to \(config.alerts.webhooks.count) webhook(s), \(config.alerts.mailTo.count) mailbox(es), every \(Int(config.alerts.interval)) s")")
        return WatchService(round: round, interval: config.watch.interval, alerts: engine, alertInterval: config.alerts.interval, logger: logger)
    }
}
