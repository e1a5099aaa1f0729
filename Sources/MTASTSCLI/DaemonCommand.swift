import ArgumentParser
import Foundation
import MTASTSCore
import TLSRPTSender
import NIOCore
import NIOPosix
import PolicyResolver
import Socketmap

struct DaemonCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "daemon",
        abstract: "The MTA-STS policy daemon for Postfix (socketmap).",
        discussion: """
            Answers Postfix's smtp_tls_policy_maps look-ups with each destination's MTA-STS policy
            (RFC 8461), from a cache kept fresh in the background:

              main.cf:  smtp_tls_policy_maps = socketmap:inet:127.0.0.1:8461:postfix

            Replies: 'OK secure match=… servername=hostname' for a policy in enforce mode (and in
            testing mode with strict_testing), 'dane-only' where every MX host has DNSSEC-validated
            TLSA records (DANE comes first, RFC 8461 §2), 'NOTFOUND ' for no policy, 'TEMP …' for
            our own failures (Postfix defers and retries), 'PERM …' for a malformed request.

            The configuration is YAML; a postfix-mta-sts-resolver configuration works as it is.
            Without --config: 127.0.0.1:8461, SQLite cache in \(DaemonConfig.defaultCachePath).
            SIGTERM: stop accepting, answer what was asked, exit. SIGHUP: reload zones, time-outs
            and limits from the file (listeners and the cache type need a restart).

            Exit codes: 0 stopped by a signal, 2 usage or configuration error, 3 cannot listen or
            open the cache.
            """)

    @Option(name: [.short, .long], help: "The YAML configuration file.")
    var config: String?

    @Option(name: .customLong("check-config"), help: "Only read and check this configuration file, then exit (0 valid, 2 not).")
    var checkConfig: String?

    func run() async throws {
        if let checkConfig {
            do {
                _ = try DaemonConfig.load(path: checkConfig)
                Console.out("\(checkConfig): valid")
                return
            } catch {
                Console.err("mtasts daemon: \(error)")
                throw ExitCode(Exit.usage)
            }
        }
        let cfg: DaemonConfig
        do { cfg = try config.map { path throws(DaemonConfig.ConfigError) in try DaemonConfig.load(path: path) } ?? DaemonConfig() } catch {
            Console.err("mtasts daemon: \(error)")
            throw ExitCode(Exit.usage)
        }
        let daemon: RunningDaemon
        do { daemon = try await RunningDaemon.start(cfg, configPath: config) } catch {
            Console.err("mtasts daemon: \(error)")
            throw ExitCode(Exit.temporary)
        }
        await daemon.waitForTermination()
    }
}

/// The daemon's parts while it runs: resolver, socketmap listeners, metrics, background refresh,
/// signal handling.
final class RunningDaemon: @unchecked Sendable {
    let server: SocketmapServer
    let resolver: PolicyResolver
    let responder: PolicyMapResponder
    let configPath: String?
    var config: DaemonConfig
    var refresher: Task<Void, Never>?
    var metrics: MetricsServer?
    var signalSources: [any DispatchSourceSignal] = []
    let stopped = OneShotEvent()
    var collector: Collector?
    var reporter: Task<Void, Never>?

    init(server: SocketmapServer, resolver: PolicyResolver, responder: PolicyMapResponder, config: DaemonConfig, configPath: String?) {
        self.server = server
        self.resolver = resolver
        self.responder = responder
        self.config = config
        self.configPath = configPath
    }

