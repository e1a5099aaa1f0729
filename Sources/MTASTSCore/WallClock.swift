import Foundation

/// The one clock of the project: seconds since the Unix epoch and sleeping, injected wherever time
/// decides something (cache expiry, refresh, the day a session counts in, the daily report run,
/// retries), so the tests move it instead of waiting.
public protocol WallClock: Sendable {
    func now() -> Double
    /// Returns after `seconds` of this clock's time (or throws CancellationError).
    func sleep(seconds: Double) async throws
}

public struct SystemClock: WallClock {
    public init() {}
    public func now() -> Double { Date().timeIntervalSince1970 }
    public func sleep(seconds: Double) async throws {
        try await Task.sleep(nanoseconds: UInt64(max(0, seconds) * 1e9))
    }
}

/// A clock that moves only when told to (tests). Sleepers wake when `advance` passes their time.
public final class ManualClock: WallClock, @unchecked Sendable {
    private let lock = NSLock()
    private var current: Double
    private var sleepers: [(id: UInt64, deadline: Double, continuation: CheckedContinuation<Void, any Error>)] = []
    private var nextID: UInt64 = 0

    public init(_ start: Double = 1_800_000_000) { current = start }
    public func now() -> Double { lock.withLock { current } }

    public func advance(_ seconds: Double) {
        let woken: [CheckedContinuation<Void, any Error>] = lock.withLock {
            current += seconds
            let due = sleepers.filter { $0.deadline <= current }
            sleepers.removeAll { $0.deadline <= current }
            return due.map(\.continuation)
        }
        for c in woken { c.resume() }
    }

    /// Moves to an absolute time (never backwards).
    public func set(_ time: Double) { advance(max(0, time - now())) }

    /// How many tasks sleep on this clock now (tests wait for a loop to reach its sleep).
    public var sleeperCount: Int { lock.withLock { sleepers.count } }

    public func sleep(seconds: Double) async throws {
        let id: UInt64 = lock.withLock { nextID += 1; return nextID }
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (c: CheckedContinuation<Void, any Error>) in
                let now: Bool = lock.withLock {
                    if Task.isCancelled { return true }
                    if seconds <= 0 { return true }
                    sleepers.append((id, current + seconds, c))
                    return false
                }
                if now {
                    if Task.isCancelled { c.resume(throwing: CancellationError()) } else { c.resume() }
                }
            }
        } onCancel: {
            let c: CheckedContinuation<Void, any Error>? = lock.withLock {
                guard let i = sleepers.firstIndex(where: { $0.id == id }) else { return nil }
                return sleepers.remove(at: i).continuation
            }
            c?.resume(throwing: CancellationError())
        }
    }
}
