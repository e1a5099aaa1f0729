import MailDNS
import Testing
import TestSupport

@Suite struct DNSTests {
    static let zone = [
        #"txt-record=_mta-sts.good.test,"v=STSv1; id=abc""#,
        #"txt-record=multi.test,"v=STSv1; id=20","19abc""#,
        #"txt-record=two.test,"v=STSv1; id=a""#,
        #"txt-record=two.test,"v=spf1 -all""#,
        "mx-host=good.test,mx1.good.test,10",
        "mx-host=good.test,mx2.good.test,20",
        "host-record=mx1.good.test,127.0.0.2",
        "host-record=mx2.good.test,127.0.0.3,::1",
        "host-record=v6only.good.test,2001:db8::25",
        "cname=_mta-sts.alias.test,_mta-sts.good.test",
        "dns-rr=_25._tcp.mx1.good.test,52,030101AABBCC",
        "log-queries",
    ]

    @Test func lookUps() async throws {
        let dns = try DNSMasq(lines: DNSTests.zone, failing: ["fail.example"])
        let resolver = try DNSResolver(.init(server: dns.server, timeout: 2, tries: 1))

        let txt = try await resolver.txt("_mta-sts.good.test")
        #expect(txt.records.map { $0.map { String(decoding: $0, as: UTF8.self) } } == [["v=STSv1; id=abc"]])
        #expect(!txt.authenticated)

        let multi = try await resolver.txt("multi.test")
        #expect(multi.records.map { $0.map { String(decoding: $0, as: UTF8.self) } } == [["v=STSv1; id=20", "19abc"]])

        let two = try await resolver.txt("two.test")
        #expect(two.records.count == 2)

        let mx = try await resolver.mx("good.test")
        #expect(Set(mx.records) == [MXRecord(preference: 10, exchange: "mx1.good.test"), MXRecord(preference: 20, exchange: "mx2.good.test")])

        #expect(try await resolver.addresses("mx2.good.test").sorted() == ["127.0.0.3", "::1"])
        #expect(try await resolver.addresses("v6only.good.test") == ["2001:db8::25"])

        let alias = try await resolver.txt("_mta-sts.alias.test")
        #expect(alias.cnames == ["_mta-sts.good.test"])
        #expect(alias.records.count == 1)

        let tlsa = try await resolver.tlsa("_25._tcp.mx1.good.test")
        #expect(tlsa.records == [TLSARecord(usage: 3, selector: 1, matchingType: 1, data: [0xAA, 0xBB, 0xCC])])
    }

    @Test func noRecordsIsToldApartFromFailure() async throws {
        let dns = try DNSMasq(lines: DNSTests.zone, failing: ["fail.example"])
        let resolver = try DNSResolver(.init(server: dns.server, timeout: 1, tries: 1))
        await #expect(throws: DNSError.self) { try await resolver.txt("nothing.test") }
        do {
            _ = try await resolver.txt("nothing.test")
        } catch {
            #expect(error.kind == .nxdomain)
            #expect(error.isNoRecords)
        }
        do {
            _ = try await resolver.txt("good.test")  // the name exists (MX), no TXT
            Issue.record("expected NODATA")
        } catch {
            #expect(error.isNoRecords, "\(error)")
        }
        do {
            _ = try await resolver.txt("x.fail.example")
            Issue.record("expected a temporary failure")
        } catch {
            #expect(error.kind == .temporary, "\(error)")
        }
    }

    @Test func unreachableServerIsTemporary() async throws {
        let resolver = try DNSResolver(.init(server: "127.0.0.1:9", timeout: 1, tries: 1))
        do {
            _ = try await resolver.txt("anything.test")
            Issue.record("expected a failure")
        } catch {
            #expect(error.kind == .temporary)
        }
        #expect(throws: DNSResolver.InvalidServer.self) { try DNSResolver(.init(server: "not-an-ip")) }
    }

    @Test func malformedMessagesAreErrors() {
        #expect(throws: DNSMessage.Malformed.self) { try DNSMessage(parsing: [0, 1, 2]) }
        // A header announcing one answer, with a name pointer that points at itself.
        let loop: [UInt8] = [0, 0, 0x81, 0x80, 0, 0, 0, 1, 0, 0, 0, 0, 0xC0, 12]
        #expect(throws: DNSMessage.Malformed.self) { try DNSMessage(parsing: loop) }
    }
}
