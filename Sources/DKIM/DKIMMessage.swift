import Foundation

/// DKIM (RFC 6376) for TLS report mail: verification of received reports (RFC 8460 §3 asks
/// receivers to check it) and signing of the reports we send. rsa-sha256 and ed25519-sha256
/// (RFC 8463); rsa-sha1 is refused (RFC 8301). A signature with `l=` is refused: it lets anyone
/// append content to a signed message.
public enum DKIM {
    public struct Result: Sendable, Equatable, CustomStringConvertible {
        public enum Status: String, Sendable {
            case pass, fail, none, temperror, permerror
        }
        public var status: Status
        public var domain: String?
        public var selector: String?
        public var reason: String
        public var description: String {
            "\(status.rawValue)\(domain.map { " d=\($0)" } ?? "")\(selector.map { " s=\($0)" } ?? "")\(reason.isEmpty ? "" : " (\(reason))")"
        }
    }

    /// TXT strings at a name; nil when the name has no TXT record; throws for a temporary failure.
    public typealias KeyLookup = @Sendable (String) async throws -> [String]?

    // MARK: message structure

    struct Header {
        var name: String
        /// The whole field as in the message, continuation lines included, with its CRLF.
        var raw: [UInt8]
        var value: [UInt8] { Array(raw[(raw.firstIndex(of: UInt8(ascii: ":")).map { $0 + 1 } ?? raw.count)...]) }
    }

    /// Splits a message into header fields and body, with line ends made CRLF (mail handed to a
    /// pipe has LF line ends; DKIM is defined over CRLF).
    static func split(_ message: [UInt8]) -> (headers: [Header], body: [UInt8]) {
        var crlf: [UInt8] = []
        crlf.reserveCapacity(message.count + message.count / 40)
        var previous: UInt8 = 0
        for b in message {
            if b == 0x0A && previous != 0x0D { crlf.append(0x0D) }
            crlf.append(b)
            previous = b
        }
        var headers: [Header] = []
        var i = 0
        while i < crlf.count {
            if crlf[i] == 0x0D, i + 1 < crlf.count, crlf[i + 1] == 0x0A { i += 2; break }  // the empty line
            var end = i
            while end < crlf.count {
                if crlf[end] == 0x0D, end + 1 < crlf.count, crlf[end + 1] == 0x0A {
                    end += 2
                    if end < crlf.count, crlf[end] == 0x20 || crlf[end] == 0x09 { continue }
                    break
                }
                end += 1
            }
            let raw = Array(crlf[i..<end])
            let name = String(decoding: raw.prefix { $0 != UInt8(ascii: ":") }.filter { $0 != 0x0D && $0 != 0x0A }, as: UTF8.self)
                .trimmingCharacters(in: .whitespaces)
            headers.append(Header(name: name, raw: raw))
            i = end
        }
        return (headers, i <= crlf.count ? Array(crlf[min(i, crlf.count)...]) : [])
    }

    static func isWSP(_ b: UInt8) -> Bool { b == 0x20 || b == 0x09 }

    /// Where each header name occurs (lower-cased name → indices, top down): built once per message.
    struct HeaderIndex {
        var positions: [String: [Int]] = [:]
        init(_ headers: [Header]) {
            for (i, h) in headers.enumerated() { positions[h.name.lowercased(), default: []].append(i) }
        }
    }

    /// Header canonicalisation (RFC 6376 §3.4.1, §3.4.2).
    static func canonicalHeader(_ h: Header, relaxed: Bool) -> [UInt8] {
        guard relaxed else { return h.raw }
        var out = Array(h.name.lowercased().utf8)
        out.append(UInt8(ascii: ":"))
        var value: [UInt8] = []
        var pendingSpace = false
        for b in h.value where b != 0x0D && b != 0x0A {
            if isWSP(b) { pendingSpace = !value.isEmpty; continue }
            if pendingSpace { value.append(0x20); pendingSpace = false }
            value.append(b)
        }
        out += value
        out += [0x0D, 0x0A]
        return out
    }

