import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOPosix
@testable import ServerSupport
import Testing

@Suite struct LogFormatTests {
    final class Lines: Sendable {
        let lines = NIOLockedValueBox<[String]>([])
        var all: [String] { lines.withLockedValue { $0 } }
    }

    func logger(journald: Bool, level: Logger.Level = .info) -> (Logger, Lines) {
        let sink = Lines()
        let logger = Logger(label: "serve") { label in
            LineLogHandler(label: label, level: level, journald: journald, sink: { line in sink.lines.withLockedValue { $0.append(line) } })
        }
        return (logger, sink)
    }

    @Test("one line per event: time, level, component, message, sorted metadata") func lineFormat() throws {
        let (logger, sink) = logger(journald: false)
        logger.info("serving on 127.0.0.1:8080", metadata: ["b": "2", "a": "1"])
        logger.debug("not shown at info")
        let line = try #require(sink.all.first)
        #expect(sink.all.count == 1)
        #expect(line.range(of: #"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ info serve: serving on 127.0.0.1:8080 a=1 b=2\n$"#, options: .regularExpression) != nil, "\(line)")
    }

    @Test("outside text cannot forge a log line: CR, LF and control characters are escaped") func injection() throws {
        let (logger, sink) = logger(journald: false)
        logger.warning("report from evil.example\n2026-01-01T00:00:00Z info serve: forged\r\u{1B}[31m", metadata: ["peer": "a\nb"])
        let line = try #require(sink.all.first)
        #expect(line.filter { $0 == "\n" }.count == 1)
        #expect(line.contains("evil.example\\n2026-01-01T00:00:00Z info serve: forged\\r\\x1b[31m"))
        #expect(line.contains("peer=a\\nb"))
    }

    @Test("under systemd: the syslog priority, no time stamp") func journald() throws {
        let (logger, sink) = logger(journald: true, level: .debug)
        logger.error("cannot bind")
        logger.debug("detail")
        #expect(sink.all == ["<3>error serve: cannot bind\n", "<7>debug serve: detail\n"])
        #expect(Log.level("WARNING") == .warning)
        #expect(Log.level("loud") == nil)
    }
}

@Suite struct BlockingPoolTests {
    @Test("at most `threads` blocking calls at once; results and errors come back") func bounded() async throws {
        let pool = BlockingPool(threads: 2)
        let running = NIOLockedValueBox((now: 0, peak: 0))
        try await withThrowingTaskGroup(of: Int.self) { group in
            for i in 0..<8 {
                group.addTask {
                    try await pool.run {
                        running.withLockedValue { $0.now += 1; $0.peak = max($0.peak, $0.now) }
                        usleep(50_000)
                        running.withLockedValue { $0.now -= 1 }
                        return i
                    }
                }
            }
            var sum = 0
            for try await i in group { sum += i }
            #expect(sum == 28)
        }
        #expect(running.withLockedValue { $0.peak } == 2)
        #expect(pool.startedThreads == 2)
        struct Boom: Error {}
        await #expect(throws: Boom.self) { try await pool.run { throw Boom() } }
        await pool.shutdown()
        #expect(pool.startedThreads == 0)
        await #expect(throws: NIOThreadPoolError.ThreadPoolInactive.self) { try await pool.run { 1 } }
    }

    @Test("threads start when work needs them, not before: one at a time needs one thread")
    func lazy() async throws {
        let pool = BlockingPool(threads: 64)
        #expect(pool.startedThreads == 0)
        for i in 0..<20 { #expect(try await pool.run { i * 2 } == i * 2) }
        #expect(pool.startedThreads == 1)
        // Work queued behind a blocked thread gets a thread of its own.
        let gate = NIOLockedValueBox((running: false, open: false))
        async let blocked: Void = pool.run {
            gate.withLockedValue { $0.running = true }
            while !gate.withLockedValue({ $0.open }) { usleep(1_000) }
        }
        while !gate.withLockedValue({ $0.running }) { try await Task.sleep(for: .milliseconds(1)) }
        #expect(try await pool.run { 7 } == 7)
        gate.withLockedValue { $0.open = true }
        try await blocked
        #expect(pool.startedThreads == 2)
        await pool.shutdown()
    }
}

@Suite struct FileReaderTests {
    @Test("a file over the limit is refused, not read whole; lines come with their offsets") func files() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("lines-\(UUID().uuidString.prefix(6))").path
        try "one\ntwo\r\nthree".write(toFile: path, atomically: true, encoding: .utf8)
        #expect(try InputFiles.read(path, maxSize: 100) == Array("one\ntwo\r\nthree".utf8))
        #expect(throws: InputFiles.Failure.self) { try InputFiles.read(path, maxSize: 5) }
        #expect(throws: InputFiles.Failure.self) { try InputFiles.read(path + ".missing", maxSize: 5) }
        let fd = open(path, O_RDONLY)
        defer { close(fd) }
        var reader = LineReader(fd: fd, offset: 0)
        var lines: [(String, Int64)] = []
        while let (line, start) = reader.next() { lines.append((String(decoding: line, as: UTF8.self), start)) }
        #expect(lines.map(\.0) == ["one\n", "two\r\n", "three"])
        #expect(lines.map(\.1) == [0, 4, 9])
    }
}

@Suite struct ParallelBatchesTests {
    @Test("results reach `each` in input order, batch by batch, whatever the jobs and however uneven the work")
    func inputOrder() {
        for jobs in [1, 2, 3, 8] {
            for count in [0, 1, 5, 300, 1_000] {
                var seen: [Int] = []
                var batches = 0
                ParallelBatches.map(Array(0..<count), jobs: jobs, batchSize: 64, transform: { (i: Int) -> Int in
                    if i % 7 == 0 { usleep(200) }  // uneven work
                    return i * 2
                }) { outputs in
                    #expect(outputs.count <= 64)
                    seen += outputs
                    batches += 1
                }
                #expect(seen == (0..<count).map { $0 * 2 }, "jobs \(jobs), count \(count)")
                #expect(batches == (count + 63) / 64, "jobs \(jobs), count \(count)")
            }
        }
    }
}

@Suite struct WarningLimiterTests {
    @Test("at most perWindow lines a window; the rest are counted and said in the next line logged")
    func limits() {
        let limiter = WarningLimiter(perWindow: 2, window: 10)
        let logger = Logger(label: "test")
        #expect(limiter.warn(logger, "a", now: 100) == "a")
        #expect(limiter.warn(logger, "b", now: 101) == "b")
        #expect(limiter.warn(logger, "c", now: 102) == nil)
        #expect(limiter.warn(logger, "d", now: 109.9) == nil)
        #expect(limiter.warn(logger, "e", now: 110) == "e (2 more like it not logged before this)")
        #expect(limiter.warn(logger, "f", now: 111) == "f")
        #expect(limiter.warn(logger, "g", now: 112) == nil)
        #expect(limiter.warn(logger, "h", now: 500) == "h (1 more like it not logged before this)")
    }
}
