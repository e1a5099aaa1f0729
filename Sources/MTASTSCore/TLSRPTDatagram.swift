/// One TLS handshake result as Postfix 3.10+ sends it through libtlsrpt: a hand-printed JSON
/// datagram (`../shared/interop/libtlsrpt-datagrams.md`). Decoded tolerantly where libtlsrpt
/// is loose (missing `dpv`, missing `policy-domain`, bytes that are not UTF-8, the two meanings
/// of `f`), strictly where meaning would change (policy type, codes, the final result).
public struct TLSRPTDatagram: Sendable, Equatable {
    public struct Policy: Sendable, Equatable {
        public var type: PolicyType
        /// `policy-domain`; for no-policy-found without one, the datagram's domain.
        public var domain: String
        public var strings: [String]
        public var mxHosts: [String]
        public var failures: [FailureDetail]
        /// Top-level `f` of the policy: the session failed.
        public var failed: Bool

        public init(type: PolicyType, domain: String, strings: [String], mxHosts: [String], failures: [FailureDetail], failed: Bool) {
            self.type = type
            self.domain = domain
            self.strings = strings
            self.mxHosts = mxHosts
            self.failures = failures
            self.failed = failed
        }
    }

    public init(protocolVersion: String?, domain: String, record: String, policies: [Policy], repairedUTF8: Bool) {
        self.protocolVersion = protocolVersion
        self.domain = domain
        self.record = record
        self.policies = policies
        self.repairedUTF8 = repairedUTF8
    }

    /// `dpv`, nil when the sender left it out (libtlsrpt before 0.5).
    public var protocolVersion: String?
    /// `d`: the TLSRPT policy domain, lowercased, one trailing dot removed.
    public var domain: String
    /// `pr`: the raw `_smtp._tls` TXT record Postfix found.
    public var record: String
    public var policies: [Policy]
    /// Bytes that were not UTF-8 were replaced with U+FFFD.
    public var repairedUTF8: Bool

    public struct Malformed: Error, Sendable, Equatable, CustomStringConvertible {
        public var reason: String
        public var description: String { reason }
        init(_ reason: String) { self.reason = reason }
    }

    /// libtlsrpt's failure codes (`c`) and the RFC 8460 result types they stand for.
    public static let codes: [Int64: ResultType] = [
        201: .starttlsNotSupported, 202: .certificateHostMismatch, 203: .certificateNotTrusted, 204: .certificateExpired,
        205: .validationFailure, 301: .stsPolicyFetchError, 302: .stsPolicyInvalid, 303: .stsWebPKIInvalid,
        304: .tlsaInvalid, 305: .dnssecInvalid, 306: .daneRequired,
    ]

    /// libtlsrpt's policy types.
    public static let policyTypes: [Int64: PolicyType] = [1: .tlsa, 2: .sts, 9: .noPolicyFound]

    /// Largest datagram accepted: larger than any libtlsrpt can send (the socket buffer, ~212 KB).
    public static let maxSize = 262_144

    public static func decode(_ bytes: [UInt8]) throws(Malformed) -> TLSRPTDatagram {
        guard !bytes.isEmpty else { throw Malformed("empty datagram") }
        guard bytes.count <= maxSize else { throw Malformed("datagram of \(bytes.count) bytes is larger than \(maxSize)") }
        // libtlsrpt passes bytes ≥ 0x80 through raw: repair them instead of refusing the session
        // (checked only when the parser refuses the bytes: the common case pays nothing).
        var repaired = false
        let root: JSONValue
        do { root = try JSONParser.parse(bytes).value } catch {
            guard String(validating: bytes, as: UTF8.self) == nil else { throw Malformed("not JSON: \(error)") }
            repaired = true
            do { root = try JSONParser.parse(Array(String(decoding: bytes, as: UTF8.self).utf8)).value } catch {
                throw Malformed("not JSON: \(error)")
            }
        }
        guard case .object = root else { throw Malformed("not a JSON object") }
        if let dpv = root["dpv"], case .string(let v) = dpv, v != "1" {
            throw Malformed("unknown protocol version dpv \(v)")
        }
        guard case .string(let rawDomain)? = root["d"] else { throw Malformed("no domain 'd'") }
        // 'd' names the recipient domain the report goes to, 'pr' the record that says where: both
        // end up in the report, its file name and the mail's headers, so both must be what they
        // claim to be (a domain name; a valid TLSRPT record).
        guard let domain = try? DomainName(rawDomain).text, !rawDomain.utf8.contains(where: { $0 <= 0x20 }) else {
            throw Malformed(rawDomain.isEmpty ? "empty domain 'd'" : "domain 'd' is not a domain name")
        }
        guard case .string(let record)? = root["pr"] else { throw Malformed("no TLSRPT record 'pr'") }
        guard TLSRPTRecord.parse(record).record != nil else { throw Malformed("'pr' is not a valid TLSRPT record") }
        guard case .array(let items)? = root["policies"], !items.isEmpty else { throw Malformed("no 'policies' array") }
        var policies: [Policy] = []
        for item in items {
            guard case .object = item else { throw Malformed("a policy is not an object") }
            guard case .int(let t)? = item["policy-type"], let type = policyTypes[t] else {
                throw Malformed("policy-type is missing or unknown (1, 2 or 9)")
            }
            var policyDomain = domain
            if case .string(let pd)? = item["policy-domain"] {
                guard let name = try? DomainName(pd).text, !pd.utf8.contains(where: { $0 <= 0x20 }) else {
                    throw Malformed("policy-domain is not a domain name")
                }
                policyDomain = name
            }
            let strings = try stringArray(item["policy-string"], "policy-string")
            let mx = try stringArray(item["mx-host"], "mx-host")
            guard case .int(let final)? = item["f"], final == 0 || final == 1 else { throw Malformed("policy 'f' (final result) must be 0 or 1") }
            var failures: [FailureDetail] = []
            if let detailsValue = item["failure-details"] {
                guard case .array(let details) = detailsValue else { throw Malformed("failure-details is not an array") }
                for detail in details {
                    guard case .object = detail else { throw Malformed("a failure detail is not an object") }
                    guard case .int(let code)? = detail["c"] else { throw Malformed("a failure detail has no code 'c'") }
                    func s(_ k: String) throws(Malformed) -> String? {
                        switch detail[k] {
                        case nil, .null?: return nil
                        case .string(let v)?: return v
                        default: throw Malformed("failure detail '\(k)' is not a string")
                        }
                    }
                    failures.append(FailureDetail(
                        resultType: codes[code] ?? .other("code-\(code)"), sendingMTAIP: try s("s"), receivingMXHostname: try s("n"),
                        receivingMXHelo: try s("h"), receivingIP: try s("r"), failedSessionCount: 1,
                        additionalInformation: try s("a"), failureReasonCode: try s("f")))
                }
            }
            policies.append(Policy(type: type, domain: policyDomain, strings: strings, mxHosts: mx, failures: failures, failed: final == 1))
        }
        var protocolVersion: String?
        if case .string(let v)? = root["dpv"] { protocolVersion = v }
        return TLSRPTDatagram(protocolVersion: protocolVersion, domain: domain, record: record, policies: policies, repairedUTF8: repaired)
    }

    private static func stringArray(_ value: JSONValue?, _ name: String) throws(Malformed) -> [String] {
        switch value {
        case nil, .null?: return []
        case .array(let items)?:
            var out: [String] = []
            for item in items {
                guard case .string(let s) = item else { throw Malformed("'\(name)' holds a non-string") }
                out.append(s)
            }
            return out
        default: throw Malformed("'\(name)' is not an array")
        }
    }
}
