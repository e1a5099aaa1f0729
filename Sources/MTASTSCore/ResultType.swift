/// The result types of RFC 8460 §4.3 (the IANA "STARTTLS Validation Result Types" registry), plus
/// whatever else a sender writes, kept as it came: the registry can grow.
public enum ResultType: Hashable, Sendable, CustomStringConvertible, CaseIterable {
    case starttlsNotSupported
    case certificateHostMismatch
    case certificateExpired
    case certificateNotTrusted
    case validationFailure
    case tlsaInvalid
    case dnssecInvalid
    case daneRequired
    case stsPolicyFetchError
    case stsPolicyInvalid
    case stsWebPKIInvalid
    case other(String)

    public static let allCases: [ResultType] = [
        .starttlsNotSupported, .certificateHostMismatch, .certificateExpired, .certificateNotTrusted,
        .validationFailure, .tlsaInvalid, .dnssecInvalid, .daneRequired, .stsPolicyFetchError,
        .stsPolicyInvalid, .stsWebPKIInvalid,
    ]

    public var rawValue: String {
        switch self {
        case .starttlsNotSupported: return "starttls-not-supported"
        case .certificateHostMismatch: return "certificate-host-mismatch"
        case .certificateExpired: return "certificate-expired"
        case .certificateNotTrusted: return "certificate-not-trusted"
        case .validationFailure: return "validation-failure"
        case .tlsaInvalid: return "tlsa-invalid"
        case .dnssecInvalid: return "dnssec-invalid"
        case .daneRequired: return "dane-required"
        case .stsPolicyFetchError: return "sts-policy-fetch-error"
        case .stsPolicyInvalid: return "sts-policy-invalid"
        case .stsWebPKIInvalid: return "sts-webpki-invalid"
        case .other(let s): return s
        }
    }

    public init(_ raw: String) {
        self = ResultType.allCases.first { $0.rawValue == raw } ?? .other(raw)
    }

    public var isRegistered: Bool {
        if case .other = self { return false }
        return true
    }

    public var description: String { rawValue }
}

/// `policy-type` of a report (RFC 8460 §4.4), unknown values kept.
public enum PolicyType: Hashable, Sendable, CustomStringConvertible {
    case sts, tlsa, noPolicyFound
    case other(String)

    public var rawValue: String {
        switch self {
        case .sts: return "sts"
        case .tlsa: return "tlsa"
        case .noPolicyFound: return "no-policy-found"
        case .other(let s): return s
        }
    }

    public init(_ raw: String) {
        switch raw {
        case "sts": self = .sts
        case "tlsa": self = .tlsa
        case "no-policy-found": self = .noPolicyFound
        default: self = .other(raw)
        }
    }

    public var description: String { rawValue }
}
