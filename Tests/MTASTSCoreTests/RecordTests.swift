import Foundation
import MTASTSCore
import Testing

@Suite struct RecordTests {
    @Test func stsRecordVectors() throws {
        let vectors = try loadVectors("sts-records.json")
        #expect(vectors.count > 70)
        for v in vectors {
            let rrset = try #require(v["rrset"] as? [[String]])
            let expected = v["id"] as? String
            let (record, diagnostics) = STSRecord.select(rrset)
            #expect(record?.id == expected, "\(v["case"]!) \(rrset): got \(record?.id ?? "nil"), diagnostics \(diagnostics)")
            if expected == nil {
                #expect(!diagnostics.errors.isEmpty, "\(v["case"]!) \(rrset): rejected without an error")
            }
        }
    }

    @Test func tlsrptRecordVectors() throws {
        let vectors = try loadVectors("tlsrpt-records.json")
        for v in vectors {
            let rrset = try #require(v["rrset"] as? [[String]])
            let expected = v["rua"] as? [String]
            let (record, diagnostics) = TLSRPTRecord.select(rrset)
            #expect(record?.rua.map(\.uri) == expected, "\(v["case"]!) \(rrset): got \(record?.rua.map(\.uri) ?? []), \(diagnostics)")
            // The text a sender keeps its report under: there exactly when a record is chosen.
            #expect((TLSRPTRecord.selectText(rrset) != nil) == (record != nil), "\(v["case"]!) \(rrset)")
        }
    }

    @Test func selectedRecordText() {
        let good = "v=TLSRPTv1; rua=mailto:tls@x.example"
        #expect(TLSRPTRecord.selectText([["v=TLSRPTv1; rua=mailto:", "tls@x.example"]]) == good)  // strings joined
        #expect(TLSRPTRecord.selectText([["v=spf1 -all"], [good]]) == good)
        #expect(TLSRPTRecord.selectText([[good], ["v=TLSRPTv1; rua=mailto:b@x.example"]]) == nil)  // two: none
        #expect(TLSRPTRecord.selectText([["v=TLSRPTv1x; rua=mailto:tls@x.example"]]) == nil)       // not the version
        #expect(TLSRPTRecord.selectText([["v=TLSRPTv1; rua=http://x.example/"]]) == nil)            // no usable rua
        #expect(TLSRPTRecord.selectText([[good], ["v=TLSRPTv1x; rua=mailto:b@x.example"]]) == good)
    }

    @Test func unsupportedSchemeIsWarnedAndSkipped() {
        let result = TLSRPTRecord.parse("v=TLSRPTv1; rua=mailto:a@x.example,http://r.x.example/v1")
        #expect(result.record?.rua == [.mailto(address: "a@x.example", uri: "mailto:a@x.example")])
        #expect(result.diagnostics.contains { $0.code == "unsupported-scheme" && $0.severity == .warning })
    }

    @Test func mailtoIsPercentDecoded() {
        let result = TLSRPTRecord.parse("v=TLSRPTv1; rua=mailto:tls%21rpt@x.example")
        #expect(result.record?.rua.first == .mailto(address: "tls!rpt@x.example", uri: "mailto:tls%21rpt@x.example"))
    }

    @Test func recordDiagnosticsNameTheProblem() {
        #expect(STSRecord.parse("v=STSv1; id=2016-08-31").diagnostics.map(\.code) == ["bad-id"])
        #expect(STSRecord.parse("v=STSv1").diagnostics.map(\.code) == ["missing-fields"])
        #expect(STSRecord.parse("v=STSv1; id=a; id=b").diagnostics.map(\.code) == ["duplicate-field"])
        #expect(STSRecord.parse("v=STSv1; id=abc; foo_1=x").diagnostics.map(\.code) == ["unknown-field"])
        #expect(STSRecord.select([["v=STSv1; id=a1"], ["v=STSv1; id=b2"]]).diagnostics.map(\.code) == ["multiple-records"])
        #expect(STSRecord.parse("v=STSv1 ; id=1").diagnostics.map(\.code) == ["space-before-delimiter"])
    }

    @Test func domainNames() throws {
        for v in try loadVectors("domains.json") {
            let input = try #require(v["input"] as? String)
            let expected = v["normalised"] as? String
            let got = (v["address"] as? Bool == true) ? try? DomainName(addressOrDomain: input) : try? DomainName(input)
            #expect(got?.text == expected, "\(input)")
        }
        let d = try DomainName("Example.COM.")
        #expect(d.stsRecordName == "_mta-sts.example.com")
        #expect(d.tlsrptRecordName == "_smtp._tls.example.com")
        #expect(d.policyURL == "https://mta-sts.example.com/.well-known/mta-sts.txt")
    }

    @Test func mxMatchingVectors() throws {
        for v in try loadVectors("mx-matching.json") {
            let host = try #require(v["host"] as? String)
            let pattern = try #require(v["pattern"] as? String)
            let expected = try #require(v["match"] as? Bool)
            #expect(MXPattern.matches(host: host, pattern: pattern) == expected, "\(v["case"]!): \(host) vs \(pattern)")
        }
    }
}
