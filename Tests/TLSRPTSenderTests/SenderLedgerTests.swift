import Foundation
import MTASTSCore
import Testing
import TLSRPTSender

/// The sender's store in-process: sessions aggregated per day and policy, reports built from
/// them (RFC 8460 §4), and the delivery ledger that lets one node of a fleet claim a report and
/// take an attempt.
@Suite struct SenderLedgerTests {
    let store: SessionStore
    let identity = SenderIdentity(organization: "Sender Org", contact: "mailto:tlsrpt@sender.test", submitter: "sender.test", from: "tlsrpt@sender.test")

    init() throws {
        store = try SessionStore(url: FileManager.default.temporaryDirectory.appendingPathComponent("sender-\(UUID().uuidString.prefix(8)).db").path)
    }

    static func datagram(failed: Bool) throws -> TLSRPTDatagram {
        let failure = failed ? #","failure-details":[{"c":205,"s":"192.0.2.1","n":"mx.example.com","r":"198.51.100.1"}],"t":1,"f":1"# : #","t":0,"f":0"#
        return try TLSRPTDatagram.decode(Array(#"{"dpv":"1","d":"example.com","pr":"v=TLSRPTv1; rua=mailto:tlsrpt@example.com,https://reports.example.com/tlsrpt","policies":[{"policy-type":2,"policy-domain":"example.com","policy-string":["version: STSv1","mode: enforce","mx: mx.example.com","max_age: 86400"],"mx-host":["mx.example.com"]\#(failure)}]}"#.utf8))
    }

    @Test("sessions add up per day and policy; the report counts them; two commits of the same key add (CONFORMANCE 8460 #9, #11)") func build() throws {
        var batch = SessionBatch()
        for i in 0..<10 { batch.add(try Self.datagram(failed: i < 3), day: "2026-11-30") }
        try store.commit(batch)
        try store.commit(batch)
        #expect(try store.days() == ["2026-11-30"])
        #expect(try store.totals(day: "2026-11-30") == (successful: 14, failed: 6))
        let reports = try store.buildReports(day: "2026-11-30", identity: identity)
        let report = try #require(reports.first)
        #expect(reports.count == 1)
        #expect(report.rua.map(\.uri) == ["mailto:tlsrpt@example.com", "https://reports.example.com/tlsrpt"])
        let policy = try #require(report.report.policies.first)
        #expect(policy.successfulSessions == 14)
        #expect(policy.failedSessions == 6)
        #expect(policy.failureDetails.first?.failedSessionCount == 6)
        #expect(RFC3339.format(report.report.startDate) == "2026-11-30T00:00:00Z")
        #expect(RFC3339.format(report.report.endDate) == "2026-11-30T23:59:59Z")
    }

    @Test("one claim per report; one node takes an attempt; a retry is due when its time comes (CONFORMANCE 8460 #5, #17)") func ledger() throws {
        var batch = SessionBatch()
        batch.add(try Self.datagram(failed: false), day: "2026-11-30")
        try store.commit(batch)
        let report = try #require(try store.buildReports(day: "2026-11-30", identity: identity).first)
        #expect(try store.claim(report, node: "a", at: 1_000))
        #expect(try !store.claim(report, node: "b", at: 1_001))
        let due = try store.dueDeliveries(at: 1_000)
        #expect(due.map(\.uri) == ["https://reports.example.com/tlsrpt", "mailto:tlsrpt@example.com"])
        let first = due[0]
        #expect(try store.take(key: first.key, uri: first.uri, attempts: 0, at: 1_000))
        #expect(try !store.take(key: first.key, uri: first.uri, attempts: 0, at: 1_000))
        try store.finish(key: first.key, uri: first.uri, attempts: 1, status: "retry", result: "HTTP 503", at: 1_000, first: 1_000, next: 1_060)
        #expect(try store.dueDeliveries(at: 1_030).map(\.uri) == ["mailto:tlsrpt@example.com"])
        #expect(try store.dueDeliveries(at: 1_060).map(\.uri) == ["https://reports.example.com/tlsrpt", "mailto:tlsrpt@example.com"])
        #expect(try store.ledger(day: "2026-11-30").map(\.status).sorted() == ["pending", "retry"])
    }
}
