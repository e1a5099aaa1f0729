import MTASTSCore
import NIOCore
import NIOTestUtils
import Socketmap
import Testing

@Suite struct NetstringTests {
    /// Drip-fed one byte at a time, in batches and with the whole input at once.
    @Test func dripFeedVerifier() throws {
        let cases: [(String, [String])] = [
            ("3:abc,", ["abc"]),
            ("0:,", [""]),
            ("17:5:Hello,6:World!,,", ["5:Hello,6:World!,"]),
            ("8:tls a.bc,13:tls good.loc.,", ["tls a.bc", "tls good.loc."]),
        ]
        for (input, outputs) in cases {
            var buffer = ByteBuffer()
            buffer.writeString(input)
            let expected = outputs.map { ByteBuffer(string: $0) }
            try ByteToMessageDecoderVerifier.verifyDecoder(inputOutputPairs: [(buffer, expected)]) { NetstringDecoder(maxLength: 100) }
        }
    }

    @Test func framingErrors() throws {
        func next(_ s: String, max: Int = 100) throws(NetstringError) -> String? {
            var buffer = ByteBuffer(string: s)
            return try NetstringDecoder.next(from: &buffer, maxLength: max).map { String(buffer: $0) }
        }
        #expect(try next("00:,") == "")
        #expect(try next("3:aa") == nil)  // incomplete: wait for more
        #expect(try next("3") == nil)
        #expect(throws: NetstringError(kind: .badLength)) { try next(":,") }
        #expect(throws: NetstringError(kind: .badLength)) { try next("x3:abc,") }
        #expect(throws: NetstringError(kind: .badTerminator)) { try next("3:aaa_") }
        #expect(throws: NetstringError(kind: .tooLong)) { try next("9999:", max: 1000) }
        #expect(throws: NetstringError(kind: .tooLong)) { try next("99999999999999999999:", max: 1_000_000) }
        #expect(Netstring.encode("NOTFOUND ") == Array("9:NOTFOUND ,".utf8))
    }
}

@Suite struct SocketmapProtocolTests {
    @Test func requests() {
        #expect(SocketmapRequest.parse(Array("mta-sts good.loc".utf8)) == SocketmapRequest(name: "mta-sts", key: "good.loc"))
        #expect(SocketmapRequest.parse(Array("nospace".utf8)) == nil)
        #expect(SocketmapRequest.parse(Array(" good.loc".utf8)) == nil)
        #expect(SocketmapRequest.parse([0x61, 0x20, 0xFF]) == nil)
    }

    /// The keys of socketmap-cases.md: next-hop forms map to the policy domain; domain patterns
    /// and address literals have none.
    @Test func keys() {
        for key in ["good.loc", "[good.loc]:123", "good.loc:123", "good.loc.", "GOOD.loc", "[good.loc]"] {
            #expect(SocketmapKey.policyDomain(key)?.text == "good.loc", "\(key)")
        }
        for key in [".good.loc", "[1.2.3.4]", "1.2.3.4", "[a:bb:ccc::dddd]:123", "[ipv6:2001:db8::1]", "bad_host", "[unclosed"] {
            #expect(SocketmapKey.policyDomain(key) == nil, "\(key)")
        }
        #expect(SocketmapKey.policyDomain("münchen.example")?.text == "xn--mnchen-3ya.example")
    }

    @Test func replies() throws {
        let domain = try DomainName("wild.loc")
        let wild = try #require(STSPolicy.parse("version: STSv1\nmode: enforce\nmx: mail.wild.loc\nmx: *.mx.wild.loc\nmax_age: 604800\n").policy)
        // The reference daemon's `.mx.wild.loc` accepts any depth below mx.wild.loc; RFC 8461 §4.1
        // allows one label. With the domain's MX hosts known, the covered ones are listed.
        let hosts = ["a.mx.wild.loc", "b.c.mx.wild.loc", "mail.wild.loc"]
        #expect(SocketmapReply.render(policy: wild, domain: domain, mxHosts: hosts) == "OK secure match=a.mx.wild.loc:mail.wild.loc servername=hostname")
        // A zone whose Postfix (≥ 3.10.5) enforces mx_host_pattern= gets the reference daemon's
        // reply word for word: Postfix checks the one-label rule itself.
        #expect(SocketmapReply.render(policy: wild, domain: domain, tlsrpt: true, enforcePatterns: true) ==
            "OK secure match=.mx.wild.loc:mail.wild.loc servername=hostname policy_type=sts policy_domain=wild.loc"
            + " mx_host_pattern=mail.wild.loc mx_host_pattern=*.mx.wild.loc"
            + " { policy_string = version: STSv1 } { policy_string = mode: enforce } { policy_string = mx: mail.wild.loc }"
            + " { policy_string = mx: *.mx.wild.loc } { policy_string = max_age: 604800 }")
        var testing = wild
        testing.mode = .testing
        #expect(SocketmapReply.render(policy: testing, domain: domain) == "NOTFOUND ")
        #expect(SocketmapReply.render(policy: testing, domain: domain, strictTesting: true, mxHosts: hosts).hasPrefix("OK secure match="))
        var none = wild
        none.mode = .none
        #expect(SocketmapReply.render(policy: none, domain: domain, strictTesting: true) == "NOTFOUND ")
        #expect(SocketmapReply.temporary("store\nbroken é") == "TEMP store?broken ?")
        #expect(SocketmapReply.permanent("bad request") == "PERM bad request")
    }
}
