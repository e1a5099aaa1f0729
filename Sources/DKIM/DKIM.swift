import Crypto
import Foundation
import _CryptoExtras

/// Verification and signing (the parts that need cryptography).
extension DKIM {
    // MARK: verification

    /// Verifies every DKIM-Signature of a message (at most 5); returns one result each, or one
    /// `none` result when there is no signature. A pass is one result with status `pass`.
    public static func verify(_ message: [UInt8], lookup: KeyLookup, now: Date = Date()) async -> [Result] {
        let (headers, body) = split(message)
        let signatures = headers.filter { $0.name.lowercased() == "dkim-signature" }
        if signatures.isEmpty { return [Result(status: .none, domain: nil, selector: nil, reason: "the message is not signed")] }
        guard headers.count <= maxHeaderFields else {
            return [Result(status: .permerror, domain: nil, selector: nil, reason: "more than \(maxHeaderFields) header fields: not verified")]
        }
        // The work one message may cause is bounded: at most 5 signatures, each with at most
        // `maxSignedNames` names in h=, header look-ups through one index (no quadratic scan),
        // each body canonicalisation hashed once, keys of at most 8,192 bits.
        let index = HeaderIndex(headers)
        var bodyHashes: [Bool: Data] = [:]
        var results: [Result] = []
        for signature in signatures.prefix(5) {
            results.append(await verifyOne(signature, headers: headers, index: index, body: body, bodyHashes: &bodyHashes, lookup: lookup, now: now))
        }
        return results
    }

    /// Header fields in a message that is verified at all; names in one h= list.
    public static let maxHeaderFields = 1_000
    public static let maxSignedNames = 64
    public static let maxRSABits = 8_192

    static func verifyOne(_ signature: Header, headers: [Header], index: HeaderIndex, body: [UInt8], bodyHashes: inout [Bool: Data],
                          lookup: KeyLookup, now: Date) async -> Result {
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
        guard names.count <= maxSignedNames else { return perm("h= names more than \(maxSignedNames) header fields") }
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
        let bodyHash = bodyHashes[bodyRelaxed] ?? Data(SHA256.hash(data: canonicalBody(body, relaxed: bodyRelaxed)))
        bodyHashes[bodyRelaxed] = bodyHash
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
        let data = signedHeaderData(headers, index: index, names: names, signature: signature, relaxed: headerRelaxed)
        let digest = SHA256.hash(data: data)
        let valid: Bool
        switch (algorithm, keyType) {
        case ("rsa-sha256", "rsa"):
            guard let key = try? _RSA.Signing.PublicKey(unsafeDERRepresentation: keyBytes) else { return perm("the RSA key at \(keyName) is not usable (at least 1024 bits)") }
            guard key.keySizeInBits <= maxRSABits else { return perm("the RSA key at \(keyName) has more than \(maxRSABits) bits") }
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

        /// The record as a zone-file line; long values split into strings of at most 255 bytes.
        public func zoneLine(selector: String, domain: String) -> String {
            var chunks: [String] = []
            var rest = Substring(dnsRecord)
            while !rest.isEmpty {
                chunks.append(String(rest.prefix(255)))
                rest = rest.dropFirst(255)
            }
            return "\(selector)._domainkey.\(domain.lowercased()). IN TXT " + chunks.map { "\"\($0)\"" }.joined(separator: " ")
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
