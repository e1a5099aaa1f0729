import NIOCore
import NIOPosix

/// The one way blocking calls (libresolv, SQLite, libpq, sendmail, file reads) leave async code:
/// a fixed pool of threads, so at most `threads` such calls run at once and no event loop or
/// cooperative-pool thread ever waits on one.
public final class BlockingPool: Sendable {
    private let pool: NIOThreadPool
    public let threads: Int

    public init(threads: Int) {
        self.threads = max(1, threads)
        pool = NIOThreadPool(numberOfThreads: self.threads)
        pool.start()
    }

    /// The process's pool (4 threads): serve's database work, the daemon's stores and reporter.
    public static let shared = BlockingPool(threads: 4)

    public func run<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await pool.runIfActive(body)
    }

    public func shutdown() async { try? await pool.shutdownGracefully() }
}
