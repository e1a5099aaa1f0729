import CDatagram
import Foundation
import Logging
import Metrics
import ServerSupport
import MTASTSConfig
import MTASTSCore
import Storage

/// The libtlsrpt receiver: a unix datagram socket Postfix 3.10+ writes one datagram per TLS
/// handshake to (`smtp_tlsrpt_socket_name`). A dedicated reader thread only receives and queues
/// (the sender uses MSG_DONTWAIT: whatever the kernel queue cannot hold is lost at the sender);
/// a second thread decodes, aggregates in memory and commits every `batchSize` datagrams or
/// `flushInterval` seconds. A kill -9 loses at most what was received since the last commit.
public final class Collector: @unchecked Sendable {
    /// The `collector:` section of the daemon's configuration, as it is read.
    public typealias Configuration = CollectorSettings

    public struct Counters: Sendable {
        public var received = 0
        public var malformed = 0
        public var repairedUTF8 = 0
        public var committed = 0
        public var commits = 0
        public var commitFailures = 0
        /// Datagrams dropped because a memory bound was reached (the queue, the failed-commit backlog).
        public var dropped = 0
    }

    let configuration: Configuration
    let store: SessionStore
    let logger: Logger
    /// Seconds since 1970, injectable (the day of receipt decides the report a session goes in).
    let clock: any WallClock
    func now() -> Double { clock.now() }

    private var fd: Int32 = -1
    private let lock = NSCondition()
    private var queue: [(bytes: [UInt8], time: Double)] = []
    private var queuedBytes = 0
    private var stopping = false
    private var counters = Counters()
    private let exported = ExportedCounters()
    private var reader: Thread?
    private var writer: Thread?
    private let done = DispatchSemaphore(value: 0)
    /// Malformed datagrams are logged at most once per 10 s (the quarantine and the counter keep
    /// them all).
    private let malformedWarnings = WarningLimiter(perWindow: 1, window: 10)
    private var quarantineSecond: Int64 = 0
    private var quarantineLines = 0

    public init(configuration: Configuration, store: SessionStore, logger: Logger = Logger(label: "collector"),
                clock: any WallClock = SystemClock()) {
        self.configuration = configuration
        self.store = store
        self.logger = logger
        self.clock = clock
    }

    public var snapshot: Counters {
        lock.lock()
        defer { lock.unlock() }
        return counters
    }

    public struct SocketError: Error, CustomStringConvertible {
        public var description: String
    }

