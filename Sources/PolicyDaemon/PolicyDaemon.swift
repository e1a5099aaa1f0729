import Foundation
import Logging
import MTASTSConfig
import MTASTSCore
import Metrics
import NIOConcurrencyHelpers
import PolicyResolver
import ServerSupport
import ServiceLifecycle
import Socketmap
import TLSRPTSender
import UnixSignals

/// `mtasts daemon` as services for swift-service-lifecycle: the socketmap listeners (drained on
/// SIGTERM), the proactive refresher, the SIGHUP reload, the libtlsrpt collector and the daily
/// report run. `start` opens what can fail (cache, sockets) before anything runs, so a failure is
/// an exit code, not a half-started daemon; `services` are then run in one ServiceGroup.
public final class PolicyDaemon: Sendable {
    public let server: SocketmapServer
    public let resolver: PolicyResolver
    public let responder: PolicyMapResponder
    let configPath: String?
    let logger: Logger
    let clock: any WallClock
    let collector: Collector?
    let scheduler: ReportScheduler?
    /// What the listeners were started with (reload compares the file with it).
    let started: DaemonConfig

    init(server: SocketmapServer, resolver: PolicyResolver, responder: PolicyMapResponder, configPath: String?, logger: Logger,
         clock: any WallClock, collector: Collector?, scheduler: ReportScheduler?, started: DaemonConfig) {
        self.server = server
        self.resolver = resolver
        self.responder = responder
        self.configPath = configPath
        self.logger = logger
        self.clock = clock
        self.collector = collector
        self.scheduler = scheduler
        self.started = started
    }

    /// The configuration in force (replaced whole by a reload; read under a lock).
    public var config: DaemonConfig { responder.config.withLockedValue { $0 } }

    public static func start(_ config: DaemonConfig, configPath: String?, clock: any WallClock = SystemClock(),
                             logger: Logger = Log.logger("daemon")) async throws -> PolicyDaemon {
        // Few malloc arenas: a long-running daemon with many threads otherwise keeps freed memory.
        _ = glibcMallopt(-8 /* M_ARENA_MAX */, 2)
        let store: (any PolicyStore)?
        do { store = try DaemonRuntime.makeStore(config) } catch {
            // A shared PostgreSQL cache that is down must not keep the daemon (and mail) down:
            // it starts degraded, resolves live and connects when the database answers.
            guard case .postgres(let dsn, let timeout) = config.cache else { throw error }
            logger.error("\(error); starting without it (degraded): look-ups go to DNS and the policy hosts until PostgreSQL answers")
            do { store = try PostgresPolicyStore(dsn: dsn, timeout: .milliseconds(Int64(timeout * 1000)), connectNow: false) } catch {
                throw DaemonRuntime.SetupError(description: "the policy cache: \(error.description)")
            }
        }
        let resolver = try DaemonRuntime.makeResolver(config, store: store, clock: clock)
        var warmed = 0
        do { warmed = try await resolver.warm() } catch {
            logger.error("the policy cache could not be read at start (\(error)); running degraded until it answers")
        }
        _ = glibcMallocTrim(0)
        let responder = PolicyMapResponder(resolver: resolver, config: config)
        var limits = SocketmapServer.Limits()
        limits.maxConnections = config.maxConnections
        limits.maxRequestLength = config.maxRequestLength
        limits.idleTimeout = .milliseconds(Int64(config.idleTimeout * 1000))
        // After the whole look-up budget, below Postfix's socketmap time-out (100 s).
        limits.replyTimeout = .milliseconds(Int64(config.replyDeadline * 1000))
        let server = SocketmapServer(responder: responder, limits: limits, latency: LatencyHistogram())
        var listening: [String] = []
        if let host = config.host, let port = config.port {
            let bound = try await server.listen(host: host, port: port, reusePort: config.reusePort)
            listening.append("\(host):\(bound)")
        }
        if let path = config.path {
            var owner: (uid_t, gid_t)?
            if let spec = config.socketOwner { owner = try DaemonRuntime.owner(spec) }
            try await server.listen(unixPath: path, mode: config.socketMode, owner: owner)
            listening.append("unix:\(path)")
        }
        let cachedEntries = Gauge(label: "mtasts_cached_entries")
        MetricsExport.onCollect {
            cachedEntries.record(resolver.hotCount)
            server.recordGauges()
        }
        let (collector, scheduler) = try startTLSRPT(config, clock: clock)
        let cacheName: String
        switch config.cache {
        case .memory(let size): cacheName = "memory (\(size) entries)"
        case .sqlite(let path): cacheName = "sqlite \(path), \(warmed) valid entries loaded"
        case .postgres: cacheName = "postgres, \(warmed) valid entries loaded"
        }
        logger.info("socketmap on \(listening.joined(separator: ", ")); cache \(cacheName); a look-up takes at most \(Int(config.lookupBudget.rounded(.up))) s")
        return PolicyDaemon(server: server, resolver: resolver, responder: responder, configPath: configPath, logger: logger,
                            clock: clock, collector: collector, scheduler: scheduler, started: config)
    }

