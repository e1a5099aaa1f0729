import Foundation

/// A minimal DNS responder on UDP 127.0.0.1 for what dnsmasq cannot serve here: answers that a
/// validating resolver vouched for (the AD bit set), and answers that change, fail or come late
/// while a test runs. Names it does not know get NXDOMAIN. One thread, one socket, stopped on
/// deinit.
public final class FakeDNS: @unchecked Sendable {
    public let port: UInt16
    public var server: String { "\(address):\(port)" }
    public let address: String
    private let fd: Int32
    private let thread: Thread

    /// What it answers; changed by a test while it runs.
    public struct Zone: Sendable {
        public var records: [Record]
        /// Names answered SERVFAIL.
        public var servfail: Set<String> = []
        /// Names answered without the AD bit (an unsigned zone).
        public var unsigned: Set<String> = []
        /// Names answered only after this many seconds.
        public var delay: [String: Double] = [:]
        public init(records: [Record]) { self.records = records }
    }
    private final class Box: @unchecked Sendable {
        let lock = NSLock()
        var zone: Zone
        var asked: [String] = []
        init(_ zone: Zone) { self.zone = zone }
        func read() -> Zone { lock.lock(); defer { lock.unlock() }; return zone }
    }
    private let box: Box

    /// Every question asked, as "TYPE name" (1 A, 15 MX, 16 TXT, 52 TLSA…), in order.
    public var asked: [String] { box.lock.lock(); defer { box.lock.unlock() }; return box.asked }

    /// Replaces what it answers.
    public func update(_ change: (inout Zone) -> Void) {
        box.lock.lock()
        defer { box.lock.unlock() }
        change(&box.zone)
    }

    /// A record it serves: owner name, type and RDATA in wire form.
    public struct Record: Sendable {
        public var name: String
        public var type: UInt16
        public var rdata: [UInt8]
        public init(name: String, type: UInt16, rdata: [UInt8]) { self.name = name; self.type = type; self.rdata = rdata }

        public static func txt(_ name: String, _ text: String) -> Record {
            Record(name: name, type: 16, rdata: [UInt8(text.utf8.count)] + Array(text.utf8))
        }
        public static func a(_ name: String, _ address: String) -> Record {
            Record(name: name, type: 1, rdata: address.split(separator: ".").map { UInt8($0)! })
        }
        public static func mx(_ name: String, _ preference: UInt16, _ exchange: String) -> Record {
            Record(name: name, type: 15, rdata: [UInt8(preference >> 8), UInt8(preference & 0xFF)] + FakeDNS.wireName(exchange))
        }
        public static func tlsa(_ name: String, usage: UInt8, selector: UInt8, matching: UInt8, data: [UInt8]) -> Record {
            Record(name: name, type: 52, rdata: [usage, selector, matching] + data)
        }
    }

    static func wireName(_ name: String) -> [UInt8] {
        name.split(separator: ".").flatMap { [UInt8($0.utf8.count)] + Array($0.utf8) } + [0]
    }

    public convenience init(txt: [String: String]) throws {
        try self.init(records: txt.map { Record.txt($0.key, $0.value) })
    }

    /// Serves `records` with the AD bit on `address:port` (port 0: any free one; 53 for a
    /// Postfix that reads /etc/resolv.conf).
    public init(records list: [Record], address: String = "127.0.0.1", port wanted: UInt16 = 0) throws {
        self.address = address
        let box = Box(Zone(records: list))
        self.box = box
        let socketFD = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
        fd = socketFD
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = wanted.bigEndian
        addr.sin_addr.s_addr = inet_addr(address)
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        guard withUnsafePointer(to: &addr, { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(socketFD, $0, len) } }) == 0 else {
            throw DNSMasq.Missing(description: "FakeDNS: bind failed")
        }
        _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(socketFD, $0, &len) } }
        port = UInt16(bigEndian: addr.sin_port)
        thread = Thread {
            var buffer = [UInt8](repeating: 0, count: 1500)
            while true {
                var peer = sockaddr_in()
                var peerLen = socklen_t(MemoryLayout<sockaddr_in>.size)
                let n = buffer.withUnsafeMutableBytes { b in
                    withUnsafeMutablePointer(to: &peer) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { recvfrom(socketFD, b.baseAddress, b.count, 0, $0, &peerLen) } }
                }
                if n <= 0 { return }  // the socket was shut down
                let zone = box.read()
                guard let (name, type, reply) = FakeDNS.answer(Array(buffer[0..<n]), zone) else { continue }
                // A question longer than the header and one question carries EDNS (an OPT record).
                let edns = n > 12 + FakeDNS.wireName(name).count + 4 ? " +EDNS" : ""
                box.lock.lock(); box.asked.append("\(type) \(name)\(edns)"); box.lock.unlock()
                let send: @Sendable () -> Void = { [peer, peerLen] in
                    var to = peer
                    _ = reply.withUnsafeBytes { b in
                        withUnsafePointer(to: &to) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { sendto(socketFD, b.baseAddress, b.count, 0, $0, peerLen) } }
                    }
                }
                if let delay = zone.delay[name] {
                    DispatchQueue.global().asyncAfter(deadline: .now() + delay, execute: send)
                } else {
                    send()
                }
            }
        }
        thread.start()
    }

    static func answer(_ query: [UInt8], _ zone: Zone) -> (String, UInt16, [UInt8])? {
        let records = Dictionary(grouping: zone.records, by: { $0.name.lowercased() })
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
        if zone.servfail.contains(name) {
            reply[3] = 0x82  // RA, SERVFAIL
            reply[6] = 0; reply[7] = 0
        } else if let known = records[name] {
            let matching = known.filter { $0.type == type }
            reply[3] = zone.unsigned.contains(name) ? 0x80 : 0xA0  // RA, AD unless unsigned; NOERROR (NODATA when nothing matches)
            reply[6] = 0; reply[7] = UInt8(matching.count)
            for r in matching {
                reply += [0xC0, 0x0C, UInt8(type >> 8), UInt8(type & 0xFF), 0, 1, 0, 0, 0x0E, 0x10, UInt8(r.rdata.count >> 8), UInt8(r.rdata.count & 0xFF)] + r.rdata
            }
        } else {
            reply[3] = 0x83  // RA, NXDOMAIN
            reply[6] = 0; reply[7] = 0
        }
        return (name, type, reply)
    }

    deinit {
        shutdown(fd, Int32(SHUT_RDWR))
        close(fd)
    }
}
