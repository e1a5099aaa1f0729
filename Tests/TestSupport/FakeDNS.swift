import Foundation

/// A minimal DNS responder on UDP 127.0.0.1 for what dnsmasq cannot serve here: answers that a
/// validating resolver vouched for (the AD bit set). Answers TXT questions from `txt` with AD=1;
/// every other question gets NXDOMAIN. One thread, one socket, stopped on deinit.
public final class FakeDNS: @unchecked Sendable {
    public let port: UInt16
    public var server: String { "127.0.0.1:\(port)" }
    private let fd: Int32
    private let thread: Thread

    public init(txt: [String: String]) throws {
        let socketFD = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
        fd = socketFD
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = 0
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        guard withUnsafePointer(to: &addr, { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(socketFD, $0, len) } }) == 0 else {
            throw DNSMasq.Missing(description: "FakeDNS: bind failed")
        }
        _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(socketFD, $0, &len) } }
        port = UInt16(bigEndian: addr.sin_port)
        let records = Dictionary(uniqueKeysWithValues: txt.map { ($0.key.lowercased(), $0.value) })
        thread = Thread {
            var buffer = [UInt8](repeating: 0, count: 1500)
            while true {
                var peer = sockaddr_in()
                var peerLen = socklen_t(MemoryLayout<sockaddr_in>.size)
                let n = buffer.withUnsafeMutableBytes { b in
                    withUnsafeMutablePointer(to: &peer) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { recvfrom(socketFD, b.baseAddress, b.count, 0, $0, &peerLen) } }
                }
                if n <= 0 { return }  // the socket was shut down
                guard let reply = FakeDNS.answer(Array(buffer[0..<n]), records) else { continue }
                _ = reply.withUnsafeBytes { b in
                    withUnsafePointer(to: &peer) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { sendto(socketFD, b.baseAddress, b.count, 0, $0, peerLen) } }
                }
            }
        }
        thread.start()
    }

    static func answer(_ query: [UInt8], _ records: [String: String]) -> [UInt8]? {
        guard query.count > 12 else { return nil }
        var i = 12
        var labels: [String] = []
        while i < query.count, query[i] != 0 {
            let len = Int(query[i])
            guard i + 1 + len <= query.count else { return nil }
            labels.append(String(decoding: query[(i + 1)..<(i + 1 + len)], as: UTF8.self))
            i += 1 + len
        }
        guard i + 5 <= query.count else { return nil }
        let questionEnd = i + 5
        let type = UInt16(query[i + 1]) << 8 | UInt16(query[i + 2])
        let name = labels.joined(separator: ".").lowercased()
        var reply = Array(query[0..<questionEnd])
        reply[2] = 0x81  // QR, RD
        reply[7] = 0
        reply[8] = 0; reply[9] = 0; reply[10] = 0; reply[11] = 0
        if type == 16, let text = records[name] {
            reply[3] = 0xA0  // RA, AD; NOERROR
            reply[6] = 0; reply[7] = 1
            let bytes = Array(text.utf8)
            reply += [0xC0, 0x0C, 0, 16, 0, 1, 0, 0, 0x0E, 0x10, 0, UInt8(bytes.count + 1), UInt8(bytes.count)] + bytes
        } else {
            reply[3] = 0x83  // RA, NXDOMAIN
            reply[6] = 0; reply[7] = 0
        }
        return reply
    }

    deinit {
        shutdown(fd, Int32(SHUT_RDWR))
        close(fd)
    }
}
