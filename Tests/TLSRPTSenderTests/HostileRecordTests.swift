import Foundation
import MTASTSCore
import Testing
import TestSupport
import TLSRPTSender

/// Addresses from strangers' DNS records on their way into our SMTP dialogue and headers
/// (issue: hostile input, item 2).
@Suite struct HostileRecordTests {
    let store: SessionStore
    let identity = SenderIdentity(organization: "Sender Org", contact: "mailto:tlsrpt@sender.test", submitter: "sender.test", from: "tlsrpt@sender.test")

    init() throws {
        store = try SessionStore(url: FileManager.default.temporaryDirectory.appendingPathComponent("hostile-\(UUID().uuidString.prefix(8)).db").path)
    }

    func collect(record: String) throws {
        let json = #"{"dpv":"1","d":"victim.example","pr":"\#(record)","policies":[{"policy-type":1,"policy-domain":"victim.example","t":1,"f":0}]}"#
        var batch = SessionBatch()
        batch.add(try TLSRPTDatagram.decode(Array(json.utf8)), day: "2026-11-30")
        try store.commit(batch)
    }

    @Test("a CR/LF-smuggling mailto rua never reaches RCPT TO or a header; a good record's report gets exactly one clean dialogue")
    func crlfInMailto() async throws {
        // The smuggling record is not a valid record: a datagram naming it is refused (the
        // collector quarantines it) and no report is ever built for it.
        #expect(throws: TLSRPTDatagram.Malformed.self) { try collect(record: "v=TLSRPTv1; rua=mailto:x%3E%0D%0ADATA%0D%0A@victim.example") }
        try collect(record: "v=TLSRPTv1; rua=mailto:ok@victim.example")
        let reports = try store.buildReports(day: "2026-11-30", identity: identity)
        #expect(reports.count == 1)
        let report = try #require(reports.first)
        #expect(report.rua.map(\.uri) == ["mailto:ok@victim.example"])

        let log = MailLog()
        let mx = try TestServer.mx(address: "127.0.0.1", port: TestServer.freePort(), hostname: "mx.victim.example", leaf: nil, behaviour: .noSTARTTLS, mail: log)
        let submission = try SubmissionTransport(host: mx.address, port: mx.port, tls: .none, ehloName: "sender.test")
        let sender = ReportSender(store: store, identity: identity, https: try HTTPSTransport(), mail: .submission(submission), dkim: nil, node: "n1")
        let good = await sender.deliver(report, to: report.rua[0])
        #expect(good.kind == .delivered, "\(good.detail)")
        // A URI made by hand (as a damaged ledger row could hold it) is checked again before use.
        let smuggled = await sender.deliver(report, to: .mailto(address: "x>\r\nDATA\r\n@victim.example", uri: "mailto:x"))
        #expect(smuggled.kind == .permanent)
        #expect(log.dialogue.filter { $0.hasPrefix("RCPT") } == ["RCPT TO:<ok@victim.example>"])
        #expect(log.dialogue.filter { $0.uppercased().hasPrefix("DATA") }.count == 1)
        #expect(log.messages.count == 1)
        #expect(log.messages.first?.data.contains("To: ok@victim.example\n") == true)
    }

    @Test("at most five rua URIs of one record are used; the rest are named, not sent to")
    func ruaCap() throws {
        let uris = (1...7).map { "mailto:r\($0)@victim.example" }
        try collect(record: "v=TLSRPTv1; rua=" + uris.joined(separator: ","))
        let report = try #require(try store.buildReports(day: "2026-11-30", identity: identity).first)
        #expect(report.rua.map(\.uri) == Array(uris.prefix(5)))
        #expect(report.skippedRUA.map(\.uri) == Array(uris.suffix(2)))
    }

    @Test("header and command writers refuse CR, LF and NUL whatever the value came from")
    func checkedWriters() throws {
        #expect(throws: MailHeader.Unsafe.self) { try MailHeader.line("To", "a@b.example\r\nBcc: c@d.example") }
        #expect(throws: MailHeader.Unsafe.self) { try MailHeader.line("X-Extra: 1\nBcc: x", "") }
        #expect(try MailHeader.line("To", "a@b.example") == "To: a@b.example")
        #expect(throws: SubmissionTransport.CredentialsInClear.self) {
            try SubmissionTransport(host: "127.0.0.1", tls: .none, username: "u", password: "p", ehloName: "sender.test")
        }
    }
}
