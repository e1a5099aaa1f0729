/// An `mx` value of a policy: an exact host name or `*.` followed by a domain (RFC 8461 §3.2, §4.1).
public struct MXPattern: Hashable, Sendable, CustomStringConvertible, Comparable {
    /// Normalised (lowercase) text, e.g. `*.mail.example.com`.
    public let text: String
    /// True for `*.domain`: matches exactly one additional left-most label.
    public var isWildcard: Bool { text.hasPrefix("*.") }
    /// The domain part: the whole name, or what follows `*.`.
    public var base: String { isWildcard ? String(text.dropFirst(2)) : text }

    public var description: String { text }
    public static func < (a: MXPattern, b: MXPattern) -> Bool { a.text < b.text }

    /// A pattern already in normalised form (checked by the caller).
    init(canonical text: String) { self.text = text }

    /// Validates a policy `mx` value strictly: `["*."] Domain` with Domain per RFC 5321 (LDH A-labels,
    /// no trailing dot).
    public init(strict value: String) throws(DomainName.Invalid) {
        var rest = Substring(value)
        let wildcard = rest.hasPrefix("*.")
        if wildcard { rest = rest.dropFirst(2) }
        guard !rest.isEmpty else { throw DomainName.Invalid(input: value, reason: "no domain after '*.'") }
        if rest.hasSuffix(".") {
            throw DomainName.Invalid(input: value, reason: "a trailing dot is not allowed in a policy mx")
        }
        for label in rest.split(separator: ".", omittingEmptySubsequences: false) {
            if label.utf8.contains(UInt8(ascii: "*")) {  // bytes: Foundation's contains(String) searched with locale rules
                throw DomainName.Invalid(input: value, reason: "'*' is allowed only as the whole left-most label")
            }
            if let problem = DomainName.labelProblem(label) {
                throw DomainName.Invalid(input: value, reason: problem)
            }
        }
        guard rest.utf8.count <= 253 else { throw DomainName.Invalid(input: value, reason: "longer than 253 octets") }
        text = (wildcard ? "*." : "") + rest.lowercased()
    }

    /// Does the MX host name match this pattern? Case-insensitive, one trailing dot ignored, a
    /// wildcard covers exactly one whole label (`*.example.com` matches `mail.example.com`, never
    /// `example.com` nor `a.b.example.com`).
    public func matches(_ host: DomainName) -> Bool { matches(normalized: host.text) }

    /// The same for a host name already normalised (lower case, A-labels, no trailing dot), as
    /// the resolver keeps the MX hosts: no parsing.
    public func matches(normalized h: String) -> Bool {
        if !isWildcard { return h == text }
        let b = base
        guard h.utf8.count > b.utf8.count + 1, h.hasSuffix(b) else { return false }
        let head = h.utf8.dropLast(b.utf8.count)
        // head is "label." with exactly one dot, at its end.
        guard head.last == 0x2E else { return false }
        return !head.dropLast().contains(0x2E) && !head.dropLast().isEmpty
    }

    /// Tolerant matching of text as found in the wild (a trailing dot on either side, case, U-labels);
    /// patterns such as `*`, `foo*.example.com` or the empty string never match.
    public static func matches(host: String, pattern: String) -> Bool {
        guard let h = try? DomainName(host) else { return false }
        var p = String(pattern.trimmingWSP())
        if p.hasSuffix(".") { p.removeLast() }
        let wildcard = p.hasPrefix("*.")
        let baseText = wildcard ? String(p.dropFirst(2)) : p
        guard let base = try? DomainName(baseText) else { return false }
        guard let pat = try? MXPattern(strict: (wildcard ? "*." : "") + base.text) else { return false }
        return pat.matches(h)
    }
}

