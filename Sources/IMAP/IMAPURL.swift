/// Where to read reports by IMAP, written as a URL (RFC 5092 server and mailbox parts only):
///
///     imaps://USER@HOST[:PORT]/MAILBOX   TLS from the start, port 993 by default
///     imap://USER@HOST[:PORT]/MAILBOX    STARTTLS (required), port 143 by default
///
/// The user and mailbox are percent-decoded (`reports%40example.net`; an `@` in the user may
/// also be left as it is: the host is after the last `@`). The mailbox defaults to INBOX. A
/// password in the URL is refused: URLs end up in shell history, process lists and logs.
/// Pure Swift (no imports).
public struct IMAPURL: Equatable, Sendable, CustomStringConvertible {
    /// `imaps` (implicit TLS) or `imap` (STARTTLS).
    public var implicitTLS: Bool
    public var user: String
    /// A DNS name (lower-cased) or an address; an IPv6 address without its brackets.
    public var host: String
    public var port: Int
    public var mailbox: String

    public init(implicitTLS: Bool, user: String, host: String, port: Int? = nil, mailbox: String = "INBOX") {
        self.implicitTLS = implicitTLS
        self.user = user
        self.host = host
        self.port = port ?? (implicitTLS ? 993 : 143)
        self.mailbox = mailbox
    }

    /// Parses `text`; every refusal says what to write instead.
    public init(parsing text: String) throws {
        let lower = text.lowercased()
        let rest: Substring
        if lower.hasPrefix("imaps://") {
            implicitTLS = true
            rest = text.dropFirst(8)
        } else if lower.hasPrefix("imap://") {
            implicitTLS = false
            rest = text.dropFirst(7)
        } else {
            throw IMAPURLError("'\(Self.shown(text))' is not an IMAP URL: write imaps://USER@HOST/MAILBOX (or imap:// for STARTTLS on port 143)")
        }
        if let bad = rest.first(where: { $0 == "?" || $0 == "#" || $0 == ";" }) {
            throw IMAPURLError("the IMAP URL holds '\(bad)': queries, fragments and ;parameters are not supported (write it in a mailbox name as %\(Self.hex(bad)))")
        }
        let slash = rest.firstIndex(of: "/") ?? rest.endIndex
        let authority = rest[..<slash]
        let path = slash < rest.endIndex ? rest[rest.index(after: slash)...] : ""
        guard let at = authority.lastIndex(of: "@") else {
            throw IMAPURLError("the IMAP URL names no user: write imaps://USER@HOST/MAILBOX (an @ in the user as %40)")
        }
        let userinfo = authority[..<at]
        guard !userinfo.contains(":") else {
            throw IMAPURLError("the IMAP URL holds a password: give it in a file or an environment variable instead, never in the URL")
        }
        user = try Self.decode(userinfo, what: "user")
        guard !user.isEmpty else { throw IMAPURLError("the IMAP URL names an empty user") }
        (host, port) = try Self.hostAndPort(authority[authority.index(after: at)...], implicitTLS: implicitTLS)
        let name = try Self.decode(path, what: "mailbox")
        mailbox = name.isEmpty ? "INBOX" : name
    }

    /// The URL again (user and mailbox percent-encoded where needed; no password, ever).
    public var description: String {
        let hostPart = host.contains(":") ? "[\(host)]" : host
        let portPart = port == (implicitTLS ? 993 : 143) ? "" : ":\(port)"
        return (implicitTLS ? "imaps://" : "imap://") + Self.encode(user) + "@" + hostPart + portPart + "/" + Self.encode(mailbox)
    }

    static func hostAndPort(_ text: Substring, implicitTLS: Bool) throws -> (String, Int) {
        var hostText = text
        var portText: Substring?
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]") else { throw IMAPURLError("the IMAP URL's IPv6 address lacks its ']'") }
            hostText = text[text.index(after: text.startIndex)..<close]
            let after = text[text.index(after: close)...]
            if !after.isEmpty {
                guard after.hasPrefix(":") else { throw IMAPURLError("unexpected text after the IMAP URL's IPv6 address") }
                portText = after.dropFirst()
            }
            guard !hostText.isEmpty, hostText.allSatisfy({ $0.isHexDigit || $0 == ":" || $0 == "." }) else {
                throw IMAPURLError("'\(Self.shown(String(hostText)))' is not an IPv6 address")
            }
        } else {
            if let colon = text.lastIndex(of: ":") {
                hostText = text[..<colon]
                portText = text[text.index(after: colon)...]
            }
            guard !hostText.isEmpty else { throw IMAPURLError("the IMAP URL names no host") }
            guard hostText.allSatisfy({ ($0.isASCII && ($0.isLetter || $0.isNumber)) || $0 == "-" || $0 == "." }) else {
                throw IMAPURLError("'\(Self.shown(String(hostText)))' is not a host name (letters, digits, '-' and '.'; an IPv6 address in brackets)")
            }
        }
        var port = implicitTLS ? 993 : 143
        if let portText {
            guard !portText.isEmpty, portText.count <= 5, portText.allSatisfy({ $0.isASCII && $0.isNumber }),
                  let value = Int(portText), (1...65535).contains(value) else {
                throw IMAPURLError("'\(Self.shown(String(portText)))' is not a port (1 to 65535)")
            }
            port = value
        }
        return (hostText.lowercased(), port)
    }

    /// Percent-decoding to UTF-8; no control characters (CR, LF and NUL above all) after it.
    static func decode(_ text: Substring, what: String) throws -> String {
        var bytes: [UInt8] = []
        var utf8 = Array(text.utf8)[...]
        while let b = utf8.popFirst() {
            guard b == UInt8(ascii: "%") else {
                bytes.append(b)
                continue
            }
            guard utf8.count >= 2, let hi = hexValue(utf8[utf8.startIndex]), let lo = hexValue(utf8[utf8.startIndex + 1]) else {
                throw IMAPURLError("the IMAP URL's \(what) holds a '%' not followed by two hex digits")
            }
            bytes.append(hi << 4 | lo)
            utf8 = utf8.dropFirst(2)
        }
        let decoded = String(decoding: bytes, as: UTF8.self)
        guard decoded.utf8.elementsEqual(bytes) else { throw IMAPURLError("the IMAP URL's \(what) is not UTF-8 once decoded") }
        guard !decoded.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7F }) else {
            throw IMAPURLError("the IMAP URL's \(what) holds a control character (CR, LF, NUL…)")
        }
        return decoded
    }

    static func hexValue(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return c - UInt8(ascii: "A") + 10
        default: return nil
        }
    }

    /// Percent-encodes all but unreserved characters and `/` (RFC 3986).
    static func encode(_ text: String) -> String {
        var out = ""
        for b in text.utf8 {
            let c = Character(Unicode.Scalar(b))
            if b < 0x80 && (c.isLetter || c.isNumber || "-._~/".contains(c)) {
                out.append(c)
            } else {
                out += "%" + hex(b)
            }
        }
        return out
    }

    static func hex(_ b: UInt8) -> String {
        let digits = Array("0123456789ABCDEF")
        return String([digits[Int(b >> 4)], digits[Int(b & 15)]])
    }

    static func hex(_ c: Character) -> String { c.utf8.map { hex($0) }.joined(separator: "%") }

    /// Text for a message: at most 100 characters, control characters as `?`.
    static func shown(_ text: String) -> String {
        String(text.unicodeScalars.prefix(100).map { $0.value < 0x20 || $0.value == 0x7F ? "?" : Character($0) })
    }
}

/// An IMAP URL that cannot be used, and why.
public struct IMAPURLError: Error, Equatable, Sendable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}
