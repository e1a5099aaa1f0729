import Foundation
import MTASTSCore
import NIOCore
import NIOSSL

/// Holds what the verification callback saw, for the caller to report.
final class VerificationRecord: @unchecked Sendable {
    private let lock = NSLock()
    private var _verdict: CertificateVerdict?
    private var _peer: PeerCertificate?

    var verdict: CertificateVerdict? { lock.withLock { _verdict } }
    var peer: PeerCertificate? { lock.withLock { _peer } }

    func record(_ verdict: CertificateVerdict, _ peer: PeerCertificate?) {
        lock.withLock {
            _verdict = verdict
            _peer = peer
        }
    }
}

public enum TLSSetup {
    /// The client context: TLS 1.2 or newer (RFC 8461 §7.2), verification done by our callback.
    /// One context serves every connection (BoringSSL contexts are thread-safe); it loads no trust
    /// roots of its own, since the callback checks chains against the `CertificateChecker`'s.
    static let sharedContext: Result<NIOSSLContext, any Error> = Result {
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.minimumTLSVersion = .tlsv12
        configuration.trustRoots = .certificates([])
        // .noHostnameVerification plus a custom callback: the callback decides, and it checks the name.
        configuration.certificateVerification = .noHostnameVerification
        return try NIOSSLContext(configuration: configuration)
    }

    static func clientContext() throws -> NIOSSLContext { try sharedContext.get() }

    /// A handler whose verification classifies the chain with `checker`; `strict` fails the
    /// handshake on an invalid chain, otherwise the handshake goes on and the verdict is recorded.
    static func clientHandler(host: String, checker: CertificateChecker, record: VerificationRecord, strict: Bool) throws -> NIOSSLClientHandler {
        try NIOSSLClientHandler(context: clientContext(), serverHostname: host) { certificates, promise in
            let der = certificates.compactMap { try? $0.toDERBytes() }
            promise.completeWithTask {
                let (verdict, peer) = await checker.check(chain: der, host: host)
                record.record(verdict, peer)
                return verdict.isValid || !strict ? .certificateVerified : .failed
            }
        }
    }

    static func describe(_ version: TLSVersion?) -> String? {
        switch version {
        case .tlsv1?: return "TLSv1.0"
        case .tlsv11?: return "TLSv1.1"
        case .tlsv12?: return "TLSv1.2"
        case .tlsv13?: return "TLSv1.3"
        case nil: return nil
        @unknown default: return "\(version!)"
        }
    }
}
