import Foundation
import Metrics
import Prometheus

/// swift-metrics for every role, exported by swift-prometheus. `bootstrap()` once per process (the
/// command line does it); `/metrics` renders `text()`. Counters made before the bootstrap (in tests
/// that never call it) go to swift-metrics' no-op handler.
public enum MetricsExport {
    public static let registry = PrometheusCollectorRegistry()
    nonisolated(unsafe) private static var done = false
    private static let lock = NSLock()

    public static func bootstrap() {
        lock.withLock {
            guard !done else { return }
            done = true
            var factory = PrometheusMetricsFactory(registry: registry)
            // Socketmap replies and HTTP requests: sub-millisecond to seconds.
            factory.defaultDurationHistogramBuckets = [.microseconds(100), .microseconds(250), .microseconds(500), .milliseconds(1),
                                                       .milliseconds(2), .milliseconds(5), .milliseconds(10), .milliseconds(50),
                                                       .milliseconds(100), .milliseconds(500), .seconds(1), .seconds(5)]
            MetricsSystem.bootstrap(factory)
        }
    }

    nonisolated(unsafe) private static var collectors: [@Sendable () -> Void] = []

    /// Runs before each export: gauges that are read, not pushed (cache entries, connections).
    public static func onCollect(_ body: @escaping @Sendable () -> Void) {
        lock.withLock { collectors.append(body) }
    }

    /// The Prometheus text exposition (format 0.0.4) of every metric made so far.
    public static func text() -> [UInt8] {
        for collect in lock.withLock({ collectors }) { collect() }
        var buffer: [UInt8] = []
        buffer.reserveCapacity(8_192)
        registry.emit(into: &buffer)
        return buffer
    }

    public static let contentType = "text/plain; version=0.0.4; charset=utf-8"
}
