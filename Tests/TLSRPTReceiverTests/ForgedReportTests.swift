import DKIM
import Foundation
import MTASTSCore
import Testing
@testable import TLSRPTReceiver

/// Forged reports cannot hide real ones (issue: hostile input, item 4), in process: the ingestor
/// and the store, a DKIM key made for the test, mail built by our own report mail builder.
@Suite struct ForgedReportTests {
    let dir: URL
    let key: DKIM.SigningKey
    let store: ReportStore

    init() throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("forged-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let path = dir.appendingPathComponent("ed.pem").path
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/openssl")
        p.arguments = ["genpkey", "-algorithm", "ed25519", "-out", path]
        try p.run()
        p.waitUntilExit()
        key = try DKIM.SigningKey(pem: String(contentsOfFile: path, encoding: .utf8))
        store = try ReportStore(url: dir.appendingPathComponent("reports.db").path)
    }

    func report(failed: Int) -> TLSReport {
        TLSReport(organizationName: "Sender Org", startDate: 1_764_374_400, endDate: 1_764_460_799, contactInfo: "tlsrpt@sender.example", reportID: "r-1",
                  policies: [PolicyResult(policy: ReportPolicy(type: .sts, strings: ["version: STSv1", "mode: testing", "mx: mx.victim.example", "max_age: 86400"], domain: "victim.example", mxHosts: ["mx.victim.example"]),
                                          successfulSessions: 100, failedSessions: failed,
                                          failureDetails: failed == 0 ? [] : [FailureDetail(resultType: .certificateExpired, receivingMXHostname: "mx.victim.example", failedSessionCount: failed)])])
    }

    func mail(failed: Int, from: String = "tlsrpt@sender.example", signer: String = "sender.example", extraFrom: Bool = false) throws -> [UInt8] {
        var message = try ReportMailBuilder(report: report(failed: failed), policyDomain: "victim.example", submitter: "sender.example",
                                            from: from, to: "tlsrpt@victim.example", date: 1_764_460_800).build()
        if extraFrom { message = Array("From: someone@else.example\r\n".utf8) + message }
        return try DKIM.sign(message, domain: signer, selector: "s", key: key, headers: ["From", "To", "Subject", "Date"])
    }

    func ingestor(_ policy: ReportIngestor.DKIMPolicy = .require) -> ReportIngestor {
        let record = key.dnsRecord
        return ReportIngestor(store: store, dkimPolicy: policy, lookup: { name in name.hasPrefix("s._domainkey.") ? [record] : nil })
    }

    @Test("an unauthenticated POST that arrives first does not keep out the DKIM-verified mail: both are kept, the verified one holds the key")
    func verifiedIsNotKeptOut() async throws {
        let forged = try ingestor().ingest(body: report(failed: 0).encoded())
        #expect(forged.stored.count == 1)
        let real = try await ingestor().ingest(mail: try mail(failed: 7))
        #expect(real.stored.count == 1, "\(real)")
        let rows = try store.list(ReportFilter(), limit: 10)
        #expect(rows.count == 2)
        let verified = try #require(rows.first { $0.dkim == "pass" })
        #expect(verified.reportID == "r-1" && verified.failed == 7 && verified.channel == "mail")
        #expect(rows.first { $0.dkim != "pass" }?.reportID == "r-1#unauthenticated-\(forged.stored[0])")
        #expect(try store.summary(ReportFilter(authenticatedOnly: true)).failed == 7)
        #expect(try store.summary(ReportFilter()).unauthenticatedReports == 1)
        // The forged copy again: a duplicate of the verified one.
        let again = try ingestor().ingest(body: report(failed: 0).encoded())
        #expect(again.duplicates == [verified.id])
        #expect(try store.list(ReportFilter(), limit: 10).count == 2)
    }

    @Test("a report signed by someone else under the same key does not keep out the real sender's: each signer's copy is its own")
    func verifiedForgerDoesNotKeepOutTheRealOne() async throws {
        let forger = try await ingestor().ingest(mail: try mail(failed: 0, from: "x@attacker.example", signer: "attacker.example"))
        #expect(forger.stored.count == 1, "\(forger)")
        let real = try await ingestor().ingest(mail: try mail(failed: 5))
        #expect(real.stored.count == 1, "\(real)")
        let rows = try store.list(ReportFilter(), limit: 10)
        #expect(rows.count == 2)
        #expect(Set(rows.map(\.reportID)) == ["r-1", "r-1#d=sender.example"])
        // The same signer again: a duplicate.
        let again = try await ingestor().ingest(mail: try mail(failed: 5))
        #expect(again.duplicates.count == 1)
    }

    @Test("a verified duplicate does not replace a verified report; a forged one after a verified one is a duplicate")
    func verifiedStays() async throws {
        _ = try await ingestor().ingest(mail: try mail(failed: 3))
        let second = try await ingestor().ingest(mail: try mail(failed: 9))
        #expect(second.duplicates.count == 1)
        #expect(try store.summary(ReportFilter()).failed == 3)
    }

    @Test("a DKIM pass for a d= that does not align with From does not authenticate; two From headers are not a report")
    func alignmentAndTwoFroms() async throws {
        let unaligned = try await ingestor().ingest(mail: try mail(failed: 1, signer: "attacker.example"))
        #expect(unaligned.refused?.contains("does not align") == true, "\(unaligned)")
        let subdomain = try await ingestor().ingest(mail: try mail(failed: 1, from: "tlsrpt@reports.sender.example", signer: "sender.example"))
        #expect(subdomain.stored.count == 1, "\(subdomain)")
        let twoFroms = try await ingestor().ingest(mail: try mail(failed: 1, extraFrom: true))
        #expect(twoFroms.notAReport?.contains("more than one From") == true, "\(twoFroms)")
        // The From's one mailbox decides; a list, a comment or a quoted string cannot smuggle another.
        #expect(ReportIngestor.domain(ofAddress: "Reports <tlsrpt@Sender.Example.>") == "sender.example")
        #expect(ReportIngestor.domain(ofAddress: "r@victim.example, x@attacker.example") == nil)
        #expect(ReportIngestor.domain(ofAddress: "r@victim.example (<x@attacker.example>)") == "victim.example")
        #expect(ReportIngestor.domain(ofAddress: "\"<x@attacker.example>\"@victim.example") == nil)
    }

    @Test("summary and readiness can be limited to authenticated reports, and say how many were not")
    func authenticatedOnly() async throws {
        _ = try await ingestor().ingest(mail: try mail(failed: 4))
        var forged = report(failed: 1_000)
        forged.reportID = "forged-1"
        _ = try ingestor().ingest(body: forged.encoded())
        let all = try store.summary(ReportFilter())
        #expect(all.failed == 1_004)
        #expect(all.unauthenticatedReports == 1)
        let verified = try store.summary(ReportFilter(authenticatedOnly: true))
        #expect(verified.failed == 4)
        #expect(verified.byResultType.first?.sessions == 4)
        #expect(verified.unauthenticatedReports == 1)
        #expect(verified.text(style: .plain).contains("1 report(s) not authenticated by DKIM are left out"))
        let readiness = try store.readiness(domain: "victim.example", until: "2025-11-30", days: 7, minDays: 1, authenticatedOnly: true)
        #expect(readiness.failed == 4)
        #expect(readiness.unauthenticatedReports == 1)
        #expect(readiness.problems.first?.sessions == 4)
    }
}
