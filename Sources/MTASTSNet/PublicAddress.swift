import Foundation

/// Whether an IP address is on the public internet. A rua `https://` URI comes from a stranger's
/// DNS record: without this check, the reporter could be made to POST into the operator's own
/// network (loopback, RFC 1918, link-local, unique-local, CGNAT, documentation, multicast).
public enum PublicAddress {
    /// True for a public unicast address (IPv4 or IPv6 text); false for anything else, including text
    /// that is not an address.
    public static func isPublic(_ text: String) -> Bool {
        var v4 = in_addr()
        if inet_pton(AF_INET, text, &v4) == 1 {
            return isPublicV4(UInt32(bigEndian: v4.s_addr))
        }
        var v6 = in6_addr()
        guard inet_pton(AF_INET6, text, &v6) == 1 else { return false }
        let b = withUnsafeBytes(of: v6) { Array($0) }
        if b[0..<10].allSatisfy({ $0 == 0 }) && b[10] == 0xFF && b[11] == 0xFF {  // ::ffff:a.b.c.d
            return isPublicV4(embeddedV4(b, at: 12))
        }
        if b[0..<15].allSatisfy({ $0 == 0 }) { return false }                   // :: and ::1
        if b[0..<12].allSatisfy({ $0 == 0 }) {                                  // ::a.b.c.d (IPv4-compatible)
            return isPublicV4(embeddedV4(b, at: 12))
        }
        if b[0] == 0x20 && b[1] == 0x02 {                                       // 2002::/16 6to4: the IPv4 inside
            return isPublicV4(embeddedV4(b, at: 2))
        }
        if b[0] == 0x20 && b[1] == 0x01 && b[2] == 0x00 && b[3] == 0x00 { return false }  // 2001::/32 Teredo
        if b[0] == 0x00 && b[1] == 0x64 && b[2] == 0xFF && b[3] == 0x9B && b[4] == 0x00 && b[5] == 0x01 { return false }  // 64:ff9b:1::/48 local NAT64
        if b[0] == 0xFF { return false }                                        // multicast
        if b[0] & 0xFE == 0xFC { return false }                                 // fc00::/7 unique local
        if b[0] == 0xFE && b[1] & 0xC0 == 0x80 { return false }                 // fe80::/10 link local
        if b[0] == 0xFE && b[1] & 0xC0 == 0xC0 { return false }                 // fec0::/10 site local
        if b[0] == 0x20 && b[1] == 0x01 && b[2] == 0x0D && b[3] == 0xB8 { return false }  // 2001:db8::/32
        if b[0] == 0x00 && b[1] == 0x64 && b[2] == 0xFF && b[3] == 0x9B {       // 64:ff9b::/96 NAT64
            return isPublicV4(embeddedV4(b, at: 12))
        }
        if b[0] == 0x01 && b[1] == 0x00 && b[2..<8].allSatisfy({ $0 == 0 }) { return false }  // 100::/64 discard
        return true
    }

    /// The IPv4 address held in four bytes of an IPv6 address, from `at`.
    static func embeddedV4(_ b: [UInt8], at i: Int) -> UInt32 {
        UInt32(b[i]) << 24 | UInt32(b[i + 1]) << 16 | UInt32(b[i + 2]) << 8 | UInt32(b[i + 3])
    }

    static func isPublicV4(_ a: UInt32) -> Bool {
        func within(_ base: UInt32, _ bits: UInt32) -> Bool { a >> (32 - bits) == base >> (32 - bits) }
        let reserved: [(UInt32, UInt32)] = [
            (0x0000_0000, 8), (0x0A00_0000, 8), (0x6440_0000, 10), (0x7F00_0000, 8), (0xA9FE_0000, 16), (0xAC10_0000, 12),
            (0xC000_0000, 24), (0xC000_0200, 24), (0xC0A8_0000, 16), (0xC612_0000, 15), (0xC633_6400, 24), (0xCB00_7100, 24),
            (0xE000_0000, 4), (0xF000_0000, 4),
        ]
        return !reserved.contains { within($0.0, $0.1) }
    }

    /// Whether the text is an IPv4 or IPv6 address literal.
    public static func isLiteral(_ text: String) -> Bool {
        var v4 = in_addr(), v6 = in6_addr()
        return inet_pton(AF_INET, text, &v4) == 1 || inet_pton(AF_INET6, text, &v6) == 1
    }

    /// The addresses `host` resolves to (the system resolver, as the connection would use it);
    /// an address literal is itself. Blocking: call it off the event loops.
    public static func resolve(_ host: String, port: Int) -> [String] {
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var result: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(host, String(port), &hints, &result) == 0, let first = result else { return [] }
        defer { freeaddrinfo(first) }
        var out: [String] = []
        var cursor: UnsafeMutablePointer<addrinfo>? = first
        while let info = cursor {
            var buffer = [CChar](repeating: 0, count: Int(NI_MAXHOST))
            if getnameinfo(info.pointee.ai_addr, info.pointee.ai_addrlen, &buffer, socklen_t(buffer.count), nil, 0, NI_NUMERICHOST) == 0 {
                let text = String(cString: buffer)
                if !out.contains(text) { out.append(text) }
            }
            cursor = info.pointee.ai_next
        }
        return out
    }
}