    /// Binds the socket (replacing a stale one), sets its mode and owner, starts both threads.
    public func start() throws {
        let path = configuration.socket
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let capacity = MemoryLayout.size(ofValue: address.sun_path)
        guard path.utf8.count < capacity else { throw SocketError(description: "socket path \(path) is longer than \(capacity - 1) bytes") }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: Array(path.utf8) + [0])
        }
        fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
        guard fd >= 0 else { throw SocketError(description: "socket: \(String(cString: strerror(errno)))") }
        _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
        var size = Int32(configuration.receiveBuffer)
        if setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, socklen_t(MemoryLayout<Int32>.size)) != 0 {
            _ = setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
        }
        // A stale socket from a previous run is replaced; any other file is not.
        var st = stat()
        if lstat(path, &st) == 0 {
            guard (st.st_mode & S_IFMT) == S_IFSOCK else {
                close(fd)
                throw SocketError(description: "\(path) exists and is not a socket")
            }
            unlink(path)
        }
        // The socket file is created under a umask that grants no more than the configured mode
        // (never world-writable by default, not even until the chmod below). The umask is the
        // process's for the length of one bind(2); the daemon creates its other files (cache,
        // databases) before the collector starts.
        let previousMask = umask(~configuration.mode & 0o777)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        umask(previousMask)
        guard bound == 0 else {
            let why = String(cString: strerror(errno))
            close(fd)
            throw SocketError(description: "cannot bind \(path): \(why)")
        }
        chmod(path, configuration.mode)
        if configuration.owner != nil || configuration.group != nil {
            var uid = uid_t.max, gid = gid_t.max
            if let owner = configuration.owner {
                guard let pw = getpwnam(owner) else { throw SocketError(description: "unknown user \(owner)") }
                uid = pw.pointee.pw_uid
            }
            if let group = configuration.group {
                guard let gr = getgrnam(group) else { throw SocketError(description: "unknown group \(group)") }
                gid = gr.pointee.gr_gid
            }
            if chown(path, uid, gid) != 0 { throw SocketError(description: "chown \(path): \(String(cString: strerror(errno)))") }
        }
        let reader = Thread { [self] in readLoop() }
        reader.name = "tlsrpt-reader"
        reader.qualityOfService = .userInteractive
        let writer = Thread { [self] in writeLoop() }
        writer.name = "tlsrpt-writer"
        self.reader = reader
        self.writer = writer
        reader.start()
        writer.start()
    }

    /// The kernel's queue length for unix datagram sockets (a sender's datagram beyond it is lost).
    public static var maxDatagramQueue: Int? {
        (try? String(contentsOfFile: "/proc/sys/net/unix/max_dgram_qlen", encoding: .utf8)).flatMap { Int($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
    }

    /// Queued datagrams that wake the writer before its flush interval.
    static let wakeWriterAt = 64

    /// Datagrams taken by one recvmmsg(2).
    static let readBatch = 32

    /// How long the reader may rest after a drain that found only a few datagrams, given the
    /// kernel's queue length: no longer than a burst of 250,000 datagrams a second (over twice what
    /// a do-nothing reader takes here) needs to fill half of the queue, at most 2 ms, and not at
    /// all where that is under 200 µs (the kernel's default queue of 10). Resting lets the
    /// datagrams of moderate rates be taken a few dozen per wake-up instead of one (a wake-up
    /// costs more than the datagram's own work) without letting the queue fill.
    public static func restNanoseconds(queueLength: Int?) -> Int {
        guard let q = queueLength else { return 0 }
        let ns = min(2_000_000, q * 2_000)  // q / 2 datagrams at 250,000/s
        return ns >= 200_000 ? ns : 0
    }

    private func readLoop() {
        // One recvmmsg(2) per wake-up: it blocks for the first datagram (MSG_WAITFORONE) and takes
        // what else is queued, up to `readBatch`. The buffers are mapped, not zeroed: only the pages
        // a datagram fills become resident, and those of a large one are given back after it.
        let slot = TLSRPTDatagram.maxSize + 1
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let stride = (slot + page - 1) / page * page  // page-aligned: a slot is given back on its own
        let batch = Self.readBatch
        let region = mmap(nil, stride * batch, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
        guard let region, region != UnsafeMutableRawPointer(bitPattern: -1) else {
            logger.critical("collector: cannot map its receive buffers: \(String(cString: strerror(errno)))")
            done.signal()
            return
        }
        defer { munmap(region, stride * batch) }
        var lengths = [UInt32](repeating: 0, count: batch)
        let queueLength = Self.maxDatagramQueue
        let rest = Self.restNanoseconds(queueLength: queueLength)
        // Resting is for moderate rates: above q × 50 datagrams a second (25,600/s with a queue of
        // 512) every wake-up finds a batch anyway, and an oversleep would only risk the queue.
        let restBelowRate = Double(queueLength ?? 0) * 50
        var lastWake = DispatchTime.now().uptimeNanoseconds
        var received: [(bytes: [UInt8], time: Double)] = []
        received.reserveCapacity(256)
        let bytes = region.assumingMemoryBound(to: UInt8.self)
        while true {
            var closed = false
            while received.count < 256 {
                let n = mtasts_recv_batch(fd, bytes, stride, slot, UInt32(batch), received.isEmpty ? 1 : 0, &lengths)
                if n < 0 {
                    if errno == EINTR { continue }
                    if errno == EAGAIN || errno == EWOULDBLOCK { break }
                    closed = true  // the socket was shut down (stop) or broke
                    break
                }
                if n == 0 { closed = true; break }
                let t = now()
                for k in 0..<Int(n) {
                    // A datagram longer than the slot arrives cut to it: one byte over the limit,
                    // refused by the decoder as too long.
                    let length = min(Int(lengths[k]), slot)
                    let base = region + k * stride
                    received.append((Array(UnsafeRawBufferPointer(start: base, count: length)), t))
                    if length > 16_384 { _ = madvise(base, stride, Int32(MADV_DONTNEED)) }
                }
                if Int(n) < batch { break }
            }
            lock.lock()
            if stopping {
                // Shutting down: a zero-length read is the shutdown, not a datagram.
                received.removeAll { $0.bytes.isEmpty }
                closed = true
            }
            // Bounded: past the entries or bytes allowed, datagrams are dropped and counted (the
            // writer is behind: a slow disk, a long commit), never an unbounded heap.
            var dropped = 0
            for item in received {
                if queue.count >= configuration.maxQueued || queuedBytes + item.bytes.count > configuration.maxQueuedBytes {
                    dropped += 1
                } else {
                    queue.append(item)
                    queuedBytes += item.bytes.count
                }
            }
            counters.received += received.count
            counters.dropped += dropped
            exported.received.increment(by: received.count)
            if dropped > 0 { exported.dropped.increment(by: dropped) }  // (counters changed here directly, not through bump)
            // The writer is woken for a handful of datagrams, not for each one (two context
            // switches a datagram at moderate rates); fewer wait for its flush interval.
            if queue.count >= Self.wakeWriterAt { lock.signal() }
            lock.unlock()
            let woke = DispatchTime.now().uptimeNanoseconds
            let rate = Double(received.count) * 1e9 / Double(max(1, woke &- lastWake))
            lastWake = woke
            let few = received.count < Self.readBatch && rate < restBelowRate
            received.removeAll(keepingCapacity: true)
            if closed { break }
            if few && rest > 0 {
                var pause = timespec(tv_sec: 0, tv_nsec: rest)
                _ = nanosleep(&pause, nil)
            }
        }
    }

    private func writeLoop() {
        // The writer's latency does not matter (it has the queue); the reader's does (the kernel's
        // queue is short): the writer yields the CPU to it under load (nice 10, this thread only).
        _ = mtasts_nice_this_thread(10)
        var batch = SessionBatch()
        var lastCommit = now()
        var local: [(bytes: [UInt8], time: Double)] = []
        // Byte-identical datagrams are common (every successful session to a domain looks the
        // same): the rows of the last few thousand are kept, for the day they were made for.
        // Within one hand-over the same bytes are counted first and folded in once.
        var prepared: [DatagramBytes: SessionBatch.Prepared] = [:]
        var preparedBytes = 0
        var counts: [DatagramBytes: Int] = [:]
        var day = (number: Int64.min, text: "")
        while true {
            lock.lock()
            let deadline = Date(timeIntervalSinceNow: configuration.flushInterval)
            while queue.isEmpty && !stopping {
                if !lock.wait(until: deadline) { break }
            }
            swap(&local, &queue)
            queuedBytes = 0
            let finishing = stopping && local.isEmpty
            lock.unlock()
            var repaired = 0
            var droppedNow = 0
            var pending = 0  // datagrams counted, not yet folded in
            func fold() {
                for (bytes, n) in counts {
                    if let p = prepared[bytes] {
                        batch.add(p, count: n)
                        if p.repairedUTF8 { repaired += n }
                        continue
                    }
                    do {
                        let p = SessionBatch.Prepared(try TLSRPTDatagram.decode(bytes.bytes), day: day.text)
                        batch.add(p, count: n)
                        if p.repairedUTF8 { repaired += n }
                        if prepared.count >= 4_096 || preparedBytes + bytes.bytes.count > 4 << 20 {
                            prepared.removeAll(keepingCapacity: true)
                            preparedBytes = 0
                        }
                        prepared[bytes] = p
                        preparedBytes += bytes.bytes.count
                    } catch {
                        for _ in 0..<n { malformed(bytes.bytes, error.reason) }
                    }
                }
                counts.removeAll(keepingCapacity: true)
                pending = 0
            }
            for item in local {
                // While commits fail the batch is kept; past the backlog bound new datagrams are dropped.
                if batch.datagrams + pending >= configuration.maxBacklog {
                    droppedNow += 1
                    continue
                }
                let seconds = Int64(item.time)
                let number = seconds >= 0 ? seconds / 86_400 : (seconds - 86_399) / 86_400
                if number != day.number {
                    fold()  // what came before, on its own day
                    day = (number, RFC3339.formatDay(seconds))
                    prepared.removeAll(keepingCapacity: true)  // (rows are made for one day)
                    preparedBytes = 0
                }
                counts[DatagramBytes(item.bytes), default: 0] += 1
                pending += 1
            }
            fold()
            if repaired > 0 { bump { $0.repairedUTF8 += repaired } }
            if droppedNow > 0 {
                bump { $0.dropped += droppedNow }
                logger.error("\(droppedNow) datagram(s) dropped: \(batch.datagrams) are waiting for the database (collector.max_backlog)")
            }
            local.removeAll(keepingCapacity: true)
            let t = now()
            if !batch.isEmpty && (batch.datagrams >= configuration.batchSize || t - lastCommit >= configuration.flushInterval || finishing) {
                do {
                    try store.commit(batch)
                    let n = batch.datagrams
                    bump { $0.committed += n; $0.commits += 1 }
                    batch.clear()
                } catch {
                    // Kept in memory and retried with what follows: nothing is dropped while the database is away.
                    bump { $0.commitFailures += 1 }
                    logger.error("commit of \(batch.datagrams) datagram(s) failed, kept for the next try: \(error)")
                }
                lastCommit = t
            }
            if finishing {
                if !batch.isEmpty { logger.error("stopping with \(batch.datagrams) datagram(s) not stored (the database is unavailable)") }
                break
            }
        }
        done.signal()
    }

    private func bump(_ change: (inout Counters) -> Void) {
        lock.lock()
        let before = counters
        change(&counters)
        let after = counters
        lock.unlock()
        exported.add(after, minus: before)
    }

    /// The counters as swift-metrics (the daemon's `/metrics`).
    struct ExportedCounters: Sendable {
        let received = Metrics.Counter(label: "mtasts_tlsrpt_datagrams_received_total")
        let malformed = Metrics.Counter(label: "mtasts_tlsrpt_datagrams_malformed_total")
        let repaired = Metrics.Counter(label: "mtasts_tlsrpt_datagrams_repaired_total")
        let committed = Metrics.Counter(label: "mtasts_tlsrpt_datagrams_committed_total")
        let commits = Metrics.Counter(label: "mtasts_tlsrpt_commits_total")
        let commitFailures = Metrics.Counter(label: "mtasts_tlsrpt_commit_failures_total")
        let dropped = Metrics.Counter(label: "mtasts_tlsrpt_datagrams_dropped_total")

        func add(_ a: Counters, minus b: Counters) {
            if a.received != b.received { received.increment(by: a.received - b.received) }
            if a.malformed != b.malformed { malformed.increment(by: a.malformed - b.malformed) }
            if a.repairedUTF8 != b.repairedUTF8 { repaired.increment(by: a.repairedUTF8 - b.repairedUTF8) }
            if a.committed != b.committed { committed.increment(by: a.committed - b.committed) }
            if a.commits != b.commits { commits.increment(by: a.commits - b.commits) }
            if a.commitFailures != b.commitFailures { commitFailures.increment(by: a.commitFailures - b.commitFailures) }
            if a.dropped != b.dropped { dropped.increment(by: a.dropped - b.dropped) }
        }
    }

    private func malformed(_ bytes: [UInt8], _ reason: String) {
        bump { $0.malformed += 1 }
        let t = now()
        malformedWarnings.warn(logger, "malformed datagram (\(bytes.count) bytes): \(reason)", now: t)
        if let path = configuration.quarantine { quarantine(bytes, reason, at: t, path: path) }
    }

    /// One line in the quarantine file: opened without following a link, created 0600, not past
    /// its size cap, at most `quarantineRate` lines a second (the rest are only counted).
    private func quarantine(_ bytes: [UInt8], _ reason: String, at t: Double, path: String) {
        let second = Int64(t)
        if second != quarantineSecond { quarantineSecond = second; quarantineLines = 0 }
        guard quarantineLines < configuration.quarantineRate else { return }
        quarantineLines += 1
        // O_NONBLOCK: a FIFO planted at the path cannot stall the writer thread.
        let fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, 0o600)
        guard fd >= 0 else { return }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG, Int(st.st_size) < configuration.quarantineMaxBytes else { return }
        let hex = bytes.map { String(format: "%02x", $0) }.joined()
        let safeReason = String(reason.unicodeScalars.map { $0.value < 0x20 || $0.value == 0x7F ? " " : Character($0) })
        let line = Array("\(RFC3339.format(Int64(t))) \(safeReason) \(hex)\n".utf8)
        _ = line.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
    }

    /// Stops receiving, commits what is in memory, removes the socket.
    public func stop() {
        lock.lock()
        stopping = true
        lock.signal()
        lock.unlock()
        shutdown(fd, Int32(SHUT_RDWR))
        close(fd)
        unlink(configuration.socket)
        done.wait()
    }
}

extension Collector.SocketError: MTASTSErrorConvertible {
    public var mtastsError: MTASTSError { MTASTSError(.setup, description, temporary: true) }
}

/// A datagram's bytes as a dictionary key: hashed once, as one block (an array of bytes hashes
/// each byte on its own), compared with memcmp; the collector looks each up twice.
struct DatagramBytes: Hashable {
    let bytes: [UInt8]
    let hash: Int
    init(_ bytes: [UInt8]) {
        self.bytes = bytes
        var hasher = Hasher()
        bytes.withUnsafeBytes { hasher.combine(bytes: $0) }
        hash = hasher.finalize()
    }
    func hash(into hasher: inout Hasher) { hasher.combine(hash) }
    static func == (a: DatagramBytes, b: DatagramBytes) -> Bool {
        a.hash == b.hash && a.bytes.count == b.bytes.count
            && a.bytes.withUnsafeBytes { x in b.bytes.withUnsafeBytes { y in x.count == 0 || memcmp(x.baseAddress!, y.baseAddress!, x.count) == 0 } }
    }
}