    /// Body canonicalisation (RFC 6376 §3.4.3, §3.4.4).
    static func canonicalBody(_ body: [UInt8], relaxed: Bool) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(body.count)
        if relaxed {
            var line: [UInt8] = []
            func flushLine() {
                while let last = line.last, isWSP(last) { line.removeLast() }
                out += line
                out += [0x0D, 0x0A]
                line.removeAll(keepingCapacity: true)
            }
            var i = 0
            var pendingSpace = false
            while i < body.count {
                let b = body[i]
                if b == 0x0D, i + 1 < body.count, body[i + 1] == 0x0A {
                    pendingSpace = false
                    flushLine()
                    i += 2
                    continue
                }
                if isWSP(b) { pendingSpace = true } else {
                    if pendingSpace { line.append(0x20); pendingSpace = false }
                    line.append(b)
                }
                i += 1
            }
            if !line.isEmpty { flushLine() }
        } else {
            out = body
            if !out.isEmpty, !(out.count >= 2 && out[out.count - 2] == 0x0D && out[out.count - 1] == 0x0A) { out += [0x0D, 0x0A] }
        }
        // Trailing empty lines go.
        while out.count >= 4, out[out.count - 4] == 0x0D, out[out.count - 3] == 0x0A, out[out.count - 2] == 0x0D, out[out.count - 1] == 0x0A {
            out.removeLast(2)
        }
        if out == [0x0D, 0x0A] && relaxed { out = [] }
        if out.isEmpty && !relaxed { out = [0x0D, 0x0A] }
        return out
    }

    /// `tag=value` pairs of a signature or key record; white space removed from values.
    static func tags(_ text: String) -> [String: String]? {
        var out: [String: String] = [:]
        for part in text.split(separator: ";") {
            let piece = part.trimmingCharacters(in: .whitespacesAndNewlines)
            if piece.isEmpty { continue }
            guard let eq = piece.firstIndex(of: "=") else { return nil }
            let name = piece[..<eq].trimmingCharacters(in: .whitespacesAndNewlines)
            let value = String(piece[piece.index(after: eq)...].filter { !$0.isWhitespace })
            if out[name] != nil { return nil }  // a duplicated tag makes the signature invalid (§3.2)
            out[name] = value
        }
        return out
    }

    /// The signed header data: the `h=` fields (each name takes the last unused instance,
    /// bottom up), then the signature field with its `b=` value emptied, without its CRLF.
    static func signedHeaderData(_ headers: [Header], index: HeaderIndex? = nil, names: [String], signature: Header, relaxed: Bool) -> [UInt8] {
        let index = index ?? HeaderIndex(headers)
        var taken: [String: Int] = [:]
        var data: [UInt8] = []
        for name in names {
            let lower = name.lowercased()
            // Bottom up: the n-th use of a name takes its n-th last instance.
            let positions = index.positions[lower] ?? []
            let n = taken[lower, default: 0]
            if n < positions.count {
                taken[lower] = n + 1
                data += canonicalHeader(headers[positions[positions.count - 1 - n]], relaxed: relaxed)
            }
        }
        var own = canonicalHeader(Header(name: signature.name, raw: emptyB(signature.raw)), relaxed: relaxed)
        if own.count >= 2, own[own.count - 2] == 0x0D, own[own.count - 1] == 0x0A { own.removeLast(2) }
        return data + own
    }

    /// The field with the value of its `b=` tag removed (and nothing else changed).
    static func emptyB(_ raw: [UInt8]) -> [UInt8] {
        guard let colon = raw.firstIndex(of: UInt8(ascii: ":")) else { return raw }
        var i = colon + 1
        var tagStart = i
        while i <= raw.count {
            if i == raw.count || raw[i] == UInt8(ascii: ";") {
                let tag = raw[tagStart..<i]
                if let eq = tag.firstIndex(of: UInt8(ascii: "=")) {
                    let name = tag[tag.startIndex..<eq].filter { !isWSP($0) && $0 != 0x0D && $0 != 0x0A }
                    if name == [UInt8(ascii: "b")] {
                        // Keep trailing CRLF of the field if the value ran to the end.
                        var tail: [UInt8] = Array(raw[i...])
                        if i == raw.count, raw.count >= 2, raw[raw.count - 2] == 0x0D, raw[raw.count - 1] == 0x0A, tag.last == 0x0A {
                            tail = [0x0D, 0x0A]
                        }
                        return Array(raw[..<(eq + 1)]) + tail
                    }
                }
                tagStart = i + 1
            }
            i += 1
        }
        return raw
    }

}
