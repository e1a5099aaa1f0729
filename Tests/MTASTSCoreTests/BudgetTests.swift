import Foundation
@testable import MTASTSCore
import Testing

/// Budgets, not just limits (issue: hostile input, item 3): what one input may cost in total.
@Suite struct BudgetTests {
    static func report(_ id: Int, padding: Int = 0) -> [UInt8] {
        Array(#"{"organization-name":"O","date-range":{"start-datetime":"2026-11-29T00:00:00Z","end-datetime":"2026-11-29T23:59:59Z"},"contact-info":"a@o.example","report-id":"r\#(id)","policies":[{"policy":{"policy-type":"no-policy-found","policy-domain":"x.example"},"summary":{"total-successful-session-count":1,"total-failure-session-count":0}}],"pad":"\#(String(repeating: "x", count: padding))"}"#.utf8)
    }

    static func mail(parts: [[UInt8]]) -> [UInt8] {
        var text = "From: a@o.example\r\nTo: b@x.example\r\nSubject: Report Domain: x.example Submitter: o.example Report-ID: <r@o.example>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=tlsrpt; boundary=\"b\"\r\n\r\n"
        for (i, part) in parts.enumerated() {
            text += "--b\r\nContent-Type: application/tlsrpt+gzip\r\nContent-Disposition: attachment; filename=\"o.example!x.example!1764374400!1764460799!\(i).json.gz\"\r\nContent-Transfer-Encoding: base64\r\n\r\n"
            text += Data(Gzip.compress(part)).base64EncodedString(options: .lineLength76Characters) + "\r\n"
        }
        return Array((text + "--b--\r\n").utf8)
    }

    @Test("at most 10 report parts are read from one message; the rest is named in a warning")
    func partCap() throws {
        let result = try ReportReader.read(Self.mail(parts: (0..<25).map { Self.report($0) }))
        #expect(result.reports.count == ReportReader.maxReportParts)
        #expect(result.diagnostics.contains { $0.code == "too-many-parts" })
    }

    @Test("gzip parts share one inflation budget: together they cannot inflate past one report's maximum")
    func inflationBudget() throws {
        let maxSize = 100_000
        // Each part alone fits (60 KB); the second would take the message past 100 KB.
        let result = try ReportReader.read(Self.mail(parts: (0..<5).map { Self.report($0, padding: 60_000) }), maxSize: maxSize)
        #expect(result.reports.count == 1)
        #expect(result.reports.map(\.rawJSON.count).reduce(0, +) <= maxSize)
    }

    @Test("a POSTed body is a report or nothing: a mail message is not parsed")
    func postIsNotMail() throws {
        #expect(throws: NotAReport.self) { try ReportReader.read(Self.mail(parts: [Self.report(1)]), allowMail: false) }
        #expect(try ReportReader.read(Self.report(1), allowMail: false).reports.count == 1)
    }

    @Test("a header block past 256 KB or 1,000 fields is not read as headers: the message holds no report")
    func headerCaps() throws {
        let good = Self.mail(parts: [Self.report(1)])
        let bloated = Array(String(repeating: "X-Filler: \(String(repeating: "y", count: 1_000))\r\n", count: 300).utf8) + good
        #expect(throws: NotAReport.self) { try ReportReader.read(bloated) }
        let many = Array(String(repeating: "X-F: y\r\n", count: 1_200).utf8) + good
        #expect(throws: NotAReport.self) { try ReportReader.read(many) }
        #expect(try ReportReader.read(Array("X-F: y\r\n".utf8) + good).reports.count == 1)
    }

    @Test("JSON: duplicate member names are found in linear time; the value count is capped")
    func jsonCaps() throws {
        // 50,000 distinct members plus one duplicate: quadratic detection would take minutes.
        var text = "{"
        for i in 0..<50_000 { text += "\"m\(i)\":1," }
        text += "\"m7\":2}"
        let parsed = try JSONParser.parse(Array(text.utf8))
        #expect(parsed.deviations.contains { $0.contains("duplicate member name 'm7'") })
        let huge = Array(("[" + String(repeating: "0,", count: JSONParser.maxValues) + "0]").utf8)
        #expect(throws: JSONParseError.self) { try JSONParser.parse(huge) }
    }
}