    static func start(_ config: DaemonConfig, configPath: String?) async throws -> RunningDaemon {
        // Few malloc arenas: a long-running daemon with many threads otherwise keeps freed memory.
        _ = glibcMallopt(-8 /* M_ARENA_MAX */, 2)
        let store = try DaemonRuntime.makeStore(config)
        let resolver = try DaemonRuntime.makeResolver(config, store: store, log: DaemonLog.line)
        let warmed = try await resolver.warm()
        _ = glibcMallocTrim(0)
        let responder = PolicyMapResponder(resolver: resolver, config: config)
        var limits = SocketmapServer.Limits()
        limits.maxConnections = config.maxConnections
        limits.maxRequestLength = config.maxRequestLength
        limits.idleTimeout = .milliseconds(Int64(config.idleTimeout * 1000))
        let latency = LatencyHistogram()
        let server = SocketmapServer(responder: responder, limits: limits, latency: latency)
        let daemon = RunningDaemon(server: server, resolver: resolver, responder: responder, config: config, configPath: configPath)
        var listening: [String] = []
        if let host = config.host, let port = config.port {
            let bound = try await server.listen(host: host, port: port, reusePort: config.reusePort)
            listening.append("\(host):\(bound)")
        }
        if let path = config.path {
            var owner: (uid_t, gid_t)?
            if let spec = config.socketOwner { owner = try Self.owner(spec) }
            try await server.listen(unixPath: path, mode: config.socketMode, owner: owner)
            listening.append("unix:\(path)")
        }
        if let port = config.metricsPort {
            let metrics = MetricsServer(render: {
                MetricsText.render(resolver: resolver, server: server, latency: latency) + (daemon.collector.map { MetricsText.collector($0.snapshot) } ?? "")
            })
            let bound = try await metrics.listen(host: config.metricsHost, port: port)
            daemon.metrics = metrics
            listening.append("metrics http://\(config.metricsHost):\(bound)/metrics")
        }
        let cacheName: String
        switch config.cache {
        case .memory(let size): cacheName = "memory (\(size) entries)"
        case .sqlite(let path): cacheName = "sqlite \(path), \(warmed) valid entries loaded"
        case .postgres: cacheName = "postgres, \(warmed) valid entries loaded"
        }
        if config.collector != nil || config.reporting?.sendDaily == true {
            try daemon.startTLSRPT(config)
        }
        DaemonLog.line("socketmap on \(listening.joined(separator: ", ")); cache \(cacheName)")
        daemon.startRefresher()
        daemon.installSignals()
        return daemon
    }

    /// The libtlsrpt collector and the daily report run (both optional).
    func startTLSRPT(_ config: DaemonConfig) throws {
        let store: SessionStore
        do { store = try SessionStore(url: config.tlsrptDatabase) } catch { throw DaemonRuntime.SetupError(description: "tlsrpt_database: \(error)") }
        if let c = config.collector {
            var settings = Collector.Configuration(path: c.socket)
            settings.mode = c.mode
            settings.owner = c.owner
            settings.group = c.group
            settings.batchSize = c.batchSize
            settings.flushInterval = c.flushInterval
            settings.receiveBuffer = c.receiveBuffer
            settings.quarantine = c.quarantine
            let collector = Collector(configuration: settings, store: store, log: DaemonLog.line)
            try collector.start()
            self.collector = collector
            let qlen = Collector.maxDatagramQueue.map { "net.unix.max_dgram_qlen \($0)\($0 < 512 ? " (raise it to 512 or more: datagrams beyond the queue are lost at the sender)" : "")" } ?? ""
            DaemonLog.line("tlsrpt collector on unix:\(c.socket); database \(store.db.kind.rawValue) \(store.db.location); \(qlen)")
        }
        if let r = config.reporting, r.sendDaily {
            let sender: ReportSender
            do { sender = try r.makeSender(store: store, log: DaemonLog.line) } catch {
                throw DaemonRuntime.SetupError(description: "reporting: \(error)")
            }
            let spread = r.spread
            reporter = Task {
                var preparedThrough = ""
                var delay = Double.random(in: 0...max(spread, 0))
                while !Task.isCancelled {
                    let now = Date().timeIntervalSince1970
                    let today = RFC3339.formatDay(Int64(now))
                    let sinceMidnight = now.truncatingRemainder(dividingBy: 86_400)
                    if preparedThrough < today && sinceMidnight >= delay {
                        do {
                            for day in try store.days() where day < today { try sender.prepare(day: day) }
                            preparedThrough = today
                            delay = Double.random(in: 0...max(spread, 0))
                        } catch { DaemonLog.line("reports: cannot build: \(error)") }
                    }
                    do { _ = try await sender.deliverDue() } catch { DaemonLog.line("reports: delivery: \(error)") }
                    try? await Task.sleep(for: .seconds(60))
                }
            }
        }
    }

