import Foundation
import Logging
import MTASTSConfig
import NIOConcurrencyHelpers
import ServerSupport
import ServiceLifecycle
import Testing
import TLSRPTReceiver
@testable import WebServer

/// `serve`'s listener itself (Hummingbird with our connection guards) on loopback, driven by raw
/// sockets: idle floods, slow headers, streamed oversized bodies, pipelining past `Connection: close`.
@Suite(.serialized) struct LiveServerTests {
    /// Runs the service's listener with `limits` on 127.0.0.1, port chosen by the kernel.
    func withServer(_ limits: ConnectionLimits, _ body: @Sendable (Int) async throws -> Void) async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("live-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        var config = ServeConfig()
        config.listen = [("127.0.0.1", 0)]
        config.database = dir.appendingPathComponent("reports.db").path
        config.maxCompressed = 64 * 1024
        let service = ReportWebService(config: config, store: try ReportStore(url: config.database))
        let port = NIOLockedValueBox<Int?>(nil)
        let apps = try service.applications(limits: limits, tls: nil) { _, p in port.withLockedValue { $0 = p } }
        let group = ServiceGroup(configuration: .init(services: apps.map { .init(service: $0) }, logger: Logger(label: "live")))
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await group.run() }
            var bound: Int?
            for _ in 0..<500 {
                bound = port.withLockedValue { $0 }
                if bound != nil { break }
                try await Task.sleep(for: .milliseconds(10))
            }
            try await body(try #require(bound))
            await group.triggerGracefulShutdown()
            try await tasks.waitForAll()
        }
    }

    /// The raw-socket side of a test blocks (connect, recv, poll): it runs on threads of its own,
    /// never on the two cooperative threads the server's handlers need.
    static let io = BlockingPool(threads: 4)

    static func blocking<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await io.run(body)
    }

    /// A TCP socket from `source` (any 127.x.y.z) to the server; non-blocking connect.
    static func connect(_ port: Int, from source: String = "127.0.0.1", blocking: Bool = true) -> Int32 {
        // CLOEXEC: helpers the other suites spawn (pg_ctl, postfix) must not inherit 2,000 sockets.
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        var local = sockaddr_in()
        local.sin_family = sa_family_t(AF_INET)
        inet_pton(AF_INET, source, &local.sin_addr)
        _ = withUnsafePointer(to: &local) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        if !blocking { _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) }
        var remote = sockaddr_in()
        remote.sin_family = sa_family_t(AF_INET)
        remote.sin_port = in_port_t(UInt16(port).bigEndian)
        inet_pton(AF_INET, "127.0.0.1", &remote.sin_addr)
        _ = withUnsafePointer(to: &remote) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        var timeout = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        return fd
    }

    static func send(_ fd: Int32, _ text: String) -> Bool {
        let bytes = Array(text.utf8)
        return bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) } == bytes.count
    }

    /// Everything the server sends until it closes (or 10 s of silence).
    static func readAll(_ fd: Int32) -> String {
        var out: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65_536)
        while true {
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n <= 0 { break }
            out += buffer[0..<n]
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// True when the server closed the connection (EOF or reset) within `seconds`.
    static func closedByServer(_ fd: Int32, within seconds: Double) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        var byte: UInt8 = 0
        while Date() < deadline {
            var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            if poll(&p, 1, 100) > 0 {
                let n = recv(fd, &byte, 1, Int32(MSG_DONTWAIT))
                if n == 0 || (n < 0 && errno != EAGAIN) { return true }
            }
        }
        return false
    }

    static func fastLimits() -> ConnectionLimits {
        var limits = ConnectionLimits()
        limits.headerTimeout = .seconds(1)
        limits.idleTimeout = .seconds(1)
        limits.bodyTimeout = .seconds(2)
        return limits
    }

    @Test("2,000 idle connections against a cap of 1,024: closed after the header time-out, and a new client is served") func idleFlood() async throws {
        try await withServer(Self.fastLimits()) { port in
            let (answered, closed) = try await Self.blocking {
                var idle: [Int32] = []
                for i in 0..<2_000 { idle.append(Self.connect(port, from: "127.0.1.\(1 + i / 60)", blocking: false)) }
                defer { idle.forEach { close($0) } }
                usleep(500_000)
                // A new client gets an answer (within the header time-out's turnover).
                let started = Date()
                var answered = false
                while !answered && Date().timeIntervalSince(started) < 30 {
                    let fd = Self.connect(port, from: "127.0.2.1")
                    if Self.send(fd, "GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n") {
                        answered = Self.readAll(fd).hasPrefix("HTTP/1.1 200")
                    }
                    close(fd)
                }
                // The idle ones were closed by the server, none left hanging.
                usleep(3_000_000)
                var closed = 0
                for fd in idle.prefix(200) where Self.closedByServer(fd, within: 15) { closed += 1 }  // generous: a loaded machine accepts the backlog late (two rounds of 1,024)
                return (answered, closed)
            }
            #expect(answered)
            #expect(closed == 200)
        }
    }

    @Test("slow loris: a header trickled a byte at a time is cut off at the header time-out") func slowLoris() async throws {
        try await withServer(Self.fastLimits()) { port in
            let (cut, took) = try await Self.blocking {
                let fd = Self.connect(port)
                defer { close(fd) }
                let started = Date()
                var cut = false
                for byte in "GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".map(String.init) {
                    if !Self.send(fd, byte) || Self.closedByServer(fd, within: 0.2) { cut = true; break }
                }
                return (cut, Date().timeIntervalSince(started))
            }
            #expect(cut)
            #expect(took < 9)
        }
    }

    @Test("a chunked body over the limit gets 413 while it streams") func chunkedTooLarge() async throws {
        try await withServer(Self.fastLimits()) { port in
            let answer = try await Self.blocking {
                let fd = Self.connect(port)
                defer { close(fd) }
                _ = Self.send(fd, "POST /tlsrpt HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\nContent-Type: application/tlsrpt+json\r\n\r\n")
                let chunk = String(repeating: "x", count: 16_384)
                for _ in 0..<8 { guard Self.send(fd, String(chunk.utf8.count, radix: 16) + "\r\n" + chunk + "\r\n") else { break } }
                return Self.readAll(fd)
            }
            #expect(answer.hasPrefix("HTTP/1.1 413"), "\(answer.prefix(200))")
            #expect(answer.contains("larger than 65536 bytes"))
        }
    }

    @Test("Content-Length over the limit: 413 before the body is read") func contentLengthTooLarge() async throws {
        try await withServer(Self.fastLimits()) { port in
            let answer = try await Self.blocking {
                let fd = Self.connect(port)
                defer { close(fd) }
                _ = Self.send(fd, "POST /tlsrpt HTTP/1.1\r\nHost: localhost\r\nContent-Length: 20000000\r\n\r\n{")
                return Self.readAll(fd)
            }
            #expect(answer.hasPrefix("HTTP/1.1 413"))
        }
    }

    @Test("Connection: close with a request pipelined behind it: one answer, then closed") func closeThenPipelined() async throws {
        var limits = Self.fastLimits()
        limits.idleTimeout = .seconds(30)
        limits.headerTimeout = .seconds(30)
        try await withServer(limits) { port in
            let (answer, took) = try await Self.blocking {
                let fd = Self.connect(port)
                defer { close(fd) }
                _ = Self.send(fd, "GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\nGET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
                let started = Date()
                return (Self.readAll(fd), Date().timeIntervalSince(started))
            }
            #expect(answer.components(separatedBy: "HTTP/1.1 200").count == 2, "\(answer)")
            // Closed after the one answer, long before the 30-second time-outs.
            #expect(took < 9)
        }
    }

    @Test("one address cannot take every connection") func perAddressCap() async throws {
        var limits = Self.fastLimits()
        limits.maxPerAddress = 8
        limits.headerTimeout = .seconds(30)
        try await withServer(limits) { port in
            let (refused, otherAnswer) = try await Self.blocking {
                let held = (0..<8).map { _ in Self.connect(port, from: "127.0.3.1") }
                defer { held.forEach { close($0) } }
                usleep(300_000)
                let extra = Self.connect(port, from: "127.0.3.1")
                defer { close(extra) }
                let refused = Self.closedByServer(extra, within: 3)
                let other = Self.connect(port, from: "127.0.3.2")
                defer { close(other) }
                _ = Self.send(other, "GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                return (refused, Self.readAll(other))
            }
            #expect(refused)
            #expect(otherAnswer.hasPrefix("HTTP/1.1 200"))
        }
    }
}
