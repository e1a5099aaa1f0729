import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import PolicyResolver
import Socketmap
import TLSRPTSender

/// Prometheus text exposition of the daemon's counters.
enum MetricsText {
    static func render(resolver: PolicyResolver, server: SocketmapServer, latency: LatencyHistogram) -> String {
        let m = resolver.metrics
        var out = ""
        func counter(_ name: String, _ help: String, _ value: Int) {
            out += "# HELP \(name) \(help)\n# TYPE \(name) counter\n\(name) \(value)\n"
        }
        func gauge(_ name: String, _ help: String, _ value: Int) {
            out += "# HELP \(name) \(help)\n# TYPE \(name) gauge\n\(name) \(value)\n"
        }
        counter("mtasts_lookups_total", "Policy look-ups.", m.lookups.count)
        counter("mtasts_cache_hits_total", "Look-ups answered from the in-memory cache.", m.hits.count)
        counter("mtasts_cache_misses_total", "Look-ups not answered from the in-memory cache.", m.misses.count)
        counter("mtasts_store_hits_total", "Misses answered from the persistent store.", m.storeHits.count)
        counter("mtasts_store_errors_total", "Failures of the persistent store.", m.storeErrors.count)
        counter("mtasts_dns_record_queries_total", "_mta-sts TXT look-ups.", m.dnsQueries.count)
        counter("mtasts_refreshes_total", "Policy fetches by background or proactive refresh.", m.refreshes.count)
        counter("mtasts_refresh_failures_total", "Refreshes that failed (the cached policy was kept).", m.refreshFailures.count)
        counter("mtasts_evictions_total", "Entries dropped as unused or expired.", m.evictions.count)
        out += "# HELP mtasts_fetch_outcomes_total Policy discovery outcomes by result type.\n# TYPE mtasts_fetch_outcomes_total counter\n"
        for (label, value) in m.fetchOutcomes.counts.sorted(by: { $0.key < $1.key }) {
            out += "mtasts_fetch_outcomes_total{result=\"\(label)\"} \(value)\n"
        }
        gauge("mtasts_cached_entries", "Entries in the in-memory cache.", resolver.hotCount)
        gauge("mtasts_connections", "Open socketmap connections.", server.connectionCount)
        counter("mtasts_connections_refused_total", "Connections refused over the limit.", server.refusedConnections)
        let snap = latency.snapshot
        out += "# HELP mtasts_reply_seconds Socketmap reply latency.\n# TYPE mtasts_reply_seconds histogram\n"
        for (bound, count) in zip(latency.bounds, snap.cumulative) {
            out += "mtasts_reply_seconds_bucket{le=\"\(bound)\"} \(count)\n"
        }
        out += "mtasts_reply_seconds_bucket{le=\"+Inf\"} \(snap.total)\nmtasts_reply_seconds_sum \(snap.sum)\nmtasts_reply_seconds_count \(snap.total)\n"
        return out
    }
}

extension MetricsText {
    /// The TLSRPT collector's counters.
    static func collector(_ c: Collector.Counters) -> String {
        var out = ""
        for (name, help, value) in [
            ("mtasts_tlsrpt_datagrams_received_total", "Datagrams received on the TLSRPT socket.", c.received),
            ("mtasts_tlsrpt_datagrams_malformed_total", "Datagrams that were not libtlsrpt results (quarantined).", c.malformed),
            ("mtasts_tlsrpt_datagrams_repaired_total", "Datagrams with bytes that were not UTF-8 (replaced).", c.repairedUTF8),
            ("mtasts_tlsrpt_datagrams_committed_total", "Datagrams stored in the database.", c.committed),
            ("mtasts_tlsrpt_commits_total", "Commits of collected results.", c.commits),
            ("mtasts_tlsrpt_commit_failures_total", "Commits that failed (the results were kept and retried).", c.commitFailures),
        ] {
            out += "# HELP \(name) \(help)\n# TYPE \(name) counter\n\(name) \(value)\n"
        }
        return out
    }
}

/// A minimal HTTP/1 server: GET /metrics, nothing else.
final class MetricsServer: @unchecked Sendable {
    let render: @Sendable () -> String
    var channel: (any Channel)?

    init(render: @escaping @Sendable () -> String) { self.render = render }

    func listen(host: String, port: Int) async throws -> Int {
        let render = self.render
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(MetricsHandler(render: render))
                }
            }
            .bind(host: host, port: port).get()
        self.channel = channel
        return channel.localAddress?.port ?? port
    }

    func close() async { try? await channel?.close() }
}

final class MetricsHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart
    let render: @Sendable () -> String
    var path = ""
    var method = HTTPMethod.GET

    init(render: @escaping @Sendable () -> String) { self.render = render }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            path = head.uri
            method = head.method
        case .body:
            break
        case .end:
            let ok = method == .GET && (path == "/metrics" || path.hasPrefix("/metrics?"))
            let body = ok ? render() : "not found; the metrics are at /metrics\n"
            var headers = HTTPHeaders()
            headers.add(name: "Content-Type", value: ok ? "text/plain; version=0.0.4; charset=utf-8" : "text/plain; charset=utf-8")
            headers.add(name: "Content-Length", value: String(body.utf8.count))
            context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: ok ? .ok : .notFound, headers: headers))), promise: nil)
            context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(string: body)))), promise: nil)
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        }
    }
}
