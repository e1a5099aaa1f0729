import DKIM
import Foundation
import _CryptoExtras
import Testing

/// DKIM in-process: what we sign verifies, with either algorithm; any change to a signed header
/// or the body does not. (dkimpy checks both directions end to end in SenderTests/ReceiverTests.)
@Suite struct DKIMRoundTripTests {
    static func key(_ algorithm: String) throws -> DKIM.SigningKey {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("dkim-\(UUID().uuidString.prefix(6)).pem").path
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/openssl")
        p.arguments = algorithm == "rsa" ? ["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", path] : ["genpkey", "-algorithm", "ed25519", "-out", path]
        try p.run()
        p.waitUntilExit()
        return try DKIM.SigningKey(pem: String(contentsOfFile: path, encoding: .utf8))
    }

    static let message = Array("""
        From: TLS reports <tlsrpt@sender.test>\r
        To: tlsrpt@example.com\r
        Subject: Report Domain: example.com Submitter: sender.test Report-ID: <1@sender.test>\r
        Date: Mon, 30 Nov 2026 00:00:00 +0000\r
        Message-ID: <1@sender.test>\r
        \r
        the report\r

        """.utf8)

    @Test("sign then verify: rsa-sha256 and ed25519-sha256 pass; tampering fails (CONFORMANCE 8460 #7, #14)", arguments: ["rsa", "ed25519"])
    func roundTrip(_ algorithm: String) async throws {
        let key = try Self.key(algorithm)
        let signed = try DKIM.sign(Self.message, domain: "sender.test", selector: "tlsrpt", key: key)
        let lookup: DKIM.KeyLookup = { name in name == "tlsrpt._domainkey.sender.test" ? [key.dnsRecord] : nil }
        let results = await DKIM.verify(signed, lookup: lookup)
        #expect(results.map(\.status) == [.pass], "\(results)")
        #expect(results.first?.domain == "sender.test")
        let text = String(decoding: signed, as: UTF8.self)
        let body = Array(text.replacingOccurrences(of: "the report", with: "the rep0rt").utf8)
        #expect(await DKIM.verify(body, lookup: lookup).map(\.status) == [.fail])
        let subject = Array(text.replacingOccurrences(of: "Report-ID: <1@", with: "Report-ID: <2@").utf8)
        #expect(await DKIM.verify(subject, lookup: lookup).map(\.status) == [.fail])
        #expect(await DKIM.verify(Self.message, lookup: lookup).map(\.status) == [.none])
    }

    @Test("verification work is bounded: too many header fields, an h= of more than 64 names, an RSA key over 8,192 bits are permerror (hostile input)")
    func bounded() async throws {
        let key = try Self.key("ed25519")
        let lookup: DKIM.KeyLookup = { name in name == "tlsrpt._domainkey.sender.test" ? [key.dnsRecord] : nil }
        let signed = try DKIM.sign(Self.message, domain: "sender.test", selector: "tlsrpt", key: key)
        let flooded = Array(String(repeating: "X-A: b\r\n", count: DKIM.maxHeaderFields + 1).utf8) + signed
        #expect(await DKIM.verify(flooded, lookup: lookup).map(\.status) == [.permerror])
        // h= naming From 100 times.
        let manyNames = try DKIM.sign(Self.message, domain: "sender.test", selector: "tlsrpt", key: key, headers: Array(repeating: "From", count: 100))
        let result = await DKIM.verify(manyNames, lookup: lookup)
        #expect(result.map(\.status) == [.permerror])
        #expect(result.first?.reason.contains("more than 64") == true)
        // A 9,000-bit modulus (not a real key: only its size matters) published for an RSA signature.
        let rsa = try Self.key("rsa")
        let rsaSigned = try DKIM.sign(Self.message, domain: "sender.test", selector: "tlsrpt", key: rsa)
        var modulus = [UInt8](repeating: 0xFF, count: 9_000 / 8)
        modulus[modulus.count - 1] = 0xFB
        let big = try _RSA.Signing.PublicKey(n: modulus, e: [0x01, 0x00, 0x01])
        let bigLookup: DKIM.KeyLookup = { _ in ["v=DKIM1; k=rsa; p=\(big.derRepresentation.base64EncodedString())"] }
        let bigResult = await DKIM.verify(rsaSigned, lookup: bigLookup)
        #expect(bigResult.first?.reason.contains("more than 8192 bits") == true, "\(bigResult)")
    }
}
