import Foundation
import MTASTSCore
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL

/// The outcome of fetching `https://mta-sts.DOMAIN/.well-known/mta-sts.txt` (RFC 8461 §3.3).
public struct PolicyFetchResult: Sendable {
    public init() {}
    /// The body, when the fetch met every rule (TLS, certificate, 200, no redirect, size, time).
    public var body: [UInt8]?
    /// Why not: the RFC 8460 result type (`sts-policy-fetch-error` or `sts-webpki-invalid`) and a reason.
    public var failure: (type: ResultType, reason: String)?
    public var status: Int?
    public var contentType: String?
    /// `Location` of a redirect (reported, never followed).
    public var location: String?
    public var certificate: PeerCertificate?
    public var certificateVerdict: CertificateVerdict?
    public var tlsVersion: String?
    public var elapsed: Duration = .zero

    /// Content-Type is `text/plain`, parameters aside (RFC 8461 §3.2 SHOULD).
    public var isTextPlain: Bool {
        guard let contentType else { return false }
        return contentType.split(separator: ";").first.map { $0.trimmingCharacters(in: .whitespaces).lowercased() } == "text/plain"
    }
}

extension PolicyFetchResult {
    /// What a sender makes of this fetch (RFC 8461 §3.3, §5): the policy it applies, or the RFC
    /// 8460 result type of why it treats the domain as having none. One rule, used by the resolver
    /// (daemon, `query`) and by `check`, so the two agree.
    public var senderOutcome: Result<STSPolicy, SenderRefusal> {
        if let failure { return .failure(SenderRefusal(type: failure.type, reason: failure.reason)) }
        guard let body else { return .failure(SenderRefusal(type: .stsPolicyFetchError, reason: "no body")) }
        guard isTextPlain else {
            // RFC 8461 §3.2: the policy is text/plain; like the reference daemon, anything else is refused.
            return .failure(SenderRefusal(type: .stsPolicyInvalid, reason: "the policy is served as '\(contentType ?? "no Content-Type")', not text/plain"))
        }
        let parsed = STSPolicy.parse(body)
        guard let policy = parsed.policy else {
            return .failure(SenderRefusal(type: .stsPolicyInvalid, reason: parsed.diagnostics.errors.first.map { "line \($0.line ?? 0): \($0.message)" } ?? "invalid policy"))
        }
        return .success(policy)
    }

    /// Nothing answered at this address (no TLS, no HTTP): the next address is worth a try.
    public var unreachable: Bool { failure != nil && status == nil && certificate == nil }
}

/// Why a sender does not apply a domain's policy.
public struct SenderRefusal: Error, Sendable, Equatable {
    public var type: ResultType
    public var reason: String
    public init(type: ResultType, reason: String) {
        self.type = type
        self.reason = reason
    }
}

/// Strict policy fetches: connects to an address our own resolver returned while SNI and the
/// certificate check use the policy host's name; TLS 1.2+; HTTP 200 only; redirects never
/// followed; the body capped while it streams; one deadline for the whole fetch, so a server that
/// trickles bytes is cut off.
public struct PolicyFetcher: Sendable {
    public var checker: CertificateChecker
    public var port: Int
    public var connectTimeout: TimeAmount
    public var deadline: TimeAmount
    public var maxBody: Int
    public var group: any EventLoopGroup

    public init(checker: CertificateChecker, port: Int = 443, connectTimeout: TimeAmount = .seconds(10), deadline: TimeAmount = .seconds(60), maxBody: Int = STSPolicy.maxBodySize, group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) {
        self.checker = checker
        self.port = port
        self.connectTimeout = connectTimeout
        self.deadline = deadline
        self.maxBody = maxBody
        self.group = group
    }

