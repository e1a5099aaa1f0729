import Foundation
import MTASTSCore
import Testing

@Suite struct ReportTests {
    /// Every file under shared/interop/reports, against expectations computed independently
    /// (Python's json and email modules) and kept in Vectors/interop-reports.json.
    @Test func everyInteropReport() throws {
        let expected = try #require(try loadJSON("interop-reports.json") as? [String: [String: Any]])
        let root = Paths.interopReports
        let files = try #require(FileManager.default.subpaths(atPath: root.path), "no interop data at \(root.path)")
            .filter { !$0.hasSuffix("/") && !(try! root.appendingPathComponent($0).resourceValues(forKeys: [.isDirectoryKey]).isDirectory!) }
        #expect(files.count == expected.count, "interop files \(files.count), expectations \(expected.count)")
        #expect(files.count >= 50)
        for file in files.sorted() {
            let want = try #require(expected[file], "no expectation for \(file)")
            let bytes = [UInt8](try Data(contentsOf: root.appendingPathComponent(file)))
            if want["not_a_report"] as? Bool == true {
                #expect(throws: NotAReport.self, "\(file) must be classified not a report") { try ReportReader.read(bytes) }
                continue
            }
            let result: ReportReader.Result
            do { result = try ReportReader.read(bytes) } catch {
                Issue.record("\(file): \(error)")
                continue
            }
            let report = try #require(result.reports.first).report
            #expect(report.organizationName == want["organization"] as? String, "\(file)")
            #expect(report.reportID == want["report_id"] as? String, "\(file)")
            #expect(report.policies.count == want["policies"] as? Int, "\(file)")
            #expect(report.totalSuccessful == want["successful"] as? Int, "\(file)")
            #expect(report.totalFailed == want["failed"] as? Int, "\(file)")
            #expect(Set(report.policies.compactMap(\.policy.domain)).sorted() == want["policy_domains"] as? [String], "\(file)")
            var byType: [String: Int] = [:]
            for p in report.policies { for f in p.failureDetails { byType[f.resultType.rawValue, default: 0] += f.failedSessionCount } }
            #expect(byType == (want["failures"] as? [String: Int]) ?? [:], "\(file)")
            // Canonical JSON re-reads to the same report, with no warnings left.
            let again = try TLSReport.decode(json: report.encoded())
            #expect(again.report == report, "\(file): canonical form does not round-trip")
        }
    }

    @Test func realWorldQuirksAreToleratedAndNamed() throws {
        let root = Paths.interopReports
        func codes(_ path: String) throws -> [String] {
            let result = try ReportReader.read([UInt8](try Data(contentsOf: root.appendingPathComponent(path))))
            return result.reports.flatMap(\.diagnostics).map(\.code) + result.diagnostics.map(\.code)
        }
        #expect(try codes("mox/microsoft.eml").contains("date-without-zone"))
        #expect(try codes("parsedmarc/rfc8460.json").contains("mx-host-not-array"))
        #expect(try codes("dmarc-report-viewer/microsoft.json").contains("policy-string-json-in-string"))
        #expect(try codes("dmarc-report-viewer/no-contact.json").contains("missing-contact-info"))
        #expect(try codes("from-issues/sys4-tlsrpt-reporter-issue51-postfix-no-policy-domain.json").contains("missing-policy-domain"))
        #expect(try codes("stalwart-mail-auth/rpt03.json").contains("unknown-policy-type"))
        #expect(try codes("stalwart-mail-auth/rpt02.eml").contains("report-media-type"))
        #expect(try codes("stalwart-mail-auth/rpt01.eml").contains("tls-report-domain-mismatch"))
        // The Microsoft zone-less date is read as UTC.
        let ms = try ReportReader.read([UInt8](try Data(contentsOf: root.appendingPathComponent("mox/microsoft.eml")))).reports[0].report
        #expect(RFC3339.format(ms.startDate) == "2023-01-10T00:00:00Z")
        // The TLSA JSON-in-a-string is expanded to one RR per element.
        let tlsa = try ReportReader.read([UInt8](try Data(contentsOf: root.appendingPathComponent("dmarc-report-viewer/microsoft.json")))).reports[0].report
        #expect(tlsa.policies[1].policy.strings.count == 2)
        #expect(tlsa.policies[1].policy.strings[0].hasPrefix("3 1 1 6007EEE5"))
    }

