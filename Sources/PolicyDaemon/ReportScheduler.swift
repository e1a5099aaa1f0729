import Foundation
import Logging
import MTASTSCore
import ServerSupport
import ServiceLifecycle
import TLSRPTSender

/// The sender's daily report run inside `mtasts daemon`: after 00:00 UTC plus a random delay up to
/// `spread` (RFC 8460 §4.1 asks senders to spread), every completed day is built and claimed once;
/// due deliveries (first tries and retries) are attempted every `tick` seconds. Time comes from
/// the injected clock, so a test moves it over midnight; database and sendmail work runs on the
/// blocking pool.
public final class ReportScheduler: Service, @unchecked Sendable {
    let store: SessionStore
    let sender: ReportSender
    let clock: any WallClock
    let spread: Double
    let tick: Double
    let pool: BlockingPool
    let logger: Logger
    let random: @Sendable (Double) -> Double
    /// The last UTC day whose earlier days were built (only this service's task touches it).
    private(set) var preparedThrough = ""
    private var delay: Double

    public init(store: SessionStore, sender: ReportSender, clock: any WallClock = SystemClock(), spread: Double, tick: Double = 60,
                pool: BlockingPool = .shared, logger: Logger = Log.logger("reports"),
                random: @escaping @Sendable (Double) -> Double = { Double.random(in: 0...max($0, 0)) }) {
        self.store = store
        self.sender = sender
        self.clock = clock
        self.spread = spread
        self.tick = tick
        self.pool = pool
        self.logger = logger
        self.random = random
        self.delay = random(spread)
    }

    public struct Pass: Sendable, Equatable {
        /// Days whose reports were built and claimed in this pass.
        public var prepared: [String] = []
        /// Deliveries attempted.
        public var attempts = 0
    }

    /// One pass: build what is due, then try what is due for delivery.
    @discardableResult
    public func pass() async -> Pass {
        var result = Pass()
        let now = clock.now()
        let today = RFC3339.formatDay(Int64(now))
        let sinceMidnight = now - (now / 86_400).rounded(.down) * 86_400
        if preparedThrough < today && sinceMidnight >= delay {
            let store = self.store, sender = self.sender
            do {
                result.prepared = try await pool.run {
                    var days: [String] = []
                    for day in try store.days() where day < today {
                        if !(try sender.prepare(day: day)).isEmpty { days.append(day) }
                    }
                    return days
                }
                preparedThrough = today
                delay = random(spread)
            } catch {
                logger.error("cannot build the reports: \(error)")
            }
        }
        do { result.attempts = try await sender.deliverDue(pool: pool).count } catch {
            logger.error("delivery: \(error)")
        }
        return result
    }

    public func run() async throws {
        try await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                await self.pass()
                try await self.clock.sleep(seconds: self.tick)
            }
        }
    }
}
