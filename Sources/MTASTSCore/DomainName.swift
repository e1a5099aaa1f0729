import Foundation

/// A DNS domain name, normalised once: surrounding white space trimmed, one trailing root dot
/// stripped, lowercase, Unicode labels converted to IDNA A-labels (RFC 8461 §3.2 wants A-labels).
///
/// Two `DomainName`s compare equal when their normalised texts are equal, which is the label-wise,
/// case-insensitive ASCII comparison of RFC 6125 once both are A-labels.
public struct DomainName: Hashable, Sendable, CustomStringConvertible, Comparable {
    /// The normalised name, e.g. `xn--mnchen-3ya.example`.
    public let text: String

    /// The labels, left to right.
    public var labels: [Substring] { text.split(separator: ".", omittingEmptySubsequences: false) }

    public var description: String { text }

    public static func < (lhs: DomainName, rhs: DomainName) -> Bool { lhs.text < rhs.text }

    /// Why a text is not a usable domain name.
    public struct Invalid: Error, Sendable, CustomStringConvertible, Equatable {
        public let input: String
        public let reason: String
        public var description: String { "'\(input)' is not a valid domain name: \(reason)" }
    }

    /// Normalises and validates a host name.
    ///
    /// - Parameters:
    ///   - string: the name as written; a trailing dot and surrounding spaces are tolerated.
    ///   - allowUnderscore: accept `_` in labels (`_mta-sts.example.com`, `_smtp._tls…`).
    public init(_ string: String, allowUnderscore: Bool = false) throws(Invalid) {
        // The common case (a lowercase LDH name as written) is checked in one pass over the bytes
        // and kept as it is: no copy, no split.
        if DomainName.isPlainLDH(string.utf8, allowUnderscore: allowUnderscore) {
            text = string
            return
        }
        var s = String(string.trimmingWSP())
        if s.utf8.last == 0x2E { s.removeLast() }
        guard !s.isEmpty else { throw Invalid(input: string, reason: "empty") }
        if s.utf8.contains(where: { $0 >= 0x80 }) {
            var components = URLComponents()
            components.host = s
            guard let encoded = components.encodedHost, encoded.unicodeScalars.allSatisfy(\.isASCII),
                !encoded.contains("%")
            else { throw Invalid(input: string, reason: "cannot be converted to IDNA A-labels") }
            s = encoded
        }
        if s.utf8.contains(where: { $0 >= 0x41 && $0 <= 0x5A }) { s = s.lowercased() }
        guard s.utf8.count <= 253 else { throw Invalid(input: string, reason: "longer than 253 octets") }
        for label in s.split(separator: ".", omittingEmptySubsequences: false) {
            if let reason = DomainName.labelProblem(label, allowUnderscore: allowUnderscore) {
                throw Invalid(input: string, reason: reason)
            }
        }
        text = s
    }

    /// Normalises a recipient or domain input: `User@Example.Test.` becomes `example.test`.
    public init(addressOrDomain string: String) throws(Invalid) {
        var s = String(string.trimmingWSP())
        if let at = s.lastIndex(of: "@") { s = String(s[s.index(after: at)...]) }
        try self.init(s)
    }

    /// Is the text already a normalised name: at most 253 octets of lowercase LDH labels (1–63
    /// octets, no '-' at either end), no trailing dot, no white space? Exactly the names the full
    /// path below keeps unchanged, so taking them as they are gives the same result.
    static func isPlainLDH<C: Collection>(_ bytes: C, allowUnderscore: Bool = false) -> Bool where C.Element == UInt8 {
        guard !bytes.isEmpty, bytes.count <= 253 else { return false }
        var length = 0
        var last: UInt8 = 0x2E
        for b in bytes {
            if b == 0x2E {
                guard length > 0, last != 0x2D else { return false }
                length = 0
            } else {
                let ok = (b >= 0x61 && b <= 0x7A) || (b >= 0x30 && b <= 0x39) || (b == 0x2D && length > 0)
                    || (allowUnderscore && b == 0x5F)
                guard ok else { return false }
                length += 1
                guard length <= 63 else { return false }
            }
            last = b
        }
        return length > 0 && last != 0x2D
    }

    /// Returns the reason an ASCII label is not an LDH label (RFC 5321 §4.1.2), or nil.
    static func labelProblem(_ label: Substring, allowUnderscore: Bool = false) -> String? {
        let bytes = label.utf8
        guard !bytes.isEmpty else { return "empty label" }
        guard bytes.count <= 63 else { return "label '\(label)' is longer than 63 octets" }
        for b in bytes {
            let ok = (b >= 0x61 && b <= 0x7A) || (b >= 0x41 && b <= 0x5A) || (b >= 0x30 && b <= 0x39)
                || b == 0x2D || (allowUnderscore && b == 0x5F)
            if !ok {
                return b >= 0x80
                    ? "label '\(label)' is not ASCII (use the IDNA A-label)"
                    : "label '\(label)' has a character other than letters, digits and '-'"
            }
        }
        if bytes.first == 0x2D || bytes.last == 0x2D { return "label '\(label)' begins or ends with '-'" }
        return nil
    }

    /// The name of the MTA-STS TXT record, `_mta-sts.<domain>`.
    public var stsRecordName: String { "_mta-sts." + text }
    /// The name of the TLS-RPT TXT record, `_smtp._tls.<domain>`.
    public var tlsrptRecordName: String { "_smtp._tls." + text }
    /// The policy host, `mta-sts.<domain>`.
    public var policyHost: String { "mta-sts." + text }
    /// The policy URL (RFC 8461 §3.3).
    public var policyURL: String { "https://mta-sts.\(text)/.well-known/mta-sts.txt" }
}
