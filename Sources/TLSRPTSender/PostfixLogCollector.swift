import Foundation
import MTASTSCore
import ServerSupport

/// `mtasts collect-log`: Postfix's smtp log lines (3.9 and older have no libtlsrpt) become the
/// sessions a libtlsrpt datagram would have given, into the same store. The `_smtp._tls` record
/// and the cached policy of a domain come from the caller (DNS and the daemon's cache), so this
/// role needs neither; time comes from the log line, or the injected clock.
public final class PostfixLogCollector {
    public struct Counts: Sendable {
        /// `lookupFailed`: attempts not counted because their domain's `_smtp._tls` look-up failed
        /// (a timeout, SERVFAIL), as opposed to `noRecord` (the domain publishes none).
        public var lines = 0, attempts = 0, stored = 0, noRecord = 0, lookupFailed = 0
    }

    /// What the `_smtp._tls` look-up of a domain gave.
    public enum RecordLookup: Sendable, Equatable {
        case found(String)
        /// The domain publishes no (single, valid) TLSRPT record.
        case none
        /// The look-up failed (timeout, SERVFAIL): asked again a minute later.
        case failed
    }

    /// How long a look-up's answer is kept: an answer (a record or none) an hour, so that a
    /// follower running for weeks sees records published or withdrawn since it started; a failure
    /// a minute, so that a DNS outage costs the attempts of that minute, not those of the run.
    public static let answerLifetime: Double = 3600
    public static let failureLifetime: Double = 60

    let store: SessionStore
    var reader: PostfixLogReader
    let record: (String) async -> RecordLookup
    let policy: (String) -> STSPolicy?
    let clock: any WallClock
    var records: [String: (lookup: RecordLookup, until: Double)] = [:]
    var batch = SessionBatch()
    var lastCommit: Double
    public private(set) var counts = Counts()

    public init(store: SessionStore, reader: PostfixLogReader, record: @escaping (String) async -> RecordLookup,
                policy: @escaping (String) -> STSPolicy?, clock: any WallClock = SystemClock()) {
        self.store = store
        self.reader = reader
        self.record = record
        self.policy = policy
        self.clock = clock
        lastCommit = clock.now()
    }

    /// One log line; commits every 1,000 attempts or every second. A commit that throws keeps
    /// the line (and the rest of the batch) for the next one, tried a second later: a caller that
    /// goes on after the error loses nothing.
    public func take(_ line: String) async throws {
        counts.lines += 1
        guard let outcome = reader.read(line) else { return }
        counts.attempts += 1
        let now = clock.now()
        let lookup: RecordLookup
        if let known = records[outcome.domain], known.until > now {
            lookup = known.lookup
        } else {
            lookup = await record(outcome.domain)
            let lifetime = lookup == .failed ? Self.failureLifetime : Self.answerLifetime
            if records.count >= 100_000 { records = records.filter { $0.value.until > now } }
            records[outcome.domain] = (lookup, now + lifetime)
        }
        let found: String
        switch lookup {
        case .found(let text): found = text
        case .none:
            counts.noRecord += 1
            return
        case .failed:
            counts.lookupFailed += 1
            return
        }
        let time = outcome.time ?? Int64(now)
        batch.add(Self.datagram(outcome, record: found, policy: policy(outcome.domain)), day: RFC3339.formatDay(time))
        if batch.datagrams >= 1_000 || now - lastCommit >= 1 { try commit() }
    }

    /// Reads `tail` to its end and commits; with `follow`, goes on every half second (a rotated
    /// log reopened) until cancelled. Following, a failed commit (the database locked past its
    /// time-out, a full disk, PostgreSQL restarting) is outlived: the lines read stay in the batch,
    /// the commit is tried again a second later, and `said` hears of the error at most once a
    /// minute. Without `follow` the error is thrown.
    public func read(_ tail: inout LogTail, follow: Bool, said: (any Error) -> Void) async throws {
        var lastSaid = -Double.infinity
        func outlive(_ error: any Error) throws {
            guard follow else { throw error }
            let now = clock.now()
            guard now - lastSaid >= 60 else { return }
            lastSaid = now
            said(error)
        }
        while true {
            while let line = tail.next() {
                do { try await take(line) } catch { try outlive(error) }
            }
            do { try commit() } catch { try outlive(error) }
            guard follow else { return }
            try await Task.sleep(for: .milliseconds(500))
            tail.reopenIfRotated()
        }
    }

    public func commit() throws {
        guard !batch.isEmpty else { return }
        do { try store.commit(batch) } catch {
            lastCommit = clock.now()
            throw error
        }
        counts.stored += batch.datagrams
        batch = SessionBatch()
        lastCommit = clock.now()
    }

    /// One delivery attempt as a libtlsrpt datagram would have said it.
    public static func datagram(_ o: PostfixLogOutcome, record: String, policy: STSPolicy?) -> TLSRPTDatagram {
        guard let policy, policy.mode != .none else {
            return TLSRPTDatagram(protocolVersion: nil, domain: o.domain, record: record,
                                  policies: [.init(type: .noPolicyFound, domain: o.domain, strings: [], mxHosts: [], failures: [], failed: false)],
                                  repairedUTF8: false)
        }
        var failure = o.failure
        let matches = policy.mx.contains { MXPattern.matches(host: o.mxHost, pattern: $0.text) }
        if failure == nil {
            switch o.tls {
            case .verified: break
            case .trusted: if !matches { failure = .validationFailure }
            case .untrusted: failure = .certificateNotTrusted
            case .anonymous: failure = .validationFailure
            case .none: failure = .starttlsNotSupported
            }
            if failure == nil && !matches { failure = .validationFailure }
        }
        var details: [FailureDetail] = []
        if let failure {
            details.append(FailureDetail(resultType: failure, receivingMXHostname: o.mxHost, receivingIP: o.mxAddress, failedSessionCount: 1,
                                         additionalInformation: o.detail.map { String($0.prefix(200)) } ?? (matches ? nil : "MX \(o.mxHost) is not in the policy")))
        }
        return TLSRPTDatagram(protocolVersion: nil, domain: o.domain, record: record,
                              policies: [.init(type: .sts, domain: o.domain, strings: policy.lines, mxHosts: policy.mx.map(\.text),
                                               failures: details, failed: failure != nil)],
                              repairedUTF8: false)
    }
}
