import ArgumentParser
import Foundation
import MTASTSCore
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import Storage
import TLSRPTReceiver

struct ServeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Host MTA-STS policies and receive TLS reports over HTTPS; answer questions about them.",
        discussion: """
            One service for a domain owner:
              GET  https://mta-sts.DOMAIN/.well-known/mta-sts.txt   the policy of every configured domain,
                   chosen by the Host header (and the certificate by SNI); anything else on those hosts is 404
              POST /tlsrpt                                        TLS reports (application/tlsrpt+gzip or
                   +json, and the mislabelled forms real senders use): 201 stored, 200 already stored,
                   400 not a report, 413 too large, 503 database unavailable (the sender retries)
              GET  /api/reports, /api/reports/ID, /api/summary, /api/readiness/DOMAIN   the stored data
                   as JSON (query parameters domain, since, until, limit, days, min_days, tolerance)
              GET  /healthz
            Without a tls section it speaks plain HTTP (put it behind a reverse proxy that terminates
            TLS for mta-sts.DOMAIN). With no --config: 127.0.0.1:8080, SQLite /var/lib/mtasts/reports.db.

            Signals: SIGTERM/SIGINT stop after the requests in progress.
            Exit codes: 0 stopped; 2 bad configuration or arguments; 3 the database or a listener failed.
            """)

    @Option(help: ArgumentHelp("Configuration file (YAML); see contrib/mtasts-serve.yml.", valueName: "FILE"))
    var config: String?

    @Option(help: ArgumentHelp("Database (overrides the configuration and MTASTS_DATABASE).", valueName: "URL"))
    var database: String?

    @Option(help: ArgumentHelp("Listen on HOST:PORT instead of the configured addresses.", valueName: "HOST:PORT"))
    var listen: [String] = []

    @Flag(name: .customLong("check-config"), help: "Read the configuration, report errors, exit.")
    var checkConfig = false

    func run() async throws {
        var config: ServeConfig
        do {
            config = try config_()
        } catch let error as ServeConfig.ConfigError {
            Console.err("\(error)")
            throw ExitCode(Exit.usage)
        }
        if !listen.isEmpty {
            config.listen = []
            for item in listen {
                guard let address = ServeConfig.address(item) else {
                    Console.err("--listen: \(ServeConfig.addressError(item))")
                    throw ExitCode(Exit.usage)
                }
                config.listen.append(address)
            }
        }
        // The same order as `mtasts reports`: --database, MTASTS_DATABASE, the file, the default.
        if let database { config.database = database } else if let env = ProcessInfo.processInfo.environment["MTASTS_DATABASE"], !env.isEmpty {
            config.database = env
        }
        let tls: TLSConfiguration?
        do { tls = try Self.tlsConfiguration(config.certificates) } catch {
            Console.err("\(error)")
            throw ExitCode(Exit.usage)
        }
        if checkConfig {
            Console.out("configuration OK: \(config.policies.count) policy domain(s), \(config.certificates.count) certificate(s), listening on \(config.listen.map { "\($0.host):\($0.port)" }.joined(separator: ", "))")
            return
        }
        let store: ReportStore
        do { store = try ReportStore(url: config.database) } catch {
            Console.err("\(error)")
            throw ExitCode(Exit.temporary)
        }
        let ingestor = ReportIngestor(store: store, maxSize: config.maxDecompressed, dkimPolicy: .ignore, lookup: { _ in nil })
        let pool = NIOThreadPool(numberOfThreads: 4)
        pool.start()
        let app = WebApp(config: config, store: store, ingestor: ingestor, pool: pool)
        var channels: [any Channel] = []
        for address in config.listen {
            do {
                let channel = try await app.bind(host: address.host, port: address.port, tls: tls)
                channels.append(channel)
                Console.err("serving on \(address.host):\(channel.localAddress?.port ?? address.port) (\(tls == nil ? "http" : "https")); \(config.policies.count) policy domain(s); reports at \(config.reportPath); database \(store.db.kind.rawValue) \(store.db.location)")
            } catch {
                Console.err("cannot listen on \(address.host):\(address.port): \(error)")
                for c in channels { try? await c.close() }
                throw ExitCode(Exit.temporary)
            }
        }
        let stop = OneShotEvent()
        let signals = [SIGTERM, SIGINT].map { sig -> any DispatchSourceSignal in
            signal(sig, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            source.setEventHandler { stop.fire() }
            source.resume()
            return source
        }
        await stop.wait()
        withExtendedLifetime(signals) {}  // the sources must live until the signal came
        for c in channels { try? await c.close() }
        try? await pool.shutdownGracefully()
        Console.err("stopped")
    }

    private func config_() throws -> ServeConfig {
        guard let path = config else { return ServeConfig() }
        return try ServeConfig.load(path: path)
    }

    /// One TLS configuration; the certificate is chosen per handshake by SNI (the first is the default).
    static func tlsConfiguration(_ certificates: [ServeConfig.Certificate]) throws -> TLSConfiguration? {
        guard let first = certificates.first else { return nil }
        var byHost: [String: NIOSSLContextConfigurationOverride] = [:]
        var defaultOverride = NIOSSLContextConfigurationOverride()
        for (i, c) in certificates.enumerated() {
            let chain: [NIOSSLCertificate], key: NIOSSLPrivateKey
            do { chain = try NIOSSLCertificate.fromPEMFile(c.certificate) } catch { throw ValidationError("tls: cannot read the certificate \(c.certificate): \(error)") }
            do { key = try NIOSSLPrivateKey(file: c.key, format: .pem) } catch { throw ValidationError("tls: cannot read the key \(c.key): \(error)") }
            var o = NIOSSLContextConfigurationOverride()
            o.certificateChain = chain.map { .certificate($0) }
            o.privateKey = .privateKey(key)
            if i == 0 { defaultOverride = o }
            for h in c.hosts where byHost[h] == nil { byHost[h] = o }
        }
        let chain = try NIOSSLCertificate.fromPEMFile(first.certificate)
        var tls = TLSConfiguration.makeServerConfiguration(certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(try NIOSSLPrivateKey(file: first.key, format: .pem)))
        tls.minimumTLSVersion = .tlsv12
        let table = byHost, fallback = defaultOverride
        tls.sslContextCallback = { values, promise in
            let name = values.serverHostname?.lowercased() ?? ""
            promise.succeed(table[name] ?? fallback)
        }
        return tls
    }
}

