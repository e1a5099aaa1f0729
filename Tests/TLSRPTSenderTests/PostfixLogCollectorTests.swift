import Foundation
import MTASTSCore
import Storage
import Synchronization
import Testing
import TLSRPTSender

/// collect-log's core in-process: Postfix 3.7-style log lines → sessions, with the policy and the
/// TLSRPT record given by closures (the daemon's cache and DNS in production).
@Suite struct PostfixLogCollectorTests {
    final class Asked: @unchecked Sendable {
        private let lock = NSLock()
        private var names: [String] = []
        func add(_ name: String) { lock.withLock { names.append(name) } }
        var all: [String] { lock.withLock { names } }
    }

    static let enforce = STSPolicy.parse("version: STSv1\nmode: enforce\nmx: mx.y.test\nmax_age: 86400\n").policy
    static let testing = STSPolicy.parse("version: STSv1\nmode: testing\nmx: mx.y.test\nmax_age: 86400\n").policy

    @Test("verified, untrusted and clear deliveries; a domain without a record is skipped; the day is the line's") func collect() async throws {
        let store = try SessionStore(url: FileManager.default.temporaryDirectory.appendingPathComponent("log-\(UUID().uuidString.prefix(8)).db").path)
        let asked = Asked()
        let collector = PostfixLogCollector(
            store: store, reader: PostfixLogReader(defaultYear: 2026, utcOffset: 0),
            record: { domain in asked.add(domain); return domain == "y.test" || domain == "w.test" ? .found("v=TLSRPTv1; rua=mailto:r@\(domain)") : .none },
            policy: { domain in domain == "y.test" ? Self.enforce : domain == "w.test" ? Self.testing : nil },
            clock: ManualClock(1_795_000_000))
        let lines = """
            2026-11-29T10:00:00.000000+00:00 mx1 postfix/smtp[101]: Verified TLS connection established to mx.y.test[192.0.2.7]:25: TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)
            2026-11-29T10:00:00.200000+00:00 mx1 postfix/smtp[101]: 4F1A2B3C4D: to=<a@y.test>, relay=mx.y.test[192.0.2.7]:25, delay=0.2, delays=0/0/0.1/0.1, dsn=2.0.0, status=sent (250 2.0.0 Ok)
            2026-11-29T11:00:00.000000+00:00 mx1 postfix/smtp[102]: Untrusted TLS connection established to mx.w.test[192.0.2.9]:25: TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)
            2026-11-29T11:00:00.100000+00:00 mx1 postfix/smtp[102]: 5A6B7C8D9E: to=<c@w.test>, relay=mx.w.test[192.0.2.9]:25, delay=0.1, delays=0/0/0.1/0, dsn=2.0.0, status=sent (250 2.0.0 Ok)
            2026-11-30T00:00:01.000000+00:00 mx1 postfix/smtp[103]: 6B7C8D9E0F: to=<d@y.test>, relay=mx.y.test[192.0.2.7]:25, delay=0.1, delays=0/0/0.1/0, dsn=2.0.0, status=sent (250 2.0.0 Ok)
            2026-11-30T00:00:02.000000+00:00 mx1 postfix/smtp[104]: 7C8D9E0F1A: to=<e@z.test>, relay=mx.z.test[192.0.2.8]:25, delay=0.1, delays=0/0/0.1/0, dsn=2.0.0, status=sent (250 2.0.0 Ok)
            2026-11-30T00:00:03.000000+00:00 mx1 postfix/smtp[105]: 8D9E0F1A2B: to=<f@z.test>, relay=mx.z.test[192.0.2.8]:25, delay=0.1, delays=0/0/0.1/0, dsn=2.0.0, status=sent (250 2.0.0 Ok)
            """
        for line in lines.split(separator: "\n") { try await collector.take(String(line)) }
        try collector.commit()
        #expect(collector.counts.lines == 7)
        #expect(collector.counts.attempts == 5)
        #expect(collector.counts.stored == 3)
        #expect(collector.counts.noRecord == 2)
        #expect(asked.all.sorted() == ["w.test", "y.test", "z.test"])  // each domain's record looked up once
        #expect(try store.days() == ["2026-11-29", "2026-11-30"])
        #expect(try store.totals(day: "2026-11-29") == (successful: 1, failed: 1))
        #expect(try store.totals(day: "2026-11-30") == (successful: 0, failed: 1))  // no TLS line for that connection: in clear
        let identity = SenderIdentity(organization: "O", contact: "mailto:o@s.test", submitter: "s.test", from: "o@s.test")
        let w = try #require(try store.buildReports(day: "2026-11-29", identity: identity).first { $0.domain == "w.test" })
        #expect(w.report.policies.first?.failureDetails.first?.resultType == .certificateNotTrusted)
    }

