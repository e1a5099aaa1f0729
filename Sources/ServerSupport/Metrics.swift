import Atomics
import Foundation
import Metrics
import Prometheus

/// swift-metrics for every role, exported by swift-prometheus. `bootstrap()` once per process (the
/// command line does it); `/metrics` renders `text()`. Counters made before the bootstrap (in tests
/// that never call it) go to swift-metrics' no-op handler.
public enum MetricsExport {
    public static let registry = PrometheusCollectorRegistry()
    /// Socketmap replies and HTTP requests: sub-millisecond to seconds.
    public static let latencyBounds: [Duration] = [.microseconds(100), .microseconds(250), .microseconds(500), .milliseconds(1),
                                                   .milliseconds(2), .milliseconds(5), .milliseconds(10), .milliseconds(50),
                                                   .milliseconds(100), .milliseconds(500), .seconds(1), .seconds(5)]
    nonisolated(unsafe) private static var done = false
    private static let lock = NSLock()

    public static func bootstrap() {
        lock.withLock {
            guard !done else { return }
            done = true
            var factory = PrometheusMetricsFactory(registry: registry)
            factory.defaultDurationHistogramBuckets = latencyBounds
            MetricsSystem.bootstrap(factory)
        }
    }

    nonisolated(unsafe) private static var collectors: [@Sendable () -> Void] = []

    /// Runs before each export: gauges that are read, not pushed (cache entries, connections).
    public static func onCollect(_ body: @escaping @Sendable () -> Void) {
        lock.withLock { collectors.append(body) }
    }

    nonisolated(unsafe) private static var histograms: [AtomicHistogram] = []

    /// Exports `histogram` beside the registry's metrics (replacing one of the same label).
    public static func register(_ histogram: AtomicHistogram) {
        lock.withLock {
            histograms.removeAll { $0.label == histogram.label }
            histograms.append(histogram)
        }
    }

    /// The Prometheus text exposition (format 0.0.4) of every metric made so far.
    public static func text() -> [UInt8] {
        for collect in lock.withLock({ collectors }) { collect() }
        var buffer: [UInt8] = []
        buffer.reserveCapacity(8_192)
        registry.emit(into: &buffer)
        for h in lock.withLock({ histograms }) { h.emit(into: &buffer) }
        return buffer
    }

    public static let contentType = "text/plain; version=0.0.4; charset=utf-8"
}

/// A latency histogram for a hot path: buckets, sum and count are atomics (relaxed adds), so
/// recording takes no lock that other threads contend on (swift-prometheus' histogram locks on
/// every observation). Rendered in the Prometheus text format by `MetricsExport.text()`.
public final class AtomicHistogram: Sendable {
    public let label: String
    /// Upper bounds in nanoseconds, ascending (+Inf is implicit).
    let bounds: [Int64]
    let buckets: [ManagedAtomic<Int>]
    let count = ManagedAtomic<Int>(0)
    let sumNanoseconds = ManagedAtomic<Int>(0)

    public init(label: String, bounds: [Duration] = MetricsExport.latencyBounds) {
        self.label = label
        self.bounds = bounds.map { $0.components.seconds * 1_000_000_000 + $0.components.attoseconds / 1_000_000_000 }
        buckets = self.bounds.map { _ in ManagedAtomic<Int>(0) }
    }

    public func record(nanoseconds: Int64) {
        count.wrappingIncrement(ordering: .relaxed)
        sumNanoseconds.wrappingIncrement(by: Int(nanoseconds), ordering: .relaxed)
        if let i = bounds.firstIndex(where: { nanoseconds <= $0 }) { buckets[i].wrappingIncrement(ordering: .relaxed) }
    }

    public var total: Int { count.load(ordering: .relaxed) }

    func emit(into buffer: inout [UInt8]) {
        var text = "# TYPE \(label) histogram\n"
        var cumulative = 0
        for (i, bound) in bounds.enumerated() {
            cumulative += buckets[i].load(ordering: .relaxed)
            text += "\(label)_bucket{le=\"\(Double(bound) / 1e9)\"} \(cumulative)\n"
        }
        let n = count.load(ordering: .relaxed)
        text += "\(label)_bucket{le=\"+Inf\"} \(n)\n"
        text += "\(label)_sum \(Double(sumNanoseconds.load(ordering: .relaxed)) / 1e9)\n"
        text += "\(label)_count \(n)\n"
        buffer += Array(text.utf8)
    }
}
