import Foundation
import MTASTSCore
import Testing
import TestSupport
import TLSRPTSender
import MTASTSNet

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

/// An https rua is a stranger's choice of where we POST (issue: hostile input, item 2).
@Suite struct PrivateRUATests {
    @Test("loopback, private, link-local, unique-local, CGNAT and documentation addresses are not public; ordinary ones are")
    func classification() {
        for a in ["127.0.0.1", "10.1.2.3", "172.16.0.1", "172.31.255.255", "192.168.1.1", "169.254.1.1", "100.64.0.1", "0.0.0.0", "192.0.2.1",
                  "198.51.100.7", "203.0.113.9", "224.0.0.1", "255.255.255.255", "::1", "::", "fe80::1", "fc00::1", "fd12::1", "ff02::1",
                  "::ffff:127.0.0.1", "::ffff:10.0.0.1", "2001:db8::1", "64:ff9b::a00:1", "not an address"] {
            #expect(!PublicAddress.isPublic(a), "\(a)")
        }
        for a in ["8.8.8.8", "1.1.1.1", "172.32.0.1", "100.128.0.1", "2a00:1450:4001::1", "::ffff:8.8.8.8", "64:ff9b::808:808"] {
            #expect(PublicAddress.isPublic(a), "\(a)")
        }
    }

    @Test("a POST to a private address (by literal or by name) is refused, not attempted, unless allowed")
    func refused() async throws {
        let strict = try HTTPSTransport(timeout: .seconds(2))
        for uri in ["https://127.0.0.1:9/r", "https://localhost:9/r", "https://[::1]:9/r", "https://10.0.0.1/r"] {
            let outcome = await strict.post(uri, body: [1])
            #expect(outcome.kind == .permanent, "\(uri): \(outcome.detail)")
            #expect(outcome.detail.contains("not a public address"), "\(uri): \(outcome.detail)")
        }
        // Allowed: attempted (nothing listens on port 9: a temporary failure, not a refusal).
        let lax = try HTTPSTransport(timeout: .seconds(2), allowPrivate: true)
        let attempted = await lax.post("https://127.0.0.1:9/r", body: [1])
        #expect(attempted.kind == .temporary, "\(attempted.detail)")
    }
}