/// The HTTP side of `mtasts serve`: routing by Host, the policy host, the report endpoint, the API.
final class WebApp: Sendable {
    let config: ServeConfig
    let store: ReportStore
    let ingestor: ReportIngestor
    let pool: NIOThreadPool
    /// Policy bodies by host name (`mta-sts.DOMAIN`).
    let policyHosts: [String: [UInt8]]

    init(config: ServeConfig, store: ReportStore, ingestor: ReportIngestor, pool: NIOThreadPool) {
        self.config = config
        self.store = store
        self.ingestor = ingestor
        self.pool = pool
        var hosts: [String: [UInt8]] = [:]
        for (domain, text) in config.policies { hosts["mta-sts." + domain] = Array(text.utf8) }
        policyHosts = hosts
    }

    func bind(host: String, port: Int, tls: TLSConfiguration?) async throws -> any Channel {
        let sslContext = try tls.map { try NIOSSLContext(configuration: $0) }
        let app = self
        return try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .serverChannelOption(.backlog, value: 256)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let sslContext { try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: sslContext)) }
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
                    try channel.pipeline.syncOperations.addHandler(WebHandler(app: app))
                }
            }
            .bind(host: host, port: port).get()
    }

    struct Response: Sendable {
        var status: HTTPResponseStatus
        var contentType = "application/json"
        var body: [UInt8]
        var headers: [(String, String)] = []
        var close = false

        static func json(_ status: HTTPResponseStatus, _ value: JSONValue) -> Response {
            Response(status: status, body: value.serializedBytes(pretty: true) + [0x0A])
        }

        static func error(_ status: HTTPResponseStatus, _ message: String, close: Bool = false) -> Response {
            var r = json(status, .object([JSONMember("error", .string(message))]))
            r.close = close
            return r
        }

        static func text(_ status: HTTPResponseStatus, _ text: String) -> Response {
            Response(status: status, contentType: "text/plain; charset=utf-8", body: Array(text.utf8))
        }
    }

    /// The host part of a Host header, lowercased, without port or trailing dot.
    static func hostName(_ header: String?) -> String {
        guard var h = header?.lowercased().trimmingCharacters(in: .whitespaces) else { return "" }
        if h.hasPrefix("[") { return h }
        if let colon = h.lastIndex(of: ":") { h = String(h[..<colon]) }
        if h.hasSuffix(".") { h.removeLast() }
        return h
    }

    /// Requests that need no database: answered on the event loop. Nil: hand to `slow`.
    func fast(method: HTTPMethod, host: String, path: String) -> Response? {
        if host.hasPrefix("mta-sts.") {
            // A policy host serves its policy and nothing else (RFC 8461 §3.3).
            guard let body = policyHosts[host] else { return .text(.notFound, "no MTA-STS policy is served for \(host)\n") }
            guard path == "/.well-known/mta-sts.txt" else { return .text(.notFound, "not found\n") }
            guard method == .GET || method == .HEAD else { return .text(.methodNotAllowed, "GET only\n") }
            return Response(status: .ok, contentType: "text/plain", body: body)
        }
        if path == "/healthz" { return .text(.ok, "ok\n") }
        if path == config.reportPath {
            return method == .POST ? nil : .error(.methodNotAllowed, "POST a TLS report (application/tlsrpt+gzip or application/tlsrpt+json) here")
        }
        if path.hasPrefix("/api/") { return method == .GET ? nil : .error(.methodNotAllowed, "the API is read-only (GET)") }
        if path == "/" {
            return .text(.ok, "mtasts serve: POST TLS reports to \(config.reportPath); JSON at /api/reports, /api/summary, /api/readiness/DOMAIN\n")
        }
        return .error(.notFound, "not found")
    }

    /// Requests that touch the database: run on the thread pool.
    func slow(method: HTTPMethod, path: String, query: [String: String], body: [UInt8], authorization: String?) -> Response {
        if path == config.reportPath {
            do {
                let outcome = try ingestor.ingest(body: body)
                if let reason = outcome.notAReport { return .error(outcome.tooLarge ? .payloadTooLarge : .badRequest, "not a TLS report: \(reason)") }
                let created = !outcome.stored.isEmpty
                return .json(created ? .created : .ok, .object([
                    JSONMember("stored", .array(outcome.stored.map { .int($0) })),
                    JSONMember("already-stored", .array(outcome.duplicates.map { .int($0) })),
                ]))
            } catch {
                var r = Response.error(.serviceUnavailable, "the report could not be stored now; try again later")
                r.headers.append(("Retry-After", "300"))
                Console.err("report not stored: \(error)")
                return r
            }
        }
        if let token = config.apiToken, authorization != "Bearer \(token)" {
            var r = Response.error(.unauthorized, "the API needs Authorization: Bearer TOKEN")
            r.headers.append(("WWW-Authenticate", "Bearer"))
            return r
        }
        for key in ["since", "until"] {
            if let v = query[key], RFC3339.parse(v + "T00:00:00Z") == nil { return .error(.badRequest, "\(key) must be a day such as 2026-11-30") }
        }
        let filter = ReportFilter(domain: query["domain"], since: query["since"], until: query["until"])
        do {
            switch path {
            case "/api/reports":
                let limit = query["limit"].flatMap(Int.init) ?? 100
                guard (1...10_000).contains(limit) else { return .error(.badRequest, "limit must be from 1 to 10000") }
                return .json(.ok, .array(try store.list(filter, limit: limit).map(\.json)))
            case "/api/summary":
                return .json(.ok, try store.summary(filter).json)
            default:
                if path.hasPrefix("/api/reports/") {
                    let key = String(path.dropFirst("/api/reports/".count)).removingPercentEncoding ?? ""
                    guard let found = try store.show(key) else { return .error(.notFound, "no stored report \(key)") }
                    guard case .object(var members) = found.row.json else { return .error(.internalServerError, "bad row") }
                    members.append(JSONMember("report", (try? JSONParser.parse(Array(found.normalized.utf8)).value) ?? .null))
                    return .json(.ok, .object(members))
                }
                if path.hasPrefix("/api/readiness/") {
                    let domain = String(path.dropFirst("/api/readiness/".count)).lowercased()
                    guard !domain.isEmpty else { return .error(.badRequest, "name the domain: /api/readiness/DOMAIN") }
                    let days = query["days"].flatMap(Int.init) ?? 14
                    let minDays = query["min_days"].flatMap(Int.init) ?? 7
                    let tolerance = query["tolerance"].flatMap(Double.init) ?? 0
                    guard days >= 1, minDays >= 0, (0...100).contains(tolerance) else { return .error(.badRequest, "days ≥ 1, min_days ≥ 0, tolerance 0–100") }
                    let until = query["until"] ?? RFC3339.formatDay(Int64(Date().timeIntervalSince1970))
                    return .json(.ok, try store.readiness(domain: domain, until: until, days: days, minDays: minDays, tolerance: tolerance / 100).json)
                }
                return .error(.notFound, "no such API path")
            }
        } catch {
            Console.err("API \(path): \(error)")
            return .error(.serviceUnavailable, "the database is not available")
        }
    }
}

