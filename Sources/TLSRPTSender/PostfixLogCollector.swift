import Foundation
import MTASTSCore

/// `mtasts collect-log`: Postfix's smtp log lines (3.9 and older have no libtlsrpt) become the
/// sessions a libtlsrpt datagram would have given, into the same store. The `_smtp._tls` record
/// and the cached policy of a domain come from the caller (DNS and the daemon's cache), so this
/// role needs neither; time comes from the log line, or the injected clock.
public final class PostfixLogCollector {
    public struct Counts: Sendable {
        public var lines = 0, attempts = 0, stored = 0, noRecord = 0
    }

    let store: SessionStore
    var reader: PostfixLogReader
    let record: (String) async -> String?
    let policy: (String) -> STSPolicy?
    let clock: any WallClock
    var records: [String: String?] = [:]
    var batch = SessionBatch()
    var lastCommit: Double
    public private(set) var counts = Counts()

    public init(store: SessionStore, reader: PostfixLogReader, record: @escaping (String) async -> String?,
                policy: @escaping (String) -> STSPolicy?, clock: any WallClock = SystemClock()) {
        self.store = store
        self.reader = reader
        self.record = record
        self.policy = policy
        self.clock = clock
        lastCommit = clock.now()
    }

    /// One log line; commits every 1,000 attempts or every second.
    public func take(_ line: String) async throws {
        counts.lines += 1
        guard let outcome = reader.read(line) else { return }
        counts.attempts += 1
        if records[outcome.domain] == nil { records[outcome.domain] = .some(await record(outcome.domain)) }
        guard let found = records[outcome.domain] ?? nil else {
            counts.noRecord += 1
            return
        }
        let time = outcome.time ?? Int64(clock.now())
        batch.add(Self.datagram(outcome, record: found, policy: policy(outcome.domain)), day: RFC3339.formatDay(time))
        if batch.datagrams >= 1_000 || clock.now() - lastCommit >= 1 { try commit() }
    }

    public func commit() throws {
        guard !batch.isEmpty else { return }
        try store.commit(batch)
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
