import Foundation
import MTASTSCore
import SwiftASN1
import X509

/// What a server presented, for people to read.
public struct PeerCertificate: Sendable, Equatable {
    public var subject: String
    public var issuer: String
    public var dnsNames: [String]
    public var notBefore: Date
    public var notAfter: Date

    public init(subject: String, issuer: String, dnsNames: [String], notBefore: Date, notAfter: Date) {
        self.subject = subject
        self.issuer = issuer
        self.dnsNames = dnsNames
        self.notBefore = notBefore
        self.notAfter = notAfter
    }

    public func daysLeft(at now: Date = Date()) -> Int { Int((notAfter.timeIntervalSince(now) / 86_400).rounded(.down)) }
}

/// The verdict on a certificate chain (RFC 8461 §4.2, §3.3): valid, or the RFC 8460 result type
/// that says why not, with a reason a person understands.
public enum CertificateVerdict: Sendable, Equatable {
    case valid
    case invalid(ResultType, String)

    public var isValid: Bool { self == .valid }
}

/// Checks chains against trust anchors and a host name: chain to a trusted root, validity dates,
/// and a DNS-ID in the subjectAltName matching the name per RFC 6125 (no CN fallback; a wildcard
/// only as the whole left-most label).
public struct CertificateChecker: Sendable {
    public let roots: [Certificate]

    public struct LoadError: Error, CustomStringConvertible {
        public var description: String
    }