    /// Fetches the policy of `domain` from its policy host's `addresses` as a sender does: IPv4
    /// first, the next address only while none could be reached at all (once one answers, TLS or
    /// HTTP, its answer is the answer). `skipped` hears of each unreachable address left behind.
    public func fetch(domain: DomainName, addresses: [String], skipped: (String, String) -> Void = { _, _ in }) async -> PolicyFetchResult {
        let ordered = addresses.filter { !$0.contains(":") } + addresses.filter { $0.contains(":") }
        guard !ordered.isEmpty else {
            var none = PolicyFetchResult()
            none.failure = (.stsPolicyFetchError, "the policy host \(domain.policyHost) has no address")
            return none
        }
        var result = PolicyFetchResult()
        for (i, address) in ordered.enumerated() {
            result = await fetch(domain: domain, address: address)
            if !result.unreachable || i == ordered.count - 1 { break }
            skipped(address, result.failure?.reason ?? "")
        }
        return result
    }

    /// Fetches the policy of `domain` from `address` (an IP our resolver gave for `mta-sts.DOMAIN`).
    public func fetch(domain: DomainName, address: String) async -> PolicyFetchResult {
        let host = domain.policyHost
        let start = ContinuousClock.now
        let record = VerificationRecord()
        var result = PolicyFetchResult()
        let maxBody = self.maxBody
        do {
            let checker = self.checker
            var headers = HTTPHeaders()
            headers.add(name: "Host", value: host)
            headers.add(name: "User-Agent", value: "mtasts/0.1 (MTA-STS)")
            headers.add(name: "Accept", value: "text/plain")
            headers.add(name: "Connection", value: "close")
            headers.add(name: "Cache-Control", value: "no-cache")
            let outcome = try await HTTPSExchange.run(
                group: group, host: address, port: port,
                tls: { try TLSSetup.clientHandler(host: host, checker: checker, record: record, strict: true) },
                request: HTTPRequestHead(version: .http1_1, method: .GET, uri: "/.well-known/mta-sts.txt", headers: headers),
                maxBody: maxBody, connectTimeout: connectTimeout, deadline: deadline)
            result.tlsVersion = outcome.tlsVersion
            result.status = Int(outcome.head.status.code)
            result.contentType = outcome.head.headers.first(name: "content-type")
            result.location = outcome.head.headers.first(name: "location")
            if outcome.head.status.code != 200 {
                let what = (300..<400).contains(Int(outcome.head.status.code))
                    ? "a redirect (\(outcome.head.status.code))\(result.location.map { " to \($0)" } ?? ""), which senders never follow"
                    : "HTTP status \(outcome.head.status.code); only 200 is a policy"
                result.failure = (.stsPolicyFetchError, what)
            } else {
                result.body = outcome.body
            }
        } catch let error as HTTPSExchange.Failure {
            result.failure = (.stsPolicyFetchError, error.reason(deadline: deadline, maxBody: maxBody))
        } catch {
            if let verdict = record.verdict, case .invalid(_, let why) = verdict {
                result.failure = (.stsWebPKIInvalid, "the certificate of \(host) is not valid: \(why)")
            } else {
                result.failure = (.stsPolicyFetchError, PolicyFetcher.describe(error, host: host, address: address, port: port))
            }
        }
        result.certificate = record.peer
        result.certificateVerdict = record.verdict
        result.elapsed = ContinuousClock.now - start
        return result
    }

    static func describe(_ error: any Error, host: String, address: String, port: Int) -> String {
        if let e = error as? ChannelError, case .connectTimeout = e { return "connecting to \(address):\(port) timed out" }
        if let e = error as? IOError { return "cannot connect to \(address):\(port) (\(e.description))" }
        if error is NIOConnectionError { return "cannot connect to \(address):\(port)" }
        if let e = error as? NIOSSLError { return "TLS with \(host) failed: \(e)" }
        return "\(error)"
    }
}

extension HTTPSExchange.Failure {
    func reason(deadline: TimeAmount, maxBody: Int) -> String {
        switch self {
        case .timeout: return "no complete answer within \(deadline.nanoseconds / 1_000_000_000) s (a slow or trickling server)"
        case .tooLarge(let n): return "the policy is larger than \(maxBody) bytes (\(n) bytes read or announced)"
        case .closedEarly: return "the connection closed before the response was complete"
        }
    }
}
