import Dispatch
import Foundation
import Hummingbird
import HummingbirdCore
import HummingbirdTLS
import Logging
import NIOConcurrencyHelpers
import NIOSSL

/// Runs jobs on a serial dispatch queue of its own, outside Swift's cooperative pool. The test
/// HTTP servers run on it (with every connection's child task: executor preference is inherited),
/// so a test that blocks cooperative threads while a child process talks to the server (the
/// end-to-end suites do) can never starve it.
final class QueueExecutor: TaskExecutor, @unchecked Sendable {
    let queue: DispatchQueue
    init(label: String) { queue = DispatchQueue(label: label) }
    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        queue.async { job.runSynchronously(on: self.asUnownedTaskExecutor()) }
    }
}

/// An HTTP(S) server for tests on the project's HTTP stack (Hummingbird), on one loopback address
/// and port, for the owner's lifetime. Started synchronously: the initializer returns once the
/// server listens.
public final class HTTPTestServer: @unchecked Sendable {
    public let address: String
    public let port: Int
    let task: Task<Void, any Error>
    let stopped = DispatchSemaphore(value: 0)

    public struct StartFailure: Error, CustomStringConvertible {
        public var description: String
    }

    /// `leaf` (certificate and key, PEM) makes it HTTPS.
    public init(address: String, port: Int, leaf: TestCA.Leaf?, router: Router<BasicRequestContext>) throws {
        self.address = address
        self.port = port
        var logger = Logger(label: "test-http")
        logger.logLevel = .critical
        let server: HTTPServerBuilder
        if let leaf {
            let cert = try NIOSSLCertificate(bytes: Array(leaf.certificatePEM.utf8), format: .pem)
            let key = try NIOSSLPrivateKey(bytes: Array(leaf.keyPEM.utf8), format: .pem)
            server = try .tls(.http1(), tlsConfiguration: .makeServerConfiguration(certificateChain: [.certificate(cert)], privateKey: .privateKey(key)))
        } else {
            server = .http1()
        }
        let listening = DispatchSemaphore(value: 0)
        let app = Application(router: router, server: server,
                              configuration: .init(address: .hostname(address, port: port), reuseAddress: true),
                              onServerRunning: { _ in listening.signal() }, logger: logger)
        let stopped = self.stopped
        let failure = NIOLockedValueBox<String?>(nil)
        task = Task(executorPreference: QueueExecutor(label: "test-http-\(port)")) {
            defer { stopped.signal(); listening.signal() }
            do { try await app.runService(gracefulShutdownSignals: []) } catch {
                failure.withLockedValue { $0 = "\(error)" }
                throw error
            }
        }
        guard listening.wait(timeout: .now() + 10) == .success, failure.withLockedValue({ $0 }) == nil else {
            task.cancel()
            throw StartFailure(description: "the test HTTP server on \(address):\(port) did not start: \(failure.withLockedValue { $0 } ?? "not listening within 10 s")")
        }
    }

    deinit {
        task.cancel()
        _ = stopped.wait(timeout: .now() + 5)
    }
}