    @Test func unknownResultTypeAndBadDate() throws {
        let json = """
            {"organization-name":"X","date-range":{"start-datetime":"2024-01-01T00:00:00Z","end-datetime":"2024-01-01T23:59:59Z"},
             "contact-info":"a@x.example","report-id":"1","policies":[{"policy":{"policy-type":"sts","policy-domain":"x.example",
             "policy-string":["version: STSv1"],"mx-host":["mx.x.example"]},"summary":{"total-successful-session-count":1,
             "total-failure-session-count":2},"failure-details":[{"result-type":"quantum-decoherence","failed-session-count":2}]}]}
            """
        let decoded = try TLSReport.decode(json: Array(json.utf8))
        #expect(decoded.report.policies[0].failureDetails[0].resultType == .other("quantum-decoherence"))
        #expect(decoded.diagnostics.map(\.code) == ["unknown-result-type"])
        let bad = json.replacingOccurrences(of: "2024-01-01T00:00:00Z", with: "yesterday")
        #expect(throws: NotAReport.self) { try TLSReport.decode(json: Array(bad.utf8)) }
        let bare = json.replacingOccurrences(of: "\"policies\":[", with: "\"policies\":").replacingOccurrences(of: "}]}]}", with: "}]}}")
        let tolerated = try TLSReport.decode(json: Array(bare.utf8))
        #expect(tolerated.diagnostics.contains { $0.code == "policies-not-array" })
        #expect(tolerated.report.totalFailed == 2)
    }

    @Test func endOfDayFormsAreBothAccepted() throws {
        for end in ["2024-01-01T23:59:59Z", "2024-01-02T00:00:00Z", "2024-01-02T01:00:00+01:00"] {
            let json = #"{"date-range":{"start-datetime":"2024-01-01T00:00:00Z","end-datetime":"\#(end)"},"policies":[]}"#
            let r = try TLSReport.decode(json: Array(json.utf8)).report
            #expect(r.endDate - r.startDate >= 86_399)
        }
    }

