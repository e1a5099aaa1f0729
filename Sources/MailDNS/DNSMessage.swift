/// A DNS response in wire format (RFC 1035 §4), parsed strictly: every length and pointer is
/// checked against the message, and name decompression follows at most 64 pointers.
public struct DNSMessage: Sendable {
    public struct Record: Sendable, Equatable {
        public var name: String
        public var type: UInt16
        public var ttl: UInt32
        /// The record data, with names already decompressed for the types this library reads.
        public var data: RData
    }

    public enum RData: Sendable, Equatable {
        case a(String)
        case aaaa(String)
        case cname(String)
        case mx(preference: UInt16, exchange: String)
        case txt([[UInt8]])
        case tlsa(usage: UInt8, selector: UInt8, matchingType: UInt8, data: [UInt8])
        case other([UInt8])
    }

    public struct Malformed: Error, Sendable, CustomStringConvertible {
        public var reason: String
        public var description: String { "malformed DNS message: \(reason)" }
    }

    public var rcode: UInt8
    /// The AD (authentic data) bit: the resolver validated the answer with DNSSEC.
    public var authenticated: Bool
    public var truncated: Bool
    public var answers: [Record]

    public static let typeA: UInt16 = 1
    public static let typeCNAME: UInt16 = 5
    public static let typeMX: UInt16 = 15
    public static let typeTXT: UInt16 = 16
    public static let typeAAAA: UInt16 = 28
    public static let typeTLSA: UInt16 = 52

    public init(parsing bytes: [UInt8]) throws(Malformed) {
        var reader = Reader(bytes: bytes)
        guard bytes.count >= 12 else { throw Malformed(reason: "shorter than a header") }
        let flags = UInt16(bytes[2]) << 8 | UInt16(bytes[3])
        truncated = flags & 0x0200 != 0
        authenticated = flags & 0x0020 != 0
        rcode = UInt8(flags & 0x000F)
        let qdcount = Int(UInt16(bytes[4]) << 8 | UInt16(bytes[5]))
        let ancount = Int(UInt16(bytes[6]) << 8 | UInt16(bytes[7]))
        reader.offset = 12
        for _ in 0..<qdcount {
            _ = try reader.name()
            try reader.skip(4)
        }
        var answers: [Record] = []
        answers.reserveCapacity(min(ancount, 64))
        for _ in 0..<ancount {
            let name = try reader.name()
            let type = try reader.u16()
            _ = try reader.u16()  // class
            let ttl = try reader.u32()
            let length = Int(try reader.u16())
            let start = reader.offset
            guard start + length <= bytes.count else { throw Malformed(reason: "record data runs past the end") }
            let rdata = bytes[start..<(start + length)]
            var data: RData
            switch type {
            case DNSMessage.typeA where length == 4:
                data = .a(rdata.map(String.init).joined(separator: "."))
            case DNSMessage.typeAAAA where length == 16:
                data = .aaaa(DNSMessage.ipv6(Array(rdata)))
            case DNSMessage.typeCNAME:
                var sub = reader
                sub.offset = start
                data = .cname(try sub.name())
            case DNSMessage.typeMX where length >= 3:
                var sub = reader
                sub.offset = start
                let preference = try sub.u16()
                data = .mx(preference: preference, exchange: try sub.name())
            case DNSMessage.typeTXT:
                var strings: [[UInt8]] = []
                var i = start
                while i < start + length {
                    let n = Int(bytes[i])
                    guard i + 1 + n <= start + length else { throw Malformed(reason: "a TXT string runs past its record") }
                    strings.append(Array(bytes[(i + 1)..<(i + 1 + n)]))
                    i += 1 + n
                }
                data = .txt(strings)
            case DNSMessage.typeTLSA where length >= 3:
                data = .tlsa(usage: rdata[start], selector: rdata[start + 1], matchingType: rdata[start + 2], data: Array(rdata.dropFirst(3)))
            default:
                data = .other(Array(rdata))
            }
            reader.offset = start + length
            answers.append(Record(name: name, type: type, ttl: ttl, data: data))
        }
        self.answers = answers
    }

    /// RFC 5952 text form of an IPv6 address (lowercase, longest zero run compressed).
    static func ipv6(_ b: [UInt8]) -> String {
        var groups: [UInt16] = []
        for i in stride(from: 0, to: 16, by: 2) { groups.append(UInt16(b[i]) << 8 | UInt16(b[i + 1])) }
        var bestStart = -1, bestLen = 0, curStart = -1, curLen = 0
        for (i, g) in groups.enumerated() {
            if g == 0 {
                if curStart < 0 { curStart = i; curLen = 0 }
                curLen += 1
                if curLen > bestLen { bestStart = curStart; bestLen = curLen }
            } else {
                curStart = -1
            }
        }
        if bestLen < 2 { bestStart = -1 }
        var parts: [String] = []
        var i = 0
        while i < 8 {
            if i == bestStart {
                parts.append(i == 0 ? ":" : "")
                i += bestLen
                if i == 8 { parts.append("") }
                continue
            }
            parts.append(String(groups[i], radix: 16))
            i += 1
        }
        return parts.joined(separator: ":")
    }

    struct Reader {
        let bytes: [UInt8]
        var offset = 0

        mutating func skip(_ n: Int) throws(Malformed) {
            guard offset + n <= bytes.count else { throw Malformed(reason: "truncated") }
            offset += n
        }
        mutating func u16() throws(Malformed) -> UInt16 {
            guard offset + 2 <= bytes.count else { throw Malformed(reason: "truncated") }
            defer { offset += 2 }
            return UInt16(bytes[offset]) << 8 | UInt16(bytes[offset + 1])
        }
        mutating func u32() throws(Malformed) -> UInt32 {
            let hi = try u16()
            let lo = try u16()
            return UInt32(hi) << 16 | UInt32(lo)
        }

        /// A possibly compressed name, as lowercase-preserving dotted text without the root dot.
        mutating func name() throws(Malformed) -> String {
            var labels: [String] = []
            var i = offset
            var jumped = false
            var hops = 0
            var total = 0
            while true {
                guard i < bytes.count else { throw Malformed(reason: "a name runs past the end") }
                let len = Int(bytes[i])
                if len & 0xC0 == 0xC0 {
                    guard i + 1 < bytes.count else { throw Malformed(reason: "a truncated name pointer") }
                    let target = (len & 0x3F) << 8 | Int(bytes[i + 1])
                    if !jumped { offset = i + 2 }
                    jumped = true
                    hops += 1
                    guard hops <= 64, target < bytes.count else { throw Malformed(reason: "a name pointer loop or out of range") }
                    i = target
                    continue
                }
                guard len & 0xC0 == 0 else { throw Malformed(reason: "an unknown label type") }
                if len == 0 {
                    if !jumped { offset = i + 1 }
                    break
                }
                guard i + 1 + len <= bytes.count else { throw Malformed(reason: "a label runs past the end") }
                total += len + 1
                guard total <= 255 else { throw Malformed(reason: "a name longer than 255 octets") }
                labels.append(String(decoding: bytes[(i + 1)..<(i + 1 + len)], as: UTF8.self))
                i += 1 + len
            }
            return labels.joined(separator: ".")
        }
    }
}
