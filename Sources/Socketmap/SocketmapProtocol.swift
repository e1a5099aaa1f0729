// The fuzz target compiles this file into one module with MTASTSCore's sources.
#if canImport(MTASTSCore)
import MTASTSCore
#endif

/// A socketmap request, `name key` (Postfix socketmap_table(5)).
public struct SocketmapRequest: Sendable, Equatable {
    public var name: String
    public var key: String

    public init(name: String, key: String) {
        self.name = name
        self.key = key
    }

    /// Parses a request payload; nil when it is not `name SP key` in UTF-8.
    public static func parse(_ payload: [UInt8]) -> SocketmapRequest? {
        guard let text = String(validating: payload, as: UTF8.self), let space = text.firstIndex(of: " ") else { return nil }
        let name = String(text[..<space])
        let key = String(text[text.index(after: space)...])
        guard !name.isEmpty, !key.isEmpty, !key.utf8.contains(0x20) else { return nil }
        return SocketmapRequest(name: name, key: key)
    }
}

/// What the TLS policy map is asked: Postfix passes the next-hop, which may carry brackets, a
/// port or a trailing dot. Domain patterns (`.example.com`) and address literals are not policy
/// domains (RFC 8461 §3.4: address literals are not covered), so they have none.
public enum SocketmapKey {
    public static func policyDomain(_ key: String) -> DomainName? {
        var k = Substring(key)
        if k.hasPrefix(".") { return nil }
        if k.hasPrefix("[") {
            guard let close = k.firstIndex(of: "]") else { return nil }
            k = k[k.index(after: k.startIndex)..<close]
        } else if let colon = k.lastIndex(of: ":"), k.firstIndex(of: ":") == colon {
            k = k[..<colon]  // host:port (one colon; several would be IPv6)
        }
        if k.utf8.contains(UInt8(ascii: ":")) { return nil }  // IPv6 literal
        let labels = k.split(separator: ".", omittingEmptySubsequences: false).filter { !$0.isEmpty }
        if labels.count == 4, labels.allSatisfy({ Int($0).map { $0 >= 0 && $0 <= 255 } == true }) { return nil }  // IPv4
        return try? DomainName(String(k))
    }
}

/// The replies of the TLS policy map.
public enum SocketmapReply {
    public static let notFound = "NOTFOUND "

    public static func temporary(_ reason: String) -> String { "TEMP " + sanitize(reason) }
    public static func permanent(_ reason: String) -> String { "PERM " + sanitize(reason) }

    /// `OK secure match=… servername=hostname` for a policy that applies, else `NOTFOUND `:
    /// mode none, and testing unless `strictTesting`, are no TLS requirement for Postfix.
    /// `match=` is sorted, so the reply is deterministic. With `tlsrpt` (Postfix ≥ 3.10) the
    /// TLSRPT attributes follow. Without `requireSNI` the reply lacks `servername=hostname` (the
    /// reference daemon's `require_sni: false`).
    ///
    /// A wildcard `*.x` covers one label (RFC 8461 §4.1), but Postfix's `.x` accepts any depth.
    /// So unless Postfix enforces `mx_host_pattern=` itself (`enforcePatterns`, Postfix ≥ 3.10.5
    /// with `smtp_tls_enforce_sts_mx_patterns`; the attributes are then sent even without
    /// `tlsrpt`), a wildcard is answered with the MX hosts it covers (`mxHosts`, the domain's MX
    /// names): a name two labels below is not accepted. With MX hosts never looked up, the reply
    /// is `TEMP` rather than the wider `.x`.
    public static func render(policy: STSPolicy, domain: DomainName, strictTesting: Bool = false, tlsrpt: Bool = false, requireSNI: Bool = true,
                              mxHosts: [String]? = nil, enforcePatterns: Bool = false) -> String {
        switch policy.mode {
        case .none: return notFound
        case .testing where !strictTesting: return notFound
        default: break
        }
        guard !policy.mx.isEmpty else { return notFound }
        var names: Set<String> = []
        for pattern in policy.mx {
            if !pattern.isWildcard {
                names.insert(pattern.text)
            } else if enforcePatterns {
                names.insert("." + pattern.base)
            } else if let mxHosts {
                names.formUnion(mxHosts.filter { pattern.matches(normalized: $0) })  // kept normalised by the resolver
            } else {
                return temporary("the MX hosts of \(domain.text) are not known yet (a wildcard is answered with the hosts it covers)")
            }
        }
        // No MX host matches: a name that matches no certificate, never an empty match= (Postfix
        // would fall back to its own default names).
        let match = names.isEmpty ? noMatch : names.sorted().joined(separator: ":")
        var reply = "OK secure match=\(match)" + (requireSNI ? " servername=hostname" : "")
        guard tlsrpt || enforcePatterns else { return reply }
        var attributes = " policy_type=sts policy_domain=\(domain.text)"
        attributes += policy.mx.map { " mx_host_pattern=\($0.text)" }.joined()
        // A value in braces ends at the first '}': a policy line holding '{' or '}' (an extension
        // a stranger wrote) could add attributes of its own, so it is left out of policy_string
        // (the report then lists the policy's other lines; Postfix's enforcement never reads it).
        attributes += policy.lines.filter { !$0.utf8.contains(UInt8(ascii: "{")) && !$0.utf8.contains(UInt8(ascii: "}")) }.map { " { policy_string = \($0) }" }.joined()
        // Postfix refuses a socketmap reply over socketmap_max_reply_size (100,000 bytes by
        // default); rather than lose the policy, the TLSRPT attributes are dropped.
        guard reply.utf8.count + attributes.utf8.count <= maxReplySize else { return reply }
        return reply + attributes
    }

    /// What `match=` holds when no MX host is covered by the policy (`.invalid` never resolves
    /// nor appears in a publicly trusted certificate, RFC 6761).
    public static let noMatch = "no-mx-host-matches-the-policy.invalid"

    /// Postfix's socketmap_max_reply_size default.
    public static let maxReplySize = 100_000

    /// Replies are one line of printable ASCII.
    static func sanitize(_ text: String) -> String {
        String(String.UnicodeScalarView(text.unicodeScalars.map { $0.isASCII && $0.value >= 0x20 && $0.value < 0x7F ? $0 : "?" }))
    }
}
