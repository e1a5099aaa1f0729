import Crypto
import Foundation
import _CryptoExtras

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
            let name = String(decoding: raw.prefix { $0 != UInt8(ascii: ":") }, as: UTF8.self).trimmingCharacters(in: .whitespaces)
            headers.append(Header(name: name, raw: raw))
            i = end
        }
        return (headers, i <= crlf.count ? Array(crlf[min(i, crlf.count)...]) : [])
    }

    static func isWSP(_ b: UInt8) -> Bool { b == 0x20 || b == 0x09 }

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
    static func signedHeaderData(_ headers: [Header], names: [String], signature: Header, relaxed: Bool) -> [UInt8] {
        var used = Set<Int>()
        var data: [UInt8] = []
        for name in names {
            let lower = name.lowercased()
            if let index = headers.indices.reversed().first(where: { !used.contains($0) && headers[$0].name.lowercased() == lower }) {
                used.insert(index)
                data += canonicalHeader(headers[index], relaxed: relaxed)
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

    // MARK: verification

    /// Verifies every DKIM-Signature of a message (at most 5); returns one result each, or one
    /// `none` result when there is no signature. A pass is one result with status `pass`.
    public static func verify(_ message: [UInt8], lookup: KeyLookup, now: Date = Date()) async -> [Result] {
        let (headers, body) = split(message)
        let signatures = headers.filter { $0.name.lowercased() == "dkim-signature" }
        if signatures.isEmpty { return [Result(status: .none, domain: nil, selector: nil, reason: "the message is not signed")] }
        var results: [Result] = []
        for signature in signatures.prefix(5) {
            results.append(await verifyOne(signature, headers: headers, body: body, lookup: lookup, now: now))
        }
        return results
    }

    static func verifyOne(_ signature: Header, headers: [Header], body: [UInt8], lookup: KeyLookup, now: Date) async -> Result {
        guard let t = tags(String(decoding: signature.value, as: UTF8.self)) else {
            return Result(status: .permerror, domain: nil, selector: nil, reason: "the signature's tag list is malformed")
        }
        let domain = t["d"]?.lowercased(), selector = t["s"]
        func perm(_ reason: String) -> Result { Result(status: .permerror, domain: domain, selector: selector, reason: reason) }
        guard t["v"] == "1" else { return perm("v= is not 1") }
        guard let domain, !domain.isEmpty, let selector, !selector.isEmpty else { return perm("d= or s= missing") }
        guard let algorithm = t["a"], algorithm == "rsa-sha256" || algorithm == "ed25519-sha256" else {
            return perm("algorithm \(t["a"] ?? "(none)") is not accepted (rsa-sha256 or ed25519-sha256)")
        }
        guard t["l"] == nil else { return perm("l= (body length limit) is refused: content could be appended to the signed message") }
        guard let h = t["h"], let b = t["b"].flatMap({ Data(base64Encoded: $0) }), let bh = t["bh"].flatMap({ Data(base64Encoded: $0) }) else {
            return perm("h=, b= or bh= missing or not base64")
        }
        let names = h.split(separator: ":").map { $0.trimmingCharacters(in: .whitespaces) }
        guard names.contains(where: { $0.lowercased() == "from" }) else { return perm("h= does not sign From") }
        let canon = (t["c"] ?? "simple/simple").lowercased().split(separator: "/").map(String.init)
        let headerRelaxed = canon.first == "relaxed"
        let bodyRelaxed = canon.count > 1 && canon[1] == "relaxed"
        guard ["simple", "relaxed"].contains(canon.first ?? ""), canon.count == 1 || ["simple", "relaxed"].contains(canon[1]) else {
            return perm("unknown canonicalization \(t["c"] ?? "")")
        }
        if let x = t["x"].flatMap(Double.init), x < now.timeIntervalSince1970 {
            return Result(status: .fail, domain: domain, selector: selector, reason: "the signature expired (x=)")
        }
        if let i = t["i"], !i.lowercased().hasSuffix("@" + domain) && !i.lowercased().hasSuffix("." + domain) {
            return perm("i= is not within d=")
        }
        let bodyHash = Data(SHA256.hash(data: canonicalBody(body, relaxed: bodyRelaxed)))
        guard bodyHash == bh else {
            return Result(status: .fail, domain: domain, selector: selector, reason: "body hash mismatch: the body was changed after signing")
        }
        // The key.
        let keyName = "\(selector)._domainkey.\(domain)"
        let strings: [String]?
        do { strings = try await lookup(keyName) } catch {
            return Result(status: .temperror, domain: domain, selector: selector, reason: "key look-up of \(keyName) failed: \(error)")
        }
        guard let strings, let keyTags = tags(strings.joined()) else { return perm("no DKIM key at \(keyName)") }
        if let v = keyTags["v"], v != "DKIM1" { return perm("the key record at \(keyName) has v=\(v)") }
        guard let p = keyTags["p"] else { return perm("the key record at \(keyName) has no p=") }
        guard !p.isEmpty else { return perm("the key at \(keyName) is revoked (empty p=)") }
        guard let keyBytes = Data(base64Encoded: p) else { return perm("p= at \(keyName) is not base64") }
        let keyType = keyTags["k"] ?? "rsa"
        let data = signedHeaderData(headers, names: names, signature: signature, relaxed: headerRelaxed)
        let digest = SHA256.hash(data: data)
        let valid: Bool
        switch (algorithm, keyType) {
        case ("rsa-sha256", "rsa"):
            guard let key = try? _RSA.Signing.PublicKey(unsafeDERRepresentation: keyBytes) else { return perm("the RSA key at \(keyName) is not usable (at least 1024 bits)") }
            valid = key.isValidSignature(_RSA.Signing.RSASignature(rawRepresentation: b), for: digest, padding: .insecurePKCS1v1_5)
        case ("ed25519-sha256", "ed25519"):
            guard let key = try? Curve25519.Signing.PublicKey(rawRepresentation: keyBytes) else { return perm("the Ed25519 key at \(keyName) is not 32 bytes") }
            valid = key.isValidSignature(b, for: Data(digest))
        default:
            return perm("the key at \(keyName) is k=\(keyType), the signature a=\(algorithm)")
        }
        return valid ? Result(status: .pass, domain: domain, selector: selector, reason: "")
            : Result(status: .fail, domain: domain, selector: selector, reason: "signature mismatch: the signed headers were changed or the key does not match")
    }

    // MARK: signing

    public enum SigningKey: @unchecked Sendable {
        case rsa(_RSA.Signing.PrivateKey)
        case ed25519(Curve25519.Signing.PrivateKey)

        /// A PEM private key: RSA (PKCS#1 or PKCS#8) or Ed25519 (PKCS#8).
        public init(pem: String) throws {
            if let rsa = try? _RSA.Signing.PrivateKey(pemRepresentation: pem) {
                self = .rsa(rsa)
            } else if let der = Self.der(pem), der.count == 48, Array(der.prefix(16)) == Self.ed25519PKCS8Prefix,
                let ed = try? Curve25519.Signing.PrivateKey(rawRepresentation: der.suffix(32)) {
                self = .ed25519(ed)
            } else {
                throw SigningError("the key is neither an RSA (at least 2048 bits) nor an Ed25519 private key in PEM")
            }
        }

        /// PKCS#8 framing of an Ed25519 private key (RFC 8410), before the 32 key bytes.
        static let ed25519PKCS8Prefix: [UInt8] = [0x30, 0x2E, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2B, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20]

        static func der(_ pem: String) -> [UInt8]? {
            let body = pem.split(whereSeparator: \.isNewline).filter { !$0.hasPrefix("-----") }.joined()
            return Data(base64Encoded: body).map { [UInt8]($0) }
        }

        var algorithm: String {
            switch self {
            case .rsa: return "rsa-sha256"
            case .ed25519: return "ed25519-sha256"
            }
        }

        /// The DNS record to publish at SELECTOR._domainkey.DOMAIN.
        public var dnsRecord: String {
            switch self {
            case .rsa(let k): return "v=DKIM1; k=rsa; p=\(k.publicKey.derRepresentation.base64EncodedString())"
            case .ed25519(let k): return "v=DKIM1; k=ed25519; p=\(k.publicKey.rawRepresentation.base64EncodedString())"
            }
        }
    }

    public struct SigningError: Error, CustomStringConvertible {
        public var description: String
        init(_ d: String) { description = d }
    }

    /// Returns the message with a DKIM-Signature field prepended (relaxed/relaxed).
    public static func sign(_ message: [UInt8], domain: String, selector: String, key: SigningKey,
                            headers names: [String] = ["From", "To", "Subject", "Date", "Message-ID", "MIME-Version", "Content-Type", "TLS-Report-Domain", "TLS-Report-Submitter"],
                            now: Date = Date()) throws -> [UInt8] {
        let (headers, body) = split(message)
        let present = names.filter { n in headers.contains { $0.name.lowercased() == n.lowercased() } }
        let bh = Data(SHA256.hash(data: canonicalBody(body, relaxed: true))).base64EncodedString()
        let value = "v=1; a=\(key.algorithm); c=relaxed/relaxed; d=\(domain); s=\(selector); t=\(Int(now.timeIntervalSince1970)); h=\(present.joined(separator: ":")); bh=\(bh); b="
        let unsigned = Header(name: "DKIM-Signature", raw: Array("DKIM-Signature: \(value)\r\n".utf8))
        let data = signedHeaderData(headers, names: present, signature: unsigned, relaxed: true)
        let digest = SHA256.hash(data: data)
        let signature: Data
        switch key {
        case .rsa(let k): signature = try k.signature(for: digest, padding: .insecurePKCS1v1_5).rawRepresentation
        case .ed25519(let k): signature = try k.signature(for: Data(digest))
        }
        // Folded at 76 columns so the field stays within line limits.
        let b64 = signature.base64EncodedString()
        var folded = ""
        var index = b64.startIndex
        while index < b64.endIndex {
            let end = b64.index(index, offsetBy: 72, limitedBy: b64.endIndex) ?? b64.endIndex
            folded += (folded.isEmpty ? "" : "\r\n\t") + b64[index..<end]
            index = end
        }
        let field = Array("DKIM-Signature: \(value)\(folded)\r\n".utf8)
        return field + headers.flatMap(\.raw) + [0x0D, 0x0A] + body
    }
}