    static func attempt(_ n: Int, to domain: String) -> String {
        "2026-11-29T10:00:0\(n).000000+00:00 mx1 postfix/smtp[\(200 + n)]: Q\(n)X: to=<a@\(domain)>, relay=mx.\(domain)[192.0.2.7]:25, delay=0.1, delays=0/0/0.1/0, dsn=2.0.0, status=sent (250 Ok)"
    }

    @Test("a failed TLSRPT look-up is counted apart and asked again after a minute; an answer is kept an hour (faults)")
    func lookupLifetimes() async throws {
        let store = try SessionStore(url: FileManager.default.temporaryDirectory.appendingPathComponent("log-\(UUID().uuidString.prefix(8)).db").path)
        let asked = Asked()
        let dnsUp = Mutex(false)
        let clock = ManualClock(1_795_000_000)
        let collector = PostfixLogCollector(
            store: store, reader: PostfixLogReader(defaultYear: 2026, utcOffset: 0),
            record: { domain in
                asked.add(domain)
                guard dnsUp.withLock({ $0 }) else { return .failed }
                return domain == "y.test" ? .found("v=TLSRPTv1; rua=mailto:r@y.test") : .none
            },
            policy: { _ in nil }, clock: clock)
        try await collector.take(Self.attempt(1, to: "y.test"))
        try await collector.take(Self.attempt(2, to: "y.test"))
        #expect(collector.counts.lookupFailed == 2 && collector.counts.noRecord == 0)
        #expect(asked.all == ["y.test"])  // the failure is kept for a minute
        dnsUp.withLock { $0 = true }
        clock.advance(61)
        try await collector.take(Self.attempt(3, to: "y.test"))
        try await collector.take(Self.attempt(4, to: "z.test"))
        #expect(asked.all == ["y.test", "y.test", "z.test"])
        clock.advance(3_000)
        try await collector.take(Self.attempt(5, to: "y.test"))
        #expect(asked.all.count == 3)  // the answer is kept for an hour
        clock.advance(601)
        try await collector.take(Self.attempt(6, to: "y.test"))
        #expect(asked.all.count == 4)
        try collector.commit()
        #expect(collector.counts.stored == 3 && collector.counts.noRecord == 1)
        #expect(try store.totals(day: "2026-11-29") == (successful: 3, failed: 0))  // no policy: a delivery in clear is no failure
    }

    @Test("a commit that fails (the database locked past its time-out) keeps every line for the next commit (faults)")
    func failedCommitKeepsTheBatch() async throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("log-\(UUID().uuidString.prefix(8)).db").path
        let store = try SessionStore(db: try SQLDatabase(sqlite: path, timeout: .milliseconds(200)))
        let clock = ManualClock(1_795_000_000)
        let collector = PostfixLogCollector(
            store: store, reader: PostfixLogReader(defaultYear: 2026, utcOffset: 0),
            record: { _ in .found("v=TLSRPTv1; rua=mailto:r@y.test") }, policy: { _ in nil }, clock: clock)
        let locker = try SQLDatabase(sqlite: path)
        try locker.query("BEGIN EXCLUSIVE")
        try await collector.take(Self.attempt(1, to: "y.test"))
        clock.advance(2)
        await #expect(throws: (any Error).self) { try await collector.take(Self.attempt(2, to: "y.test")) }
        #expect(throws: (any Error).self) { try collector.commit() }
        #expect(collector.counts.stored == 0)
        try locker.query("COMMIT")
        clock.advance(2)
        try await collector.take(Self.attempt(3, to: "y.test"))
        #expect(collector.counts.stored == 3)
        #expect(try store.totals(day: "2026-11-29") == (successful: 3, failed: 0))
    }

    @Test("the outcome as a datagram: a trusted connection to an MX outside the policy fails validation; no policy is no-policy-found") func mapping() throws {
        var reader = PostfixLogReader(defaultYear: 2026, utcOffset: 0)
        _ = reader.read("2026-11-29T10:00:00.000000+00:00 mx1 postfix/smtp[1]: Trusted TLS connection established to mx.other.test[192.0.2.1]:25: TLSv1.3 with cipher X (256/256 bits)")
        let read = reader.read("2026-11-29T10:00:00.100000+00:00 mx1 postfix/smtp[1]: AB12: to=<a@y.test>, relay=mx.other.test[192.0.2.1]:25, delay=0.1, delays=0/0/0/0, dsn=2.0.0, status=sent (250 Ok)")
        let outcome = try #require(read)
        let outside = PostfixLogCollector.datagram(outcome, record: "v=TLSRPTv1; rua=mailto:r@y.test", policy: Self.enforce)
        #expect(outside.policies.first?.failures.first?.resultType == .validationFailure)
        #expect(outside.policies.first?.failed == true)
        let none = PostfixLogCollector.datagram(outcome, record: "v=TLSRPTv1; rua=mailto:r@y.test", policy: nil)
        #expect(none.policies.first?.type == .noPolicyFound)
        #expect(none.policies.first?.failed == false)
    }
}