final class WebHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    let app: WebApp
    var head: HTTPRequestHead?
    var body: [UInt8] = []
    /// The request was answered early (too large); the rest of its body is dropped.
    var refused = false

    init(app: WebApp) { self.app = app }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let h):
            head = h
            body.removeAll(keepingCapacity: false)
            refused = false
            if h.method == .POST, let length = h.headers.first(name: "content-length").flatMap(Int.init), length > app.config.maxCompressed {
                refuseTooLarge(context: context)
            }
        case .body(var buffer):
            guard !refused else { return }
            if body.count + buffer.readableBytes > app.config.maxCompressed {
                refuseTooLarge(context: context)
                return
            }
            body += buffer.readBytes(length: buffer.readableBytes) ?? []
        case .end:
            guard !refused, let head else { return }
            self.head = nil
            let components = head.uri.split(separator: "?", maxSplits: 1)
            let path = components.first.map(String.init) ?? "/"
            let host = WebApp.hostName(head.headers.first(name: "host"))
            if let response = app.fast(method: head.method, host: host, path: path) {
                respond(context: context, response, keepAlive: head.isKeepAlive, headOnly: head.method == .HEAD)
                return
            }
            var query: [String: String] = [:]
            if components.count == 2 {
                for pair in components[1].split(separator: "&") {
                    let kv = pair.split(separator: "=", maxSplits: 1)
                    let key = String(kv[0]).removingPercentEncoding ?? String(kv[0])
                    query[key] = kv.count == 2 ? (String(kv[1]).replacingOccurrences(of: "+", with: " ").removingPercentEncoding ?? "") : ""
                }
            }
            let app = self.app, bytes = body, method = head.method, authorization = head.headers.first(name: "authorization")
            body = []
            let keepAlive = head.isKeepAlive
            let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
            app.pool.runIfActive(eventLoop: context.eventLoop) {
                app.slow(method: method, path: path, query: query, body: bytes, authorization: authorization)
            }.whenComplete { result in
                let (handler, context) = bound.value
                switch result {
                case .success(let response): handler.respond(context: context, response, keepAlive: keepAlive, headOnly: false)
                case .failure: handler.respond(context: context, .error(.serviceUnavailable, "shutting down"), keepAlive: false, headOnly: false)
                }
            }
        }
    }

    private func refuseTooLarge(context: ChannelHandlerContext) {
        refused = true
        body = []
        respond(context: context, .error(.payloadTooLarge, "the report is larger than \(app.config.maxCompressed) bytes", close: true), keepAlive: false, headOnly: false)
    }

    func respond(context: ChannelHandlerContext, _ response: WebApp.Response, keepAlive: Bool, headOnly: Bool) {
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: response.contentType)
        headers.add(name: "Content-Length", value: String(response.body.count))
        headers.add(name: "Cache-Control", value: "no-store")
        for (k, v) in response.headers { headers.add(name: k, value: v) }
        let close = response.close || !keepAlive
        if close { headers.add(name: "Connection", value: "close") }
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: response.status, headers: headers))), promise: nil)
        if !headOnly { context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(bytes: response.body)))), promise: nil) }
        let done = context.writeAndFlush(wrapOutboundOut(.end(nil)))
        if close {
            let channel = context.channel
            done.whenComplete { _ in channel.close(promise: nil) }
        }
    }
}