    @Test func hostileJSON() {
        #expect(throws: JSONParseError.self) { try JSONParser.parse(Array(repeating: UInt8(ascii: "["), count: 100_000)) }
        #expect(throws: JSONParseError.self) { try JSONParser.parse(Array("{\"a\":\"\u{1}\"}".utf8)) }
        #expect(throws: JSONParseError.self) { try JSONParser.parse([0x22, 0xFF, 0x22]) }
        #expect(throws: JSONParseError.self) { try JSONParser.parse(Array("{\"a\":1,}".utf8)) }
        #expect(throws: JSONParseError.self) { try JSONParser.parse(Array("{\"a\":01}".utf8)) }
        #expect(throws: JSONParseError.self) { try JSONParser.parse(Array("{\"a\":1} x".utf8)) }
        #expect(throws: JSONParseError.self) { try JSONParser.parse(Array("\"abc".utf8)) }
        let dup = try? JSONParser.parse(Array("{\"a\":1,\"a\":2,\"b\":9007199254740993}".utf8))
        #expect(dup?.deviations.count == 2)
        #expect(dup?.value["a"] == .int(1))
        let escaped = try? JSONParser.parse(Array(#"["\u00fc\ud83d\ude00\n"]"#.utf8))
        #expect(escaped?.value == .array([.string("ü😀\n")]))
        #expect(JSONValue.array([.string("a\"\\\n\u{1}")]).serialized() == #"["a\"\\\n\u0001"]"#)
    }

    @Test func gzipBombIsRefusedEarly() throws {
        let zeros = [UInt8](repeating: 0x20, count: 50_000_000)
        let bomb = Gzip.compress(zeros, level: 9)
        #expect(bomb.count < 100_000)
        #expect(throws: Gzip.Failure.self) { try Gzip.decompress(bomb, maxSize: 1_000_000) }
        #expect(throws: NotAReport.self) { try ReportReader.read(bomb, maxSize: 1_000_000) }
        let small = Gzip.compress(Array("hello".utf8))
        #expect(try Gzip.decompress(small, maxSize: 10) == Array("hello".utf8))
        #expect(throws: Gzip.Failure.self) { try Gzip.decompress(Array(small.dropLast(6)), maxSize: 100) }
        #expect(throws: Gzip.Failure.self) { try Gzip.decompress([0x1F, 0x8B, 1, 2, 3], maxSize: 100) }
        #expect(throws: Gzip.Failure.self) { try Gzip.decompress([], maxSize: 100) }
        // The size bound holds for plain JSON as it does for inflated gzip.
        let json = Array(#"{"date-range":{"start-datetime":"2024-01-01T00:00:00Z","end-datetime":"2024-01-01T23:59:59Z"},"policies":[]}"#.utf8)
        #expect(throws: NotAReport.self) { try ReportReader.read(json, maxSize: 50) }
        #expect(throws: NotAReport.self) { try ReportReader.read(Gzip.compress(json), maxSize: 50) }
        #expect((try? ReportReader.read(json, maxSize: json.count)) != nil)
    }

    @Test func filenames() {
        let ok = try? ReportFilename.parse("mail.sndr.example.com!example.net!1470013207!1470186007!001.json.gz").get()
        #expect(ok == ReportFilename(sender: "mail.sndr.example.com", policyDomain: "example.net", begin: 1_470_013_207, end: 1_470_186_007, uniqueID: "001", compressed: true))
        #expect((try? ReportFilename.parse("mail.sndr.example.com!example.net!1470013207!1470186007.json.zip").get()) == nil)
        #expect((try? ReportFilename.parse("a.example!b.example!1!2.json").get())?.uniqueID == nil)
        #expect((try? ReportFilename.parse("a.example!b.example!2!1.json").get()) == nil)
        #expect((try? ReportFilename.parse("a.example!b.example!1!2!a-b.json").get()) == nil)
        #expect(ReportSubject.parse("Report Domain: example.net\r\n    Submitter: mail.sender.example.com\r\n    Report-ID: <735ff.e317+bf22029@example.net>")
            == ReportSubject(domain: "example.net", submitter: "mail.sender.example.com", reportID: "735ff.e317+bf22029@example.net"))
        #expect(ReportSubject.parse("report domain: x Submitter: y Report-ID: <z>") == nil)
    }

    @Test func dates() {
        #expect(RFC3339.parse("2016-04-01T00:00:00Z")?.seconds == 1_459_468_800)
        #expect(RFC3339.parse("2016-04-01T02:00:00+02:00")?.seconds == 1_459_468_800)
        #expect(RFC3339.parse("2016-04-01t00:00:00.123z")?.seconds == 1_459_468_800)
        #expect(RFC3339.parse("2023-01-10T00:00:00")?.hadNoZone == true)
        #expect(RFC3339.parse("2023-02-29T00:00:00Z") == nil)
        #expect(RFC3339.parse("2024-02-29T00:00:00Z") != nil)
        #expect(RFC3339.parse("2024-01-01T24:00:00Z") == nil)
        #expect(RFC3339.parse("2024-01-01T00:00:00Zjunk") == nil)
        #expect(RFC3339.format(1_459_468_800) == "2016-04-01T00:00:00Z")
        #expect(RFC3339.format(951_782_400) == "2000-02-29T00:00:00Z")
        #expect(RFC5322Date.format(1_796_000_000) == "Mon, 30 Nov 2026 00:53:20 +0000")
    }

    @Test func mimeDetails() throws {
        let qp = """
            From: a@x.example
            Subject: t
            Content-Type: multipart/mixed; boundary="outer"

            --outer
            Content-Type: multipart/report;
             report-type=tlsrpt; boundary=inner

            --inner
            Content-Type: text/plain

            hello
            --inner
            Content-Type: application/tlsrpt+json
            Content-Transfer-Encoding: quoted-printable
            Content-Disposition: attachment; filename*=utf-8''x.example%21y.example%211%212.json

            {"date-range":{"start-datetime":"2024-01-01T00:00:00Z","end-datetime":"2024-01-01T23:59:=
            59Z"},"organization-name":"Caf=C3=A9","policies":[]}
            --inner--
            --outer--
            """
        let result = try ReportReader.read(Array(qp.utf8))
        #expect(result.reports.count == 1)
        #expect(result.reports[0].report.organizationName == "Café")
        #expect(result.reports[0].filename == "x.example!y.example!1!2.json")
        #expect(MediaType(parsing: "Application/TLSRPT+GZIP; name=\"a;b.gz\"")?.parameters["name"] == "a;b.gz")
        #expect(MediaType(parsing: "application/x; n*0=\"ab\"; n*1=cd")?.parameters["n"] == "abcd")
        #expect(Base64.decode(Array("aGVs\r\nbG8=".utf8)) == Array("hello".utf8))
        #expect(Base64.encode(Array("hello".utf8)) == "aGVsbG8=")
    }

    @Test func truncatedAndHostileMail() {
        #expect(throws: NotAReport.self) { try ReportReader.read(Array("just some text\nwith no headers".utf8)) }
        #expect(throws: NotAReport.self) { try ReportReader.read([]) }
        let labelledButBroken = "Content-Type: application/tlsrpt+gzip\nContent-Transfer-Encoding: base64\n\nH4sIAAAA\n"
        #expect(throws: NotAReport.self) { try ReportReader.read(Array(labelledButBroken.utf8)) }
        var nested = "Content-Type: multipart/mixed; boundary=b0\n\n"
        for i in 1..<40 { nested += "--b\(i - 1)\nContent-Type: multipart/mixed; boundary=b\(i)\n\n" }
        #expect(throws: NotAReport.self) { try ReportReader.read(Array(nested.utf8)) }
    }

    @Test func builtMailParsesBack() throws {
        let report = TLSReport(
            organizationName: "Sender Org", startDate: 1_700_006_400, endDate: 1_700_092_799, contactInfo: "tlsrpt@sender.example",
            reportID: "2023-11-15T00:00:00Z_rcpt.example", policies: [
                PolicyResult(policy: ReportPolicy(type: .sts, strings: ["version: STSv1", "mode: testing", "mx: mx.rcpt.example", "max_age: 86400"], domain: "rcpt.example", mxHosts: ["mx.rcpt.example"]),
                    successfulSessions: 10, failedSessions: 2,
                    failureDetails: [FailureDetail(resultType: .certificateExpired, sendingMTAIP: "192.0.2.1", receivingMXHostname: "mx.rcpt.example", receivingIP: "198.51.100.7", failedSessionCount: 2)])
            ])
        for compress in [true, false] {
            let mail = try ReportMailBuilder(report: report, policyDomain: "rcpt.example", submitter: "sender.example", from: "tlsrpt@sender.example", to: "tls@rcpt.example", date: 1_700_100_000, compress: compress).build()
            let result = try ReportReader.read(mail)
            #expect(result.reports.count == 1)
            #expect(result.reports[0].report == report)
            #expect(result.reports[0].diagnostics.isEmpty, "\(result.reports[0].diagnostics)")
            #expect(result.diagnostics.isEmpty, "\(result.diagnostics)")
            #expect(result.mail?.tlsReportDomain == "rcpt.example")
            #expect(result.mail?.tlsReportSubmitter == "sender.example")
            let text = String(decoding: mail, as: UTF8.self)
            #expect(text.contains("Content-Type: multipart/report; report-type=\"tlsrpt\""))
            // RFC 5322 §2.1.1: at most 998 characters a line (the filename line, like Google's and
            // Microsoft's, passes the advisory 78); base64 lines at most 76 (RFC 2045 §6.8).
            let lines = text.split(separator: "\r\n", omittingEmptySubsequences: false)
            #expect(lines.allSatisfy { $0.utf8.count <= 998 })
            #expect(lines.filter { $0.utf8.count > 78 }.allSatisfy { $0.contains("filename=") })
            #expect(!text.contains("\n\n") && !text.replacingOccurrences(of: "\r\n", with: "").contains("\n"), "bare LF in the message")
        }
    }
}
