import Foundation
import MTASTSCore
import Testing
import TLSRPTSender

/// The collector's socket and quarantine, in process (issue: hostile input, item 5).
@Suite struct CollectorGuardsTests {
    let dir: URL
    init() throws {
        dir = URL(fileURLWithPath: "/tmp/cg-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    }

    static func send(_ bytes: [UInt8], to path: String) {
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: Array(path.utf8) + [0]) }
        _ = bytes.withUnsafeBytes { raw in
            withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { sendto(fd, raw.baseAddress, raw.count, 0, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
            }
        }
    }

    static func datagram(d: String = "victim.example", pr: String = "v=TLSRPTv1; rua=mailto:tlsrpt@victim.example", policyDomain: String = "victim.example") -> [UInt8] {
        Array(#"{"dpv":"1","d":"\#(d)","pr":"\#(pr)","policies":[{"policy-type":9,"policy-domain":"\#(policyDomain)","t":0,"f":0}]}"#.utf8)
    }

    @Test("socket created 0660 (never world-writable); 'd', 'pr' and policy-domain must be what they claim, else quarantined 0600 without following a planted link")
    func socketModeAndQuarantine() throws {
        let store = try SessionStore(url: dir.appendingPathComponent("s.db").path)
        var configuration = Collector.Configuration(socket: dir.appendingPathComponent("c.sock").path)
        configuration.flushInterval = 0.05
        let quarantine = dir.appendingPathComponent("quarantine").path
        configuration.quarantine = quarantine
        // A link planted where the quarantine goes, pointing at a file that must stay untouched.
        let target = dir.appendingPathComponent("target").path
        FileManager.default.createFile(atPath: target, contents: Data("keep\n".utf8))
        try FileManager.default.createSymbolicLink(atPath: quarantine, withDestinationPath: target)
        let collector = Collector(configuration: configuration, store: store)
        let oldMask = umask(0)  // the collector must not depend on the caller's umask
        defer { umask(oldMask) }
        try collector.start()
        var st = stat()
        #expect(stat(configuration.socket, &st) == 0)
        #expect(st.st_mode & 0o777 == 0o660)

        Self.send(Self.datagram(d: #"evil.example\r\nBcc: x@y.example"#), to: configuration.socket)
        Self.send(Self.datagram(pr: "rua=mailto:x@y.example; v=whatever"), to: configuration.socket)
        Self.send(Self.datagram(policyDomain: "a b.example"), to: configuration.socket)
        Self.send(Self.datagram(), to: configuration.socket)
        let deadline = Date().addingTimeInterval(10)
        while collector.snapshot.committed + collector.snapshot.malformed < 4 && Date() < deadline { usleep(20_000) }
        #expect(collector.snapshot.malformed == 3)
        #expect(collector.snapshot.committed == 1)
        #expect(try String(contentsOfFile: target, encoding: .utf8) == "keep\n")

        // Without the link, the quarantine is a new file, 0600, one line per bad datagram.
        try FileManager.default.removeItem(atPath: quarantine)
        Self.send(Self.datagram(d: "-bad-.example"), to: configuration.socket)
        while collector.snapshot.malformed < 4 && Date() < deadline { usleep(20_000) }
        collector.stop()
        #expect(stat(quarantine, &st) == 0)
        #expect(st.st_mode & 0o777 == 0o600)
        #expect(try String(contentsOfFile: quarantine, encoding: .utf8).split(separator: "\n").count == 1)
        let reports = try store.buildReports(day: RFC3339.formatDay(Int64(Date().timeIntervalSince1970)), identity: SenderIdentity(organization: "o", contact: "mailto:a@b.example", submitter: "b.example", from: "a@b.example"))
        #expect(reports.map(\.domain) == ["victim.example"])
    }

    @Test("a burst is read in batches (recvmmsg) and every datagram is counted once; a large one in between is read whole, one over the limit is refused; the reader rests only where the queue allows")
    func batchedReads() throws {
        let store = try SessionStore(url: dir.appendingPathComponent("b.db").path)
        var configuration = Collector.Configuration(socket: dir.appendingPathComponent("b.sock").path)
        configuration.flushInterval = 0.05
        let collector = Collector(configuration: configuration, store: store)
        try collector.start()
        // Blocking sends: nothing is lost at the sender, whatever the kernel's queue length.
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
        defer { close(fd) }
        var size: Int32 = 1 << 20
        _ = setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &size, socklen_t(MemoryLayout<Int32>.size))
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: Array(configuration.socket.utf8) + [0]) }
        func send(_ bytes: [UInt8]) -> Int {
            bytes.withUnsafeBytes { raw in
                withUnsafePointer(to: &address) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { sendto(fd, raw.baseAddress, raw.count, 0, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
                }
            }
        }
        var sent = 0
        for k in 0..<700 {
            if k == 350 {
                // 200,000 bytes (JSON white space): within the limit, read whole and counted.
                var big = Self.datagram()
                big.insert(contentsOf: Array(repeating: UInt8(ascii: " "), count: 200_000), at: 1)
                #expect(send(big) == big.count)
                // 300,000 bytes: over it, cut at the slot and refused.
                var over = Self.datagram()
                over.insert(contentsOf: Array(repeating: UInt8(ascii: " "), count: 300_000), at: 1)
                #expect(send(over) == over.count)
            }
            if send(Self.datagram(d: "d\(k % 7).example", pr: "v=TLSRPTv1; rua=mailto:tlsrpt@d\(k % 7).example", policyDomain: "d\(k % 7).example")) > 0 { sent += 1 }
        }
        #expect(sent == 700)
        let deadline = Date().addingTimeInterval(20)
        while collector.snapshot.committed + collector.snapshot.malformed < 702 && Date() < deadline { usleep(20_000) }
        collector.stop()
        #expect(collector.snapshot.received == 702)
        #expect(collector.snapshot.committed == 701)
        #expect(collector.snapshot.malformed == 1)
        let reports = try store.buildReports(day: RFC3339.formatDay(Int64(Date().timeIntervalSince1970)), identity: SenderIdentity(organization: "o", contact: "mailto:a@b.example", submitter: "b.example", from: "a@b.example"))
        #expect(reports.count == 8)
        // Identical datagrams are counted and folded in together: each domain has its 100.
        #expect(reports.map { "\($0.domain) \($0.report.totalSuccessful + $0.report.totalFailed)" }.sorted()
                == (0..<7).map { "d\($0).example 100" } + ["victim.example 1"])
        #expect(Collector.restNanoseconds(queueLength: 10) == 0)
        #expect(Collector.restNanoseconds(queueLength: 512) == 1_024_000)
        #expect(Collector.restNanoseconds(queueLength: 64) == 0)
        #expect(Collector.restNanoseconds(queueLength: 100) == 200_000)
        #expect(Collector.restNanoseconds(queueLength: 10_000) == 2_000_000)
        #expect(Collector.restNanoseconds(queueLength: nil) == 0)
    }
}
