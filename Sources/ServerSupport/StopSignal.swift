import Foundation

/// SIGINT/SIGTERM for a command that loops (`check --watch`, `reports ingest --idle`): the wait
/// between rounds ends early and the loop stops after the round in progress.
public final class StopSignal: @unchecked Sendable {
    private let lock = NSLock()
    private var stopped = false
    private var sources: [any DispatchSourceSignal] = []

    public init() {
        for sig in [SIGINT, SIGTERM] {
            signal(sig, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            source.setEventHandler { [weak self] in self?.stop() }
            source.resume()
            sources.append(source)
        }
    }

    private func stop() { lock.withLock { stopped = true } }
    public var isStopped: Bool { lock.withLock { stopped } }

    /// Waits `seconds` or until a signal; true when stopped.
    public func wait(seconds: Double) async -> Bool {
        let end = Date().addingTimeInterval(seconds)
        while !isStopped && Date() < end {
            try? await Task.sleep(for: .milliseconds(Int64(min(200, max(1, end.timeIntervalSinceNow * 1000)))))
        }
        return isStopped
    }
}