    static func owner(_ spec: String) throws -> (uid_t, gid_t) {
        let parts = spec.split(separator: ":", maxSplits: 1).map(String.init)
        guard let pw = getpwnam(parts[0]) else { throw DaemonRuntime.SetupError(description: "owner: no user '\(parts[0])'") }
        var gid = pw.pointee.pw_gid
        if parts.count == 2 {
            guard let gr = getgrnam(parts[1]) else { throw DaemonRuntime.SetupError(description: "owner: no group '\(parts[1])'") }
            gid = gr.pointee.gr_gid
        }
        return (pw.pointee.pw_uid, gid)
    }

    func startRefresher() {
        let resolver = self.resolver
        let enabled = config.proactiveEnabled
        let interval = config.proactiveInterval
        refresher = Task {
            while !Task.isCancelled {
                try? await Task.sleep(for: .milliseconds(Int(interval * 1000)))
                if Task.isCancelled { break }
                if enabled { await resolver.refreshDue() }
                await resolver.flushUse()
            }
        }
    }

    func installSignals() {
        for sig in [SIGTERM, SIGINT, SIGHUP] {
            signal(sig, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            source.setEventHandler { [self] in
                if sig == SIGHUP { reload() } else { stopped.fire() }
            }
            source.resume()
            signalSources.append(source)
        }
    }

    func reload() {
        guard let configPath else {
            DaemonLog.line("SIGHUP: no configuration file to reload")
            return
        }
        do {
            let fresh = try DaemonConfig.load(path: configPath)
            var restart: [String] = []
            if fresh.host != config.host || fresh.port != config.port || fresh.path != config.path { restart.append("listeners") }
            if fresh.cache != config.cache { restart.append("cache") }
            responder.config.withLockedValue { $0 = fresh }
            config = fresh
            DaemonLog.line("SIGHUP: configuration reloaded (\(fresh.zones.count) zones)" + (restart.isEmpty ? "" : "; changes to \(restart.joined(separator: " and ")) take effect after a restart"))
        } catch {
            DaemonLog.line("SIGHUP: configuration not reloaded, keeping the running one: \(error)")
        }
    }

    func waitForTermination() async {
        await stopped.wait()
        DaemonLog.line("stopping: no new connections; answering what was asked (at most \(Int(config.shutdownTimeout)) s)")
        refresher?.cancel()
        reporter?.cancel()
        collector?.stop()
        await server.shutdown(grace: .milliseconds(Int(config.shutdownTimeout * 1000)))
        await metrics?.close()
        await resolver.flushUse()
        DaemonLog.line("stopped")
    }
}

/// A one-shot event to wait for (the stop signal).
final class OneShotEvent: @unchecked Sendable {
    private let lock = NSLock()
    private var fired = false
    private var waiters: [CheckedContinuation<Void, Never>] = []

    func fire() {
        let toResume: [CheckedContinuation<Void, Never>] = lock.withLock {
            fired = true
            defer { waiters.removeAll() }
            return waiters
        }
        toResume.forEach { $0.resume() }
    }

    func wait() async {
        await withCheckedContinuation { c in
            let now: Bool = lock.withLock {
                if fired { return true }
                waiters.append(c)
                return false
            }
            if now { c.resume() }
        }
    }
}

// glibc's malloc tuning (malloc.h is not part of the Glibc module).
@_silgen_name("mallopt") private func glibcMallopt(_ parameter: Int32, _ value: Int32) -> Int32
@_silgen_name("malloc_trim") private func glibcMallocTrim(_ pad: Int) -> Int32
