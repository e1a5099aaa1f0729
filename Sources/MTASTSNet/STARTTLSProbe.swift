import Foundation
import MTASTSCore
import NIOCore
import NIOPosix
import NIOSSL

/// What an MX said and showed: banner, EHLO extensions, STARTTLS, TLS version, certificate, and
/// the RFC 8460 result type when something fails (RFC 8461 §4).
public struct ProbeResult: Sendable {
    public var banner: String?
    public var extensions: [String] = []
    public var starttlsOffered = false
    public var tlsVersion: String?
    public var certificate: PeerCertificate?
    public var certificateVerdict: CertificateVerdict?
    /// `starttls-not-supported`, a certificate type, or `validation-failure` for a failed handshake;
    /// nil when STARTTLS and the certificate are fine.
    public var failure: (type: ResultType, reason: String)?
    /// The server could not be reached or did not answer in time (not a TLS verdict: transient).
    public var unreachable: String?
    public var elapsed: Duration = .zero
}

/// Connects to an MX, reads the banner, says EHLO, asks for STARTTLS, does the handshake with SNI
/// set to the MX name and checks the certificate; each step has its own time limit, so a server
/// that stalls (a tarpit) is cut off.
public struct STARTTLSProbe: Sendable {
    public var checker: CertificateChecker
    public var port: Int
    public var stepTimeout: TimeAmount
    public var ehloName: String
    public var group: any EventLoopGroup

    public init(checker: CertificateChecker, port: Int = 25, stepTimeout: TimeAmount = .seconds(20), ehloName: String = "mtasts.invalid", group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) {
        self.checker = checker
        self.port = port
        self.stepTimeout = stepTimeout
        self.ehloName = ehloName
        self.group = group
    }

    public func probe(mx host: String, address: String) async -> ProbeResult {
        let start = ContinuousClock.now
        let record = VerificationRecord()
        let checker = self.checker, ehloName = self.ehloName
        var result = ProbeResult()
        var handshaking = false
        do {
            try await SMTPConversation.run(host: address, port: port, group: group, stepTimeout: stepTimeout) { smtp in
                let banner = try await smtp.reply(step: "to the connection (banner)")
                result.banner = banner.text
                guard banner.code == 220 else { throw SMTPConversation.Failure.reply(step: "to the connection", code: banner.code, text: banner.text) }
                result.extensions = Array(try await smtp.command("EHLO \(ehloName)", expect: 250...250).lines.dropFirst())
                result.starttlsOffered = result.extensions.contains { $0.uppercased() == "STARTTLS" }
                guard result.starttlsOffered else {
                    result.failure = (.starttlsNotSupported, "the server does not offer STARTTLS")
                    return await smtp.send("QUIT")
                }
                let answer = try await smtp.command("STARTTLS")
                guard answer.code == 220 else {
                    result.failure = (.starttlsNotSupported, "the server refused STARTTLS: '\(answer.code) \(answer.text.prefix(200))'")
                    return await smtp.send("QUIT")
                }
                handshaking = true
                result.tlsVersion = try await smtp.startTLS { try TLSSetup.clientHandler(host: host, checker: checker, record: record, strict: false) }
                handshaking = false
                await smtp.send("QUIT")
            }
        } catch let failure as SMTPConversation.Failure {
            // A stalled handshake is a server that stopped answering (as before), not a TLS verdict;
            // a handler that could not be set up says nothing about the server's TLS either.
            switch failure {
            case .timeout(let step): result.unreachable = "no answer within \(stepTimeout.nanoseconds / 1_000_000_000) s \(step)"
            case .plaintextAfterSTARTTLS: result.failure = (.validationFailure, failure.description)
            default: result.unreachable = failure.description
            }
        } catch {
            if handshaking {
                result.failure = (.validationFailure, "the TLS handshake failed: \(error)")
            } else {
                result.unreachable = PolicyFetcher.describe(error, host: host, address: address, port: port)
            }
        }
        result.certificate = record.peer
        result.certificateVerdict = record.verdict
        if result.failure == nil, case .invalid(let type, let why)? = record.verdict {
            result.failure = (type, why)
        }
        result.elapsed = ContinuousClock.now - start
        return result
    }
}