    /// - Parameters:
    ///   - systemRoots: include the system bundle (/etc/ssl/certs/ca-certificates.crt).
    ///   - extraPEMFiles: more trust anchors (e.g. `--ca-file`).
    public init(systemRoots: Bool = true, extraPEMFiles: [String] = []) throws(LoadError) {
        var roots: [Certificate] = []
        if systemRoots {
            for path in ["/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt"] {
                if let text = try? String(contentsOfFile: path, encoding: .utf8) {
                    roots += CertificateChecker.certificates(inPEM: text)
                    break
                }
            }
        }
        for path in extraPEMFiles {
            guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
                throw LoadError(description: "cannot read the CA file \(path)")
            }
            let found = CertificateChecker.certificates(inPEM: text)
            if found.isEmpty { throw LoadError(description: "\(path) holds no PEM certificate") }
            roots += found
        }
        self.roots = roots
    }

    public init(roots: [Certificate]) { self.roots = roots }

    static func certificates(inPEM text: String) -> [Certificate] {
        var out: [Certificate] = []
        var rest = Substring(text)
        while let begin = rest.range(of: "-----BEGIN CERTIFICATE-----"), let end = rest.range(of: "-----END CERTIFICATE-----", range: begin.upperBound..<rest.endIndex) {
            if let cert = try? Certificate(pemEncoded: String(rest[begin.lowerBound..<end.upperBound])) { out.append(cert) }
            rest = rest[end.upperBound...]
        }
        return out
    }

    public static func describe(_ cert: Certificate) -> PeerCertificate {
        var names: [String] = []
        if let san = try? cert.extensions.subjectAlternativeNames {
            for name in san { if case .dnsName(let d) = name { names.append(d) } }
        }
        return PeerCertificate(subject: cert.subject.description, issuer: cert.issuer.description, dnsNames: names, notBefore: cert.notValidBefore, notAfter: cert.notValidAfter)
    }

    /// RFC 6125 DNS-ID matching: exact, or `*.` + a base that matches everything after the first label.
    public static func matches(dnsNames: [String], host: String) -> Bool {
        guard let h = try? DomainName(host) else { return false }
        for name in dnsNames {
            var n = name.lowercased()
            if n.hasSuffix(".") { n.removeLast() }
            if n.hasPrefix("*.") {
                if let pattern = try? MXPattern(strict: n), pattern.matches(h) { return true }
            } else if n == h.text {
                return true
            }
        }
        return false
    }

    /// Checks a chain as presented (leaf first, DER) for `host` at `now`.
    public func check(chain der: [[UInt8]], host: String, now: Date = Date()) async -> (CertificateVerdict, PeerCertificate?) {
        let parsed = der.compactMap { try? Certificate(derEncoded: $0) }
        guard let leaf = parsed.first else { return (.invalid(.validationFailure, "the server presented no certificate that could be parsed"), nil) }
        let info = CertificateChecker.describe(leaf)
        let intermediates = CertificateStore(Array(parsed.dropFirst()))
        let store = CertificateStore(roots)

        // 1. Full check now.
        var full = Verifier(rootCertificates: store) { RFC5280Policy(validationTime: now) }
        let fullResult = await full.validate(leaf: leaf, intermediates: intermediates)
        let nameOK = CertificateChecker.matches(dnsNames: info.dnsNames, host: host)
        // A leaf whose extended key usage leaves out serverAuth is refused, as OpenSSL (and so
        // Postfix) refuses it ("unsupported certificate purpose").
        if let usage = try? leaf.extensions.extendedKeyUsage,
           !usage.contains(.serverAuth), !usage.contains(.any) {
            return (.invalid(.validationFailure, "the certificate's extended key usage does not include serverAuth (TLS server)"), info)
        }
        if case .validCertificate = fullResult, nameOK { return (.valid, info) }

        // 2. Is there a chain to a trusted root at all, whatever anyone's dates? (Signatures
        //    only: an expired leaf, or one whose issuer's window does not cover the leaf's dates,
        //    is `certificate-expired`, as Postfix reports it, never `certificate-not-trusted`.)
        let chainResult: CertificateValidationResult
        if case .validCertificate = fullResult {
            chainResult = fullResult
        } else {
            var chainOnly = Verifier(rootCertificates: store) { SignaturesOnly() }
            chainResult = await chainOnly.validate(leaf: leaf, intermediates: intermediates)
        }
        guard case .validCertificate(let chain) = chainResult else {
            let self_ = leaf.issuer == leaf.subject ? " (self-signed)" : ""
            return (.invalid(.certificateNotTrusted, "the certificate\(self_), issued by \(leaf.issuer), does not chain to a trusted root"), info)
        }
        // 3. Dates.
        if let stale = chain.first(where: { $0.notValidAfter < now }) {
            let which = stale == leaf ? "the certificate" : "the issuing certificate \(stale.subject)"
            return (.invalid(.certificateExpired, "\(which) expired on \(RFC3339.format(Int64(stale.notValidAfter.timeIntervalSince1970)))"), info)
        }
        if let early = chain.first(where: { $0.notValidBefore > now }) {
            return (.invalid(.certificateExpired, "the certificate \(early.subject) is not valid before \(RFC3339.format(Int64(early.notValidBefore.timeIntervalSince1970)))"), info)
        }
        // 4. Name.
        if !nameOK {
            let names = info.dnsNames.isEmpty ? "no DNS names (the subject CN is not used)" : info.dnsNames.joined(separator: ", ")
            return (.invalid(.certificateHostMismatch, "the certificate is for \(names), not \(host)"), info)
        }
        // 5. Anything else RFC 5280 rejects.
        if case .couldNotValidate(let failures) = fullResult {
            return (.invalid(.validationFailure, failures.first.map { "\($0.policyFailureReason)" } ?? "the chain does not validate"), info)
        }
        return (.invalid(.validationFailure, "the chain does not validate"), info)
    }
}

extension CertificateChecker.LoadError: MTASTSErrorConvertible {
    public var mtastsError: MTASTSError { MTASTSError(.configuration, description) }
}

/// A verifier policy that accepts every chain: with it, the verifier only builds chains whose
/// signatures hold up to a trusted root (dates and extensions are judged elsewhere).
struct SignaturesOnly: VerifierPolicy {
    // The usual critical extensions count as handled here: they are judged in the full check.
    let verifyingCriticalExtensions: [ASN1ObjectIdentifier] = [
        .X509ExtensionID.basicConstraints, .X509ExtensionID.keyUsage, .X509ExtensionID.extendedKeyUsage,
        .X509ExtensionID.subjectAlternativeName, .X509ExtensionID.nameConstraints,
    ]
    mutating func chainMeetsPolicyRequirements(chain: UnverifiedCertificateChain) async -> PolicyEvaluationResult { .meetsPolicy }
}
