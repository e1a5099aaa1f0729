import DKIM
import Foundation
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
}
