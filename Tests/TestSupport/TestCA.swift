import Crypto
import Foundation
import SwiftASN1
import X509

/// A certificate authority made in the test (never checked in, never stale), and leaves of every
/// kind the checks must tell apart: good, expired, wrong name, untrusted (another CA), CN-only,
/// wildcard.
public struct TestCA: @unchecked Sendable {
    public let key: P256.Signing.PrivateKey
    public let certificate: Certificate
    public let name: DistinguishedName

    public var pem: String { (try? certificate.serializeAsPEM().pemString) ?? "" }

    public init(commonName: String = "mtasts Test CA") throws {
        key = P256.Signing.PrivateKey()
        name = try DistinguishedName { CommonName(commonName) }
        let now = Date()
        certificate = try Certificate(
            version: .v3, serialNumber: .init(), publicKey: .init(key.publicKey),
            notValidBefore: now.addingTimeInterval(-86_400 * 365), notValidAfter: now.addingTimeInterval(86_400 * 365),
            issuer: name, subject: name, signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.isCertificateAuthority(maxPathLength: nil))
                Critical(KeyUsage(keyCertSign: true, cRLSign: true))
            },
            issuerPrivateKey: .init(key))
    }

    /// A leaf and its key, as PEM.
    public struct Leaf: Sendable {
        public var certificatePEM: String
        public var keyPEM: String

        /// The certificate in DER (what a TLS peer sends).
        public func der() throws -> [UInt8] {
            var serializer = DER.Serializer()
            try serializer.serialize(try Certificate(pemEncoded: certificatePEM))
            return serializer.serializedBytes
        }

        /// SHA-256 of the certificate's DER: the data of a `3 0 1` (DANE-EE, full certificate,
        /// SHA-256) TLSA record.
        public var sha256: [UInt8] { (try? der()).map { Array(SHA256.hash(data: $0)) } ?? [] }
    }

    public enum Validity: Sendable {
        case current, expired, notYetValid
        /// Expired two years ago, and issued before the CA itself was valid.
        case longAgo
        /// Valid now, expiring in this many days.
        case expiringIn(days: Int)
    }

    /// Issues a leaf for `dnsNames` (SANs). With `dnsNames` empty the name goes only into the
    /// subject CN (the "CN-only" certificate RFC 8461 rejects).
    /// `usages`: the extended key usages (serverAuth by default; `[.clientAuth]` makes a
    /// certificate a TLS server must not present).
    public func issue(dnsNames: [String], commonName: String? = nil, validity: Validity = .current,
                      usages: [ExtendedKeyUsage.Usage] = [.serverAuth]) throws -> Leaf {
        let leafKey = P256.Signing.PrivateKey()
        let now = Date()
        let (from, to): (Date, Date)
        switch validity {
        case .current: (from, to) = (now.addingTimeInterval(-3600), now.addingTimeInterval(86_400 * 30))
        case .expired: (from, to) = (now.addingTimeInterval(-86_400 * 30), now.addingTimeInterval(-86_400))
        case .notYetValid: (from, to) = (now.addingTimeInterval(86_400), now.addingTimeInterval(86_400 * 30))
        case .longAgo: (from, to) = (now.addingTimeInterval(-86_400 * 365 * 3), now.addingTimeInterval(-86_400 * 365 * 2))
        case .expiringIn(let days): (from, to) = (now.addingTimeInterval(-86_400 * 60), now.addingTimeInterval(86_400 * Double(days) + 3600))
        }
        let subject = try DistinguishedName { CommonName(commonName ?? dnsNames.first ?? "leaf") }
        let extensions = try Certificate.Extensions {
            Critical(BasicConstraints.notCertificateAuthority)
            Critical(KeyUsage(digitalSignature: true))
            try ExtendedKeyUsage(usages)
            if !dnsNames.isEmpty {
                SubjectAlternativeNames(dnsNames.map { GeneralName.dnsName($0) })
            }
        }
        let cert = try Certificate(
            version: .v3, serialNumber: .init(), publicKey: .init(leafKey.publicKey),
            notValidBefore: from, notValidAfter: to, issuer: name, subject: subject,
            signatureAlgorithm: .ecdsaWithSHA256, extensions: extensions, issuerPrivateKey: .init(key))
        return Leaf(certificatePEM: try cert.serializeAsPEM().pemString, keyPEM: leafKey.pemRepresentation)
    }

    /// Writes the CA certificate to a PEM file (for `--ca-file`) and returns its path.
    public func writePEM(to directory: URL) throws -> String {
        let path = directory.appendingPathComponent("ca-\(UUID().uuidString).pem").path
        try pem.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }
}
