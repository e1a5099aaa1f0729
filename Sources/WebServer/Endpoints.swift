import Hummingbird
import HummingbirdCore
import ServiceLifecycle
import Logging
import MTASTSConfig
import MTASTSCore
import NIOCore
import NIOSSL
import ServerSupport

extension ConnectionLimits {
    /// The limits `mtasts serve`'s configuration sets.
    public init(_ config: ServeConfig) {
        self.init()
        maxConnections = config.maxConnections
        maxPerAddress = config.maxPerAddress
        idleTimeout = .milliseconds(Int64(config.idleTimeout * 1000))
        headerTimeout = .milliseconds(Int64(config.headerTimeout * 1000))
        bodyTimeout = .milliseconds(Int64(config.bodyTimeout * 1000))
        handshakeTimeout = .milliseconds(Int64(config.handshakeTimeout * 1000))
    }
}

/// The Prometheus endpoint of a role without a web server of its own (`mtasts daemon`):
/// GET /metrics, nothing else, on the same HTTP stack and limits as `serve`.
public enum MetricsEndpoint {
    public static func router() -> Router<BasicRequestContext> {
        let router = Router(context: BasicRequestContext.self)
        router.add(middleware: ErrorBodyMiddleware())
        router.get("/metrics") { _, _ in Reply.metrics() }
        return router
    }

    public static func application(host: String, port: Int, logger: Logger,
                                   onListening: @escaping @Sendable (Int) -> Void = { _ in }) -> some Service {
        var limits = ConnectionLimits()
        limits.maxConnections = 64
        return Application(router: router(), server: .guarded(limits: limits, sslContext: nil, logger: logger),
                           configuration: ApplicationConfiguration(address: .hostname(host, port: port),
                                                                   availableConnectionsDelegate: MaximumAvailableConnections(limits.maxConnections, logger: logger)),
                           onServerRunning: { channel in onListening(channel.localAddress?.port ?? port) },
                           logger: logger)
    }
}

/// `mtasts serve`'s TLS: one configuration; the certificate is chosen per handshake by SNI (the
/// first is the default for names it does not know). TLS 1.2 at least.
public enum ServeTLS {
    public struct Failure: Error, CustomStringConvertible {
        public var description: String
    }

    public static func configuration(_ certificates: [ServeConfig.Certificate]) throws(Failure) -> TLSConfiguration? {
        guard !certificates.isEmpty else { return nil }
        var byHost: [String: NIOSSLContextConfigurationOverride] = [:]
        var defaultOverride = NIOSSLContextConfigurationOverride()
        var first: (chain: [NIOSSLCertificate], key: NIOSSLPrivateKey)?
        for (i, c) in certificates.enumerated() {
            let chain: [NIOSSLCertificate], key: NIOSSLPrivateKey
            do { chain = try NIOSSLCertificate.fromPEMFile(c.certificate) } catch { throw Failure(description: "tls: cannot read the certificate \(c.certificate): \(error)") }
            do { key = try NIOSSLPrivateKey(file: c.key, format: .pem) } catch { throw Failure(description: "tls: cannot read the key \(c.key): \(error)") }
            var o = NIOSSLContextConfigurationOverride()
            o.certificateChain = chain.map { .certificate($0) }
            o.privateKey = .privateKey(key)
            if i == 0 {
                defaultOverride = o
                first = (chain, key)
            }
            for h in c.hosts where byHost[h] == nil { byHost[h] = o }
        }
        var tls = TLSConfiguration.makeServerConfiguration(certificateChain: first!.chain.map { .certificate($0) }, privateKey: .privateKey(first!.key))
        tls.minimumTLSVersion = .tlsv12
        let table = byHost, fallback = defaultOverride
        tls.sslContextCallback = { values, promise in
            promise.succeed(table[values.serverHostname?.lowercased() ?? ""] ?? fallback)
        }
        return tls
    }
}

extension ServeTLS.Failure: MTASTSErrorConvertible {
    public var mtastsError: MTASTSError { MTASTSError(.configuration, description) }
}
