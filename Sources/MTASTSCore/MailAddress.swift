/// A mailbox as SMTP carries it (RFC 5321 §4.1.2 `Mailbox`), checked before any address from
/// outside (a `rua` of a stranger's DNS record, the configuration) is written into an SMTP command
/// or a header: a dot-string local part of printable ASCII without `<`, `>`, `(`, `)`, `[`, `]`,
/// `\`, `,`, `;`, `:`, `@`, `"` or space (so no CR, LF, NUL or control either), at most 64 octets,
/// and a domain name (an IDN becomes A-labels). Departures, stricter than RFC 5321: quoted local
/// parts, address literals (`user@[192.0.2.1]`) and UTF-8 local parts (SMTPUTF8) are refused.
public enum MailAddress {
    public struct Invalid: Error, CustomStringConvertible, Sendable {
        public var reason: String
        public var description: String { reason }
    }

    /// The address normalised (`local@a-label.domain`, the domain lower-case), or why it is not one.
    public static func validate(_ address: String) throws(Invalid) -> String {
        guard let at = address.utf8.lastIndex(of: 0x40) else { throw Invalid(reason: "no '@'") }
        let local = address.utf8[..<at], domain = address.utf8[address.utf8.index(after: at)...]
        guard !local.isEmpty else { throw Invalid(reason: "an empty local part") }
        guard local.count <= 64 else { throw Invalid(reason: "a local part longer than 64 octets") }
        for b in local where !isAtext(b) && b != 0x2E {
            throw Invalid(reason: b < 0x20 || b == 0x7F ? "a control character (0x\(String(b, radix: 16))) in the local part"
                          : b >= 0x80 ? "a non-ASCII local part (SMTPUTF8 is not used)" : "'\(Character(UnicodeScalar(b)))' in the local part")
        }
        if local.first == 0x2E || local.last == 0x2E || zip(local, local.dropFirst()).contains(where: { $0 == 0x2E && $1 == 0x2E }) {
            throw Invalid(reason: "a local part with a leading, trailing or doubled '.'")
        }
        guard !domain.isEmpty else { throw Invalid(reason: "an empty domain") }
        // DomainName trims blanks; here nothing but the name itself may be there.
        guard !domain.contains(where: { $0 <= 0x20 || $0 == 0x7F || $0 == 0x5B }) else {
            throw Invalid(reason: "a blank, control character or address literal in the domain")
        }
        let name: DomainName
        do { name = try DomainName(String(decoding: domain, as: UTF8.self)) } catch { throw Invalid(reason: "the domain: \(error.reason)") }
        guard name.text.contains(".") else { throw Invalid(reason: "a domain without a dot") }
        return String(decoding: local, as: UTF8.self) + "@" + name.text
    }

    /// RFC 5322 atext.
    static func isAtext(_ b: UInt8) -> Bool {
        switch b {
        case 0x61...0x7A, 0x41...0x5A, 0x30...0x39: return true
        case UInt8(ascii: "!"), UInt8(ascii: "#"), UInt8(ascii: "$"), UInt8(ascii: "%"), UInt8(ascii: "&"), UInt8(ascii: "'"),
             UInt8(ascii: "*"), UInt8(ascii: "+"), UInt8(ascii: "-"), UInt8(ascii: "/"), UInt8(ascii: "="), UInt8(ascii: "?"),
             UInt8(ascii: "^"), UInt8(ascii: "_"), UInt8(ascii: "`"), UInt8(ascii: "{"), UInt8(ascii: "|"), UInt8(ascii: "}"), UInt8(ascii: "~"):
            return true
        default: return false
        }
    }
}