    /// The libtlsrpt collector and the daily report run (both optional).
    static func startTLSRPT(_ config: DaemonConfig, clock: any WallClock) throws -> (Collector?, ReportScheduler?) {
        guard config.collector != nil || config.reporting?.sendDaily == true else { return (nil, nil) }
        let store: SessionStore
        do { store = try SessionStore(url: config.tlsrptDatabase) } catch { throw DaemonRuntime.SetupError(description: "tlsrpt_database: \(error)") }
        var collector: Collector?
        if let c = config.collector {
            let log = Log.logger("collector")
            let started = Collector(configuration: c, store: store, logger: log, clock: clock)
            try started.start()
            collector = started
            let qlen = Collector.maxDatagramQueue.map { "net.unix.max_dgram_qlen \($0)\($0 < 512 ? " (raise it to 512 or more: datagrams beyond the queue are lost at the sender)" : "")" } ?? ""
            log.info("tlsrpt collector on unix:\(c.socket); database \(store.db.kind.rawValue) \(store.db.location); \(qlen)")
        }
        var scheduler: ReportScheduler?
        if let r = config.reporting, r.sendDaily {
            let log = Log.logger("reports")
            let sender: ReportSender
            do { sender = try r.makeSender(store: store, logger: log, clock: clock) } catch {
                throw DaemonRuntime.SetupError(description: "reporting: \(error)")
            }
            scheduler = ReportScheduler(store: store, sender: sender, clock: clock, spread: r.spread, logger: log)
        }
        return (collector, scheduler)
    }

    /// Everything that runs until SIGTERM, in start order (a ServiceGroup stops them in reverse:
    /// the socketmap listeners, last in the list, are drained first).
    public func services() -> [any Service] {
        var list: [any Service] = []
        if let collector { list.append(CollectorService(collector: collector)) }
        if let scheduler { list.append(scheduler) }
        list.append(RefresherService(daemon: self))
        list.append(ReloadService(daemon: self))
        list.append(SocketmapService(daemon: self))
        return list
    }

    /// SIGHUP: reads the file again; a bad file keeps the running configuration.
    @discardableResult
    public func reload() -> Bool {
        guard let configPath else {
            logger.warning("SIGHUP: no configuration file to reload")
            return false
        }
        do {
            let fresh = try DaemonConfig.load(path: configPath)
            var restart: [String] = []
            if fresh.host != started.host || fresh.port != started.port || fresh.path != started.path { restart.append("listeners") }
            if fresh.cache != started.cache { restart.append("cache") }
            responder.update(fresh)
            let note = restart.isEmpty ? "" : "; changes to \(restart.joined(separator: " and ")) take effect after a restart"
            logger.info("SIGHUP: configuration reloaded (\(fresh.zones.count) zones)\(note)")
            return true
        } catch {
            logger.error("SIGHUP: configuration not reloaded, keeping the running one: \(error)")
            return false
        }
    }
}

/// The socketmap listeners: already open; on graceful shutdown, stop accepting and answer what
/// was asked (at most `shutdown_timeout`).
struct SocketmapService: Service {
    let daemon: PolicyDaemon

    func run() async throws {
        try? await gracefulShutdown()
        let grace = daemon.config.shutdownTimeout
        daemon.logger.info("stopping: no new connections; answering what was asked (at most \(Int(grace)) s)")
        await daemon.server.shutdown(grace: .milliseconds(Int64(grace * 1000)))
        await daemon.resolver.flushUse()
        await daemon.resolver.drainWrites()
    }
}

/// Proactive refresh of cached policies and the use marks, every `proactive_policy_fetching.interval`.
struct RefresherService: Service {
    let daemon: PolicyDaemon

    func run() async throws {
        try? await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                let config = daemon.config
                try await daemon.clock.sleep(seconds: config.proactiveInterval)
                if config.proactiveEnabled { await daemon.resolver.refreshDue() }
                await daemon.resolver.flushUse()
            }
        }
    }
}

/// SIGHUP reloads the configuration.
struct ReloadService: Service {
    let daemon: PolicyDaemon

    func run() async throws {
        let signals = await UnixSignalsSequence(trapping: .sighup)
        try? await cancelWhenGracefulShutdown {
            for await _ in signals { daemon.reload() }
        }
    }
}

/// The collector's threads run on their own; this service stops them on shutdown (what was
/// received is committed first).
struct CollectorService: Service {
    let collector: Collector

    func run() async throws {
        try? await gracefulShutdown()
        collector.stop()
    }
}

// glibc's malloc tuning (malloc.h is not part of the Glibc module).
@_silgen_name("mallopt") private func glibcMallopt(_ parameter: Int32, _ value: Int32) -> Int32
@_silgen_name("malloc_trim") private func glibcMallocTrim(_ pad: Int) -> Int32
