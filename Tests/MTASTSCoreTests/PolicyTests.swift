import Foundation
import MTASTSCore
import Testing

@Suite struct PolicyTests {
    @Test func policyVectors() throws {
        let vectors = try loadVectors("policies.json")
        #expect(vectors.count > 100)
        for v in vectors {
            var input = try #require(v["input"] as? String)
            // Foundation's JSON reader drops a leading U+FEFF inside strings, so a BOM is a flag.
            if v["prepend_bom"] as? Bool == true { input = "\u{FEFF}" + input }
            let label = "\(v["case"]!) \(input.debugDescription)"
            let result = STSPolicy.parse(input)
            let sender = try #require(v["sender"] as? Bool)
            let lint = try #require(v["lint"] as? Bool)
            #expect((result.policy != nil) == sender, "\(label): sender view, \(result.diagnostics)")
            #expect(result.isValid == lint, "\(label): lint view, \(result.diagnostics)")
            if let mode = v["mode"] as? String { #expect(result.policy?.mode.rawValue == mode, "\(label)") }
            if let maxAge = v["max_age"] as? Int { #expect(result.policy?.maxAge == maxAge, "\(label)") }
            if let mx = v["mx"] as? [String] { #expect(result.policy?.mx.map(\.text) == mx, "\(label)") }
            if let code = v["code"] as? String {
                #expect(result.diagnostics.contains { $0.code == code }, "\(label): expected \(code) in \(result.diagnostics)")
            }
            if !sender { #expect(!result.diagnostics.errors.isEmpty, "\(label): rejected without an error") }
        }
    }

    @Test("the cache's canonical reading agrees with the full parser: the same policy for what render(\\n) writes, nil or the same for anything else")
    func canonicalReading() throws {
        for v in try loadVectors("policies.json") {
            let input = try #require(v["input"] as? String)
            let full = STSPolicy.parse(input).policy
            if let fast = STSPolicy.parseCanonical(input) {
                #expect(fast == full, "\(input.debugDescription)")
            }
            if let full, full.extensions.isEmpty {
                #expect(STSPolicy.parseCanonical(full.render(lineEnding: "\n")) == full, "\(input.debugDescription)")
            }
        }
        let head = "version: STSv1\nmode: enforce\n"
        for mx in ["MX.example.com", "-mx.example.com", "mx-.example.com", "mx..example.com", ".example.com", "example.com.",
                   String(repeating: "a", count: 64) + ".example", "*.", "a.*.example", "mx_1.example", "mx.example.com "] {
            #expect(STSPolicy.parseCanonical(head + "mx: \(mx)\nmax_age: 86400\n") == nil, "\(mx)")
        }
        for text in [head + "mx: a.example\nmax_age: 86400", head + "mx: a.example\nmx: a.example\nmax_age: 86400\n",
                     head + "max_age: 86400\n", head + "mx: a.example\nmax_age: 31557601\n", head + "mx: a.example\nmax_age: 86400\nfoo: bar\n",
                     "version: STSv1\r\nmode: enforce\r\nmx: a.example\r\nmax_age: 86400\r\n", "mode: enforce\nversion: STSv1\nmx: a.example\nmax_age: 1\n"] {
            #expect(STSPolicy.parseCanonical(text) == nil, "\(text.debugDescription)")
        }
        #expect(STSPolicy.parseCanonical("version: STSv1\nmode: none\nmax_age: 86400\n")?.mode == STSMode.none)
        #expect(STSPolicy.parseCanonical(head + "mx: *.b-1.example\nmx: " + String(repeating: "a", count: 63) + ".example\nmax_age: 0\n")?.mx.count == 2)
    }

    @Test("the compact form of the memory cache reads back every policy it is made for, and refuses what is not such bytes")
    func compactForm() throws {
        var made = 0
        for v in try loadVectors("policies.json") {
            guard let policy = STSPolicy.parse(try #require(v["input"] as? String)).policy else { continue }
            guard let bytes = policy.compactBytes else {
                #expect(!policy.extensions.isEmpty)
                continue
            }
            made += 1
            #expect(STSPolicy(compact: bytes[...]) == policy)
            // Cut anywhere, or with a byte more, it is refused.
            for end in 0..<bytes.count { #expect(STSPolicy(compact: bytes[0..<end]) == nil) }
            #expect(STSPolicy(compact: (bytes + [0])[...]) == nil)
        }
        #expect(made > 5)
        let p = try #require(STSPolicy.parse("version: STSv1\nmode: testing\nmx: *.mx.example\nmx: mx2.example\nmax_age: 604800\n").policy)
        var bytes = try #require(p.compactBytes)
        #expect(bytes.count == 1 + 4 + 1 + 1 + 12 + 1 + 11)
        bytes[8] = UInt8(ascii: "M")  // not the parser's lower case
        #expect(STSPolicy(compact: bytes[...]) == nil)
        bytes[0] = 7  // no such mode
        #expect(STSPolicy(compact: bytes[...]) == nil)
        #expect(try #require(STSPolicy.parse("version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 1\nx: y\n").policy).compactBytes == nil)
    }

    @Test func errorsCarryLineNumbers() {
        let result = STSPolicy.parse("version: STSv1\nmode: enforce\nmx: bad_host.example\nmax_age: 86400\n")
        let error = result.diagnostics.errors.first
        #expect(error?.code == "bad-mx")
        #expect(error?.line == 3)
    }

    @Test func renderRoundTrips() throws {
        let text = "version: STSv1\nmode: enforce\nmx: mail.example.com\nmx: *.example.net\nmax_age: 604800\n"
        let policy = try #require(STSPolicy.parse(text).policy)
        let rendered = policy.render()
        #expect(rendered == "version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.example.net\r\nmax_age: 604800\r\n")
        #expect(STSPolicy.parse(rendered).policy == policy)
        #expect(policy.lines == ["version: STSv1", "mode: enforce", "mx: mail.example.com", "mx: *.example.net", "max_age: 604800"])
    }

    @Test func contentIDChangesWithTheContent() throws {
        let a = STSPolicy(mode: .testing, maxAge: 86400, mx: [try MXPattern(strict: "mx.example.com")])
        var b = a
        b.mode = .enforce
        #expect(a.contentID != b.contentID)
        #expect(a.contentID == STSPolicy(mode: .testing, maxAge: 86400, mx: [try MXPattern(strict: "mx.example.com")]).contentID)
        #expect(STSRecord.parse(STSRecord(id: a.contentID).text).record?.id == a.contentID)
    }

    @Test func policyMatchesItsMX() throws {
        let policy = try #require(STSPolicy.parse("version: STSv1\nmode: enforce\nmx: *.mail.protection.outlook.com\nmax_age: 604800\n").policy)
        #expect(policy.matches(try DomainName("contoso-com.mail.protection.outlook.com")))
        #expect(!policy.matches(try DomainName("mail.protection.outlook.com")))
        #expect(!policy.matches(try DomainName("a.b.mail.protection.outlook.com")))
    }

    @Test func oversizedAndNonUTF8Bodies() {
        var big = Array("version: STSv1\nmode: none\nmax_age: 86400\n".utf8)
        big += Array(repeating: UInt8(ascii: "a"), count: 70_000)
        #expect(STSPolicy.parse(big).diagnostics.contains { $0.code == "too-large" })
        #expect(STSPolicy.parse(big).policy == nil)
        let bad: [UInt8] = Array("version: STSv1\nmode: none\nmax_age: 86400\nx: ".utf8) + [0xFF, 0xFE]
        #expect(STSPolicy.parse(bad).diagnostics.map(\.code) == ["not-utf8"])
    }
}
